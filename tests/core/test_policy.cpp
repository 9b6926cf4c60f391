// Stage 2b: policy values and their JSON, instant estimates against measured counts, the policy
// search against brute force, the Pareto front, and the CLI flow profile -> latency -> policy ->
// eval -> tradeoff on tinystories260K.
#include <cmath>
#include <functional>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "routing/estimate.h"
#include "routing/policy.h"
#include "routing/refine.h"
#include "routing/search.h"
#include "testutil.h"

using namespace ladimo::core;
using ladimo::test::runLadimo;

namespace {

// Synthetic tables: L layers of N experts; costs k x 100 parameters, errors from `err(l, k)`.
PolicyTables syntheticTables(int L, int N, const std::function<double(int, int)>& err)
{
    PolicyTables t;
    for (int l = 0; l < L; ++l) {
        LayerTable lt;
        lt.experts = N;
        lt.denseParams = 100.0 * N;
        for (int k = 1; k <= N; ++k) {
            lt.paramsByK.push_back(100.0 * k);
            lt.errorByK.push_back(err(l, k));
        }
        // A threshold grid whose mean k runs from 1 to N.
        for (int i = 0; i < 5; ++i) {
            const double p = 0.5 + 0.1 * i;
            const double k = 1 + (N - 1) * i / 4.0;
            lt.thresholds.push_back(p);
            lt.meanKByThreshold.push_back(k);
            lt.paramsByThreshold.push_back(100.0 * k);
            // Adaptive rules do better than static at the same mean k.
            const double lo = err(l, static_cast<int>(std::floor(k))), hi = err(l, static_cast<int>(std::ceil(k)));
            lt.errorByThreshold.push_back(0.8 * (lo + (k - std::floor(k)) * (hi - lo)));
        }
        t.layers.push_back(lt);
    }
    return t;
}

double layerError(int l, int k) { return (1.0 + l) * std::exp(-0.6 * k) * (l == 1 ? 3.0 : 1.0); }

} // namespace

TEST(Policy, RulesRoundTripThroughJsonAndEdits)
{
    PolicyRules rules = uniformRules(4, RoutingRule::staticK(6));
    rules = applyEdits(rules, "0:4, 2-3:p0.9, 1:p0.8:2-6", 8);
    EXPECT_EQ(rules[0].topK, 4);
    EXPECT_EQ(rules[1].topK, 0);
    EXPECT_DOUBLE_EQ(rules[1].threshold, 0.8);
    EXPECT_EQ(rules[1].minK, 2);
    EXPECT_EQ(rules[1].maxK, 6);
    EXPECT_DOUBLE_EQ(rules[3].threshold, 0.9);
    EXPECT_EQ(describeRule(rules[1], 8), "p=0.80 [2..6]");
    EXPECT_EQ(describeRule(rules[2], 8), "p=0.90");
    const auto doc = policyDocument("mine", rules, Gating::Renorm, 8);
    const auto back = parsePolicyDocument(nlohmann::json::parse(doc.dump()), 4, 8, "doc.json");
    EXPECT_EQ(back.name, "mine");
    EXPECT_EQ(back.gating, Gating::Renorm);
    ASSERT_EQ(back.rules.size(), 4u);
    for (std::size_t l = 0; l < 4; ++l) {
        EXPECT_EQ(back.rules[l].topK, rules[l].topK);
        EXPECT_EQ(back.rules[l].threshold, rules[l].threshold);
        EXPECT_EQ(back.rules[l].minK, rules[l].minK);
        EXPECT_EQ(back.rules[l].maxK, rules[l].maxK);
    }
    int k = 0;
    EXPECT_TRUE(isUniformStatic(uniformRules(3, RoutingRule::staticK(5)), &k));
    EXPECT_EQ(k, 5);
    EXPECT_FALSE(isUniformStatic(rules));
    EXPECT_EQ(applyEdits(rules, "*:3", 8)[2].topK, 3);
}

TEST(Policy, BadPoliciesAreRejectedWithTheReason)
{
    auto expectError = [](const std::function<void()>& fn, const std::string& needle) {
        try {
            fn();
            ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    const auto base = uniformRules(4, RoutingRule::staticK(6));
    expectError([&] { applyEdits(base, "4:2", 8); }, "0..3");
    expectError([&] { applyEdits(base, "1:9", 8); }, "exceeds the 8 experts");
    expectError([&] { applyEdits(base, "1:p1.5", 8); }, "top_p must be in (0, 1]");
    expectError([&] { applyEdits(base, "1:x", 8); }, "not an integer");
    expectError([&] { applyEdits(base, "1:p0.9:5-3", 8); }, "min_k <= max_k");
    auto doc = policyDocument("p", base, Gating::Hard, 8);
    doc["rules"][2]["layer"] = 1;
    expectError([&] { parsePolicyDocument(doc, 4, 8, "x.json"); }, "layer 1 has two rules");
    doc = policyDocument("p", base, Gating::Hard, 8);
    expectError([&] { parsePolicyDocument(doc, 5, 8, "x.json"); }, "has 4 rules, the conversion has 5 layers");
    expectError([&] { parsePolicyDocument(doc, 4, 16, "x.json"); }, "written for 8 experts");
    expectError([&] { parsePolicyDocument(nlohmann::json::object(), 4, 8, "x.json"); }, "x.json: not a routing policy");
    doc["name"] = "../../etc/passwd";
    expectError([&] { parsePolicyDocument(doc, 4, 8, "x.json"); }, "may only use letters");
}

TEST(Policy, EstimatesAreSumsOfTheLayerTables)
{
    const auto t = syntheticTables(3, 8, layerError);
    const auto rules = applyEdits(uniformRules(3, RoutingRule::staticK(6)), "1:8,2:p0.65", 8);
    const auto e = estimatePolicy(t, rules);
    EXPECT_DOUBLE_EQ(e.layers[0].params, 600);
    EXPECT_DOUBLE_EQ(e.layers[1].params, 800);
    // p = 0.65 lies halfway between grid points 0.6 (k 2.75) and 0.7 (k 4.5).
    EXPECT_NEAR(e.layers[2].meanK, 3.625, 1e-12);
    EXPECT_NEAR(e.layers[2].params, 362.5, 1e-9);
    EXPECT_NEAR(e.activatedFfnFraction, (600 + 800 + 362.5) / 2400.0, 1e-12);
    EXPECT_NEAR(e.errorProxy, layerError(0, 6) + layerError(1, 8) + e.layers[2].error, 1e-12);
    EXPECT_FALSE(e.hasLatency);
}

TEST(Policy, BudgetSearchFindsTheBruteForceOptimum)
{
    const int L = 4, N = 6;
    auto t = syntheticTables(L, N, layerError);
    SearchOptions so;
    so.resolution = L * N; // one unit = 100 parameters: the DP is exact
    for (double budget : {0.4, 0.5, 0.6, 0.75, 0.9}) {
        double best = INFINITY;
        std::vector<int> ks(L, 1);
        std::function<void(int, double, double)> rec = [&](int l, double cost, double err) {
            if (l == L) {
                if (cost <= budget * L * N * 100 + 1e-9)
                    best = std::min(best, err);
                return;
            }
            for (int k = 1; k <= N; ++k)
                rec(l + 1, cost + 100.0 * k, err + layerError(l, k));
        };
        rec(0, 0, 0);
        const auto r = searchBudget(t, budget, so);
        EXPECT_NEAR(r.estimate.errorProxy, best, 1e-12) << "budget " << budget;
        EXPECT_LE(r.estimate.activatedFfnFraction, budget + 1e-12);
        // Better than (or as good as) the uniform k that fits the same budget.
        const int k = static_cast<int>(std::floor(budget * N + 1e-9));
        EXPECT_LE(r.estimate.errorProxy,
                  estimatePolicy(t, uniformRules(L, RoutingRule::staticK(k))).errorProxy + 1e-12);
    }
    // The sensitive layer 1 gets at least as many experts as layer 0 at 60%.
    const auto r = searchBudget(t, 0.6, so);
    EXPECT_GE(r.rules[1].topK, r.rules[0].topK);
    // Thresholds allowed: never worse than static only.
    so.rules = RuleKinds::Both;
    so.resolution = 4000;
    EXPECT_LE(searchBudget(t, 0.6, so).estimate.errorProxy, r.estimate.errorProxy + 1e-12);
    EXPECT_THROW(searchBudget(t, 0.05, so), Error);
    // The cheapest policy under an error bound respects it.
    const auto m = searchMaxError(t, 0.5, so);
    EXPECT_LE(m.estimate.errorProxy, 0.5);
    EXPECT_LT(m.cost, 1.0);
    EXPECT_THROW(searchMaxError(t, 1e-9, so), Error);
}

// The demo model's measured errors per k: at 75% the best allocation moves an expert from the
// peaked layer 0 to layer 3 (k = 5, 6, 6, 7), whose cost is exactly the budget. Costs that fall
// on half units of the default resolution must not push it out.
TEST(Policy, BudgetSearchIsExactAtTheDefaultResolution)
{
    const std::vector<std::vector<double>> errors = {{0.2366, 0.0852, 0.0327, 0.0123, 0.0064, 0.0042, 0.0034, 0.0032},
                                                     {0.2940, 0.1281, 0.0552, 0.0255, 0.0141, 0.0092, 0.0072, 0.0066},
                                                     {0.2581, 0.1009, 0.0426, 0.0204, 0.0114, 0.0074, 0.0055, 0.0049},
                                                     {0.3241, 0.1462, 0.0697, 0.0341, 0.0189, 0.0117, 0.0082, 0.0068}};
    auto t = syntheticTables(
        4, 8, [&](int l, int k) { return errors[static_cast<std::size_t>(l)][static_cast<std::size_t>(k - 1)]; });
    for (auto& layer : t.layers)
        for (int k = 1; k <= 8; ++k)
            layer.paramsByK[static_cast<std::size_t>(k - 1)] = 73728.0 * k; // 3 x 256 x 96 per expert
    for (auto& layer : t.layers)
        layer.denseParams = 8 * 73728.0;
    for (double budget : {0.5, 0.6, 0.75, 0.8}) {
        double best = INFINITY;
        for (int a = 1; a <= 8; ++a)
            for (int b = 1; b <= 8; ++b)
                for (int c = 1; c <= 8; ++c)
                    for (int d = 1; d <= 8; ++d)
                        if (a + b + c + d <= budget * 32 + 1e-9)
                            best = std::min(best,
                                            errors[0][a - 1] + errors[1][b - 1] + errors[2][c - 1] + errors[3][d - 1]);
        const auto r = searchBudget(t, budget);
        EXPECT_NEAR(r.estimate.errorProxy, best, 1e-12) << "budget " << budget;
        EXPECT_LE(r.estimate.activatedFfnFraction, budget + 1e-12);
    }
    const auto r = searchBudget(t, 0.75);
    EXPECT_EQ(r.rules[0].topK, 5);
    EXPECT_EQ(r.rules[3].topK, 7);
}

TEST(Policy, ParetoFrontIsMonotoneAndDominatesUniformK)
{
    const int L = 5, N = 8;
    auto t = syntheticTables(L, N, layerError);
    SearchOptions so;
    so.rules = RuleKinds::Both;
    const auto front = paretoFront(t, so, 30);
    ASSERT_GE(front.size(), 5u);
    EXPECT_LE(front.size(), 30u);
    for (std::size_t i = 1; i < front.size(); ++i) {
        EXPECT_GT(front[i].cost, front[i - 1].cost);
        EXPECT_LT(front[i].estimate.errorProxy, front[i - 1].estimate.errorProxy);
    }
    for (int k = 1; k <= N; ++k) {
        const auto u = estimatePolicy(t, uniformRules(L, RoutingRule::staticK(k)));
        // Some front point is at most as costly and at most as wrong (up to the cost rounding).
        bool dominated = false;
        for (const auto& p : paretoFront(t, so, 0))
            dominated |= p.cost <= u.activatedFfnFraction + 1e-9 && p.estimate.errorProxy <= u.errorProxy + 1e-12;
        EXPECT_TRUE(dominated) << "uniform k=" << k;
    }
}

TEST(Policy, LatencyEstimateAddsTheRestOfTheModel)
{
    auto t = syntheticTables(2, 4, layerError);
    LatencyModel m;
    m.device = "cpu";
    m.layers = 2;
    m.prefillOther = 1.0;
    m.decodeOther = 0.1;
    m.prefillDenseFfn = 0.5;
    m.decodeDenseFfn = 0.05;
    m.prefillMoe = {0.15, 0.25, 0.35, 0.45};
    m.decodeMoe = {0.02, 0.03, 0.04, 0.05};
    const auto back = LatencyModel::fromJson(nlohmann::json::parse(m.toJson().dump()), "test");
    EXPECT_EQ(back.prefillMoe, m.prefillMoe);
    t.latency = back;
    const auto e = estimatePolicy(t, applyEdits(uniformRules(2, RoutingRule::staticK(2)), "1:4", 4));
    EXPECT_TRUE(e.hasLatency);
    EXPECT_NEAR(e.prefillSeconds, 1.0 + 0.25 + 0.45, 1e-12);
    EXPECT_NEAR(e.densePrefillSeconds, 2.0, 1e-12);
    EXPECT_NEAR(e.prefillFraction, 0.85, 1e-12);
    EXPECT_NEAR(e.decodeSeconds, 0.1 + 0.03 + 0.05, 1e-12);
    SearchOptions so;
    so.cost = CostKind::PrefillLatency;
    const auto r = searchBudget(t, 0.8, so);
    EXPECT_LE(r.estimate.prefillFraction, 0.8 + 1e-12);
    EXPECT_THROW(LatencyModel::fromJson(nlohmann::json::object(), "lat"), Error);
}

namespace {

std::vector<int> staticKs(const PolicyRules& rules)
{
    std::vector<int> ks;
    for (const auto& r : rules)
        ks.push_back(r.topK);
    return ks;
}

} // namespace

// The measured refinement climbs from the search's choice to the measure's optimum through
// budget-respecting neighbours, never measures a policy over the budget or twice, and counts
// its measurements.
TEST(Policy, RefinementFindsTheMeasuredOptimumWithinTheBudget)
{
    const int L = 4, N = 8;
    const auto t = syntheticTables(L, N, layerError);
    RefineOptions o;
    o.budgetFraction = 0.75;
    o.maxEvaluations = 60;
    const auto start = searchBudget(t, 0.75).rules;
    // A measure that disagrees with the proxy: it prefers k = 7,6,5,6 (a made-up interaction).
    const std::vector<int> target = {7, 6, 5, 6};
    std::vector<PolicyRules> calls;
    auto measure = [&](const PolicyRules& rules) {
        calls.push_back(rules);
        double d = 0;
        for (int l = 0; l < L; ++l)
            d += std::abs(rules[static_cast<std::size_t>(l)].topK - target[static_cast<std::size_t>(l)]);
        return 1.0 + d;
    };
    ASSERT_NE(staticKs(start), target);
    std::vector<RefineCandidate> reported; // what a live caller (the workbench) is told, in order
    o.onMeasured = [&](const RefineCandidate& c) { reported.push_back(c); };
    const auto r = refinePolicy(t, start, o, measure);
    o.onMeasured = nullptr;
    ASSERT_EQ(reported.size(), r.measured.size());
    for (std::size_t i = 0; i < reported.size(); ++i) {
        EXPECT_EQ(staticKs(reported[i].rules), staticKs(r.measured[i].rules));
        EXPECT_DOUBLE_EQ(reported[i].measured, r.measured[i].measured);
    }
    EXPECT_EQ(staticKs(r.best.rules), target);
    EXPECT_DOUBLE_EQ(r.best.measured, 1.0);
    EXPECT_EQ(staticKs(r.start.rules), staticKs(start));
    EXPECT_EQ(r.start.measured, measure(start));
    calls.pop_back();
    ASSERT_EQ(r.measured.size(), calls.size());
    EXPECT_LE(static_cast<int>(calls.size()), o.maxEvaluations);
    EXPECT_EQ(staticKs(r.measured[1].rules), std::vector<int>(L, 6)); // the uniform top-k that fits
    for (std::size_t i = 0; i < calls.size(); ++i) {
        EXPECT_LE(estimatePolicy(t, calls[i]).activatedFfnFraction, 0.75 + 1e-12);
        for (std::size_t j = 0; j < i; ++j)
            EXPECT_NE(staticKs(calls[i]), staticKs(calls[j])) << "measured twice";
    }

    // When the search's choice is the measure's optimum, it is kept.
    auto atStart = [&](const PolicyRules& rules) {
        double d = 0;
        for (int l = 0; l < L; ++l)
            d += std::abs(rules[static_cast<std::size_t>(l)].topK - start[static_cast<std::size_t>(l)].topK);
        return d;
    };
    const auto kept = refinePolicy(t, start, o, atStart);
    EXPECT_EQ(staticKs(kept.best.rules), staticKs(start));
    EXPECT_EQ(kept.rounds, 1);

    // The measurement budget is a hard limit.
    o.maxEvaluations = 3;
    calls.clear();
    EXPECT_EQ(refinePolicy(t, start, o, measure).measured.size(), 3u);
    EXPECT_EQ(calls.size(), 3u);

    // Over-budget starts are refused; a cancelled job stops before measuring.
    o.budgetFraction = 0.5;
    EXPECT_THROW(refinePolicy(t, start, o, measure), Error);
    o.budgetFraction = 0.75;
    o.cancel.cancel();
    calls.clear();
    EXPECT_THROW(refinePolicy(t, start, o, measure), Cancelled);
    EXPECT_TRUE(calls.empty());
}

// Top-p rules move along the profile's threshold grid, and stay top-p rules.
TEST(Policy, RefinementStepsTopPRulesAlongTheGrid)
{
    const auto t = syntheticTables(2, 8, layerError);
    const PolicyRules start = {RoutingRule::topP(0.7), RoutingRule::topP(0.7)};
    RefineOptions o;
    o.budgetFraction = 1.0;
    o.maxEvaluations = 100;
    o.perRound = 100;
    // Lower is better with more mass in layer 1 and less in layer 0. The only static candidate
    // is the uniform top-8 that fits the budget.
    int statics = 0;
    const auto r = refinePolicy(t, start, o, [&](const PolicyRules& rules) {
        if (rules[0].isStatic() || rules[1].isStatic()) {
            ++statics;
            EXPECT_EQ(rules[0].topK, 8);
            EXPECT_EQ(rules[1].topK, 8);
            return 1.0;
        }
        return rules[0].threshold - rules[1].threshold;
    });
    EXPECT_EQ(statics, 1);
    EXPECT_DOUBLE_EQ(r.best.rules[0].threshold, 0.5);
    EXPECT_DOUBLE_EQ(r.best.rules[1].threshold, 0.9);
    EXPECT_DOUBLE_EQ(r.best.measured, -0.4);
}

// The whole stage-2 flow on a real (quickly) converted model. Profile and evaluation read the same
// windows but in different batch shapes, so a few near-tied routing choices between experts of
// 22 and 21 neurons can flip: the counts agree closely here; Moe.ProfileEstimatesEqualTheDispatchCounts
// checks exactness on identical inputs.
TEST(Policy, CliFlowEstimatesMatchMeasurements)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const std::string stories = (ladimo::test::sharedData() / "tinystories260K").string();
    const std::string data = " --data " + stories + "/calib.u16 --max-tokens 4096";
    const std::string project = (tmp / "p.ladimo").string();
    auto r
        = runLadimo("convert " + stories + data
                    + " --epochs 2 --router-epochs 2 --experts 8 --train-top-k 6 --e2e-steps 0 --project " + project);
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo("profile " + project + data);
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo("latency " + project + data + " --prefill 256 --repeats 3 --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto lat = nlohmann::json::parse(r.out);
    EXPECT_EQ(lat["prefill_moe_by_k"].size(), 8u);
    EXPECT_GT(lat["prefill_other"].get<double>(), 0.0);

    r = runLadimo("policy " + project + " --budget-params 0.6 --rules static --name searched --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto searched = nlohmann::json::parse(r.out);
    EXPECT_EQ(searched["format"], "ladimo-routing-policy");
    const double estimated = searched["estimate"]["activated_ffn_fraction"].get<double>();
    EXPECT_LE(estimated, 0.6 + 1e-12);

    r = runLadimo("eval " + project + data + " --policy searched --no-timing --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    auto ev = nlohmann::json::parse(r.out);
    EXPECT_NEAR(ev["activated_ffn_fraction"].get<double>() / estimated, 1.0, 1e-3);
    EXPECT_EQ(ev["rules"], searched["rules"]);

    // An adaptive rule off the threshold grid: expected value within 2%.
    r = runLadimo("policy " + project + " --set *:p0.83 --name adaptive --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const double adaptiveEstimate = nlohmann::json::parse(r.out)["estimate"]["activated_ffn_fraction"].get<double>();
    r = runLadimo("eval " + project + data + " --policy adaptive --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    ev = nlohmann::json::parse(r.out);
    EXPECT_NEAR(ev["activated_ffn_fraction"].get<double>() / adaptiveEstimate, 1.0, 0.02);
    EXPECT_GT(ev["prefill_tokens_per_second"].get<double>(), 0.0);
    EXPECT_GT(ev["decode_fraction"].get<double>(), 0.0);
    EXPECT_TRUE(ev["estimate"].contains("prefill_seconds"));
    EXPECT_GT(ev["estimate"]["prefill_seconds_at_measured_dense"].get<double>(), 0.0);

    // Export, re-import under another name: the same rules.
    const std::string file = (tmp / "adaptive.json").string();
    r = runLadimo("policy " + project + " --export " + file + " --name adaptive");
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo("policy " + project + " --import " + file + " --name again --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(nlohmann::json::parse(r.out)["rules"], nlohmann::json::parse(readTextFile(file))["rules"]);

    r = runLadimo("tradeoff " + project + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto tradeoff = nlohmann::json::parse(r.out);
    EXPECT_GE(tradeoff["front"].size(), 3u);
    EXPECT_EQ(tradeoff["uniform"].size(), 8u);
    ASSERT_EQ(tradeoff["policies"].size(), 3u);
    EXPECT_EQ(tradeoff["policies"][0]["measured"].size(), 1u); // the evaluation of "searched"

    // Refinement by held-out NLL: the kept policy is the best measured, every candidate fits.
    r = runLadimo("policy " + project + " --budget-params 0.6 --rules static --name refined --refine-data " + stories
                      + "/calib.u16 --refine-tokens 2048 --refine-evals 5 --json",
                  true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto refined = nlohmann::json::parse(r.out);
    const auto& report = refined["refine"];
    ASSERT_GE(report["measured"].size(), 2u);
    EXPECT_LE(report["measured"].size(), 5u);
    double lowest = 1e9;
    std::string lowestRules;
    for (const auto& m : report["measured"]) {
        EXPECT_LE(m["cost"].get<double>(), 0.6 + 1e-9);
        if (m["nll"].get<double>() < lowest) {
            lowest = m["nll"].get<double>();
            lowestRules = m["rules"].get<std::string>();
        }
    }
    EXPECT_DOUBLE_EQ(report["best_nll"].get<double>(), lowest);
    EXPECT_LE(report["best_nll"].get<double>(), report["start_nll"].get<double>());
    EXPECT_EQ(report["start_rules"], searched["rules"]);
    std::string keptRules;
    for (const auto& rule : refined["rules"])
        keptRules += (keptRules.empty() ? "k=" : " k=") + std::to_string(rule["top_k"].get<int>());
    EXPECT_EQ(keptRules, lowestRules);
    r = runLadimo("policy " + project + " --max-error 0.1 --refine-data " + stories + "/calib.u16");
    EXPECT_NE(r.status, 0);
    r = runLadimo("policy " + project + " --budget-params 0.6 --refine-evals 3");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("--refine-evals needs --refine-data"), std::string::npos) << r.out;

    r = runLadimo("policy " + project + " --budget-params 0.01");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("no policy fits"), std::string::npos) << r.out;
}
