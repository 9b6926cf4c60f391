// Stage 2a: the routing profile of one converted layer on held-out FFN inputs: histograms of
// the routing weight at each rank (rank 1 = top-1 weight), mean cumulative top-k mass, expert
// load, routing entropy, and the relative output error against the dense FFN for every static
// k and for a grid of top-p thresholds (with the mean k each threshold uses).
// Pure function; runs on the calling thread.
#pragma once

#include <filesystem>

#include <torch/types.h>

#include "common/progress.h"
#include "convert/moelayers.h"
#include "moe/moelayer.h"
#include "store/records.h"

namespace ladimo::core {

struct ProfileOptions {
    int bins = 20; // fixed bins on [0, 1]
    // Parameters of the dense FFN the layer replaces (3 x hidden x intermediate); 0: the sum of the
    // experts (equal when the experts split the FFN exactly, the default).
    int64_t denseParameters = 0;
    // Ascending top-p grid; estimates interpolate between its points.
    std::vector<double> thresholds
        = {0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.875, 0.9, 0.925, 0.95, 0.975, 0.99};
};

// x: FFN inputs [T, H]; y: the dense FFN outputs of x. Fills every field but runId / layer.
RoutingProfile profileLayer(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y,
                            const ProfileOptions& options = {});

class LlamaModel;

// End-to-end sensitivity of each layer: with only that layer using its MoE block under `rule`
// (every other FFN dense), the mean per-token KL(dense || model) and the increase of the mean NLL
// of the true next tokens over the dense model, on `stream` (windows of seqLen). Divided by the
// layer's relative output error under the same rule, they convert layer errors into additive
// estimates of the model's KL and NLL increase (the error proxy the policy search minimises).
// One dense pass plus one pass pair per layer; runs on the calling thread.
struct LayerSensitivity {
    double kl = 0;
    double nllIncrease = 0; // may be negative on a small sample
};
std::vector<LayerSensitivity> layerSensitivity(const LlamaModel& model, const MoeLayers& layers,
                                               const std::vector<int64_t>& stream, int64_t seqLen,
                                               const RoutingRule& rule, CancelToken cancel = {});

// Stage 2a for a whole conversion, as `ladimo profile` and the workbench run it: captures the
// dense FFN inputs/outputs on `stream`, profiles every layer, then (sensitivityTokens > 0)
// measures each layer's sensitivity on the first sensitivityTokens tokens at k = 0.625 N and
// records it in the profile's extra ("sensitivity_*", "kl_per_error", "nll_per_error").
// Reports ("profile", layer, layers); honours `cancel`; runs on the calling thread.
struct ConversionProfileOptions {
    int64_t seqLen = 256;
    int bins = 20;
    int64_t sensitivityTokens = 8192;
    // Where the captured activations go beyond `memoryBudget` (0 = half the available memory):
    // CaptureOptions; empty = always in memory.
    std::filesystem::path spillDir;
    std::uint64_t memoryBudget = 0;
};
std::vector<RoutingProfile> profileConversion(const LlamaModel& model, const MoeLayers& layers, int64_t runId,
                                              const std::vector<int64_t>& stream,
                                              const ConversionProfileOptions& options, CancelToken cancel = {},
                                              const ProgressFn& progress = {});

} // namespace ladimo::core
