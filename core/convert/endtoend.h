// The optional end-to-end stage after layer-wise distillation: a short run that minimises the
// KL divergence between the dense and the converted model's next-token distributions on the
// calibration windows, training the experts of every layer together (the routers too on request).
// Layer-wise MSE leaves each layer erring where it is cheapest for that layer; this stage lets the
// layers err where the next-token distribution does not care. It needs the whole model's
// activations of one batch for the backward pass, so it runs on resident models only.
// Runs on the calling thread; deterministic for a given seed; honours the cancel token per step.
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "common/progress.h"
#include "model/llama.h"
#include "moe/moelayer.h"

namespace ladimo::core {

struct EndToEndOptions {
    // Off unless asked for: on tinystories260K 600 steps on 102,400 self-sampled tokens took 75%
    // active from +27% to +12% perplexity over dense, at 0.2 s a step on two cores against 18 s
    // for the whole layer-wise conversion (README table); the full-k model drifts from dense
    // unless fullKWeight is set.
    int steps = 0;
    double lr = 1e-3;     // Adam, cosine decay to zero over the steps
    int64_t windows = 8;  // calibration windows per step
    int64_t seqLen = 256; // tokens per window
    // Routers too: under hard gating by a straight-through gradient (MoeLayer::route). Measured to
    // hurt (README: 4.78 against 4.71 at 75% active on tinystories260K); experts only by default.
    bool trainRouters = false;
    // Weight of the KL with every expert active, which keeps the full model near dense (as in
    // DistillOptions::fullKWeight); 0 trains the policy's k only.
    double fullKWeight = 0;
    uint64_t seed = 0;
    CancelToken cancel;
    ProgressFn progress; // ("end-to-end", step, steps)
    // After every step: (step, KL(dense || converted) in nats per token, at the training rules).
    std::function<void(int64_t step, double kl)> onStep;
};

struct EndToEndResult {
    std::vector<std::pair<int64_t, double>> curve; // (step, KL per token) of every step
    double initialKl = 0;                          // on the first step's batch before any update
    double finalKl = 0;                            // mean of the last tenth of the curve
    double seconds = 0;
};

// Trains `layers` in place. `layers[l]` with a router replaces layer l's FFN under `rules[l]`
// (the others stay dense). The calibration stream is cut into windows of seqLen tokens
// (cutWindows); each step draws `windows` of them. Throws an Error when the model is streamed,
// when there is no full window, or when the rules do not match the layers.
EndToEndResult trainEndToEnd(const LlamaModel& dense, std::vector<MoeLayer>& layers,
                             const std::vector<RoutingRule>& rules, const std::vector<int64_t>& calibration,
                             const EndToEndOptions& options);

} // namespace ladimo::core
