// Stage 1 of LaDiMo for one layer: partition the dense FFN's neurons into experts, build the MoE
// layer (all experts active = the dense FFN), fit the router to predict which experts matter for
// each token, and distil the experts (and, with soft gating, the router) against the dense output.
// Pure functions over tensors; run on the calling thread; deterministic for a given seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include "common/error.h"
#include "common/progress.h"
#include "moe/moelayer.h"

namespace ladimo::core {

enum class Partition { Coactivation, Contiguous, Weights };
Partition parsePartition(const std::string& name);
const char* partitionName(Partition p);

struct DenseFfn {
    torch::Tensor gate, up, down; // [I, H], [I, H], [H, I]
};

// Expert index of every neuron, experts of equal size (differing by at most one neuron).
// `x` (calibration FFN inputs [T, H]) is needed for co-activation clustering and for choosing
// shared neurons. With `shared` > 0, that many neurons are always on (index -1): those whose mean
// contribution |silu(g x) (u x)| ||down column|| over the calibration tokens is largest (neurons
// that matter often and much); the others are partitioned into the experts.
std::vector<int64_t> partitionNeurons(const DenseFfn& ffn, const torch::Tensor& x, int64_t experts, Partition strategy,
                                      uint64_t seed, int64_t shared = 0);

// The MoE layer of an assignment (partitionNeurons): expert e gets the neurons assigned e, the
// shared neurons (MoeLayer::sharedGate...) those assigned -1. All experts active = the dense FFN.
MoeLayer buildMoeLayer(const DenseFfn& ffn, const std::vector<int64_t>& assignment, int64_t experts, Gating gating);

// What the router of a hard-gated layer is fitted to (soft gating always uses Shares: its
// probabilities weigh the experts' outputs).
//  norms:  regression of the logits on each token's expert-output norms divided by their mean;
//          ranks the experts as the oracle does and beat shares on tinystories260K (README table).
//  shares: cross-entropy to each token's distribution of expert-output norms.
enum class RouterTarget { Norms, Shares };
RouterTarget parseRouterTarget(const std::string& name);
const char* routerTargetName(RouterTarget t);

struct DistillOptions {
    int trainTopK = 6;    // k used while distilling (drawn per batch in [minTrainK, N] when randomK)
    bool randomK = false; // train for a range of k instead (costs quality at every k: README table)
    int minTrainK = 0;    // 0 = N/2
    // Weight of a second loss term, the error with every expert active, so that the full model
    // stays the dense FFN (0: train for trainTopK only; the full-k model then drifts from dense).
    // 5 keeps tinystories260K's full model within 0.4% of dense perplexity (4: 0.5%) for about
    // 1% more at the training k (README table).
    double fullKWeight = 5.0;
    RouterTarget routerTarget = RouterTarget::Norms;
    // 10: on tinystories260K within noise of 20 (README table), in about 60% of the time.
    int epochs = 10;
    int routerEpochs = 20;
    double lr = 1e-3;
    double routerLr = 1e-2;
    int64_t batch = 512;
    uint64_t seed = 0;
    CancelToken cancel;
    // Called after every batch with (epoch, step, loss).
    std::function<void(int epoch, int64_t step, double loss)> onStep;
    // Numerical faults: a NaN/Inf loss puts the weights back to the start of the epoch (the last
    // good state) and retries that epoch with the learning rate times retryLrFactor, at most
    // maxRetries times in all; then distill throws NumericalFault.
    int maxRetries = 2;
    double retryLrFactor = 0.1;
    // Out of memory on the device (c10::OutOfMemoryError): the epoch is retried from its start
    // with half the batch, down to minBatch; then an Error says so.
    int64_t minBatch = 16;
    // Tests only (fault injection): sees each batch's loss before it is checked and may replace
    // it (inject NaN) or throw (inject c10::OutOfMemoryError).
    std::function<void(int64_t step, int64_t batch, torch::Tensor& loss)> faultHook;
};

// A layer that cannot be trained to finite numbers (non-finite inputs, or divergence that
// lower learning rates did not cure). convertModel reports it per layer and goes on.
class NumericalFault : public Error {
public:
    using Error::Error;
};

struct DistillResult {
    std::vector<std::pair<int64_t, double>> lossCurve; // (step, normalised MSE)
    double initialLoss = 0;                            // at trainTopK before distillation
    double finalLoss = 0;
    std::vector<std::string> recovered; // one line per fault recovered from (NaN retry, OOM halving)
    double lrScale = 1;                 // learning-rate factor the last epoch ran with
    int64_t batch = 0;                  // batch size the last epoch ran with
};

// Padding neurons of unequal experts back to zero after an optimiser step, so the layer stays
// exact and its parameter counts honest.
void zeroExpertPadding(MoeLayer& layer);

// Throws NumericalFault naming `what` when `t` holds a NaN or an infinity.
void requireFinite(const torch::Tensor& t, const std::string& what);

// Fits the router by cross-entropy to each token's distribution of expert output norms.
void fitRouter(MoeLayer& layer, const torch::Tensor& x, const DistillOptions& options);

// Normalised MSE ||MoE(x) - y||^2 / ||y||^2 at a rule, no gradient.
double relativeError(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y, const RoutingRule& rule);

// relativeError of each rule at once: every expert's output is computed once and the outputs of
// every k are its prefix sums in routing order (about (N + 1) / 2 times less work than a forward
// per rule over all k); equal to relativeError up to float rounding.
std::vector<double> relativeErrors(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y,
                                   const std::vector<RoutingRule>& rules);

// Distils experts (and the router for soft gating) on (x, y) pairs; returns the loss curve.
DistillResult distill(MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y, const DistillOptions& options);

} // namespace ladimo::core
