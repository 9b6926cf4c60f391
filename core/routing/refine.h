// Stage 2b, measured refinement of a searched policy. The search (routing/search.h) ranks
// policies by an error proxy that adds up per-layer errors as if layers were independent; on a
// small model the proxy's ranking of near-equal policies is often wrong. The refinement measures
// instead: it evaluates candidate policies with a caller-supplied measure (the held-out NLL of the
// converted model, in the CLI) and keeps the best one within the budget.
//
// Candidates: the starting policy, the most expensive uniform static top-k within the budget, and
// then, round by round, the neighbours of the best policy so far: one layer one step up and
// another one step down (a static k by one; a top-p rule to the next threshold of its grid), or
// one layer one step either way. Neighbours over the budget are never measured; the rest are
// measured lowest-proxy first in chunks of `perRound`, and the first chunk that improves on the
// best starts the next round from the new best. It stops at a measured local optimum (no
// neighbour is better) or when `maxEvaluations` measurements are spent. Deterministic for a
// deterministic measure.
#pragma once

#include <functional>
#include <vector>

#include "common/progress.h"
#include "routing/search.h"

namespace ladimo::core {

struct RefineCandidate {
    PolicyRules rules;
    double cost = 0;     // fraction of dense, as costFraction
    double proxy = 0;    // estimated error proxy
    double measured = 0; // what the measure returned (lower is better)
};

struct RefineOptions {
    CostKind cost = CostKind::Params;
    double budgetFraction = 1; // as searchBudget's; every candidate measured fits it
    int maxEvaluations = 24;   // measurements in all, the starting policy included
    int perRound = 8;          // neighbours measured before looking for an improvement
    ProgressFn progress;       // ("refine", measured, maxEvaluations)
    // After each measurement, in order, on the measuring thread: a caller that shows the search
    // live (the workbench) sees every candidate as it is measured, not only the result.
    std::function<void(const RefineCandidate&)> onMeasured;
    CancelToken cancel; // checked before each measurement
};

struct RefineResult {
    RefineCandidate best;
    RefineCandidate start;
    std::vector<RefineCandidate> measured; // in the order measured
    int rounds = 0;
};

// Smaller `measure` is better. Throws Error when `start` is over the budget, Cancelled when the
// token is cancelled.
RefineResult refinePolicy(const PolicyTables& tables, const PolicyRules& start, const RefineOptions& options,
                          const std::function<double(const PolicyRules&)>& measure);

} // namespace ladimo::core
