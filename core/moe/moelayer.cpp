#include "moe/moelayer.h"

#include "common/cputeam.h"
#include "common/error.h"
#include "common/names.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>

#include <ATen/Parallel.h>

namespace ladimo::core {

namespace {
constexpr NameTable<Gating, 3> kGatingNames{
    {{Gating::Hard, "hard"}, {Gating::Renorm, "renorm"}, {Gating::Plain, "plain"}}};
constexpr NameTable<RuleKind, 2> kRuleKindNames{{{RuleKind::Static, "static"}, {RuleKind::TopP, "top_p"}}};
} // namespace

Gating parseGating(const std::string& name) { return parseNamed(kGatingNames, name, "gating"); }
const char* gatingName(Gating g) { return nameOf(kGatingNames, g); }
RuleKind parseRuleKind(const std::string& name) { return parseNamed(kRuleKindNames, name, "rule kind"); }
const char* ruleKindName(RuleKind kind) { return nameOf(kRuleKindNames, kind); }

bool sameRule(const RoutingRule& a, const RoutingRule& b)
{
    if (a.kind != b.kind)
        return false;
    return a.isStatic() ? a.topK == b.topK : a.threshold == b.threshold && a.minK == b.minK && a.maxK == b.maxK;
}

torch::Tensor MoeLayer::routingProbs(const torch::Tensor& x) const
{
    return torch::softmax(torch::matmul(x, router.t()).to(torch::kFloat32), -1);
}

void MoeLayer::route(const torch::Tensor& probs, const RoutingRule& rule, torch::Tensor* mask,
                     torch::Tensor* weights) const
{
    const int64_t N = numExperts();
    auto sorted = probs.sort(-1, /*descending=*/true);
    auto values = std::get<0>(sorted);
    auto order = std::get<1>(sorted);
    torch::Tensor keep; // [T, N] over sorted positions
    auto rank = torch::arange(N, torch::TensorOptions().device(probs.device())).unsqueeze(0);
    if (rule.isStatic()) {
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
        const auto hard = m.to(probs.scalar_type());
        // A router being trained (the end-to-end stage's --e2e-routers) gets a straight-through
        // gradient: each chosen expert still weighs exactly 1, and its router probability gets
        // the gradient of scaling its output.
        *weights = probs.requires_grad() ? hard + (probs - probs.detach()) * hard : hard;
    } else if (gating == Gating::Plain) {
        *weights = probs * m.to(probs.scalar_type());
    } else {
        auto kept = probs * m.to(probs.scalar_type());
        *weights = kept / kept.sum(-1, true).clamp_min(1e-20);
    }
}

namespace {

bool fastCpu(const torch::Tensor& t)
{
    return t.is_cpu() && (t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64);
}

// dst = src[idx] (rows). dst and src contiguous, idx int64.
void gatherRows(torch::Tensor& dst, const torch::Tensor& src, const torch::Tensor& idx)
{
    if (!fastCpu(src)) {
        at::index_select_out(dst, src, 0, idx);
        return;
    }
    const auto bytes = static_cast<std::size_t>(src.size(1) * src.element_size());
    const auto* from = static_cast<const char*>(src.data_ptr());
    auto* to = static_cast<char*>(dst.data_ptr());
    const auto* at = idx.data_ptr<int64_t>();
    at::parallel_for(0, idx.size(0), 32, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i)
            std::memcpy(to + static_cast<std::size_t>(i) * bytes, from + static_cast<std::size_t>(at[i]) * bytes,
                        bytes);
    });
}

// out[idx[i]] += w[i] * rows[i] (w undefined: weight 1). The indices of one expert never repeat,
// so the rows are added in parallel without atomics.
void scatterAddRows(torch::Tensor& out, const torch::Tensor& rows, const torch::Tensor& idx, const torch::Tensor& w)
{
    if (!fastCpu(out)) {
        out.index_add_(0, idx, w.defined() ? rows * w.unsqueeze(1) : rows);
        return;
    }
    const int64_t H = out.size(1);
    const auto* at = idx.data_ptr<int64_t>();
    AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "scatterAddRows", [&] {
        const scalar_t* src = rows.data_ptr<scalar_t>();
        const scalar_t* weight = w.defined() ? w.data_ptr<scalar_t>() : nullptr;
        scalar_t* dst = out.data_ptr<scalar_t>();
        at::parallel_for(0, idx.size(0), 16, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) {
                scalar_t* __restrict o = dst + at[i] * H;
                const scalar_t* __restrict in = src + i * H;
                const scalar_t s = weight ? weight[i] : scalar_t(1);
                for (int64_t c = 0; c < H; ++c)
                    o[c] += s * in[c];
            }
        });
    });
}

// The (token, expert) pairs of a routing mask [T, N] on the CPU, expert-major with tokens in
// order (what mask.t().nonzero() lists), their weights as `dtype`, and the pairs per expert: one
// counting pass and one filling pass instead of a transpose, nonzero, gather and bincount.
void listPairs(const torch::Tensor& maskIn, const torch::Tensor& weightsIn, torch::ScalarType dtype,
               torch::Tensor* tokens, torch::Tensor* w, std::vector<int64_t>* counts)
{
    const auto mask = maskIn.contiguous();
    const auto weights = weightsIn.to(torch::kFloat32).contiguous();
    const int64_t T = mask.size(0), N = mask.size(1);
    const bool* m = mask.data_ptr<bool>();
    const float* wt = weights.data_ptr<float>();
    counts->assign(static_cast<std::size_t>(N), 0);
    for (int64_t i = 0; i < T * N; ++i)
        (*counts)[static_cast<std::size_t>(i % N)] += m[i] ? 1 : 0;
    std::vector<int64_t> next(static_cast<std::size_t>(N), 0);
    int64_t P = 0;
    for (int64_t e = 0; e < N; ++e) {
        next[static_cast<std::size_t>(e)] = P;
        P += (*counts)[static_cast<std::size_t>(e)];
    }
    *tokens = torch::empty({P}, torch::kLong);
    auto wf = torch::empty({P}, torch::kFloat32);
    int64_t* tk = tokens->data_ptr<int64_t>();
    float* wp = wf.data_ptr<float>();
    for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < N; ++e)
            if (m[t * N + e]) {
                const int64_t at = next[static_cast<std::size_t>(e)]++;
                tk[at] = t;
                wp[at] = wt[t * N + e];
            }
    *w = wf.to(dtype);
}

// Rows per tile: every per-tile buffer stays within about 2 MiB, so the buffers are reused from
// cache, not first-touched (page-faulted) memory, while each product keeps enough rows for BLAS.
int64_t tileRows(int64_t H, int64_t S)
{
    return std::clamp<int64_t>((int64_t{1} << 21) / (4 * std::max(H, 2 * S)), 128, 4096);
}

// The pairs of each expert whose tokens lie in [t0, t1) of T tokens: [lo, hi) per expert. Within
// an expert's block the pairs are in token order (the listing is expert-major, tokens ascending).
std::vector<std::pair<int64_t, int64_t>> pairsOfTokens(const torch::Tensor& tokens, const std::vector<int64_t>& counts,
                                                       int64_t t0, int64_t t1, int64_t T)
{
    std::vector<std::pair<int64_t, int64_t>> ranges;
    const bool all = t0 == 0 && t1 == T; // also for tokens on a GPU, which are not searched
    const int64_t* tk = all ? nullptr : tokens.data_ptr<int64_t>();
    int64_t first = 0;
    for (const int64_t count : counts) {
        if (all)
            ranges.emplace_back(first, first + count);
        else
            ranges.emplace_back(std::lower_bound(tk + first, tk + first + count, t0) - tk,
                                std::lower_bound(tk + first, tk + first + count, t1) - tk);
        first += count;
    }
    return ranges;
}

// Rows of the largest tile over these ranges (at most `tile`): what the tile buffers need.
int64_t largestTile(const std::vector<std::pair<int64_t, int64_t>>& ranges, int64_t tile)
{
    int64_t rows = 0;
    for (const auto& [lo, hi] : ranges)
        rows = std::max(rows, std::min(tile, hi - lo));
    return rows;
}

// Calls f(expert, first pair, rows) for every tile of every expert's range of pairs, in order.
template <class F> void forEachTile(const std::vector<std::pair<int64_t, int64_t>>& ranges, int64_t tile, F&& f)
{
    for (std::size_t e = 0; e < ranges.size(); ++e)
        for (int64_t p = ranges[e].first; p < ranges[e].second; p += tile)
            f(static_cast<int64_t>(e), p, std::min(tile, ranges[e].second - p));
}

// What every share must have at least: multiply-adds (pairs x S x H), since waking a team member
// costs tens of microseconds, and tokens, since every share reads the weights of all experts its
// tokens use: with few tokens per share the products are bound by reading weights, and splitting
// would read them once per share instead of once (decoding a token runs unsplit, with the BLAS's
// own threads on every product).
constexpr int64_t kShareWork = int64_t{1} << 20;
constexpr int64_t kShareTokens = 32;
// Per-share expert gradient buffers larger than this run the backward as one share (below).
constexpr int64_t kMaxShareGradBytes = int64_t{64} << 20;

// Runs part(i, n) for i in [0, n): n equal shares of the tokens, each with all their pairs, so
// shares write disjoint rows. On the CPU the team runs them, n = the team's size or fewer so that
// every share has kShareWork and kShareTokens; elsewhere (and for small work) part(0, 1) runs here. The team gives
// the same bits whether or not it was free (see CpuTeam::run), and n depends on the shapes only,
// so results are reproducible. Grad and inference mode are per thread: every share runs with the
// caller's inference mode and without autograd (the parts run inside an autograd function).
template <class F>
void onTokenShares(const torch::Tensor& x, int64_t work, F&& part, int64_t maxShares = std::numeric_limits<int>::max())
{
    const bool inference = c10::InferenceMode::is_enabled();
    const std::function<void(int, int)> share = [&](int i, int n) {
        c10::InferenceMode inferenceMode(inference);
        torch::NoGradGuard noGrad;
        part(i, n);
    };
    const int64_t shares = std::min<int64_t>({work / kShareWork, x.size(0) / kShareTokens, maxShares});
    if (fastCpu(x) && shares >= 2)
        CpuTeam::instance().run(share, static_cast<int>(shares));
    else
        share(0, 1);
}

// Gate and up as one [N, 2S, H] tensor: a view when fuseGateUp laid them out that way, else a copy.
torch::Tensor gateUpBlock(const torch::Tensor& gate, const torch::Tensor& up)
{
    const int64_t N = gate.size(0), S = gate.size(1), H = gate.size(2);
    const std::vector<int64_t> fused = {2 * S * H, H, 1};
    if (gate.strides().vec() == fused && up.strides().vec() == fused && up.sizes() == gate.sizes()
        && up.scalar_type() == gate.scalar_type() && up.device() == gate.device()
        && up.storage().is_alias_of(gate.storage()) && up.storage_offset() == gate.storage_offset() + S * H)
        return gate.as_strided({N, 2 * S, H}, fused);
    return torch::cat({gate, up}, 1);
}

// The forward of the experts for the tokens in [t0, t1) only: their rows of `out` are written
// (zeroed, then every pair's weighted output added); other rows are not touched, so disjoint
// token ranges can run at the same time. Within each expert's block the pairs are in token order.
// `pre` (training): the gate/up pre-activations of every pair [P, 2S]; else a tile buffer is used.
void forwardTokens(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& gu, const torch::Tensor& down,
                   const torch::Tensor& tokens, const std::vector<int64_t>& counts, int64_t t0, int64_t t1,
                   torch::Tensor& out, const torch::Tensor& pre)
{
    const int64_t T = x.size(0), H = x.size(1), S = down.size(2);
    const int64_t R = tileRows(H, S);
    const auto o = x.options();
    out.narrow(0, t0, t1 - t0).zero_();
    const auto ranges = pairsOfTokens(tokens, counts, t0, t1, T);
    const int64_t rows = largestTile(ranges, R);
    if (rows == 0)
        return;
    auto scratch = pre.defined() ? pre : torch::empty({rows, 2 * S}, o);
    auto xt = torch::empty({rows, H}, o), yt = torch::empty({rows, H}, o), ht = torch::empty({rows, S}, o);
    forEachTile(ranges, R, [&](int64_t e, int64_t first, int64_t m) {
        auto idx = tokens.narrow(0, first, m);
        auto xe = xt.narrow(0, 0, m), ye = yt.narrow(0, 0, m), he = ht.narrow(0, 0, m);
        auto ae = scratch.narrow(0, pre.defined() ? first : 0, m);
        gatherRows(xe, x, idx);
        if (m == 1) { // one token (decoding): matrix-vector products, see timesTransposed in llama.cpp
            auto row = ae[0];
            at::mv_out(row, gu[e], xe[0]);
        } else {
            at::mm_out(ae, xe, gu[e].t());
        }
        at::silu_out(he, ae.narrow(1, 0, S));
        he.mul_(ae.narrow(1, S, S));
        if (m == 1) {
            auto row = ye[0];
            at::mv_out(row, down[e], he[0]);
        } else {
            at::mm_out(ye, he, down[e].t());
        }
        scatterAddRows(out, ye, idx, w.narrow(0, first, m));
    });
}

// The backward for the tokens in [t0, t1) only: their rows of gx and their pairs' entries of gw
// are written (other entries untouched); the experts' gradients of these pairs are added to ggu
// and gd, which must belong to this share alone. Undefined outputs are not computed.
void backwardTokens(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& gu, const torch::Tensor& down,
                    const torch::Tensor& tokens, const std::vector<int64_t>& counts, const torch::Tensor& pre,
                    const torch::Tensor& go, int64_t t0, int64_t t1, torch::Tensor& gx, torch::Tensor& gw,
                    torch::Tensor& ggu, torch::Tensor& gd)
{
    const int64_t T = x.size(0), H = x.size(1), S = down.size(2);
    const int64_t R = tileRows(H, S);
    const auto o = x.options();
    if (gx.defined())
        gx.narrow(0, t0, t1 - t0).zero_();
    const auto ranges = pairsOfTokens(tokens, counts, t0, t1, T);
    const int64_t rows = largestTile(ranges, R);
    if (rows == 0)
        return;
    auto gt = torch::empty({rows, H}, o), xt = torch::empty({rows, H}, o), st = torch::empty({rows, S}, o);
    auto ht = torch::empty({rows, S}, o), dt = torch::empty({rows, S}, o), dat = torch::empty({rows, 2 * S}, o);
    auto gxt = gx.defined() ? torch::empty({rows, H}, o) : torch::Tensor();
    forEachTile(ranges, R, [&](int64_t e, int64_t first, int64_t m) {
        auto idx = tokens.narrow(0, first, m);
        auto we = w.narrow(0, first, m).unsqueeze(1);
        auto ae = pre.narrow(0, first, m);
        auto g = ae.narrow(1, 0, S), u = ae.narrow(1, S, S);
        auto ge = gt.narrow(0, 0, m), se = st.narrow(0, 0, m), he = ht.narrow(0, 0, m), dh = dt.narrow(0, 0, m);
        auto dae = dat.narrow(0, 0, m);
        gatherRows(ge, go, idx);
        at::silu_out(se, g);
        at::mul_out(he, se, u);
        at::mm_out(dh, ge, down[e]); // dL/dh before the routing weight
        if (gw.defined()) {
            auto gwe = gw.narrow(0, first, m);
            at::sum_out(gwe, dh * he, {1});
        }
        dh.mul_(we);
        if (gd.defined()) {
            he.mul_(we);
            auto gde = gd[e];
            gde.addmm_(ge.t(), he);
        }
        auto dau = dae.narrow(1, S, S), dag = dae.narrow(1, 0, S);
        at::mul_out(dau, dh, se);                  // d/du = dh * silu(g)
        at::silu_backward_out(dag, dh.mul_(u), g); // d/dg = dh * u * silu'(g)
        if (ggu.defined()) {
            auto xe = xt.narrow(0, 0, m);
            gatherRows(xe, x, idx);
            auto ggue = ggu[e];
            ggue.addmm_(dae.t(), xe);
        }
        if (gx.defined()) {
            auto gxe = gxt.narrow(0, 0, m);
            at::mm_out(gxe, dae, gu[e]);
            scatterAddRows(gx, gxe, idx, {});
        }
    });
}

// The experts of one MoE block over (token, expert) pairs listed expert-major, as one autograd
// function: training, evaluation and export checks all run this code. Per block of an expert's
// pairs: gather the rows, one product for gate and up together, the SwiGLU activation, the down
// product, and a weighted scatter-add into the output. Training keeps the gate/up pre-activations
// [pairs, 2S]; everything else is recomputed in the backward, which mirrors the forward. On the
// CPU, forward and backward split the tokens into shares for the CPU team: each member runs every
// expert on its own tokens with a single-threaded BLAS, so the gathers, activations and
// scatter-adds between the products run on every core too (with OpenBLAS's own threading they ran
// on one core while the other waited, and the small per-expert products split poorly). The shares'
// expert gradients are summed in a fixed order.
struct ExpertsFn : public torch::autograd::Function<ExpertsFn> {
    static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                                 const torch::Tensor& gate, const torch::Tensor& up, const torch::Tensor& down,
                                 const torch::Tensor& tokens, const std::vector<int64_t>& counts, bool training)
    {
        const int64_t T = x.size(0), H = x.size(1), S = gate.size(1), P = tokens.size(0);
        auto gu = gateUpBlock(gate, up); // [N, 2S, H]
        auto out = torch::empty({T, H}, x.options());
        auto pre = training ? torch::empty({P, 2 * S}, x.options()) : torch::Tensor();
        onTokenShares(x, P * S * H, [&](int i, int n) {
            forwardTokens(x, w, gu, down, tokens, counts, T * i / n, T * (i + 1) / n, out, pre);
        });
        if (training) {
            ctx->save_for_backward({x, w, gate, up, down, tokens, pre});
            ctx->saved_data["counts"] = c10::IValue(counts);
        }
        return out;
    }

    static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                   torch::autograd::variable_list grads)
    {
        const auto saved = ctx->get_saved_variables();
        const auto &x = saved[0], &w = saved[1], &gate = saved[2], &up = saved[3], &down = saved[4], &tokens = saved[5];
        const auto& pre = saved[6];
        const auto counts = ctx->saved_data["counts"].toIntVector();
        const bool needX = ctx->needs_input_grad(0), needW = ctx->needs_input_grad(1);
        const bool needExperts = ctx->needs_input_grad(2) || ctx->needs_input_grad(3) || ctx->needs_input_grad(4);
        const auto go = grads[0].contiguous();
        const int64_t T = x.size(0), H = x.size(1), N = gate.size(0), S = gate.size(1), P = tokens.size(0);
        const auto o = x.options();
        torch::Tensor gx, gw, ggu, gd;
        if (needX)
            gx = torch::empty({T, H}, o);
        if (needW)
            gw = torch::empty({P}, o);
        auto gu = needX ? gateUpBlock(gate, up) : torch::Tensor();
        // Every share of the tokens accumulates its own expert gradients; they are summed after.
        // Experts whose gradients take more than kMaxShareGradBytes (a 7B-sized layer's take 0.5 GB)
        // run as one share instead: a copy per team member would cost more memory than the
        // split saves time, and the BLAS's own threads handle products of that size well.
        const int64_t gradBytes = N * 3 * S * H * static_cast<int64_t>(o.dtype().itemsize());
        const int64_t maxShares = needExperts && gradBytes > kMaxShareGradBytes ? 1 : std::numeric_limits<int>::max();
        const auto shares = static_cast<std::size_t>(std::max(1, CpuTeam::instance().size()));
        std::vector<torch::Tensor> shareGgu(shares), shareGd(shares);
        onTokenShares(
            x, P * S * H,
            [&](int i, int n) {
                torch::Tensor myGgu, myGd;
                if (needExperts) {
                    myGgu = torch::zeros({N, 2 * S, H}, o);
                    myGd = torch::zeros({N, H, S}, o);
                }
                backwardTokens(x, w, gu, down, tokens, counts, pre, go, T * i / n, T * (i + 1) / n, gx, gw, myGgu,
                               myGd);
                shareGgu.at(static_cast<std::size_t>(i)) = myGgu;
                shareGd.at(static_cast<std::size_t>(i)) = myGd;
            },
            maxShares);
        if (needExperts) {
            ggu = shareGgu[0];
            gd = shareGd[0];
            for (std::size_t i = 1; i < shares; ++i)
                if (shareGgu[i].defined()) {
                    ggu.add_(shareGgu[i]);
                    gd.add_(shareGd[i]);
                }
        }
        torch::Tensor gGate, gUp;
        if (needExperts) {
            gGate = ggu.narrow(1, 0, S);
            gUp = ggu.narrow(1, S, S);
        }
        return {gx, gw, gGate, gUp, gd, {}, {}, {}};
    }
};

} // namespace

namespace {

// The routed experts' output plus the shared neurons' (when the layer has any) for the same x.
torch::Tensor plusShared(const MoeLayer& l, const torch::Tensor& routed, const torch::Tensor& x)
{
    return l.sharedGate.defined() ? routed + l.sharedOutput(x) : routed;
}

} // namespace

torch::Tensor MoeLayer::forward(const torch::Tensor& xIn, const RoutingRule& rule, DispatchStats* stats) const
{
    auto routed = forwardRouted(xIn, rule, stats);
    return plusShared(*this, routed, xIn);
}

torch::Tensor MoeLayer::maskedActivations(const torch::Tensor& x) const
{
    const int64_t N = numExperts(), S = gate.size(1), H = x.size(1);
    // Training needs the concatenation: the fused block is a strided view of `gate` alone, through
    // which autograd would give up's gradient to gate.
    const bool grads = torch::GradMode::is_enabled() && (gate.requires_grad() || up.requires_grad());
    auto block = grads ? torch::cat({gate, up}, 1) : gateUpBlock(gate, up);
    auto pre = torch::matmul(x, block.reshape({N * 2 * S, H}).t()).view({-1, N, 2 * S});
    return torch::silu(pre.narrow(2, 0, S)) * pre.narrow(2, S, S);
}

torch::Tensor MoeLayer::maskedDown(const torch::Tensor& h) const
{
    const int64_t N = numExperts(), S = gate.size(1), H = down.size(1);
    return torch::matmul(h.reshape({-1, N * S}), down.permute({0, 2, 1}).reshape({N * S, H}));
}

std::pair<torch::Tensor, torch::Tensor> MoeLayer::forwardAndAllExperts(const torch::Tensor& xIn,
                                                                       const RoutingRule& rule) const
{
    const auto all = RoutingRule::staticK(static_cast<int>(numExperts()));
    if (gate.size(1) >= maskedBelowWidth)
        return {forward(xIn, rule), forward(xIn, all)};
    // The masked product computes every expert's activations anyway: both outputs weigh the same ones.
    const auto shape = xIn.sizes().vec();
    auto x = xIn.reshape({-1, shape.back()}).contiguous();
    const auto probs = routingProbs(x);
    torch::Tensor mask, weights, allMask, allWeights;
    route(probs, rule, &mask, &weights);
    route(probs, all, &allMask, &allWeights);
    const auto h = maskedActivations(x);
    auto out = maskedDown(h * weights.to(x.scalar_type()).unsqueeze(2)).view(shape);
    auto full = maskedDown(gating == Gating::Hard ? h : h * allWeights.to(x.scalar_type()).unsqueeze(2)).view(shape);
    if (!sharedGate.defined())
        return {out, full};
    const auto shared = sharedOutput(xIn); // once for both
    return {out + shared, full + shared};
}

int64_t MoeLayer::denseNeurons() const { return std::accumulate(sizes.begin(), sizes.end(), sharedNeurons()); }

torch::Tensor MoeLayer::sharedOutput(const torch::Tensor& x) const
{
    if (!sharedGate.defined())
        return torch::zeros_like(x);
    return torch::matmul(torch::silu(torch::matmul(x, sharedGate.t())) * torch::matmul(x, sharedUp.t()),
                         sharedDown.t());
}

torch::Tensor MoeLayer::forwardRouted(const torch::Tensor& xIn, const RoutingRule& rule, DispatchStats* stats) const
{
    const auto shape = xIn.sizes().vec();
    auto x = xIn.reshape({-1, shape.back()}).contiguous();
    torch::Tensor mask, weights;
    route(routingProbs(x), rule, &mask, &weights);
    // What the dispatch evaluates: the router for every token, and each expert for its tokens.
    const auto countStats = [&](const std::vector<int64_t>& counts) {
        if (!stats)
            return;
        stats->parameters += x.size(0) * alwaysOnParameters();
        for (int64_t e = 0; e < numExperts(); ++e) {
            stats->pairs += counts[static_cast<std::size_t>(e)];
            stats->parameters += counts[static_cast<std::size_t>(e)] * expertParameters(e);
        }
    };
    if (gate.size(1) < maskedBelowWidth) {
        // Narrow (fine-grained) experts: the per-expert products would be a few columns wide and
        // their overhead would dominate; every expert runs on every token as one product, and the
        // weights (zero for experts not chosen) select. Same values; the counts are the
        // dispatch's, what a sparse kernel evaluates. No token lists are needed.
        if (stats) {
            const auto perExpert = mask.sum(0).to(torch::kCPU, torch::kInt64).contiguous();
            countStats({perExpert.data_ptr<int64_t>(), perExpert.data_ptr<int64_t>() + numExperts()});
        }
        return maskedDown(maskedActivations(x) * weights.to(x.scalar_type()).unsqueeze(2)).view(shape);
    }
    // Group tokens by expert: the nonzero entries of the mask, expert-major.
    torch::Tensor tokens, w;
    std::vector<int64_t> counts;
    if (mask.is_cpu() && mask.scalar_type() == torch::kBool
        && !(torch::GradMode::is_enabled() && weights.requires_grad())) {
        listPairs(mask, weights, x.scalar_type(), &tokens, &w, &counts);
    } else {
        auto pairs = mask.t().nonzero(); // [P, 2] rows (expert, token), sorted by expert
        auto experts = pairs.select(1, 0);
        tokens = pairs.select(1, 1).contiguous();
        w = weights.t().index({experts, tokens}).to(x.scalar_type()).contiguous();
        const auto countTensor = torch::bincount(experts.to(torch::kCPU), {}, numExperts());
        counts.assign(countTensor.data_ptr<int64_t>(), countTensor.data_ptr<int64_t>() + numExperts());
    }
    countStats(counts);
    if (tokens.size(0) == 0)
        return torch::zeros_like(xIn);
    // Whether autograd records this call (the backward then needs the pre-activations).
    const bool training = torch::GradMode::is_enabled()
        && (x.requires_grad() || w.requires_grad() || gate.requires_grad() || up.requires_grad()
            || down.requires_grad());
    return ExpertsFn::apply(x, w, gate, up, down, tokens, counts, training).view(shape);
}

std::vector<int64_t> MoeLayer::tokenParameters(const torch::Tensor& mask) const
{
    const auto m = mask.to(torch::kCPU, torch::kBool).contiguous();
    const int64_t T = m.size(0), N = numExperts();
    const bool* chosen = m.data_ptr<bool>();
    std::vector<int64_t> out(static_cast<std::size_t>(T), alwaysOnParameters());
    for (int64_t t = 0; t < T; ++t)
        for (int64_t e = 0; e < N; ++e)
            if (chosen[t * N + e])
                out[static_cast<std::size_t>(t)] += expertParameters(e);
    return out;
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
        stats->parameters += x.size(0) * alwaysOnParameters(); // the routing weights need the router
        auto counts = mask.sum(0).to(torch::kCPU);
        for (int64_t e = 0; e < numExperts(); ++e) {
            const auto n = counts[e].item<int64_t>();
            stats->pairs += n;
            stats->parameters += n * expertParameters(e);
        }
    }
    auto routed = (all * weights.to(x.scalar_type()).unsqueeze(-1)).sum(1).view(shape);
    return plusShared(*this, routed, xIn);
}

torch::Tensor MoeLayer::forwardNaive(const torch::Tensor& xIn, const RoutingRule& rule) const
{
    const auto shape = xIn.sizes().vec();
    auto x = xIn.reshape({-1, shape.back()});
    torch::Tensor mask, weights;
    route(routingProbs(x), rule, &mask, &weights);
    auto all = expertOutputs(x); // [T, N, H]
    auto routed = (all * weights.to(x.scalar_type()).unsqueeze(-1)).sum(1).view(shape);
    return plusShared(*this, routed, xIn);
}

void fuseGateUp(MoeLayer& l)
{
    const int64_t S = l.gate.size(1);
    torch::NoGradGuard noGrad;
    auto block = torch::cat({l.gate.detach(), l.up.detach()}, 1).contiguous();
    const bool gateGrad = l.gate.requires_grad(), upGrad = l.up.requires_grad();
    l.gate = block.narrow(1, 0, S);
    l.up = block.narrow(1, S, S);
    if (gateGrad)
        l.gate.set_requires_grad(true);
    if (upGrad)
        l.up.set_requires_grad(true);
}

} // namespace ladimo::core
