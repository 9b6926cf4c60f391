// EvaluationTableModel: the project's stored evaluations (`ladimo eval` and the Evaluate view),
// one row each, newest first, over a value snapshot replaced as a whole. GUI thread only.
#pragma once

#include <QAbstractTableModel>

#include <vector>

#include "store/project.h"

namespace ladimo::gui {

class EvaluationTableModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        IdColumn,
        PolicyColumn,
        DataColumn,
        PerplexityColumn,
        KlColumn,
        FfnColumn,
        PrefillColumn,
        DecodeColumn,
        DeviceColumn,
        TimeColumn,
        ColumnCount
    };
    using QAbstractTableModel::QAbstractTableModel;

    // `policyNames`: id -> name of the project's policies (0 is shown as the uniform rule or dense).
    void setEvaluations(std::vector<core::Evaluation> evaluations,
                        std::vector<std::pair<int64_t, QString>> policyNames);
    const std::vector<core::Evaluation>& evaluations() const { return m_rows; }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

private:
    QString policyText(const core::Evaluation& e) const;
    std::vector<core::Evaluation> m_rows;
    std::vector<std::pair<int64_t, QString>> m_policyNames;
};

} // namespace ladimo::gui
