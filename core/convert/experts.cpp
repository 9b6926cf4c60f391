#include "convert/experts.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>
#include <random>

#include "common/error.h"
#include "common/names.h"
#include "common/fileutil.h"

namespace ladimo::core {

namespace {
constexpr NameTable<Partition, 3> kPartitionNames{
    {{Partition::Coactivation, "coact"}, {Partition::Contiguous, "contiguous"}, {Partition::Weights, "weights"}}};
constexpr NameTable<RouterTarget, 2> kRouterTargetNames{
    {{RouterTarget::Norms, "norms"}, {RouterTarget::Shares, "shares"}}};
} // namespace

RouterTarget parseRouterTarget(const std::string& name)
{
    return parseNamed(kRouterTargetNames, name, "router target");
}
const char* routerTargetName(RouterTarget t) { return nameOf(kRouterTargetNames, t); }

Partition parsePartition(const std::string& name) { return parseNamed(kPartitionNames, name, "partition"); }
const char* partitionName(Partition p) { return nameOf(kPartitionNames, p); }

namespace {

std::vector<int64_t> capacities(int64_t neurons, int64_t experts)
{
    std::vector<int64_t> cap(static_cast<std::size_t>(experts), neurons / experts);
    for (int64_t e = 0; e < neurons % experts; ++e)
        ++cap[static_cast<std::size_t>(e)];
    return cap;
}

// Balanced k-means on the rows of `features` [I, D] (unit-normalised, cosine geometry): each
// assignment step gives every cluster exactly its capacity, taking (neuron, cluster) pairs in
// order of similarity.
std::vector<int64_t> balancedKMeans(const torch::Tensor& featuresIn, int64_t k, uint64_t seed, int iterations = 25)
{
    auto features = torch::nn::functional::normalize(featuresIn.to(torch::kFloat32),
                                                     torch::nn::functional::NormalizeFuncOptions().dim(1));
    const int64_t n = features.size(0);
    const auto cap = capacities(n, k);
    std::mt19937_64 rng(seed);
    std::vector<int64_t> perm(static_cast<std::size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    auto centroids = features.index_select(0, torch::tensor(std::vector<int64_t>(perm.begin(), perm.begin() + k)));
    std::vector<int64_t> assign(static_cast<std::size_t>(n), -1);
    for (int it = 0; it < iterations; ++it) {
        auto sim = torch::matmul(features, centroids.t()).contiguous(); // [n, k]
        auto flat = sim.view(-1);
        auto order = flat.argsort(/*dim=*/0, /*descending=*/true).to(torch::kCPU);
        auto oacc = order.accessor<int64_t, 1>();
        std::vector<int64_t> fill(static_cast<std::size_t>(k), 0), next(static_cast<std::size_t>(n), -1);
        int64_t placed = 0;
        for (int64_t i = 0; i < order.size(0) && placed < n; ++i) {
            const int64_t neuron = oacc[i] / k, cluster = oacc[i] % k;
            if (next[static_cast<std::size_t>(neuron)] >= 0
                || fill[static_cast<std::size_t>(cluster)] >= cap[static_cast<std::size_t>(cluster)])
                continue;
            next[static_cast<std::size_t>(neuron)] = cluster;
            ++fill[static_cast<std::size_t>(cluster)];
            ++placed;
        }
        const bool same = next == assign;
        assign = next;
        if (same)
            break;
        auto a = torch::tensor(assign, torch::kInt64);
        auto sums = torch::zeros({k, features.size(1)}).index_add(0, a, features);
        centroids = torch::nn::functional::normalize(sums, torch::nn::functional::NormalizeFuncOptions().dim(1));
    }
    return assign;
}

} // namespace

void zeroExpertPadding(MoeLayer& l)
{
    torch::NoGradGuard ng;
    const int64_t S = l.gate.size(1);
    for (int64_t e = 0; e < l.numExperts(); ++e) {
        const int64_t n = l.sizes[static_cast<std::size_t>(e)];
        if (n == S)
            continue;
        l.gate[e].narrow(0, n, S - n).zero_();
        l.up[e].narrow(0, n, S - n).zero_();
        l.down[e].narrow(1, n, S - n).zero_();
    }
}

namespace {

// |silu(g x) (u x)| ||down column|| of every neuron on (at most 4096 of) the tokens x: [T, I].
torch::Tensor neuronContributions(const DenseFfn& ffn, const torch::Tensor& x)
{
    const int64_t T = std::min<int64_t>(x.size(0), 4096);
    auto xs = x.narrow(0, 0, T).to(torch::kFloat32);
    auto act = torch::silu(torch::matmul(xs, ffn.gate.to(torch::kFloat32).t()))
        * torch::matmul(xs, ffn.up.to(torch::kFloat32).t());
    return act.abs() * ffn.down.to(torch::kFloat32).norm(2, 0).unsqueeze(0);
}

} // namespace

std::vector<int64_t> partitionNeurons(const DenseFfn& ffn, const torch::Tensor& x, int64_t experts, Partition strategy,
                                      uint64_t seed, int64_t shared)
{
    torch::NoGradGuard ng;
    if (shared > 0) {
        const int64_t I = ffn.gate.size(0);
        if (shared > I - experts)
            throw Error("cannot keep " + std::to_string(shared) + " of " + std::to_string(I)
                        + " FFN neurons always on and split the other " + std::to_string(I - shared) + " into "
                        + std::to_string(experts) + " experts (at most " + std::to_string(I - experts)
                        + " shared neurons)");
        // The shared neurons: those with the largest mean contributions.
        const auto order = std::get<1>(neuronContributions(ffn, x).mean(0).to(torch::kCPU).sort(0, true)).contiguous();
        std::vector<bool> isShared(static_cast<std::size_t>(I), false);
        for (int64_t i = 0; i < shared; ++i)
            isShared[static_cast<std::size_t>(order.data_ptr<int64_t>()[i])] = true;
        std::vector<int64_t> routed;
        for (int64_t i = 0; i < I; ++i)
            if (!isShared[static_cast<std::size_t>(i)])
                routed.push_back(i);
        const auto idx = torch::tensor(routed, torch::kInt64).to(ffn.gate.device());
        const DenseFfn rest{ffn.gate.index_select(0, idx), ffn.up.index_select(0, idx), ffn.down.index_select(1, idx)};
        const auto part = partitionNeurons(rest, x, experts, strategy, seed);
        std::vector<int64_t> a(static_cast<std::size_t>(I), -1);
        for (std::size_t j = 0; j < routed.size(); ++j)
            a[static_cast<std::size_t>(routed[j])] = part[j];
        return a;
    }
    const int64_t I = ffn.gate.size(0);
    if (experts < 1 || experts > I)
        throw Error("cannot split " + std::to_string(I) + " FFN neurons into " + std::to_string(experts) + " experts");
    if (strategy == Partition::Contiguous) {
        std::vector<int64_t> a(static_cast<std::size_t>(I));
        const auto cap = capacities(I, experts);
        int64_t e = 0, used = 0;
        for (int64_t i = 0; i < I; ++i) {
            if (used == cap[static_cast<std::size_t>(e)]) {
                ++e;
                used = 0;
            }
            a[static_cast<std::size_t>(i)] = e;
            ++used;
        }
        return a;
    }
    if (strategy == Partition::Weights)
        return balancedKMeans(torch::cat({ffn.gate, ffn.up, ffn.down.t()}, 1), experts, seed);
    // Co-activation: a neuron's profile is the magnitude of its contribution over calibration
    // tokens; neurons that fire on the same tokens land in the same expert.
    return balancedKMeans(neuronContributions(ffn, x).t(), experts, seed);
}

MoeLayer buildMoeLayer(const DenseFfn& ffn, const std::vector<int64_t>& assignment, int64_t experts, Gating gating)
{
    torch::NoGradGuard ng;
    const int64_t H = ffn.gate.size(1);
    std::vector<std::vector<int64_t>> members(static_cast<std::size_t>(experts));
    std::vector<int64_t> shared;
    for (std::size_t i = 0; i < assignment.size(); ++i)
        (assignment[i] < 0 ? shared : members.at(static_cast<std::size_t>(assignment[i])))
            .push_back(static_cast<int64_t>(i));
    int64_t S = 0;
    for (const auto& m : members)
        S = std::max<int64_t>(S, static_cast<int64_t>(m.size()));
    auto opt = ffn.gate.options();
    MoeLayer l;
    l.gating = gating;
    l.gate = torch::zeros({experts, S, H}, opt);
    l.up = torch::zeros({experts, S, H}, opt);
    l.down = torch::zeros({experts, H, S}, opt);
    // Soft gates weigh experts by about 1/N when the router is flat; scale them back up.
    const double scale = gating == Gating::Hard ? 1.0 : static_cast<double>(experts);
    for (int64_t e = 0; e < experts; ++e) {
        const auto& m = members[static_cast<std::size_t>(e)];
        l.sizes.push_back(static_cast<int64_t>(m.size()));
        if (m.empty())
            continue;
        auto idx = torch::tensor(m, torch::kInt64).to(opt.device());
        const int64_t n = static_cast<int64_t>(m.size());
        l.gate[e].narrow(0, 0, n).copy_(ffn.gate.index_select(0, idx));
        l.up[e].narrow(0, 0, n).copy_(ffn.up.index_select(0, idx));
        l.down[e].narrow(1, 0, n).copy_(ffn.down.index_select(1, idx) * scale);
    }
    if (!shared.empty()) { // weight 1 under every gating: the routed experts carry the factor
        auto idx = torch::tensor(shared, torch::kInt64).to(opt.device());
        l.sharedGate = ffn.gate.index_select(0, idx);
        l.sharedUp = ffn.up.index_select(0, idx);
        l.sharedDown = ffn.down.index_select(1, idx);
    }
    l.router = torch::zeros({experts, H}, opt);
    fuseGateUp(l);
    return l;
}

double relativeError(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y, const RoutingRule& rule)
{
    torch::NoGradGuard ng;
    double num = 0, den = 0;
    for (int64_t s = 0; s < x.size(0); s += 4096) {
        const int64_t n = std::min<int64_t>(4096, x.size(0) - s);
        auto out = layer.forward(x.narrow(0, s, n), rule);
        auto yt = y.narrow(0, s, n);
        num += (out - yt).pow(2).sum().item<double>();
        den += yt.pow(2).sum().item<double>();
    }
    return num / std::max(den, 1e-30);
}

std::vector<double> relativeErrors(const MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y,
                                   const std::vector<RoutingRule>& rules)
{
    torch::NoGradGuard ng;
    const int64_t N = layer.numExperts(), H = x.size(1);
    std::vector<double> num(rules.size(), 0.0);
    double den = 0;
    // Tokens per chunk: every expert's output of a chunk, [n, N, H], within about 64 MiB.
    const int64_t chunk = std::max<int64_t>(1, (int64_t{16} << 20) / (N * H));
    for (int64_t s = 0; s < x.size(0); s += chunk) {
        const int64_t n = std::min<int64_t>(chunk, x.size(0) - s);
        const auto xc = x.narrow(0, s, n), yc = y.narrow(0, s, n);
        const auto probs = layer.routingProbs(xc);
        // route() takes experts in this order: every rule keeps a prefix of it.
        auto [values, order] = probs.sort(-1, /*descending=*/true);
        auto outputs = layer.expertOutputs(xc).gather(1, order.unsqueeze(-1).expand({n, N, H}));
        const auto v = values.to(outputs.scalar_type()).unsqueeze(-1);
        torch::Tensor prefix; // [n, N, H]: the output with the first k + 1 experts of the order
        if (layer.gating == Gating::Hard)
            prefix = outputs.cumsum(1);
        else if (layer.gating == Gating::Plain)
            prefix = (outputs * v).cumsum(1);
        else
            prefix = (outputs * v).cumsum(1) / v.cumsum(1).clamp_min(1e-20);
        if (layer.sharedGate.defined())
            prefix += layer.sharedOutput(xc).unsqueeze(1);
        const auto sq = (prefix - yc.unsqueeze(1)).pow(2).sum(-1).to(torch::kFloat64); // [n, N]
        den += yc.pow(2).sum().item<double>();
        for (std::size_t r = 0; r < rules.size(); ++r) {
            const auto& rule = rules[r];
            if (rule.isStatic()) {
                if (rule.topK < 1 || rule.topK > N)
                    throw Error("top-k " + std::to_string(rule.topK) + " is outside 1.." + std::to_string(N));
                num[r] += sq.select(1, rule.topK - 1).sum().item<double>();
                continue;
            }
            // How many experts each token keeps: route()'s own choice, a prefix of the order.
            torch::Tensor mask, weights;
            layer.route(probs, rule, &mask, &weights);
            const auto k = mask.sum(-1);
            num[r] += sq.gather(1, (k - 1).clamp_min(0).unsqueeze(1)).sum().item<double>();
        }
    }
    for (auto& e : num)
        e /= std::max(den, 1e-30);
    return num;
}

void fitRouter(MoeLayer& layer, const torch::Tensor& x, const DistillOptions& o)
{
    const int64_t T = x.size(0), N = layer.numExperts();
    const bool regress = layer.gating == Gating::Hard && o.routerTarget == RouterTarget::Norms;
    torch::Tensor targets;
    {
        torch::NoGradGuard ng;
        std::vector<torch::Tensor> parts;
        for (int64_t s = 0; s < T; s += 2048) {
            auto outs = layer.expertOutputs(x.narrow(0, s, std::min<int64_t>(2048, T - s)));
            auto norms = outs.norm(2, -1); // [t, N]: how much each expert contributes
            parts.push_back(regress ? norms / norms.mean(-1, true).clamp_min(1e-12)
                                    : norms / norms.sum(-1, true).clamp_min(1e-12));
        }
        targets = torch::cat(parts);
    }
    auto router = torch::zeros({N, x.size(1)}, x.options()).set_requires_grad(true);
    torch::optim::Adam opt({router}, torch::optim::AdamOptions(o.routerLr));
    std::mt19937_64 rng(o.seed + 17);
    std::vector<int64_t> perm(static_cast<std::size_t>(T));
    std::iota(perm.begin(), perm.end(), 0);
    for (int epoch = 0; epoch < o.routerEpochs; ++epoch) {
        std::shuffle(perm.begin(), perm.end(), rng);
        auto p = torch::tensor(perm, torch::kInt64);
        for (int64_t s = 0; s < T; s += o.batch) {
            o.cancel.throwIfCancelled();
            auto idx = p.narrow(0, s, std::min<int64_t>(o.batch, T - s));
            auto logits = torch::matmul(x.index_select(0, idx), router.t());
            auto target = targets.index_select(0, idx);
            auto loss
                = regress ? (logits - target).pow(2).mean() : -(target * torch::log_softmax(logits, -1)).sum(-1).mean();
            opt.zero_grad();
            loss.backward();
            opt.step();
        }
    }
    torch::NoGradGuard ng;
    layer.router = router.detach().clone();
}

void requireFinite(const torch::Tensor& t, const std::string& what)
{
    torch::NoGradGuard ng;
    const int64_t bad = t.numel() - torch::isfinite(t).sum().item<int64_t>();
    if (bad > 0)
        throw NumericalFault(what + " holds " + std::to_string(bad) + " NaN/Inf value" + (bad == 1 ? "" : "s"));
}

namespace {

// The last good state of the trained tensors, restored after a fault. Up to 64 MiB it is a copy
// in memory; larger (a 7B layer's experts take 0.5 GB) it goes to an unlinked temporary file
// written with write(): the page cache is not this process's memory, and a restore is rare.
class Snapshot {
public:
    explicit Snapshot(const std::vector<torch::Tensor>& params)
    {
        torch::NoGradGuard ng;
        int64_t bytes = 0;
        bool cpu = true;
        for (const auto& p : params) {
            bytes += static_cast<int64_t>(p.nbytes());
            cpu = cpu && p.is_cpu();
        }
        if (!cpu || bytes <= (int64_t(64) << 20)) {
            for (const auto& p : params)
                m_copies.push_back(p.detach().clone());
            return;
        }
        std::string pattern = (std::filesystem::temp_directory_path() / "ladimo-snapshot-XXXXXX").string();
        m_fd = ::mkstemp(pattern.data());
        if (m_fd < 0)
            throw Error("cannot create a temporary file in '" + std::filesystem::temp_directory_path().string()
                        + "' for the distillation snapshot: " + std::strerror(errno));
        ::unlink(pattern.c_str());
        for (const auto& p : params) {
            const auto t = p.detach().contiguous();
            const auto* src = static_cast<const char*>(t.data_ptr());
            std::size_t left = t.nbytes();
            while (left > 0) {
                const ssize_t n = ::write(m_fd, src, left);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0)
                    throw Error("cannot write the distillation snapshot to '"
                                + std::filesystem::temp_directory_path().string() + "': " + std::strerror(errno));
                src += n;
                left -= static_cast<std::size_t>(n);
            }
        }
    }
    ~Snapshot()
    {
        if (m_fd >= 0)
            ::close(m_fd);
    }
    Snapshot(const Snapshot&) = delete;
    Snapshot& operator=(const Snapshot&) = delete;

    void restore(std::vector<torch::Tensor>& params) const
    {
        torch::NoGradGuard ng;
        if (m_fd < 0) {
            for (std::size_t i = 0; i < params.size(); ++i)
                params[i].copy_(m_copies[i]);
            return;
        }
        uint64_t at = 0;
        for (auto& p : params) {
            auto t = torch::empty(p.sizes(), p.options().requires_grad(false));
            preadFully(m_fd, t.data_ptr(), t.nbytes(), at, "the distillation snapshot",
                       std::filesystem::temp_directory_path());
            at += t.nbytes();
            p.copy_(t);
        }
    }

private:
    std::vector<torch::Tensor> m_copies;
    int m_fd = -1;
};

} // namespace

DistillResult distill(MoeLayer& layer, const torch::Tensor& x, const torch::Tensor& y, const DistillOptions& o)
{
    const int64_t T = x.size(0), N = layer.numExperts();
    requireFinite(x, "the calibration FFN input");
    requireFinite(y, "the calibration FFN output");
    DistillResult r;
    r.initialLoss = relativeError(layer, x, y, RoutingRule::staticK(o.trainTopK));
    std::vector<torch::Tensor> params = {layer.gate, layer.up, layer.down};
    if (layer.sharedGate.defined())
        params.insert(params.end(), {layer.sharedGate, layer.sharedUp, layer.sharedDown});
    for (auto& p : params)
        p.set_requires_grad(true);
    const bool trainRouter = layer.gating != Gating::Hard;
    if (trainRouter) {
        layer.router.set_requires_grad(true);
        params.push_back(layer.router);
    }
    auto opt = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(o.lr));
    std::mt19937_64 rng(o.seed + 29);
    const int minK = o.minTrainK > 0 ? o.minTrainK : std::max<int>(1, static_cast<int>(N) / 2);
    std::uniform_int_distribution<int> kDist(std::min<int>(minK, o.trainTopK), static_cast<int>(N));
    std::vector<int64_t> perm(static_cast<std::size_t>(T));
    std::iota(perm.begin(), perm.end(), 0);
    int64_t batch = o.batch;
    double lrScale = 1;
    int retries = 0;
    auto energy = y.pow(2).sum(-1).mean().item<double>();
    for (int epoch = 0; epoch < o.epochs; ++epoch) {
        // The last good state: weights, optimiser, sampling and curve as this epoch starts.
        const Snapshot saved(params);
        const auto savedRng = rng;
        const auto savedPerm = perm;
        const auto savedCurve = r.lossCurve.size();
        std::string fault; // empty while the epoch goes well
        bool oom = false;
        do {
            fault.clear();
            oom = false;
            const int64_t stepsPerEpoch = (T + batch - 1) / batch;
            const int64_t totalSteps = std::max<int64_t>(1, stepsPerEpoch * o.epochs);
            int64_t step = epoch * stepsPerEpoch;
            std::shuffle(perm.begin(), perm.end(), rng);
            auto p = torch::tensor(perm, torch::kInt64);
            try {
                for (int64_t s = 0; s < T; s += batch, ++step) {
                    o.cancel.throwIfCancelled();
                    const double lr = o.lr * lrScale * 0.5
                        * (1 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(totalSteps)));
                    for (auto& g : opt->param_groups())
                        static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
                    auto idx = p.narrow(0, s, std::min<int64_t>(batch, T - s));
                    const int k = o.randomK ? kDist(rng) : o.trainTopK;
                    auto xb = x.index_select(0, idx);
                    auto yb = y.index_select(0, idx);
                    const bool fullTerm = o.fullKWeight > 0 && k < N;
                    torch::Tensor out, all;
                    if (fullTerm)
                        std::tie(out, all) = layer.forwardAndAllExperts(xb, RoutingRule::staticK(k));
                    else
                        out = layer.forward(xb, RoutingRule::staticK(k));
                    auto loss = (out - yb).pow(2).sum(-1).mean() / energy; // the curve's figure
                    torch::Tensor objective = loss;
                    if (fullTerm)
                        objective = loss + o.fullKWeight * (all - yb).pow(2).sum(-1).mean() / energy;
                    if (o.faultHook)
                        o.faultHook(step, batch, loss);
                    const double l = loss.item<double>();
                    if (!std::isfinite(l)) { // before the step: the weights are still those of the last batch
                        fault = "loss " + std::to_string(l) + " at step " + std::to_string(step) + " (lr "
                            + std::to_string(lr) + ")";
                        break;
                    }
                    opt->zero_grad();
                    objective.backward();
                    opt->step();
                    zeroExpertPadding(layer);
                    r.lossCurve.emplace_back(step, l);
                    if (o.onStep)
                        o.onStep(epoch, step, l);
                }
            } catch (const c10::OutOfMemoryError& e) {
                if (batch / 2 < std::max<int64_t>(1, o.minBatch))
                    throw Error("out of memory on " + x.device().str() + " even with a batch of "
                                + std::to_string(batch) + " (minimum " + std::to_string(o.minBatch) + ")");
                oom = true;
            }
            if (fault.empty() && !oom)
                break;
            // Back to the last good state, with a fresh optimiser (its moments may hold the fault).
            saved.restore(params);
            rng = savedRng;
            perm = savedPerm;
            r.lossCurve.resize(savedCurve);
            opt = std::make_unique<torch::optim::Adam>(params, torch::optim::AdamOptions(o.lr));
            if (oom) {
                r.recovered.push_back("epoch " + std::to_string(epoch) + ": out of memory with batch "
                                      + std::to_string(batch) + ", retried with " + std::to_string(batch / 2));
                batch /= 2;
                continue;
            }
            if (retries >= o.maxRetries)
                throw NumericalFault("distillation diverged: " + fault + "; " + std::to_string(retries) + " retr"
                                     + (retries == 1 ? "y" : "ies")
                                     + " from the last good state with a lower "
                                       "learning rate did not help");
            ++retries;
            lrScale *= o.retryLrFactor;
            r.recovered.push_back("epoch " + std::to_string(epoch) + ": " + fault
                                  + "; retried from the epoch start with lr x" + std::to_string(lrScale));
        } while (true);
    }
    for (auto* t :
         {&layer.gate, &layer.up, &layer.down, &layer.router, &layer.sharedGate, &layer.sharedUp, &layer.sharedDown})
        if (t->defined())
            *t = t->detach();
    r.finalLoss = relativeError(layer, x, y, RoutingRule::staticK(o.trainTopK));
    r.lrScale = lrScale;
    r.batch = batch;
    return r;
}

} // namespace ladimo::core
