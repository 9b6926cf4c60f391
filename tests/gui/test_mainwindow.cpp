// The real workbench window, offscreen: opening a model fills the Model view.
#include <QAbstractItemModelTester>
#include <QApplication>
#include <QLabel>
#include <QSignalSpy>
#include <QSpinBox>

#include <gtest/gtest.h>

#include "common/fileutil.h"
#include "conversiontablemodel.h"
#include "layertablemodel.h"
#include "widgets/lineplot.h"
#include "mainwindow.h"
#include "store/project.h"
#include "testutil.h"

using ladimo::gui::LayerTableModel;
using ladimo::gui::MainWindow;

TEST(MainWindow, OpensTinyStories260KIntoTheModelView)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/config.json");
    MainWindow w;
    w.setProperty("quiet", true);
    QAbstractItemModelTester tester(const_cast<LayerTableModel*>(w.layerModel()),
                                    QAbstractItemModelTester::FailureReportingMode::Fatal);
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    w.openPath(QString::fromStdString((ladimo::test::sharedData() / "tinystories260K").string()));
    ASSERT_TRUE(opened.wait(10000));
    const auto* model = w.layerModel();
    ASSERT_EQ(model->rowCount(), 5);
    EXPECT_EQ(model->index(0, LayerTableModel::FfnColumn).data(Qt::UserRole).toLongLong(), 3 * 64 * 172);
    EXPECT_EQ(model->index(4, LayerTableModel::IntermediateColumn).data(Qt::UserRole).toLongLong(), 172);
    EXPECT_TRUE(w.summaryText().contains("260,032") || w.summaryText().contains("260032"))
        << w.summaryText().toStdString();
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

TEST(MainWindow, OpensAProjectIntoTheConvertView)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/config.json");
    ladimo::test::TempDir tmp;
    const auto file = tmp / "p.ladimo";
    {
        // A project as `ladimo convert` leaves it: three layers done with curves, two pending.
        auto p = ladimo::core::Project::create(file);
        ladimo::core::SourceModel m;
        m.path = (ladimo::test::sharedData() / "tinystories260K").string();
        ladimo::core::ConversionRun run;
        run.modelId = p.addModel(m);
        run.layers = 5;
        run.trainTopK = 6;
        const auto id = p.startRun(run);
        for (int l = 0; l < 3; ++l) {
            const auto rel = ladimo::core::Project::layerWeightsPath(id, l);
            ladimo::core::atomicWriteFile(p.prepareFile(rel), std::string("weights"));
            ladimo::core::LayerOutcome out;
            out.weightsPath = rel;
            out.relativeError = 0.01 * (l + 1);
            out.finalLoss = 0.02;
            ladimo::core::LossCurve curve;
            for (int s = 0; s < 10 + l; ++s)
                curve.push_back({s, 1.0 / (s + 1)});
            p.finishLayer(id, l, out, curve);
            ladimo::core::RoutingProfile prof;
            prof.runId = id;
            prof.layer = l;
            prof.tokens = 100;
            prof.binEdges = {0, 0.5, 1};
            prof.rankHistograms = {{10, 90}, {70, 30}, {95, 5}, {100, 0}};
            prof.expertLoad = {0.4, 0.3, 0.2, 0.1};
            prof.entropy = 1.0;
            prof.errorByK = {0.3, 0.1, 0.05, 0.01};
            prof.extra = {{"cumulative_mass", {0.6, 0.85, 0.95, 1.0}}};
            p.saveRoutingProfile(prof);
        }
    }
    MainWindow w;
    w.setProperty("quiet", true);
    QAbstractItemModelTester tester(const_cast<ladimo::gui::ConversionTableModel*>(w.conversionModel()),
                                    QAbstractItemModelTester::FailureReportingMode::Fatal);
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    w.openPath(QString::fromStdString(file.string()));
    ASSERT_TRUE(opened.wait(10000));
    EXPECT_EQ(w.layerModel()->rowCount(), 5); // the project's source model fills the Model view
    const auto* conv = w.conversionModel();
    ASSERT_EQ(conv->rowCount(), 5);
    EXPECT_EQ(conv->index(1, ladimo::gui::ConversionTableModel::StatusColumn).data().toString(), "done");
    EXPECT_EQ(conv->index(4, ladimo::gui::ConversionTableModel::StatusColumn).data().toString(), "pending");
    EXPECT_NEAR(conv->index(2, ladimo::gui::ConversionTableModel::ErrorColumn).data(Qt::UserRole).toDouble(), 0.03,
                1e-12);
    ASSERT_TRUE(w.selectView("convert"));
    w.selectConversionLayer(2);
    ASSERT_EQ(w.lossPlot()->seriesCount(), 2); // per batch + moving average
    EXPECT_EQ(w.lossPlot()->pointCount(0), 12);
    // Routing view: the three profiled layers, four rank curves over two bins.
    ASSERT_TRUE(w.selectView("routing"));
    EXPECT_TRUE(w.selectRoutingLayer(2));
    EXPECT_FALSE(w.selectRoutingLayer(3));     // layer 3 has no profile
    EXPECT_EQ(w.rankPlot()->seriesCount(), 4); // ranks 1, 2, middle (3) and last (4) of 4 experts
    EXPECT_EQ(w.rankPlot()->pointCount(0), 2); // one point per bin
}

// A run with shared neurons and an end-to-end stage: the Convert view plots the stage's KL per
// step as the project records it, names both in the run summary and takes the shared-neuron count
// into its form (so Start resumes this run); a run without the stage hides the plot.
TEST(MainWindow, ShowsTheEndToEndCurveAndTheSharedNeuronsOfARun)
{
    ladimo::test::TempDir tmp;
    auto makeProject = [&](const std::string& name, bool stage) {
        const auto file = tmp / name;
        auto p = ladimo::core::Project::create(file);
        ladimo::core::SourceModel m;
        m.path = (ladimo::test::sourceDir() / "resources" / "demo").string();
        ladimo::core::ConversionRun run;
        run.modelId = p.addModel(m);
        run.layers = 4;
        run.experts = 8;
        run.trainTopK = 3;
        run.extra = {{"shared_neurons", 192}, {"e2e_steps", stage ? 20 : 0}};
        const auto id = p.startRun(run);
        for (int l = 0; l < 4; ++l) {
            const auto rel = ladimo::core::Project::layerWeightsPath(id, l);
            ladimo::core::atomicWriteFile(p.prepareFile(rel), std::string("weights"));
            ladimo::core::LayerOutcome out;
            out.weightsPath = rel;
            p.finishLayer(id, l, out, {{0, 0.5}, {1, 0.4}});
        }
        if (stage) {
            ladimo::core::EndToEndRecord r;
            r.runId = id;
            r.steps = 20;
            for (int s = 0; s < 20; ++s)
                r.curve.push_back({s, 0.3 / (s + 1)});
            r.initialKl = 0.3;
            r.finalKl = 0.016;
            r.wallSeconds = 12;
            p.finishEndToEnd(r, {});
        }
        return QString::fromStdString(file.string());
    };
    const QString withStage = makeProject("stage.ladimo", true), without = makeProject("plain.ladimo", false);
    MainWindow w;
    w.setProperty("quiet", true);
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    w.openPath(withStage);
    ASSERT_TRUE(opened.wait(10000));
    const auto* plot = w.endToEndPlot();
    ASSERT_NE(plot, nullptr);
    EXPECT_FALSE(plot->isHidden());
    ASSERT_EQ(plot->seriesCount(), 2); // per step + moving average
    ASSERT_EQ(plot->pointCount(0), 20);
    for (int s = 0; s < 20; ++s)
        EXPECT_DOUBLE_EQ(plot->seriesY(0)[s], 0.3 / (s + 1));
    auto* shared = w.findChild<QSpinBox*>("sharedNeurons");
    ASSERT_NE(shared, nullptr);
    EXPECT_EQ(shared->value(), 192);
    auto* summary = w.findChild<QLabel*>("runSummary");
    ASSERT_NE(summary, nullptr);
    EXPECT_TRUE(summary->text().contains("192 shared neurons")) << summary->text().toStdString();
    EXPECT_TRUE(summary->text().contains("over 20 steps")) << summary->text().toStdString();

    w.openPath(without);
    ASSERT_TRUE(opened.wait(10000));
    EXPECT_TRUE(plot->isHidden());
    EXPECT_EQ(plot->seriesCount(), 0);
}

int main(int argc, char** argv)
{
    qputenv("QT_QPA_PLATFORM", "offscreen");
    QApplication app(argc, argv);
    QApplication::setOrganizationName("LaDiMoTest");
    ::testing::InitGoogleTest(&argc, argv);
    return RUN_ALL_TESTS();
}
