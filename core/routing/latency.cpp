#include "routing/latency.h"

#include <algorithm>
#include <chrono>

#include <torch/cuda.h>

#include "common/error.h"

namespace ladimo::core {

namespace {

// Median wall time of `repeats` calls of fn after one warm-up call.
template <typename Fn>
double medianSeconds(torch::Device device, int repeats, const CancelToken* cancel, Fn&& fn)
{
    auto sync = [&] {
        if (device.is_cuda())
            torch::cuda::synchronize(device.index());
    };
    fn();
    sync();
    std::vector<double> times;
    for (int r = 0; r < std::max(1, repeats); ++r) {
        if (cancel)
            cancel->throwIfCancelled();
        const auto t0 = std::chrono::steady_clock::now();
        fn();
        sync();
        times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::nth_element(times.begin(), times.begin() + static_cast<std::ptrdiff_t>(times.size() / 2), times.end());
    return times[times.size() / 2];
}

torch::Tensor promptTokens(const LlamaModel& model, int64_t n)
{
    // Any valid ids: attention and FFN cost do not depend on the values.
    return torch::arange(n, torch::TensorOptions().dtype(torch::kLong)).remainder(model.config().vocabSize).unsqueeze(0).to(model.device());
}

} // namespace

ForwardTiming measureForward(const LlamaModel& model, const ForwardHooks* hooks, const LatencyOptions& o)
{
    torch::InferenceMode guard;
    ForwardTiming t;
    const auto prompt = promptTokens(model, o.prefillTokens);
    t.prefillSeconds = medianSeconds(model.device(), o.repeats, o.cancel, [&] { model.forward(prompt, nullptr, hooks); });
    auto cache = model.makeCache(1, o.decodeContext + 1);
    model.forward(promptTokens(model, o.decodeContext), &cache, hooks);
    const auto next = promptTokens(model, 1);
    // Each timed step rewinds the cache, so every step decodes at the same context length.
    t.decodeSeconds = medianSeconds(model.device(), o.repeats * 4, o.cancel, [&] {
        cache.length = o.decodeContext;
        model.forward(next, &cache, hooks);
    });
    return t;
}

LatencyModel measureLatency(const LlamaModel& model, const MoeLayer& layer, const torch::Tensor& sampleX,
                            const LatencyOptions& o)
{
    torch::InferenceMode guard;
    if (sampleX.dim() != 2 || sampleX.size(0) < o.prefillTokens)
        throw Error("latency model: needs at least " + std::to_string(o.prefillTokens) + " sample FFN inputs, got " +
                    std::to_string(sampleX.dim() == 2 ? sampleX.size(0) : 0));
    const int64_t N = layer.numExperts();
    const int total = static_cast<int>(2 + N);
    int done = 0;
    auto step = [&] {
        ++done;
        if (o.progress)
            o.progress("latency", done, total);
    };
    LatencyModel m;
    m.device = model.device().str();
    m.layers = model.config().numLayers;
    m.prefillTokens = o.prefillTokens;
    m.decodeContext = o.decodeContext;

    ForwardHooks skipFfn;
    skipFfn.ffnOverride = [](int, const torch::Tensor& x) { return torch::zeros_like(x); };
    const auto other = measureForward(model, &skipFfn, o);
    m.prefillOther = other.prefillSeconds;
    m.decodeOther = other.decodeSeconds;
    step();

    const auto dev = model.device();
    const auto xPrefill = sampleX.narrow(0, 0, o.prefillTokens).to(dev, model.dtype()).unsqueeze(0);
    const auto xDecode = sampleX.narrow(0, 0, 1).to(dev, model.dtype()).unsqueeze(0);
    const int mid = m.layers / 2;
    m.prefillDenseFfn = medianSeconds(dev, o.repeats, o.cancel, [&] { model.ffn(mid, xPrefill); });
    m.decodeDenseFfn = medianSeconds(dev, o.repeats * 4, o.cancel, [&] { model.ffn(mid, xDecode); });
    step();

    // Decode: average over a few different tokens, since each picks its own experts.
    const int64_t decodeSamples = std::min<int64_t>(8, sampleX.size(0));
    for (int64_t k = 1; k <= N; ++k) {
        const auto rule = RoutingRule::staticK(static_cast<int>(k));
        m.prefillMoe.push_back(medianSeconds(dev, o.repeats, o.cancel, [&] { layer.forward(xPrefill, rule); }));
        double decode = 0;
        for (int64_t s = 0; s < decodeSamples; ++s) {
            const auto xs = sampleX.narrow(0, s, 1).to(dev, model.dtype()).unsqueeze(0);
            decode += medianSeconds(dev, o.repeats, o.cancel, [&] { layer.forward(xs, rule); });
        }
        m.decodeMoe.push_back(decode / static_cast<double>(decodeSamples));
        step();
    }
    return m;
}

} // namespace ladimo::core
