#include "exporttablemodel.h"

#include "export/formats.h"

#include <algorithm>

namespace ladimo::gui {

void ExportTableModel::setExports(std::vector<core::ExportRecord> exports,
                                  std::vector<std::pair<int64_t, QString>> policyNames)
{
    beginResetModel();
    m_rows = std::move(exports);
    std::sort(m_rows.begin(), m_rows.end(), [](const auto& a, const auto& b) { return a.id > b.id; });
    m_policyNames = std::move(policyNames);
    endResetModel();
}

int ExportTableModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : static_cast<int>(m_rows.size());
}

int ExportTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant ExportTableModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount() || index.column() >= ColumnCount)
        return {};
    const auto& e = m_rows[static_cast<std::size_t>(index.row())];
    if (role == Qt::ToolTipRole && index.column() == Sha256Column)
        return QString::fromStdString(e.sha256);
    if (role != Qt::DisplayRole && role != Qt::UserRole)
        return {};
    switch (index.column()) {
    case IdColumn: return static_cast<qlonglong>(e.id);
    case FormatColumn: return QString::fromStdString(e.format);
    case PathColumn: return QString::fromStdString(e.path);
    case PolicyColumn:
        for (const auto& [id, name] : m_policyNames)
            if (e.policyId != 0 && id == e.policyId)
                return name;
        if (const auto* f = core::findExportFormat(e.format); f && !f->moe)
            return tr("dense");
        return tr("training k");
    case RunColumn: return static_cast<qlonglong>(e.runId);
    case Sha256Column:
        return role == Qt::DisplayRole ? QString::fromStdString(e.sha256.substr(0, 16))
                                       : QString::fromStdString(e.sha256);
    case CreatedColumn: return QString::fromStdString(e.created);
    }
    return {};
}

QVariant ExportTableModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
        return QAbstractTableModel::headerData(section, orientation, role);
    switch (section) {
    case IdColumn: return tr("#");
    case FormatColumn: return tr("Format");
    case PathColumn: return tr("Written to");
    case PolicyColumn: return tr("Policy");
    case RunColumn: return tr("Run");
    case Sha256Column: return tr("SHA-256");
    case CreatedColumn: return tr("When");
    }
    return {};
}

} // namespace ladimo::gui
