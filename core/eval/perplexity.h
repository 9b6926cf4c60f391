// Perplexity of a model on a token stream: exp(mean NLL of every token after the first of each
// window). Optionally runs the model with FFN hooks (a converted model) and compares against a
// reference model (KL divergence per token). Runs on the calling thread.
#pragma once

#include <cstdint>
#include <vector>

#include "common/progress.h"

namespace ladimo::core {

class LlamaModel;
struct ForwardHooks;

struct EvalOptions {
    int64_t seqLen = 256;
    int64_t batch = 8;                     // windows per forward pass
    const ForwardHooks* hooks = nullptr;   // e.g. MoE replacement of the FFNs
    const LlamaModel* reference = nullptr; // when set: also KL(reference || model)
    ProgressFn progress;
    CancelToken cancel;
};

struct EvalResult {
    double nll = 0; // mean negative log-likelihood (nats / token)
    double perplexity = 0;
    int64_t tokens = 0; // tokens scored
    int64_t windows = 0;
    double seconds = 0;
    double tokensPerSecond = 0; // tokens processed by the forward passes per second
    double klToReference = -1;  // mean per-token KL(reference || model); -1 when not computed
};

EvalResult evaluatePerplexity(const LlamaModel& model, const std::vector<int64_t>& stream, const EvalOptions& options);

} // namespace ladimo::core
