#include "model/llama.h"

#include <cmath>
#include <mutex>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

namespace ladimo::core {

namespace idx = torch::indexing;

struct LlamaModel::RopeCache {
    std::mutex mutex;
    torch::Tensor cos, sin; // guarded by mutex; [positions, D] in the model dtype
};

std::vector<std::pair<std::string, torch::Tensor*>> LlamaWeights::named()
{
    std::vector<std::pair<std::string, torch::Tensor*>> out;
    out.emplace_back("model.embed_tokens.weight", &embed);
    for (std::size_t i = 0; i < layers.size(); ++i) {
        auto& l = layers[i];
        const std::string p = "model.layers." + std::to_string(i) + ".";
        out.emplace_back(p + "input_layernorm.weight", &l.inputNorm);
        out.emplace_back(p + "self_attn.q_proj.weight", &l.q);
        out.emplace_back(p + "self_attn.k_proj.weight", &l.k);
        out.emplace_back(p + "self_attn.v_proj.weight", &l.v);
        out.emplace_back(p + "self_attn.o_proj.weight", &l.o);
        if (l.qBias.defined()) {
            out.emplace_back(p + "self_attn.q_proj.bias", &l.qBias);
            out.emplace_back(p + "self_attn.k_proj.bias", &l.kBias);
            out.emplace_back(p + "self_attn.v_proj.bias", &l.vBias);
        }
        if (l.oBias.defined())
            out.emplace_back(p + "self_attn.o_proj.bias", &l.oBias);
        out.emplace_back(p + "post_attention_layernorm.weight", &l.postNorm);
        if (l.gate.defined()) { // absent in a model whose FFNs are MoE blocks (loaded from an export)
            out.emplace_back(p + "mlp.gate_proj.weight", &l.gate);
            out.emplace_back(p + "mlp.up_proj.weight", &l.up);
            out.emplace_back(p + "mlp.down_proj.weight", &l.down);
        }
    }
    out.emplace_back("model.norm.weight", &finalNorm);
    if (lmHead.defined())
        out.emplace_back("lm_head.weight", &lmHead);
    return out;
}

int64_t countParameters(const LlamaWeights& w)
{
    int64_t n = 0;
    for (const auto& [name, t] : const_cast<LlamaWeights&>(w).named())
        n += t->numel();
    return n;
}

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights)
    : m_config(std::move(config)), m_weights(std::move(weights)), m_rope(std::make_shared<RopeCache>())
{
    if (static_cast<int64_t>(m_weights.layers.size()) != m_config.numLayers)
        throw Error("model has " + std::to_string(m_weights.layers.size()) + " layers, config says " +
                    std::to_string(m_config.numLayers));
}

LlamaModel LlamaModel::load(const std::filesystem::path& dir, const LoadOptions& options)
{
    ModelConfig config = ModelConfig::load(dir / "config.json");
    LlamaWeights weights = loadLlamaWeights(dir, config, options.device, options.dtype);
    return LlamaModel(std::move(config), std::move(weights));
}

LlamaModel LlamaModel::randomInit(const ModelConfig& c, uint64_t seed, const LoadOptions& options)
{
    torch::manual_seed(seed);
    auto opt = torch::TensorOptions().dtype(options.dtype).device(options.device);
    auto normal = [&](std::vector<int64_t> shape, double stdv) { return torch::randn(shape, opt) * stdv; };
    const double std0 = 0.02;
    // GPT-2 style: residual projections scaled down by depth so the stream starts well-conditioned.
    const double stdResid = std0 / std::sqrt(2.0 * static_cast<double>(c.numLayers));
    LlamaWeights w;
    w.embed = normal({c.vocabSize, c.hiddenSize}, std0);
    for (int64_t i = 0; i < c.numLayers; ++i) {
        LayerWeights l;
        l.inputNorm = torch::ones({c.hiddenSize}, opt);
        l.q = normal({c.numHeads * c.headDim, c.hiddenSize}, std0);
        l.k = normal({c.numKvHeads * c.headDim, c.hiddenSize}, std0);
        l.v = normal({c.numKvHeads * c.headDim, c.hiddenSize}, std0);
        l.o = normal({c.hiddenSize, c.numHeads * c.headDim}, stdResid);
        l.postNorm = torch::ones({c.hiddenSize}, opt);
        l.gate = normal({c.intermediateSize, c.hiddenSize}, std0);
        l.up = normal({c.intermediateSize, c.hiddenSize}, std0);
        l.down = normal({c.hiddenSize, c.intermediateSize}, stdResid);
        w.layers.push_back(std::move(l));
    }
    w.finalNorm = torch::ones({c.hiddenSize}, opt);
    if (!c.tieWordEmbeddings)
        w.lmHead = normal({c.vocabSize, c.hiddenSize}, std0);
    return LlamaModel(c, std::move(w));
}

torch::Tensor LlamaModel::rmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const
{
    // As Hugging Face: normalise in float32, cast back, then scale.
    auto xf = x.to(torch::kFloat32);
    auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
    auto normed = (xf * torch::rsqrt(var + m_config.rmsNormEps)).to(x.scalar_type());
    return weight * normed;
}

namespace {

// x @ w^T. A single row on the CPU (decoding one token) is a matrix-vector product: OpenBLAS 0.3.21
// runs a one-row matrix product through its packing of the whole weight matrix first, 2-4x slower
// than its matrix-vector product on these shapes (measured: [1, 256] x [256, 192] 34 vs 9 us).
torch::Tensor timesTransposed(const torch::Tensor& x, const torch::Tensor& w)
{
    const auto type = x.scalar_type();
    if (x.is_cpu() && x.numel() == x.size(-1) && w.dim() == 2 && (type == torch::kFloat32 || type == torch::kFloat64)) {
        auto shape = x.sizes().vec();
        shape.back() = w.size(0);
        return at::mv(w, x.reshape({-1})).view(shape);
    }
    return torch::matmul(x, w.t());
}

} // namespace

torch::Tensor LlamaModel::ffn(int layer, const torch::Tensor& x) const
{
    const auto& l = m_weights.layers[static_cast<std::size_t>(layer)];
    if (!l.gate.defined())
        throw Error("layer " + std::to_string(layer) +
                    " has no dense FFN weights (a model loaded from a Mixtral export): run it with its MoE "
                    "blocks as FFN hooks (moeHooks)");
    auto g = timesTransposed(x, l.gate);
    auto u = timesTransposed(x, l.up);
    return timesTransposed(torch::silu(g) * u, l.down);
}

std::pair<torch::Tensor, torch::Tensor> LlamaModel::ropeTables(int64_t endPos) const
{
    std::lock_guard<std::mutex> lock(m_rope->mutex);
    if (!m_rope->cos.defined() || m_rope->cos.size(0) < endPos) {
        const int64_t n = std::max<int64_t>({endPos, std::min<int64_t>(m_config.maxPositions, 4096),
                                             m_rope->cos.defined() ? 2 * m_rope->cos.size(0) : 0});
        const int64_t d = m_config.headDim;
        auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
        auto invFreq = 1.0 / torch::pow(m_config.ropeTheta,
                                        torch::arange(0, d, 2, torch::TensorOptions().dtype(torch::kInt64))
                                                .to(torch::kFloat32) / static_cast<double>(d));
        auto t = torch::arange(n, f32);
        auto freqs = torch::outer(t, invFreq);
        auto emb = torch::cat({freqs, freqs}, -1);
        m_rope->cos = emb.cos().to(device(), dtype());
        m_rope->sin = emb.sin().to(device(), dtype());
    }
    return {m_rope->cos, m_rope->sin};
}

namespace {

torch::Tensor rotateHalf(const torch::Tensor& x)
{
    const int64_t half = x.size(-1) / 2;
    auto x1 = x.narrow(-1, 0, half);
    auto x2 = x.narrow(-1, half, half);
    return torch::cat({-x2, x1}, -1);
}

torch::Tensor linear(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b)
{
    auto y = timesTransposed(x, w);
    return b.defined() ? y + b : y;
}

} // namespace

torch::Tensor LlamaModel::attention(int layer, const torch::Tensor& x, int64_t startPos, KvCache* cache) const
{
    const auto& l = m_weights.layers[static_cast<std::size_t>(layer)];
    const int64_t B = x.size(0), T = x.size(1);
    const int64_t H = m_config.numHeads, Hkv = m_config.numKvHeads, D = m_config.headDim;
    const int64_t rep = H / Hkv;

    auto q = linear(x, l.q, l.qBias).view({B, T, H, D}).transpose(1, 2);     // [B,H,T,D]
    auto k = linear(x, l.k, l.kBias).view({B, T, Hkv, D}).transpose(1, 2);   // [B,Hkv,T,D]
    auto v = linear(x, l.v, l.vBias).view({B, T, Hkv, D}).transpose(1, 2);

    auto [cosAll, sinAll] = ropeTables(startPos + T);
    auto cos = cosAll.narrow(0, startPos, T);
    auto sin = sinAll.narrow(0, startPos, T);
    q = q * cos + rotateHalf(q) * sin;
    k = k * cos + rotateHalf(k) * sin;

    int64_t S = T;
    if (cache) {
        if (startPos + T > cache->capacity)
            throw Error("KV cache capacity " + std::to_string(cache->capacity) + " exceeded (" +
                        std::to_string(startPos + T) + " positions)");
        auto& ck = cache->k[static_cast<std::size_t>(layer)];
        auto& cv = cache->v[static_cast<std::size_t>(layer)];
        ck.narrow(2, startPos, T).copy_(k);
        cv.narrow(2, startPos, T).copy_(v);
        S = startPos + T;
        k = ck.narrow(2, 0, S);
        v = cv.narrow(2, 0, S);
    }

    // Grouped-query attention without materialising repeated K/V: fold the `rep` query heads
    // that share a key/value head into the query-length dimension.
    auto qg = q.reshape({B, Hkv, rep * T, D});
    auto scores = torch::matmul(qg, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(D)); // [B,Hkv,rep*T,S]
    scores = scores.view({B, Hkv, rep, T, S});

    auto qpos = torch::arange(startPos, startPos + T, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
    auto kpos = torch::arange(0, S, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
    auto masked = kpos.unsqueeze(0) > qpos.unsqueeze(1); // [T,S]
    if (m_config.slidingWindow)
        masked = masked.logical_or(kpos.unsqueeze(0) <= qpos.unsqueeze(1) - *m_config.slidingWindow);
    auto probs = torch::softmax(scores.to(torch::kFloat32).masked_fill(masked, -INFINITY), -1).to(q.scalar_type());
    auto out = torch::matmul(probs.view({B, Hkv, rep * T, S}), v); // [B,Hkv,rep*T,D]
    out = out.view({B, H, T, D}).transpose(1, 2).reshape({B, T, H * D});
    return linear(out, l.o, l.oBias);
}

torch::Tensor LlamaModel::forward(const torch::Tensor& tokens, KvCache* cache, const ForwardHooks* hooks) const
{
    if (tokens.dim() != 2)
        throw Error("forward expects token ids of shape [batch, length]");
    const int64_t startPos = cache ? cache->length : 0;
    auto ids = tokens.to(device(), torch::kInt64);
    auto h = torch::embedding(m_weights.embed, ids);
    const int last = hooks && hooks->lastLayer >= 0 ? hooks->lastLayer : static_cast<int>(m_config.numLayers) - 1;
    for (int i = 0; i <= last; ++i) {
        const auto& l = m_weights.layers[static_cast<std::size_t>(i)];
        h = h + attention(i, rmsNorm(h, l.inputNorm), startPos, cache);
        auto x = rmsNorm(h, l.postNorm);
        torch::Tensor y;
        if (hooks && hooks->ffnOverride)
            y = hooks->ffnOverride(i, x);
        if (hooks && hooks->onFfn) {
            auto dense = ffn(i, x);
            hooks->onFfn(i, x, dense);
            if (!y.defined())
                y = dense;
        }
        if (!y.defined())
            y = ffn(i, x);
        h = h + y;
    }
    if (cache)
        cache->length = startPos + tokens.size(1);
    if (hooks && hooks->lastLayer >= 0)
        return h;
    h = rmsNorm(h, m_weights.finalNorm);
    const auto& head = m_weights.lmHead.defined() ? m_weights.lmHead : m_weights.embed;
    return timesTransposed(h, head).to(torch::kFloat32);
}

KvCache LlamaModel::makeCache(int64_t batch, int64_t capacity) const
{
    KvCache c;
    c.capacity = capacity;
    auto opt = torch::TensorOptions().dtype(dtype()).device(device());
    for (int64_t i = 0; i < m_config.numLayers; ++i) {
        c.k.push_back(torch::zeros({batch, m_config.numKvHeads, capacity, m_config.headDim}, opt));
        c.v.push_back(torch::zeros({batch, m_config.numKvHeads, capacity, m_config.headDim}, opt));
    }
    return c;
}

void LlamaModel::save(const std::filesystem::path& dir, torch::ScalarType dtype) const
{
    std::filesystem::create_directories(dir);
    std::vector<std::pair<std::string, torch::Tensor>> tensors;
    for (const auto& [name, t] : const_cast<LlamaWeights&>(m_weights).named())
        tensors.emplace_back(name, t->detach().to(torch::kCPU, dtype));
    writeSafetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
    ModelConfig c = m_config;
    c.torchDtype = dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32";
    atomicWriteFile(dir / "config.json", c.toJson().dump(2) + "\n");
}

} // namespace ladimo::core
