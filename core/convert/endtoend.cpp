#include "convert/endtoend.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "common/error.h"
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

    torch::optim::Adam opt(params, torch::optim::AdamOptions(o.lr));
    std::mt19937_64 rng(o.seed + 41);
    std::uniform_int_distribution<std::size_t> pick(0, windows.size() - 1);
    EndToEndResult r;
    const auto device = dense.device();
    for (int step = 0; step < o.steps; ++step) {
        o.cancel.throwIfCancelled();
        const int64_t B = std::min<int64_t>(o.windows, static_cast<int64_t>(windows.size()));
        std::vector<int64_t> ids;
        ids.reserve(static_cast<std::size_t>(B * o.seqLen));
        for (int64_t b = 0; b < B; ++b) {
            const auto& w = windows[pick(rng)];
            ids.insert(ids.end(), w.begin(), w.end());
        }
        auto tokens = torch::tensor(ids, torch::kInt64).view({B, o.seqLen}).to(device);
        torch::Tensor denseLogProbs;
        {
            torch::NoGradGuard ng;
            denseLogProbs = torch::log_softmax(dense.forward(tokens).to(torch::kFloat32), -1);
        }
        const double lr = o.lr * 0.5 * (1 + std::cos(M_PI * step / std::max(1, o.steps)));
        for (auto& g : opt.param_groups())
            static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
        auto kl = klPerToken(denseLogProbs, run(tokens, false));
        torch::Tensor objective = kl;
        if (o.fullKWeight > 0)
            objective = kl + o.fullKWeight * klPerToken(denseLogProbs, run(tokens, true));
        const double value = kl.item<double>();
        if (!std::isfinite(value))
            throw NumericalFault("the end-to-end stage diverged: KL " + std::to_string(value) + " at step "
                                 + std::to_string(step));
        if (step == 0)
            r.initialKl = value;
        opt.zero_grad();
        objective.backward();
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
