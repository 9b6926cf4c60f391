// Streamed weights (issue 19): a model read layer by layer from its checkpoint computes exactly
// what the resident model computes, layer-major runs equal batch-by-batch ones, and exports of a
// streamed model are byte-identical to exports of the resident one.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>

#include "common/fileutil.h"
#include "common/memory.h"
#include "convert/convert.h"
#include "eval/perplexity.h"
#include "export/gguf.h"
#include "export/hf_mixtral.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "core/tinymodel.h"
#include "testutil.h"

using namespace ladimo::core;
using ladimo::test::TempDir;

namespace {

// A tiny model saved in `dtype`, with an untied head, loaded both ways.
struct Saved {
    TempDir tmp;
    std::filesystem::path dir;
    explicit Saved(torch::ScalarType dtype, bool tied = false)
    {
        dir = tmp / "m";
        auto model = ladimo::testmodel::tinyModel(11);
        ModelConfig c = model.config();
        if (tied) {
            c.tieWordEmbeddings = true;
            auto w = model.weights();
            w.lmHead = torch::Tensor();
            LlamaModel(c, std::move(w)).save(dir, dtype);
        } else {
            model.save(dir, dtype);
        }
    }
    LlamaModel load(Residency r) const
    {
        LoadOptions o;
        o.residency = r;
        return LlamaModel::load(dir, o);
    }
};

torch::Tensor tokens(int64_t B, int64_t T, int64_t seed)
{
    torch::manual_seed(static_cast<uint64_t>(seed));
    return torch::randint(64, {B, T}, torch::kInt64);
}

// A conversion of the tiny model in milliseconds.
ConvertSettings quickSettings()
{
    ConvertSettings cs;
    cs.experts = 4;
    cs.seqLen = 32;
    cs.distill.trainTopK = 2;
    cs.distill.epochs = 1;
    cs.distill.routerEpochs = 1;
    cs.distill.batch = 64;
    return cs;
}

} // namespace

TEST(Streaming, AutoKeepsSmallModelsResidentAndStreamsWhenAsked)
{
    Saved s(torch::kFloat32);
    EXPECT_FALSE(s.load(Residency::Auto).streamed());
    EXPECT_FALSE(s.load(Residency::Resident).streamed());
    const auto streamed = s.load(Residency::Streamed);
    EXPECT_TRUE(streamed.streamed());
    EXPECT_EQ(streamed.residentBytes(), 0u);
    EXPECT_FALSE(streamed.weights().layers.at(0).q.defined()); // nothing read yet
    EXPECT_GT(streamed.layerBytes(), 0u);
    EXPECT_EQ(streamed.layerBytes(), s.load(Residency::Resident).layerBytes());
    // A budget too small for the model streams it even under auto.
    LoadOptions o;
    o.memoryBudget = 1000;
    EXPECT_TRUE(LlamaModel::load(s.dir, o).streamed());
    EXPECT_EQ(parseResidency("streamed"), Residency::Streamed);
    EXPECT_THROW(parseResidency("lazy"), Error);
}

TEST(Streaming, StreamedLogitsEqualResidentBitForBit)
{
    for (auto dtype : {torch::kFloat32, torch::kBFloat16})
        for (bool tied : {false, true}) {
            SCOPED_TRACE(std::string(c10::toString(dtype)) + (tied ? " tied" : " untied"));
            Saved s(dtype, tied);
            const auto resident = s.load(Residency::Resident);
            const auto streamed = s.load(Residency::Streamed);
            torch::InferenceMode guard;
            const auto t = tokens(3, 20, 1);
            EXPECT_TRUE(torch::equal(resident.forward(t), streamed.forward(t)));
            // With a KV cache, token by token.
            auto c1 = resident.makeCache(1, 16), c2 = streamed.makeCache(1, 16);
            for (int i = 0; i < 8; ++i) {
                const auto one = tokens(1, 1, 100 + i);
                ASSERT_TRUE(torch::equal(resident.forward(one, &c1), streamed.forward(one, &c2))) << "step " << i;
            }
            // Generation (which caches layers of a streamed model meanwhile) and nothing stays cached after.
            GenerateOptions g;
            g.maxNew = 6;
            g.temperature = 0;
            EXPECT_EQ(generate(resident, {{1, 5, 9}}, g), generate(streamed, {{1, 5, 9}}, g));
            EXPECT_EQ(streamed.residentBytes(), 0u);
        }
}

TEST(Streaming, LayerMajorRunEqualsBatchByBatch)
{
    Saved s(torch::kBFloat16);
    const auto streamed = s.load(Residency::Streamed);
    torch::InferenceMode guard;
    const std::vector<torch::Tensor> batches = {tokens(2, 16, 1), tokens(2, 16, 2), tokens(1, 9, 3)};
    std::vector<int> ffnCalls;
    ForwardHooks hooks;
    hooks.onFfn = [&](int layer, const torch::Tensor&, const torch::Tensor&) { ffnCalls.push_back(layer); };
    std::vector<int> layersDone;
    hooks.onLayerDone = [&](int layer) { layersDone.push_back(layer); };
    std::size_t outputs = 0;
    streamed.forwardLayerMajor(batches, &hooks, [&](std::size_t i, const torch::Tensor& logits) {
        EXPECT_EQ(i, outputs++);
        EXPECT_TRUE(torch::equal(logits, streamed.forward(batches[i]))) << "batch " << i;
    });
    EXPECT_EQ(outputs, batches.size());
    // Layer-major: every batch passes layer l before layer l+1.
    EXPECT_EQ(ffnCalls, (std::vector<int>{0, 0, 0, 1, 1, 1, 2, 2, 2}));
    EXPECT_EQ(layersDone, (std::vector<int>{0, 1, 2}));
}

TEST(Streaming, CaptureAndPerplexityAreTheSameStreamed)
{
    Saved s(torch::kBFloat16);
    const auto resident = s.load(Residency::Resident);
    LoadOptions o;
    o.residency = Residency::Streamed;
    o.memoryBudget = 64ull << 20; // several groups of windows, each layer-major
    const auto streamed = LlamaModel::load(s.dir, o);
    const auto stream = ladimo::testmodel::tinyCalibration(700);
    std::vector<torch::Tensor> xr, yr, xs, ys;
    CaptureOptions co;
    co.maxWindows = 2;
    captureFfn(resident, stream, 32, &xr, &yr, co);
    captureFfn(streamed, stream, 32, &xs, &ys, co);
    ASSERT_EQ(xr.size(), xs.size());
    for (std::size_t l = 0; l < xr.size(); ++l) {
        EXPECT_TRUE(torch::equal(xr[l], xs[l])) << "layer " << l;
        EXPECT_TRUE(torch::equal(yr[l], ys[l])) << "layer " << l;
    }
    EvalOptions e;
    e.seqLen = 32;
    e.batch = 3;
    e.reference = &resident;
    const auto a = evaluatePerplexity(resident, stream, e);
    e.reference = &streamed;
    const auto b = evaluatePerplexity(streamed, stream, e);
    EXPECT_EQ(a.nll, b.nll);
    EXPECT_EQ(a.tokens, b.tokens);
    EXPECT_EQ(b.klToReference, 0.0);
}

TEST(Streaming, ConversionOfAStreamedModelGivesTheSameWeights)
{
    Saved s(torch::kFloat32);
    const auto resident = s.load(Residency::Resident);
    const auto streamed = s.load(Residency::Streamed);
    const auto cs = quickSettings();
    const auto calibration = ladimo::testmodel::tinyCalibration(256);
    torch::InferenceMode off(false);
    const auto a = convertModel(resident, calibration, cs, {});
    const auto b = convertModel(streamed, calibration, cs, {});
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t l = 0; l < a.size(); ++l) {
        EXPECT_TRUE(torch::equal(a[l].router, b[l].router)) << "layer " << l;
        EXPECT_TRUE(torch::equal(a[l].gate, b[l].gate)) << "layer " << l;
        EXPECT_TRUE(torch::equal(a[l].down, b[l].down)) << "layer " << l;
    }
}

TEST(Streaming, ExportsOfAStreamedModelAreByteIdentical)
{
    for (auto dtype : {torch::kFloat32, torch::kBFloat16}) {
        SCOPED_TRACE(c10::toString(dtype));
        Saved s(dtype);
        const auto resident = s.load(Residency::Resident);
        const auto streamed = s.load(Residency::Streamed);
        for (const std::string out : {"bf16", "f32"}) {
            ExportInput in;
            in.modelDir = s.dir;
            ExportOptions o;
            o.dtype = out;
            in.model = &resident;
            o.out = s.tmp / ("r-" + out);
            const auto ra = exportHfMixtral(in, o);
            in.model = &streamed;
            o.out = s.tmp / ("s-" + out);
            const auto sa = exportHfMixtral(in, o);
            EXPECT_EQ(ra.sha256, sa.sha256) << out;
        }
        ExportInput in;
        in.modelDir = s.dir;
        ExportOptions o;
        o.dtype = "f16";
        in.model = &resident;
        o.out = s.tmp / "r.gguf";
        exportGguf(in, o);
        in.model = &streamed;
        o.out = s.tmp / "s.gguf";
        exportGguf(in, o);
        EXPECT_EQ(sha256File(s.tmp / "r.gguf"), sha256File(s.tmp / "s.gguf"));
    }
}

TEST(Streaming, ReadsRowsOfATensorWithoutMappingIt)
{
    Saved s(torch::kBFloat16);
    const auto files = CheckpointFiles::open(s.dir);
    const auto whole = files.read("model.embed_tokens.weight");
    EXPECT_TRUE(torch::equal(whole, files.tensor("model.embed_tokens.weight")));
    EXPECT_TRUE(torch::equal(files.read("model.embed_tokens.weight", 10, 5), whole.narrow(0, 10, 5)));
    EXPECT_THROW(files.read("model.embed_tokens.weight", 60, 10), Error);
    EXPECT_THROW(files.read("no.such.tensor"), Error);
    // Token ids outside the vocabulary are an Error naming the id, not a crash.
    const auto streamed = s.load(Residency::Streamed);
    torch::InferenceMode guard;
    EXPECT_THROW(streamed.forward(torch::full({1, 2}, 64, torch::kInt64)), Error);
}

TEST(Streaming, MemorySizesParseAndPeakIsMeasured)
{
    EXPECT_EQ(parseByteSize("8GB"), 8000000000);
    EXPECT_EQ(parseByteSize("1.5GiB"), 1610612736);
    EXPECT_THROW(parseByteSize("much"), Error);
    EXPECT_GT(peakRssBytes(), currentRssBytes() / 2);
    EXPECT_GE(defaultMemoryBudget(), 1ull << 30);
    EXPECT_EQ(memoryText(1536.0 * 1024 * 1024), "1.5 GiB");
}

TEST(Streaming, StreamedMoeLayersGiveTheSameConvertedModel)
{
    Saved s(torch::kFloat32);
    const auto model = s.load(Residency::Streamed);
    const auto cs = quickSettings();
    std::vector<MoeLayer> layers;
    {
        torch::InferenceMode off(false);
        layers = convertModel(model, ladimo::testmodel::tinyCalibration(256), cs, {});
    }
    std::vector<std::filesystem::path> files;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        files.push_back(s.tmp / ("layer-" + std::to_string(l) + ".safetensors"));
        saveMoeLayer(files.back(), layers[l]);
    }
    const MoeLayers resident(layers);
    const auto streamed = MoeLayers::streamed(files, torch::kCPU, torch::kFloat32);
    EXPECT_FALSE(resident.streamed());
    EXPECT_TRUE(streamed.streamed());
    EXPECT_EQ(streamed.size(), layers.size());
    EXPECT_EQ(streamed.numExperts(), 4);
    torch::InferenceMode guard;
    const auto rules = uniformRules(static_cast<int>(layers.size()), RoutingRule::staticK(3));
    int64_t activeA = 0, tokensA = 0, activeB = 0, tokensB = 0;
    const auto a = moeHooks(resident, rules, &activeA, &tokensA);
    const auto b = moeHooks(streamed, rules, &activeB, &tokensB);
    const std::vector<torch::Tensor> batches = {tokens(2, 16, 5), tokens(2, 16, 6)};
    for (const auto& t : batches)
        EXPECT_TRUE(torch::equal(model.forward(t, nullptr, &a), model.forward(t, nullptr, &b)));
    // Layer-major: each streamed layer is read once for both batches and gives the same logits.
    std::vector<torch::Tensor> layerMajor(batches.size());
    model.forwardLayerMajor(batches, &b, [&](std::size_t i, const torch::Tensor& l) { layerMajor[i] = l; });
    for (std::size_t i = 0; i < batches.size(); ++i)
        EXPECT_TRUE(torch::equal(layerMajor[i], model.forward(batches[i], nullptr, &a)));
    EXPECT_EQ(activeA, activeB); // both ran every batch twice, and counted the same experts
    EXPECT_EQ(tokensA, tokensB);
    EXPECT_EQ(tokensA, 2 * 2 * 2 * 16);
    // All at once for writers, and the same tensors.
    const auto& all = streamed.resident();
    ASSERT_EQ(all.size(), layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
        EXPECT_TRUE(torch::equal(all[l].down, layers[l].down));
        EXPECT_TRUE(torch::equal(streamed.get(l)->router, layers[l].router));
    }
}

TEST(Streaming, CaptureReportsProgressAndCanBeCancelled)
{
    Saved s(torch::kFloat32);
    const auto stream = ladimo::testmodel::tinyCalibration(700);
    for (auto residency : {Residency::Resident, Residency::Streamed}) {
        LoadOptions lo;
        lo.residency = residency;
        const auto model = LlamaModel::load(s.dir, lo);
        std::vector<double> done;
        CaptureOptions co;
        co.maxWindows = 2;
        co.progress = [&](const std::string& stage, double d, double total) {
            EXPECT_EQ(stage, "capture");
            EXPECT_EQ(total, 22.0); // 700 tokens in windows of 32
            done.push_back(d);
        };
        std::vector<torch::Tensor> xs, ys;
        captureFfn(model, stream, 32, &xs, &ys, co);
        ASSERT_FALSE(done.empty());
        EXPECT_TRUE(std::is_sorted(done.begin(), done.end()));
        EXPECT_EQ(done.back(), 22.0);
        // Cancelled at the first report: the capture stops with Cancelled.
        CaptureOptions cancelled = co;
        cancelled.progress = [&](const std::string&, double, double) { cancelled.cancel.cancel(); };
        EXPECT_THROW(captureFfn(model, stream, 32, &xs, &ys, cancelled), Cancelled);
    }
}
