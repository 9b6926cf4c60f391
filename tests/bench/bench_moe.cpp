// MoE block forward (token dispatch) against the dense FFN it came from, on the same tokens,
// and a distillation step. Ratios in one run are what count: the machine is noisy.
//   build/bin/bench_moe --benchmark_repetitions=3   (the _min rows: the fastest repetition)
//   build/bin/bench_moe --benchmark_filter=moeVsDense   (the ratio, dense and MoE interleaved)
// The Python reference for the distillation step: tests/bench/distill_step_reference.py.
#include <algorithm>
#include <chrono>

#include <benchmark/benchmark.h>

#include "benchmain.h"
#include "common/processtuning.h"
#include "convert/experts.h"
#include "moe/moelayer.h"

using namespace ladimo::core;

namespace {

struct Setup {
    DenseFfn ffn;
    MoeLayer moe;
    torch::Tensor x, y;
};

// H, I: hidden and FFN width; T tokens; experts N (75% active = 6 of 8).
Setup makeSetup(int64_t H, int64_t I, int64_t T, int64_t N = 8)
{
    torch::manual_seed(0);
    Setup s;
    s.ffn = {torch::randn({I, H}) / std::sqrt(double(H)), torch::randn({I, H}) / std::sqrt(double(H)),
             torch::randn({H, I}) / std::sqrt(double(I))};
    s.x = torch::randn({T, H});
    std::vector<int64_t> assign(static_cast<std::size_t>(I));
    for (int64_t i = 0; i < I; ++i)
        assign[static_cast<std::size_t>(i)] = i * N / I;
    s.moe = buildMoeLayer(s.ffn, assign, N, Gating::Hard);
    s.moe.router = torch::randn({N, H});
    s.y = torch::matmul(torch::silu(torch::matmul(s.x, s.ffn.gate.t())) * torch::matmul(s.x, s.ffn.up.t()),
                        s.ffn.down.t());
    return s;
}

void denseFfn(benchmark::State& state)
{
    torch::InferenceMode guard;
    auto s = makeSetup(state.range(0), state.range(1), state.range(2));
    for (auto _ : state) {
        auto out = torch::matmul(torch::silu(torch::matmul(s.x, s.ffn.gate.t())) * torch::matmul(s.x, s.ffn.up.t()),
                                 s.ffn.down.t());
        benchmark::DoNotOptimize(out.data_ptr());
    }
    state.counters["tokens/s"]
        = benchmark::Counter(double(state.range(2)), benchmark::Counter::kIsIterationInvariantRate);
}

void moeTop6of8(benchmark::State& state)
{
    torch::InferenceMode guard;
    auto s = makeSetup(state.range(0), state.range(1), state.range(2));
    for (auto _ : state) {
        auto out = s.moe.forward(s.x, RoutingRule::staticK(6));
        benchmark::DoNotOptimize(out.data_ptr());
    }
    state.counters["tokens/s"]
        = benchmark::Counter(double(state.range(2)), benchmark::Counter::kIsIterationInvariantRate);
}

// The ratio itself, robust to the machine's speed drifting over seconds: each iteration times
// one dense FFN call and one MoE block call back to back, and the fastest of each over all
// iterations counts. Arguments: H, I, tokens, experts N (3N/4 active: 75% of the expert
// parameters; the router's product is timed with the block). Counters: dense_ms, moe_ms, and
// ideal_fraction = dense x 0.75 / moe (the share of the ideal speedup reached; 1 = ideal).
void moeVsDense(benchmark::State& state)
{
    torch::InferenceMode guard;
    const int64_t N = state.range(3);
    auto s = makeSetup(state.range(0), state.range(1), state.range(2), N);
    const auto rule = RoutingRule::staticK(static_cast<int>(3 * N / 4));
    auto dense = [&] {
        return torch::matmul(torch::silu(torch::matmul(s.x, s.ffn.gate.t())) * torch::matmul(s.x, s.ffn.up.t()),
                             s.ffn.down.t());
    };
    auto moe = [&] { return s.moe.forward(s.x, rule); };
    auto seconds = [](auto&& f) {
        const auto t0 = std::chrono::steady_clock::now();
        auto out = f();
        benchmark::DoNotOptimize(out.data_ptr());
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    double bestDense = 1e30, bestMoe = 1e30;
    for (auto _ : state) {
        bestDense = std::min(bestDense, seconds(dense));
        bestMoe = std::min(bestMoe, seconds(moe));
    }
    state.counters["dense_ms"] = 1e3 * bestDense;
    state.counters["moe_ms"] = 1e3 * bestMoe;
    state.counters["ideal_fraction"] = 0.75 * bestDense / bestMoe;
}

void distillStep(benchmark::State& state)
{
    auto s = makeSetup(state.range(0), state.range(1), state.range(2));
    std::vector<torch::Tensor> params = {s.moe.gate, s.moe.up, s.moe.down};
    for (auto& p : params)
        p.set_requires_grad(true);
    torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
    const double energy = s.y.pow(2).sum(-1).mean().item<double>();
    for (auto _ : state) {
        auto out = s.moe.forward(s.x, RoutingRule::staticK(6));
        auto loss = (out - s.y).pow(2).sum(-1).mean() / energy;
        opt.zero_grad();
        loss.backward();
        opt.step();
    }
    state.counters["steps/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}

// The default distillation step of fine-grained experts: 32 experts at k 23 (about 75%) plus the
// all-experts term, the two outputs from separate forwards (arg 0) or from one pair forward
// (arg 1, MoeLayer::forwardAndAllExperts, what distill runs).
void distillStepFullK(benchmark::State& state)
{
    auto s = makeSetup(state.range(0), state.range(1), state.range(2), 32);
    std::vector<torch::Tensor> params = {s.moe.gate, s.moe.up, s.moe.down};
    for (auto& p : params)
        p.set_requires_grad(true);
    torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-3));
    const double energy = s.y.pow(2).sum(-1).mean().item<double>();
    const auto rule = RoutingRule::staticK(23);
    for (auto _ : state) {
        torch::Tensor out, all;
        if (state.range(3))
            std::tie(out, all) = s.moe.forwardAndAllExperts(s.x, rule);
        else
            out = s.moe.forward(s.x, rule), all = s.moe.forward(s.x, RoutingRule::staticK(32));
        auto loss = ((out - s.y).pow(2).sum(-1).mean() + 4 * (all - s.y).pow(2).sum(-1).mean()) / energy;
        opt.zero_grad();
        loss.backward();
        opt.step();
    }
    state.counters["steps/s"] = benchmark::Counter(1, benchmark::Counter::kIsIterationInvariantRate);
}

// With --benchmark_repetitions=N: the fastest repetition, the least disturbed by other load.
double fastest(const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); }

// {hidden, FFN width, tokens}: the demo model's FFN, and a LLaMA-style 1024 x 2816 one.
void sizes(benchmark::internal::Benchmark* b)
{
    for (int64_t t : {512, 4096}) {
        b->Args({256, 768, t});
        b->Args({1024, 2816, t});
    }
    b->Unit(benchmark::kMillisecond)->UseRealTime()->ComputeStatistics("min", fastest);
}

} // namespace

BENCHMARK(denseFfn)->Apply(sizes);
BENCHMARK(moeTop6of8)->Apply(sizes);
// Coarse (8 experts) and fine-grained (64 experts) dispatch, on the demo's, a 1024 x 2816 and
// LLaMA-2-7B's 4096 x 11008 FFN.
void ratioSizes(benchmark::internal::Benchmark* b)
{
    for (int64_t n : {8, 64}) {
        for (int64_t t : {512, 4096})
            for (auto hi : {std::pair<int64_t, int64_t>{256, 768}, {1024, 2816}})
                b->Args({hi.first, hi.second, t, n});
        b->Args({4096, 11008, 512, n});
    }
    b->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(moeVsDense)->Apply(ratioSizes)->MinTime(2.0);
BENCHMARK(distillStep)
    ->Args({256, 768, 512})
    ->Args({1024, 2816, 512})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->ComputeStatistics("min", fastest);
BENCHMARK(distillStepFullK)
    ->Args({256, 768, 512, 0})
    ->Args({256, 768, 512, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime()
    ->ComputeStatistics("min", fastest);

// As in the ladimo and ladimo-workbench programs, so the figures are those users get.
int main(int argc, char** argv)
{
    ladimo::core::tuneProcessForTensors();
    return ladimo::test::runBenchmarks(argc, argv);
}
