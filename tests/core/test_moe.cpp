// MoE block and stage-1 construction on real FFNs: tinystories260K's layer 2 (172 neurons / 8
// experts, so experts differ by one neuron) where ../shared is present, else the bundled demo
// model's (768 neurons / 8 experts): a real trained model in every checkout, so a newcomer's run
// tests what CI tests.
#include <algorithm>
#include <atomic>
#include <numeric>
#include <thread>

#include <dlfcn.h>
#include <pthread.h>
#include <sched.h>

#include "common/cputeam.h"
#include "common/error.h"
#include "convert/convert.h"
#include "convert/experts.h"
#include "model/llama.h"
#include "moe/moelayer.h"
#include "routing/estimate.h"
#include "routing/profile.h"
#include "testutil.h"

using namespace ladimo::core;

namespace {

// An FFN and FFN inputs: layer 2 of a real model with its real activations on random tokens.
struct Fixture {
    DenseFfn ffn;
    torch::Tensor x, y;
    int64_t hidden() const { return x.size(1); }
    int64_t neurons() const { return ffn.gate.size(0); }
};

std::filesystem::path fixtureModel()
{
    const auto shared = ladimo::test::sharedData() / "tinystories260K";
    if (std::filesystem::exists(shared / "model.safetensors"))
        return shared;
    return ladimo::test::sourceDir() / "resources" / "demo";
}

Fixture fixture(int64_t tokens = 2048)
{
    torch::manual_seed(0);
    Fixture f;
    torch::NoGradGuard ng;
    const auto model = LlamaModel::load(fixtureModel());
    const auto l = model.layer(2);
    f.ffn = {l->gate.clone(), l->up.clone(), l->down.clone()};
    ForwardHooks hooks;
    hooks.lastLayer = 2;
    hooks.onFfn = [&](int layer, const torch::Tensor& x, const torch::Tensor&) {
        if (layer == 2)
            f.x = x.reshape({-1, x.size(-1)}).clone();
    };
    model.forward(torch::randint(model.config().vocabSize, {tokens / 64, 64}, torch::kInt64), nullptr, &hooks);
    f.y = torch::matmul(torch::silu(torch::matmul(f.x, f.ffn.gate.t())) * torch::matmul(f.x, f.ffn.up.t()),
                        f.ffn.down.t());
    return f;
}

} // namespace

TEST(Moe, AllExpertsEqualDenseAtInitialisation)
{
    const auto f = fixture(512);
    for (auto part : {Partition::Contiguous, Partition::Coactivation, Partition::Weights})
        for (auto gating : {Gating::Hard, Gating::Renorm, Gating::Plain}) {
            const auto assign = partitionNeurons(f.ffn, f.x, 8, part, 0);
            std::vector<int64_t> count(8, 0);
            for (auto a : assign)
                ++count[static_cast<std::size_t>(a)];
            // Balanced: 172 = 4 x 22 + 4 x 21 (tinystories260K), 768 = 8 x 96 (demo).
            EXPECT_EQ(*std::max_element(count.begin(), count.end()), (f.neurons() + 7) / 8);
            EXPECT_EQ(*std::min_element(count.begin(), count.end()), f.neurons() / 8);
            auto layer = buildMoeLayer(f.ffn, assign, 8, gating);
            torch::NoGradGuard ng;
            auto out = layer.forward(f.x, RoutingRule::staticK(8));
            EXPECT_TRUE(torch::allclose(out, f.y, 1e-5, 1e-5))
                << partitionName(part) << "/" << gatingName(gating) << " max diff "
                << (out - f.y).abs().max().item<double>();
        }
}

TEST(Moe, DispatchEqualsNaiveReference)
{
    const auto f = fixture(512);
    for (auto gating : {Gating::Hard, Gating::Renorm, Gating::Plain})
        for (int64_t maskedBelow : {int64_t{0}, int64_t{1} << 30}) { // grouped, then masked
            auto layer = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, 8, Partition::Coactivation, 0), 8, gating);
            layer.maskedBelowWidth = maskedBelow;
            layer.router = torch::randn({8, f.hidden()});
            torch::NoGradGuard ng;
            for (const auto& rule : {RoutingRule::staticK(1), RoutingRule::staticK(6), RoutingRule::topP(0.5),
                                     RoutingRule::topP(0.9, 2, 7)}) {
                DispatchStats stats;
                auto fast = layer.forward(f.x, rule, &stats);
                const int64_t active = stats.pairs;
                auto naive = layer.forwardNaive(f.x, rule);
                // float32 sums in another order: the tolerance follows the outputs' size (the demo
                // model's reach ~100, where one unit in the last place is 8e-6).
                const double tol = 1e-6 * std::max(1.0, naive.abs().max().item<double>());
                EXPECT_LT((fast - naive).abs().max().item<double>(), tol) << gatingName(gating);
                for (int64_t t : {0, 1, 2}) { // one token (decoding): matrix-vector products
                    auto one = f.x.narrow(0, t, 1);
                    EXPECT_LT((layer.forward(one, rule) - layer.forwardNaive(one, rule)).abs().max().item<double>(),
                              tol)
                        << gatingName(gating) << " token " << t;
                }
                torch::Tensor mask, w;
                layer.route(layer.routingProbs(f.x), rule, &mask, &w);
                EXPECT_EQ(active, mask.sum().item<int64_t>());
                if (rule.isStatic())
                    EXPECT_EQ(active, rule.topK * f.x.size(0));
                else {
                    auto k = mask.sum(-1);
                    EXPECT_GE(k.min().item<int64_t>(), std::max(1, rule.minK));
                    EXPECT_LE(k.max().item<int64_t>(), rule.maxK > 0 ? rule.maxK : 8);
                }
            }
        }
}

// The dispatch's own backward equals autograd through the naive reference: gradients of the
// experts, the router (through the routing weights) and the input, for every gating and rule.
// The wide second case makes every expert's block span several tiles.
TEST(Moe, DispatchGradientsEqualTheNaiveReference)
{
    struct Case {
        int64_t hidden, neurons, experts, tokens;
    };
    for (const auto c : {Case{64, 172, 8, 512}, Case{4096, 64, 4, 700}})
        for (int64_t maskedBelow : {int64_t{0}, int64_t{1} << 30}) // grouped, then masked
            for (auto gating : {Gating::Hard, Gating::Renorm, Gating::Plain})
                for (const auto& rule : {RoutingRule::staticK(2), RoutingRule::topP(0.6, 1, 3)}) {
                    torch::manual_seed(3);
                    const DenseFfn ffn{torch::randn({c.neurons, c.hidden}) * 0.2,
                                       torch::randn({c.neurons, c.hidden}) * 0.2,
                                       torch::randn({c.hidden, c.neurons}) * 0.2};
                    std::vector<int64_t> assign(static_cast<std::size_t>(c.neurons));
                    for (int64_t i = 0; i < c.neurons; ++i)
                        assign[static_cast<std::size_t>(i)] = i % c.experts;
                    auto layer = buildMoeLayer(ffn, assign, c.experts, gating);
                    layer.maskedBelowWidth = maskedBelow;
                    layer.router = torch::randn({c.experts, c.hidden}) * 0.1;
                    const auto x0 = torch::randn({c.tokens, c.hidden});
                    const auto target = torch::randn({c.tokens, c.hidden});
                    auto grads = [&](bool naive) {
                        MoeLayer l = layer;
                        for (auto* t : {&l.router, &l.gate, &l.up, &l.down})
                            *t = t->detach().clone().set_requires_grad(true);
                        auto x = x0.clone().set_requires_grad(true);
                        auto out = naive ? l.forwardNaive(x, rule) : l.forward(x, rule);
                        (out * target).sum().backward();
                        return std::vector<torch::Tensor>{out.detach(),  x.grad(),    l.router.grad(),
                                                          l.gate.grad(), l.up.grad(), l.down.grad()};
                    };
                    const auto fast = grads(false), naive = grads(true);
                    const char* names[] = {"output", "input", "router", "gate", "up", "down"};
                    for (std::size_t i = 0; i < fast.size(); ++i) {
                        // Hard gating too: its router's gradient is the straight-through one.
                        ASSERT_TRUE(fast[i].defined() && naive[i].defined()) << names[i];
                        const double scale = naive[i].abs().max().item<double>();
                        EXPECT_GT(scale, 0) << names[i];
                        EXPECT_LT((fast[i] - naive[i]).abs().max().item<double>(), 1e-4 * scale)
                            << names[i] << " hidden " << c.hidden << " gating " << gatingName(gating) << " top-k "
                            << rule.topK;
                    }
                }
}

// Built layers keep gate and up in one block, so the dispatch needs no per-call copy of them; the
// result is the same as with separate gate and up tensors, and a fused layer still trains.
TEST(Moe, FusedGateUpGivesTheSameOutputAndStillTrains)
{
    const auto f = fixture(512);
    auto fused = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, 8, Partition::Contiguous, 0), 8, Gating::Renorm);
    fused.router = torch::randn({8, f.hidden()}) * 0.1;
    const int64_t S = fused.gate.size(1), H = fused.gate.size(2);
    EXPECT_TRUE(fused.up.storage().is_alias_of(fused.gate.storage()));
    EXPECT_EQ(fused.up.storage_offset(), fused.gate.storage_offset() + S * H);
    MoeLayer separate = fused;
    separate.gate = fused.gate.clone();
    separate.up = fused.up.clone();
    EXPECT_FALSE(separate.up.storage().is_alias_of(separate.gate.storage()));
    {
        torch::NoGradGuard ng;
        EXPECT_TRUE(
            torch::equal(fused.forward(f.x, RoutingRule::staticK(6)), separate.forward(f.x, RoutingRule::staticK(6))));
    }
    MoeLayer again = separate;
    fuseGateUp(again);
    EXPECT_TRUE(torch::equal(again.gate, separate.gate) && torch::equal(again.up, separate.up));
    DistillOptions o;
    o.epochs = 3;
    o.batch = 128;
    const auto r = distill(fused, f.x, f.y, o);
    EXPECT_LT(r.finalLoss, r.initialLoss);
    EXPECT_FALSE(torch::equal(fused.gate, separate.gate)) << "the fused gate views were trained in place";
}

TEST(Moe, ThresholdRuleTakesSmallestSetReachingTheMass)
{
    MoeLayer l;
    l.router = torch::zeros({4, 2});
    l.sizes = {1, 1, 1, 1};
    auto probs = torch::tensor({{0.5f, 0.3f, 0.15f, 0.05f}, {0.1f, 0.7f, 0.1f, 0.1f}});
    torch::Tensor mask, w;
    l.route(probs, RoutingRule::topP(0.75), &mask, &w);
    EXPECT_EQ(mask[0].sum().item<int64_t>(), 2); // 0.5 + 0.3 >= 0.75
    EXPECT_EQ(mask[1].sum().item<int64_t>(), 2); // 0.7 < 0.75, + 0.1
    l.gating = Gating::Renorm;
    l.route(probs, RoutingRule::staticK(2), &mask, &w);
    EXPECT_NEAR(w[0][0].item<double>(), 0.5 / 0.8, 1e-6);
}

TEST(Moe, RouterFitAndDistillationLowerTheLayerError)
{
    const auto f = fixture(2048);
    auto layer = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, 8, Partition::Coactivation, 0), 8, Gating::Hard);
    DistillOptions o;
    o.epochs = 5;
    o.routerEpochs = 10;
    o.batch = 256;
    const double flat = relativeError(layer, f.x, f.y, RoutingRule::staticK(6)); // zero router: arbitrary choice
    fitRouter(layer, f.x, o);
    const double fitted = relativeError(layer, f.x, f.y, RoutingRule::staticK(6));
    EXPECT_LT(fitted, flat);
    const auto r = distill(layer, f.x, f.y, o);
    EXPECT_NEAR(r.initialLoss, fitted, 1e-6);
    EXPECT_LT(r.finalLoss, 0.9 * r.initialLoss) << "initial " << r.initialLoss << " final " << r.finalLoss;
    EXPECT_FALSE(r.lossCurve.empty());
    // Padding of the smaller experts (21 of 22 neurons on tinystories260K) stayed zero.
    for (int64_t e = 0; e < 8; ++e) {
        const int64_t size = layer.sizes[static_cast<std::size_t>(e)];
        if (size < layer.down.size(2))
            EXPECT_EQ(layer.down[e].narrow(1, size, layer.down.size(2) - size).abs().sum().item<double>(), 0.0);
    }
}

// The all-experts term of the distillation loss keeps the full layer near the dense FFN, which
// distilling for k alone lets drift.
TEST(Moe, FullKTermKeepsTheAllExpertsLayerNearDense)
{
    const auto f = fixture(2048);
    auto error = [&](double fullKWeight) {
        auto layer = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, 8, Partition::Coactivation, 0), 8, Gating::Hard);
        DistillOptions o;
        o.epochs = 4;
        o.routerEpochs = 5;
        o.batch = 256;
        o.trainTopK = 4;
        o.fullKWeight = fullKWeight;
        fitRouter(layer, f.x, o);
        distill(layer, f.x, f.y, o);
        return std::make_pair(relativeError(layer, f.x, f.y, RoutingRule::staticK(8)),
                              relativeError(layer, f.x, f.y, RoutingRule::staticK(4)));
    };
    const auto [fullWithout, kWithout] = error(0);
    const auto [fullWith, kWith] = error(4);
    EXPECT_LT(fullWith, 0.5 * fullWithout)
        << "all experts: " << fullWith << " with the term, " << fullWithout << " without";
    EXPECT_LT(kWith, 1.0) << "the k = 4 error must still be trained, got " << kWith << " (without: " << kWithout << ")";
}

// Stage 2b estimates read off a layer's routing profile equal what the dispatch counts on the same
// tokens: exactly for static rules (experts of unequal sizes on tinystories260K), within 2% for top-p rules
// between the profile's threshold grid points.
TEST(Moe, ProfileEstimatesEqualTheDispatchCounts)
{
    const auto f = fixture(2048);
    auto layer = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, 8, Partition::Coactivation, 0), 8, Gating::Hard);
    DistillOptions o;
    o.routerEpochs = 3;
    fitRouter(layer, f.x, o);
    auto profile = profileLayer(layer, f.x, f.y);
    profile.layer = 0;
    const auto tables = policyTables({profile});
    const double T = static_cast<double>(f.x.size(0));
    torch::NoGradGuard ng;
    for (int k = 1; k <= 8; ++k) {
        DispatchStats stats;
        layer.forward(f.x, RoutingRule::staticK(k), &stats);
        const auto e = estimateRule(tables, 0, RoutingRule::staticK(k));
        EXPECT_DOUBLE_EQ(e.params * T, static_cast<double>(stats.parameters)) << "k=" << k;
        // The profile sums prefixes of the expert outputs (relativeErrors), not a forward per k.
        const double direct = relativeError(layer, f.x, f.y, RoutingRule::staticK(k));
        EXPECT_NEAR(e.error, direct, 1e-5 * direct + 1e-9) << "k=" << k; // k = N: both are rounding (1e-14)
    }
    for (double p : {0.5, 0.62, 0.83, 0.9, 0.96}) {
        DispatchStats stats;
        layer.forward(f.x, RoutingRule::topP(p), &stats);
        const auto e = estimateRule(tables, 0, RoutingRule::topP(p));
        EXPECT_NEAR(e.params * T / static_cast<double>(stats.parameters), 1.0, 0.02) << "p=" << p;
    }
}

// Oracle routing keeps each token's k experts with the largest true outputs: with every expert it
// is the dense FFN, it counts k experts per token, and it is at least as close to the dense FFN
// as the fitted router at the same k.
TEST(Moe, OracleRoutingIsACeilingForTheRouter)
{
    const auto f = fixture(1024);
    auto layer = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, 8, Partition::Coactivation, 0), 8, Gating::Hard);
    DistillOptions o;
    o.routerEpochs = 3;
    fitRouter(layer, f.x, o);
    torch::NoGradGuard ng;
    EXPECT_TRUE(torch::allclose(layer.forwardOracle(f.x, 8), f.y, 1e-5, 1e-5));
    DispatchStats stats;
    auto out = layer.forwardOracle(f.x, 6, &stats);
    EXPECT_EQ(stats.pairs, 6 * f.x.size(0));
    const double oracle = (out - f.y).pow(2).sum().item<double>() / f.y.pow(2).sum().item<double>();
    EXPECT_LE(oracle, relativeError(layer, f.x, f.y, RoutingRule::staticK(6)));
    EXPECT_THROW(layer.forwardOracle(f.x, 9), ladimo::core::Error);
}

// Shared (always-on) neurons: the neurons that contribute most on the calibration tokens; with
// the routed experts they make up the dense FFN exactly under every gating; every token runs and
// pays for them; distillation trains them; they survive a save and load.
TEST(Moe, SharedNeuronsAreTheLargestContributorsAlwaysOnCountedAndTrained)
{
    const auto f = fixture(2048);
    const int64_t I = f.neurons(), H = f.hidden(), M = I / 4, N = 8;
    const auto assign = partitionNeurons(f.ffn, f.x, N, Partition::Coactivation, 0, M);
    ASSERT_EQ(static_cast<int64_t>(assign.size()), I);
    // The M largest mean contributions |silu(g x) (u x)| ||down column||, computed here again.
    torch::Tensor contribution;
    {
        torch::NoGradGuard ng;
        const auto xs = f.x.narrow(0, 0, std::min<int64_t>(f.x.size(0), 4096));
        contribution = ((torch::silu(torch::matmul(xs, f.ffn.gate.t())) * torch::matmul(xs, f.ffn.up.t())).abs()
                        * f.ffn.down.norm(2, 0).unsqueeze(0))
                           .mean(0);
    }
    double leastShared = 1e30, largestRouted = 0;
    std::vector<int64_t> count(static_cast<std::size_t>(N), 0);
    for (int64_t i = 0; i < I; ++i) {
        const double c = contribution[i].item<double>();
        if (assign[static_cast<std::size_t>(i)] < 0) {
            leastShared = std::min(leastShared, c);
        } else {
            largestRouted = std::max(largestRouted, c);
            ++count.at(static_cast<std::size_t>(assign[static_cast<std::size_t>(i)]));
        }
    }
    EXPECT_EQ(std::count(assign.begin(), assign.end(), -1), M);
    EXPECT_GE(leastShared, largestRouted);
    EXPECT_LE(*std::max_element(count.begin(), count.end()) - *std::min_element(count.begin(), count.end()), 1);
    EXPECT_THROW(partitionNeurons(f.ffn, f.x, N, Partition::Coactivation, 0, I - N + 1), ladimo::core::Error);

    for (auto gating : {Gating::Hard, Gating::Renorm, Gating::Plain}) {
        auto layer = buildMoeLayer(f.ffn, assign, N, gating);
        ASSERT_EQ(layer.sharedNeurons(), M);
        EXPECT_EQ(layer.denseNeurons(), I);
        torch::NoGradGuard ng;
        const double scale = std::max(1.0, f.y.abs().max().item<double>());
        EXPECT_LT((layer.forward(f.x, RoutingRule::staticK(N)) - f.y).abs().max().item<double>(), 1e-5 * scale)
            << gatingName(gating);
        EXPECT_LT((layer.forwardOracle(f.x, N) - f.y).abs().max().item<double>(), 1e-5 * scale);
        layer.router = torch::randn({N, H});
        for (int64_t masked : {int64_t{0}, int64_t{1} << 30}) {
            layer.maskedBelowWidth = masked;
            const auto rule = RoutingRule::staticK(3);
            DispatchStats stats;
            const auto out = layer.forward(f.x, rule, &stats);
            EXPECT_LT((out - layer.forwardNaive(f.x, rule)).abs().max().item<double>(), 1e-5 * scale);
            // Every token pays the router and the shared neurons, then its three experts.
            torch::Tensor mask, w;
            layer.route(layer.routingProbs(f.x), rule, &mask, &w);
            const auto perToken = layer.tokenParameters(mask);
            EXPECT_EQ(layer.alwaysOnParameters(), N * H + 3 * H * M);
            for (int64_t t = 0; t < 16; ++t) {
                int64_t own = N * H + 3 * H * M;
                for (int64_t e = 0; e < N; ++e)
                    if (mask[t][e].item<bool>())
                        own += 3 * H * layer.sizes[static_cast<std::size_t>(e)];
                EXPECT_EQ(perToken[static_cast<std::size_t>(t)], own) << "token " << t;
            }
            EXPECT_EQ(stats.parameters, std::accumulate(perToken.begin(), perToken.end(), int64_t{0}));
        }
    }

    // Distillation trains the shared neurons with the experts.
    auto layer = buildMoeLayer(f.ffn, assign, N, Gating::Hard);
    const auto before = layer.sharedDown.clone();
    DistillOptions o;
    o.epochs = 3;
    o.routerEpochs = 5;
    o.batch = 256;
    o.trainTopK = 3;
    fitRouter(layer, f.x, o);
    const auto r = distill(layer, f.x, f.y, o);
    EXPECT_LT(r.finalLoss, r.initialLoss);
    EXPECT_GT((layer.sharedDown - before).abs().max().item<double>(), 0.0);
    EXPECT_FALSE(layer.sharedDown.requires_grad());

    ladimo::test::TempDir dir;
    saveMoeLayer(dir / "layer.safetensors", layer);
    const auto back = loadMoeLayer(dir / "layer.safetensors", torch::kCPU, torch::kFloat32);
    ASSERT_EQ(back.sharedNeurons(), M);
    EXPECT_TRUE(torch::equal(back.sharedGate, layer.sharedGate));
    EXPECT_TRUE(torch::equal(back.sharedDown, layer.sharedDown));
    torch::NoGradGuard ng;
    EXPECT_TRUE(
        torch::allclose(back.forward(f.x, RoutingRule::staticK(3)), layer.forward(f.x, RoutingRule::staticK(3))));
}

// All rules' errors at once (prefix sums of the expert outputs in routing order) equal a forward
// per rule, for every gating, static and top-p rules, with and without shared neurons; the pair
// forward of distillation's all-experts term equals two forwards, values and gradients, in both
// dispatch paths.
TEST(Moe, ErrorsOfAllRulesAtOnceAndThePairForwardEqualSeparateForwards)
{
    const auto f = fixture(1024);
    const int64_t N = 8;
    const std::vector<RoutingRule> rules
        = {RoutingRule::staticK(1), RoutingRule::staticK(5),      RoutingRule::staticK(8),
           RoutingRule::topP(0.3),  RoutingRule::topP(0.8, 2, 6), RoutingRule::topP(0.95)};
    for (int64_t shared : {int64_t{0}, f.neurons() / 5})
        for (auto gating : {Gating::Hard, Gating::Renorm, Gating::Plain}) {
            torch::manual_seed(3);
            auto layer
                = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, N, Partition::Coactivation, 0, shared), N, gating);
            layer.router = torch::randn({N, f.hidden()}) * 0.3;
            const auto errors = relativeErrors(layer, f.x, f.y, rules);
            ASSERT_EQ(errors.size(), rules.size());
            for (std::size_t r = 0; r < rules.size(); ++r) {
                const double direct = relativeError(layer, f.x, f.y, rules[r]);
                EXPECT_NEAR(errors[r], direct, 1e-5 * direct + 1e-9)
                    << gatingName(gating) << " shared " << shared << " rule " << r;
            }
            for (int64_t masked : {int64_t{0}, int64_t{1} << 30}) {
                layer.maskedBelowWidth = masked;
                auto run = [&](bool pair) {
                    auto l = layer;
                    l.gate = layer.gate.detach().clone().set_requires_grad(true);
                    l.up = layer.up.detach().clone().set_requires_grad(true);
                    l.down = layer.down.detach().clone().set_requires_grad(true);
                    l.router = layer.router.detach().clone().set_requires_grad(gating != Gating::Hard);
                    if (shared > 0)
                        l.sharedUp = layer.sharedUp.detach().clone().set_requires_grad(true);
                    const auto x = f.x.narrow(0, 0, 256);
                    torch::Tensor out, all;
                    if (pair)
                        std::tie(out, all) = l.forwardAndAllExperts(x, RoutingRule::staticK(3));
                    else
                        out = l.forward(x, RoutingRule::staticK(3)),
                        all = l.forward(x, RoutingRule::staticK(static_cast<int>(N)));
                    (out.pow(2).sum() + 0.5 * all.pow(2).sum()).backward();
                    std::vector<torch::Tensor> res
                        = {out.detach(), all.detach(), l.gate.grad(), l.up.grad(), l.down.grad()};
                    if (gating != Gating::Hard)
                        res.push_back(l.router.grad());
                    if (shared > 0)
                        res.push_back(l.sharedUp.grad());
                    return res;
                };
                const auto a = run(true), b = run(false);
                ASSERT_EQ(a.size(), b.size());
                for (std::size_t i = 0; i < a.size(); ++i) {
                    ASSERT_TRUE(a[i].defined() && b[i].defined()) << i;
                    const double scale = std::max(1e-6, b[i].abs().max().item<double>());
                    EXPECT_LT((a[i] - b[i]).abs().max().item<double>(), 1e-4 * scale)
                        << gatingName(gating) << " shared " << shared << " masked " << masked << " tensor " << i;
                }
            }
        }
}

// The k trained for under a share of active parameters pays for the router and the shared
// neurons first: the largest k that fits, checked against the count itself.
TEST(Moe, TrainTopKLeavesRoomForTheRouterAndTheSharedNeurons)
{
    ModelConfig c;
    c.hiddenSize = 64;
    c.intermediateSize = 172;
    for (int64_t shared : {int64_t{0}, int64_t{40}, int64_t{66}})
        for (double active : {0.5, 0.75}) {
            ConvertSettings s;
            s.experts = 32;
            s.sharedNeurons = shared;
            s.trainActive = active;
            const int k = trainTopKFor(s, c);
            const auto fraction = [&](int kk) {
                return (32.0 * 64 + 3.0 * 64 * shared + kk * 3.0 * 64 * (172 - shared) / 32) / (3.0 * 64 * 172);
            };
            EXPECT_LE(fraction(k), active + 1e-12) << "shared " << shared << " active " << active;
            EXPECT_GT(fraction(k + 1), active) << "shared " << shared << " active " << active;
        }
}

// The CPU team runs every share once per run, share 0 on the caller, and leaves the caller's CPU
// affinity and OpenBLAS's thread count as they were. A run from inside a run still runs every
// share, on the calling thread; a share's exception reaches the caller; a run never splits into
// more shares than asked; a Solo guard makes runs unsplit.
TEST(CpuTeam, RunsEveryShareOnceAndRestoresTheCaller)
{
    auto& team = CpuTeam::instance();
    if (team.size() < 2)
        GTEST_SKIP() << "the CPU team has one member here (one CPU, or no OpenBLAS thread pool)";
    using GetInt = int (*)();
    const auto blasThreads = reinterpret_cast<GetInt>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
    ASSERT_TRUE(blasThreads);
    const int threadsBefore = blasThreads();
    cpu_set_t before, after;
    ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof before, &before), 0);
    const auto caller = std::this_thread::get_id();
    const auto n = static_cast<std::size_t>(team.size());
    std::vector<std::atomic<int>> calls(n), nestedCalls(n);
    std::atomic<bool> callerIsZero{false}, nestedOnCaller{true};
    std::atomic<int> blasInside{0};
    team.run([&](int i, int shares) {
        EXPECT_EQ(shares, team.size());
        ++calls[static_cast<std::size_t>(i)];
        if (i == 0) {
            callerIsZero = std::this_thread::get_id() == caller;
            blasInside = blasThreads();
            team.run([&](int j, int) {
                ++nestedCalls[static_cast<std::size_t>(j)];
                nestedOnCaller = nestedOnCaller && std::this_thread::get_id() == caller;
            });
        }
    });
    for (std::size_t i = 0; i < n; ++i) {
        EXPECT_EQ(calls[i].load(), 1);
        EXPECT_EQ(nestedCalls[i].load(), 1);
    }
    EXPECT_TRUE(callerIsZero.load());
    EXPECT_TRUE(nestedOnCaller.load());
    EXPECT_EQ(blasInside.load(), 1);
    EXPECT_EQ(blasThreads(), threadsBefore);
    ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof after, &after), 0);
    EXPECT_TRUE(CPU_EQUAL(&before, &after));
    EXPECT_THROW(team.run([](int i, int) {
        if (i == 1)
            throw Error("share 1 failed");
    }),
                 Error);
    EXPECT_EQ(blasThreads(), threadsBefore);
    team.run([&](int i, int) { ++calls[static_cast<std::size_t>(i)]; });
    EXPECT_EQ(calls[1].load(), 2) << "usable again after an exception";
    std::vector<int> asked;
    team.run([&](int i, int k) { asked.push_back(i * 100 + k); }, 1);
    EXPECT_EQ(asked, std::vector<int>{1}) << "at most the shares asked for";
    {
        CpuTeam::Solo solo;
        EXPECT_EQ(team.size(), 1);
        int shares = 0;
        team.run([&](int, int k) {
            shares = k;
            EXPECT_EQ(blasThreads(), threadsBefore) << "a solo run leaves the BLAS alone";
        });
        EXPECT_EQ(shares, 1);
    }
    EXPECT_EQ(team.size(), static_cast<int>(n));
}

// With the team, each member takes a share of the tokens. When the team is busy (forced here by
// calling from inside a team run) the caller runs the same shares itself: the output and the
// gradients are bit for bit the same, so results never depend on whether the team was free.
// Static and threshold rules, in inference mode and with autograd. Hard gating: inside a run the
// router's own product is single-threaded too, and its last bits must not move the weights.
TEST(CpuTeam, MoeDispatchIsTheSameWhetherTheTeamIsFreeOrBusy)
{
    auto& team = CpuTeam::instance();
    if (team.size() < 2)
        GTEST_SKIP() << "the CPU team has one member here (one CPU, or no OpenBLAS thread pool)";
    const auto f = fixture(1024);
    auto layer = buildMoeLayer(f.ffn, partitionNeurons(f.ffn, f.x, 8, Partition::Coactivation, 0), 8, Gating::Hard);
    layer.router = torch::randn({8, f.hidden()}) * 0.3;
    for (const auto& rule : {RoutingRule::staticK(6), RoutingRule::topP(0.7, 1, 5)}) {
        auto teamBusy = [&](auto&& f) {
            decltype(f()) r;
            team.run([&](int i, int) {
                if (i == 0)
                    r = f();
            });
            return r;
        };
        {
            c10::InferenceMode inference;
            auto forward = [&] { return layer.forward(f.x, rule); };
            auto busy = teamBusy(forward), free = forward();
            EXPECT_TRUE(torch::equal(busy, free)) << (busy - free).abs().max().item<double>();
        }
        auto grads = [&] {
            MoeLayer l = layer;
            for (auto* t : {&l.gate, &l.up, &l.down})
                *t = t->detach().clone().set_requires_grad(true);
            auto out = l.forward(f.x, rule);
            out.pow(2).sum().backward();
            return std::vector<torch::Tensor>{out.detach(), l.gate.grad(), l.up.grad(), l.down.grad()};
        };
        const auto busy = teamBusy(grads), free = grads();
        for (std::size_t i = 0; i < busy.size(); ++i)
            EXPECT_TRUE(torch::equal(busy[i], free[i])) << i << ": " << (busy[i] - free[i]).abs().max().item<double>();
    }
}
