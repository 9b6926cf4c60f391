// MoeLayer: one converted FFN, N SwiGLU experts plus a linear router, and its token-dispatching
// forward pass (group tokens by expert, run each expert on its tokens only, scatter-add the
// weighted outputs). The same code runs in distillation (autograd), evaluation and export checks.
// Experts may differ in size by a neuron or so; they are stored stacked and zero-padded, which is
// exact (a zero row/column contributes nothing). Not synchronised: one thread per layer object.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace ladimo::core {

// How routing weights scale the chosen experts.
//  hard:   every chosen expert has weight 1 (the router only selects); all experts = dense FFN.
//  renorm: softmax over N, renormalised over the chosen k (Mixtral); experts absorb a factor N
//          so that a uniform router with all experts active equals the dense FFN.
//  plain:  softmax over N without renormalisation, experts scaled by N likewise.
enum class Gating { Hard, Renorm, Plain };
Gating parseGating(const std::string& name);
const char* gatingName(Gating g);

// Per-layer routing rule: a static top-k, or token-adaptive top-p (the smallest set of experts
// whose cumulative routing probability reaches `threshold`, bounded by minK..maxK).
// The kinds of routing rule (names: "static", "top_p"); the fields a rule uses are its kind's.
enum class RuleKind { Static, TopP };
const char* ruleKindName(RuleKind kind);
RuleKind parseRuleKind(const std::string& name);

struct RoutingRule {
    RuleKind kind = RuleKind::Static;
    int topK = 0;         // Static: experts per token (1..N)
    double threshold = 0; // TopP: the cumulative routing weight each token's experts reach
    int minK = 1;         // TopP: at least this many experts
    int maxK = 0;         // TopP: at most this many (0 = N)
    bool isStatic() const { return kind == RuleKind::Static; }
    static RoutingRule staticK(int k)
    {
        RoutingRule r;
        r.topK = k;
        return r;
    }
    static RoutingRule topP(double p, int minK = 1, int maxK = 0)
    {
        RoutingRule r;
        r.kind = RuleKind::TopP;
        r.threshold = p;
        r.minK = minK;
        r.maxK = maxK;
        return r;
    }
};

// The same rule: the same kind with the same values of the fields that kind uses.
bool sameRule(const RoutingRule& a, const RoutingRule& b);

// What one dispatch evaluated: (token, expert) pairs and the expert parameters they touched.
struct DispatchStats {
    int64_t pairs = 0;
    int64_t parameters = 0; // the router's and shared neurons' included (MoeLayer::alwaysOnParameters per token)
};

struct MoeLayer {
    torch::Tensor router;       // [N, H]
    torch::Tensor gate, up;     // [N, S, H] (S = largest expert, zero-padded)
    torch::Tensor down;         // [N, H, S]
    std::vector<int64_t> sizes; // real neurons of each expert
    Gating gating = Gating::Hard;
    // Always-on neurons (a shared expert): a SwiGLU FFN of M neurons that every token runs,
    // unweighted, besides its routed experts. Undefined when the layer has none (M = 0).
    torch::Tensor sharedGate, sharedUp; // [M, H]
    torch::Tensor sharedDown;           // [H, M]
    // Experts narrower than this many neurons (fine-grained experts of small models) run as one
    // masked product over all experts instead of the grouped dispatch: per-expert products a few
    // columns wide cost more in overhead than the work they skip. Same values and counts either
    // way; tests set it to 0 (always grouped) or a large value (always masked) to check both.
    int64_t maskedBelowWidth = 32;

    int64_t numExperts() const { return router.size(0); }
    int64_t sharedNeurons() const { return sharedGate.defined() ? sharedGate.size(0) : 0; }
    // The dense FFN's neurons: every expert's plus the shared ones.
    int64_t denseNeurons() const;
    // The shared neurons' output for x [T, H] (zeros when there are none).
    torch::Tensor sharedOutput(const torch::Tensor& x) const;
    // Routing probabilities softmax(x router^T), float32 [T, N].
    torch::Tensor routingProbs(const torch::Tensor& x) const;
    // Chosen experts per token: a bool mask [T, N] and the gate weight of every chosen expert.
    void route(const torch::Tensor& probs, const RoutingRule& rule, torch::Tensor* mask, torch::Tensor* weights) const;
    // x: [..., H]; dispatches tokens to their experts (and adds the shared neurons' output).
    // `stats` (optional) accumulates what was evaluated, for counting activated parameters exactly.
    torch::Tensor forward(const torch::Tensor& x, const RoutingRule& rule, DispatchStats* stats = nullptr) const;
    // The routed experts' part of forward alone (no shared neurons); `stats` counts all of it.
    torch::Tensor forwardRouted(const torch::Tensor& x, const RoutingRule& rule, DispatchStats* stats = nullptr) const;
    // forward under `rule` and with every expert, as a pair: for distillation's all-experts term.
    // Narrow experts (the masked product) compute their activations once for both.
    std::pair<torch::Tensor, torch::Tensor> forwardAndAllExperts(const torch::Tensor& x, const RoutingRule& rule) const;
    // Every expert on every token, masked: the slow reference the dispatch is tested against.
    torch::Tensor forwardNaive(const torch::Tensor& x, const RoutingRule& rule) const;
    // Oracle routing, a ceiling for any router: each token uses the k experts whose own outputs
    // are largest (L2 norm), weighted as the gating does. Computes every expert: evaluation only.
    torch::Tensor forwardOracle(const torch::Tensor& x, int k, DispatchStats* stats = nullptr) const;
    // Output of each routed expert alone (unweighted), [T, N, H]; for router fitting and oracles.
    torch::Tensor expertOutputs(const torch::Tensor& x) const;

    // Parameters one token touches in an expert it uses (gate, up and down rows).
    int64_t expertParameters(int64_t expert) const
    {
        return 3 * router.size(1) * sizes[static_cast<std::size_t>(expert)];
    }
    // The router's product, which every token runs to choose its experts.
    int64_t routerParameters() const { return router.numel(); }
    // Parameters every token touches whatever it chooses: the router's and the shared neurons'.
    // A token's activated parameters are this plus expertParameters of each expert it uses.
    int64_t alwaysOnParameters() const { return routerParameters() + 3 * router.size(1) * sharedNeurons(); }
    // Parameters each token touches under a routing mask [T, N] (route()): the always-on ones plus
    // expertParameters over its chosen experts, what DispatchStats counts, per token.
    std::vector<int64_t> tokenParameters(const torch::Tensor& mask) const;

private:
    // The masked product of narrow experts: every expert's SwiGLU activations [T, N, S] for x
    // [T, H], and the down projection of (weighted) activations back to [T, H].
    torch::Tensor maskedActivations(const torch::Tensor& x) const;
    torch::Tensor maskedDown(const torch::Tensor& h) const;
};

// Stores gate and up of every expert in one [N, 2S, H] block (expert e's gate rows, then its up
// rows) and makes `l.gate` and `l.up` views of it, values unchanged. The dispatch then runs gate
// and up as one product without copying the weights on every call; layers whose gate and up are
// separate tensors still work (the dispatch concatenates them per call).
void fuseGateUp(MoeLayer& l);

} // namespace ladimo::core
