#include "convert/endtoend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <mutex>
#include <random>

#include "common/cputeam.h"
#include "common/error.h"
#include "common/memory.h"
#include "convert/experts.h"
#include "model/tokendata.h"

namespace ladimo::core {

namespace {

torch::Tensor klPerToken(const torch::Tensor& denseLogProbs, const torch::Tensor& logits)
{
    auto logq = torch::log_softmax(logits.to(torch::kFloat32), -1);
    return (denseLogProbs.exp() * (denseLogProbs - logq)).sum(-1).mean();
}

} // namespace

EndToEndResult trainEndToEnd(const LlamaModel& dense, std::vector<MoeLayer>& layers,
                             const std::vector<RoutingRule>& rules, const std::vector<int64_t>& calibration,
                             const EndToEndOptions& o)
{
    const auto started = std::chrono::steady_clock::now();
    if (dense.streamed())
        throw Error("the end-to-end stage needs the dense model in memory (its backward pass holds every layer's "
                    "activations); this model is streamed layer by layer: convert without it (--e2e-steps 0)");
    if (rules.size() != layers.size())
        throw Error("the end-to-end stage got " + std::to_string(rules.size()) + " routing rules for "
                    + std::to_string(layers.size()) + " layers");
    const int64_t H = dense.config().hiddenSize;
    std::vector<std::vector<int64_t>> windows;
    for (auto& w : cutWindows(calibration, o.seqLen))
        if (static_cast<int64_t>(w.size()) == o.seqLen)
            windows.push_back(std::move(w));
    if (windows.empty())
        throw Error("the end-to-end stage needs at least one full calibration window of " + std::to_string(o.seqLen)
                    + " tokens; the calibration data holds " + std::to_string(calibration.size()));

    std::vector<torch::Tensor> params;
    std::vector<std::size_t> converted;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        auto& m = layers[l];
        if (!m.router.defined())
            continue;
        converted.push_back(l);
        // Gate and up are views of one fused block made without grad: leaves, trained in place
        // as distill() trains them.
        for (auto* t : {&m.gate, &m.up, &m.down, &m.router, &m.sharedGate, &m.sharedUp, &m.sharedDown}) {
            if ((t == &m.router && !o.trainRouters) || !t->defined())
                continue;
            // A tensor of its own sharing the storage: the values train in place, and a caller's
            // copy of the layer keeps its own requires_grad flag.
            *t = t->detach();
            t->set_requires_grad(true);
            params.push_back(*t);
        }
    }
    if (converted.empty())
        throw Error("the end-to-end stage got no converted layer to train");

    auto run = [&](const torch::Tensor& tokens, bool allExperts) {
        ForwardHooks hooks;
        hooks.ffnOverride = [&](int layer, const torch::Tensor& x) -> torch::Tensor {
            const auto& m = layers[static_cast<std::size_t>(layer)];
            if (!m.router.defined())
                return {};
            const auto rule = allExperts ? RoutingRule::staticK(static_cast<int>(m.numExperts()))
                                         : rules[static_cast<std::size_t>(layer)];
            return m.forward(x.reshape({-1, H}), rule).view(x.sizes());
        };
        return dense.forward(tokens, nullptr, &hooks);
    };

    // The dense model's log-probabilities of a window do not change during the stage: each is
    // computed the first time its window is drawn and kept while the cache stays within its
    // budget (a quarter of the memory budget, at most 1 GiB: 512 KiB a window on tinystories260K,
    // 32 MiB on LLaMA-2-7B), which saves about a third of a step once the windows repeat.
    const auto device = dense.device();
    const int64_t windowBytes = o.seqLen * dense.config().vocabSize * 4;
    const int64_t cacheCapacity = device.is_cpu()
        ? std::min<int64_t>(static_cast<int64_t>(windows.size()),
                            std::min<int64_t>(int64_t{1} << 30, static_cast<int64_t>(defaultMemoryBudget() / 4))
                                / windowBytes)
        : 0;
    std::vector<torch::Tensor> denseCache(windows.size());
    int64_t cached = 0;
    std::mutex cacheMutex;
    auto denseLogProbs = [&](const std::vector<std::size_t>& picks) {
        std::vector<torch::Tensor> rows(picks.size());
        std::vector<std::size_t> missing;
        {
            std::lock_guard<std::mutex> lock(cacheMutex);
            for (std::size_t i = 0; i < picks.size(); ++i) {
                rows[i] = denseCache[picks[i]];
                if (!rows[i].defined())
                    missing.push_back(i);
            }
        }
        if (!missing.empty()) {
            std::vector<int64_t> ids;
            for (auto i : missing) {
                const auto& w = windows[picks[i]];
                ids.insert(ids.end(), w.begin(), w.end());
            }
            torch::NoGradGuard ng;
            auto tokens = torch::tensor(ids, torch::kInt64).view({-1, o.seqLen}).to(device);
            auto lp = torch::log_softmax(dense.forward(tokens).to(torch::kFloat32), -1);
            std::lock_guard<std::mutex> lock(cacheMutex);
            for (std::size_t j = 0; j < missing.size(); ++j) {
                const auto i = missing[j];
                rows[i] = lp[static_cast<int64_t>(j)];
                if (!denseCache[picks[i]].defined() && cached < cacheCapacity) {
                    denseCache[picks[i]] = rows[i].clone();
                    ++cached;
                }
            }
        }
        return torch::stack(rows);
    };

    torch::optim::Adam opt(params, torch::optim::AdamOptions(o.lr));
    std::mt19937_64 rng(o.seed + 41);
    std::uniform_int_distribution<std::size_t> pick(0, windows.size() - 1);
    EndToEndResult r;
    // On the CPU each step's windows are split over the CPU team (one share a core, each running
    // its dense, converted and backward passes with a single-threaded BLAS); the shares' gradients
    // add up in the shared parameters. Small models gain most: their passes are many small
    // operations that one core runs as fast as two. The split depends on the core count, so
    // results are reproducible on one machine, not bit for bit across machines.
    const int64_t B = std::min<int64_t>(o.windows, static_cast<int64_t>(windows.size()));
    const int shares = device.is_cpu() ? static_cast<int>(std::min<int64_t>(CpuTeam::instance().size(), B)) : 1;
    for (int step = 0; step < o.steps; ++step) {
        o.cancel.throwIfCancelled();
        std::vector<std::size_t> picks(static_cast<std::size_t>(B));
        for (auto& p : picks)
            p = pick(rng);
        const double lr = o.lr * 0.5 * (1 + std::cos(M_PI * step / std::max(1, o.steps)));
        for (auto& g : opt.param_groups())
            static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
        opt.zero_grad();
        std::vector<double> klShares(static_cast<std::size_t>(shares), 0.0);
        CpuTeam::instance().run(
            [&](int share, int n) {
                // Shares of the rows; a share that runs alone (n < shares) takes the rest too.
                for (int s = share; s < shares; s += n) {
                    const int64_t begin = B * s / shares, end = B * (s + 1) / shares;
                    const std::vector<std::size_t> mine(picks.begin() + begin, picks.begin() + end);
                    std::vector<int64_t> ids;
                    ids.reserve(mine.size() * static_cast<std::size_t>(o.seqLen));
                    for (auto w : mine)
                        ids.insert(ids.end(), windows[w].begin(), windows[w].end());
                    auto tokens = torch::tensor(ids, torch::kInt64).view({end - begin, o.seqLen}).to(device);
                    const auto target = denseLogProbs(mine);
                    const double weight = static_cast<double>(end - begin) / static_cast<double>(B);
                    auto kl = klPerToken(target, run(tokens, false));
                    torch::Tensor objective = kl;
                    if (o.fullKWeight > 0)
                        objective = kl + o.fullKWeight * klPerToken(target, run(tokens, true));
                    klShares[static_cast<std::size_t>(s)] = kl.item<double>() * weight;
                    (objective * weight).backward();
                }
            },
            shares);
        double value = 0;
        for (double v : klShares)
            value += v;
        if (!std::isfinite(value))
            throw NumericalFault("the end-to-end stage diverged: KL " + std::to_string(value) + " at step "
                                 + std::to_string(step));
        if (step == 0)
            r.initialKl = value;
        opt.step();
        for (auto l : converted)
            zeroExpertPadding(layers[l]);
        r.curve.emplace_back(step, value);
        if (o.onStep)
            o.onStep(step, value);
        if (o.progress)
            o.progress("end-to-end", step + 1, o.steps);
    }
    torch::NoGradGuard ng;
    for (auto l : converted) {
        auto& m = layers[l];
        for (auto* t : {&m.gate, &m.up, &m.down, &m.router, &m.sharedGate, &m.sharedUp, &m.sharedDown})
            if (t->defined())
                *t = t->detach();
        fuseGateUp(m);
    }
    const std::size_t tail = std::max<std::size_t>(1, r.curve.size() / 10);
    double sum = 0;
    for (std::size_t i = r.curve.size() - std::min(tail, r.curve.size()); i < r.curve.size(); ++i)
        sum += r.curve[i].second;
    r.finalKl = r.curve.empty() ? 0 : sum / static_cast<double>(std::min(tail, r.curve.size()));
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    return r;
}

} // namespace ladimo::core
