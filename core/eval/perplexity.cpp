#include "eval/perplexity.h"

#include <chrono>
#include <cmath>

#include "common/error.h"
#include "model/llama.h"
#include "model/tokendata.h"

namespace ladimo::core {

EvalResult evaluatePerplexity(const LlamaModel& model, const std::vector<int64_t>& stream, const EvalOptions& o)
{
    torch::InferenceMode guard;
    const auto windows = cutWindows(stream, o.seqLen);
    if (windows.empty())
        throw Error("evaluation data holds fewer than 2 tokens");
    for (int64_t id : stream)
        if (id < 0 || id >= model.config().vocabSize)
            throw Error("evaluation data holds token id " + std::to_string(id) + " outside the model vocabulary [0, "
                        + std::to_string(model.config().vocabSize) + ")");
    const auto start = std::chrono::steady_clock::now();
    double nllSum = 0, klSum = 0;
    int64_t scored = 0, processed = 0;
    const int64_t batch = std::max<int64_t>(1, o.batch);
    // Batches of windows of equal length (only the last one may be shorter).
    std::vector<torch::Tensor> batches;
    for (std::size_t i = 0; i < windows.size();) {
        const std::size_t len = windows[i].size();
        std::vector<int64_t> flat;
        std::size_t j = i;
        while (j < windows.size() && windows[j].size() == len && static_cast<int64_t>(j - i) < batch) {
            flat.insert(flat.end(), windows[j].begin(), windows[j].end());
            ++j;
        }
        batches.push_back(
            torch::tensor(flat, torch::kInt64).view({static_cast<int64_t>(j - i), static_cast<int64_t>(len)}));
        i = j;
    }
    // A streamed model runs groups of batches layer-major (each layer read once per group); a
    // group's logits (twice with a reference) take at most an eighth of the memory budget.
    const bool streamed = model.streamed() || (o.reference && o.reference->streamed());
    const std::uint64_t groupBytes = streamed ? model.memoryBudget() / 8 / (o.reference ? 2 : 1) : 0;
    const auto logitBytes = [&](const torch::Tensor& t) {
        return static_cast<std::uint64_t>(t.numel()) * static_cast<std::uint64_t>(model.config().vocabSize) * 4;
    };
    std::size_t windowsDone = 0;
    for (std::size_t g = 0; g < batches.size();) {
        o.cancel.throwIfCancelled();
        std::size_t end = g + 1;
        std::uint64_t bytes = logitBytes(batches[g]);
        while (end < batches.size() && bytes + logitBytes(batches[end]) <= groupBytes)
            bytes += logitBytes(batches[end++]);
        const std::vector<torch::Tensor> group(batches.begin() + static_cast<std::ptrdiff_t>(g),
                                               batches.begin() + static_cast<std::ptrdiff_t>(end));
        const auto run = [&](const LlamaModel& m, const ForwardHooks* hooks,
                             const std::function<void(std::size_t, const torch::Tensor&)>& use) {
            if (group.size() == 1) {
                use(0, m.forward(group.front(), nullptr, hooks));
                return;
            }
            ForwardHooks h = hooks ? *hooks : ForwardHooks{};
            h.onLayerDone = [&](int) { o.cancel.throwIfCancelled(); };
            m.forwardLayerMajor(group, &h, use);
        };
        std::vector<torch::Tensor> refLogits(group.size());
        if (o.reference)
            run(*o.reference, nullptr, [&](std::size_t b, const torch::Tensor& l) { refLogits[b] = l; });
        run(model, o.hooks, [&](std::size_t b, const torch::Tensor& logits) {
            const auto& tokens = group[b];
            const int64_t B = tokens.size(0), T = tokens.size(1);
            auto logp = torch::log_softmax(logits.narrow(1, 0, T - 1).to(torch::kFloat64), -1);
            auto target = tokens.narrow(1, 1, T - 1).to(logp.device()).unsqueeze(-1);
            nllSum += -logp.gather(-1, target).sum().item<double>();
            if (o.reference) {
                auto refLogp
                    = torch::log_softmax(refLogits[b].narrow(1, 0, T - 1).to(torch::kFloat64), -1).to(logp.device());
                refLogits[b] = torch::Tensor();
                klSum += (refLogp.exp() * (refLogp - logp)).sum().item<double>();
            }
            scored += B * (T - 1);
            processed += B * T;
            windowsDone += static_cast<std::size_t>(B);
            if (o.progress)
                o.progress("eval", static_cast<double>(windowsDone), static_cast<double>(windows.size()));
        });
        g = end;
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
