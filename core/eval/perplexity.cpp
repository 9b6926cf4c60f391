#include "eval/perplexity.h"

#include <chrono>
#include <cmath>

#include "common/error.h"
#include "model/llama.h"
#include "model/tokendata.h"

namespace ladimo::core {

EvalResult evaluatePerplexity(const LlamaModel& model, const std::vector<int64_t>& stream,
                              const EvalOptions& o)
{
    torch::InferenceMode guard;
    const auto windows = cutWindows(stream, o.seqLen);
    if (windows.empty())
        throw Error("evaluation data holds fewer than 2 tokens");
    for (int64_t id : stream)
        if (id < 0 || id >= model.config().vocabSize)
            throw Error("evaluation data holds token id " + std::to_string(id) +
                        " outside the model vocabulary [0, " + std::to_string(model.config().vocabSize) + ")");
    const auto start = std::chrono::steady_clock::now();
    double nllSum = 0, klSum = 0;
    int64_t scored = 0, processed = 0;
    const int64_t batch = std::max<int64_t>(1, o.batch);
    std::size_t i = 0;
    while (i < windows.size()) {
        o.cancel.throwIfCancelled();
        // Batch windows of equal length (only the last one may be shorter).
        const std::size_t len = windows[i].size();
        std::vector<int64_t> flat;
        std::size_t j = i;
        while (j < windows.size() && windows[j].size() == len && static_cast<int64_t>(j - i) < batch) {
            flat.insert(flat.end(), windows[j].begin(), windows[j].end());
            ++j;
        }
        const int64_t B = static_cast<int64_t>(j - i), T = static_cast<int64_t>(len);
        auto tokens = torch::tensor(flat, torch::kInt64).view({B, T});
        auto logits = model.forward(tokens, nullptr, o.hooks);
        auto logp = torch::log_softmax(logits.narrow(1, 0, T - 1).to(torch::kFloat64), -1);
        auto target = tokens.narrow(1, 1, T - 1).to(logp.device()).unsqueeze(-1);
        nllSum += -logp.gather(-1, target).sum().item<double>();
        if (o.reference) {
            auto refLogits = o.reference->forward(tokens);
            auto refLogp = torch::log_softmax(refLogits.narrow(1, 0, T - 1).to(torch::kFloat64), -1).to(logp.device());
            klSum += (refLogp.exp() * (refLogp - logp)).sum().item<double>();
        }
        scored += B * (T - 1);
        processed += B * T;
        i = j;
        if (o.progress)
            o.progress("eval", static_cast<double>(i), static_cast<double>(windows.size()));
    }
    EvalResult r;
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    r.tokens = scored;
    r.windows = static_cast<int64_t>(windows.size());
    r.nll = nllSum / static_cast<double>(scored);
    r.perplexity = std::exp(r.nll);
    r.tokensPerSecond = r.seconds > 0 ? static_cast<double>(processed) / r.seconds : 0;
    if (o.reference)
        r.klToReference = klSum / static_cast<double>(scored);
    return r;
}

} // namespace ladimo::core
