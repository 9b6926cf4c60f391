// LayerTableModel: one row per decoder layer of the open model (index, attention and FFN
// parameters, intermediate size). A value snapshot replaced as a whole with setConfig().
// GUI thread only.
#pragma once

#include <QAbstractTableModel>

#include "model/config.h"

namespace ladimo::gui {

class LayerTableModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column { LayerColumn, AttentionColumn, FfnColumn, IntermediateColumn, ColumnCount };
    using QAbstractTableModel::QAbstractTableModel;

    void setConfig(const core::ModelConfig& config);
    void clear();

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

private:
    core::ModelConfig m_config;
    core::ParameterCounts m_counts;
    bool m_valid = false;
};

} // namespace ladimo::gui
