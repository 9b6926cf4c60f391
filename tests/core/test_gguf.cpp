// GGUF export (export/gguf.h): the file read back by an independent reader (tests/ggufreader.h)
// holds every source tensor exactly; policies llama.cpp cannot run are refused or reported;
// cancellation leaves nothing; malformed files give clear errors; and a real llama.cpp
// (@fugood/llama.node, installed by tools/llamanode.sh) continues a prompt greedily with the
// same token ids as the workbench, for the dense demo model and for its MoE conversion.
#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <random>

#include <nlohmann/json.hpp>

#include "common/fileutil.h"
#include "convert/experts.h"
#include "convert/convert.h"
#include "export/gguf.h"
#include "export/gguf_reader.h"
#include "ggufreader.h"
#include "model/generate.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "testutil.h"

using namespace ladimo::core;
using ladimo::test::GgufFile;
namespace fs = std::filesystem;

namespace {

const fs::path& demoDir()
{
    static const fs::path dir = ladimo::test::sourceDir() / "resources" / "demo";
    return dir;
}

const LlamaModel& demoModel()
{
    static const LlamaModel model = LlamaModel::load(demoDir(), LoadOptions{torch::kCPU, torch::kFloat32});
    return model;
}

// The demo model converted without distillation: every layer split into `experts` experts
// (co-activation partition on self-sampled calibration tokens), renormalised softmax gating,
// router fitted to the experts' output norms. With `shared`, layer l keeps shared + l always-on
// neurons (unequal widths, so the exporters' padding is exercised).
std::vector<MoeLayer> convertDemo(int64_t experts, Gating gating = Gating::Renorm, int64_t shared = 0)
{
    torch::manual_seed(0);
    const auto& model = demoModel();
    SelfSampleOptions so;
    so.tokens = 2048;
    so.seqLen = 128;
    so.batch = 16;
    so.seed = 0;
    const auto stream = selfSample(model, so);
    std::vector<torch::Tensor> xs, ys;
    captureFfn(model, stream, 128, &xs, &ys);
    std::vector<MoeLayer> layers;
    for (int64_t l = 0; l < model.config().numLayers; ++l) {
        const auto& w = model.weights().layers[static_cast<std::size_t>(l)];
        const DenseFfn ffn{w.gate, w.up, w.down};
        const auto& x = xs[static_cast<std::size_t>(l)];
        auto layer = buildMoeLayer(
            ffn, partitionNeurons(ffn, x, experts, Partition::Coactivation, 0, shared > 0 ? shared + l : 0), experts,
            gating);
        DistillOptions o;
        o.routerEpochs = 10;
        o.batch = 256;
        fitRouter(layer, x, o);
        layers.push_back(std::move(layer));
    }
    return layers;
}

const std::vector<MoeLayer>& demoMoe8()
{
    static const std::vector<MoeLayer> layers = convertDemo(8);
    return layers;
}

// For llama.cpp's qwen2moe: plain gating (what it computes) and 40..43 always-on neurons.
const std::vector<MoeLayer>& demoQwen()
{
    static const std::vector<MoeLayer> layers = convertDemo(8, Gating::Plain, 40);
    return layers;
}

ExportInput denseInput()
{
    ExportInput in;
    in.modelDir = demoDir();
    in.model = &demoModel();
    return in;
}

ExportInput moeInput(const std::vector<MoeLayer>& layers, const PolicyRules& rules, const std::string& name)
{
    ExportInput in = denseInput();
    in.layers = &layers;
    in.rules = rules;
    in.policyName = name;
    return in;
}

// Undoes llama.cpp's interleaved RoPE row order (independently of the exporter's permutation):
// per head, rows (0, D/2, 1, D/2 + 1, ...) back to (0, 1, ..., D/2, D/2 + 1, ...).
torch::Tensor unpermute(const torch::Tensor& w, int64_t heads)
{
    const int64_t d = w.size(0) / heads;
    auto r = w.reshape({heads, d / 2, 2, -1}).transpose(1, 2).reshape(w.sizes());
    return r;
}

void expectSame(const GgufFile& g, const std::string& name, const torch::Tensor& expected, bool f16)
{
    SCOPED_TRACE(name);
    const auto* info = g.find(name);
    ASSERT_NE(info, nullptr) << "tensor missing";
    const auto got = g.tensor(name);
    ASSERT_EQ(got.sizes(), expected.sizes());
    const auto want = f16 ? expected.to(torch::kFloat16).to(torch::kFloat32) : expected.to(torch::kFloat32);
    EXPECT_TRUE(torch::equal(got, want)) << "max diff " << (got - want).abs().max().item<double>();
}

// Checks metadata and every tensor of an export against the model (and MoE layers).
void checkExport(const GgufFile& g, const LlamaModel& model, const std::vector<MoeLayer>* moe, int64_t k, bool f16)
{
    const auto& c = model.config();
    const auto& w = model.weights();
    EXPECT_EQ(g.version(), 3u);
    EXPECT_EQ(g.alignment(), 32u);
    EXPECT_EQ(g.at("general.architecture").string(), "llama");
    EXPECT_EQ(g.at("general.file_type").integer(), f16 ? 1 : 0);
    EXPECT_EQ(g.at("llama.context_length").integer(), c.maxPositions);
    EXPECT_EQ(g.at("llama.embedding_length").integer(), c.hiddenSize);
    EXPECT_EQ(g.at("llama.block_count").integer(), c.numLayers);
    EXPECT_EQ(g.at("llama.attention.head_count").integer(), c.numHeads);
    EXPECT_EQ(g.at("llama.attention.head_count_kv").integer(), c.numKvHeads);
    EXPECT_EQ(g.at("llama.rope.dimension_count").integer(), c.headDim);
    EXPECT_FLOAT_EQ(static_cast<float>(g.at("llama.rope.freq_base").number()), static_cast<float>(c.ropeTheta));
    EXPECT_FLOAT_EQ(static_cast<float>(g.at("llama.attention.layer_norm_rms_epsilon").number()),
                    static_cast<float>(c.rmsNormEps));
    EXPECT_EQ(g.at("llama.vocab_size").integer(), c.vocabSize);

    // The vocabulary, as the workbench's tokenizer has it.
    const auto tok = Tokenizer::loadForModel(demoDir());
    ASSERT_TRUE(tok);
    EXPECT_EQ(g.at("tokenizer.ggml.model").string(), "llama");
    const auto& tokens = g.at("tokenizer.ggml.tokens").strings;
    const auto& scores = g.at("tokenizer.ggml.scores").floats;
    const auto& types = g.at("tokenizer.ggml.token_type").ints;
    ASSERT_EQ(static_cast<int64_t>(tokens.size()), c.vocabSize);
    ASSERT_EQ(scores.size(), tokens.size());
    ASSERT_EQ(types.size(), tokens.size());
    for (int id = 0; id < tok->vocabSize(); ++id) {
        ASSERT_EQ(tokens[static_cast<std::size_t>(id)], tok->piece(id)) << "token " << id;
        ASSERT_EQ(static_cast<float>(scores[static_cast<std::size_t>(id)]), tok->score(id)) << "token " << id;
        ASSERT_EQ(types[static_cast<std::size_t>(id)], static_cast<int>(tok->tokenType(id))) << "token " << id;
    }
    EXPECT_EQ(g.at("tokenizer.ggml.bos_token_id").integer(), tok->bosId());
    EXPECT_EQ(g.at("tokenizer.ggml.eos_token_id").integer(), tok->eosId());
    EXPECT_EQ(g.at("tokenizer.ggml.add_bos_token").integer(), 1);

    std::size_t expectedTensors = 2 + (w.lmHead.defined() ? 1 : 0);
    expectSame(g, "token_embd.weight", w.embed, f16);
    expectSame(g, "output_norm.weight", w.finalNorm, false);
    EXPECT_EQ(g.find("output.weight") != nullptr, w.lmHead.defined()); // tied head: llama.cpp reuses token_embd
    for (int64_t l = 0; l < c.numLayers; ++l) {
        const auto& L = w.layers[static_cast<std::size_t>(l)];
        const std::string p = "blk." + std::to_string(l) + ".";
        expectSame(g, p + "attn_norm.weight", L.inputNorm, false);
        expectSame(g, p + "ffn_norm.weight", L.postNorm, false);
        EXPECT_EQ(g.find(p + "attn_norm.weight")->type, 0u) << "norms stay F32";
        expectSame(g, p + "attn_v.weight", L.v, f16);
        expectSame(g, p + "attn_output.weight", L.o, f16);
        // Q/K are stored in llama.cpp's interleaved RoPE order; undone here they equal the source.
        {
            SCOPED_TRACE(p + "attn_q/attn_k");
            const auto q = unpermute(g.tensor(p + "attn_q.weight"), c.numHeads);
            const auto k2 = unpermute(g.tensor(p + "attn_k.weight"), c.numKvHeads);
            const auto wantQ = f16 ? L.q.to(torch::kFloat16).to(torch::kFloat32) : L.q;
            const auto wantK = f16 ? L.k.to(torch::kFloat16).to(torch::kFloat32) : L.k;
            EXPECT_TRUE(torch::equal(q, wantQ));
            EXPECT_TRUE(torch::equal(k2, wantK));
            EXPECT_FALSE(torch::equal(g.tensor(p + "attn_q.weight"), wantQ)) << "Q rows were not permuted";
        }
        expectedTensors += 6; // attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm
        if (!moe) {
            expectSame(g, p + "ffn_gate.weight", L.gate, f16);
            expectSame(g, p + "ffn_up.weight", L.up, f16);
            expectSame(g, p + "ffn_down.weight", L.down, f16);
            EXPECT_EQ(g.find(p + "ffn_gate_exps.weight"), nullptr);
            expectedTensors += 3;
        } else {
            const auto& m = (*moe)[static_cast<std::size_t>(l)];
            const int64_t S = g.at("llama.feed_forward_length").integer();
            expectSame(g, p + "ffn_gate_inp.weight", m.router, false);
            // Experts stacked [N, S, H] / [N, H, S], each zero-padded to the file's expert size.
            const auto pad = S - m.gate.size(1);
            ASSERT_GE(pad, 0);
            expectSame(g, p + "ffn_gate_exps.weight", torch::constant_pad_nd(m.gate, {0, 0, 0, pad}), f16);
            expectSame(g, p + "ffn_up_exps.weight", torch::constant_pad_nd(m.up, {0, 0, 0, pad}), f16);
            expectSame(g, p + "ffn_down_exps.weight", torch::constant_pad_nd(m.down, {0, pad}), f16);
            EXPECT_EQ(g.find(p + "ffn_gate.weight"), nullptr);
            expectedTensors += 4;
        }
    }
    EXPECT_EQ(g.tensors().size(), expectedTensors);
    if (moe) {
        EXPECT_EQ(g.at("llama.expert_count").integer(), moe->front().numExperts());
        EXPECT_EQ(g.at("llama.expert_used_count").integer(), k);
        const auto doc = nlohmann::json::parse(g.at("ladimo.routing_policy").string());
        EXPECT_EQ(doc.at("gating"), gatingName(moe->front().gating));
    } else {
        EXPECT_EQ(g.at("llama.feed_forward_length").integer(), c.intermediateSize);
        EXPECT_FALSE(g.has("llama.expert_count"));
    }
}

std::vector<std::string> filesIn(const fs::path& dir)
{
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
        out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
}

// ---- llama.cpp through @fugood/llama.node -------------------------------------------------

fs::path llamaNodeDir()
{
    if (const char* env = std::getenv("LADIMO_LLAMANODE_DIR"))
        return env;
    return fs::path(LADIMO_BIN_DIR).parent_path() / "llamanode";
}

// Why the llama.cpp comparison cannot run here, or "" when it can.
std::string llamaNodeMissing()
{
    if (ladimo::test::runCommand("node --version").status != 0)
        return "Node.js is not installed (tools/deps.sh installs nodejs and npm)";
    if (!fs::exists(llamaNodeDir() / "node_modules" / "@fugood" / "llama.node" / "package.json"))
        return "@fugood/llama.node is not installed in " + llamaNodeDir().string()
            + " (run tools/llamanode.sh; it needs the npm registry once)";
    return {};
}

struct LlamaCppRun {
    std::string version;
    std::vector<int64_t> tokenized; // the prompt text as llama.cpp tokenizes it
    std::vector<int64_t> ids;       // every evaluated id: BOS + prompt + generated
    std::string text;
};

LlamaCppRun llamaCppGreedy(const fs::path& gguf, const std::string& prompt, int nPredict, const fs::path& scratch)
{
    const nlohmann::json req = {{"modules", llamaNodeDir().string()},
                                {"model", gguf.string()},
                                {"prompt", prompt},
                                {"n_predict", nPredict},
                                {"session", (scratch / "session.bin").string()}};
    std::ofstream(scratch / "request.json") << req.dump();
    const auto script = ladimo::test::sourceDir() / "tests" / "llamanode" / "greedy.js";
    const auto r
        = ladimo::test::runCommand("node '" + script.string() + "' '" + (scratch / "request.json").string() + "'",
                                   /*stdoutOnly=*/true);
    if (r.status != 0) {
        const auto err = ladimo::test::runCommand("node '" + script.string() + "' '"
                                                  + (scratch / "request.json").string() + "' 2>&1 | tail -20");
        throw Error("greedy.js failed (status " + std::to_string(r.status) + "): " + err.out);
    }
    nlohmann::json out; // the last JSON line (llama.cpp may log to stdout before it)
    for (std::size_t pos = 0; pos < r.out.size();) {
        const auto end = r.out.find('\n', pos);
        const auto line = r.out.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
        if (!line.empty() && line.front() == '{')
            out = nlohmann::json::parse(line);
        if (end == std::string::npos)
            break;
        pos = end + 1;
    }
    if (out.is_null())
        throw Error("greedy.js printed no JSON: " + r.out);
    LlamaCppRun run;
    run.version = out.at("version").get<std::string>();
    run.tokenized = out.at("tokenized").get<std::vector<int64_t>>();
    run.ids = out.at("ids").get<std::vector<int64_t>>();
    run.text = out.at("text").get<std::string>();
    return run;
}

std::string idList(const std::vector<int64_t>& ids, std::size_t from = 0)
{
    std::string s = "[";
    for (std::size_t i = from; i < ids.size(); ++i)
        s += (i > from ? "," : "") + std::to_string(ids[i]);
    return s + "]";
}

const char* kPrompt = "It is a truth universally acknowledged, that a single man in possession of a good fortune";
constexpr int kNewTokens = 32;

// Exports, runs llama.cpp and the workbench greedily on the same prompt, compares the ids;
// returns the workbench's ids (prompt + generated).
std::vector<int64_t> expectSameGreedy(const ExportInput& in, const ForwardHooks* hooks, const std::string& label,
                                      ExportReport (*write)(const ExportInput&, const ExportOptions&) = &exportGguf)
{
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "model.gguf";
    o.dtype = "f32";
    const auto report = write(in, o);
    EXPECT_TRUE(report.exact) << (report.notes.empty() ? "" : report.notes.front());

    const auto tok = Tokenizer::loadForModel(demoDir());
    std::vector<int64_t> prompt = {tok->bosId()};
    for (int id : tok->encode(kPrompt))
        prompt.push_back(id);
    GenerateOptions g;
    g.maxNew = kNewTokens;
    g.temperature = 0;
    g.stopId = tok->eosId();
    g.hooks = hooks;
    const auto ours = generate(demoModel(), {prompt}, g).front();

    // The session file llama.cpp saves lists the ids it evaluated; the last sampled token is never
    // evaluated, so ask for one more than compared.
    const auto theirs = llamaCppGreedy(o.out, kPrompt, kNewTokens + 1, tmp.path());
    std::cout << "[" << label << "] prompt " << idList(prompt) << "\n[" << label << "] llama.node " << theirs.version
              << " generated " << idList(theirs.ids, prompt.size()) << "\n[" << label
              << "] workbench generated         " << idList(ours, prompt.size()) << "\n[" << label
              << "] llama.cpp text: " << nlohmann::json(theirs.text).dump() << "\n";
    // The prompt: llama.cpp's tokenizer (from the embedded vocabulary) agrees with SentencePiece,
    // and it put BOS in front, as the workbench does.
    EXPECT_EQ(theirs.tokenized, std::vector<int64_t>(prompt.begin() + 1, prompt.end()));
    if (theirs.ids.size() < prompt.size()) {
        ADD_FAILURE() << "llama.cpp evaluated only " << idList(theirs.ids);
        return ours;
    }
    EXPECT_EQ(std::vector<int64_t>(theirs.ids.begin(), theirs.ids.begin() + static_cast<long>(prompt.size())), prompt)
        << "prompt as evaluated by llama.cpp";
    EXPECT_EQ(theirs.ids, ours) << "llama.cpp " << idList(theirs.ids, prompt.size()) << " vs workbench "
                                << idList(ours, prompt.size());
    EXPECT_EQ(theirs.ids.size(), prompt.size() + kNewTokens);
    return ours;
}

} // namespace

TEST(Gguf, DenseRoundTripsThroughAnIndependentReader)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "demo.gguf";
    std::vector<double> progress;
    o.progress = [&](const std::string&, double done, double total) { progress.push_back(done / total); };
    const auto report = exportGguf(denseInput(), o);
    EXPECT_TRUE(report.exact);
    ASSERT_EQ(report.files.size(), 1u);
    EXPECT_EQ(report.files.front(), o.out);
    EXPECT_EQ(report.bytes, static_cast<int64_t>(fs::file_size(o.out)));
    EXPECT_EQ(report.expertsPerToken, 0);
    const std::string manifest = "demo.gguf " + sha256File(o.out) + "\n";
    EXPECT_EQ(report.sha256, sha256Bytes(manifest.data(), manifest.size()));
    EXPECT_EQ(filesIn(tmp.path()), std::vector<std::string>{"demo.gguf"}) << "no temporary file left";
    ASSERT_FALSE(progress.empty());
    EXPECT_DOUBLE_EQ(progress.back(), 1.0);
    const auto g = GgufFile::load(o.out);
    checkExport(g, demoModel(), nullptr, 0, false);
}

TEST(Gguf, DenseF16RoundsMatricesKeepsNormsF32)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "demo-f16.gguf";
    o.dtype = "f16";
    const auto report = exportGguf(denseInput(), o);
    EXPECT_FALSE(report.notes.empty()) << "float16 rounding is reported";
    const auto g = GgufFile::load(o.out);
    EXPECT_EQ(g.find("token_embd.weight")->type, 1u);
    checkExport(g, demoModel(), nullptr, 0, true);

    o.dtype = "bf16";
    EXPECT_THROW(exportGguf(denseInput(), o), Error);
}

TEST(Gguf, MoeRoundTripsWithStackedExpertsAndRouter)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    const auto& layers = demoMoe8();
    ASSERT_EQ(layers.front().gate.size(1), 96); // 768 / 8, equal experts
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "moe.gguf";
    const auto report = exportGguf(moeInput(layers, uniformRules(4, RoutingRule::staticK(6)), "k6"), o);
    EXPECT_TRUE(report.exact) << (report.notes.empty() ? "" : report.notes.front());
    EXPECT_EQ(report.expertsPerToken, 6);
    const auto g = GgufFile::load(o.out);
    EXPECT_EQ(g.at("llama.feed_forward_length").integer(), 96);
    checkExport(g, demoModel(), &layers, 6, false);
}

// `ladimo eval` / `generate` read a GGUF export back with the core's reader: an F32 export gives
// the workbench's logits, dense and converted (policy, gating and experts restored).
TEST(Gguf, TheCoreReadsAnExportBackToTheSameLogits)
{
    LADIMO_REQUIRE_SPM();            // the demo / shared tokenizer.model
    const auto& layers = demoMoe8(); // converted (with autograd) before inference mode below
    ladimo::test::TempDir tmp;
    torch::InferenceMode guard;
    const auto tokens = torch::randint(demoModel().config().vocabSize, {2, 24}, torch::kInt64);
    ExportOptions o;
    o.out = tmp / "dense.gguf";
    exportGguf(denseInput(), o);
    ASSERT_TRUE(isGgufFile(o.out));
    EXPECT_FALSE(isGgufFile(demoDir() / "config.json"));
    const auto dense = loadGguf(o.out);
    EXPECT_TRUE(dense.layers.empty());
    EXPECT_TRUE(torch::allclose(dense.model.forward(tokens), demoModel().forward(tokens), 1e-5, 1e-5));

    const auto rules = uniformRules(4, RoutingRule::staticK(6));
    o.out = tmp / "moe.gguf";
    exportGguf(moeInput(layers, rules, "k6"), o);
    const auto moe = loadGguf(o.out);
    ASSERT_EQ(moe.layers.size(), layers.size());
    EXPECT_EQ(moe.expertsPerToken, 6);
    EXPECT_EQ(moe.gating, Gating::Renorm);
    EXPECT_EQ(moe.policyName, "k6");
    const auto theirs = moeHooks(moe.layers, moe.rules);
    const auto ours = moeHooks(layers, rules);
    EXPECT_TRUE(torch::allclose(moe.model.forward(tokens, nullptr, &theirs),
                                demoModel().forward(tokens, nullptr, &ours), 1e-5, 1e-5));

    // A truncated file is an Error naming it, before anything is allocated for its tensors.
    const auto bytes = readTextFile(o.out);
    atomicWriteFile(tmp / "cut.gguf", bytes.substr(0, bytes.size() / 2));
    try {
        (void)loadGguf(tmp / "cut.gguf");
        ADD_FAILURE() << "a truncated GGUF file loaded";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos) << e.what();
    }
}

TEST(Gguf, UnequalExpertsArePaddedExactly)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    // 768 neurons in 7 experts: sizes 110 and 109, stacked and zero-padded to 110; layer 3 has
    // experts of 100 that the file pads to 110 as well.
    const auto& model = demoModel();
    std::vector<MoeLayer> layers;
    for (int64_t l = 0; l < model.config().numLayers; ++l) {
        const auto& w = model.weights().layers[static_cast<std::size_t>(l)];
        DenseFfn ffn{w.gate, w.up, w.down};
        if (l == 3) // a layer of smaller experts (100 neurons), padded to the file's 110
            ffn = {w.gate.narrow(0, 0, 700), w.up.narrow(0, 0, 700), w.down.narrow(1, 0, 700)};
        auto m = buildMoeLayer(ffn, partitionNeurons(ffn, torch::Tensor(), 7, Partition::Contiguous, 0), 7,
                               Gating::Renorm);
        m.router = torch::randn({7, model.config().hiddenSize});
        layers.push_back(std::move(m));
    }
    ASSERT_NE(*std::min_element(layers[0].sizes.begin(), layers[0].sizes.end()),
              *std::max_element(layers[0].sizes.begin(), layers[0].sizes.end()));
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "moe7.gguf";
    const auto report = exportGguf(moeInput(layers, uniformRules(4, RoutingRule::staticK(3)), "k3"), o);
    EXPECT_TRUE(report.exact);
    const auto g = GgufFile::load(o.out);
    EXPECT_EQ(g.at("llama.feed_forward_length").integer(), 110);
    checkExport(g, model, &layers, 3, false);
    // The padding rows of a 109-neuron expert are zero.
    const auto gate = g.tensor("blk.0.ffn_gate_exps.weight");
    for (int64_t e = 0; e < 7; ++e)
        if (layers[0].sizes[static_cast<std::size_t>(e)] == 109)
            EXPECT_EQ(gate[e].narrow(0, 109, 1).abs().sum().item<double>(), 0.0);
    EXPECT_EQ(layers[3].gate.size(1), 100);
    EXPECT_EQ(g.tensor("blk.3.ffn_down_exps.weight").narrow(2, 100, 10).abs().sum().item<double>(), 0.0);
}

TEST(Gguf, PoliciesLlamaCppCannotRunAreRefusedOrReported)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    const auto& layers = demoMoe8();
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "p.gguf";

    // Per-layer k or top-p: llama.cpp has one k; refused unless the user picks it.
    auto mixed = uniformRules(4, RoutingRule::staticK(6));
    mixed[2] = RoutingRule::staticK(4);
    try {
        exportGguf(moeInput(layers, mixed, "mixed"), o);
        ADD_FAILURE() << "a per-layer policy was exported without expertsPerToken";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("experts per token"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(o.out));
    EXPECT_THROW(exportGguf(moeInput(layers, uniformRules(4, RoutingRule::topP(0.9)), "p90"), o), Error);

    o.expertsPerToken = 5;
    auto report = exportGguf(moeInput(layers, uniformRules(4, RoutingRule::topP(0.9)), "p90"), o);
    EXPECT_FALSE(report.exact);
    ASSERT_FALSE(report.notes.empty());
    EXPECT_NE(report.notes.front().find("top-5"), std::string::npos) << report.notes.front();
    EXPECT_EQ(GgufFile::load(o.out).at("llama.expert_used_count").integer(), 5);

    o.expertsPerToken = 9;
    EXPECT_THROW(exportGguf(moeInput(layers, uniformRules(4, RoutingRule::staticK(6)), "k6"), o), Error);

    // Hard gating (weights 1) is not llama.cpp's softmax-renormalised weighting.
    auto hard = layers;
    for (auto& m : hard)
        m.gating = Gating::Hard;
    o.expertsPerToken = 0;
    report = exportGguf(moeInput(hard, uniformRules(4, RoutingRule::staticK(6)), "k6"), o);
    EXPECT_FALSE(report.exact);
    ASSERT_FALSE(report.notes.empty());
    EXPECT_NE(report.notes.front().find("hard"), std::string::npos) << report.notes.front();

    // Not every layer converted.
    std::vector<MoeLayer> partial(layers.begin(), layers.begin() + 2);
    EXPECT_THROW(exportGguf(moeInput(partial, uniformRules(4, RoutingRule::staticK(6)), "k6"), o), Error);
}

TEST(Gguf, CancellationLeavesNothingAndKeepsTheOldFile)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    ladimo::test::TempDir tmp;
    const auto out = tmp / "demo.gguf";
    std::ofstream(out) << "previous export";
    CancelToken cancel;
    ExportOptions o;
    o.out = out;
    o.cancel = cancel;
    int calls = 0;
    o.progress = [&](const std::string&, double, double) {
        if (++calls == 5) // midway through the tensors
            cancel.cancel();
    };
    EXPECT_THROW(exportGguf(denseInput(), o), Cancelled);
    EXPECT_EQ(calls, 5);
    EXPECT_EQ(filesIn(tmp.path()), std::vector<std::string>{"demo.gguf"}) << "the temporary file was removed";
    EXPECT_EQ(ladimo::core::readTextFile(out), "previous export");

    // Cancelled before anything was written: no file at all.
    fs::remove(out);
    o.progress = {};
    EXPECT_THROW(exportGguf(denseInput(), o), Cancelled);
    EXPECT_TRUE(filesIn(tmp.path()).empty());

    // A folder that does not exist is an Error naming it.
    o.cancel = {};
    o.out = tmp / "missing" / "x.gguf";
    try {
        exportGguf(denseInput(), o);
        ADD_FAILURE() << "no error for a missing folder";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
    }
}

TEST(Gguf, MalformedFilesGiveClearErrors)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "demo.gguf";
    exportGguf(denseInput(), o);
    std::string good;
    {
        std::ifstream in(o.out, std::ios::binary);
        std::ostringstream ss;
        ss << in.rdbuf();
        good = ss.str();
    }
    const auto g = GgufFile::parse(good, "good");
    const uint64_t headerEnd = g.dataStart();
    auto expectError = [](const std::string& bytes, const std::string& what, const std::string& needle) {
        try {
            GgufFile::parse(bytes, "bad.gguf");
            ADD_FAILURE() << what << ": parsed without error";
        } catch (const Error& e) {
            const std::string msg = e.what();
            EXPECT_NE(msg.find("bad.gguf"), std::string::npos) << what << ": " << msg;
            EXPECT_NE(msg.find(needle), std::string::npos) << what << ": " << msg;
        }
    };
    auto patch64 = [&](std::size_t at, uint64_t v) {
        std::string b = good;
        std::memcpy(&b[at], &v, 8);
        return b;
    };
    expectError("", "empty", "magic");
    expectError("GGML" + good.substr(4), "wrong magic", "magic");
    {
        std::string b = good;
        b[4] = 7;
        expectError(b, "version 7", "version 7");
    }
    expectError(patch64(8, ~0ull), "huge tensor count", "tensor count");
    expectError(patch64(16, 1ull << 40), "huge metadata count", "metadata count");
    expectError(patch64(24, 1ull << 62), "huge key length", "key 0");
    // Truncated anywhere in the header, or in the data: an Error, never a crash.
    for (uint64_t cut : {uint64_t(10), uint64_t(30), headerEnd / 3, headerEnd / 2, headerEnd - 1, headerEnd + 100,
                         static_cast<uint64_t>(good.size()) - 1})
        EXPECT_THROW(GgufFile::parse(good.substr(0, cut), "bad.gguf"), Error) << "cut at " << cut;
    // Random corruption of header bytes: either parses or is an Error.
    std::mt19937 rng(0);
    int errors = 0;
    for (int trial = 0; trial < 300; ++trial) {
        std::string b = good.substr(0, headerEnd + 4096);
        for (int flips = 0; flips < 4; ++flips)
            b[std::uniform_int_distribution<std::size_t>(0, headerEnd - 1)(rng)] = static_cast<char>(rng());
        try {
            GgufFile::parse(b, "fuzz.gguf");
        } catch (const Error&) {
            ++errors;
        }
    }
    EXPECT_GT(errors, 0);
}

TEST(Gguf, LlamaCppDenseGreedyEqualsWorkbench)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    if (const auto why = llamaNodeMissing(); !why.empty())
        GTEST_SKIP() << "llama.cpp comparison skipped: " << why;
    const auto ours = expectSameGreedy(denseInput(), nullptr, "dense");

    // F16 matrices: logits move by float16 rounding, so only a loose check: llama.cpp's greedy
    // continuation of the F16 file follows the workbench's (float32) for at least 8 tokens.
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "demo-f16.gguf";
    o.dtype = "f16";
    exportGguf(denseInput(), o);
    const auto f16 = llamaCppGreedy(o.out, kPrompt, kNewTokens + 1, tmp.path());
    const std::size_t promptLen = ours.size() - kNewTokens;
    std::size_t agree = 0;
    while (promptLen + agree < std::min(ours.size(), f16.ids.size())
           && ours[promptLen + agree] == f16.ids[promptLen + agree])
        ++agree;
    std::cout << "[dense f16] llama.node generated " << idList(f16.ids, promptLen) << " (first " << agree
              << " agree with the workbench)\n";
    EXPECT_GE(agree, 8u);
}

TEST(Gguf, LlamaCppMoeGreedyEqualsWorkbench)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    if (const auto why = llamaNodeMissing(); !why.empty())
        GTEST_SKIP() << "llama.cpp comparison skipped: " << why;
    const auto& layers = demoMoe8();
    const auto rules6 = uniformRules(4, RoutingRule::staticK(6));
    const auto hooks6 = moeHooks(layers, rules6);
    // The MoE model is not the dense one (else the test would prove nothing about the experts).
    {
        torch::NoGradGuard ng;
        const auto tokens = torch::arange(1, 65, torch::kInt64).view({1, 64});
        const auto dense = demoModel().forward(tokens);
        const auto moe = demoModel().forward(tokens, nullptr, &hooks6);
        EXPECT_GT((dense - moe).abs().max().item<double>(), 1e-2);
    }
    const auto top6 = expectSameGreedy(moeInput(layers, rules6, "k6"), &hooks6, "moe top-6");
    // A second k: llama.cpp follows llama.expert_used_count, and the continuation depends on it.
    const auto rules2 = uniformRules(4, RoutingRule::staticK(2));
    const auto hooks2 = moeHooks(layers, rules2);
    const auto top2 = expectSameGreedy(moeInput(layers, rules2, "k2"), &hooks2, "moe top-2");
    EXPECT_NE(top2, top6);
}

// ---- qwen2moe: routed experts plus a shared expert ----------------------------------------

// The file holds llama.cpp's qwen2moe layout, and llama.cpp's qwen2moe block computed from the
// file's tensors (softmax over all experts, top-k not renormalised; shared expert weighed by
// silu(z)/z of its gate) equals the workbench's MoE block with plain gating.
TEST(Gguf, Qwen2MoeSharedExpertAndRoutedExpertsComputeTheWorkbenchBlock)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    const auto& layers = demoQwen();
    const auto& renormLayers = demoMoe8(); // converted (with autograd) before the no-grad block below
    const auto& c = demoModel().config();
    const auto& w = demoModel().weights();
    ASSERT_EQ(layers[3].sharedNeurons(), 43);
    ladimo::test::TempDir tmp;
    ExportOptions o;
    o.out = tmp / "q.gguf";
    const auto report = exportGgufQwen2Moe(moeInput(layers, uniformRules(4, RoutingRule::staticK(3)), "k3"), o);
    EXPECT_TRUE(report.exact) << (report.notes.empty() ? "" : report.notes.front());
    const auto g = GgufFile::load(o.out);
    EXPECT_EQ(g.at("general.architecture").string(), "qwen2moe");
    EXPECT_EQ(g.at("qwen2moe.block_count").integer(), c.numLayers);
    EXPECT_EQ(g.at("qwen2moe.expert_count").integer(), 8);
    EXPECT_EQ(g.at("qwen2moe.expert_used_count").integer(), 3);
    const int64_t S = g.at("qwen2moe.expert_feed_forward_length").integer();
    EXPECT_EQ(S, layers.front().gate.size(1));
    EXPECT_EQ(g.at("qwen2moe.expert_shared_feed_forward_length").integer(), 43);
    EXPECT_EQ(g.find("llama.block_count"), nullptr);
    // Hugging Face's rotate-half RoPE is qwen2moe's (NEOX): Q/K rows as they are; no tied head.
    expectSame(g, "blk.0.attn_q.weight", w.layers[0].q, false);
    expectSame(g, "blk.0.attn_k.weight", w.layers[0].k, false);
    expectSame(g, "output.weight", w.lmHead.defined() ? w.lmHead : w.embed, false);

    torch::NoGradGuard ng;
    const auto x = torch::randn({64, c.hiddenSize});
    for (int64_t l = 0; l < c.numLayers; ++l) {
        SCOPED_TRACE("layer " + std::to_string(l));
        const std::string p = "blk." + std::to_string(l) + ".";
        const auto router = g.tensor(p + "ffn_gate_inp.weight");             // [N, H]
        const auto gate = g.tensor(p + "ffn_gate_exps.weight");              // [N, S, H]
        const auto up = g.tensor(p + "ffn_up_exps.weight");                  // [N, S, H]
        const auto down = g.tensor(p + "ffn_down_exps.weight");              // [N, H, S]
        const auto gateInpShexp = g.tensor(p + "ffn_gate_inp_shexp.weight"); // [H]
        const auto gateShexp = g.tensor(p + "ffn_gate_shexp.weight");        // [M, H]
        const auto upShexp = g.tensor(p + "ffn_up_shexp.weight");
        const auto downShexp = g.tensor(p + "ffn_down_shexp.weight"); // [H, M]
        ASSERT_EQ(gateShexp.sizes(), (std::vector<int64_t>{43, c.hiddenSize}));
        ASSERT_EQ(downShexp.sizes(), (std::vector<int64_t>{c.hiddenSize, 43}));
        const auto probs = torch::softmax(torch::matmul(x, router.t()), -1);
        const auto [topW, topI] = probs.topk(3, -1);
        auto routed = torch::zeros_like(x);
        for (int64_t t = 0; t < x.size(0); ++t)
            for (int64_t j = 0; j < 3; ++j) {
                const int64_t e = topI[t][j].item<int64_t>();
                const auto xt = x[t];
                const auto h = torch::silu(torch::matmul(gate[e], xt)) * torch::matmul(up[e], xt);
                routed[t] += topW[t][j] * torch::matmul(down[e], h);
            }
        const auto z = torch::matmul(x, gateInpShexp).unsqueeze(-1); // [T, 1]
        ASSERT_TRUE((z != 0).all().item<bool>());
        const auto sharedH = torch::silu(torch::matmul(x, gateShexp.t())) * torch::matmul(x, upShexp.t());
        const auto theirs = routed + torch::matmul(sharedH, downShexp.t()) * (torch::silu(z) / z);
        const auto& m = layers[static_cast<std::size_t>(l)];
        const auto ours = m.forward(x, RoutingRule::staticK(3));
        const double scale = ours.abs().max().item<double>();
        EXPECT_LT((theirs - ours).abs().max().item<double>(), 1e-5 * scale);
    }

    // What it cannot hold is refused or reported: the dense model, renorm gating.
    EXPECT_THROW(exportGgufQwen2Moe(denseInput(), o), Error);
    const auto renorm = exportGgufQwen2Moe(moeInput(renormLayers, uniformRules(4, RoutingRule::staticK(3)), "k3"), o);
    EXPECT_FALSE(renorm.exact);
    ASSERT_FALSE(renorm.notes.empty());
    EXPECT_NE(renorm.notes.front().find("renorm"), std::string::npos) << renorm.notes.front();
    // llama's GGUF layout refuses shared neurons and names this one.
    try {
        exportGguf(moeInput(layers, uniformRules(4, RoutingRule::staticK(3)), "k3"), o);
        ADD_FAILURE() << "shared neurons were written to the llama architecture";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("gguf-qwen2moe"), std::string::npos) << e.what();
    }
}

// A real llama.cpp runs the qwen2moe export of a conversion with shared neurons and continues the
// prompt with the workbench's greedy ids.
TEST(Gguf, LlamaCppQwen2MoeGreedyEqualsWorkbench)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    if (const auto why = llamaNodeMissing(); !why.empty())
        GTEST_SKIP() << "llama.cpp comparison skipped: " << why;
    const auto& layers = demoQwen();
    const auto rules = uniformRules(4, RoutingRule::staticK(3));
    const auto hooks = moeHooks(layers, rules);
    expectSameGreedy(moeInput(layers, rules, "k3"), &hooks, "qwen2moe top-3", &exportGgufQwen2Moe);
}
