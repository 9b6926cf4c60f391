// ConversionTableModel: one row per layer of a conversion run (status, final loss, relative
// error, wall time, loss-curve points), over a value snapshot read from the project and replaced
// as a whole when a run is opened, or row by row as a running conversion reports. GUI thread only.
#pragma once

#include <QAbstractTableModel>

#include "store/project.h"

namespace ladimo::gui {

class ConversionTableModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { LayerColumn, StatusColumn, FinalLossColumn, ErrorColumn, SecondsColumn, PointsColumn, ColumnCount };
    using QAbstractTableModel::QAbstractTableModel;

    void setSnapshot(const core::RunSnapshot& snapshot);
    void clear();
    // Live updates while a conversion runs: one row changes (dataChanged), the rows stay.
    void setLayerStatus(int layer, core::LayerStatus status);
    void setLayerResult(int layer, const core::LayerResult& result, const core::LossCurve& curve);
    // Loss points of a layer still training (the Points column changes); setLayerResult then
    // replaces the curve with the one the project recorded. clearLossCurve: a layer (re)starts.
    void appendLossPoints(int layer, const core::LossCurve& points);
    void clearLossCurve(int layer);
    int doneCount() const;
    const core::RunSnapshot& snapshot() const { return m_snapshot; }

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

private:
    core::RunSnapshot m_snapshot;
};

} // namespace ladimo::gui
