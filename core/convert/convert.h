// Whole-model stage 1: capture every layer's FFN input/output on calibration tokens, then build,
// route and distil each layer's MoE block. Finished layers are handed to `onLayerDone` at once
// so the caller can persist them (a rerun passes the finished layers in `skipLayers`).
// Runs on the calling thread; honours the cancel token between batches and layers.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <torch/types.h>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "convert/construct.h"
#include "model/llama.h"
#include "moe/moeblock.h"

namespace ladimo::core {

struct ConvertSettings {
    int64_t experts = 8;
    Partition partition = Partition::Coactivation;
    Gating gating = Gating::Hard;
    std::string mode = "parallel"; // parallel: X from the dense model; sequential: from converted layers below
    DistillOptions distill;
    int64_t seqLen = 256;
    // Parallel mode trains one layer per device at a time ("cpu,cpu", "cuda:0,cuda:1"); not part
    // of toJson(): the result does not depend on it, so a run may resume on other devices.
    std::vector<torch::Device> devices;
    nlohmann::json toJson() const;
};

struct LayerConversion {
    int layer = 0;
    double initialError = 0; // relative error at trainTopK after router fit, before distillation
    double finalError = 0;
    double seconds = 0;
    std::vector<std::pair<int64_t, double>> lossCurve;
    std::vector<std::string> recovered; // faults recovered from (DistillResult::recovered)
};

struct ConvertCallbacks {
    std::function<void(int layer)> onLayerStart;
    std::function<void(int layer, const MoeLayer&, const LayerConversion&)> onLayerDone;
    // A layer that hit a NumericalFault (NaN/Inf inputs, or divergence after the retries of
    // DistillOptions): with this set, the layer is reported here and the others go on (its entry
    // of the result stays empty); without it the fault is thrown as before.
    std::function<void(int layer, const std::string& reason)> onLayerFailed;
    ProgressFn progress;
    CancelToken cancel;
    // After every distillation batch of a layer: (layer, step, normalised MSE), the points the
    // layer's loss curve gets, as they happen (a step retried after a fault is reported again).
    // Called on the thread training that layer: with several devices, on several threads at once.
    std::function<void(int layer, int64_t step, double loss)> onStep;
    // Parallel mode: supplies a layer's captured FFN input/output ([tokens, H] float32, as
    // captureFfn makes them, e.g. from `ladimo capture`), returning false when it has none.
    // Layers it cannot supply are captured from the dense model, which then runs only up to the
    // highest of them. Called on the calling thread before any layer starts.
    using LoadCapturedFn = std::function<bool(int layer, torch::Tensor* x, torch::Tensor* y)>;
    LoadCapturedFn loadCaptured;
};

// Captured (x, y) of each layer's FFN, flattened to [tokens, H]. With `moe` given, layers that
// have an entry use it in the forward pass (sequential mode). With `only` given, just those
// layers are kept (the others stay undefined tensors); the values do not depend on it.
void captureFfn(const LlamaModel& model, const std::vector<int64_t>& stream, int64_t seqLen,
                std::vector<torch::Tensor>* xs, std::vector<torch::Tensor>* ys,
                const std::vector<MoeLayer>* moe = nullptr, const RoutingRule* rule = nullptr, int upToLayer = -1,
                const std::set<int>* only = nullptr);

std::vector<MoeLayer> convertModel(const LlamaModel& model, const std::vector<int64_t>& calibration,
                                   const ConvertSettings& settings, const ConvertCallbacks& callbacks,
                                   const std::set<int>& skipLayers = {}, std::vector<MoeLayer> done = {});

// Forward hooks that replace every FFN that has an MoE layer, under per-layer rules.
ForwardHooks moeHooks(const std::vector<MoeLayer>& layers, const std::vector<RoutingRule>& rules,
                      int64_t* activeParams = nullptr, int64_t* tokens = nullptr);
// The same with oracle routing (MoeLayer::forwardOracle) at a static top-k per layer.
ForwardHooks oracleHooks(const std::vector<MoeLayer>& layers, const std::vector<RoutingRule>& rules,
                         int64_t* activeParams = nullptr, int64_t* tokens = nullptr);

void saveMoeLayer(const std::filesystem::path& file, const MoeLayer& layer);
MoeLayer loadMoeLayer(const std::filesystem::path& file, torch::Device device, torch::ScalarType dtype);

} // namespace ladimo::core
