// The real workbench window, offscreen, on the bundled demo model: convert from the Convert view
// (a small self-sampled token budget, one epoch), profile, tune a layer with its slider; the
// event loop keeps ticking while the conversion runs; Cancel leaves a run that Start resumes.
#include <QAbstractItemModelTester>
#include <QApplication>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QElapsedTimer>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSignalSpy>
#include <QSlider>
#include <QSpinBox>
#include <QTableView>
#include <QTest>
#include <QTimer>

#include <gtest/gtest.h>

#include <filesystem>

#include "conversiontablemodel.h"
#include "evaluateview.h"
#include "evaluationtablemodel.h"
#include "exporttablemodel.h"
#include "exportview.h"
#include "widgets/tradeoffplot.h"
#include "layertablemodel.h"
#include "mainwindow.h"
#include "policytablemodel.h"
#include "pipelineview.h"
#include "policyview.h"
#include "store/project.h"
#include "testutil.h"
#include "widgets/lineplot.h"

using ladimo::gui::ConversionTableModel;
using ladimo::gui::MainWindow;
using ladimo::gui::PolicyTableModel;

namespace {

// Longest gap between ticks of a 5 ms timer while it runs: how long the event loop was stalled.
class StallMeter {
public:
    StallMeter()
    {
        m_timer.setInterval(5);
        QObject::connect(&m_timer, &QTimer::timeout, [this] {
            const qint64 now = m_clock.nsecsElapsed();
            if (now - m_last > m_maxGapNs) {
                m_maxGapNs = now - m_last;
                m_maxAtNs = now;
            }
            m_last = now;
            ++m_ticks;
        });
        m_clock.start();
        m_last = 0;
        m_timer.start();
    }
    double maxGapMs() const { return m_maxGapNs / 1e6; }
    double maxAtMs() const { return m_maxAtNs / 1e6; } // when the longest gap ended
    int ticks() const { return m_ticks; }

private:
    QTimer m_timer;
    QElapsedTimer m_clock;
    qint64 m_last = 0;
    qint64 m_maxGapNs = 0;
    qint64 m_maxAtNs = 0;
    int m_ticks = 0;
};

template <class T> T* child(MainWindow& w, const char* name)
{
    auto* c = w.findChild<T*>(QString::fromLatin1(name));
    EXPECT_NE(c, nullptr) << name;
    return c;
}

// Opens the demo model and fills the Convert form for a quick run into `project`.
void openDemoForQuickConversion(MainWindow& w, const QString& project, int tokens, int epochs)
{
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    w.openPath(MainWindow::demoModelPath());
    ASSERT_TRUE(opened.wait(20000));
    ASSERT_TRUE(w.selectView("convert"));
    child<QLineEdit>(w, "projectFile")->setText(project);
    child<QComboBox>(w, "dataKind")->setCurrentIndex(0); // self-sample: no data file needed
    child<QSpinBox>(w, "tokens")->setValue(tokens);
    child<QSpinBox>(w, "epochs")->setValue(epochs);

    child<QSpinBox>(w, "experts")->setValue(8);
    child<QSpinBox>(w, "trainTopK")->setValue(6);
}

std::string statusOf(const MainWindow& w, int row)
{
    return w.conversionModel()->index(row, ConversionTableModel::StatusColumn).data().toString().toStdString();
}

} // namespace

TEST(Workflow, ConvertProfileAndTuneTheDemoFromTheWindow)
{
    ladimo::test::TempDir tmp;
    const QString project = QString::fromStdString((tmp / "demo.ladimo").string());
    MainWindow w;
    w.setProperty("quiet", true);
    w.resize(1400, 900);
    w.show();
    QAbstractItemModelTester convTester(const_cast<ConversionTableModel*>(w.conversionModel()),
                                        QAbstractItemModelTester::FailureReportingMode::Fatal);
    QAbstractItemModelTester policyTester(w.policyView()->model(),
                                          QAbstractItemModelTester::FailureReportingMode::Fatal);
    openDemoForQuickConversion(w, project, 1024, 1);
    auto* start = child<QPushButton>(w, "startConversion");
    auto* profile = child<QPushButton>(w, "startProfile");
    auto* cancel = child<QPushButton>(w, "cancelJob");
    EXPECT_TRUE(start->isEnabled());
    EXPECT_FALSE(profile->isEnabled()); // a model folder, no project yet
    EXPECT_FALSE(cancel->isEnabled());

    QSignalSpy converted(&w, &MainWindow::conversionFinished);
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    QTest::mouseClick(start, Qt::LeftButton);
    EXPECT_FALSE(start->isEnabled());
    EXPECT_TRUE(cancel->isEnabled());
    int rowsWhileRunning = 0;
    {
        StallMeter meter;
        QElapsedTimer clock;
        clock.start();
        ASSERT_TRUE(converted.wait(180000));
        rowsWhileRunning = w.conversionModel()->rowCount();
        std::printf("conversion of the demo (1024 self-sampled tokens, 1 epoch): %.1f s, event loop max stall %.1f ms "
                    "(ending %.0f ms after Start) over %d ticks\n",
                    clock.elapsed() / 1000.0, meter.maxGapMs(), meter.maxAtMs(), meter.ticks());
        EXPECT_LT(meter.maxGapMs(), 100.0);
        EXPECT_GT(meter.ticks(), 10);
    }
    ASSERT_EQ(converted.front().at(1).toString().toStdString(), "");
    EXPECT_FALSE(converted.front().at(0).toBool());
    EXPECT_EQ(rowsWhileRunning, 4);  // the run's layers were listed live
    ASSERT_TRUE(opened.wait(20000)); // the project reopens with what was stored
    EXPECT_EQ(w.currentPath(), project);
    EXPECT_EQ(child<QProgressBar>(w, "overallProgress")->value(), child<QProgressBar>(w, "overallProgress")->maximum());
    const auto* conv = w.conversionModel();
    ASSERT_EQ(conv->rowCount(), 4);
    for (int l = 0; l < 4; ++l) {
        EXPECT_EQ(statusOf(w, l), "done") << l;
        const double err = conv->index(l, ConversionTableModel::ErrorColumn).data(Qt::UserRole).toDouble();
        EXPECT_GT(err, 0.0) << l;
        EXPECT_LT(err, 1.0) << l;
    }
    w.selectConversionLayer(3);
    ASSERT_EQ(w.lossPlot()->seriesCount(), 2);
    EXPECT_GT(w.lossPlot()->pointCount(0), 0);
    {
        // What the project records: the run done, the same settings as `ladimo convert` would.
        auto p = ladimo::core::Project::open(
            project.toStdString(), {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::Checksums});
        const auto runId = p.latestRunId();
        ASSERT_TRUE(runId.has_value());
        const auto run = p.run(*runId);
        EXPECT_EQ(run.status, ladimo::core::RunStatus::Done);
        EXPECT_EQ(run.experts, 8);
        EXPECT_EQ(run.epochs, 1);
        EXPECT_EQ(run.extra["data"]["self_sample"].get<int64_t>(), 1024);
    }

    // Profile: the Routing and Policy views fill in.
    ASSERT_TRUE(profile->isEnabled());
    QSignalSpy profiled(&w, &MainWindow::profileFinished);
    opened.clear();
    QTest::mouseClick(profile, Qt::LeftButton);
    ASSERT_TRUE(profiled.wait(180000));
    ASSERT_EQ(profiled.front().at(1).toString().toStdString(), "");
    ASSERT_TRUE(opened.wait(20000));
    ASSERT_TRUE(w.selectView("routing"));
    EXPECT_TRUE(w.selectRoutingLayer(3));
    EXPECT_EQ(w.rankPlot()->seriesCount(), 4);
    ASSERT_TRUE(w.selectView("policy"));
    auto* view = w.policyView();
    QSignalSpy loaded(view, &ladimo::gui::PolicyView::loaded);
    if (view->model()->rowCount() != 4)
        ASSERT_TRUE(loaded.wait(20000));
    ASSERT_EQ(view->model()->rowCount(), 4);

    // Move layer 2's slider: the live estimate and the totals change.
    auto* slider
        = qobject_cast<QSlider*>(view->table()->indexWidget(view->model()->index(2, PolicyTableModel::SettingColumn)));
    ASSERT_NE(slider, nullptr);
    const QString totalsBefore = view->totalsText();
    const QVariant ffnBefore = view->model()->index(2, PolicyTableModel::FfnColumn).data(Qt::UserRole);
    slider->setValue(slider->value() == 1 ? 2 : 1);
    QCoreApplication::processEvents();
    EXPECT_NE(view->model()->index(2, PolicyTableModel::FfnColumn).data(Qt::UserRole), ffnBefore);
    EXPECT_NE(view->totalsText(), totalsBefore);

    // Save the hand-tuned policy, then measure it in the Evaluate view: stored in the project,
    // listed in the evaluations table and drawn on the tradeoff plot.
    QSignalSpy saved(view, &ladimo::gui::PolicyView::policySaved);
    view->savePolicyAs("mine");
    ASSERT_TRUE(saved.wait(20000));
    auto* eval = w.evaluateView();
    QAbstractItemModelTester evalTester(eval->model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    opened.clear();
    w.openPath(project); // the new policy in the Evaluate view's list
    ASSERT_TRUE(opened.wait(20000));
    ASSERT_TRUE(w.selectView("evaluate"));
    auto* policyCombo = child<QComboBox>(w, "evalPolicy");
    const int mine = policyCombo->findText("mine");
    ASSERT_GE(mine, 0);
    policyCombo->setCurrentIndex(mine);
    child<QSpinBox>(w, "evalTokens")->setValue(512);
    EXPECT_EQ(eval->model()->rowCount(), 0);
    QSignalSpy evaluated(eval, &ladimo::gui::EvaluateView::evaluationFinished);
    opened.clear();
    QTest::mouseClick(child<QPushButton>(w, "startEvaluation"), Qt::LeftButton);
    ASSERT_TRUE(evaluated.wait(180000));
    ASSERT_EQ(evaluated.front().at(1).toString().toStdString(), "");
    EXPECT_TRUE(eval->resultText().contains("perplexity")) << eval->resultText().toStdString();
    EXPECT_TRUE(eval->resultText().contains("prefill")) << eval->resultText().toStdString();
    ASSERT_TRUE(opened.wait(20000));
    ASSERT_EQ(eval->model()->rowCount(), 1);
    using ladimo::gui::EvaluationTableModel;
    EXPECT_EQ(eval->model()->index(0, EvaluationTableModel::PolicyColumn).data().toString(), "mine");
    EXPECT_GT(eval->model()->index(0, EvaluationTableModel::PerplexityColumn).data(Qt::UserRole).toDouble(), 1.0);
    EXPECT_GE(eval->model()->index(0, EvaluationTableModel::KlColumn).data(Qt::UserRole).toDouble(), 0.0);
    const double ffn = eval->model()->index(0, EvaluationTableModel::FfnColumn).data(Qt::UserRole).toDouble();
    EXPECT_GT(ffn, 0.0);
    EXPECT_LT(ffn, 100.0);
    if (view->model()->rowCount() != 4 || view->plot()->measuredCount() == 0)
        loaded.wait(20000);
    EXPECT_EQ(view->plot()->measuredCount(), 1);

    // Export the conversion under "mine" as Hugging Face Mixtral files: written, reported, recorded.
    auto* exp = w.exportView();
    QAbstractItemModelTester exportTester(exp->model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    ASSERT_TRUE(w.selectView("export"));
    EXPECT_EQ(exp->model()->rowCount(), 0);
    const auto outDir = tmp / "demo-mixtral";
    child<QComboBox>(w, "exportFormat")->setCurrentText("hf-mixtral");
    child<QComboBox>(w, "exportPolicy")->setCurrentText("mine");
    child<QSpinBox>(w, "exportTopK")->setValue(6); // Mixtral has one k; "mine" differs per layer
    child<QLineEdit>(w, "exportOut")->setText(QString::fromStdString(outDir.string()));
    QSignalSpy exported(exp, &ladimo::gui::ExportView::exportFinished);
    opened.clear();
    QTest::mouseClick(child<QPushButton>(w, "startExport"), Qt::LeftButton);
    ASSERT_TRUE(exported.wait(180000));
    ASSERT_EQ(exported.front().at(1).toString().toStdString(), "");
    EXPECT_TRUE(std::filesystem::exists(outDir / "config.json"));
    EXPECT_TRUE(exp->reportText().contains("config.json")) << exp->reportText().toStdString();
    EXPECT_TRUE(exp->reportText().contains("not exact"))
        << "a per-layer policy at one k: " << exp->reportText().toStdString();
    ASSERT_TRUE(opened.wait(20000));
    ASSERT_EQ(exp->model()->rowCount(), 1);
    using ladimo::gui::ExportTableModel;
    EXPECT_EQ(exp->model()->index(0, ExportTableModel::FormatColumn).data().toString(), "hf-mixtral");
    EXPECT_EQ(exp->model()->index(0, ExportTableModel::PolicyColumn).data().toString(), "mine");
    auto p = ladimo::core::Project::open(
        project.toStdString(), {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::None});
    const auto records = p.exports();
    ASSERT_EQ(records.size(), 1u);
    EXPECT_EQ(records.front().path, std::filesystem::absolute(outDir).lexically_normal().string());
    EXPECT_EQ(records.front().sha256.size(), 64u);
}

TEST(Workflow, CancelKeepsTheProjectConsistentAndStartResumes)
{
    ladimo::test::TempDir tmp;
    const QString project = QString::fromStdString((tmp / "cancel.ladimo").string());
    MainWindow w;
    w.setProperty("quiet", true);
    openDemoForQuickConversion(w, project, 1024, 3);
    QSignalSpy converted(&w, &MainWindow::conversionFinished);
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    // Cancel as soon as the first layer starts training.
    QElapsedTimer sinceCancel;
    QObject::connect(w.conversionModel(), &QAbstractItemModel::dataChanged, &w, [&] {
        if (statusOf(w, 0) == "running" && w.isJobRunning() && !sinceCancel.isValid()) {
            sinceCancel.start();
            w.cancelJob();
        }
    });
    ASSERT_TRUE(w.startConversion());
    ASSERT_TRUE(converted.wait(180000));
    ASSERT_TRUE(sinceCancel.isValid());
    std::printf("cancel honoured after %lld ms\n", static_cast<long long>(sinceCancel.elapsed()));
    EXPECT_LT(sinceCancel.elapsed(), 5000);
    EXPECT_TRUE(converted.front().at(0).toBool()) << "cancelled";
    EXPECT_EQ(converted.front().at(1).toString().toStdString(), "");
    QObject::disconnect(w.conversionModel(), &QAbstractItemModel::dataChanged, &w, nullptr);
    ASSERT_TRUE(opened.wait(20000));
    int64_t runId = 0;
    {
        auto p = ladimo::core::Project::open(
            project.toStdString(), {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::Checksums});
        runId = *p.latestRunId();
        EXPECT_EQ(p.run(runId).status, ladimo::core::RunStatus::Cancelled);
        for (const auto& l : p.layers(runId))
            EXPECT_NE(l.status, ladimo::core::LayerStatus::Running) << "layer " << l.layer << " left running";
        EXPECT_GE(p.resumableLayers(runId).size(), 1u); // stopped early: layers are left to do
    }
    // Start again: the same run resumes and finishes.
    converted.clear();
    ASSERT_TRUE(w.startConversion());
    ASSERT_TRUE(converted.wait(180000));
    EXPECT_FALSE(converted.front().at(0).toBool());
    EXPECT_EQ(converted.front().at(1).toString().toStdString(), "");
    auto p = ladimo::core::Project::open(
        project.toStdString(), {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::Checksums});
    EXPECT_EQ(*p.latestRunId(), runId);
    EXPECT_EQ(p.run(runId).status, ladimo::core::RunStatus::Done);
    EXPECT_TRUE(p.resumableLayers(runId).empty());
}

TEST(Workflow, ConvertWithAMissingDataFileNamesTheFile)
{
    ladimo::test::TempDir tmp;
    MainWindow w;
    w.setProperty("quiet", true);
    openDemoForQuickConversion(w, QString::fromStdString((tmp / "bad.ladimo").string()), 512, 1);
    child<QComboBox>(w, "dataKind")->setCurrentIndex(1);
    child<QLineEdit>(w, "dataFile")->setText("/nonexistent/calibration.txt");
    QSignalSpy converted(&w, &MainWindow::conversionFinished);
    ASSERT_TRUE(w.startConversion());
    ASSERT_TRUE(converted.wait(60000));
    const QString error = converted.front().at(1).toString();
    EXPECT_TRUE(error.contains("/nonexistent/calibration.txt")) << error.toStdString();
    EXPECT_TRUE(child<QPushButton>(w, "startConversion")->isEnabled());
}

TEST(Workflow, ClosingTheWindowDuringAConversionCancelsItCleanly)
{
    ladimo::test::TempDir tmp;
    const QString project = QString::fromStdString((tmp / "closed.ladimo").string());
    {
        MainWindow w;
        w.setProperty("quiet", true);
        openDemoForQuickConversion(w, project, 1024, 20);
        bool training = false;
        QObject::connect(w.conversionModel(), &QAbstractItemModel::dataChanged, &w,
                         [&] { training = training || statusOf(w, 0) == "running"; });
        ASSERT_TRUE(w.startConversion());
        QElapsedTimer clock;
        clock.start();
        while (!training && clock.elapsed() < 120000)
            QTest::qWait(10);
        ASSERT_TRUE(training);
        // The window goes away here: its destructor cancels the job and waits for it.
    }
    auto p = ladimo::core::Project::open(
        project.toStdString(), {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::Checksums});
    const auto runId = p.latestRunId();
    ASSERT_TRUE(runId.has_value());
    EXPECT_EQ(p.run(*runId).status, ladimo::core::RunStatus::Cancelled);
    for (const auto& l : p.layers(*runId))
        EXPECT_NE(l.status, ladimo::core::LayerStatus::Running) << "layer " << l.layer;
}

TEST(Workflow, RunAllStepsFromTheFirstScreenConvertsTunesEvaluatesAndExports)
{
    ladimo::test::TempDir tmp;
    const QString out = QString::fromStdString((tmp / "run").string());
    MainWindow w;
    w.setProperty("quiet", true);
    w.resize(1400, 900);
    w.show();
    openDemoForQuickConversion(w, QString(), 1024, 1);
    ASSERT_TRUE(w.selectView("model"));
    auto* run = child<QPushButton>(w, "runPipeline");
    auto* cancel = child<QPushButton>(w, "cancelPipeline");
    EXPECT_TRUE(run->isEnabled());
    EXPECT_FALSE(cancel->isEnabled());
    child<QLineEdit>(w, "pipelineOut")->setText(out);
    child<QDoubleSpinBox>(w, "pipelineBudget")->setValue(0.75);
    QSignalSpy finished(&w, &MainWindow::pipelineFinished);
    QSignalSpy reopened(&w, &MainWindow::modelOpened);
    StallMeter stalls;
    run->click();
    EXPECT_FALSE(run->isEnabled());
    EXPECT_TRUE(cancel->isEnabled());
    ASSERT_TRUE(finished.wait(600000));
    EXPECT_FALSE(finished.front().at(0).toBool()) << "cancelled";
    ASSERT_EQ(finished.front().at(1).toString().toStdString(), "");
    const std::string report = w.pipelineView()->reportText().toStdString();
    EXPECT_NE(report.find("perplexity"), std::string::npos) << report;
    EXPECT_NE(report.find("run1-params-0.75-both"), std::string::npos) << report;
    EXPECT_TRUE(std::filesystem::exists(tmp / "run" / "report.json"));
    EXPECT_TRUE(std::filesystem::exists(tmp / "run" / "model" / "config.json"));
    // The window reopens the pipeline's project: every step it ran shows as done.
    ASSERT_TRUE(reopened.wait(20000));
    EXPECT_EQ(w.currentPath().toStdString(), (tmp / "run" / "project.ladimo").string());
    for (auto step : {ladimo::core::PipelineStep::Convert, ladimo::core::PipelineStep::Profile,
                      ladimo::core::PipelineStep::Policy, ladimo::core::PipelineStep::Export})
        EXPECT_EQ(w.stepState(step), ladimo::core::StepState::Done)
            << ladimo::core::pipelineStepName(step) << ": " << w.stepToolTip(step).toStdString();
    EXPECT_TRUE(run->isEnabled());
    EXPECT_LT(stalls.maxGapMs(), 1000.0) << "the event loop stalled while the pipeline ran";

    // Opening that project again (another window) shows the report beside it.
    MainWindow again;
    again.setProperty("quiet", true);
    QSignalSpy opened(&again, &MainWindow::modelOpened);
    again.openPath(QString::fromStdString((tmp / "run" / "project.ladimo").string()));
    ASSERT_TRUE(opened.wait(20000));
    EXPECT_EQ(again.pipelineView()->reportText().toStdString(), report);
}
