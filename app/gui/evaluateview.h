// EvaluateView: measures the latest run of the open project under a rule (dense, a uniform
// top-k, or a stored policy) on chosen data, on a worker thread with progress and Cancel, as
// `ladimo eval P.ladimo` does, and records it in the project; lists the stored evaluations.
// Measured evaluations of stored policies appear on the Policy view's tradeoff plot once the
// project is reopened (MainWindow does that). GUI thread only.
#pragma once

#include <QString>
#include <QWidget>

#include <vector>

#include "store/project.h"

class QCheckBox;
class QComboBox;
class QLabel;
class QLineEdit;
class QProgressBar;
class QPushButton;
class QSpinBox;
class QTableView;

namespace ladimo::gui {

class EvaluationTableModel;
class WorkbenchJob;

class EvaluateView : public QWidget {
    Q_OBJECT
public:
    explicit EvaluateView(QWidget* parent = nullptr);
    ~EvaluateView() override;

    // A project with a finished run: its policies and stored evaluations. `experts`: per layer.
    void setProject(const QString& projectFile, int experts, int trainTopK, const std::vector<core::Policy>& policies,
                    const std::vector<core::Evaluation>& evaluations);
    void clear(const QString& message);

    bool startEvaluation(); // false when no project is set or a job runs
    void cancel();
    bool isRunning() const;
    EvaluationTableModel* model() const { return m_model; }
    QString resultText() const;

Q_SIGNALS:
    void runningChanged(bool running); // a job of this view started or ended
    void evaluationFinished(bool cancelled, const QString& error);

private:
    void onEvaluated(const QString& metricsJson);
    void onFinished(bool cancelled, const QString& error);
    void setRunning(bool running);

    QString m_project;
    bool m_running = false;
    QComboBox* m_policy = nullptr;
    QSpinBox* m_topK = nullptr;
    QComboBox* m_dataKind = nullptr;
    QLineEdit* m_dataFile = nullptr;
    QSpinBox* m_tokens = nullptr;
    QCheckBox* m_timing = nullptr;
    QPushButton* m_start = nullptr;
    QPushButton* m_cancel = nullptr;
    QProgressBar* m_progress = nullptr;
    QLabel* m_status = nullptr;
    QLabel* m_result = nullptr;
    QTableView* m_table = nullptr;
    EvaluationTableModel* m_model = nullptr;
    WorkbenchJob* m_job = nullptr;
};

} // namespace ladimo::gui
