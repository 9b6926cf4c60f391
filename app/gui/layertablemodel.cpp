#include "layertablemodel.h"

#include <QLocale>

namespace ladimo::gui {

void LayerTableModel::setConfig(const core::ModelConfig& config)
{
    beginResetModel();
    m_config = config;
    m_counts = config.parameterCounts();
    m_valid = true;
    endResetModel();
}

void LayerTableModel::clear()
{
    beginResetModel();
    m_valid = false;
    endResetModel();
}

int LayerTableModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() || !m_valid ? 0 : static_cast<int>(m_config.numLayers);
}

int LayerTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant LayerTableModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount() || index.column() >= ColumnCount)
        return {};
    qint64 value = 0;
    switch (index.column()) {
    case LayerColumn: value = index.row(); break;
    case AttentionColumn: value = m_counts.attentionPerLayer; break;
    case FfnColumn: value = m_counts.ffnPerLayer; break;
    case IntermediateColumn: value = m_config.intermediateSize; break;
    }
    if (role == Qt::DisplayRole)
        return index.column() == LayerColumn ? QString::number(value) : QLocale().toString(value);
    if (role == Qt::UserRole)
        return value;
    if (role == Qt::TextAlignmentRole)
        return QVariant::fromValue(Qt::Alignment(Qt::AlignRight | Qt::AlignVCenter));
    return {};
}

QVariant LayerTableModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
        return QAbstractTableModel::headerData(section, orientation, role);
    switch (section) {
    case LayerColumn: return tr("Layer");
    case AttentionColumn: return tr("Attention params");
    case FfnColumn: return tr("FFN params");
    case IntermediateColumn: return tr("FFN width");
    }
    return {};
}

} // namespace ladimo::gui
