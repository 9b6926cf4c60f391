#include "model/llama.h"

#include <array>
#include <cmath>
#include <future>
#include <mutex>
#include <optional>
#include <set>

#include <c10/core/Event.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/names.h"
#include "common/fileutil.h"
#include "common/memory.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

namespace ladimo::core {

namespace idx = torch::indexing;

struct LlamaModel::RopeCache {
    std::mutex mutex;
    torch::Tensor cos, sin; // guarded by mutex; [positions, D] in the model dtype
};

namespace {

// Every tensor slot of a layer (undefined ones included).
std::array<const torch::Tensor*, 13> tensorsOf(const LayerWeights& l)
{
    return {&l.inputNorm, &l.q,     &l.k,        &l.v,    &l.o,  &l.qBias, &l.kBias,
            &l.vBias,     &l.oBias, &l.postNorm, &l.gate, &l.up, &l.down};
}

} // namespace

// Streamed weights: the checkpoint files, the layers being read in the background and the layer
// cache. Every member after `mutex` is guarded by it.
struct LlamaModel::Stream {
    std::shared_ptr<const CheckpointFiles> files;
    ModelConfig config;
    torch::Device device = torch::kCPU;
    torch::ScalarType dtype = torch::kFloat32;
    bool withFfn = true;
    std::uint64_t layerBytes = 0;
    // Rows of the embedding / head read at once: about 64 MiB in the compute dtype.
    int64_t chunkRows = 0;

    // A layer read on a CUDA side stream comes with the event that marks its copies done.
    struct Loaded {
        std::shared_ptr<const LayerWeights> weights;
        std::shared_ptr<c10::Event> ready;
    };
    std::mutex mutex;
    std::map<int, std::shared_future<Loaded>> pending;
    std::map<int, std::shared_ptr<const LayerWeights>> cache;
    std::uint64_t cacheBudget = 0;
    std::uint64_t cached = 0;

    Stream() = default;
    Stream(const Stream&) = delete;
    Stream& operator=(const Stream&) = delete;
    // Background reads use this stream's files: let them finish before anything is destroyed.
    ~Stream()
    {
        for (auto& [index, f] : pending)
            f.wait();
    }

    // Reads a layer: each tensor with pread (into page-locked memory for CUDA), then converted on
    // the device. On CUDA the copies run on a side stream from the pool, so a layer read in the
    // background (prefetch) overlaps the layer computing on the current stream.
    Loaded read(int index) const
    {
        auto w = std::make_shared<LayerWeights>();
        const std::string p = "model.layers." + std::to_string(index) + ".";
        const bool biases = config.attentionBias || files->has(p + "self_attn.q_proj.bias")
            || files->has(p + "self_attn.o_proj.bias");
        Loaded out;
        c10::OptionalStreamGuard sideStream;
        std::optional<c10::Stream> side;
        if (device.is_cuda()) {
            side = c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStreamFromGlobalPool(device);
            sideStream.reset_stream(*side);
        }
        for (const auto& [name, slot] : layerTensorNames(index, biases, withFfn)) {
            if (!files->has(name))
                continue; // an optional bias (checked at load time)
            w.get()->*slot = convert(files->read(name, 0, -1, device.is_cuda()));
        }
        if (side) {
            out.ready = std::make_shared<c10::Event>(c10::DeviceType::CUDA);
            out.ready->record(*side);
        }
        out.weights = std::move(w);
        return out;
    }
    // Makes the current stream wait for a layer read on a side stream, and tells the caching
    // allocator that its tensors are used there.
    std::shared_ptr<const LayerWeights> take(const Loaded& l) const
    {
        if (l.ready) {
            const auto current = c10::impl::VirtualGuardImpl(c10::DeviceType::CUDA).getStream(device);
            l.ready->block(current);
            for (const auto* t : tensorsOf(*l.weights))
                if (t->defined())
                    t->record_stream(current);
        }
        return l.weights;
    }
    // A tensor as read (stored dtype, CPU) in the compute dtype on the device; the read buffer
    // itself when nothing changes.
    torch::Tensor convert(const torch::Tensor& t) const
    {
        return t.to(device, dtype, /*non_blocking=*/device.is_cuda());
    }
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

namespace {
constexpr NameTable<Residency, 3> kResidencyNames{
    {{Residency::Auto, "auto"}, {Residency::Resident, "resident"}, {Residency::Streamed, "streamed"}}};
} // namespace

const char* residencyName(Residency r) { return nameOf(kResidencyNames, r); }
Residency parseResidency(const std::string& text) { return parseNamed(kResidencyNames, text, "weights residency"); }

LlamaModel::LlamaModel(ModelConfig config, LlamaWeights weights)
    : m_config(std::move(config)), m_weights(std::move(weights)), m_rope(std::make_shared<RopeCache>())
{
    if (static_cast<int64_t>(m_weights.layers.size()) != m_config.numLayers)
        throw Error("model has " + std::to_string(m_weights.layers.size()) + " layers, config says "
                    + std::to_string(m_config.numLayers));
    if (m_weights.embed.defined()) {
        m_device = m_weights.embed.device();
        m_dtype = m_weights.embed.scalar_type();
    }
    m_budget = defaultMemoryBudget();
}

LlamaModel::LlamaModel(ModelConfig config, std::shared_ptr<Stream> stream, torch::Tensor finalNorm,
                       torch::Device device, torch::ScalarType dtype)
    : m_config(std::move(config)), m_device(device), m_dtype(dtype), m_stream(std::move(stream)),
      m_rope(std::make_shared<RopeCache>())
{
    m_weights.layers.resize(static_cast<std::size_t>(m_config.numLayers));
    m_weights.finalNorm = std::move(finalNorm);
}

LlamaModel LlamaModel::load(const std::filesystem::path& dir, const LoadOptions& options)
{
    ModelConfig config = ModelConfig::load(dir / "config.json");
    auto files = std::make_shared<const CheckpointFiles>(CheckpointFiles::open(dir));
    return fromCheckpoint(std::move(config), std::move(files), options);
}

LlamaModel LlamaModel::fromCheckpoint(ModelConfig config, std::shared_ptr<const CheckpointFiles> files,
                                      const LoadOptions& options, bool withFfn)
{
    const auto counts = config.parameterCounts();
    const int64_t ffn = withFfn ? 0 : counts.ffn;
    const std::uint64_t bytes
        = static_cast<std::uint64_t>(counts.total - ffn) * static_cast<std::uint64_t>(c10::elementSize(options.dtype));
    const std::uint64_t budget = options.memoryBudget ? options.memoryBudget : defaultMemoryBudget();
    const bool streamed = options.residency == Residency::Streamed
        || (options.residency == Residency::Auto && (bytes > kAutoResidentBytes || bytes > budget / 2));
    if (!streamed) {
        LlamaWeights weights = loadLlamaWeights(*files, config, options.device, options.dtype, withFfn);
        LlamaModel m(std::move(config), std::move(weights));
        m.m_budget = budget;
        return m;
    }
    checkLlamaTensors(*files, config, withFfn); // headers only: the same errors as a resident load
    auto s = std::make_shared<Stream>();
    s->files = files;
    s->config = config;
    s->device = options.device;
    s->dtype = options.dtype;
    s->withFfn = withFfn;
    const int64_t perLayer = counts.attentionPerLayer + (withFfn ? counts.ffnPerLayer : 0) + 2 * config.hiddenSize;
    s->layerBytes = static_cast<std::uint64_t>(perLayer) * static_cast<std::uint64_t>(c10::elementSize(options.dtype));
    s->chunkRows = std::max<int64_t>(
        1, (int64_t(64) << 20) / (config.hiddenSize * static_cast<int64_t>(c10::elementSize(options.dtype))));
    auto finalNorm = s->convert(files->read("model.norm.weight"));
    LlamaModel m(std::move(config), std::move(s), std::move(finalNorm), options.device, options.dtype);
    m.m_budget = budget;
    return m;
}

std::shared_ptr<const LayerWeights> LlamaModel::layer(int index) const
{
    if (index < 0 || index >= m_config.numLayers)
        throw Error("layer " + std::to_string(index) + " is outside 0.." + std::to_string(m_config.numLayers - 1));
    if (!m_stream) // an aliasing pointer that owns nothing: the model holds the layer
        return std::shared_ptr<const LayerWeights>(std::shared_ptr<void>(),
                                                   &m_weights.layers[static_cast<std::size_t>(index)]);
    std::shared_future<Stream::Loaded> inFlight;
    {
        std::lock_guard<std::mutex> lock(m_stream->mutex);
        auto c = m_stream->cache.find(index);
        if (c != m_stream->cache.end())
            return c->second;
        auto p = m_stream->pending.find(index);
        if (p != m_stream->pending.end()) {
            inFlight = p->second;
            m_stream->pending.erase(p);
        }
    }
    auto w = m_stream->take(inFlight.valid() ? inFlight.get() : m_stream->read(index));
    std::lock_guard<std::mutex> lock(m_stream->mutex);
    if (!m_stream->cache.count(index) && m_stream->cached + m_stream->layerBytes <= m_stream->cacheBudget) {
        m_stream->cache[index] = w;
        m_stream->cached += m_stream->layerBytes;
    }
    return w;
}

void LlamaModel::prefetch(int index) const
{
    if (!m_stream || index < 0 || index >= m_config.numLayers)
        return;
    std::lock_guard<std::mutex> lock(m_stream->mutex);
    if (m_stream->cache.count(index) || m_stream->pending.count(index))
        return;
    // The task holds the stream by plain pointer: a shared_ptr in a future that the stream itself
    // keeps would be a cycle (leaked when a pass stops before it takes the layer). ~Stream waits.
    const Stream* s = m_stream.get();
    m_stream->pending[index] = std::async(std::launch::async, [s, index] { return s->read(index); }).share();
}

void LlamaModel::setLayerCache(std::uint64_t bytes) const
{
    if (!m_stream)
        return;
    std::lock_guard<std::mutex> lock(m_stream->mutex);
    m_stream->cacheBudget = bytes;
    while (m_stream->cached > bytes && !m_stream->cache.empty()) { // drop the highest layers first
        m_stream->cache.erase(std::prev(m_stream->cache.end()));
        m_stream->cached -= m_stream->layerBytes;
    }
}

std::uint64_t LlamaModel::layerBytes() const
{
    if (m_stream)
        return m_stream->layerBytes;
    std::uint64_t most = 0;
    for (const auto& l : m_weights.layers) {
        std::uint64_t n = 0;
        for (const auto* t : tensorsOf(l))
            if (t->defined())
                n += static_cast<std::uint64_t>(t->numel()) * t->element_size();
        most = std::max(most, n);
    }
    return most;
}

std::uint64_t LlamaModel::residentBytes() const
{
    if (m_stream) {
        std::lock_guard<std::mutex> lock(m_stream->mutex);
        return m_stream->cached;
    }
    std::uint64_t n = 0;
    for (const auto& [name, t] : const_cast<LlamaWeights&>(m_weights).named())
        n += static_cast<std::uint64_t>(t->numel()) * t->element_size();
    return n;
}

std::vector<NamedWeight> LlamaModel::namedWeights() const
{
    std::vector<NamedWeight> out;
    if (!m_stream) {
        for (const auto& [name, t] : const_cast<LlamaWeights&>(m_weights).named()) {
            const torch::Tensor tensor = *t;
            out.push_back({name, tensor.sizes().vec(), [tensor] { return tensor; }});
        }
        return out;
    }
    std::shared_ptr<const CheckpointFiles> files = m_stream->files;
    auto add = [&](const std::string& name) {
        if (!files->has(name))
            return;
        out.push_back({name, files->info(name).shape, [files, name] { return files->read(name); }});
    };
    add("model.embed_tokens.weight");
    for (int i = 0; i < m_config.numLayers; ++i)
        for (const auto& [name, slot] : layerTensorNames(i, /*biases=*/true, m_stream->withFfn))
            add(name);
    add("model.norm.weight");
    if (!m_config.tieWordEmbeddings)
        add("lm_head.weight");
    return out;
}

torch::Tensor LlamaModel::embed(const torch::Tensor& ids) const
{
    auto idx = ids.to(m_device, torch::kInt64);
    if (!m_stream)
        return torch::embedding(m_weights.embed, idx);
    // Only the rows these tokens use, read chunk by chunk of the vocabulary.
    auto flat = idx.reshape({-1}).to(torch::kCPU);
    auto [unique, inverse, counts] = torch::_unique2(flat, /*sorted=*/true, /*return_inverse=*/true);
    (void)counts;
    const int64_t V = m_config.vocabSize, H = m_config.hiddenSize;
    const auto* u = unique.data_ptr<int64_t>();
    const int64_t n = unique.numel();
    if (n > 0 && (u[0] < 0 || u[n - 1] >= V))
        throw Error("token id " + std::to_string(u[0] < 0 ? u[0] : u[n - 1]) + " is outside the vocabulary [0, "
                    + std::to_string(V) + ")");
    auto rows = torch::empty({n, H}, torch::TensorOptions().dtype(m_dtype).device(m_device));
    for (int64_t i = 0; i < n;) {
        // The rows of unique ids u[i..j) that lie within one chunk of the table.
        const int64_t first = u[i];
        int64_t j = i + 1;
        while (j < n && u[j] - first < m_stream->chunkRows)
            ++j;
        const int64_t span = u[j - 1] - first + 1;
        auto chunk = m_stream->files->read("model.embed_tokens.weight", first, span);
        auto pick = (unique.narrow(0, i, j - i) - first);
        rows.narrow(0, i, j - i).copy_(m_stream->convert(chunk.index_select(0, pick)));
        i = j;
    }
    auto shape = idx.sizes().vec();
    shape.push_back(H);
    return rows.index_select(0, inverse.to(m_device)).view(shape);
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

torch::Tensor LlamaModel::ffn(int layer, const torch::Tensor& x) const { return ffn(*this->layer(layer), layer, x); }

torch::Tensor LlamaModel::ffn(const LayerWeights& l, int layer, const torch::Tensor& x) const
{
    if (!l.gate.defined())
        throw Error("layer " + std::to_string(layer)
                    + " has no dense FFN weights (a model loaded from a Mixtral export): run it with its MoE "
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
        // Normal tensors, even when first asked for under InferenceMode: a training pass (the
        // end-to-end stage) saves them for its backward pass, which inference tensors refuse.
        c10::InferenceMode normalTensors(false);
        torch::NoGradGuard noGrad;
        auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
        auto invFreq = 1.0
            / torch::pow(m_config.ropeTheta,
                         torch::arange(0, d, 2, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32)
                             / static_cast<double>(d));
        auto t = torch::arange(n, f32);
        auto freqs = torch::outer(t, invFreq);
        auto emb = torch::cat({freqs, freqs}, -1);
        m_rope->cos = emb.cos().to(m_device, m_dtype);
        m_rope->sin = emb.sin().to(m_device, m_dtype);
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

torch::Tensor LlamaModel::attention(const LayerWeights& l, int layer, const torch::Tensor& x, int64_t startPos,
                                    KvCache* cache) const
{
    const int64_t B = x.size(0), T = x.size(1);
    const int64_t H = m_config.numHeads, Hkv = m_config.numKvHeads, D = m_config.headDim;
    const int64_t rep = H / Hkv;

    auto q = linear(x, l.q, l.qBias).view({B, T, H, D}).transpose(1, 2);   // [B,H,T,D]
    auto k = linear(x, l.k, l.kBias).view({B, T, Hkv, D}).transpose(1, 2); // [B,Hkv,T,D]
    auto v = linear(x, l.v, l.vBias).view({B, T, Hkv, D}).transpose(1, 2);

    auto [cosAll, sinAll] = ropeTables(startPos + T);
    auto cos = cosAll.narrow(0, startPos, T);
    auto sin = sinAll.narrow(0, startPos, T);
    q = q * cos + rotateHalf(q) * sin;
    k = k * cos + rotateHalf(k) * sin;

    int64_t S = T;
    if (cache) {
        if (startPos + T > cache->capacity)
            throw Error("KV cache capacity " + std::to_string(cache->capacity) + " exceeded ("
                        + std::to_string(startPos + T) + " positions)");
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
    // The scale goes on the queries (T x D values) rather than the scores (T x S), and the mask is
    // applied in place: passes over the score tensor are what a long window's attention costs.
    auto qg = (q * (1.0 / std::sqrt(static_cast<double>(D)))).reshape({B, Hkv, rep * T, D});
    auto scores = torch::matmul(qg, k.transpose(-1, -2)).view({B, Hkv, rep, T, S}).to(torch::kFloat32);

    auto qpos = torch::arange(startPos, startPos + T, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
    auto kpos = torch::arange(0, S, torch::TensorOptions().dtype(torch::kInt64).device(x.device()));
    auto masked = kpos.unsqueeze(0) > qpos.unsqueeze(1); // [T,S]
    if (m_config.slidingWindow)
        masked = masked.logical_or(kpos.unsqueeze(0) <= qpos.unsqueeze(1) - *m_config.slidingWindow);
    auto probs = torch::softmax(scores.masked_fill_(masked, -INFINITY), -1).to(q.scalar_type());
    auto out = torch::matmul(probs.view({B, Hkv, rep * T, S}), v); // [B,Hkv,rep*T,D]
    out = out.view({B, H, T, D}).transpose(1, 2).reshape({B, T, H * D});
    return linear(out, l.o, l.oBias);
}

torch::Tensor LlamaModel::block(const LayerWeights& l, int i, const torch::Tensor& h0, int64_t startPos, KvCache* cache,
                                const ForwardHooks* hooks) const
{
    auto h = h0 + attention(l, i, rmsNorm(h0, l.inputNorm), startPos, cache);
    auto x = rmsNorm(h, l.postNorm);
    torch::Tensor y;
    if (hooks && hooks->ffnOverride)
        y = hooks->ffnOverride(i, x);
    if (hooks && hooks->onFfn) {
        auto dense = ffn(l, i, x);
        hooks->onFfn(i, x, dense);
        if (!y.defined())
            y = dense;
    }
    if (!y.defined())
        y = ffn(l, i, x);
    return h + y;
}

torch::Tensor LlamaModel::logits(const torch::Tensor& h0) const
{
    auto h = rmsNorm(h0, m_weights.finalNorm);
    if (!m_stream) {
        const auto& head = m_weights.lmHead.defined() ? m_weights.lmHead : m_weights.embed;
        return timesTransposed(h, head).to(torch::kFloat32);
    }
    // The head by chunks of the vocabulary, each read, used and freed.
    const std::string name = m_config.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight";
    const int64_t V = m_config.vocabSize;
    std::vector<torch::Tensor> parts;
    for (int64_t v = 0; v < V; v += m_stream->chunkRows) {
        const int64_t n = std::min(m_stream->chunkRows, V - v);
        parts.push_back(timesTransposed(h, m_stream->convert(m_stream->files->read(name, v, n))).to(torch::kFloat32));
    }
    return parts.size() == 1 ? parts.front() : torch::cat(parts, -1);
}

torch::Tensor LlamaModel::forward(const torch::Tensor& tokens, KvCache* cache, const ForwardHooks* hooks) const
{
    if (tokens.dim() != 2)
        throw Error("forward expects token ids of shape [batch, length]");
    const int64_t startPos = cache ? cache->length : 0;
    auto h = embed(tokens);
    const int last = hooks && hooks->lastLayer >= 0 ? hooks->lastLayer : static_cast<int>(m_config.numLayers) - 1;
    for (int i = 0; i <= last; ++i) {
        const auto l = layer(i);
        if (i < last)
            prefetch(i + 1);
        h = block(*l, i, h, startPos, cache, hooks);
    }
    if (cache)
        cache->length = startPos + tokens.size(1);
    if (hooks && hooks->lastLayer >= 0)
        return h;
    return logits(h);
}

void LlamaModel::forwardLayerMajor(const std::vector<torch::Tensor>& batches, const ForwardHooks* hooks,
                                   const std::function<void(std::size_t, const torch::Tensor&)>& onOutput) const
{
    std::vector<torch::Tensor> hs;
    hs.reserve(batches.size());
    for (const auto& tokens : batches) {
        if (tokens.dim() != 2)
            throw Error("forward expects token ids of shape [batch, length]");
        hs.push_back(embed(tokens));
    }
    const int last = hooks && hooks->lastLayer >= 0 ? hooks->lastLayer : static_cast<int>(m_config.numLayers) - 1;
    for (int i = 0; i <= last; ++i) {
        const auto l = layer(i);
        if (i < last)
            prefetch(i + 1);
        for (auto& h : hs)
            h = block(*l, i, h, 0, nullptr, hooks);
        if (hooks && hooks->onLayerDone)
            hooks->onLayerDone(i);
    }
    for (std::size_t b = 0; b < hs.size(); ++b) {
        const auto out = hooks && hooks->lastLayer >= 0 ? hs[b] : logits(hs[b]);
        hs[b] = torch::Tensor(); // freed as it is handed on
        onOutput(b, out);
    }
}

KvCache LlamaModel::makeCache(int64_t batch, int64_t capacity) const
{
    KvCache c;
    c.capacity = capacity;
    auto opt = torch::TensorOptions().dtype(m_dtype).device(m_device);
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
    for (const auto& w : namedWeights())
        tensors.emplace_back(w.name, w.get().detach().to(torch::kCPU, dtype));
    writeSafetensors(dir / "model.safetensors", tensors, {{"format", "pt"}});
    ModelConfig c = m_config;
    c.torchDtype = dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32";
    atomicWriteFile(dir / "config.json", c.toJson().dump(2) + "\n");
}

} // namespace ladimo::core
