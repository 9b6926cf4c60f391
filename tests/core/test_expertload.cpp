// Dead and hot experts on constructed routing profiles (routing/expertload.h), and the per-token
// parameter count of a routing mask (MoeLayer::tokenParameters) against the dispatch's own count.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include "common/error.h"
#include "moe/moelayer.h"
#include "routing/expertload.h"

namespace {

using namespace ladimo::core;

RoutingProfile profileWithLoad(int layer, std::vector<double> load)
{
    RoutingProfile p;
    p.layer = layer;
    p.expertLoad = std::move(load);
    return p;
}

TEST(ExpertLoad, MarksExpertsBelowAndAboveMultiplesOfTheEvenShare)
{
    // 8 experts: even share 0.125; dead below 0.25 / 8 = 0.03125, hot above 2.5 / 8 = 0.3125.
    const auto p = profileWithLoad(3, {0.0, 0.03, 0.0313, 0.125, 0.3125, 0.32, 0.2, 0.2937});
    const auto m = expertLoadMarkers(p);
    EXPECT_EQ(m.layer, 3);
    EXPECT_DOUBLE_EQ(m.deadShare, 0.03125);
    EXPECT_DOUBLE_EQ(m.hotShare, 0.3125);
    EXPECT_EQ(m.dead, (std::vector<int>{0, 1}));
    EXPECT_EQ(m.hot, (std::vector<int>{5}));
    const auto j = toJson(m);
    EXPECT_EQ(j["dead"], nlohmann::json({0, 1}));
    EXPECT_EQ(j["hot"], nlohmann::json({5}));

    // Other thresholds, and every layer of a list in order.
    const auto all
        = expertLoadMarkers(std::vector<RoutingProfile>{p, profileWithLoad(4, {0.25, 0.25, 0.25, 0.25})}, {0.5, 1.5});
    ASSERT_EQ(all.size(), 2u);
    EXPECT_EQ(all[0].dead, (std::vector<int>{0, 1, 2}));
    EXPECT_EQ(all[0].hot, (std::vector<int>{4, 5, 6, 7}));
    EXPECT_EQ(all[1].layer, 4);
    EXPECT_TRUE(all[1].dead.empty());
    EXPECT_TRUE(all[1].hot.empty());
}

TEST(ExpertLoad, RejectsThresholdsOnTheWrongSideOfEven)
{
    const auto p = profileWithLoad(0, {0.5, 0.5});
    EXPECT_THROW(expertLoadMarkers(p, {1.0, 2.5}), Error);
    EXPECT_THROW(expertLoadMarkers(p, {-0.1, 2.5}), Error);
    try {
        expertLoadMarkers(p, {0.25, 0.9});
        FAIL() << "a hot threshold below even must be refused";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("above 1"), std::string::npos) << e.what();
    }
}

TEST(ExpertLoad, TokenParametersSumToWhatTheDispatchCounts)
{
    torch::manual_seed(5);
    MoeLayer l;
    const int64_t N = 6, H = 16, S = 9;
    l.router = torch::randn({N, H});
    l.gate = torch::randn({N, S, H});
    l.up = torch::randn({N, S, H});
    l.down = torch::randn({N, H, S});
    l.sizes = {9, 9, 8, 8, 7, 9}; // unequal experts: counts differ per expert
    l.gating = Gating::Renorm;
    const auto x = torch::randn({40, H});
    for (const auto& rule : {RoutingRule::staticK(2), RoutingRule::topP(0.7, 1, 4)}) {
        torch::Tensor mask, weights;
        l.route(l.routingProbs(x), rule, &mask, &weights);
        const auto perToken = l.tokenParameters(mask);
        ASSERT_EQ(perToken.size(), 40u);
        int64_t sum = 0;
        for (int64_t t = 0; t < 40; ++t) {
            int64_t expected = N * H; // the router's product, which every token pays
            for (int64_t e = 0; e < N; ++e)
                expected += mask[t][e].item<bool>() ? 3 * H * l.sizes[static_cast<std::size_t>(e)] : 0;
            EXPECT_EQ(perToken[static_cast<std::size_t>(t)], expected);
            sum += perToken[static_cast<std::size_t>(t)];
        }
        DispatchStats stats;
        l.forward(x, rule, &stats);
        EXPECT_EQ(sum, stats.parameters);
    }
}

} // namespace
