#include "policytablemodel.h"

#include <QBrush>
#include <QColor>
#include <QUndoCommand>
#include <QUndoStack>

#include <algorithm>
#include <cmath>

namespace ladimo::gui {

namespace {

// One layer's rule; successive drag edits of the same layer merge into one step.
class SetRuleCommand : public QUndoCommand {
public:
    SetRuleCommand(PolicyTableModel* model, int layer, core::RoutingRule before, core::RoutingRule after, bool merge)
        : m_model(model), m_layer(layer), m_before(before), m_after(after), m_merge(merge)
    {
        updateText();
    }
    void redo() override { m_model->setRule(m_layer, m_after); }
    void undo() override { m_model->setRule(m_layer, m_before); }
    int id() const override { return 1; }
    bool mergeWith(const QUndoCommand* other) override
    {
        const auto* o = static_cast<const SetRuleCommand*>(other);
        if (!m_merge || !o->m_merge || o->m_layer != m_layer)
            return false;
        m_after = o->m_after;
        updateText();
        return true;
    }

private:
    void updateText()
    {
        setText(QObject::tr("layer %1: %2")
                    .arg(m_layer)
                    .arg(QString::fromStdString(core::describeRule(m_after, m_model->experts()))));
    }
    PolicyTableModel* m_model;
    int m_layer;
    core::RoutingRule m_before, m_after;
    bool m_merge;
};

// A whole policy at once (loading a stored policy, Auto, a clicked front point).
class SetRulesCommand : public QUndoCommand {
public:
    SetRulesCommand(PolicyTableModel* model, core::PolicyRules before, core::PolicyRules after, const QString& text)
        : m_model(model), m_before(std::move(before)), m_after(std::move(after))
    {
        setText(text);
    }
    void redo() override { m_model->setRules(m_after); }
    void undo() override { m_model->setRules(m_before); }

private:
    PolicyTableModel* m_model;
    core::PolicyRules m_before, m_after;
};

} // namespace

PolicyTableModel::PolicyTableModel(QObject* parent) : QAbstractTableModel(parent) { }

void PolicyTableModel::setPolicy(const core::PolicyTables& tables, const core::PolicyRules& rules)
{
    beginResetModel();
    m_tables = tables;
    m_rules = rules;
    m_estimate = core::estimatePolicy(m_tables, m_rules);
    endResetModel();
    Q_EMIT estimateChanged();
}

void PolicyTableModel::clear()
{
    beginResetModel();
    m_tables = {};
    m_rules.clear();
    m_estimate = {};
    endResetModel();
    Q_EMIT estimateChanged();
}

void PolicyTableModel::setRule(int layer, const core::RoutingRule& rule)
{
    if (layer < 0 || layer >= rowCount())
        return;
    const auto l = static_cast<std::size_t>(layer);
    m_rules[l] = rule;
    m_estimate.layers[l] = core::estimateRule(m_tables, layer, rule);
    core::updateTotals(m_tables, m_estimate);
    Q_EMIT dataChanged(index(layer, KindColumn), index(layer, ColumnCount - 1));
    Q_EMIT estimateChanged();
}

void PolicyTableModel::setRules(const core::PolicyRules& rules)
{
    if (rules.size() != m_rules.size())
        return;
    m_rules = rules;
    m_estimate = core::estimatePolicy(m_tables, m_rules);
    if (rowCount() > 0)
        Q_EMIT dataChanged(index(0, KindColumn), index(rowCount() - 1, ColumnCount - 1));
    Q_EMIT estimateChanged();
}

void PolicyTableModel::requestRule(int layer, const core::RoutingRule& rule, bool merge)
{
    if (layer < 0 || layer >= rowCount() || core::sameRule(rule, m_rules[static_cast<std::size_t>(layer)]))
        return;
    if (m_undo)
        m_undo->push(new SetRuleCommand(this, layer, m_rules[static_cast<std::size_t>(layer)], rule, merge));
    else
        setRule(layer, rule);
}

void PolicyTableModel::requestRules(const core::PolicyRules& rules, const QString& description)
{
    if (rules.size() != m_rules.size())
        return;
    if (m_undo)
        m_undo->push(new SetRulesCommand(this, m_rules, rules, description));
    else
        setRules(rules);
}

core::RoutingRule PolicyTableModel::convertedRule(int layer, Kind kind) const
{
    const auto l = static_cast<std::size_t>(layer);
    const auto& t = m_tables.layers.at(l);
    const double meanK = m_estimate.layers.at(l).meanK;
    if (kind == StaticKind) {
        const int k = std::clamp(static_cast<int>(std::lround(meanK)), 1, static_cast<int>(t.experts));
        return core::RoutingRule::staticK(k);
    }
    double p = 0.9;
    double best = 1e300;
    for (std::size_t i = 0; i < t.thresholds.size(); ++i) {
        const double d = std::abs(t.meanKByThreshold[i] - meanK);
        if (d < best) {
            best = d;
            p = t.thresholds[i];
        }
    }
    return core::RoutingRule::topP(p);
}

int PolicyTableModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : static_cast<int>(m_rules.size());
}

int PolicyTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QVariant PolicyTableModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount() || index.column() >= ColumnCount)
        return {};
    const auto l = static_cast<std::size_t>(index.row());
    const auto& rule = m_rules[l];
    const auto& e = m_estimate.layers[l];
    const bool isStatic = rule.isStatic();
    if (role == KindRole)
        return static_cast<int>(isStatic ? StaticKind : ThresholdKind);
    if (role == ExpertsRole)
        return static_cast<qlonglong>(experts());
    const double ffn = e.params / m_tables.layers[l].denseParams;
    if (role == Qt::UserRole || role == Qt::EditRole) {
        switch (index.column()) {
        case LayerColumn: return index.row();
        case KindColumn: return static_cast<int>(isStatic ? StaticKind : ThresholdKind);
        case SettingColumn: return isStatic ? QVariant(rule.topK) : QVariant(rule.threshold);
        case RuleColumn: return QString::fromStdString(core::describeRule(rule, experts()));
        case MeanKColumn: return e.meanK;
        case FfnColumn: return ffn;
        case ErrorColumn: return e.error;
        case PrefillColumn: return e.prefillSeconds;
        case DecodeColumn: return e.decodeSeconds;
        }
        return {};
    }
    if (role == Qt::DisplayRole) {
        const bool lat = m_estimate.hasLatency;
        switch (index.column()) {
        case LayerColumn: return index.row();
        case KindColumn: return isStatic ? tr("top-k") : tr("top-p");
        case SettingColumn: return isStatic ? QString::number(rule.topK) : QString::number(rule.threshold, 'f', 2);
        case RuleColumn:
            return QString::fromStdString(core::describeRule(rule, experts()))
                + (e.approximate ? QStringLiteral(" ~") : QString());
        case MeanKColumn: return QString::number(e.meanK, 'f', 2);
        case FfnColumn: return QString::number(100.0 * ffn, 'f', 1) + QStringLiteral(" %");
        case ErrorColumn: return QString::number(e.error, 'f', 5);
        case PrefillColumn: return lat ? QString::number(1e3 * e.prefillSeconds, 'f', 3) : QStringLiteral("-");
        case DecodeColumn: return lat ? QString::number(1e3 * e.decodeSeconds, 'f', 4) : QStringLiteral("-");
        }
        return {};
    }
    if (role == Qt::TextAlignmentRole && index.column() >= MeanKColumn)
        return static_cast<int>(Qt::AlignRight | Qt::AlignVCenter);
    if (role == Qt::ToolTipRole) {
        switch (index.column()) {
        case KindColumn:
            return tr("top-k: a fixed number of experts per token; top-p: the fewest experts whose "
                      "routing weights sum to at least p (token-adaptive)");
        case SettingColumn:
            return isStatic ? tr("Experts per token in layer %1 (1..%2)").arg(index.row()).arg(experts())
                            : tr("Cumulative routing mass p of layer %1's token-adaptive rule").arg(index.row());
        case RuleColumn:
            return e.approximate
                ? tr("Approximate: the bounds were applied to the mean k of the profile's threshold grid")
                : QVariant();
        case ErrorColumn:
            return tr("Relative output error of the MoE block against the dense FFN on the profile tokens");
        }
    }
    if (role == Qt::ForegroundRole && index.column() == ErrorColumn && m_estimate.errorProxy > 0
        && e.error > 2.0 * m_estimate.errorProxy / std::max<std::size_t>(1, m_rules.size()))
        return QBrush(QColor(190, 60, 40)); // well above the mean layer error: where accuracy is lost
    return {};
}

bool PolicyTableModel::setData(const QModelIndex& index, const QVariant& value, int role)
{
    if (!index.isValid() || index.row() >= rowCount() || (role != Qt::EditRole && role != DragEditRole))
        return false;
    const int layer = index.row();
    const auto& current = m_rules[static_cast<std::size_t>(layer)];
    const int n = static_cast<int>(experts());
    if (index.column() == KindColumn) {
        bool ok = false;
        int kind = value.toInt(&ok);
        if (!ok) {
            const QString s = value.toString().trimmed().toLower();
            if (s == "top-k" || s == "static")
                kind = StaticKind;
            else if (s == "top-p" || s == "threshold")
                kind = ThresholdKind;
            else
                return false;
        }
        if (kind != StaticKind && kind != ThresholdKind)
            return false;
        if ((kind == StaticKind) == (current.isStatic()))
            return true;
        requestRule(layer, convertedRule(layer, static_cast<Kind>(kind)));
        return true;
    }
    if (index.column() == SettingColumn) {
        bool ok = false;
        core::RoutingRule rule = current;
        if (current.isStatic()) {
            const int k = value.toInt(&ok);
            if (!ok || k < 1 || k > n)
                return false;
            rule.topK = k;
        } else {
            const double p = value.toDouble(&ok);
            if (!ok || !(p > 0.0 && p <= 1.0))
                return false;
            rule.threshold = p;
        }
        requestRule(layer, rule, role == DragEditRole);
        return true;
    }
    return false;
}

Qt::ItemFlags PolicyTableModel::flags(const QModelIndex& index) const
{
    if (!index.isValid())
        return Qt::NoItemFlags;
    Qt::ItemFlags f = Qt::ItemIsEnabled | Qt::ItemIsSelectable;
    if (index.column() == KindColumn || index.column() == SettingColumn)
        f |= Qt::ItemIsEditable;
    return f;
}

QVariant PolicyTableModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (orientation != Qt::Horizontal)
        return QAbstractTableModel::headerData(section, orientation, role);
    if (role == Qt::ToolTipRole) {
        switch (section) {
        case SettingColumn:
            return tr("Slider: experts per token (top-k rows) or cumulative routing mass p (top-p rows)");
        case MeanKColumn: return tr("Mean number of experts a token uses (exact for top-k, expected for top-p)");
        case FfnColumn: return tr("Activated FFN parameters per token, % of the layer's dense FFN");
        case ErrorColumn: return tr("Relative output error of the MoE block against the dense FFN (error proxy)");
        case PrefillColumn: return tr("Estimated time of the layer's MoE block in a prefill forward (latency model)");
        case DecodeColumn: return tr("Estimated time of the layer's MoE block in one decode step (latency model)");
        }
        return {};
    }
    if (role != Qt::DisplayRole)
        return QAbstractTableModel::headerData(section, orientation, role);
    switch (section) {
    case LayerColumn: return tr("Layer");
    case KindColumn: return tr("Kind");
    case SettingColumn: return tr("k / p");
    case RuleColumn: return tr("Rule");
    case MeanKColumn: return tr("Mean k");
    case FfnColumn: return tr("Active FFN");
    case ErrorColumn: return tr("Error proxy");
    case PrefillColumn: return tr("Prefill ms");
    case DecodeColumn: return tr("Decode ms");
    }
    return {};
}

} // namespace ladimo::gui
