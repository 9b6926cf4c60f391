#include "routing/profile.h"

#include "convert/construct.h"

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
    for (int64_t k = 1; k <= N; ++k)
        p.errorByK.push_back(relativeError(layer, x, y, RoutingRule::staticK(static_cast<int>(k))));
    std::vector<double> errorByThreshold, meanK;
    for (double t : o.thresholds) {
        const auto rule = RoutingRule::topP(t);
        errorByThreshold.push_back(relativeError(layer, x, y, rule));
        torch::Tensor mask, w;
        layer.route(probs.to(torch::kFloat32), rule, &mask, &w);
        meanK.push_back(mask.sum(-1).to(torch::kFloat64).mean().item<double>());
    }
    p.extra = {{"cumulative_mass", mass},
               {"thresholds", o.thresholds},
               {"error_by_threshold", errorByThreshold},
               {"mean_k_by_threshold", meanK}};
    return p;
}

} // namespace ladimo::core
