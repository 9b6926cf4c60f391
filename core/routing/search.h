// Stage 2b policy search: choose every layer's rule for a target, as an exact allocation over
// layers (not a uniform k). Each layer offers its static top-k rules and/or top-p rules of the
// profile's threshold grid, each with a cost (activated parameters, or prefill / decode time of
// the latency model) and an error (the layer's relative output error). A dynamic programme over
// layers x discretised total cost finds, for every budget, the rules with the smallest summed
// error; costs are rounded to the nearest unit and every candidate is checked at its exact cost,
// so a returned policy never exceeds its budget. The same table gives
// the Pareto front (error proxy against cost) and the cheapest policy under an error bound.
// Pure functions; thread-safe.
#pragma once

#include <string>
#include <vector>

#include "routing/estimate.h"

namespace ladimo::core {

enum class CostKind { Params, PrefillLatency, DecodeLatency };
enum class RuleKinds { Static, Threshold, Both };
CostKind parseCostKind(const std::string& name);   // params | prefill | decode
RuleKinds parseRuleKinds(const std::string& name); // static | threshold | both
const char* costKindName(CostKind k);

struct SearchOptions {
    CostKind cost = CostKind::Params;
    RuleKinds rules = RuleKinds::Static;
    int resolution = 4000; // cost units of the whole model at its most expensive
    int minK = 1;          // smallest static k offered (top-p rules keep their grid)
};

struct SearchResult {
    PolicyRules rules;
    PolicyEstimate estimate;
    double cost = 0; // as a fraction of the dense model (params: of the dense FFN)
};

// The policy with the smallest error proxy whose cost is at most `budgetFraction` of the dense
// model (params: activated FFN fraction; latency: of the dense model's estimated time).
// Throws Error when no policy fits (the budget is below every layer's cheapest rule).
SearchResult searchBudget(const PolicyTables& tables, double budgetFraction, const SearchOptions& options = {});
// The cheapest policy whose error proxy is at most `maxError`.
SearchResult searchMaxError(const PolicyTables& tables, double maxError, const SearchOptions& options = {});
// Pareto-optimal policies, cheapest first, at most `maxPoints` spread over the cost range.
std::vector<SearchResult> paretoFront(const PolicyTables& tables, const SearchOptions& options = {},
                                      int maxPoints = 40);

// Cost of an estimate as a fraction of the dense model, for the given kind.
double costFraction(const PolicyEstimate& e, CostKind kind);

} // namespace ladimo::core
