// The pipeline on the real window, offscreen, on the bundled demo model: each step's tab shows its
// state (not run -> running -> done after a conversion, stale once the calibration settings change),
// the Calibration view's settings are stored in the project and come back on reopening, the loss
// plot gets points while a layer is still training, and the Calibration view counts and decodes
// a text file with the model's tokenizer.
#include <QApplication>
#include <QComboBox>
#include <QLineEdit>
#include <QSignalSpy>
#include <QSpinBox>
#include <QTest>

#include <gtest/gtest.h>

#include <fstream>

#include "calibrationview.h"
#include "conversiontablemodel.h"
#include "mainwindow.h"
#include "project/pipeline.h"
#include "store/project.h"
#include "testutil.h"
#include "widgets/lineplot.h"

using ladimo::core::PipelineStep;
using ladimo::core::StepState;
using ladimo::gui::CalibrationView;
using ladimo::gui::ConversionTableModel;
using ladimo::gui::MainWindow;

namespace {

template <class T> T* child(MainWindow& w, const char* name)
{
    auto* c = w.findChild<T*>(QString::fromLatin1(name));
    EXPECT_NE(c, nullptr) << name;
    return c;
}

const char* stateName(StepState s) { return ladimo::core::stepStateName(s); }

} // namespace

TEST(PipelineTabs, ConversionMakesStepsDoneLiveLossThenCalibrationEditMakesThemStale)
{
    ladimo::test::TempDir tmp;
    const QString project = QString::fromStdString((tmp / "pipe.ladimo").string());
    MainWindow w;
    w.setProperty("quiet", true);
    w.resize(1400, 900);
    w.show();
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Model)), "not run");
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    w.openPath(MainWindow::demoModelPath());
    ASSERT_TRUE(opened.wait(20000));
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Model)), "done");
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Convert)), "not run");
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Profile)), "not run");
    EXPECT_TRUE(w.stepToolTip(PipelineStep::Model).contains("4 layers"))
        << w.stepToolTip(PipelineStep::Model).toStdString();

    ASSERT_TRUE(w.selectView("calibration"));
    child<QComboBox>(w, "dataKind")->setCurrentIndex(CalibrationView::SelfSample);
    child<QSpinBox>(w, "tokens")->setValue(1024);
    child<QSpinBox>(w, "seed")->setValue(77);
    ASSERT_TRUE(w.selectView("convert"));
    child<QLineEdit>(w, "projectFile")->setText(project);
    child<QSpinBox>(w, "epochs")->setValue(2);

    // Live loss: points reach the plot before their layer is finished.
    int liveUpdates = 0, liveWhileRunning = 0;
    QObject::connect(&w, &MainWindow::lossPointsShown, &w, [&](int layer, int points) {
        ++liveUpdates;
        const auto status = w.conversionModel()->index(layer, ConversionTableModel::StatusColumn).data().toString();
        if (status != "done" && points > 0 && w.lossPlot()->pointCount(0) == points)
            ++liveWhileRunning;
    });
    QSignalSpy converted(&w, &MainWindow::conversionFinished);
    ASSERT_TRUE(w.startConversion());
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Convert)), "running");
    ASSERT_TRUE(converted.wait(180000));
    ASSERT_EQ(converted.front().at(1).toString().toStdString(), "");
    std::printf("live loss updates: %d, %d of them before the layer was done\n", liveUpdates, liveWhileRunning);
    EXPECT_GE(liveWhileRunning, 4) << "at least one live update per layer before it finished";
    opened.clear();
    ASSERT_TRUE(opened.wait(20000));
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Calibration)), "done");
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Convert)), "done");
    EXPECT_TRUE(w.stepToolTip(PipelineStep::Convert).contains("4 layers converted, run 1"))
        << w.stepToolTip(PipelineStep::Convert).toStdString();
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Profile)), "not run");

    // The setting the conversion stored.
    {
        auto p = ladimo::core::Project::open(
            project.toStdString(), {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::None});
        const auto s = p.setting(ladimo::core::kCalibrationSetting);
        ASSERT_TRUE(s.has_value());
        EXPECT_EQ((*s)["kind"], "self_sample");
        EXPECT_EQ((*s)["self_sample"], 1024);
        EXPECT_EQ((*s)["seed"], 77);
    }

    // A different token budget: the conversion (and what follows it) is stale, and says why.
    QSignalSpy states(&w, &MainWindow::stepStatesChanged);
    child<QSpinBox>(w, "tokens")->setValue(2048);
    EXPECT_GE(states.count(), 1);
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Convert)), "stale");
    EXPECT_TRUE(w.stepToolTip(PipelineStep::Convert).contains("calibration settings changed since run 1"))
        << w.stepToolTip(PipelineStep::Convert).toStdString();
    // Back to the data the run used: done again.
    child<QSpinBox>(w, "tokens")->setValue(1024);
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Convert)), "done");
    child<QSpinBox>(w, "seed")->setValue(78);
    EXPECT_STREQ(stateName(w.stepState(PipelineStep::Convert)), "stale");

    // Reopened in a fresh window: the calibration settings come back from the project, and so
    // does the stale state.
    MainWindow again;
    again.setProperty("quiet", true);
    QSignalSpy reopened(&again, &MainWindow::modelOpened);
    again.openPath(project);
    ASSERT_TRUE(reopened.wait(20000));
    EXPECT_EQ(child<QSpinBox>(again, "seed")->value(), 78);
    EXPECT_EQ(child<QSpinBox>(again, "tokens")->value(), 1024);
    EXPECT_EQ(child<QComboBox>(again, "dataKind")->currentIndex(), CalibrationView::SelfSample);
    EXPECT_STREQ(stateName(again.stepState(PipelineStep::Convert)), "stale");
    EXPECT_TRUE(again.findChild<QWidget*>("calibrationSummary") != nullptr);
}

TEST(PipelineTabs, CalibrationViewCountsAndDecodesATextFile)
{
    ladimo::test::TempDir tmp;
    const auto text = tmp / "calibration.txt";
    {
        std::ofstream out(text);
        out << "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
               "must be in want of a wife.\n";
    }
    MainWindow w;
    w.setProperty("quiet", true);
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    w.openPath(MainWindow::demoModelPath());
    ASSERT_TRUE(opened.wait(20000));
    auto* view = w.calibrationView();
    child<QComboBox>(w, "dataKind")->setCurrentIndex(CalibrationView::TextFile);
    child<QLineEdit>(w, "dataFile")->setText(QString::fromStdString(text.string()));
    QSignalSpy previewed(view, &CalibrationView::previewFinished);
    ASSERT_TRUE(view->startPreview());
    ASSERT_TRUE(previewed.wait(30000));
    EXPECT_EQ(previewed.front().at(0).toString().toStdString(), "");
    EXPECT_GT(view->tokenCount(), 10);
    EXPECT_TRUE(view->previewText().contains("truth")) << view->previewText().toStdString();
    EXPECT_TRUE(view->summary().contains("calibration.txt")) << view->summary().toStdString();
    // A file that is not there: the error names it.
    child<QLineEdit>(w, "dataFile")->setText("/nonexistent/calibration.txt");
    previewed.clear();
    ASSERT_TRUE(view->startPreview());
    ASSERT_TRUE(previewed.wait(30000));
    EXPECT_TRUE(previewed.front().at(0).toString().contains("/nonexistent/calibration.txt"));
    // Every control has a tooltip.
    for (auto* c : view->findChildren<QWidget*>())
        if (qobject_cast<QComboBox*>(c) || qobject_cast<QSpinBox*>(c) || qobject_cast<QLineEdit*>(c))
            if (c->parent() && !qobject_cast<QSpinBox*>(c->parent()) && !qobject_cast<QComboBox*>(c->parent()))
                EXPECT_FALSE(c->toolTip().isEmpty()) << c->objectName().toStdString();
}
