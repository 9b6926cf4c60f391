#include "evaluationtablemodel.h"

#include <algorithm>

namespace ladimo::gui {

void EvaluationTableModel::setEvaluations(std::vector<core::Evaluation> evaluations,
                                          std::vector<std::pair<int64_t, QString>> policyNames)
{
    beginResetModel();
    m_rows = std::move(evaluations);
    std::sort(m_rows.begin(), m_rows.end(), [](const auto& a, const auto& b) { return a.id > b.id; });
    m_policyNames = std::move(policyNames);
    endResetModel();
}

int EvaluationTableModel::rowCount(const QModelIndex& parent) const
{
    return parent.isValid() ? 0 : static_cast<int>(m_rows.size());
}

int EvaluationTableModel::columnCount(const QModelIndex& parent) const { return parent.isValid() ? 0 : ColumnCount; }

QString EvaluationTableModel::policyText(const core::Evaluation& e) const
{
    for (const auto& [id, name] : m_policyNames)
        if (e.policyId != 0 && id == e.policyId)
            return name;
    if (e.metrics.contains("policy_label"))
        return QString::fromStdString(e.metrics["policy_label"].get<std::string>());
    if (e.metrics.contains("rules") && e.metrics["rules"].is_array() && !e.metrics["rules"].empty()) {
        // `ladimo eval --top-k K / --top-p P` records the same rule for every layer.
        const auto& rules = e.metrics["rules"];
        auto first = rules.front();
        first.erase("layer");
        bool uniform = true;
        for (auto r : rules) {
            r.erase("layer");
            uniform = uniform && r == first;
        }
        if (uniform && first.contains("top_k"))
            return tr("uniform top-%1").arg(first["top_k"].get<int>());
        if (uniform && first.contains("top_p"))
            return tr("uniform top-p %1").arg(first["top_p"].get<double>());
        return tr("per-layer rules");
    }
    return tr("dense");
}

QVariant EvaluationTableModel::data(const QModelIndex& index, int role) const
{
    if (!index.isValid() || index.row() >= rowCount() || index.column() >= ColumnCount)
        return {};
    if (role != Qt::DisplayRole && role != Qt::UserRole)
        return {};
    const auto& e = m_rows[static_cast<std::size_t>(index.row())];
    auto metric = [&](const char* key, double scale, int precision) -> QVariant {
        if (!e.metrics.contains(key) || !e.metrics[key].is_number())
            return role == Qt::DisplayRole ? QVariant(QStringLiteral("-")) : QVariant();
        const double v = e.metrics[key].get<double>() * scale;
        return role == Qt::DisplayRole ? QVariant(QString::number(v, 'g', precision)) : QVariant(v);
    };
    switch (index.column()) {
    case IdColumn: return static_cast<qlonglong>(e.id);
    case PolicyColumn: return policyText(e);
    case DataColumn: return QString::fromStdString(e.data);
    case PerplexityColumn: return metric("perplexity", 1, 5);
    case KlColumn: return metric("kl_to_dense", 1, 4);
    case FfnColumn: return metric("activated_ffn_fraction", 100, 4);
    case PrefillColumn: return metric("prefill_seconds", 1000, 4);
    case DecodeColumn: return metric("decode_seconds", 1000, 4);
    case DeviceColumn: return QString::fromStdString(e.device);
    case TimeColumn: return QString::fromStdString(e.timestamp);
    }
    return {};
}

QVariant EvaluationTableModel::headerData(int section, Qt::Orientation orientation, int role) const
{
    if (orientation != Qt::Horizontal || role != Qt::DisplayRole)
        return QAbstractTableModel::headerData(section, orientation, role);
    switch (section) {
    case IdColumn: return tr("#");
    case PolicyColumn: return tr("Policy");
    case DataColumn: return tr("Data");
    case PerplexityColumn: return tr("Perplexity");
    case KlColumn: return tr("KL to dense");
    case FfnColumn: return tr("FFN active %");
    case PrefillColumn: return tr("Prefill ms");
    case DecodeColumn: return tr("Decode ms/token");
    case DeviceColumn: return tr("Device");
    case TimeColumn: return tr("When");
    }
    return {};
}

} // namespace ladimo::gui
