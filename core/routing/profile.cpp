#include "routing/profile.h"

#include <numeric>

#include "convert/construct.h"
#include "eval/perplexity.h"
#include "model/llama.h"

namespace ladimo::core {

RoutingProfile profileLayer(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y, const ProfileOptions& o)
{
    torch::NoGradGuard ng;
    const int64_t N = layer.numExperts(), T = x.size(0);
    auto probs = layer.routingProbs(x).to(torch::kFloat64);
    auto sorted = std::get<0>(probs.sort(-1, /*descending=*/true));
    RoutingProfile p;
    p.tokens = T;
    for (int b = 0; b <= o.bins; ++b)
        p.binEdges.push_back(static_cast<double>(b) / o.bins);
    for (int64_t r = 0; r < N; ++r) {
        auto h = torch::histc(sorted.select(1, r), o.bins, 0.0, 1.0).to(torch::kFloat64);
        p.rankHistograms.emplace_back(h.data_ptr<double>(), h.data_ptr<double>() + o.bins);
    }
    auto top1 = probs.argmax(-1);
    auto load = torch::bincount(top1, {}, N).to(torch::kFloat64) / static_cast<double>(T);
    p.expertLoad.assign(load.data_ptr<double>(), load.data_ptr<double>() + N);
    p.entropy = -(probs * probs.clamp_min(1e-30).log()).sum(-1).mean().item<double>();
    auto cumulative = sorted.cumsum(-1).mean(0);
    std::vector<double> mass(cumulative.data_ptr<double>(), cumulative.data_ptr<double>() + N);
    // Parameters each expert adds per token, to count what a rule activates exactly.
    auto expertParams = torch::empty({N}, torch::kFloat64);
    for (int64_t e = 0; e < N; ++e)
        expertParams[e] = static_cast<double>(layer.expertParameters(e));
    const auto probs32 = probs.to(torch::kFloat32);
    // Mean experts and mean activated parameters per token under `rule`.
    auto usage = [&](const RoutingRule& rule) {
        torch::Tensor mask, w;
        layer.route(probs32, rule, &mask, &w);
        auto m = mask.to(torch::kFloat64);
        return std::make_pair(m.sum(-1).mean().item<double>(), m.matmul(expertParams).mean().item<double>());
    };
    std::vector<double> paramsByK;
    for (int64_t k = 1; k <= N; ++k) {
        const auto rule = RoutingRule::staticK(static_cast<int>(k));
        p.errorByK.push_back(relativeError(layer, x, y, rule));
        paramsByK.push_back(usage(rule).second);
    }
    std::vector<double> errorByThreshold, meanK, paramsByThreshold;
    for (double t : o.thresholds) {
        const auto rule = RoutingRule::topP(t);
        errorByThreshold.push_back(relativeError(layer, x, y, rule));
        const auto [k, params] = usage(rule);
        meanK.push_back(k);
        paramsByThreshold.push_back(params);
    }
    const double denseParams =
        o.denseParameters > 0 ? static_cast<double>(o.denseParameters)
                              : static_cast<double>(3 * x.size(1)) *
                                    static_cast<double>(std::accumulate(layer.sizes.begin(), layer.sizes.end(), int64_t{0}));
    p.extra = {{"cumulative_mass", mass},
               {"thresholds", o.thresholds},
               {"error_by_threshold", errorByThreshold},
               {"mean_k_by_threshold", meanK},
               {"params_by_threshold", paramsByThreshold},
               {"params_by_k", paramsByK},
               {"dense_parameters", denseParams}};
    return p;
}

std::vector<LayerSensitivity> layerSensitivity(const LlamaModel& model, const std::vector<MoeLayer>& layers,
                                               const std::vector<int64_t>& stream, int64_t seqLen,
                                               const RoutingRule& rule, const CancelToken* cancel)
{
    EvalOptions base;
    base.seqLen = seqLen;
    if (cancel)
        base.cancel = *cancel;
    const double denseNll = evaluatePerplexity(model, stream, base).nll;
    std::vector<LayerSensitivity> out;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        ForwardHooks hooks;
        hooks.ffnOverride = [&layers, &rule, l](int layer, const torch::Tensor& x) -> torch::Tensor {
            return layer == static_cast<int>(l) ? layers[l].forward(x, rule) : torch::Tensor();
        };
        EvalOptions o = base;
        o.hooks = &hooks;
        o.reference = &model;
        const auto r = evaluatePerplexity(model, stream, o);
        out.push_back({r.klToReference, r.nll - denseNll});
    }
    return out;
}

} // namespace ladimo::core
