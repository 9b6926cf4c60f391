// ExportTableModel: the project's recorded exports (`ladimo export` and the Export view), newest
// first, over a value snapshot replaced as a whole. GUI thread only.
#pragma once

#include <QAbstractTableModel>

#include <vector>

#include "store/project.h"

namespace ladimo::gui {

class ExportTableModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        IdColumn,
        FormatColumn,
        PathColumn,
        PolicyColumn,
        RunColumn,
        Sha256Column,
        CreatedColumn,
        ColumnCount
    };
    using QAbstractTableModel::QAbstractTableModel;

    void setExports(std::vector<core::ExportRecord> exports, std::vector<std::pair<int64_t, QString>> policyNames);
    const std::vector<core::ExportRecord>& exports() const { return m_rows; }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

private:
    std::vector<core::ExportRecord> m_rows;
    std::vector<std::pair<int64_t, QString>> m_policyNames;
};

} // namespace ladimo::gui
