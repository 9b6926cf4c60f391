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
#include "convert/endtoend.h"
#include "convert/experts.h"
#include "convert/moelayers.h"
#include "model/llama.h"
#include "moe/moelayer.h"

namespace ladimo::core {

// How a capture's dense forward passes run and where its results live. Out of memory on the
// device (c10::OutOfMemoryError) during a pass drops what that pass recorded and runs it again
// with half as many windows, down to one window; then an Error says so. The activations stay in
// memory while they fit in `memoryBudget` bytes (0 = half of the memory available when the
// capture starts), otherwise they go to unlinked scratch files under `spillDir`
// (common/scratch.h), which the kernel pages to disk; without a spillDir they always stay in
// memory. The captured values do not depend on any of these settings.
struct CaptureOptions {
    int64_t maxWindows = 8; // windows of seqLen tokens per forward pass
    std::filesystem::path spillDir;
    std::uint64_t memoryBudget = 0;
    // Told each time a pass is retried with fewer windows, in words.
    std::function<void(const std::string& what)> onRecovered;
    // ("capture", windows done, windows) after every pass, and after every layer of a layer-major
    // group; the token is checked as often (a 7B capture of 100K tokens takes hours on a CPU).
    ProgressFn progress;
    CancelToken cancel;
    // Tests only (fault injection): called as each layer's FFN input/output is recorded, with the
    // number of windows of the pass; may throw c10::OutOfMemoryError.
    std::function<void(int layer, int64_t windows)> faultHook;
    // Sequential mode: the layers that have an entry in `moe` run their MoE block under `rule` in
    // the pass, so each layer's input is the partly converted model's.
    const std::vector<MoeLayer>* moe = nullptr;
    RoutingRule rule;
    int upToLayer = -1; // the pass stops after this layer (-1: every layer)
    std::set<int> only; // keep just these layers (the others stay undefined tensors); empty: all
};
struct CaptureInfo {
    std::uint64_t bytes = 0; // X and Y of every kept layer
    bool spilled = false;    // held in scratch files rather than memory
};

struct ConvertSettings {
    ConvertSettings() { distill.trainTopK = 0; } // 0: from trainActive (trainTopKFor)
    int64_t experts = 32;
    // Always-on neurons per layer (a shared expert every token runs), chosen from the calibration
    // tokens by how much they contribute; the other neurons form the experts. 0: none.
    int64_t sharedNeurons = 0;
    // The share of the dense FFN's parameters a token activates while distilling (router
    // included), when distill.trainTopK is 0: the k trained for is the largest that fits.
    double trainActive = 0.75;
    Partition partition = Partition::Coactivation;
    Gating gating = Gating::Hard;
    std::string mode = "parallel"; // parallel: X from the dense model; sequential: from converted layers below
    DistillOptions distill;
    // The end-to-end stage after every layer is done (steps 0, the default: none); its cancel,
    // progress and seed come from the conversion's. Trains at trainTopK.
    EndToEndOptions endToEnd;
    int64_t seqLen = 256;
    // Parallel mode trains one layer per device at a time ("cpu,cpu", "cuda:0,cuda:1"); not part
    // of toJson(): the result does not depend on it, so a run may resume on other devices.
    std::vector<torch::Device> devices;
    CaptureOptions capture; // not part of toJson() either
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
    // Parallel mode: after the dense activations were captured, how big and where they are.
    std::function<void(const CaptureInfo&)> onCapture;
};

// The k distillation trains for: distill.trainTopK when set (> 0, at most the experts), else the
// largest k whose activated parameters (the router's and the shared neurons' included) stay
// within trainActive of the dense FFN's, and at least 1.
int trainTopKFor(const ConvertSettings& settings, const ModelConfig& config);

// Captured (x, y) of each layer's FFN, flattened to [tokens, H] float32, for the layers and the
// pass the options choose (CaptureOptions::moe, upToLayer, only); the values of a kept layer do
// not depend on which others are kept.
CaptureInfo captureFfn(const LlamaModel& model, const std::vector<int64_t>& stream, int64_t seqLen,
                       std::vector<torch::Tensor>* xs, std::vector<torch::Tensor>* ys,
                       const CaptureOptions& options = {});

std::vector<MoeLayer> convertModel(const LlamaModel& model, const std::vector<int64_t>& calibration,
                                   const ConvertSettings& settings, const ConvertCallbacks& callbacks,
                                   const std::set<int>& skipLayers = {}, std::vector<MoeLayer> done = {});

// Forward hooks that replace every FFN that has an MoE layer, under per-layer rules. The hooks
// hold the layer set (a copy sharing its layers): a streamed set reads each layer as it is used.
ForwardHooks moeHooks(const MoeLayers& layers, const std::vector<RoutingRule>& rules, int64_t* activeParams = nullptr,
                      int64_t* tokens = nullptr);
// The same with oracle routing (MoeLayer::forwardOracle) at a static top-k per layer.
ForwardHooks oracleHooks(const MoeLayers& layers, const std::vector<RoutingRule>& rules,
                         int64_t* activeParams = nullptr, int64_t* tokens = nullptr);

void saveMoeLayer(const std::filesystem::path& file, const MoeLayer& layer);
MoeLayer loadMoeLayer(const std::filesystem::path& file, torch::Device device, torch::ScalarType dtype);

} // namespace ladimo::core
