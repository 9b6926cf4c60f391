// The end-to-end stage (convert/endtoend.h) on the tiny random model: it lowers the KL between
// the dense and the converted next-token distributions, keeps the padding of unequal experts at
// zero, leaves the routers alone unless asked, is reproducible and honours cancellation.
#include <random>

#include <gtest/gtest.h>

#include "common/cputeam.h"
#include "common/error.h"
#include "convert/convert.h"
#include "convert/endtoend.h"
#include "testutil.h"
#include "tinymodel.h"

using namespace ladimo::core;
using namespace ladimo::testmodel;

namespace {

// Every layer converted into 5 experts of 7, 7, 6, 6 and 6 neurons (padding to check), trained
// briefly at k = 3 so the stage has an error to remove.
std::vector<MoeLayer> convertedLayers(const LlamaModel& model, const std::vector<int64_t>& calibration)
{
    ConvertSettings s;
    s.experts = 5;
    s.partition = Partition::Contiguous;
    s.seqLen = 16;
    s.distill.epochs = 2;
    s.distill.routerEpochs = 2;
    s.distill.batch = 64;
    s.distill.trainTopK = 3;
    s.endToEnd.steps = 0;
    return convertModel(model, calibration, s, {});
}

double klAt(const LlamaModel& model, std::vector<MoeLayer>& layers, const std::vector<int64_t>& calibration)
{
    EndToEndOptions o;
    o.steps = 1;
    o.lr = 0; // one step that changes nothing: its KL is the layers' as they are
    o.seqLen = 16;
    o.windows = 64;
    auto copy = layers;
    return trainEndToEnd(model, copy, std::vector<RoutingRule>(layers.size(), RoutingRule::staticK(3)), calibration, o)
        .initialKl;
}

// 60 steps of 8 windows of 16 tokens: enough to move the tiny model's KL.
EndToEndOptions shortStage()
{
    EndToEndOptions o;
    o.steps = 60;
    o.lr = 3e-3;
    o.seqLen = 16;
    o.windows = 8;
    return o;
}

} // namespace

TEST(EndToEnd, LowersTheKlKeepsPaddingZeroAndLeavesRoutersAlone)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(16 * 32);
    auto layers = convertedLayers(model, calibration);
    const auto routers = layers[0].router.clone();
    const double before = klAt(model, layers, calibration);
    auto o = shortStage();
    std::vector<int64_t> steps;
    o.onStep = [&](int64_t step, double) { steps.push_back(step); };
    const auto r = trainEndToEnd(model, layers, std::vector<RoutingRule>(layers.size(), RoutingRule::staticK(3)),
                                 calibration, o);
    ASSERT_EQ(r.curve.size(), 60u);
    EXPECT_EQ(steps.size(), 60u);
    EXPECT_GT(r.initialKl, 0);
    const double after = klAt(model, layers, calibration);
    EXPECT_LT(after, 0.8 * before) << "KL before " << before << " after " << after;
    EXPECT_TRUE(torch::equal(layers[0].router, routers));
    for (const auto& l : layers) {
        EXPECT_FALSE(l.gate.requires_grad() || l.down.requires_grad() || l.router.requires_grad());
        for (int64_t e = 0; e < l.numExperts(); ++e) {
            const int64_t n = l.sizes[static_cast<std::size_t>(e)], S = l.down.size(2);
            if (n < S) {
                EXPECT_EQ(l.down[e].narrow(1, n, S - n).abs().sum().item<double>(), 0.0);
                EXPECT_EQ(l.gate[e].narrow(0, n, S - n).abs().sum().item<double>(), 0.0);
            }
        }
    }
}

// Hard gating weighs every chosen expert 1, so a router has no gradient of its own: asked to
// train them, the stage passes the gradient of scaling each chosen expert's output to its router
// probability (straight through), and the forward pass stays exactly the hard one.
TEST(EndToEnd, TrainsHardGatedRoutersStraightThrough)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(16 * 32);
    auto layers = convertedLayers(model, calibration);
    ASSERT_EQ(layers[0].gating, Gating::Hard);
    {
        auto probe = layers[0];
        const auto x = torch::randn({40, model.config().hiddenSize});
        torch::Tensor plain;
        {
            torch::NoGradGuard ng;
            plain = probe.forward(x, RoutingRule::staticK(3));
        }
        probe.router = probe.router.detach().clone().set_requires_grad(true);
        const auto traced = probe.forward(x, RoutingRule::staticK(3));
        EXPECT_TRUE(torch::equal(traced.detach(), plain));
        traced.pow(2).sum().backward();
        ASSERT_TRUE(probe.router.grad().defined());
        EXPECT_GT(probe.router.grad().abs().sum().item<double>(), 0.0);
    }
    const auto routers = layers[0].router.clone();
    const double before = klAt(model, layers, calibration);
    auto o = shortStage();
    o.trainRouters = true;
    trainEndToEnd(model, layers, std::vector<RoutingRule>(layers.size(), RoutingRule::staticK(3)), calibration, o);
    EXPECT_GT((layers[0].router - routers).abs().max().item<double>(), 1e-4);
    EXPECT_FALSE(layers[0].router.requires_grad());
    const double after = klAt(model, layers, calibration);
    EXPECT_LT(after, 0.8 * before) << "KL before " << before << " after " << after;
}

TEST(EndToEnd, SameSeedSameWeightsAndCancelStopsIt)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(16 * 16);
    const auto start = convertedLayers(model, calibration);
    EndToEndOptions o;
    o.steps = 5;
    o.seqLen = 16;
    o.windows = 4;
    const std::vector<RoutingRule> rules(start.size(), RoutingRule::staticK(3));
    auto a = start, b = start;
    // Deep copies: the layers share tensors with `start` otherwise.
    for (auto* set : {&a, &b})
        for (auto& l : *set) {
            l.router = l.router.clone();
            l.down = l.down.clone();
            fuseGateUp(l);
        }
    trainEndToEnd(model, a, rules, calibration, o);
    trainEndToEnd(model, b, rules, calibration, o);
    for (std::size_t l = 0; l < a.size(); ++l)
        EXPECT_TRUE(torch::equal(a[l].down, b[l].down)) << "layer " << l;

    auto c = start;
    o.cancel.cancel();
    EXPECT_THROW(trainEndToEnd(model, c, rules, calibration, o), Cancelled);
}

// On the CPU each step's windows are split over the CPU team and the shares' gradients add up; the
// training must be the one a single share gives (up to the BLAS's rounding), the dense targets
// taken from the stage's cache (windows drawn again) included. A trained model (tinystories260K
// where ../shared is present, else the bundled demo model): the tiny random one's next-token
// distributions are so flat that its KL is rounding noise.
TEST(EndToEnd, SplittingStepsOverTheCpuTeamTrainsAsOneShareDoes)
{
    const auto shared = ladimo::test::sharedData() / "tinystories260K";
    const auto model = LlamaModel::load(std::filesystem::exists(shared / "model.safetensors")
                                            ? shared
                                            : ladimo::test::sourceDir() / "resources" / "demo");
    std::vector<int64_t> calibration(32 * 24);
    std::mt19937_64 rng(5);
    for (auto& t : calibration)
        t = static_cast<int64_t>(3 + rng() % 250);
    ConvertSettings s;
    s.experts = 8;
    s.seqLen = 32;
    s.distill.epochs = 1;
    s.distill.routerEpochs = 1;
    s.distill.trainTopK = 4;
    const auto start = convertModel(model, calibration, s, {});
    EndToEndOptions o;
    o.steps = 6; // 24 draws of 24 windows: the cache serves about a third of them
    o.lr = 1e-3;
    o.seqLen = 32;
    o.windows = 4;
    o.fullKWeight = 0.5;
    const std::vector<RoutingRule> rules(start.size(), RoutingRule::staticK(4));
    auto deepCopy = [&] {
        auto layers = start;
        for (auto& l : layers) {
            l.router = l.router.clone();
            l.down = l.down.clone();
            fuseGateUp(l);
        }
        return layers;
    };
    auto split = deepCopy(), single = deepCopy();
    const auto a = trainEndToEnd(model, split, rules, calibration, o);
    EndToEndResult b;
    {
        CpuTeam::Solo solo; // one share
        b = trainEndToEnd(model, single, rules, calibration, o);
    }
    ASSERT_EQ(a.curve.size(), b.curve.size());
    EXPECT_GT(b.curve.front().second, 1e-3);
    for (std::size_t i = 0; i < a.curve.size(); ++i)
        EXPECT_NEAR(a.curve[i].second, b.curve[i].second, 1e-3 * b.curve[i].second) << "step " << i;
    for (std::size_t l = 0; l < split.size(); ++l) {
        const double moved = (single[l].down - start[l].down).abs().max().item<double>();
        const double apart = (split[l].down - single[l].down).abs().max().item<double>();
        EXPECT_GT(moved, 1e-4) << "layer " << l << " did not train";
        EXPECT_LT(apart, 0.02 * moved) << "layer " << l << ": split and single-share training differ";
    }
}

TEST(EndToEnd, TooLittleDataAndMismatchedRulesAreErrorsThatSaySo)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(16 * 8);
    auto layers = convertedLayers(model, calibration);
    EndToEndOptions o;
    o.seqLen = 16;
    try {
        trainEndToEnd(model, layers, std::vector<RoutingRule>(layers.size(), RoutingRule::staticK(3)),
                      tinyCalibration(10), o);
        FAIL() << "no full window";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("full calibration window of 16 tokens"), std::string::npos) << e.what();
    }
    try {
        trainEndToEnd(model, layers, {RoutingRule::staticK(3)}, calibration, o);
        FAIL() << "one rule for three layers";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("1 routing rules for 3 layers"), std::string::npos) << e.what();
    }
}
