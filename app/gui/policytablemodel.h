// PolicyTableModel: the routing policy being tuned, one row per layer (rule, the slider setting,
// and the layer's instant estimates), over a value copy of the run's PolicyTables. A rule change
// re-estimates only that layer (estimateRule + updateTotals: arithmetic on the stored profile, no
// tensor work) and emits estimateChanged with the new whole-model totals. With an undo stack set,
// edits through setData become undoable commands; setRule/setRules change the rules directly (the
// commands call them). GUI thread only.
#pragma once

#include <QAbstractTableModel>

#include "routing/estimate.h"
#include "routing/policy.h"

class QUndoStack;

namespace ladimo::gui {

class PolicyTableModel : public QAbstractTableModel {
    Q_OBJECT
public:
    enum Column {
        LayerColumn,
        KindColumn,    // "top-k" | "top-p"; EditRole: 0 static, 1 threshold
        SettingColumn, // the slider: EditRole is k (static) or p (threshold)
        RuleColumn,    // describeRule text
        MeanKColumn,
        FfnColumn, // activated FFN parameters, % of the layer's dense FFN
        ErrorColumn,
        PrefillColumn, // estimated ms of the layer's block at prefill
        DecodeColumn,
        ColumnCount
    };
    // Qt::UserRole: raw numbers. DragEditRole: like EditRole for SettingColumn, but successive
    // edits of one layer merge into one undo step (a slider being dragged).
    enum Roles { KindRole = Qt::UserRole + 1, ExpertsRole, DragEditRole };
    enum Kind { StaticKind = 0, ThresholdKind = 1 };

    explicit PolicyTableModel(QObject* parent = nullptr);

    // Replaces tables and rules (one per layer) as a whole.
    void setPolicy(const core::PolicyTables& tables, const core::PolicyRules& rules);
    void clear();
    void setUndoStack(QUndoStack* stack) { m_undo = stack; }

    const core::PolicyTables& tables() const { return m_tables; }
    const core::PolicyRules& rules() const { return m_rules; }
    const core::PolicyEstimate& estimate() const { return m_estimate; }
    int64_t experts() const { return m_tables.layers.empty() ? 0 : m_tables.layers.front().experts; }

    // Direct changes (no undo): one layer re-estimated, or all layers.
    void setRule(int layer, const core::RoutingRule& rule);
    void setRules(const core::PolicyRules& rules);
    // Through the undo stack when one is set (one undoable step named `description`).
    void requestRules(const core::PolicyRules& rules, const QString& description);
    void requestRule(int layer, const core::RoutingRule& rule, bool merge = false);
    // The rule a kind switch gives: top-p at the grid threshold whose mean k is closest to the
    // current mean k, or the static k nearest the current mean k.
    core::RoutingRule convertedRule(int layer, Kind kind) const;

    int rowCount(const QModelIndex& parent = {}) const override;
    int columnCount(const QModelIndex& parent = {}) const override;
    QVariant data(const QModelIndex& index, int role = Qt::DisplayRole) const override;
    bool setData(const QModelIndex& index, const QVariant& value, int role = Qt::EditRole) override;
    Qt::ItemFlags flags(const QModelIndex& index) const override;
    QVariant headerData(int section, Qt::Orientation orientation, int role = Qt::DisplayRole) const override;

Q_SIGNALS:
    // After any rule change; `estimate()` holds the new totals.
    void estimateChanged();

private:
    core::PolicyTables m_tables;
    core::PolicyRules m_rules;
    core::PolicyEstimate m_estimate;
    QUndoStack* m_undo = nullptr;
};

} // namespace ladimo::gui
