// PolicyView: stage 2b in the workbench. A per-layer table of routing rules with a slider per row
// (top-k 1..N, or top-p for token-adaptive rows), the whole-model totals above it, and the
// tradeoff plot beside it (Pareto front, dense model, uniform top-k, stored policies, measured
// evaluations, and the current policy moving live). Edits are undoable; stored policies load
// from a combo; "Auto" searches a budget; "Refine by measurement..." measures the held-out NLL of
// the current policy and its neighbours within that budget on the converted model and applies the
// best (as `ladimo policy --refine-data`); "Save as..." stores a named manual policy.
// Reading and writing the project go through the ProjectSession (projectsession.h), which also
// owns the undo stack; the Pareto fronts, the search, the read and the save run on worker threads
// (QtConcurrent), the refinement on a WorkbenchJob with progress and Cancel; a slider move is
// arithmetic on the GUI thread (estimateRule + updateTotals).
// GUI thread only; the destructor waits for its workers.
#pragma once

#include <QFutureWatcher>
#include <QPointer>
#include <QString>
#include <QWidget>

#include <optional>
#include <vector>

#include "projectdata.h"
#include "routing/estimate.h"
#include "routing/search.h"
#include "store/project.h"

class QComboBox;
class QDoubleSpinBox;
class QLabel;
class QProgressBar;
class QPushButton;
class QTableView;
class QToolButton;
class QUndoStack;

namespace ladimo::widgets {
class TradeoffPlot;
}

namespace ladimo::gui {

class PolicyTableModel;
class ProjectSession;
class WorkbenchJob;
struct DataChoice;

// What the Auto and Save workers hand back.
struct AutoResult {
    core::SearchResult result;
    QString error;
};

class PolicyView : public QWidget {
    Q_OBJECT
public:
    enum Axis { ParamsAxis = 0, PrefillAxis = 1, DecodeAxis = 2 };

    explicit PolicyView(QWidget* parent = nullptr);
    // With the workbench's session: its undo stack, its reads and writes of the project.
    explicit PolicyView(ProjectSession* session, QWidget* parent = nullptr);
    ~PolicyView() override;

    // Starts reading `projectPath` in the background; loaded / loadFailed follow.
    void openProject(const QString& projectPath);
    // Shows already loaded data (used by openProject when the worker finishes, and by benchmarks).
    void setData(const PolicyData& data);
    void clear(const QString& message);

    PolicyTableModel* model() const { return m_model; }
    QUndoStack* undoStack() const { return m_undo; }
    widgets::TradeoffPlot* plot() const { return m_plot; }
    QTableView* table() const { return m_table; }
    QString totalsText() const;
    QString statusText() const;
    const PolicyData& data() const { return m_data; }
    const std::vector<core::SearchResult>& currentFront() const;

    // The controls, for keyboard and tests.
    void setAxis(Axis axis);
    Axis axis() const;
    // Applies a stored policy by name (undoable); false when there is none.
    bool selectPolicy(const QString& name);
    // Auto: searches the budget with the measure and rule kinds set in the controls, in the
    // background; autoFinished or actionFailed follow.
    void runAuto(double budget, core::CostKind cost, core::RuleKinds rules);
    // Refine by measurement: from the current rules, within the budget and measure of the Auto
    // controls, at most `maxEvaluations` policies scored by held-out NLL on `data` with the
    // project's latest run; the best is applied (undoable). False, with the reason in the status
    // line, when it cannot start (see refineBlocker). refineMeasured per candidate, then
    // refineFinished; on an error actionFailed too. Cancelled or failed: the rules stay as they are.
    bool runRefine(const DataChoice& data, int maxEvaluations);
    void cancelRefine();
    bool isRefining() const;
    // Why "Refine by measurement..." is disabled now; empty when it can run.
    QString refineBlocker() const;
    // The last finished refinement as WorkbenchJob::refined reports it (JSON text); empty before.
    QString lastRefineReport() const { return m_refineReport; }

    // Stores the current rules as a manual policy `name` (ReadWrite, on a worker thread);
    // policySaved or actionFailed follow.
    void savePolicyAs(const QString& name);
    // Applies the front point / uniform top-k point of the current axis (undoable).
    void applyFrontPoint(int index);
    void applyUniform(int k);
    // The same for the front of `axis` (the Tradeoff tab has an axis of its own).
    void applyFrontPoint(int index, Axis axis);

    // Draws this view's data (front, uniform k, dense, stored, measured, current) into `plot`
    // with `axis` as x: the Policy view's plot and the Tradeoff tab share this.
    void fillTradeoffPlot(widgets::TradeoffPlot* plot, Axis axis) const;
    QPointF pointOf(const core::PolicyEstimate& e, Axis axis) const;
    bool hasLatency() const { return m_data.tables.latency.has_value(); }

Q_SIGNALS:
    void loaded();
    void loadFailed(const QString& message);
    void autoFinished(double cost);
    void policySaved(const QString& name);
    void actionFailed(const QString& message);
    // Refinement: one candidate measured (0-based), its rules as text and held-out NLL.
    void refineMeasured(int index, const QString& rules, double nll);
    // Refinement ended: applied (both empty / false), cancelled, or failed with `error`.
    void refineFinished(bool cancelled, const QString& error);
    // The data behind the tradeoff plot changed (loaded, cleared, policy stored).
    void plotDataChanged();

private Q_SLOTS:
    void onEstimateChanged();
    void onLoadFinished();
    void onAutoFinished();
    void onSaveFinished(const QString& name, const std::vector<core::Policy>& policies, const QString& error);
    void onRefineMeasured(int index, const QString& rules, double cost, double proxy, double nll);
    void onRefineFinished(bool cancelled, const QString& error);

private:
    void buildUi();
    void refreshPolicyCombo(const QString& select);
    void refreshPlot();
    void openEditors();
    void stepCurrentRow(int delta);
    void toggleCurrentRowKind();
    void fail(const QString& message);
    void askAndRefine();
    void updateRefineEnabled();
    QPointF pointOf(const core::PolicyEstimate& e) const;
    double xOf(const core::PolicyEstimate& e) const;

    PolicyData m_data;
    PolicyTableModel* m_model = nullptr;
    QUndoStack* m_undo = nullptr;
    QTableView* m_table = nullptr;
    widgets::TradeoffPlot* m_plot = nullptr;
    QLabel* m_totals = nullptr;
    QLabel* m_status = nullptr;
    QComboBox* m_policyCombo = nullptr;
    QComboBox* m_axisCombo = nullptr;
    QDoubleSpinBox* m_budget = nullptr;
    QComboBox* m_measure = nullptr;
    QComboBox* m_ruleKinds = nullptr;
    QPushButton* m_autoButton = nullptr;
    QPushButton* m_saveButton = nullptr;
    QPushButton* m_refineButton = nullptr;
    QPushButton* m_refineCancel = nullptr;
    QProgressBar* m_refineProgress = nullptr;
    QToolButton* m_undoButton = nullptr;
    QToolButton* m_redoButton = nullptr;
    QFutureWatcher<PolicyData> m_loadWatcher;
    QFutureWatcher<AutoResult> m_autoWatcher;
    QPointer<ProjectSession> m_session; // the window's session may go first when the window closes
    QString m_autoDescription;
    QString m_savingName;
    WorkbenchJob* m_refineJob = nullptr;
    // What the running refinement started from: its result applies only to the same project
    // and layer count (a reopened project of another run is not touched).
    QString m_refinePath;
    int m_refineLayers = 0;
    QString m_refineDescription;
    QString m_refineReport;
    // The dialog's last choices, offered again next time.
    QString m_refineFile;
    qint64 m_refineSelfSample = 0;
    qint64 m_refineTokens = 32768;
    int m_refineEvals = 24;
};

} // namespace ladimo::gui
