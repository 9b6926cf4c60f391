// MainWindow: the workbench window. Opens a model directory or a *.ladimo project (menu, recent
// files, drag and drop, command line, "Open demo"), reads it off the GUI thread, and shows the
// Model view (architecture, parameter counts, per-layer table), the Convert view (the latest
// run's settings, per-layer results and loss curves), the Routing view, the Policy view
// (per-layer rules with sliders beside the tradeoff plot) and the Playground (a prompt through the
// dense and the converted model, every token's experts). GUI thread only.
#pragma once

#include <QMainWindow>
#include <QString>

#include "common/stageclock.h"
#include "model/config.h"
#include "policyview.h"
#include "projectsession.h"
#include "project/pipeline.h"
#include "store/project.h"
#include "workbenchjob.h"

class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableView;
class QTabWidget;
class QMenu;

namespace ladimo::widgets {
class BarPlot;
class LinePlot;
} // namespace ladimo::widgets

namespace ladimo::gui {

class CalibrationView;
class PipelineView;
class PlaygroundView;
class EvaluateView;
class ExportView;
class RoutingView;
class TradeoffView;
class LayerTableModel;
class ConversionTableModel;

class MainWindow : public QMainWindow {
    Q_OBJECT
public:
    explicit MainWindow(QWidget* parent = nullptr);
    ~MainWindow() override;

    // Starts opening `path` in the background; modelOpened / openFailed follow.
    void openPath(const QString& path);
    static QString demoModelPath();
    ProjectSession* session() const { return m_session; }

    const LayerTableModel* layerModel() const { return m_layers; }
    const ConversionTableModel* conversionModel() const { return m_conversion; }
    const widgets::LinePlot* lossPlot() const { return m_lossPlot; }
    // The latest run's end-to-end stage: its KL per step (hidden when the run had none).
    const widgets::LinePlot* endToEndPlot() const { return m_endToEndPlot; }
    void selectConversionLayer(int layer);
    // Routing view: shows the profile at `index` (of the latest run's profiles); false when there is none.
    bool selectRoutingLayer(int index);
    const widgets::LinePlot* rankPlot() const;
    RoutingView* routingView() const { return m_routingView; }
    PolicyView* policyView() const { return m_policyView; }
    TradeoffView* tradeoffView() const { return m_tradeoffView; }
    PlaygroundView* playgroundView() const { return m_playground; }
    EvaluateView* evaluateView() const { return m_evaluateView; }
    ExportView* exportView() const { return m_exportView; }
    CalibrationView* calibrationView() const { return m_calibration; }
    // The state each step's tab shows (pipeline order), and its tooltip.
    core::StepState stepState(core::PipelineStep step) const;
    QString stepToolTip(core::PipelineStep step) const;
    QString currentPath() const { return m_current.path; }
    QString summaryText() const;
    // "model", "convert", "routing", "policy", "tradeoff", "playground", "evaluate", "export" (a tab's name).
    bool selectView(const QString& name);

    // Convert view: starts converting the open model into the open project (or the project file
    // the form names; asked for when empty), or profiles the open project's latest run. False
    // when nothing is open or a job is running. conversionFinished / profileFinished follow,
    // then the project is reopened so every view shows what the job stored.
    bool startConversion();
    bool startProfile();
    // The first screen's Run all steps: the whole pipeline (core::runPipeline) of the open model or
    // project into the Model view's output folder, with the Calibration and Convert settings.
    // pipelineFinished follows, then the project is reopened.
    bool startPipeline();
    PipelineView* pipelineView() const { return m_pipeline; }
    void cancelJob();
    bool isJobRunning() const { return m_job->isRunning(); }

Q_SIGNALS:
    void modelOpened(const QString& path);
    void openFailed(const QString& message);
    void conversionFinished(bool cancelled, const QString& error);
    void profileFinished(bool cancelled, const QString& error);
    void pipelineFinished(bool cancelled, const QString& error);
    // A running layer's live loss points reached the loss plot (`points` on the plot now).
    void lossPointsShown(int layer, int points);
    // The step states were derived again (open, job start / finish, calibration edit).
    void stepStatesChanged();

protected:
    void dragEnterEvent(QDragEnterEvent* event) override;
    void dropEvent(QDropEvent* event) override;
    void closeEvent(QCloseEvent* event) override;

private Q_SLOTS:
    void onOpenTriggered();
    void onOpened(const OpenedModel& m);
    void onOpenFailed(const QString& path, const QString& error);
    void onRunStarted(const ladimo::core::RunSnapshot& snapshot, bool resumed);
    void onLayerStarted(int layer);
    void onLossPoints(int layer, const QVector<double>& steps, const QVector<double>& losses);
    void onLayerFinished(int layer, double finalLoss, double relativeError, double seconds,
                         const QVector<double>& steps, const QVector<double>& losses);
    void onJobProgressed(const QString& stage, double done, double total);
    void onJobFinished(bool cancelled, const QString& error);

private:
    void buildUi();
    void showModel(const OpenedModel& m);
    void showRun(const OpenedModel& m);
    void showLossCurve(int row);
    void showEndToEnd(const std::optional<core::EndToEndRecord>& stage);
    void addMovingAverage(widgets::LinePlot* plot, const QVector<double>& x, const QVector<double>& y);
    void showProfiles(const OpenedModel& m);
    QWidget* buildConvertForm();
    DataChoice dataChoice() const;
    // The Convert and Calibration views' settings for a conversion into `project`.
    ConvertRequest convertRequest(const QString& project) const;
    // Why the calibration data cannot be used as chosen (no file chosen), or empty.
    QString missingCalibration() const;
    void onCalibrationChanged();
    void refreshStepStates();
    void setJobRunning(const QString& kind);
    void rememberRecent(const QString& path);
    void rebuildRecentMenu();

    QTabWidget* m_tabs = nullptr;
    QLabel* m_summary = nullptr;
    QTableView* m_layerView = nullptr;
    LayerTableModel* m_layers = nullptr;
    widgets::BarPlot* m_breakdown = nullptr;
    QLabel* m_runSummary = nullptr;
    QTableView* m_conversionView = nullptr;
    ConversionTableModel* m_conversion = nullptr;
    widgets::LinePlot* m_lossPlot = nullptr;
    widgets::LinePlot* m_endToEndPlot = nullptr;
    RoutingView* m_routingView = nullptr;
    PolicyView* m_policyView = nullptr;
    TradeoffView* m_tradeoffView = nullptr;
    PlaygroundView* m_playground = nullptr;
    EvaluateView* m_evaluateView = nullptr;
    ExportView* m_exportView = nullptr;
    PipelineView* m_pipeline = nullptr;
    // Convert view: settings, actions, progress.
    QSpinBox* m_experts = nullptr;
    QSpinBox* m_trainTopK = nullptr;
    QSpinBox* m_epochs = nullptr;
    QSpinBox* m_e2eSteps = nullptr;
    QSpinBox* m_sharedNeurons = nullptr;
    CalibrationView* m_calibration = nullptr;
    QLabel* m_calibrationSummary = nullptr;
    QWidget* m_stepPages[core::kPipelineSteps] = {};
    QString m_stepBaseTips[core::kPipelineSteps];
    std::array<core::StepStatus, core::kPipelineSteps> m_steps{};
    std::optional<core::PipelineStep> m_runningStep; // Evaluate / Export jobs of their views
    QComboBox* m_partition = nullptr;
    QComboBox* m_gating = nullptr;
    QComboBox* m_device = nullptr;
    QLineEdit* m_projectFile = nullptr;
    QPushButton* m_startButton = nullptr;
    QPushButton* m_profileButton = nullptr;
    QPushButton* m_cancelButton = nullptr;
    QProgressBar* m_stageProgress = nullptr;
    QProgressBar* m_overallProgress = nullptr;
    QLabel* m_jobStatus = nullptr;
    WorkbenchJob* m_job = nullptr;
    QString m_jobKind;    // "convert" / "profile" while a job runs
    QString m_jobProject; // the project the running job writes
    qint64 m_jobStartMs = 0;
    core::StageClock m_stageClock; // the "about N s left" of the job status
    QMenu* m_recentMenu = nullptr;
    ProjectSession* m_session = nullptr;
    OpenedModel m_current; // as shown (the calibration facts follow the view's edits)
};

} // namespace ladimo::gui
