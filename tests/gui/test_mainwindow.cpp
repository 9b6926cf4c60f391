// The real workbench window, offscreen: opening a model fills the Model view.
#include <QAbstractItemModelTester>
#include <QApplication>
#include <QSignalSpy>

#include <gtest/gtest.h>

#include "layertablemodel.h"
#include "mainwindow.h"
#include "testutil.h"

using ladimo::gui::LayerTableModel;
using ladimo::gui::MainWindow;

TEST(MainWindow, OpensStories260KIntoTheModelView)
{
    LADIMO_REQUIRE_SHARED("stories260K/config.json");
    MainWindow w;
    w.setProperty("quiet", true);
    QAbstractItemModelTester tester(const_cast<LayerTableModel*>(w.layerModel()),
                                    QAbstractItemModelTester::FailureReportingMode::Fatal);
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    w.openPath(QString::fromStdString((ladimo::test::sharedData() / "stories260K").string()));
    ASSERT_TRUE(opened.wait(10000));
    const auto* model = w.layerModel();
    ASSERT_EQ(model->rowCount(), 5);
    EXPECT_EQ(model->index(0, LayerTableModel::FfnColumn).data(Qt::UserRole).toLongLong(), 3 * 64 * 172);
    EXPECT_EQ(model->index(4, LayerTableModel::IntermediateColumn).data(Qt::UserRole).toLongLong(), 172);
    EXPECT_TRUE(w.summaryText().contains("260,032") || w.summaryText().contains("260032")) << w.summaryText().toStdString();
}

TEST(MainWindow, BadFolderReportsAnErrorAndKeepsState)
{
    MainWindow w;
    w.setProperty("quiet", true);
    QSignalSpy failed(&w, &MainWindow::openFailed);
    w.openPath("/nonexistent/model");
    ASSERT_TRUE(failed.wait(10000));
    EXPECT_TRUE(failed.front().front().toString().contains("config.json"));
    EXPECT_EQ(w.layerModel()->rowCount(), 0);
}

int main(int argc, char** argv)
{
    qputenv("QT_QPA_PLATFORM", "offscreen");
    QApplication app(argc, argv);
    QApplication::setOrganizationName("LaDiMoTest");
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
