#include "routing/latency.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <limits>

#include <torch/cuda.h>

#include "common/error.h"

namespace ladimo::core {

namespace {

// The fastest wall time of `repeats` rounds of calls of each of `fns`, after one warm-up call of
// each. Rounds interleave the functions, so a burst of other load on a shared machine slows one
// round of all of them, not every run of one; and other load only ever adds time, so the fastest
// run is the least disturbed measure of each.
std::vector<double> fastestSecondsEach(torch::Device device, int repeats, const CancelToken& cancel,
                                       const std::vector<std::function<void()>>& fns,
                                       const std::function<void()>& afterRound = {})
{
    auto sync = [&] {
        if (device.is_cuda())
            torch::cuda::synchronize(device.index());
    };
    for (const auto& fn : fns)
        fn();
    sync();
    std::vector<double> best(fns.size(), std::numeric_limits<double>::infinity());
    for (int r = 0; r < std::max(1, repeats); ++r) {
        for (std::size_t i = 0; i < fns.size(); ++i) {
            cancel.throwIfCancelled();
            const auto t0 = std::chrono::steady_clock::now();
            fns[i]();
            sync();
            best[i] = std::min(best[i], std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        if (afterRound)
            afterRound();
    }
    return best;
}

torch::Tensor promptTokens(const LlamaModel& model, int64_t n)
{
    // Any valid ids: attention and FFN cost do not depend on the values.
    return torch::arange(n, torch::TensorOptions().dtype(torch::kLong))
        .remainder(model.config().vocabSize)
        .unsqueeze(0)
        .to(model.device());
}

} // namespace

std::vector<ForwardTiming> measureForwards(const LlamaModel& model, const std::vector<const ForwardHooks*>& variants,
                                           const LatencyOptions& o)
{
    torch::InferenceMode guard;
    // A streamed model keeps what fits of its layers resident while timed; the rest is read as it runs.
    LayerCacheScope layerCache(model);
    const auto prompt = promptTokens(model, o.prefillTokens);
    const auto next = promptTokens(model, 1);
    std::vector<std::function<void()>> prefill, decode;
    std::vector<KvCache> caches;
    caches.reserve(variants.size());
    for (const auto* hooks : variants) {
        prefill.emplace_back([&model, &prompt, hooks] { model.forward(prompt, nullptr, hooks); });
        caches.push_back(model.makeCache(1, o.decodeContext + 1));
        model.forward(promptTokens(model, o.decodeContext), &caches.back(), hooks);
    }
    for (std::size_t i = 0; i < variants.size(); ++i)
        // Each timed step rewinds the cache, so every step decodes at the same context length.
        decode.emplace_back([&, i] {
            caches[i].length = o.decodeContext;
            model.forward(next, &caches[i], variants[i]);
        });
    const auto p = fastestSecondsEach(model.device(), o.repeats, o.cancel, prefill);
    const auto d = fastestSecondsEach(model.device(), o.repeats * 4, o.cancel, decode);
    std::vector<ForwardTiming> out(variants.size());
    for (std::size_t i = 0; i < variants.size(); ++i)
        out[i] = {p[i], d[i]};
    return out;
}

ForwardTiming measureForward(const LlamaModel& model, const ForwardHooks* hooks, const LatencyOptions& o)
{
    return measureForwards(model, {hooks}, o).front();
}

LatencyModel measureLatency(const LlamaModel& model, const MoeLayer& layer, const torch::Tensor& sampleX,
                            const LatencyOptions& o)
{
    torch::InferenceMode guard;
    if (sampleX.dim() != 2 || sampleX.size(0) < o.prefillTokens)
        throw Error("latency model: needs at least " + std::to_string(o.prefillTokens) + " sample FFN inputs, got "
                    + std::to_string(sampleX.dim() == 2 ? sampleX.size(0) : 0));
    const int64_t N = layer.numExperts();
    LatencyModel m;
    m.device = model.device().str();
    m.layers = model.config().numLayers;
    m.prefillTokens = o.prefillTokens;
    m.decodeContext = o.decodeContext;

    // Everything is timed in interleaved rounds (the rest of the model, the dense FFN, the MoE
    // block at each k), so the estimates' parts share the machine's state of the moment.
    const auto dev = model.device();
    const auto xPrefill = sampleX.narrow(0, 0, o.prefillTokens).to(dev, model.dtype()).unsqueeze(0);
    const auto xDecode = sampleX.narrow(0, 0, 1).to(dev, model.dtype()).unsqueeze(0);
    // Decode of the MoE block: a few different tokens per timed run, since each picks its own experts.
    const int64_t decodeSamples = std::min<int64_t>(8, sampleX.size(0));
    const auto xDecodeSamples = sampleX.narrow(0, 0, decodeSamples).to(dev, model.dtype()).unsqueeze(1);
    const int mid = m.layers / 2;
    LayerCacheScope layerCache(model);
    const auto midLayer = model.layer(mid); // held while timed (a streamed model would read it every call)
    ForwardHooks skipFfn;
    skipFfn.ffnOverride = [](int, const torch::Tensor& x) { return torch::zeros_like(x); };
    const auto prompt = promptTokens(model, o.prefillTokens);
    const auto next = promptTokens(model, 1);
    auto cache = model.makeCache(1, o.decodeContext + 1);
    model.forward(promptTokens(model, o.decodeContext), &cache, &skipFfn);

    std::vector<std::function<void()>> prefill
        = {[&] { model.forward(prompt, nullptr, &skipFfn); }, [&] { model.ffn(*midLayer, mid, xPrefill); }};
    std::vector<std::function<void()>> decode = {[&] {
                                                     cache.length = o.decodeContext;
                                                     model.forward(next, &cache, &skipFfn);
                                                 },
                                                 [&] {
                                                     for (int64_t s = 0; s < decodeSamples; ++s)
                                                         model.ffn(*midLayer, mid, xDecode);
                                                 }};
    for (int64_t k = 1; k <= N; ++k) {
        const auto rule = RoutingRule::staticK(static_cast<int>(k));
        prefill.emplace_back([&layer, &xPrefill, rule] { layer.forward(xPrefill, rule); });
        decode.emplace_back([&layer, &xDecodeSamples, decodeSamples, rule] {
            for (int64_t s = 0; s < decodeSamples; ++s)
                layer.forward(xDecodeSamples[s], rule);
        });
    }
    const int rounds = std::max(1, o.repeats);
    int done = 0;
    auto round = [&] {
        ++done;
        if (o.progress)
            o.progress("latency", done, 2 * rounds);
    };
    const auto p = fastestSecondsEach(dev, rounds, o.cancel, prefill, round);
    const auto d = fastestSecondsEach(dev, rounds, o.cancel, decode, round);
    const double perSample = 1.0 / static_cast<double>(decodeSamples);
    m.prefillOther = p[0];
    m.prefillDenseFfn = p[1];
    m.decodeOther = d[0];
    m.decodeDenseFfn = d[1] * perSample;
    for (int64_t k = 0; k < N; ++k) {
        m.prefillMoe.push_back(p[static_cast<std::size_t>(2 + k)]);
        m.decodeMoe.push_back(d[static_cast<std::size_t>(2 + k)] * perSample);
    }
    return m;
}

} // namespace ladimo::core
