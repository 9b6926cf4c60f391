// GGUF v3 writer for llama.cpp's "llama" architecture (dense or MoE) and its "qwen2moe"
// architecture (routed experts plus a shared expert). The layout follows
// ggml's gguf.cpp: header, key/value metadata, tensor infos, then tensor data, every tensor
// aligned to general.alignment. Tensors are converted one at a time while writing, so a large
// model is never held twice in memory.
#include "export/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <type_traits>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/tokenizer.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

constexpr uint32_t kGgufVersion = 3;
constexpr uint64_t kAlignment = 32;

// gguf_type
enum class KvType : uint32_t {
    Uint8 = 0,
    Int8 = 1,
    Uint16 = 2,
    Int16 = 3,
    Uint32 = 4,
    Int32 = 5,
    Float32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    Uint64 = 10,
    Int64 = 11,
    Float64 = 12
};

// ggml_type of the tensors we write
enum class TensorType : uint32_t { F32 = 0, F16 = 1 };

// llama_ftype: all F32 / mostly F16
constexpr uint32_t kFileTypeF32 = 0;
constexpr uint32_t kFileTypeF16 = 1;

// Little-endian serialisation into a byte string (x86-64 and aarch64 are little-endian; GGUF
// is little-endian unless a file says otherwise, which v3 big-endian files do by convention only).
class Bytes {
public:
    template <typename T> void put(T v)
    {
        static_assert(std::is_trivially_copyable_v<T>);
        char b[sizeof(T)];
        std::memcpy(b, &v, sizeof(T));
        m_data.append(b, sizeof(T));
    }
    void str(const std::string& s)
    {
        put<uint64_t>(s.size());
        m_data.append(s);
    }
    const std::string& data() const { return m_data; }

private:
    std::string m_data;
};

class Metadata {
public:
    void u32(const std::string& key, uint32_t v)
    {
        head(key, KvType::Uint32);
        m_b.put(v);
    }
    void i32(const std::string& key, int32_t v)
    {
        head(key, KvType::Int32);
        m_b.put(v);
    }
    void f32(const std::string& key, float v)
    {
        head(key, KvType::Float32);
        m_b.put(v);
    }
    void boolean(const std::string& key, bool v)
    {
        head(key, KvType::Bool);
        m_b.put<uint8_t>(v ? 1 : 0);
    }
    void str(const std::string& key, const std::string& v)
    {
        head(key, KvType::String);
        m_b.str(v);
    }
    void strings(const std::string& key, const std::vector<std::string>& v)
    {
        array(key, KvType::String, v.size());
        for (const auto& s : v)
            m_b.str(s);
    }
    void floats(const std::string& key, const std::vector<float>& v)
    {
        array(key, KvType::Float32, v.size());
        for (float f : v)
            m_b.put(f);
    }
    void ints(const std::string& key, const std::vector<int32_t>& v)
    {
        array(key, KvType::Int32, v.size());
        for (int32_t i : v)
            m_b.put(i);
    }
    uint64_t count() const { return m_count; }
    const std::string& data() const { return m_b.data(); }

private:
    void head(const std::string& key, KvType t)
    {
        if (!m_keys.insert(key).second)
            throw Error("gguf export: metadata key '" + key + "' written twice");
        m_b.str(key);
        m_b.put(static_cast<uint32_t>(t));
        ++m_count;
    }
    void array(const std::string& key, KvType elem, std::size_t n)
    {
        head(key, KvType::Array);
        m_b.put(static_cast<uint32_t>(elem));
        m_b.put<uint64_t>(n);
    }
    Bytes m_b;
    uint64_t m_count = 0;
    std::set<std::string> m_keys;
};

// One tensor to write: its GGUF name, shape in PyTorch order (GGUF ne is the reverse), type, and
// a producer called only when the data is written.
struct TensorEntry {
    std::string name;
    std::vector<int64_t> shape;
    TensorType type = TensorType::F32;
    std::function<torch::Tensor()> make;
    uint64_t offset = 0;

    uint64_t bytes() const
    {
        uint64_t n = 1;
        for (auto d : shape)
            n *= static_cast<uint64_t>(d);
        return n * (type == TensorType::F32 ? 4 : 2);
    }
};

uint64_t alignUp(uint64_t v) { return (v + kAlignment - 1) / kAlignment * kAlignment; }

// convert_hf_to_gguf.py LlamaModel.permute: Hugging Face stores Q/K rows per head as
// [first halves | second halves] (rotate-half RoPE); llama.cpp's llama architecture rotates
// adjacent pairs, so the rows of each head are interleaved: (0, D/2, 1, D/2+1, ...).
torch::Tensor permuteForRope(const torch::Tensor& w, int64_t heads)
{
    auto shape = w.sizes().vec();
    std::vector<int64_t> split = {heads, 2, shape[0] / heads / 2};
    split.insert(split.end(), shape.begin() + 1, shape.end());
    return w.reshape(split).transpose(1, 2).reshape(shape);
}

std::string humanBytes(uint64_t b)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(b) / 1e6);
    return buf;
}

struct Vocab {
    std::string model = "none"; // tokenizer.ggml.model
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<int32_t> types;
    int bos = -1, eos = -1, unk = -1;
    bool addSpacePrefix = true;
};

Vocab vocabFor(const fs::path& modelDir, const ModelConfig& cfg, ExportReport* report)
{
    Vocab v;
    std::unique_ptr<Tokenizer> tok;
    if (!modelDir.empty())
        tok = Tokenizer::loadForModel(modelDir);
    if (!tok) {
        report->notes.push_back("the model has no tokenizer: the GGUF holds no vocabulary (tokenizer.ggml.model "
                                "= \"none\"), llama.cpp accepts token ids only");
        return v;
    }
    if (tok->kind() == "bpe-byte-level")
        throw Error("gguf export: the tokenizer of '" + modelDir.string()
                    + "' is byte-level BPE; only SentencePiece-style vocabularies (tokenizer.model, or "
                      "tokenizer.json with byte fallback) can be embedded as llama.cpp's \"llama\" vocabulary");
    const int n = tok->vocabSize();
    if (n > cfg.vocabSize)
        throw Error("gguf export: the tokenizer of '" + modelDir.string() + "' has " + std::to_string(n)
                    + " tokens but the model's vocab_size is " + std::to_string(cfg.vocabSize));
    v.model = "llama";
    v.tokens.reserve(static_cast<std::size_t>(cfg.vocabSize));
    for (int id = 0; id < n; ++id) {
        v.tokens.push_back(tok->piece(id));
        v.scores.push_back(tok->score(id));
        const auto t = tok->tokenType(id);
        v.types.push_back(static_cast<int32_t>(t));
        if (t == Tokenizer::TokenType::Unknown && v.unk < 0)
            v.unk = id;
    }
    // Rows of the embedding beyond the tokenizer (padding to a round vocab_size), as
    // convert_hf_to_gguf.py names them.
    for (int64_t id = n; id < cfg.vocabSize; ++id) {
        v.tokens.push_back("[PAD" + std::to_string(id) + "]");
        v.scores.push_back(-1000.0f);
        v.types.push_back(static_cast<int32_t>(Tokenizer::TokenType::Unused));
    }
    v.bos = tok->bosId() >= 0 ? tok->bosId() : static_cast<int>(cfg.bosTokenId);
    v.eos = tok->eosId() >= 0 ? tok->eosId() : static_cast<int>(cfg.eosTokenId);
    // SentencePiece's add_dummy_prefix is not visible through the API; it shows in how a word at
    // the start of a text is encoded ("▁a" with the prefix, "a" without).
    const auto probe = tok->encode("a");
    v.addSpacePrefix = !probe.empty() && tok->piece(probe.front()).rfind("\xE2\x96\x81", 0) == 0;
    return v;
}

// Which llama.cpp architecture the file is for: "llama" (dense, or every expert routed) or
// "qwen2moe" (routed experts plus a shared expert that holds the always-on neurons).
enum class GgufArch { Llama, Qwen2Moe };

// Checks the converted layers and decides the k llama.cpp uses; fills exactness notes.
int64_t expertsUsed(const ExportInput& in, const ExportOptions& options, GgufArch arch, ExportReport* report)
{
    const bool qwen = arch == GgufArch::Qwen2Moe;
    const std::string archName = qwen ? "qwen2moe" : "llama";
    const auto& layers = *in.layers;
    const auto& cfg = in.model->config();
    if (static_cast<int64_t>(layers.size()) != cfg.numLayers)
        throw Error("gguf export: " + std::to_string(layers.size()) + " converted layers for a model of "
                    + std::to_string(cfg.numLayers) + " layers; llama.cpp needs every layer converted");
    const int64_t n = layers.front().router.defined() ? layers.front().numExperts() : 0;
    bool allMatch = true; // every layer uses the gating llama.cpp computes for this architecture
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& m = layers[l];
        if (!m.router.defined() || !m.gate.defined() || !m.up.defined() || !m.down.defined())
            throw Error("gguf export: layer " + std::to_string(l) + " has no MoE block; llama.cpp's " + archName
                        + " architecture needs every layer converted");
        if (m.numExperts() != n)
            throw Error("gguf export: layer " + std::to_string(l) + " has " + std::to_string(m.numExperts())
                        + " experts, layer 0 has " + std::to_string(n) + "; llama.cpp needs one expert count");
        if (m.router.size(1) != cfg.hiddenSize || m.gate.dim() != 3 || m.gate.size(2) != cfg.hiddenSize
            || m.up.sizes() != m.gate.sizes() || m.down.dim() != 3 || m.down.size(1) != cfg.hiddenSize
            || m.down.size(2) != m.gate.size(1) || m.gate.size(0) != n || m.down.size(0) != n)
            throw Error("gguf export: layer " + std::to_string(l)
                        + " MoE tensors do not have the shapes router [N, H], gate/up [N, S, H], down [N, H, S]");
        if (m.sharedNeurons() > 0 && !qwen)
            throw Error("gguf export: layer " + std::to_string(l) + " has " + std::to_string(m.sharedNeurons())
                        + " always-on (shared) neurons, which llama.cpp's llama architecture cannot hold (its "
                          "experts are all routed): export as gguf-qwen2moe or hf-qwen2-moe, or convert without "
                          "--shared-neurons");
        requireSharedNeuronShapes(m, cfg.hiddenSize, "gguf export: layer " + std::to_string(l));
        allMatch = allMatch && m.gating == (qwen ? Gating::Plain : Gating::Renorm);
    }
    if (!allMatch) {
        report->exact = false;
        report->notes.push_back(
            "the conversion uses " + std::string(gatingName(layers.front().gating)) + " gating; llama.cpp's " + archName
            + (qwen ? " weighs the chosen experts by their softmax probabilities over all experts, not renormalised "
                      "(plain gating)"
                    : " weighs the chosen experts by their softmax probabilities renormalised over the top-k "
                      "(renorm gating)")
            + ", so its outputs differ from the workbench's");
    }
    int k = 0;
    const bool uniform = isUniformStatic(in.rules, &k);
    if (!in.rules.empty() && static_cast<int64_t>(in.rules.size()) != cfg.numLayers)
        throw Error("gguf export: the policy has " + std::to_string(in.rules.size()) + " rules for "
                    + std::to_string(cfg.numLayers) + " layers");
    if (options.expertsPerToken == 0) {
        if (!uniform)
            throw Error("gguf export: policy '" + in.policyName
                        + "' is not one static top-k for all layers, which is all llama.cpp can run; choose the "
                          "number of experts per token to write (expertsPerToken / --experts-per-token)");
    } else {
        if (options.expertsPerToken < 0 || options.expertsPerToken > n)
            throw Error("gguf export: experts per token " + std::to_string(options.expertsPerToken) + " is outside 1.."
                        + std::to_string(n));
        if (!uniform || k != options.expertsPerToken) {
            report->exact = false;
            const std::string policy = in.rules.empty() ? std::string("no routing policy was given")
                                                        : "policy '" + in.policyName + "' "
                    + (uniform ? "uses top-" + std::to_string(k) + " in every layer"
                               : std::string("differs between layers or is token-adaptive (top-p)"));
            report->notes.push_back(policy + "; llama.cpp will use the top-" + std::to_string(options.expertsPerToken)
                                    + " experts in every layer");
        }
        k = options.expertsPerToken;
    }
    if (k < 1 || k > n)
        throw Error("gguf export: top-" + std::to_string(k) + " is outside 1.." + std::to_string(n));
    return k;
}

torch::Tensor toCpu(const torch::Tensor& t, TensorType type)
{
    return t.detach().to(torch::kCPU, type == TensorType::F32 ? torch::kFloat32 : torch::kFloat16).contiguous();
}

ExportReport exportGgufAs(const ExportInput& in, const ExportOptions& options, GgufArch arch)
{
    const bool qwen = arch == GgufArch::Qwen2Moe;
    const std::string a = qwen ? "qwen2moe" : "llama"; // general.architecture and the metadata keys' prefix
    if (!in.model)
        throw Error("gguf export: no model given");
    if (qwen && in.layers == nullptr)
        throw Error("gguf export: llama.cpp's qwen2moe architecture holds a converted model; export the dense "
                    "source model as gguf-llama");
    if (options.out.empty())
        throw Error("gguf export: no output file given");
    if (options.dtype != "f32" && options.dtype != "f16")
        throw Error("gguf export: dtype '" + options.dtype + "' is not supported (expected f32 or f16)");
    const auto& cfg = in.model->config();
    // Tensor by tensor: a streamed model reads each from its checkpoint as it is written.
    const auto named = in.model->namedWeights();
    std::map<std::string, const NamedWeight*> byName;
    for (const auto& nw : named)
        byName[nw.name] = &nw;
    const TensorType matType = options.dtype == "f16" ? TensorType::F16 : TensorType::F32;
    const bool moe = in.layers != nullptr;

    ExportReport report;
    if (cfg.slidingWindow && *cfg.slidingWindow < cfg.maxPositions) {
        report.exact = false;
        report.notes.push_back("the model attends within a sliding window of " + std::to_string(*cfg.slidingWindow)
                               + " tokens; llama.cpp's " + a
                               + " architecture attends to the whole context, so "
                                 "sequences longer than the window differ");
    }
    if (matType == TensorType::F16 && in.model->dtype() != torch::kFloat16)
        report.notes.push_back("matrices are rounded to float16 (norms stay float32); logits differ from the "
                               "workbench within float16 precision");

    const int64_t k = moe ? expertsUsed(in, options, arch, &report) : 0;
    const Vocab vocab = vocabFor(in.modelDir, cfg, &report);

    // Largest expert over all layers: llama.cpp has one expert size; zero padding is exact. The
    // same for the shared expert (qwen2moe), at least one neuron: zero rows contribute nothing.
    int64_t expertSize = 0, sharedSize = 1;
    if (moe)
        for (const auto& m : *in.layers) {
            expertSize = std::max(expertSize, m.gate.size(1));
            sharedSize = std::max(sharedSize, m.sharedNeurons());
        }

    Metadata md;
    md.str("general.architecture", a);
    std::string name
        = in.modelDir.empty() ? std::string("model") : fs::path(in.modelDir).lexically_normal().filename().string();
    if (name.empty())
        name = fs::path(in.modelDir).lexically_normal().parent_path().filename().string();
    if (moe && !in.policyName.empty())
        name += " (" + in.policyName + ")";
    md.str("general.name", name);
    md.u32("general.alignment", static_cast<uint32_t>(kAlignment));
    md.u32("general.file_type", matType == TensorType::F32 ? kFileTypeF32 : kFileTypeF16);
    md.u32(a + ".context_length", static_cast<uint32_t>(cfg.maxPositions));
    md.u32(a + ".embedding_length", static_cast<uint32_t>(cfg.hiddenSize));
    md.u32(a + ".block_count", static_cast<uint32_t>(cfg.numLayers));
    md.u32(a + ".feed_forward_length", static_cast<uint32_t>(moe && !qwen ? expertSize : cfg.intermediateSize));
    md.u32(a + ".attention.head_count", static_cast<uint32_t>(cfg.numHeads));
    md.u32(a + ".attention.head_count_kv", static_cast<uint32_t>(cfg.numKvHeads));
    md.u32(a + ".attention.key_length", static_cast<uint32_t>(cfg.headDim));
    md.u32(a + ".attention.value_length", static_cast<uint32_t>(cfg.headDim));
    md.f32(a + ".rope.freq_base", static_cast<float>(cfg.ropeTheta));
    md.u32(a + ".rope.dimension_count", static_cast<uint32_t>(cfg.headDim));
    md.f32(a + ".attention.layer_norm_rms_epsilon", static_cast<float>(cfg.rmsNormEps));
    md.u32(a + ".vocab_size", static_cast<uint32_t>(cfg.vocabSize));
    if (moe) {
        md.u32(a + ".expert_count", static_cast<uint32_t>(in.layers->front().numExperts()));
        md.u32(a + ".expert_used_count", static_cast<uint32_t>(k));
        if (qwen) {
            md.u32(a + ".expert_feed_forward_length", static_cast<uint32_t>(expertSize));
            md.u32(a + ".expert_shared_feed_forward_length", static_cast<uint32_t>(sharedSize));
        }
        // The full LaDiMo policy, so a later import can restore what llama.cpp cannot express.
        md.str(
            "ladimo.routing_policy",
            policyDocument(in.policyName, in.rules, in.layers->front().gating, in.layers->front().numExperts()).dump());
    }
    md.str("tokenizer.ggml.model", vocab.model);
    if (vocab.model == "llama") {
        md.strings("tokenizer.ggml.tokens", vocab.tokens);
        md.floats("tokenizer.ggml.scores", vocab.scores);
        md.ints("tokenizer.ggml.token_type", vocab.types);
        md.u32("tokenizer.ggml.bos_token_id", static_cast<uint32_t>(vocab.bos));
        md.u32("tokenizer.ggml.eos_token_id", static_cast<uint32_t>(vocab.eos));
        if (vocab.unk >= 0)
            md.u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(vocab.unk));
        md.boolean("tokenizer.ggml.add_bos_token", true);
        md.boolean("tokenizer.ggml.add_eos_token", false);
        md.boolean("tokenizer.ggml.add_space_prefix", vocab.addSpacePrefix);
    }

    // Tensors, in llama.cpp's names and order.
    std::vector<TensorEntry> tensors;
    auto add = [&](const std::string& tname, const torch::Tensor& t, TensorType type,
                   std::function<torch::Tensor(const torch::Tensor&)> transform = {}) {
        if (!t.defined())
            throw Error("gguf export: the model has no weight for tensor '" + tname + "'");
        tensors.push_back({tname, t.sizes().vec(), type,
                           [t, type, transform]() { return toCpu(transform ? transform(t) : t, type); }});
    };
    const int64_t heads = cfg.numHeads, kvHeads = cfg.numKvHeads;
    // qwen2moe rotates halves (NEOX RoPE), as Hugging Face does: its Q/K rows stay in place.
    std::function<torch::Tensor(const torch::Tensor&)> permQ, permK;
    if (!qwen) {
        permQ = [heads](const torch::Tensor& t) { return permuteForRope(t, heads); };
        permK = [kvHeads](const torch::Tensor& t) { return permuteForRope(t, kvHeads); };
    }

    // A weight of the dense model under its Hugging Face name, read when written.
    auto addDense = [&](const std::string& tname, const std::string& hfName, TensorType type,
                        std::function<torch::Tensor(const torch::Tensor&)> transform = {}) {
        auto it = byName.find(hfName);
        if (it == byName.end())
            throw Error("gguf export: the model has no weight for tensor '" + tname + "'");
        auto get = it->second->get;
        tensors.push_back({tname, it->second->shape, type, [get, type, transform]() {
                               const auto t = get();
                               return toCpu(transform ? transform(t) : t, type);
                           }});
    };
    const auto has = [&](const std::string& hfName) { return byName.count(hfName) > 0; };

    // qwen2moe's shared expert: its output is weighed by sigmoid(ffn_gate_inp_shexp . x), which
    // llama.cpp computes as silu(z) / z, so a gate of zeros would give 0/0. A gate of 2^-64 gives
    // z ~ 1e-19 and a weight of 0.5 to float rounding; twice the down projection makes it 1.
    auto addSharedExpert = [&](const std::string& p, const MoeLayer& m) {
        const int64_t ms = m.sharedNeurons(), H = cfg.hiddenSize;
        const auto shared = [&m, ms, H](torch::Tensor MoeLayer::*t) {
            return ms > 0
                ? m.*t
                : torch::zeros(t == &MoeLayer::sharedDown ? std::vector<int64_t>{H, 0} : std::vector<int64_t>{0, H},
                               m.gate.options());
        };
        const int64_t pad = sharedSize - ms;
        auto padRows = [pad](const torch::Tensor& t) { return torch::constant_pad_nd(t, {0, 0, 0, pad}); };
        auto padColsTwice = [pad](const torch::Tensor& t) { return torch::constant_pad_nd(2 * t, {0, pad}); };
        add(p + "ffn_gate_inp_shexp.weight", torch::full({H}, std::ldexp(1.0, -64), torch::kFloat32), TensorType::F32);
        add(p + "ffn_gate_shexp.weight", shared(&MoeLayer::sharedGate), matType, padRows);
        tensors.back().shape = {sharedSize, H};
        add(p + "ffn_up_shexp.weight", shared(&MoeLayer::sharedUp), matType, padRows);
        tensors.back().shape = {sharedSize, H};
        add(p + "ffn_down_shexp.weight", shared(&MoeLayer::sharedDown), matType, padColsTwice);
        tensors.back().shape = {H, sharedSize};
    };

    addDense("token_embd.weight", "model.embed_tokens.weight", matType);
    for (int64_t l = 0; l < cfg.numLayers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        const std::string h = "model.layers." + std::to_string(l) + ".";
        addDense(p + "attn_norm.weight", h + "input_layernorm.weight", TensorType::F32);
        addDense(p + "attn_q.weight", h + "self_attn.q_proj.weight", matType, permQ);
        addDense(p + "attn_k.weight", h + "self_attn.k_proj.weight", matType, permK);
        addDense(p + "attn_v.weight", h + "self_attn.v_proj.weight", matType);
        addDense(p + "attn_output.weight", h + "self_attn.o_proj.weight", matType);
        if (has(h + "self_attn.q_proj.bias")) {
            addDense(p + "attn_q.bias", h + "self_attn.q_proj.bias", TensorType::F32, permQ);
            addDense(p + "attn_k.bias", h + "self_attn.k_proj.bias", TensorType::F32, permK);
            addDense(p + "attn_v.bias", h + "self_attn.v_proj.bias", TensorType::F32);
        }
        if (has(h + "self_attn.o_proj.bias"))
            addDense(p + "attn_output.bias", h + "self_attn.o_proj.bias", TensorType::F32);
        addDense(p + "ffn_norm.weight", h + "post_attention_layernorm.weight", TensorType::F32);
        if (!moe) {
            addDense(p + "ffn_gate.weight", h + "mlp.gate_proj.weight", matType);
            addDense(p + "ffn_up.weight", h + "mlp.up_proj.weight", matType);
            addDense(p + "ffn_down.weight", h + "mlp.down_proj.weight", matType);
        } else {
            const auto& m = (*in.layers)[static_cast<std::size_t>(l)];
            const int64_t pad = expertSize - m.gate.size(1);
            auto padRows = [pad](const torch::Tensor& t) { // [N, S, H] -> [N, S', H]
                return pad == 0 ? t : torch::constant_pad_nd(t, {0, 0, 0, pad});
            };
            auto padCols = [pad](const torch::Tensor& t) { // [N, H, S] -> [N, H, S']
                return pad == 0 ? t : torch::constant_pad_nd(t, {0, pad});
            };
            // The router's logits feed a softmax in float32 in llama.cpp too; keep it exact.
            add(p + "ffn_gate_inp.weight", m.router, TensorType::F32);
            const std::vector<int64_t> gu = {m.numExperts(), expertSize, cfg.hiddenSize};
            add(p + "ffn_gate_exps.weight", m.gate, matType, padRows);
            tensors.back().shape = gu;
            add(p + "ffn_up_exps.weight", m.up, matType, padRows);
            tensors.back().shape = gu;
            add(p + "ffn_down_exps.weight", m.down, matType, padCols);
            tensors.back().shape = {m.numExperts(), cfg.hiddenSize, expertSize};
            if (qwen)
                addSharedExpert(p, m);
        }
    }
    addDense("output_norm.weight", "model.norm.weight", TensorType::F32);
    if (has("lm_head.weight"))
        addDense("output.weight", "lm_head.weight", matType);
    else if (qwen) // qwen2moe has no tied head: the embedding is the output matrix, exactly
        addDense("output.weight", "model.embed_tokens.weight", matType);

    // Header, metadata and tensor infos; then data at aligned offsets.
    Bytes head;
    head.put<uint32_t>(0x46554747u); // "GGUF"
    head.put<uint32_t>(kGgufVersion);
    head.put<uint64_t>(tensors.size());
    head.put<uint64_t>(md.count());
    Bytes infos;
    uint64_t offset = 0;
    for (auto& t : tensors) {
        t.offset = offset;
        infos.str(t.name);
        infos.put<uint32_t>(static_cast<uint32_t>(t.shape.size()));
        for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)
            infos.put<uint64_t>(static_cast<uint64_t>(*it));
        infos.put(static_cast<uint32_t>(t.type));
        infos.put<uint64_t>(t.offset);
        offset = alignUp(offset + t.bytes());
    }
    const uint64_t headerBytes = head.data().size() + md.data().size() + infos.data().size();
    const uint64_t dataStart = alignUp(headerBytes);
    const uint64_t total = dataStart + offset;

    const fs::path dir = options.out.parent_path().empty() ? fs::path(".") : options.out.parent_path();
    std::error_code ec;
    if (!fs::is_directory(dir, ec))
        throw Error("gguf export: folder '" + dir.string() + "' of '" + options.out.string() + "' does not exist");
    removeStaleExportTemporaries(options.out, options);
    const auto space = fs::space(dir, ec);
    if (!ec && space.available < total + (16u << 20))
        throw Error("gguf export: not enough free space in '" + dir.string() + "' for '"
                    + options.out.filename().string() + "': needs " + humanBytes(total) + ", "
                    + humanBytes(space.available) + " available");

    const auto cancelled = [&]() { return options.cancel.isCancelled(); };
    writeExport(options.out, [&] {
        atomicWriteFile(options.out, [&](const fs::path& tmp) {
            OutputFile out(tmp, options.out);
            auto padTo = [&](uint64_t target) {
                static const char zeros[kAlignment] = {};
                while (out.written() < target)
                    out.write(zeros, static_cast<std::size_t>(std::min<uint64_t>(kAlignment, target - out.written())));
            };
            out.write(head.data().data(), head.data().size());
            out.write(md.data().data(), md.data().size());
            out.write(infos.data().data(), infos.data().size());
            padTo(dataStart);
            for (std::size_t i = 0; i < tensors.size(); ++i) {
                if (cancelled())
                    throw Cancelled();
                const auto& t = tensors[i];
                padTo(dataStart + t.offset);
                const torch::Tensor data = t.make();
                if (static_cast<uint64_t>(data.nbytes()) != t.bytes())
                    throw Error("gguf export: tensor '" + t.name + "' has " + std::to_string(data.nbytes())
                                + " bytes, expected " + std::to_string(t.bytes()));
                out.write(data.data_ptr(), data.nbytes());
                if (options.progress)
                    options.progress("gguf", static_cast<double>(i + 1), static_cast<double>(tensors.size()));
            }
            padTo(total);
            out.close();
            if (cancelled())
                throw Cancelled();
            // The same manifest digest the other exporters report: "name sha256\n" of each file.
            const std::string manifest = options.out.filename().string() + " " + sha256File(tmp) + "\n";
            report.sha256 = sha256Bytes(manifest.data(), manifest.size());
        });
    });
    report.files.push_back(options.out);
    report.bytes = static_cast<int64_t>(total);
    report.expertsPerToken = static_cast<int>(k);
    return report;
}

} // namespace

ExportReport exportGguf(const ExportInput& in, const ExportOptions& options)
{
    return exportGgufAs(in, options, GgufArch::Llama);
}

ExportReport exportGgufQwen2Moe(const ExportInput& in, const ExportOptions& options)
{
    return exportGgufAs(in, options, GgufArch::Qwen2Moe);
}

} // namespace ladimo::core
