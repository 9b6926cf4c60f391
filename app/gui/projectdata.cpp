#include "projectdata.h"

namespace ladimo::gui {

namespace {
constexpr int kFrontPoints = 40;
} // namespace

void computeFronts(PolicyData& d)
{
    const core::CostKind kinds[3]
        = {core::CostKind::Params, core::CostKind::PrefillLatency, core::CostKind::DecodeLatency};
    for (int i = 0; i < 3; ++i) {
        if (i > 0 && !d.tables.latency)
            continue;
        core::SearchOptions so;
        so.cost = kinds[i];
        so.rules = core::RuleKinds::Both;
        d.fronts[i] = core::paretoFront(d.tables, so, kFrontPoints);
    }
}

PolicyData policyDataFromTables(const core::PolicyTables& tables, int trainTopK)
{
    PolicyData d;
    d.tables = tables;
    d.run.layers = static_cast<int>(tables.layers.size());
    d.run.experts = tables.layers.empty() ? 0 : tables.layers.front().experts;
    d.run.trainTopK = trainTopK;
    if (tables.latency)
        d.device = QString::fromStdString(tables.latency->device);
    computeFronts(d);
    return d;
}

} // namespace ladimo::gui
