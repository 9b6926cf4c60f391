// LlamaModel: a LLaMA-family decoder (grouped-query attention, rotate-half RoPE, RMSNorm, SwiGLU)
// as plain tensors plus a functional forward pass. The same code serves inference (with a KV
// cache), capture of FFN inputs/outputs for distillation, FFN replacement by MoE blocks, and
// training (weights may require grad). A model is not internally synchronised: one thread runs
// forward at a time, or each thread uses its own KvCache and read-only weights.
#pragma once

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
};

struct LoadOptions {
    torch::Device device = torch::kCPU;
    torch::ScalarType dtype = torch::kFloat32;
};

class LlamaModel {
public:
    LlamaModel(ModelConfig config, LlamaWeights weights);

    // Loads config.json + model.safetensors (or sharded with model.safetensors.index.json).
    static LlamaModel load(const std::filesystem::path& dir, const LoadOptions& options = {});
    // Random initialisation (normal(0, 0.02), unit norms) for pretraining and tests.
    static LlamaModel randomInit(const ModelConfig& config, uint64_t seed,
                                 const LoadOptions& options = {});

    const ModelConfig& config() const { return m_config; }
    LlamaWeights& weights() { return m_weights; }
    const LlamaWeights& weights() const { return m_weights; }
    torch::Device device() const { return m_weights.embed.device(); }
    torch::ScalarType dtype() const { return m_weights.embed.scalar_type(); }

    // tokens: int64 [B, T]. Returns float32 logits [B, T, V] (or the hidden state after
    // hooks.lastLayer). With a cache, tokens continue the cached sequence.
    torch::Tensor forward(const torch::Tensor& tokens, KvCache* cache = nullptr,
                          const ForwardHooks* hooks = nullptr) const;

    KvCache makeCache(int64_t batch, int64_t capacity) const;

    // The dense SwiGLU FFN of a layer: down(silu(gate x) * up x).
    torch::Tensor ffn(int layer, const torch::Tensor& x) const;
    torch::Tensor rmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;

    // Saves config.json + model.safetensors in Hugging Face layout, in `dtype`.
    void save(const std::filesystem::path& dir, torch::ScalarType dtype) const;

private:
    torch::Tensor attention(int layer, const torch::Tensor& x, int64_t startPos, KvCache* cache) const;
    std::pair<torch::Tensor, torch::Tensor> ropeTables(int64_t endPos) const;

    struct RopeCache;
    ModelConfig m_config;
    LlamaWeights m_weights;
    std::shared_ptr<RopeCache> m_rope; // cos/sin tables grown on demand, guarded by its mutex
};

// Counts elements of every weight tensor actually held (cross-check for ModelConfig counts).
int64_t countParameters(const LlamaWeights& w);

} // namespace ladimo::core
