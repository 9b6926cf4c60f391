#include "routing/refine.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>

#include "common/error.h"
#include "routing/policy.h"

namespace ladimo::core {

namespace {

bool sameRules(const PolicyRules& a, const PolicyRules& b)
{
    return std::equal(a.begin(), a.end(), b.begin(), b.end(), sameRule);
}

// The rule one step up (more experts) or down from `r` in layer table `t`: a static k moves by
// one; a top-p rule moves to the neighbouring threshold of the profile's grid.
std::optional<RoutingRule> step(const LayerTable& t, const RoutingRule& r, bool up)
{
    if (r.isStatic()) {
        const int k = r.topK + (up ? 1 : -1);
        if (k < 1 || k > t.experts)
            return std::nullopt;
        return RoutingRule::staticK(k);
    }
    const auto& g = t.thresholds;
    if (up) {
        const auto it = std::upper_bound(g.begin(), g.end(), r.threshold + 1e-12);
        if (it == g.end())
            return std::nullopt;
        return RoutingRule::topP(*it, r.minK, r.maxK);
    }
    const auto it = std::lower_bound(g.begin(), g.end(), r.threshold - 1e-12);
    if (it == g.begin())
        return std::nullopt;
    return RoutingRule::topP(*std::prev(it), r.minK, r.maxK);
}

} // namespace

RefineResult refinePolicy(const PolicyTables& tables, const PolicyRules& start, const RefineOptions& o,
                          const std::function<double(const PolicyRules&)>& measure)
{
    const int L = static_cast<int>(tables.layers.size());
    if (static_cast<int>(start.size()) != L)
        throw Error("policy refinement: the policy has " + std::to_string(start.size()) + " rules, the conversion "
                    + std::to_string(L) + " layers");
    if (o.maxEvaluations < 1 || o.perRound < 1)
        throw Error("policy refinement: needs at least one measurement per round and in all");
    const double limit = o.budgetFraction * (1 + 1e-9);
    auto candidate = [&](PolicyRules rules) {
        RefineCandidate c;
        const auto e = estimatePolicy(tables, rules);
        c.cost = costFraction(e, o.cost);
        c.proxy = e.errorProxy;
        c.rules = std::move(rules);
        return c;
    };
    RefineResult out;
    auto seen = [&](const PolicyRules& r) {
        return std::any_of(out.measured.begin(), out.measured.end(),
                           [&](const RefineCandidate& c) { return sameRules(c.rules, r); });
    };
    // Measures `c` (unless already measured or out of measurements); true when it is the new best.
    auto take = [&](RefineCandidate c) {
        if (static_cast<int>(out.measured.size()) >= o.maxEvaluations || seen(c.rules))
            return false;
        o.cancel.throwIfCancelled();
        if (o.progress)
            o.progress("refine", static_cast<double>(out.measured.size()), o.maxEvaluations);
        c.measured = measure(c.rules);
        out.measured.push_back(c);
        if (o.onMeasured)
            o.onMeasured(out.measured.back());
        if (out.measured.size() == 1 || c.measured < out.best.measured) {
            out.best = c;
            return true;
        }
        return false;
    };

    out.start = candidate(start);
    if (out.start.cost > limit)
        throw Error("policy refinement: the starting policy costs " + std::to_string(out.start.cost)
                    + " of dense, over the budget " + std::to_string(o.budgetFraction));
    take(out.start);
    out.start.measured = out.best.measured;
    // The uniform static policy a user would otherwise pick: the most experts that fit.
    for (int k = static_cast<int>(tables.layers.front().experts); k >= 1; --k) {
        auto u = candidate(uniformRules(L, RoutingRule::staticK(k)));
        if (u.cost <= limit) {
            take(std::move(u));
            break;
        }
    }
    while (static_cast<int>(out.measured.size()) < o.maxEvaluations) {
        ++out.rounds;
        const PolicyRules base = out.best.rules;
        std::vector<RefineCandidate> next;
        auto offer = [&](PolicyRules r) {
            if (seen(r) || std::any_of(next.begin(), next.end(), [&](const RefineCandidate& c) {
                    return sameRules(c.rules, r);
                }))
                return;
            auto c = candidate(std::move(r));
            if (c.cost <= limit)
                next.push_back(std::move(c));
        };
        for (int i = 0; i < L; ++i) {
            const auto& ti = tables.layers[static_cast<std::size_t>(i)];
            for (bool up : {true, false}) {
                const auto si = step(ti, base[static_cast<std::size_t>(i)], up);
                if (!si)
                    continue;
                auto single = base;
                single[static_cast<std::size_t>(i)] = *si;
                offer(single);
                if (!up)
                    continue;
                for (int j = 0; j < L; ++j) {
                    if (j == i)
                        continue;
                    const auto sj
                        = step(tables.layers[static_cast<std::size_t>(j)], base[static_cast<std::size_t>(j)], false);
                    if (!sj)
                        continue;
                    auto pair = single;
                    pair[static_cast<std::size_t>(j)] = *sj;
                    offer(pair);
                }
            }
        }
        if (next.empty())
            break;
        std::stable_sort(next.begin(), next.end(),
                         [](const RefineCandidate& a, const RefineCandidate& b) { return a.proxy < b.proxy; });
        // Chunks of perRound, cheapest proxy first; the next round starts from the first chunk
        // that improves on the best.
        bool improved = false;
        for (std::size_t i = 0; i < next.size() && !improved; i += static_cast<std::size_t>(o.perRound))
            for (std::size_t j = i; j < std::min(next.size(), i + static_cast<std::size_t>(o.perRound)); ++j)
                improved = take(next[j]) || improved;
        if (!improved)
            break;
    }
    if (o.progress)
        o.progress("refine", o.maxEvaluations, o.maxEvaluations);
    return out;
}

} // namespace ladimo::core
