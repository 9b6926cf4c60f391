#include "moe/moeblock.h"

#include "common/error.h"

namespace ladimo::core {

Gating parseGating(const std::string& name)
{
    if (name == "hard")
        return Gating::Hard;
    if (name == "renorm")
        return Gating::Renorm;
    if (name == "plain")
        return Gating::Plain;
    throw Error("unknown gating '" + name + "' (expected hard, renorm or plain)");
}

const char* gatingName(Gating g)
{
    switch (g) {
    case Gating::Hard: return "hard";
    case Gating::Renorm: return "renorm";
    case Gating::Plain: return "plain";
    }
    return "?";
}

torch::Tensor MoeLayer::routingProbs(const torch::Tensor& x) const
{
    return torch::softmax(torch::matmul(x, router.t()).to(torch::kFloat32), -1);
}

void MoeLayer::route(const torch::Tensor& probs, const RoutingRule& rule, torch::Tensor* mask, torch::Tensor* weights) const
{
    const int64_t N = numExperts();
    auto sorted = probs.sort(-1, /*descending=*/true);
    auto values = std::get<0>(sorted);
    auto order = std::get<1>(sorted);
    torch::Tensor keep; // [T, N] over sorted positions
    auto rank = torch::arange(N, torch::TensorOptions().device(probs.device())).unsqueeze(0);
    if (rule.topK > 0) {
        if (rule.topK > N)
            throw Error("top-k " + std::to_string(rule.topK) + " exceeds the " + std::to_string(N) + " experts");
        keep = (rank < rule.topK).expand_as(values);
    } else {
        const int64_t minK = std::max<int64_t>(1, rule.minK);
        const int64_t maxK = rule.maxK > 0 ? std::min<int64_t>(rule.maxK, N) : N;
        // Experts before position r hold cumsum - value; keep r while that is still < threshold.
        auto before = values.detach().cumsum(-1) - values.detach();
        keep = (before < rule.threshold).logical_or(rank < minK).logical_and(rank < maxK);
    }
    auto m = torch::zeros_like(keep).scatter(-1, order, keep);
    *mask = m;
    if (gating == Gating::Hard) {
        *weights = m.to(probs.scalar_type());
    } else if (gating == Gating::Plain) {
        *weights = probs * m.to(probs.scalar_type());
    } else {
        auto kept = probs * m.to(probs.scalar_type());
        *weights = kept / kept.sum(-1, true).clamp_min(1e-20);
    }
}

torch::Tensor MoeLayer::forward(const torch::Tensor& xIn, const RoutingRule& rule, DispatchStats* stats) const
{
    const auto shape = xIn.sizes().vec();
    auto x = xIn.reshape({-1, shape.back()});
    torch::Tensor mask, weights;
    route(routingProbs(x), rule, &mask, &weights);
    auto out = torch::zeros_like(x);
    // Group tokens by expert: the nonzero entries of the mask, expert-major.
    auto pairs = mask.t().nonzero(); // [P, 2] rows (expert, token), sorted by expert
    if (pairs.size(0) > 0) {
        auto experts = pairs.select(1, 0).to(torch::kCPU);
        auto counts = torch::bincount(experts, {}, numExperts());
        auto tokens = pairs.select(1, 1);
        auto w = weights.t().index({pairs.select(1, 0), tokens}).to(x.scalar_type()).unsqueeze(-1);
        auto cacc = counts.accessor<int64_t, 1>();
        int64_t start = 0;
        for (int64_t e = 0; e < numExperts(); ++e) {
            const int64_t n = cacc[e];
            if (n == 0)
                continue;
            const int64_t s = sizes[static_cast<std::size_t>(e)];
            auto idx = tokens.narrow(0, start, n);
            auto xe = x.index_select(0, idx);
            auto g = gate[e].narrow(0, 0, s), u = up[e].narrow(0, 0, s), d = down[e].narrow(1, 0, s);
            // Gate and up in one matmul: one pass over the gathered rows and a wider (2S) output,
            // which BLAS runs closer to peak than two S-wide products. Weight the hidden
            // activations (S wide) rather than the output (H wide), and accumulate in place: an
            // out-of-place index_add would copy `out` once per expert.
            auto gu = torch::matmul(xe, torch::cat({g, u}, 0).t());
            auto h = torch::silu(gu.narrow(1, 0, s)) * gu.narrow(1, s, s) * w.narrow(0, start, n);
            out.index_add_(0, idx, torch::matmul(h, d.t()));
            start += n;
            if (stats) {
                stats->pairs += n;
                stats->parameters += n * expertParameters(e);
            }
        }
    }
    return out.view(shape);
}

torch::Tensor MoeLayer::expertOutputs(const torch::Tensor& x) const
{
    auto h = torch::silu(torch::einsum("th,nsh->tns", {x, gate})) * torch::einsum("th,nsh->tns", {x, up});
    return torch::einsum("tns,nhs->tnh", {h, down});
}

torch::Tensor MoeLayer::forwardOracle(const torch::Tensor& xIn, int k, DispatchStats* stats) const
{
    if (k < 1 || k > numExperts())
        throw Error("oracle top-k " + std::to_string(k) + " must be 1.." + std::to_string(numExperts()));
    const auto shape = xIn.sizes().vec();
    auto x = xIn.reshape({-1, shape.back()});
    auto all = expertOutputs(x); // [T, N, H]
    auto chosen = std::get<1>(all.norm(2, -1).topk(k, -1));
    auto mask = torch::zeros({x.size(0), numExperts()}, torch::TensorOptions().dtype(torch::kBool).device(x.device()))
                    .scatter(-1, chosen, true);
    auto probs = routingProbs(x);
    torch::Tensor weights = mask.to(probs.scalar_type());
    if (gating == Gating::Plain) {
        weights = probs * weights;
    } else if (gating == Gating::Renorm) {
        auto kept = probs * weights;
        weights = kept / kept.sum(-1, true).clamp_min(1e-20);
    }
    if (stats) {
        auto counts = mask.sum(0).to(torch::kCPU);
        for (int64_t e = 0; e < numExperts(); ++e) {
            const auto n = counts[e].item<int64_t>();
            stats->pairs += n;
            stats->parameters += n * expertParameters(e);
        }
    }
    return (all * weights.to(x.scalar_type()).unsqueeze(-1)).sum(1).view(shape);
}

torch::Tensor MoeLayer::forwardNaive(const torch::Tensor& xIn, const RoutingRule& rule) const
{
    const auto shape = xIn.sizes().vec();
    auto x = xIn.reshape({-1, shape.back()});
    torch::Tensor mask, weights;
    route(routingProbs(x), rule, &mask, &weights);
    auto all = expertOutputs(x); // [T, N, H]
    return (all * weights.to(x.scalar_type()).unsqueeze(-1)).sum(1).view(shape);
}

} // namespace ladimo::core
