// Hugging Face Mixtral export and import: round trips (F32 exact, BF16/F16 against the rounded
// weights, single file and sharded), an independent Python reader of the Mixtral semantics,
// non-Mixtral policies, atomicity (cancellation, existing destination), bad exports, and the CLI
// (export -> eval/generate of the directory -> import into a project).
// Fixtures are built without training: a tiny random LLaMA (or the demo model) whose FFNs are
// split into experts by construction, with random routers.
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "convert/experts.h"
#include "convert/convert.h"
#include "export/gguf.h"
#include "export/hf_mixtral.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/safetensors.h"
#include "routing/policy.h"
#include "store/project.h"
#include "ggufreader.h"
#include "testutil.h"

using namespace ladimo::core;
using ladimo::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct Fixture {
    std::unique_ptr<LlamaModel> model;
    fs::path modelDir;
    std::vector<MoeLayer> layers;
    PolicyRules rules;
};

// Splits every FFN of `model` into `experts` contiguous experts (unequal when they do not divide
// the intermediate size) with a random router.
std::vector<MoeLayer> splitFfns(const LlamaModel& model, int64_t experts, Gating gating, uint64_t seed)
{
    torch::NoGradGuard ng;
    torch::manual_seed(seed);
    std::vector<MoeLayer> layers;
    for (const auto& l : model.weights().layers) {
        DenseFfn ffn{l.gate, l.up, l.down};
        const auto assign = partitionNeurons(ffn, torch::Tensor(), experts, Partition::Contiguous, 0);
        auto m = buildMoeLayer(ffn, assign, experts, gating);
        m.router = torch::randn({experts, model.config().hiddenSize}) * 0.5;
        layers.push_back(std::move(m));
    }
    return layers;
}

// Tiny untied LLaMA (GQA 4/2), intermediate 70 = 6 experts of 9 + 2 of 8, saved with tokenizer files.
Fixture tinyFixture(const fs::path& dir, Gating gating = Gating::Renorm)
{
    ModelConfig c;
    c.hiddenSize = 32;
    c.intermediateSize = 70;
    c.numLayers = 2;
    c.numHeads = 4;
    c.numKvHeads = 2;
    c.headDim = 8;
    c.vocabSize = 64;
    c.maxPositions = 128;
    c.ropeTheta = 5000.0;
    c.rmsNormEps = 1e-5;
    Fixture f;
    f.model = std::make_unique<LlamaModel>(LlamaModel::randomInit(c, 7));
    f.modelDir = dir;
    f.model->save(dir, torch::kFloat32);
    atomicWriteFile(dir / "tokenizer.json", std::string("{\"model\": {\"type\": \"test\"}}\n"));
    atomicWriteFile(dir / "generation_config.json", std::string("{\"bos_token_id\": 1}\n"));
    f.layers = splitFfns(*f.model, 8, gating, 11);
    f.rules = uniformRules(2, RoutingRule::staticK(3));
    return f;
}

torch::Tensor moeLogits(const LlamaModel& model, const std::vector<MoeLayer>& layers, const PolicyRules& rules,
                        const torch::Tensor& tokens)
{
    torch::NoGradGuard ng;
    const auto hooks = moeHooks(layers, rules);
    return model.forward(tokens, nullptr, &hooks);
}

torch::Tensor loadedLogits(const LoadedMixtral& m, const torch::Tensor& tokens)
{
    return moeLogits(m.model, m.layers, m.rules, tokens);
}

double maxDiff(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

nlohmann::json readJson(const fs::path& file) { return nlohmann::json::parse(readTextFile(file)); }

std::set<std::string> listing(const fs::path& dir)
{
    std::set<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
        out.insert(e.path().filename().string());
    return out;
}

std::string errorOf(const std::function<void()>& f)
{
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

// Copies of the model and layers with every weight rounded to `dtype` (the exact expectation of
// a reduced-precision export computed in float32).
LlamaModel roundedModel(const LlamaModel& model, torch::ScalarType dtype)
{
    LlamaWeights w = model.weights();
    for (auto& [name, t] : w.named())
        *t = t->to(dtype).to(torch::kFloat32);
    return LlamaModel(model.config(), w);
}

std::vector<MoeLayer> roundedLayers(std::vector<MoeLayer> layers, torch::ScalarType dtype)
{
    for (auto& m : layers)
        for (auto* t : {&m.router, &m.gate, &m.up, &m.down})
            *t = t->to(dtype).to(torch::kFloat32);
    return layers;
}

bool python3HasTorch() { return std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") == 0; }

std::string joinIds(const torch::Tensor& ids)
{
    std::string s;
    for (int64_t i = 0; i < ids.numel(); ++i)
        s += (i ? "," : "") + std::to_string(ids[i].item<int64_t>());
    return s;
}

} // namespace

TEST(ExportHfMixtral, F32RoundTripSingleFileAndShardedGivesTheSameLogits)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    torch::manual_seed(1);
    const auto tokens = torch::randint(64, {2, 24}, torch::kInt64);
    const auto expected = moeLogits(*f.model, f.layers, f.rules, tokens);
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", nlohmann::json{{"train_top_k", 3}}};
    for (const int64_t shard : {int64_t(0), int64_t(20000)}) {
        SCOPED_TRACE("shard bytes " + std::to_string(shard));
        ExportOptions o;
        o.out = tmp / ("f32-" + std::to_string(shard));
        o.shardBytes = shard;
        const auto report = exportHfMixtral(in, o);
        EXPECT_TRUE(report.exact);
        EXPECT_TRUE(report.notes.empty());
        EXPECT_EQ(report.expertsPerToken, 3);
        EXPECT_EQ(report.sha256.size(), 64u);

        // Layout.
        int64_t tensorBytes = 0;
        std::map<std::string, std::string> where;
        std::vector<std::string> shards;
        for (const auto& e : fs::directory_iterator(o.out))
            if (e.path().extension() == ".safetensors") {
                shards.push_back(e.path().filename().string());
                const auto file = SafetensorsFile::open(e.path()); // held: tensors() refers into it
                for (const auto& t : file->tensors()) {
                    where[t.name] = e.path().filename().string();
                    tensorBytes += static_cast<int64_t>(t.end - t.begin);
                    EXPECT_EQ(t.dtype, StDType::F32) << t.name;
                }
            }
        if (shard == 0) {
            EXPECT_EQ(shards, std::vector<std::string>{"model.safetensors"});
            EXPECT_FALSE(fs::exists(o.out / "model.safetensors.index.json"));
        } else {
            ASSERT_GT(shards.size(), 2u);
            const auto index = readJson(o.out / "model.safetensors.index.json");
            EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), tensorBytes);
            EXPECT_EQ(index["weight_map"].size(), where.size());
            for (const auto& [name, file] : where)
                EXPECT_EQ(index["weight_map"].value(name, ""), file) << name;
            const std::string n = std::to_string(shards.size());
            EXPECT_TRUE(where.count("model.embed_tokens.weight"));
            EXPECT_EQ(where["model.embed_tokens.weight"], "model-00001-of-0000" + n + ".safetensors");
        }
        for (const auto& [name, file] : where)
            EXPECT_EQ(name.find(".mlp."), std::string::npos) << name;
        const auto st = SafetensorsFile::open(o.out / where.at("model.layers.1.block_sparse_moe.experts.7.w2.weight"));
        EXPECT_EQ(st->find("model.layers.1.block_sparse_moe.experts.7.w2.weight")->shape,
                  (std::vector<int64_t>{32, 9}));
        EXPECT_TRUE(where.count("model.layers.0.block_sparse_moe.gate.weight"));
        EXPECT_TRUE(where.count("lm_head.weight"));

        const auto config = readJson(o.out / "config.json");
        EXPECT_EQ(config["architectures"], nlohmann::json::array({"MixtralForCausalLM"}));
        EXPECT_EQ(config["model_type"], "mixtral");
        EXPECT_EQ(config["num_local_experts"], 8);
        EXPECT_EQ(config["num_experts_per_tok"], 3);
        EXPECT_EQ(config["intermediate_size"], 9);
        EXPECT_EQ(config["hidden_size"], 32);
        EXPECT_EQ(config["num_key_value_heads"], 2);
        EXPECT_EQ(config["rope_theta"], 5000.0);
        EXPECT_EQ(config["rms_norm_eps"], 1e-5);
        EXPECT_EQ(config["torch_dtype"], "float32");
        const auto doc = policyDocument("uniform-3", f.rules, Gating::Renorm, 8);
        EXPECT_EQ(config["ladimo"]["policy"], doc);
        EXPECT_EQ(readJson(o.out / "routing_policy.json"), doc);
        EXPECT_EQ(config["ladimo"]["expert_sizes"][0], nlohmann::json({9, 9, 9, 9, 9, 9, 8, 8}));
        EXPECT_EQ(readTextFile(o.out / "tokenizer.json"), readTextFile(f.modelDir / "tokenizer.json"));
        EXPECT_EQ(readTextFile(o.out / "generation_config.json"), readTextFile(f.modelDir / "generation_config.json"));
        EXPECT_TRUE(isHfMixtralDir(o.out));
        EXPECT_FALSE(isHfMixtralDir(f.modelDir));

        // Read back: the same weights, rules, sizes and logits.
        const auto loaded = loadHfMixtral(o.out);
        ASSERT_EQ(loaded.layers.size(), 2u);
        EXPECT_EQ(loaded.gating, Gating::Renorm);
        EXPECT_EQ(loaded.expertsPerToken, 3);
        EXPECT_EQ(loaded.policyName, "uniform-3");
        EXPECT_EQ(rulesToJson(loaded.rules), rulesToJson(f.rules));
        for (std::size_t l = 0; l < 2; ++l) {
            EXPECT_EQ(loaded.layers[l].sizes, f.layers[l].sizes);
            EXPECT_TRUE(torch::equal(loaded.layers[l].router, f.layers[l].router));
            EXPECT_TRUE(torch::equal(loaded.layers[l].gate, f.layers[l].gate));
            EXPECT_TRUE(torch::equal(loaded.layers[l].up, f.layers[l].up));
            EXPECT_TRUE(torch::equal(loaded.layers[l].down, f.layers[l].down));
        }
        const auto logits = loadedLogits(loaded, tokens);
        const double diff = maxDiff(logits, expected);
        std::cout << "[measured] F32 shard=" << shard << " max |logit diff| " << diff << "\n";
        EXPECT_LT(diff, 1e-5);
        // The model has no dense FFN: running it without its MoE blocks is an Error, not a crash.
        const auto msg = errorOf([&] { (void)loaded.model.forward(tokens); });
        EXPECT_NE(msg.find("no dense FFN"), std::string::npos) << msg;
    }
}

// Qwen2-MoE export of a conversion with shared neurons (layer 0: 14 always-on neurons and 8
// experts of 7; layer 1: none, so its shared expert is zero rows), computed here from the written
// tensors with Qwen2-MoE's own block (softmax router, top-k, optional renormalisation, experts,
// plus sigmoid(shared_expert_gate x) times the shared expert): equal to the workbench's block for
// plain and renorm gating. q/k/v get zero biases; hard gating needs a chosen k and says what
// changes; Mixtral refuses shared neurons and names the format that holds them.
TEST(ExportHfQwen2Moe, SharedExpertAndRoutedExpertsComputeTheWorkbenchBlock)
{
    TempDir tmp;
    auto expectMentions = [](const std::string& error, const std::vector<std::string>& words) {
        for (const auto& w : words)
            EXPECT_NE(error.find(w), std::string::npos) << "'" << w << "' not in: " << error;
    };
    for (auto gating : {Gating::Renorm, Gating::Plain, Gating::Hard}) {
        SCOPED_TRACE(gatingName(gating));
        auto f = tinyFixture(tmp / ("dense-" + std::string(gatingName(gating))), gating);
        const int64_t H = 32, N = 8;
        for (int l = 0; l < 2; ++l) {
            torch::NoGradGuard ng;
            const auto& w = f.model->weights().layers[static_cast<std::size_t>(l)];
            const int64_t shared = l == 0 ? 14 : 0;
            std::vector<int64_t> assign(70);
            for (int64_t i = 0; i < 70; ++i)
                assign[static_cast<std::size_t>(i)] = i < shared ? -1 : (i - shared) * N / (70 - shared);
            auto m = buildMoeLayer(DenseFfn{w.gate, w.up, w.down}, assign, N, gating);
            m.router = f.layers[static_cast<std::size_t>(l)].router;
            f.layers[static_cast<std::size_t>(l)] = std::move(m);
        }
        ASSERT_EQ(f.layers[0].sharedNeurons(), 14);
        ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", nlohmann::json()};
        ExportOptions o;
        o.out = tmp / ("qwen-" + std::string(gatingName(gating)));
        if (gating == Gating::Hard) {
            expectMentions(errorOf([&] { exportHfQwen2Moe(in, o); }), {"hard", "--top-k"});
            EXPECT_FALSE(fs::exists(o.out));
            o.expertsPerToken = 3;
        }
        const auto report = exportHfQwen2Moe(in, o);
        EXPECT_EQ(report.exact, gating != Gating::Hard);
        if (gating == Gating::Hard)
            EXPECT_NE(report.notes.front().find("plain softmax weights"), std::string::npos) << report.notes.front();
        const auto config = readJson(o.out / "config.json");
        EXPECT_EQ(config.at("model_type"), "qwen2_moe");
        EXPECT_EQ(config.at("architectures")[0], "Qwen2MoeForCausalLM");
        EXPECT_EQ(config.at("num_experts").get<int64_t>(), N);
        EXPECT_EQ(config.at("num_experts_per_tok").get<int64_t>(), 3);
        EXPECT_EQ(config.at("moe_intermediate_size").get<int64_t>(), 9); // layer 1: 70 neurons, experts of 9 and 8
        EXPECT_EQ(config.at("shared_expert_intermediate_size").get<int64_t>(), 14);
        EXPECT_EQ(config.at("norm_topk_prob").get<bool>(), gating == Gating::Renorm);
        EXPECT_EQ(config.at("ladimo").at("shared_neurons"), nlohmann::json({14, 0}));
        const auto st = SafetensorsFile::open(o.out / "model.safetensors");
        EXPECT_EQ(st->read("model.layers.1.self_attn.q_proj.bias").sizes().vec(), std::vector<int64_t>{32});
        EXPECT_EQ(st->read("model.layers.1.self_attn.k_proj.bias").sizes().vec(), std::vector<int64_t>{16});
        EXPECT_EQ(st->read("model.layers.0.self_attn.v_proj.bias").abs().sum().item<double>(), 0.0);
        EXPECT_EQ(st->find("model.layers.0.block_sparse_moe.gate.weight"), nullptr);
        torch::manual_seed(5);
        const auto x = torch::randn({64, H});
        for (int l = 0; l < 2; ++l) {
            torch::NoGradGuard ng;
            const std::string p = "model.layers." + std::to_string(l) + ".mlp.";
            auto swiglu = [&](const std::string& e, const torch::Tensor& in) {
                return torch::matmul(torch::silu(torch::matmul(in, st->read(e + "gate_proj.weight").t()))
                                         * torch::matmul(in, st->read(e + "up_proj.weight").t()),
                                     st->read(e + "down_proj.weight").t());
            };
            const auto probs = torch::softmax(torch::matmul(x, st->read(p + "gate.weight").t()), -1);
            auto [topW, topI] = probs.topk(3, -1);
            if (config.at("norm_topk_prob").get<bool>())
                topW = topW / topW.sum(-1, true);
            auto out = torch::zeros({64, H});
            for (int64_t t = 0; t < 64; ++t)
                for (int64_t j = 0; j < 3; ++j) {
                    const auto e = p + "experts." + std::to_string(topI[t][j].item<int64_t>()) + ".";
                    out[t] += topW[t][j] * swiglu(e, x.narrow(0, t, 1))[0];
                }
            out += torch::sigmoid(torch::matmul(x, st->read(p + "shared_expert_gate.weight").t()))
                * swiglu(p + "shared_expert.", x);
            // Hard gating weighs each chosen expert 1, not its probability: only the chosen set agrees.
            const auto expected = f.layers[static_cast<std::size_t>(l)].forward(x, RoutingRule::staticK(3));
            if (gating != Gating::Hard)
                EXPECT_LT(maxDiff(out, expected), 1e-5) << "layer " << l;
            else
                EXPECT_GT(maxDiff(out, expected), 1e-3) << "layer " << l;
        }
        if (gating == Gating::Renorm) {
            ExportOptions mo;
            mo.out = tmp / "mixtral";
            expectMentions(errorOf([&] { exportHfMixtral(in, mo); }), {"layer 0", "14", "shared", "hf-qwen2-moe"});
            EXPECT_FALSE(fs::exists(mo.out));
        }
    }
}

TEST(ExportHfMixtral, Bf16AndF16RoundTripsMatchTheRoundedWeights)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    torch::manual_seed(2);
    const auto tokens = torch::randint(64, {2, 24}, torch::kInt64);
    const auto f32 = moeLogits(*f.model, f.layers, f.rules, tokens);
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", {}};
    struct Case {
        const char* dtype;
        torch::ScalarType type;
        int64_t shard;
        StDType stored;
    };
    for (const Case& c :
         {Case{"bf16", torch::kBFloat16, 0, StDType::BF16}, Case{"bf16", torch::kBFloat16, 10000, StDType::BF16},
          Case{"f16", torch::kFloat16, 0, StDType::F16}}) {
        SCOPED_TRACE(std::string(c.dtype) + " shard " + std::to_string(c.shard));
        ExportOptions o;
        o.out = tmp / (std::string(c.dtype) + "-" + std::to_string(c.shard));
        o.dtype = c.dtype;
        o.shardBytes = c.shard;
        exportHfMixtral(in, o);
        EXPECT_EQ(fs::exists(o.out / "model.safetensors.index.json"), c.shard > 0);
        EXPECT_EQ(readJson(o.out / "config.json")["torch_dtype"], c.type == torch::kBFloat16 ? "bfloat16" : "float16");
        for (const auto& e : fs::directory_iterator(o.out))
            if (e.path().extension() == ".safetensors") {
                const auto file = SafetensorsFile::open(e.path());
                for (const auto& t : file->tensors())
                    EXPECT_EQ(t.dtype, c.stored) << t.name;
            }
        // Exact expectation: every weight rounded to the dtype, computed in float32.
        const auto expected
            = moeLogits(roundedModel(*f.model, c.type), roundedLayers(f.layers, c.type), f.rules, tokens);
        const auto logits = loadedLogits(loadHfMixtral(o.out), tokens); // float32 compute from stored weights
        const double diff = maxDiff(logits, expected);
        const double rel = ((logits - f32).abs().mean() / f32.abs().mean()).item<double>();
        std::cout << "[measured] " << c.dtype << " shard=" << c.shard << " max |logit diff| vs rounded weights " << diff
                  << ", mean relative change vs F32 " << rel << "\n";
        EXPECT_TRUE(torch::allclose(logits, expected, 1e-5, 1e-4));
        EXPECT_LT(rel, 0.05);
    }
}

TEST(ExportHfMixtral, NonMixtralPolicyNeedsAChosenKAndSaysWhatChanges)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense", Gating::Hard);
    PolicyRules rules = {RoutingRule::topP(0.9), RoutingRule::staticK(3)};
    ExportInput in{f.modelDir, f.model.get(), &f.layers, rules, "mixed", {}};
    ExportOptions o;
    o.out = tmp / "out";
    auto msg = errorOf([&] { exportHfMixtral(in, o); });
    EXPECT_NE(msg.find("one k"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--top-k"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(o.out));
    // A uniform static policy under hard gating: Mixtral's renormalised weights differ.
    ExportInput hardUniform = in;
    hardUniform.rules = f.rules;
    msg = errorOf([&] { exportHfMixtral(hardUniform, o); });
    EXPECT_NE(msg.find("'hard' gating"), std::string::npos) << msg;
    EXPECT_FALSE(fs::exists(o.out));

    o.expertsPerToken = 3;
    const auto report = exportHfMixtral(in, o);
    EXPECT_FALSE(report.exact);
    ASSERT_EQ(report.notes.size(), 2u);
    EXPECT_EQ(report.notes[0], "layer 0 used top-p 0.90; Mixtral uses k=3 everywhere");
    EXPECT_NE(report.notes[1].find("hard gating (weight 1 per chosen expert) becomes renormalised softmax weights"),
              std::string::npos)
        << report.notes[1];
    const auto config = readJson(o.out / "config.json");
    EXPECT_EQ(config["num_experts_per_tok"], 3);
    EXPECT_EQ(config["ladimo"]["exact"], false);
    EXPECT_EQ(config["ladimo"]["notes"].size(), 2u);
    // The workbench policy comes back exactly, and with it the workbench's logits.
    const auto loaded = loadHfMixtral(o.out);
    EXPECT_EQ(loaded.gating, Gating::Hard);
    EXPECT_EQ(rulesToJson(loaded.rules), rulesToJson(rules));
    torch::manual_seed(3);
    const auto tokens = torch::randint(64, {1, 20}, torch::kInt64);
    EXPECT_LT(maxDiff(loadedLogits(loaded, tokens), moeLogits(*f.model, f.layers, rules, tokens)), 1e-5);
    // An explicit k that differs from a uniform policy is reported too.
    ExportInput renorm{f.modelDir, f.model.get(), nullptr, f.rules, "k3", {}};
    auto renormLayers = splitFfns(*f.model, 8, Gating::Renorm, 11);
    renorm.layers = &renormLayers;
    ExportOptions o2;
    o2.out = tmp / "out2";
    o2.expertsPerToken = 2;
    const auto r2 = exportHfMixtral(renorm, o2);
    EXPECT_FALSE(r2.exact);
    ASSERT_EQ(r2.notes.size(), 1u);
    EXPECT_EQ(r2.notes[0], "layers 0-1 used top-k 3; Mixtral uses k=2 everywhere");
}

TEST(ExportHfMixtral, CancelledExportLeavesNothing)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    fs::create_directories(tmp / "exports");
    const auto before = listing(tmp / "exports");
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", {}};
    CancelToken token;
    ExportOptions o;
    o.out = tmp / "exports/hf";
    o.shardBytes = 20000;
    o.cancel = token;
    int calls = 0;
    double seenTotal = 0;
    o.progress = [&](const std::string& stage, double done, double total) {
        ++calls;
        seenTotal = total;
        if (done > total / 2)
            token.cancel();
    };
    EXPECT_THROW(exportHfMixtral(in, o), Cancelled);
    EXPECT_GT(calls, 3);
    EXPECT_GT(seenTotal, 0);
    EXPECT_FALSE(fs::exists(o.out));
    EXPECT_EQ(listing(tmp / "exports"), before); // no temporary folder left behind
    // The same export without cancellation succeeds into the same place.
    ExportOptions again;
    again.out = o.out;
    again.shardBytes = 20000;
    exportHfMixtral(in, again);
    EXPECT_TRUE(fs::exists(o.out / "config.json"));
    EXPECT_EQ(listing(tmp / "exports"), std::set<std::string>{"hf"});
}

TEST(ExportHfMixtral, RefusesANonEmptyDestinationAndFillsAnEmptyOne)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", {}};
    fs::create_directories(tmp / "exports/full");
    atomicWriteFile(tmp / "exports/full/keep.txt", std::string("mine\n"));
    const auto before = listing(tmp / "exports");
    ExportOptions o;
    o.out = tmp / "exports/full";
    const auto msg = errorOf([&] { exportHfMixtral(in, o); });
    EXPECT_NE(msg.find((tmp / "exports/full").string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("not empty"), std::string::npos) << msg;
    EXPECT_EQ(listing(tmp / "exports/full"), std::set<std::string>{"keep.txt"});
    EXPECT_EQ(readTextFile(tmp / "exports/full/keep.txt"), "mine\n");
    EXPECT_EQ(listing(tmp / "exports"), before);
    // A file in the way is refused as well; an empty folder is filled.
    atomicWriteFile(tmp / "exports/file", std::string("x"));
    o.out = tmp / "exports/file";
    EXPECT_NE(errorOf([&] { exportHfMixtral(in, o); }).find("not a directory"), std::string::npos);
    fs::create_directories(tmp / "exports/empty");
    o.out = tmp / "exports/empty";
    exportHfMixtral(in, o);
    EXPECT_TRUE(fs::exists(tmp / "exports/empty/model.safetensors"));
    EXPECT_EQ(listing(tmp / "exports"), (std::set<std::string>{"empty", "file", "full"}));
}

TEST(ExportHfMixtral, BadExportsGiveErrorsNamingFileAndKey)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", {}};
    ExportOptions o;
    o.out = tmp / "good";
    exportHfMixtral(in, o);
    auto variant = [&](const std::string& name,
                       const std::function<void(std::vector<std::pair<std::string, torch::Tensor>>&)>& edit) {
        const fs::path dir = tmp / name;
        fs::create_directories(dir);
        fs::copy_file(o.out / "config.json", dir / "config.json");
        auto st = SafetensorsFile::open(o.out / "model.safetensors");
        std::vector<std::pair<std::string, torch::Tensor>> tensors;
        for (const auto& t : st->tensors())
            tensors.emplace_back(t.name, st->tensor(t.name).clone());
        edit(tensors);
        writeSafetensors(dir / "model.safetensors", tensors);
        return dir;
    };
    const std::string w3 = "model.layers.1.block_sparse_moe.experts.2.w3.weight";
    const auto missing = variant("missing", [&](auto& ts) {
        ts.erase(std::remove_if(ts.begin(), ts.end(), [&](const auto& p) { return p.first == w3; }), ts.end());
    });
    auto msg = errorOf([&] { loadHfMixtral(missing); });
    EXPECT_NE(msg.find(w3), std::string::npos) << msg;
    EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("missing"), std::string::npos) << msg;

    const std::string w1 = "model.layers.0.block_sparse_moe.experts.0.w1.weight";
    const auto shape = variant("shape", [&](auto& ts) {
        for (auto& p : ts)
            if (p.first == w1)
                p.second = torch::zeros({10, 32});
    });
    msg = errorOf([&] { loadHfMixtral(shape); });
    EXPECT_NE(msg.find(w1), std::string::npos) << msg;
    EXPECT_NE(msg.find((shape / "model.safetensors").string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("[10, 32]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[9, 32]"), std::string::npos) << msg;

    const auto noExperts = variant("noexperts", [](auto&) {});
    auto config = readJson(noExperts / "config.json");
    config.erase("num_local_experts");
    atomicWriteFile(noExperts / "config.json", config.dump(2));
    msg = errorOf([&] { loadHfMixtral(noExperts); });
    EXPECT_NE(msg.find((noExperts / "config.json").string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("'num_local_experts'"), std::string::npos) << msg;

    // A policy record that does not fit the experts is refused with the key named.
    const auto badPolicy = variant("badpolicy", [](auto&) {});
    config = readJson(badPolicy / "config.json");
    config["ladimo"]["policy"]["rules"][0]["top_k"] = 9;
    atomicWriteFile(badPolicy / "config.json", config.dump(2));
    msg = errorOf([&] { loadHfMixtral(badPolicy); });
    EXPECT_NE(msg.find("ladimo.policy"), std::string::npos) << msg;

    msg = errorOf([&] { loadHfMixtral(f.modelDir); });
    EXPECT_NE(msg.find("not a Mixtral config"), std::string::npos) << msg;
}

TEST(ExportHfMixtral, DenseExportLoadsAsPlainLlama)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    ExportInput in{f.modelDir, f.model.get(), nullptr, {}, "", {}};
    ExportOptions o;
    o.out = tmp / "llama";
    o.shardBytes = 30000;
    const auto report = exportHfMixtral(in, o);
    EXPECT_TRUE(report.exact);
    EXPECT_EQ(readJson(o.out / "config.json")["architectures"], nlohmann::json::array({"LlamaForCausalLM"}));
    EXPECT_FALSE(fs::exists(o.out / "routing_policy.json"));
    torch::manual_seed(4);
    const auto tokens = torch::randint(64, {1, 16}, torch::kInt64);
    torch::NoGradGuard ng;
    EXPECT_TRUE(torch::equal(LlamaModel::load(o.out).forward(tokens), f.model->forward(tokens)));
}

TEST(ExportHfMixtral, ParsesShardSizes)
{
    EXPECT_EQ(parseByteSize("2GB"), 2000000000);
    EXPECT_EQ(parseByteSize("500MB"), 500000000);
    EXPECT_EQ(parseByteSize("1.5GiB"), 1610612736);
    EXPECT_EQ(parseByteSize("64kib"), 65536);
    EXPECT_EQ(parseByteSize("123456"), 123456);
    EXPECT_THROW(parseByteSize("lots"), Error);
    EXPECT_THROW(parseByteSize("2XB"), Error);
    EXPECT_THROW(parseByteSize("-1GB"), Error);
}

namespace {

// The demo model (real weights: tied embeddings, GQA 8/2) split into 7 unequal experts per layer.
Fixture demoFixture()
{
    Fixture f;
    f.modelDir = ladimo::test::sourceDir() / "resources/demo";
    f.model = std::make_unique<LlamaModel>(LlamaModel::load(f.modelDir));
    f.layers = splitFfns(*f.model, 7, Gating::Renorm, 5);
    f.rules = uniformRules(static_cast<int>(f.layers.size()), RoutingRule::staticK(2));
    return f;
}

} // namespace

TEST(ExportHfMixtral, PythonReaderComputesTheSameLogits)
{
    if (!python3HasTorch())
        GTEST_SKIP() << "python3-torch is not installed";
    TempDir tmp;
    auto f = demoFixture();
    torch::manual_seed(6);
    const auto tokens = torch::randint(f.model->config().vocabSize, {1, 48}, torch::kInt64);
    const std::string script = (ladimo::test::sourceDir() / "tests/tools/mixtral_reference.py").string();
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "k2", {}};
    struct Case {
        const char* dtype;
        int64_t shard;
        torch::ScalarType type;
        double tolerance;
    };
    for (const Case& c : {Case{"f32", 3000000, torch::kFloat32, 1e-4}, Case{"bf16", 0, torch::kBFloat16, 1e-4}}) {
        SCOPED_TRACE(c.dtype);
        ExportOptions o;
        o.out = tmp / c.dtype;
        o.dtype = c.dtype;
        o.shardBytes = c.shard;
        exportHfMixtral(in, o);
        EXPECT_EQ(fs::exists(o.out / "model.safetensors.index.json"), c.shard > 0);
        const auto dump = tmp / (std::string(c.dtype) + "-logits.safetensors");
        const auto r
            = ladimo::test::runCommand("/usr/bin/python3 " + script + " " + o.out.string() + " --tokens "
                                           + joinIds(tokens[0]) + " --seq-len 48 --dump-logits " + dump.string(),
                                       true);
        ASSERT_EQ(r.status, 0) << r.out;
        const auto py = SafetensorsFile::open(dump)->tensor("logits").clone();
        const auto expected = c.type == torch::kFloat32
            ? moeLogits(*f.model, f.layers, f.rules, tokens)[0]
            : moeLogits(roundedModel(*f.model, c.type), roundedLayers(f.layers, c.type), f.rules, tokens)[0];
        ASSERT_EQ(py.sizes(), expected.sizes());
        const double diff = maxDiff(py, expected);
        const double agree = (py.argmax(-1) == expected.argmax(-1)).to(torch::kFloat32).mean().item<double>();
        std::cout << "[measured] Python reader " << c.dtype << ": max |logit diff| " << diff << ", argmax agreement "
                  << agree << " (logit scale " << expected.abs().max().item<double>() << ")\n";
        EXPECT_LT(diff, c.tolerance);
        EXPECT_EQ(agree, 1.0);
        // And the C++ loader of the same directory agrees with both.
        EXPECT_LT(maxDiff(loadedLogits(loadHfMixtral(o.out), tokens)[0], expected), 1e-5);
    }
}

TEST(ExportCli, ExportEvalGenerateAndImportRoundTrip)
{
    TempDir tmp;
    auto f = demoFixture();
    const int L = static_cast<int>(f.layers.size());
    const std::string project = (tmp / "p.ladimo").string();
    const PolicyRules mixed = applyEdits(f.rules, "0:p0.8,2:4", 7);
    {
        auto p = Project::create(project);
        SourceModel sm;
        sm.path = fs::absolute(f.modelDir).lexically_normal().string();
        sm.config = readJson(f.modelDir / "config.json");
        sm.weightsSha256 = sha256File(f.modelDir / "model.safetensors");
        const int64_t modelId = p.addModel(sm);
        ConversionRun run;
        run.modelId = modelId;
        run.layers = L;
        run.experts = 7;
        run.expertSize = 768 / 7;
        run.partition = "contiguous";
        run.gating = "renorm";
        run.trainTopK = 2;
        run.extra = {{"experts", 7}, {"partition", "contiguous"}, {"gating", "renorm"}, {"train_top_k", 2}};
        const int64_t runId = p.startRun(run);
        for (int l = 0; l < L; ++l) {
            const std::string rel = Project::layerWeightsPath(runId, l);
            saveMoeLayer(p.prepareFile(rel), f.layers[static_cast<std::size_t>(l)]);
            LayerOutcome out;
            out.weightsPath = rel;
            p.finishLayer(runId, l, out, {});
        }
        p.setRunStatus(runId, RunStatus::Done);
        Policy pol;
        pol.name = "mixed";
        pol.runId = runId;
        pol.rules = rulesToJson(mixed);
        p.savePolicy(pol);
    }
    // Token data: 320 ids as .u32.
    torch::manual_seed(8);
    const auto ids = torch::randint(4096, {320}, torch::kInt32);
    {
        std::ofstream out(tmp / "tokens.u32", std::ios::binary);
        out.write(static_cast<const char*>(ids.data_ptr()), ids.numel() * 4);
    }
    const std::string data = " --data " + (tmp / "tokens.u32").string() + " --seq-len 64 --json";
    const std::string hf = (tmp / "hf").string();

    auto r = ladimo::test::runLadimo("export " + project + " --format hf-mixtral --out " + hf + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["exact"], true);
    EXPECT_EQ(j["experts_per_token"], 2);
    EXPECT_EQ(j["policy"], "train-k2");
    EXPECT_TRUE(fs::exists(tmp / "hf/tokenizer.model"));

    // eval of the directory = eval of the project's converted model.
    r = ladimo::test::runLadimo("eval " + project + data, true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto ours = nlohmann::json::parse(r.out);
    r = ladimo::test::runLadimo("eval " + hf + data, true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto theirs = nlohmann::json::parse(r.out);
    EXPECT_EQ(ours["tokens"], theirs["tokens"]);
    std::cout << "[measured] CLI eval NLL project " << ours["nll"] << ", export " << theirs["nll"] << "\n";
    EXPECT_NEAR(ours["nll"].get<double>(), theirs["nll"].get<double>(), 1e-6);
    EXPECT_NEAR(ours["activated_ffn_fraction"].get<double>(), theirs["activated_ffn_fraction"].get<double>(), 1e-12);

    // generate runs the directory with its experts: greedy ids as the core computes them.
    {
        GenerateOptions g;
        g.maxNew = 8;
        g.temperature = 0;
        const auto hooks = moeHooks(f.layers, f.rules);
        g.hooks = &hooks;
        const auto expected = generate(*f.model, {{1, 300, 17}}, g).front();
        std::string s;
        for (auto id : expected)
            s += (s.empty() ? "" : ",") + std::to_string(id);
        r = ladimo::test::runLadimo(
            "generate " + hf + " --prompt-ids 1,300,17 --max-new 8 --temperature 0 --ids --ignore-eos", true);
        ASSERT_EQ(r.status, 0) << r.out;
        EXPECT_EQ(r.out, s + "\n");
    }

    // GGUF through the CLI: the converted model as llama MoE, the dense one as plain llama; an
    // independent reader sees the expert counts, and the file is never overwritten.
    const fs::path gguf = tmp / "m.gguf";
    r = ladimo::test::runLadimo("export " + project + " --format gguf --out " + gguf.string() + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    {
        const auto j = nlohmann::json::parse(r.out);
        EXPECT_EQ(j["format"], "gguf");
        EXPECT_EQ(j["experts_per_token"], 2);
        const auto g = ladimo::test::GgufFile::load(gguf);
        EXPECT_EQ(g.at("llama.expert_count").integer(), 7);
        EXPECT_EQ(g.at("llama.expert_used_count").integer(), 2);
        EXPECT_NE(g.find("blk.0.ffn_gate_exps.weight"), nullptr);
    }
    r = ladimo::test::runLadimo("export " + project + " --format gguf --out " + gguf.string());
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find(gguf.string()), std::string::npos) << r.out;
    r = ladimo::test::runLadimo(
        "export " + project + " --format gguf-llama --dtype f16 --out " + (tmp / "d.gguf").string(), true);
    ASSERT_EQ(r.status, 0) << r.out;
    {
        const auto g = ladimo::test::GgufFile::load(tmp / "d.gguf");
        EXPECT_FALSE(g.has("llama.expert_count"));
        EXPECT_NE(g.find("blk.0.ffn_gate.weight"), nullptr);
    }
    r = ladimo::test::runLadimo("export " + project + " --format gguf --dtype bf16 --out " + (tmp / "b.gguf").string());
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("bf16"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(tmp / "b.gguf"));

    // Refusals: an existing export is never overwritten; a non-Mixtral policy needs --top-k.
    r = ladimo::test::runLadimo("export " + project + " --out " + hf);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("not empty"), std::string::npos) << r.out;
    const std::string hf2 = (tmp / "hf2").string();
    r = ladimo::test::runLadimo("export " + project + " --policy mixed --out " + hf2);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("--top-k"), std::string::npos) << r.out;
    EXPECT_FALSE(fs::exists(hf2));
    r = ladimo::test::runLadimo("export " + project + " --policy mixed --top-k 2 --dtype bf16 --shard-size 3MB --out "
                                + hf2);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("NOT exact"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("layer 0 used top-p 0.80; Mixtral uses k=2 everywhere"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("layer 2 used top-k 4"), std::string::npos) << r.out;
    EXPECT_TRUE(fs::exists(tmp / "hf2/model.safetensors.index.json"));

    r = ladimo::test::runLadimo("project show " + project + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto shown = nlohmann::json::parse(r.out);
    ASSERT_EQ(shown["exports"].size(), 4u) << shown.dump(2);
    EXPECT_EQ(shown["exports"][0]["format"], "hf-mixtral");

    // import: a finished run with the exported experts, and the policy under its name.
    const std::string q = (tmp / "q.ladimo").string();
    r = ladimo::test::runLadimo("import " + hf + " --project " + q);
    ASSERT_EQ(r.status, 0) << r.out;
    r = ladimo::test::runLadimo("import " + hf2 + " --project " + q);
    ASSERT_EQ(r.status, 0) << r.out;
    {
        auto p = Project::open(q, {Project::Access::ReadOnly, Project::Verify::Checksums});
        const auto runs = p.runs();
        ASSERT_EQ(runs.size(), 2u);
        EXPECT_EQ(p.model(runs[0].modelId).path, fs::absolute(f.modelDir).lexically_normal().string());
        EXPECT_EQ(runs[0].extra["train_top_k"], 2);
        for (int l = 0; l < L; ++l) {
            const auto layer = p.layer(runs[0].id, l);
            ASSERT_EQ(layer.status, LayerStatus::Done);
            const auto m = loadMoeLayer(p.absolutePath(layer.weightsPath), torch::kCPU, torch::kFloat32);
            const auto& o = f.layers[static_cast<std::size_t>(l)];
            EXPECT_EQ(m.sizes, o.sizes);
            EXPECT_EQ(m.gating, Gating::Renorm);
            EXPECT_TRUE(torch::equal(m.router, o.router) && torch::equal(m.gate, o.gate) && torch::equal(m.up, o.up)
                        && torch::equal(m.down, o.down))
                << "layer " << l;
        }
        std::map<std::string, Policy> policies;
        for (const auto& pol : p.policies())
            policies[pol.name] = pol;
        ASSERT_EQ(policies.size(), 2u);
        EXPECT_EQ(policies.at("train-k2").origin, PolicyOrigin::Imported);
        EXPECT_EQ(policies.at("train-k2").rules, rulesToJson(f.rules));
        EXPECT_EQ(policies.at("mixed").origin, PolicyOrigin::Imported);
        EXPECT_EQ(policies.at("mixed").runId, runs[1].id);
        EXPECT_EQ(policies.at("mixed").rules, rulesToJson(mixed)); // the top-p rule survives Mixtral's one k
    }
    // The imported project evaluates like the original (same experts, same k).
    r = ladimo::test::runLadimo("import " + hf + " --project " + (tmp / "r.ladimo").string(), true);
    ASSERT_EQ(r.status, 0) << r.out;
    r = ladimo::test::runLadimo("eval " + (tmp / "r.ladimo").string() + data, true);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NEAR(nlohmann::json::parse(r.out)["nll"].get<double>(), ours["nll"].get<double>(), 1e-9);
}

// Issue 9: a disk that fills up part-way through an export (simulated by the write hook every
// writer goes through) fails with an error naming the destination and saying the disk is full,
// leaves nothing at the destination or next to it, and the same export then succeeds.
TEST(ExportFaults, DiskFullMidWriteNamesTheDestinationAndLeavesNothing)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", {}};
    for (const bool gguf : {false, true}) {
        const std::string name = gguf ? "m.gguf" : "hf";
        ExportOptions o;
        o.shardBytes = gguf ? 0 : 20000;
        const auto run = [&](const fs::path& out) {
            o.out = out;
            ExportInput noTokenizer = in; // the fixture's stand-in tokenizer.json is no vocabulary for GGUF
            noTokenizer.modelDir.clear();
            return gguf ? exportGguf(noTokenizer, o) : exportHfMixtral(in, o);
        };
        fs::create_directories(tmp / "ref");
        const auto reference = run(tmp / "ref" / name);
        // Budgets that fail inside the first tensor bytes, and after the first shard is complete.
        for (const int64_t budget : {int64_t(3000), int64_t(30000)}) {
            const auto dir = tmp / ("exports-" + name + "-" + std::to_string(budget));
            fs::create_directories(dir);
            std::string msg;
            {
                DiskFullInjection full(budget);
                msg = errorOf([&] { run(dir / name); });
            }
            SCOPED_TRACE(name + ", budget " + std::to_string(budget) + ": " + msg);
            EXPECT_NE(msg.find("export to '" + (dir / name).string() + "' failed"), std::string::npos);
            EXPECT_NE(msg.find("disk full"), std::string::npos);
            EXPECT_TRUE(listing(dir).empty()) << "a half-written export or a temporary was left";
            const auto again = run(dir / name);
            EXPECT_EQ(again.sha256, reference.sha256);
            EXPECT_EQ(listing(dir), std::set<std::string>{name});
        }
    }
}

// Issue 9: a killed export leaves its hidden temporary (".NAME.tmp-PID-HEX", a folder for
// hf-mixtral, a file for gguf). The next export of that name removes those of dead processes,
// says so in its log, and touches nothing else.
TEST(ExportFaults, NextExportRemovesStaleTemporariesOfDeadExportsOnly)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", {}};
    const pid_t dead = ::fork(); // a process that is gone by the time we look
    if (dead == 0)
        ::_exit(0);
    ::waitpid(dead, nullptr, 0);
    const std::string d = std::to_string(dead), live = std::to_string(::getpid());
    const auto dir = tmp / "exports";
    fs::create_directories(dir);
    const std::vector<std::string> stale = {".hf.tmp-" + d + "-1a2b", ".m.gguf.tmp-" + d + "-ff"};
    const std::vector<std::string> keep = {".hf.tmp-" + live + "-1a2b",  // a live export
                                           ".hf.tmp-" + d + "-xyz",      // not hex
                                           ".hf.tmp-" + d + "-1a2b.bak", // more after the pattern
                                           "hf.tmp-" + d + "-1a2b",      // not hidden
                                           ".hf2.tmp-" + d + "-1a2b",    // another name
                                           ".hf.tmp--1a2b",
                                           ".hf.tmp-" + d + "-",
                                           "notes.txt"};
    fs::create_directories(dir / stale[0] / "sub");
    atomicWriteFile(dir / stale[0] / "sub/model.safetensors", std::string(100, 'x'));
    atomicWriteFile(dir / stale[1], std::string(100, 'x'));
    for (const auto& k : keep)
        atomicWriteFile(dir / k, std::string("keep"));
    std::vector<std::string> log;
    ExportOptions o;
    o.log = [&](const std::string& line) { log.push_back(line); };
    o.out = dir / "hf";
    exportHfMixtral(in, o);
    o.out = dir / "m.gguf";
    in.modelDir.clear(); // the fixture's stand-in tokenizer.json is no vocabulary for GGUF
    exportGguf(in, o);
    std::set<std::string> expected(keep.begin(), keep.end());
    expected.insert({"hf", "m.gguf"});
    EXPECT_EQ(listing(dir), expected);
    ASSERT_EQ(log.size(), 2u);
    for (std::size_t i = 0; i < 2; ++i) {
        EXPECT_NE(log[i].find((dir / stale[i]).string()), std::string::npos) << log[i];
        EXPECT_NE(log[i].find("killed"), std::string::npos) << log[i];
    }
}

// Issue 9: an export to import is untrusted: a policy name in it that would make a path (it ends
// up in file names) is refused with the file and key named.
TEST(ExportFaults, ImportedPolicyNameCannotNameAPath)
{
    TempDir tmp;
    auto f = tinyFixture(tmp / "dense");
    ExportInput in{f.modelDir, f.model.get(), &f.layers, f.rules, "uniform-3", {}};
    ExportOptions o;
    o.out = tmp / "hf";
    exportHfMixtral(in, o);
    EXPECT_EQ(loadHfMixtral(o.out).policyName, "uniform-3");
    auto config = readJson(o.out / "config.json");
    for (const std::string evil : {"../../etc/passwd", "a/b", "/abs", ".."}) {
        config["ladimo"]["policy"]["name"] = evil;
        atomicWriteFile(o.out / "config.json", config.dump());
        const auto msg = errorOf([&] { loadHfMixtral(o.out); });
        EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
        EXPECT_NE(msg.find("ladimo.policy"), std::string::npos) << msg;
        EXPECT_NE(msg.find("policy name '" + evil + "'"), std::string::npos) << msg;
    }
}
