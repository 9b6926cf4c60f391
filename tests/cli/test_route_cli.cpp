// `ladimo route` on the real tinystories260K model converted: its per-token experts and weights
// are the MoE block's own routing on the converted model's hidden states, its parameter total is
// what `ladimo eval` counts, and bad input says what was expected. Also the dead/hot expert
// markers of `ladimo profile --json`.
#include <cstdio>
#include <fstream>
#include <set>

#include <nlohmann/json.hpp>

#include "convert/convert.h"
#include "convert/latestrun.h"
#include "model/llama.h"
#include "model/tokendata.h"
#include "routing/policy.h"
#include "testutil.h"

namespace {

using ladimo::test::runLadimo;
namespace core = ladimo::core;

std::filesystem::path tinyStories() { return ladimo::test::sharedData() / "tinystories260K"; }

// One project for the suite: tinystories260K converted (2 epochs on 4096 calibration tokens),
// profiled without sensitivity, and a stored policy "mixed" of static and top-p rules.
class RouteCli : public ::testing::Test {
protected:
    static void SetUpTestSuite()
    {
        if (!std::filesystem::exists(tinyStories() / "calib.u16"))
            return;
        s_dir = std::make_unique<ladimo::test::TempDir>();
        s_project = (*s_dir / "tiny.ladimo").string();
        const std::string data = " --data " + (tinyStories() / "calib.u16").string() + " --max-tokens 4096";
        auto r = runLadimo("convert " + tinyStories().string() + data
                           + " --epochs 2 --router-epochs 2 --experts 8 --train-top-k 6 --project " + s_project);
        if (r.status != 0) {
            s_why = "convert failed: " + r.out;
            return;
        }
        r = runLadimo("profile " + s_project + data + " --sensitivity-tokens 0");
        if (r.status != 0) {
            s_why = "profile failed: " + r.out;
            return;
        }
        r = runLadimo("policy " + s_project + " --set \"0:2,1:p0.6,2:3,3:p0.8:1-4,4:1\" --name mixed");
        if (r.status != 0) {
            s_why = "policy failed: " + r.out;
            return;
        }
        // 300 calibration tokens: a full window of 256 and a second one of 44.
        std::ifstream in(tinyStories() / "calib.u16", std::ios::binary);
        std::vector<std::uint16_t> raw(300);
        in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size() * 2));
        s_tokens.assign(raw.begin(), raw.end());
        s_data = (*s_dir / "tokens.u16").string();
        core::saveTokenFile(s_data, s_tokens);
    }
    static void TearDownTestSuite() { s_dir.reset(); }
    void SetUp() override
    {
        LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
        LADIMO_REQUIRE_SPM();
        ASSERT_TRUE(s_why.empty()) << s_why;
    }

    static nlohmann::json json(const std::string& args)
    {
        const auto r = runLadimo(args, true);
        EXPECT_EQ(r.status, 0) << args << "\n" << runLadimo(args).out;
        return r.status == 0 ? nlohmann::json::parse(r.out) : nlohmann::json::object();
    }

    static std::unique_ptr<ladimo::test::TempDir> s_dir;
    static std::string s_project, s_data, s_why;
    static std::vector<int64_t> s_tokens;
};
std::unique_ptr<ladimo::test::TempDir> RouteCli::s_dir;
std::string RouteCli::s_project, RouteCli::s_data, RouteCli::s_why;
std::vector<int64_t> RouteCli::s_tokens;

TEST_F(RouteCli, ExpertsAndWeightsAreTheBlocksOwnRoutingOnTheConvertedHiddenStates)
{
    const auto j = json("route " + s_project + " --data " + s_data + " --policy mixed --json");
    ASSERT_EQ(j["tokens"].get<std::size_t>(), s_tokens.size());
    ASSERT_EQ(j["policy"], "policy mixed");

    // In process: the converted model under the same rules, every layer's input recorded as the
    // MoE hooks evaluation uses see it, then each block's own route() on it.
    torch::InferenceMode guard;
    const auto run = core::loadLatestRun(s_project, {});
    const int L = static_cast<int>(run.layers.size());
    const auto rules = core::rulesFromJson(j["rules"], L, run.layers.numExperts(), "route --json");
    EXPECT_EQ(core::describeRules(rules, run.layers.numExperts()), "k=2 p=0.60 k=3 p=0.80 [1..4] k=1");
    const auto windows = core::cutWindows(s_tokens, 256);
    ASSERT_EQ(windows.size(), 2u);
    std::size_t offset = 0;
    int64_t pairs = 0, varyingK = 0;
    for (const auto& window : windows) {
        std::vector<torch::Tensor> xs(static_cast<std::size_t>(L));
        auto hooks = core::moeHooks(run.layers, rules);
        hooks.onFfn = [&](int l, const torch::Tensor& x, const torch::Tensor&) {
            xs[static_cast<std::size_t>(l)] = x.reshape({-1, x.size(-1)}).clone();
        };
        const auto ids = torch::tensor(window, torch::kInt64).view({1, -1});
        run.model->forward(ids, nullptr, &hooks);
        for (int l = 0; l < L; ++l) {
            const auto layer = run.layers.get(static_cast<std::size_t>(l));
            torch::Tensor mask, weights;
            layer->route(layer->routingProbs(xs[static_cast<std::size_t>(l)]), rules[static_cast<std::size_t>(l)],
                         &mask, &weights);
            for (std::size_t t = 0; t < window.size(); ++t) {
                const auto& tok = j["per_token"][offset + t];
                ASSERT_EQ(tok["id"].get<int64_t>(), window[t]);
                const auto& rl = tok["layers"][static_cast<std::size_t>(l)];
                std::set<int> expected;
                int64_t params = layer->routerParameters(); // every token pays the router
                for (int e = 0; e < mask.size(1); ++e)
                    if (mask[static_cast<int64_t>(t)][e].item<bool>()) {
                        expected.insert(e);
                        params += layer->expertParameters(e);
                    }
                const auto experts = rl["experts"].get<std::vector<int>>();
                const auto w = rl["weights"].get<std::vector<double>>();
                ASSERT_EQ(std::set<int>(experts.begin(), experts.end()), expected) << "token " << t << " layer " << l;
                ASSERT_EQ(rl["k"].get<std::size_t>(), expected.size());
                EXPECT_EQ(rl["activated_ffn_parameters"].get<int64_t>(), params);
                for (std::size_t i = 0; i < experts.size(); ++i) {
                    EXPECT_NEAR(w[i], weights[static_cast<int64_t>(t)][experts[i]].item<double>(), 1e-6);
                    if (i > 0)
                        EXPECT_GE(w[i - 1], w[i]) << "experts are listed by descending weight";
                }
                EXPECT_GE(rl["relative_error"].get<double>(), 0.0);
                pairs += static_cast<int64_t>(expected.size());
                varyingK += rules[static_cast<std::size_t>(l)].isStatic() ? 0 : 1;
            }
        }
        offset += window.size();
    }
    EXPECT_GT(pairs, 0);
    EXPECT_GT(varyingK, 0);
}

TEST_F(RouteCli, ActivatedParametersAndKlEqualEvalOnTheSameTokens)
{
    for (const std::string rule : {"--policy mixed", "--top-p 0.7", "--top-k 3"}) {
        const auto route = json("route " + s_project + " --data " + s_data + " " + rule + " --json");
        const auto eval = json("eval " + s_project + " --data " + s_data + " --seq-len 256 --batch 1 --no-timing "
                               + rule + " --json");
        ASSERT_TRUE(eval.contains("activated_ffn_parameters")) << eval.dump();
        EXPECT_EQ(route["activated_ffn_parameters"].get<int64_t>(), eval["activated_ffn_parameters"].get<int64_t>())
            << rule;
        EXPECT_DOUBLE_EQ(route["activated_ffn_fraction"].get<double>(), eval["activated_ffn_fraction"].get<double>())
            << rule;
        EXPECT_NEAR(route["kl_to_dense"].get<double>(), eval["kl_to_dense"].get<double>(),
                    1e-9 + 1e-6 * eval["kl_to_dense"].get<double>())
            << rule;
        // The total is the sum of the per-token (and per-layer) counts.
        int64_t sum = 0;
        for (const auto& t : route["per_token"]) {
            int64_t layers = 0;
            for (const auto& l : t["layers"])
                layers += l["activated_ffn_parameters"].get<int64_t>();
            EXPECT_EQ(t["activated_ffn_parameters"].get<int64_t>(), layers);
            sum += layers;
        }
        EXPECT_EQ(sum, route["activated_ffn_parameters"].get<int64_t>());
    }
}

TEST_F(RouteCli, PromptIsTokenizedWithBosAndTabulated)
{
    const auto j = json("route " + s_project + " --prompt \"Once upon a time\" --json");
    ASSERT_GE(j["per_token"].size(), 5u);
    EXPECT_EQ(j["per_token"][0]["id"].get<int64_t>(), 1) << "BOS first";
    std::string text;
    for (std::size_t i = 1; i < j["per_token"].size(); ++i)
        text += j["per_token"][i]["text"].get<std::string>();
    EXPECT_EQ(text, " Once upon a time");
    EXPECT_EQ(j["policy"], "uniform top-6") << "the training k by default";
    for (const auto& t : j["per_token"]) {
        EXPECT_DOUBLE_EQ(t["mean_k"].get<double>(), 6.0);
        EXPECT_GE(t["kl_to_dense"].get<double>(), -1e-12);
    }
    const auto table = runLadimo("route " + s_project + " --prompt \"Once upon a time\" --policy mixed", true);
    ASSERT_EQ(table.status, 0) << table.out;
    EXPECT_NE(table.out.find("policy mixed"), std::string::npos) << table.out;
    EXPECT_NE(table.out.find("' upon'"), std::string::npos) << table.out;
    // A header and one row per token.
    std::size_t lines = 0;
    for (char c : table.out)
        lines += c == '\n';
    EXPECT_EQ(lines, 2 + j["per_token"].size()) << table.out;
}

TEST_F(RouteCli, BadInputSaysWhatWasExpected)
{
    auto r = runLadimo("route " + s_project + " --prompt hello --policy nope");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("no policy named 'nope' (expected one of: mixed)"), std::string::npos) << r.out;
    r = runLadimo("route " + s_project + " --prompt \"  \"");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("--prompt is empty"), std::string::npos) << r.out;
    r = runLadimo("route " + s_project + " --ids 1,403,512");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("token id 512 at position 2 is outside the model vocabulary (expected 0..511)"),
              std::string::npos)
        << r.out;
    r = runLadimo("route " + s_project + " --ids 1,403 --top-k 9");
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("expected 1..8"), std::string::npos) << r.out;
    r = runLadimo("route " + s_project);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("give a prompt, token ids or a data file"), std::string::npos) << r.out;
}

TEST_F(RouteCli, ProfileJsonMarksDeadAndHotExperts)
{
    const auto j = json("profile " + s_project + " --data " + s_data
                        + " --sensitivity-tokens 0 --dead-below 0.5 "
                          "--hot-above 1.5 --json");
    ASSERT_EQ(j.size(), 5u);
    int marked = 0;
    for (const auto& layer : j) {
        const auto load = layer["expert_load"].get<std::vector<double>>();
        const double n = static_cast<double>(load.size());
        const auto& m = layer["expert_markers"];
        EXPECT_DOUBLE_EQ(m["dead_below_share"].get<double>(), 0.5 / n);
        EXPECT_DOUBLE_EQ(m["hot_above_share"].get<double>(), 1.5 / n);
        std::vector<int> dead, hot;
        for (std::size_t e = 0; e < load.size(); ++e) {
            if (load[e] < 0.5 / n)
                dead.push_back(static_cast<int>(e));
            if (load[e] > 1.5 / n)
                hot.push_back(static_cast<int>(e));
        }
        EXPECT_EQ(m["dead"].get<std::vector<int>>(), dead);
        EXPECT_EQ(m["hot"].get<std::vector<int>>(), hot);
        marked += static_cast<int>(dead.size() + hot.size());
    }
    EXPECT_GT(marked, 0) << "a 2-epoch conversion has uneven expert loads";
    const auto bad = runLadimo("profile " + s_project + " --hot-above 0.5");
    EXPECT_EQ(bad.status, 1);
    EXPECT_NE(bad.out.find("expected a multiple of the even share above 1"), std::string::npos) << bad.out;
}

} // namespace
