// What the views show of a project, as ProjectSession (projectsession.h) reads it off the GUI
// thread: the Policy view's data (the latest run's policy tables, stored policies and
// evaluations, Pareto fronts) and the Routing view's runs. Synthetic policy data for benchmarks.
#pragma once

#include <QString>

#include <vector>

#include "routing/estimate.h"
#include "routing/search.h"
#include "store/records.h"

namespace ladimo::gui {

// One conversion run's routing profiles.
struct RoutingRun {
    int64_t runId = 0;
    QString description; // "run #3 (8 experts, coact, top-6)" for the run combo
    std::vector<core::RoutingProfile> profiles;
};

struct PolicyData {
    QString path;
    core::ConversionRun run;
    core::PolicyTables tables;
    QString device; // whose latency model the estimates use ("" without one)
    std::vector<core::Policy> policies;
    std::vector<core::PolicyRules> policyRules; // parallel to `policies`
    std::vector<core::Evaluation> evaluations;
    // Pareto fronts by CostKind (params, prefill, decode); empty when not available.
    std::vector<core::SearchResult> fronts[3];
    QString error; // non-empty: nothing else is valid
};

// The Pareto fronts of d.tables (params always; prefill and decode with a latency model).
void computeFronts(PolicyData& d);
// Synthetic data for a view without a project (benchmarks): the fronts are computed.
PolicyData policyDataFromTables(const core::PolicyTables& tables, int trainTopK);

} // namespace ladimo::gui
