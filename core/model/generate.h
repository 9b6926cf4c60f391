// Autoregressive generation with the KV cache (greedy or temperature sampling), and
// data-free calibration: BOS-led sequences sampled from the model itself (issue "self-sample").
// Runs on the calling thread; set InferenceMode there.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "common/progress.h"

namespace ladimo::core {

class LlamaModel;
struct ForwardHooks;

struct GenerateOptions {
    int64_t maxNew = 64;
    double temperature = 1.0; // 0 = greedy (argmax, first index on ties)
    uint64_t seed = 0;
    int64_t stopId = -1;                 // stop a sequence once it emits this id (e.g. EOS); -1 = never
    const ForwardHooks* hooks = nullptr; // e.g. MoE blocks in place of the FFNs
    ProgressFn progress;
    CancelToken cancel;
    // After every step: the id each sequence drew (a stopped sequence's repeats nothing: -1), on
    // the calling thread, for streaming the text as it is made.
    std::function<void(const std::vector<int64_t>& next)> onTokens;
};

// prompts: same-length id lists. Returns prompt + generated ids per sequence (a stopped sequence
// ends with the stop id).
std::vector<std::vector<int64_t>> generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& options);

struct SelfSampleOptions {
    int64_t tokens = 0;   // total tokens wanted (rounded up to whole sequences)
    int64_t seqLen = 256; // each sequence: BOS + seqLen-1 sampled tokens
    int64_t batch = 16;
    uint64_t seed = 0;
    double temperature = 1.0;
    ProgressFn progress;
    CancelToken cancel;
};

// Reproducible: the same (model, seed, seqLen, batch) gives the same tokens, whether the batches
// run one after another or, for a resident model on the CPU, spread over the CPU team.
std::vector<int64_t> selfSample(const LlamaModel& model, const SelfSampleOptions& options);

} // namespace ladimo::core
