#include "routing/search.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "common/error.h"
#include "common/names.h"

namespace ladimo::core {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Option {
    RoutingRule rule;
    double cost = 0; // absolute: parameters or seconds
    double error = 0;
    int units = 0;
};

double layerCost(const LayerEstimate& e, CostKind kind)
{
    switch (kind) {
    case CostKind::Params: return e.params;
    case CostKind::PrefillLatency: return e.prefillSeconds;
    case CostKind::DecodeLatency: return e.decodeSeconds;
    }
    return 0;
}

// The DP table over layers x total cost units: best[l][b] = smallest summed error of layers
// 0..l with exactly b units, pick[l][b] = the option that achieves it.
class Allocation {
public:
    Allocation(const PolicyTables& tables, const SearchOptions& o) : m_tables(tables), m_kind(o.cost)
    {
        if (tables.layers.empty())
            throw Error("policy search: the conversion has no profiled layers (run `ladimo profile` first)");
        if (o.cost != CostKind::Params && !tables.latency)
            throw Error("policy search by latency needs a latency model of this device (run `ladimo latency` first)");
        const int L = static_cast<int>(tables.layers.size());
        m_options.resize(static_cast<std::size_t>(L));
        double scale = 0;
        for (int l = 0; l < L; ++l) {
            const auto& t = tables.layers[static_cast<std::size_t>(l)];
            auto& opts = m_options[static_cast<std::size_t>(l)];
            if (o.rules != RuleKinds::Threshold)
                for (int k = std::max(1, o.minK); k <= t.experts; ++k)
                    opts.push_back({RoutingRule::staticK(k)});
            if (o.rules != RuleKinds::Static)
                for (double p : t.thresholds)
                    opts.push_back({RoutingRule::topP(p)});
            if (o.rules == RuleKinds::Threshold) // the full layer stays reachable
                opts.push_back({RoutingRule::staticK(static_cast<int>(t.experts))});
            double most = 0;
            for (auto& op : opts) {
                const auto e = estimateRule(tables, l, op.rule);
                op.cost = layerCost(e, o.cost);
                op.error = e.proxy;
                most = std::max(most, op.cost);
            }
            scale += most;
        }
        m_unit = scale / std::max(1, o.resolution);
        if (!(m_unit > 0))
            throw Error("policy search: every rule costs nothing under this cost measure");
        int total = 0;
        for (auto& opts : m_options) {
            int most = 0;
            for (auto& op : opts) {
                op.units = static_cast<int>(std::llround(op.cost / m_unit));
                most = std::max(most, op.units);
            }
            total += most;
        }
        m_width = total + 1;
        std::vector<double> prev(static_cast<std::size_t>(m_width), kInf), cur;
        prev[0] = 0;
        m_pick.assign(static_cast<std::size_t>(L) * m_width, -1);
        for (int l = 0; l < L; ++l) {
            cur.assign(static_cast<std::size_t>(m_width), kInf);
            const auto& opts = m_options[static_cast<std::size_t>(l)];
            for (int b = 0; b < m_width; ++b) {
                if (prev[static_cast<std::size_t>(b)] == kInf)
                    continue;
                for (std::size_t i = 0; i < opts.size(); ++i) {
                    const int nb = b + opts[i].units;
                    if (nb >= m_width)
                        continue;
                    const double v = prev[static_cast<std::size_t>(b)] + opts[i].error;
                    if (v < cur[static_cast<std::size_t>(nb)]) {
                        cur[static_cast<std::size_t>(nb)] = v;
                        m_pick[static_cast<std::size_t>(l) * m_width + nb] = static_cast<int>(i);
                    }
                }
            }
            prev.swap(cur);
        }
        m_best = std::move(prev);
    }

    // Absolute cost budget -> the unit total whose policy has the smallest error and really fits
    // (or -1). Costs are rounded to the nearest unit, so totals up to half a unit per layer above
    // the budget are candidates too; each candidate is checked against its exact cost.
    int bestWithin(double budget) const
    {
        const int slack = static_cast<int>(m_options.size()) / 2 + 1;
        const int limit = std::min(m_width - 1, static_cast<int>(std::floor(budget / m_unit + 1e-9)) + slack);
        std::vector<int> candidates;
        for (int b = 0; b <= limit; ++b)
            if (m_best[static_cast<std::size_t>(b)] < kInf)
                candidates.push_back(b);
        std::sort(candidates.begin(), candidates.end(), [&](int a, int b) {
            return m_best[static_cast<std::size_t>(a)] < m_best[static_cast<std::size_t>(b)];
        });
        for (int b : candidates)
            if (exactCost(b) <= budget * (1 + 1e-12) + 1e-12)
                return b;
        return -1;
    }
    // The exact (unrounded) cost of the policy the table holds for unit total b.
    double exactCost(int b) const
    {
        double cost = 0;
        for (int l = static_cast<int>(m_options.size()) - 1; l >= 0; --l) {
            const int i = m_pick[static_cast<std::size_t>(l) * m_width + b];
            const auto& op = m_options[static_cast<std::size_t>(l)][static_cast<std::size_t>(i)];
            cost += op.cost;
            b -= op.units;
        }
        return cost;
    }
    int cheapestWithError(double maxError) const
    {
        int arg = -1;
        double cheapest = kInf;
        for (int b = 0; b < m_width; ++b)
            if (m_best[static_cast<std::size_t>(b)] <= maxError) {
                const double c = exactCost(b);
                if (c < cheapest) {
                    cheapest = c;
                    arg = b;
                }
            }
        return arg;
    }
    // Unit totals whose policies are Pareto-optimal by exact cost: cheapest first, each with a
    // strictly smaller error than every cheaper one.
    std::vector<std::pair<double, int>> front() const
    {
        std::vector<std::pair<double, int>> byCost;
        for (int b = 0; b < m_width; ++b)
            if (m_best[static_cast<std::size_t>(b)] < kInf)
                byCost.emplace_back(exactCost(b), b);
        std::sort(byCost.begin(), byCost.end());
        std::vector<std::pair<double, int>> out;
        double best = kInf;
        for (const auto& [cost, b] : byCost)
            if (m_best[static_cast<std::size_t>(b)] < best * (1 - 1e-12) - 1e-15) {
                best = m_best[static_cast<std::size_t>(b)];
                out.emplace_back(cost, b);
            }
        return out;
    }
    double minError() const { return *std::min_element(m_best.begin(), m_best.end()); }

    SearchResult result(int b) const
    {
        const int L = static_cast<int>(m_options.size());
        PolicyRules rules(static_cast<std::size_t>(L));
        for (int l = L - 1; l >= 0; --l) {
            const int i = m_pick[static_cast<std::size_t>(l) * m_width + b];
            const auto& op = m_options[static_cast<std::size_t>(l)][static_cast<std::size_t>(i)];
            rules[static_cast<std::size_t>(l)] = op.rule;
            b -= op.units;
        }
        SearchResult r;
        r.rules = std::move(rules);
        r.estimate = estimatePolicy(m_tables, r.rules);
        r.cost = costFraction(r.estimate, m_kind);
        return r;
    }

private:
    const PolicyTables& m_tables;
    CostKind m_kind;
    std::vector<std::vector<Option>> m_options;
    double m_unit = 0;
    int m_width = 0;
    std::vector<int> m_pick;
    std::vector<double> m_best;
};

// The absolute cost a fraction of the dense model allows the FFN layers.
double absoluteBudget(const PolicyTables& t, double fraction, CostKind kind)
{
    if (kind == CostKind::Params) {
        double dense = 0;
        for (const auto& l : t.layers)
            dense += l.denseParams;
        return fraction * dense;
    }
    const auto& m = *t.latency;
    const bool prefill = kind == CostKind::PrefillLatency;
    const double dense = prefill ? m.densePrefill() : m.denseDecode();
    return fraction * dense - (prefill ? m.prefillOther : m.decodeOther);
}

} // namespace

namespace {
constexpr NameTable<CostKind, 3> kCostKindNames{
    {{CostKind::Params, "params"}, {CostKind::PrefillLatency, "prefill"}, {CostKind::DecodeLatency, "decode"}}};
constexpr NameTable<RuleKinds, 3> kRuleKindsNames{
    {{RuleKinds::Static, "static"}, {RuleKinds::Threshold, "threshold"}, {RuleKinds::Both, "both"}}};
} // namespace

CostKind parseCostKind(const std::string& name) { return parseNamed(kCostKindNames, name, "cost measure"); }
RuleKinds parseRuleKinds(const std::string& name) { return parseNamed(kRuleKindsNames, name, "rule kinds"); }
const char* costKindName(CostKind k) { return nameOf(kCostKindNames, k); }

double costFraction(const PolicyEstimate& e, CostKind kind)
{
    switch (kind) {
    case CostKind::Params: return e.activatedFfnFraction;
    case CostKind::PrefillLatency: return e.prefillFraction;
    case CostKind::DecodeLatency: return e.decodeFraction;
    }
    return 0;
}

SearchResult searchBudget(const PolicyTables& tables, double budgetFraction, const SearchOptions& options)
{
    Allocation a(tables, options);
    const int b = a.bestWithin(absoluteBudget(tables, budgetFraction, options.cost));
    if (b < 0)
        throw Error("no policy fits a " + std::string(costKindName(options.cost)) + " budget of "
                    + std::to_string(budgetFraction) + " of the dense model: every layer's cheapest rule costs more");
    return a.result(b);
}

SearchResult searchMaxError(const PolicyTables& tables, double maxError, const SearchOptions& options)
{
    Allocation a(tables, options);
    const int b = a.cheapestWithError(maxError);
    if (b < 0)
        throw Error("no policy reaches an error proxy of " + std::to_string(maxError) + " (the smallest possible is "
                    + std::to_string(a.minError()) + ")");
    return a.result(b);
}

std::vector<SearchResult> paretoFront(const PolicyTables& tables, const SearchOptions& options, int maxPoints)
{
    Allocation a(tables, options);
    auto front = a.front();
    if (maxPoints >= 2 && static_cast<int>(front.size()) > maxPoints) {
        // Keep points spread evenly over the cost range, always the cheapest and the best.
        std::vector<std::pair<double, int>> kept;
        const double lo = front.front().first, hi = front.back().first;
        std::size_t i = 0;
        for (int p = 0; p < maxPoints; ++p) {
            const double target = lo + (hi - lo) * p / (maxPoints - 1);
            while (i + 1 < front.size() && front[i].first < target)
                ++i;
            if (kept.empty() || kept.back().second != front[i].second)
                kept.push_back(front[i]);
        }
        front = kept;
    }
    std::vector<SearchResult> out;
    for (const auto& point : front)
        out.push_back(a.result(point.second));
    return out;
}

} // namespace ladimo::core
