// EvaluateView: measures the latest run of the open project under a rule (dense, a uniform
// top-k, or a stored policy) on chosen data, on a worker thread with progress and Cancel, as
// `ladimo eval P.ladimo` does, and records it in the project; lists the stored evaluations.
// Measured evaluations of stored policies appear on the Policy view's tradeoff plot once the
// project is reopened (MainWindow does that). GUI thread only.
#pragma once

#include <QString>

#include <vector>

#include "jobview.h"
#include "store/project.h"

class QCheckBox;
class QComboBox;
class QLineEdit;
class QSpinBox;

namespace ladimo::gui {

class EvaluationTableModel;

class EvaluateView : public JobView {
    Q_OBJECT
public:
    explicit EvaluateView(QWidget* parent = nullptr);

    // A project with a finished run: its policies and stored evaluations. `experts`: per layer.
    void setProject(const QString& projectFile, int experts, int trainTopK, const std::vector<core::Policy>& policies,
                    const std::vector<core::Evaluation>& evaluations);
    void clear(const QString& message);

    bool startEvaluation(); // false when no project is set or a job runs
    EvaluationTableModel* model() const { return m_model; }

Q_SIGNALS:
    void evaluationFinished(bool cancelled, const QString& error);

protected:
    QList<QWidget*> formWidgets() const override;
    void refineEnabled(bool editable) override;
    void jobFinished(bool cancelled, const QString& error) override;

private:
    void onEvaluated(const QString& metricsJson);

    QComboBox* m_policy = nullptr;
    QSpinBox* m_topK = nullptr;
    QComboBox* m_dataKind = nullptr;
    QLineEdit* m_dataFile = nullptr;
    QSpinBox* m_tokens = nullptr;
    QCheckBox* m_timing = nullptr;
    EvaluationTableModel* m_model = nullptr;
};

} // namespace ladimo::gui
