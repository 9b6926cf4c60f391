#include "conversiontablemodel.h"

#include <QBrush>
#include <QColor>

namespace ladimo::gui {

void ConversionTableModel::setSnapshot(const core::RunSnapshot& snapshot)
{
    beginResetModel();
    m_snapshot = snapshot;
    endResetModel();
}

void ConversionTableModel::clear() { setSnapshot({}); }

void ConversionTableModel::setLayerStatus(int layer, core::LayerStatus status)
{
    if (layer < 0 || layer >= rowCount())
        return;
    m_snapshot.layers[static_cast<std::size_t>(layer)].status = status;
    Q_EMIT dataChanged(index(layer, 0), index(layer, ColumnCount - 1));
}

void ConversionTableModel::setLayerResult(int layer, const core::LayerResult& result, const core::LossCurve& curve)
{
    if (layer < 0 || layer >= rowCount())
        return;
    m_snapshot.layers[static_cast<std::size_t>(layer)] = result;
    m_snapshot.lossCurves.resize(m_snapshot.layers.size());
    m_snapshot.lossCurves[static_cast<std::size_t>(layer)] = curve;
    Q_EMIT dataChanged(index(layer, 0), index(layer, ColumnCount - 1));
}

void ConversionTableModel::appendLossPoints(int layer, const core::LossCurve& points)
{
    if (layer < 0 || layer >= rowCount())
        return;
    m_snapshot.lossCurves.resize(m_snapshot.layers.size());
    auto& curve = m_snapshot.lossCurves[static_cast<std::size_t>(layer)];
    curve.insert(curve.end(), points.begin(), points.end());
    Q_EMIT dataChanged(index(layer, PointsColumn), index(layer, PointsColumn));
}

void ConversionTableModel::clearLossCurve(int layer)
{
    if (layer < 0 || layer >= rowCount())
        return;
    m_snapshot.lossCurves.resize(m_snapshot.layers.size());
    m_snapshot.lossCurves[static_cast<std::size_t>(layer)].clear();
    Q_EMIT dataChanged(index(layer, PointsColumn), index(layer, PointsColumn));
}

int ConversionTableModel::doneCount() const
{
    int n = 0;
    for (const auto& l : m_snapshot.layers)
        n += l.status == core::LayerStatus::Done;
    return n;
}

int ConversionTableModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : static_cast<int>(m_snapshot.layers.size());
}

int ConversionTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant ConversionTableModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount() || index.column() >= ColumnCount)
        return {};
    const auto& l = m_snapshot.layers[static_cast<std::size_t>(index.row())];
    auto number = [&](const std::optional<double>& v, int precision) -> QVariant {
        if (!v)
            return role == Qt::DisplayRole ? QVariant(QStringLiteral("-")) : QVariant();
        return role == Qt::DisplayRole ? QVariant(QString::number(*v, 'g', precision)) : QVariant(*v);
    };
    if (role == Qt::DisplayRole || role == Qt::UserRole) {
        switch (index.column()) {
        case LayerColumn: return l.layer;
        case StatusColumn: return QString::fromLatin1(core::layerStatusName(l.status));
        case FinalLossColumn: return number(l.finalLoss, 4);
        case ErrorColumn: return number(l.relativeError, 4);
        case SecondsColumn: return number(l.wallSeconds, 3);
        case PointsColumn:
            return index.row() < static_cast<int>(m_snapshot.lossCurves.size())
                ? static_cast<int>(m_snapshot.lossCurves[static_cast<std::size_t>(index.row())].size())
                : 0;
        }
    }
    if (role == Qt::ToolTipRole && index.column() == StatusColumn && !l.failureReason.empty())
        return QString::fromStdString(l.failureReason);
    if (role == Qt::ForegroundRole && index.column() == StatusColumn) {
        switch (l.status) {
        case core::LayerStatus::Done: return QBrush(QColor(40, 130, 60));
        case core::LayerStatus::Failed: return QBrush(QColor(190, 40, 40));
        case core::LayerStatus::Running: return QBrush(QColor(40, 90, 190));
        case core::LayerStatus::Pending: return QBrush(QColor(120, 120, 120));
        }
    }
    return {};
}

QVariant ConversionTableModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
        return QAbstractTableModel::headerData(section, orientation, role);
    switch (section) {
    case LayerColumn: return tr("Layer");
    case StatusColumn: return tr("Status");
    case FinalLossColumn: return tr("Final loss");
    case ErrorColumn: return tr("Rel. error");
    case SecondsColumn: return tr("Seconds");
    case PointsColumn: return tr("Curve points");
    }
    return {};
}

} // namespace ladimo::gui
