// Data-free calibration: self-sampling is reproducible and really samples the model's own
// distribution (perplexity on its samples ~= exp(mean predictive entropy)).
#include "common/cputeam.h"
#include "eval/perplexity.h"
#include "model/generate.h"
#include "model/llama.h"
#include "testutil.h"

using namespace ladimo::core;

namespace {

std::filesystem::path modelDir()
{
    const auto demo = ladimo::test::sourceDir() / "resources/demo";
    if (std::filesystem::exists(demo / "model.safetensors"))
        return demo;
    return ladimo::test::sharedData() / "tinystories260K";
}

} // namespace

TEST(SelfSample, SameSeedSameTokensOtherSeedOtherTokens)
{
    const auto dir = modelDir();
    if (!std::filesystem::exists(dir / "model.safetensors"))
        GTEST_SKIP() << "neither the demo model nor tinystories260K is present";
    const auto model = LlamaModel::load(dir);
    SelfSampleOptions o;
    o.tokens = 300;
    o.seqLen = 64;
    o.batch = 2;
    o.seed = 7;
    const auto a = selfSample(model, o);
    const auto b = selfSample(model, o);
    EXPECT_EQ(a, b);
    ASSERT_EQ(a.size(), 320u); // rounded up to whole sequences of 64
    for (std::size_t i = 0; i < a.size(); i += 64)
        EXPECT_EQ(a[i], model.config().bosTokenId);
    o.seed = 8;
    EXPECT_NE(selfSample(model, o), a);
}

TEST(SelfSample, PerplexityOnOwnSamplesMatchesPredictiveEntropy)
{
    const auto dir = modelDir();
    if (!std::filesystem::exists(dir / "model.safetensors"))
        GTEST_SKIP() << "neither the demo model nor tinystories260K is present";
    torch::InferenceMode guard;
    const auto model = LlamaModel::load(dir);
    SelfSampleOptions o;
    o.tokens = 16 * 128;
    o.seqLen = 128;
    o.batch = 16;
    o.seed = 3;
    const auto stream = selfSample(model, o);
    EvalOptions eo;
    eo.seqLen = 128;
    const auto r = evaluatePerplexity(model, stream, eo);
    // Mean entropy of the model's predictions at the same positions.
    auto tokens = torch::tensor(stream, torch::kInt64).view({16, 128});
    auto logp = torch::log_softmax(model.forward(tokens).narrow(1, 0, 127).to(torch::kFloat64), -1);
    const double entropy = -(logp.exp() * logp).sum(-1).mean().item<double>();
    // E[NLL of a sample] = entropy; with ~2000 tokens the sampling noise is a few percent.
    EXPECT_NEAR(r.nll, entropy, 0.05 * entropy) << "nll " << r.nll << " entropy " << entropy;
    EXPECT_NEAR(r.perplexity, std::exp(entropy), 0.15 * std::exp(entropy));
}

// A resident model on the CPU samples its chunks on the CPU team; each chunk draws from its own
// generator, so the tokens are those of one chunk after another (CpuTeam::Solo).
TEST(SelfSample, ChunksOnTheCpuTeamGiveTheTokensOfOneChunkAfterAnother)
{
    const auto dir = modelDir();
    if (!std::filesystem::exists(dir / "model.safetensors"))
        GTEST_SKIP() << "neither the demo model nor tinystories260K is present";
    const auto model = LlamaModel::load(dir);
    SelfSampleOptions o;
    o.tokens = 9 * 64; // nine sequences: four chunks of two and a last one of one
    o.seqLen = 64;
    o.batch = 2;
    o.seed = 11;
    double lastDone = 0;
    int reports = 0;
    o.progress = [&](const std::string& what, double done, double total) {
        EXPECT_EQ(what, "self-sample");
        EXPECT_EQ(total, 9 * 64.0);
        EXPECT_GE(done, lastDone);
        lastDone = done;
        ++reports;
    };
    const auto split = selfSample(model, o);
    EXPECT_EQ(lastDone, 9 * 64.0);
    EXPECT_GE(reports, 1);
    std::vector<int64_t> solo;
    {
        CpuTeam::Solo one;
        o.progress = nullptr;
        solo = selfSample(model, o);
    }
    ASSERT_EQ(split.size(), 9u * 64u);
    EXPECT_EQ(split, solo);
    for (std::size_t i = 0; i < split.size(); i += 64)
        EXPECT_EQ(split[i], model.config().bosTokenId);
}

// Cancelling while the chunks run on the team stops every share: the call throws Cancelled
// after the chunk that saw the request, not after all of them.
TEST(SelfSample, CancelStopsEveryChunk)
{
    const auto dir = modelDir();
    if (!std::filesystem::exists(dir / "model.safetensors"))
        GTEST_SKIP() << "neither the demo model nor tinystories260K is present";
    const auto model = LlamaModel::load(dir);
    SelfSampleOptions o;
    o.tokens = 64 * 2 * 64; // 64 chunks of two sequences
    o.seqLen = 64;
    o.batch = 2;
    CancelToken cancel;
    o.cancel = cancel;
    double lastDone = 0;
    o.progress = [&](const std::string&, double done, double) {
        lastDone = done;
        cancel.cancel();
    };
    EXPECT_THROW(selfSample(model, o), Cancelled);
    EXPECT_GT(lastDone, 0);
    EXPECT_LT(lastDone, o.tokens / 4.0); // stopped within the first chunks
}
