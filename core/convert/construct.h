// Stage 1 of LaDiMo for one layer: partition the dense FFN's neurons into experts, build the MoE
// layer (all experts active = the dense FFN), fit the router to predict which experts matter for
// each token, and distil the experts (and, with soft gating, the router) against the dense output.
// Pure functions over tensors; run on the calling thread; deterministic for a given seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "common/progress.h"
#include "moe/moeblock.h"

namespace ladimo::core {

enum class Partition { Coactivation, Contiguous, Weights };
Partition parsePartition(const std::string& name);
const char* partitionName(Partition p);

struct DenseFfn {
    torch::Tensor gate, up, down; // [I, H], [I, H], [H, I]
};

// Expert index of every neuron, experts of equal size (differing by at most one neuron).
// `x` (calibration FFN inputs [T, H]) is needed for co-activation clustering.
std::vector<int64_t> partitionNeurons(const DenseFfn& ffn, const torch::Tensor& x, int64_t experts,
                                      Partition strategy, uint64_t seed);

MoeLayer buildMoeLayer(const DenseFfn& ffn, const std::vector<int64_t>& assignment, int64_t experts, Gating gating);

struct DistillOptions {
    int trainTopK = 6;         // k used while distilling (drawn per batch in [minTrainK, N] when randomK)
    bool randomK = true;       // train for the range of k a routing policy may later use
    int minTrainK = 0;         // 0 = N/2
    int epochs = 20;
    int routerEpochs = 20;
    double lr = 1e-3;
    double routerLr = 1e-2;
    int64_t batch = 512;
    uint64_t seed = 0;
    CancelToken cancel;
    // Called after every batch with (epoch, step, loss).
    std::function<void(int epoch, int64_t step, double loss)> onStep;
};

struct DistillResult {
    std::vector<std::pair<int64_t, double>> lossCurve; // (step, normalised MSE)
    double initialLoss = 0;                            // at trainTopK before distillation
    double finalLoss = 0;
};

// Fits the router by cross-entropy to each token's distribution of expert output norms.
void fitRouter(MoeLayer& layer, const torch::Tensor& x, const DistillOptions& options);

// Normalised MSE ||MoE(x) - y||^2 / ||y||^2 at a rule, no gradient.
double relativeError(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y, const RoutingRule& rule);

// Distils experts (and the router for soft gating) on (x, y) pairs; returns the loss curve.
DistillResult distill(MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y, const DistillOptions& options);

} // namespace ladimo::core
