// Stage 2b latency model: microbenchmarks on the active device of what a policy changes. For a
// prefill-sized batch (one sequence of `prefillTokens`) and a decode step (one token after
// `decodeContext` cached tokens): the whole model with every FFN skipped (embeddings, attention,
// norms, head), one dense FFN, and one MoE block at each static k on real FFN inputs. The model
// estimate is other + sum over layers (routing/estimate.h). Each measure is the fastest of
// `repeats` timed runs after a warm-up (on a shared machine other load only adds time; the MoE
// block's k are timed in interleaved rounds); CUDA is synchronised around each. Runs on the
// calling thread.
#pragma once

#include <vector>

#include <torch/types.h>

#include "common/progress.h"
#include "model/llama.h"
#include "routing/estimate.h"

namespace ladimo::core {

struct LatencyOptions {
    int64_t prefillTokens = 512;
    int64_t decodeContext = 256;
    int repeats = 15;
    ProgressFn progress;
    CancelToken cancel;
};

// sampleX: real FFN inputs [T >= prefillTokens, H] of a middle layer (routing as in use);
// `layer` is that layer's MoE block (all layers share one shape).
LatencyModel measureLatency(const LlamaModel& model, const MoeLayer& layer, const torch::Tensor& sampleX,
                            const LatencyOptions& options = {});

// Measured whole-model times with the given hooks (nullptr: dense): the fastest seconds of one prefill
// forward of `prefillTokens` tokens and of one decode step after `decodeContext` cached tokens.
struct ForwardTiming {
    double prefillSeconds = 0;
    double decodeSeconds = 0;
};
ForwardTiming measureForward(const LlamaModel& model, const ForwardHooks* hooks, const LatencyOptions& options = {});
// The same for several hook sets (nullptr: dense) timed in interleaved rounds, so their ratios
// are not skewed by load that comes and goes during the measurement.
std::vector<ForwardTiming> measureForwards(const LlamaModel& model, const std::vector<const ForwardHooks*>& variants,
                                           const LatencyOptions& options = {});

} // namespace ladimo::core
