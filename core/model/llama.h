// LlamaModel: a LLaMA-family decoder (grouped-query attention, rotate-half RoPE, RMSNorm, SwiGLU)
// as plain tensors plus a functional forward pass. The same code serves inference (with a KV
// cache), capture of FFN inputs/outputs for distillation, FFN replacement by MoE blocks, and
// training (weights may require grad). A model is not internally synchronised: one thread runs
// forward at a time, or each thread uses its own KvCache and read-only weights.
//
// Residency: a model's weights are either resident (every tensor in the compute dtype on the
// device, as `weights()` holds them) or streamed from the checkpoint: a layer is read (pread, in
// its stored dtype) and converted to the compute dtype on the device only while it runs, then
// freed; embeddings are read by the rows the tokens need and the head by vocabulary chunks, so
// memory is bounded by about one layer whatever the depth (issue 19). forwardLayerMajor() passes
// many batches through layer l before reading layer l+1, so each layer is read once per group.
// Streamed and resident models compute the same values bit for bit.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "model/config.h"

namespace ladimo::core {

struct LayerWeights {
    torch::Tensor inputNorm, q, k, v, o, qBias, kBias, vBias, oBias;
    torch::Tensor postNorm, gate, up, down; // gate/up/down undefined when MoE blocks replace the FFN
};

struct LlamaWeights {
    torch::Tensor embed;
    std::vector<LayerWeights> layers;
    torch::Tensor finalNorm;
    torch::Tensor lmHead; // undefined when tied to embed

    // Every tensor under its Hugging Face name, in checkpoint order (tied head omitted).
    std::vector<std::pair<std::string, torch::Tensor*>> named();
};

// Preallocated key/value cache for incremental decoding.
struct KvCache {
    std::vector<torch::Tensor> k, v; // per layer [B, Hkv, capacity, D]
    int64_t length = 0;
    int64_t capacity = 0;
};

// Hooks into the FFN of every layer. `x` is the FFN input (after post_attention_layernorm),
// [B, T, H]. `onFfn` sees x and the dense FFN output of x (stage-1 capture); `ffnOverride` may
// return the FFN output to use instead (an MoE block), or an undefined tensor for the dense FFN.
struct ForwardHooks {
    std::function<void(int layer, const torch::Tensor& x, const torch::Tensor& denseY)> onFfn;
    std::function<torch::Tensor(int layer, const torch::Tensor& x)> ffnOverride;
    int lastLayer = -1; // >= 0: stop after this layer and return its hidden state (no head)
    // Layer-major runs (forwardLayerMajor): after every batch has passed a layer; may throw
    // (Cancelled) to stop between layers.
    std::function<void(int layer)> onLayerDone;
};

// Where a loaded model's weights live: see the header comment.
enum class Residency {
    Auto, // resident when the weights in the compute dtype take at most kAutoResidentBytes and
          // half the memory budget; streamed otherwise
    Resident,
    Streamed,
};
const char* residencyName(Residency r);
Residency parseResidency(const std::string& text); // auto | resident | streamed; Error otherwise

struct LoadOptions {
    torch::Device device = torch::kCPU;
    torch::ScalarType dtype = torch::kFloat32;
    Residency residency = Residency::Auto;
    // Bytes a job may keep resident (weights, layer caches, activations); 0 = defaultMemoryBudget().
    std::uint64_t memoryBudget = 0;
};
// Auto residency keeps models up to this size resident (1 GiB in the compute dtype).
constexpr std::uint64_t kAutoResidentBytes = 1ull << 30;

// A weight under its Hugging Face name, produced when asked: writers go tensor by tensor and
// never hold the whole model. A streamed model reads it from the checkpoint in its stored dtype;
// a resident one hands out its tensor (compute dtype).
struct NamedWeight {
    std::string name;
    std::vector<int64_t> shape;
    std::function<torch::Tensor()> get;
};

class CheckpointFiles;

class LlamaModel {
public:
    LlamaModel(ModelConfig config, LlamaWeights weights);

    // Loads config.json + model.safetensors (or sharded with model.safetensors.index.json).
    // Every tensor is checked from the headers first; a streamed model reads no weight yet.
    static LlamaModel load(const std::filesystem::path& dir, const LoadOptions& options = {});
    // The same from open checkpoint files and a config; without `withFfn` the dense FFN tensors
    // are neither required nor loaded (a Mixtral export holds experts instead).
    static LlamaModel fromCheckpoint(ModelConfig config, std::shared_ptr<const CheckpointFiles> files,
                                     const LoadOptions& options, bool withFfn = true);
    // Random initialisation (normal(0, 0.02), unit norms) for pretraining and tests.
    static LlamaModel randomInit(const ModelConfig& config, uint64_t seed, const LoadOptions& options = {});

    const ModelConfig& config() const { return m_config; }
    // The resident weights; a streamed model holds only its final norm here (use layer(),
    // namedWeights()).
    LlamaWeights& weights() { return m_weights; }
    const LlamaWeights& weights() const { return m_weights; }
    torch::Device device() const { return m_device; }
    torch::ScalarType dtype() const { return m_dtype; }

    bool streamed() const { return m_stream != nullptr; }
    // One layer's weights in the compute dtype on the device: the resident ones, or read from the
    // checkpoint now (streamed; freed when the last holder lets go unless the layer cache keeps it).
    // Safe to call from several threads at once.
    std::shared_ptr<const LayerWeights> layer(int index) const;
    // Streamed models: start reading a layer in the background (the next layer while this one
    // runs); layer() then takes it. No-op when resident.
    void prefetch(int index) const;
    // Streamed models: keep layers resident once read, lowest first, while they take at most
    // `bytes` (token-major work such as generation reads every layer for every token). 0: none.
    void setLayerCache(std::uint64_t bytes) const;
    // The memory budget the model was loaded with (LoadOptions::memoryBudget, resolved).
    std::uint64_t memoryBudget() const { return m_budget; }
    // One layer's weights in the compute dtype (the largest layer), in bytes.
    std::uint64_t layerBytes() const;
    // Bytes of weights held now: everything when resident, the cached layers when streamed.
    std::uint64_t residentBytes() const;
    // Every weight under its Hugging Face name in checkpoint order (tied head omitted).
    std::vector<NamedWeight> namedWeights() const;

    // The embedding rows of token ids (any shape) -> [..., H] in the compute dtype.
    torch::Tensor embed(const torch::Tensor& ids) const;
    // Final norm + head: hidden [..., H] -> float32 logits [..., V].
    torch::Tensor logits(const torch::Tensor& h) const;
    // tokens: int64 [B, T]. Returns float32 logits [B, T, V] (or the hidden state after
    // hooks.lastLayer). With a cache, tokens continue the cached sequence.
    torch::Tensor forward(const torch::Tensor& tokens, KvCache* cache = nullptr,
                          const ForwardHooks* hooks = nullptr) const;

    // Runs several batches of token ids (each int64 [B, T], no cache) layer-major: every batch
    // passes layer l before layer l+1 is read, so a streamed model reads each layer once. Hooks are
    // called layer by layer, batch by batch in order. `onOutput(i, out)` receives batch i's output
    // (float32 logits, or the hidden state after hooks->lastLayer). Same values as forward() on
    // each batch; holds every batch's hidden state at once (the caller sizes the group).
    void forwardLayerMajor(const std::vector<torch::Tensor>& batches, const ForwardHooks* hooks,
                           const std::function<void(std::size_t, const torch::Tensor&)>& onOutput) const;

    KvCache makeCache(int64_t batch, int64_t capacity) const;

    // The dense SwiGLU FFN of a layer: down(silu(gate x) * up x).
    torch::Tensor ffn(int layer, const torch::Tensor& x) const;
    torch::Tensor ffn(const LayerWeights& weights, int layer, const torch::Tensor& x) const;
    torch::Tensor rmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;

    // Saves config.json + model.safetensors in Hugging Face layout, in `dtype`.
    void save(const std::filesystem::path& dir, torch::ScalarType dtype) const;

private:
    struct Stream;
    LlamaModel(ModelConfig config, std::shared_ptr<Stream> stream, torch::Tensor finalNorm, torch::Device device,
               torch::ScalarType dtype);
    torch::Tensor attention(const LayerWeights& l, int layer, const torch::Tensor& x, int64_t startPos,
                            KvCache* cache) const;
    // One decoder layer on hidden state h (attention, then the FFN or its hooks).
    torch::Tensor block(const LayerWeights& l, int layer, const torch::Tensor& h, int64_t startPos, KvCache* cache,
                        const ForwardHooks* hooks) const;
    std::pair<torch::Tensor, torch::Tensor> ropeTables(int64_t endPos) const;

    struct RopeCache;
    ModelConfig m_config;
    LlamaWeights m_weights;
    torch::Device m_device = torch::kCPU;
    torch::ScalarType m_dtype = torch::kFloat32;
    std::shared_ptr<Stream> m_stream; // null when resident
    std::uint64_t m_budget = 0;
    std::shared_ptr<RopeCache> m_rope; // cos/sin tables grown on demand, guarded by its mutex
};

// Keeps layers of a streamed model resident once read (LlamaModel::setLayerCache) for a scope,
// lowest first, in `bytes` (default: half the model's memory budget), then lets them go: for
// token-major work that reads every layer for every step (generation, timing). No-op when resident.
class LayerCacheScope {
public:
    explicit LayerCacheScope(const LlamaModel& model, std::uint64_t bytes = 0) : m_model(model)
    {
        m_model.setLayerCache(bytes ? bytes : m_model.memoryBudget() / 2);
    }
    ~LayerCacheScope() { m_model.setLayerCache(0); }
    LayerCacheScope(const LayerCacheScope&) = delete;
    LayerCacheScope& operator=(const LayerCacheScope&) = delete;

private:
    const LlamaModel& m_model;
};

// Counts elements of every weight tensor actually held (cross-check for ModelConfig counts).
int64_t countParameters(const LlamaWeights& w);

} // namespace ladimo::core
