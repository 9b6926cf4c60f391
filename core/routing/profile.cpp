#include "routing/profile.h"

#include <numeric>

#include "convert/experts.h"
#include "convert/convert.h"
#include "eval/perplexity.h"
#include "model/llama.h"

namespace ladimo::core {

RoutingProfile profileLayer(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y,
                            const ProfileOptions& o)
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
    // Parameters each expert adds per token, to count what a rule activates exactly (plus the
    // router's and shared neurons', which every token pays).
    auto expertParams = torch::empty({N}, torch::kFloat64);
    for (int64_t e = 0; e < N; ++e)
        expertParams[e] = static_cast<double>(layer.expertParameters(e));
    const auto probs32 = probs.to(torch::kFloat32);
    // Mean experts and mean activated parameters per token under `rule`.
    auto usage = [&](const RoutingRule& rule) {
        torch::Tensor mask, w;
        layer.route(probs32, rule, &mask, &w);
        auto m = mask.to(torch::kFloat64);
        return std::make_pair(m.sum(-1).mean().item<double>(),
                              m.matmul(expertParams).mean().item<double>()
                                  + static_cast<double>(layer.alwaysOnParameters()));
    };
    std::vector<RoutingRule> rules;
    for (int64_t k = 1; k <= N; ++k)
        rules.push_back(RoutingRule::staticK(static_cast<int>(k)));
    for (double t : o.thresholds)
        rules.push_back(RoutingRule::topP(t));
    const auto errors = relativeErrors(layer, x, y, rules);
    p.errorByK.assign(errors.begin(), errors.begin() + N);
    const std::vector<double> errorByThreshold(errors.begin() + N, errors.end());
    std::vector<double> paramsByK, meanK, paramsByThreshold;
    for (int64_t k = 1; k <= N; ++k)
        paramsByK.push_back(usage(rules[static_cast<std::size_t>(k - 1)]).second);
    for (std::size_t i = 0; i < o.thresholds.size(); ++i) {
        const auto [k, params] = usage(rules[static_cast<std::size_t>(N) + i]);
        meanK.push_back(k);
        paramsByThreshold.push_back(params);
    }
    const double denseParams = o.denseParameters > 0
        ? static_cast<double>(o.denseParameters)
        : static_cast<double>(3 * x.size(1)) * static_cast<double>(layer.denseNeurons());
    p.extra = {{"cumulative_mass", mass},
               {"thresholds", o.thresholds},
               {"error_by_threshold", errorByThreshold},
               {"mean_k_by_threshold", meanK},
               {"params_by_threshold", paramsByThreshold},
               {"params_by_k", paramsByK},
               {"dense_parameters", denseParams}};
    return p;
}

std::vector<LayerSensitivity> layerSensitivity(const LlamaModel& model, const MoeLayers& layers,
                                               const std::vector<int64_t>& stream, int64_t seqLen,
                                               const RoutingRule& rule, CancelToken cancel)
{
    EvalOptions base;
    base.seqLen = seqLen;
    base.cancel = cancel;
    const double denseNll = evaluatePerplexity(model, stream, base).nll;
    std::vector<LayerSensitivity> out;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto held = layers.get(l); // read once for all of this layer's passes
        ForwardHooks hooks;
        hooks.ffnOverride = [&held, &rule, l](int layer, const torch::Tensor& x) -> torch::Tensor {
            return layer == static_cast<int>(l) ? held->forward(x, rule) : torch::Tensor();
        };
        EvalOptions o = base;
        o.hooks = &hooks;
        o.reference = &model;
        const auto r = evaluatePerplexity(model, stream, o);
        out.push_back({r.klToReference, r.nll - denseNll});
    }
    return out;
}

std::vector<RoutingProfile> profileConversion(const LlamaModel& model, const MoeLayers& layers, int64_t runId,
                                              const std::vector<int64_t>& stream,
                                              const ConversionProfileOptions& options, CancelToken cancel,
                                              const ProgressFn& progress)
{
    const auto check = [cancel]() { cancel.throwIfCancelled(); };
    std::vector<torch::Tensor> xs, ys;
    CaptureOptions co;
    co.spillDir = options.spillDir;
    co.memoryBudget = options.memoryBudget;
    captureFfn(model, stream, options.seqLen, &xs, &ys, co);
    ProfileOptions po;
    po.bins = options.bins;
    const auto& cfg = model.config();
    po.denseParameters = 3 * cfg.hiddenSize * cfg.intermediateSize;
    std::vector<RoutingProfile> profiles;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        check();
        auto p = profileLayer(*layers.get(l), xs[l], ys[l], po);
        xs[l] = torch::Tensor(); // done with this layer's activations
        ys[l] = torch::Tensor();
        p.runId = runId;
        p.layer = static_cast<int>(l);
        profiles.push_back(std::move(p));
        if (progress)
            progress("profile", static_cast<double>(l + 1), static_cast<double>(layers.size()));
    }
    xs.clear();
    ys.clear();
    if (options.sensitivityTokens > 0 && !layers.empty()) {
        // How much each layer's error moves the model's output: KL to dense and NLL increase with
        // only that layer converted, at a k in the range policies use.
        const int64_t N = layers.numExperts();
        const int k = std::max<int>(1, static_cast<int>(std::lround(0.625 * static_cast<double>(N))));
        const auto n = std::min<int64_t>(options.sensitivityTokens, static_cast<int64_t>(stream.size()));
        const std::vector<int64_t> head(stream.begin(), stream.begin() + n);
        const auto sens = layerSensitivity(model, layers, head, options.seqLen, RoutingRule::staticK(k), cancel);
        for (std::size_t l = 0; l < profiles.size(); ++l) {
            auto& extra = profiles[l].extra;
            const double err = profiles[l].errorByK[static_cast<std::size_t>(k - 1)];
            extra["sensitivity_k"] = k;
            extra["sensitivity_tokens"] = static_cast<int64_t>(head.size());
            extra["sensitivity_kl"] = sens[l].kl;
            extra["sensitivity_nll"] = sens[l].nllIncrease;
            if (err > 0 && sens[l].kl > 0) {
                extra["kl_per_error"] = sens[l].kl / err;
                // Harm to the likelihood of real text; never below the KL (a small sample can
                // even show a small gain).
                extra["nll_per_error"] = std::max(sens[l].nllIncrease, sens[l].kl) / err;
            }
        }
    }
    check();
    return profiles;
}

} // namespace ladimo::core
