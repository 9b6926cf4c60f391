// A slider move in the Policy view, offscreen, on a synthetic 32-layer, 8-expert profile with a
// latency model: the targets are one frame (16 ms) from slider to totals and tradeoff point, and
// under 1 ms for re-estimating the policy.
//   build/bin/bench_gui_policy --benchmark_counters_tabular=true
//  - estimatePolicy32x8: the whole policy estimated from scratch;
//  - estimateRuleAndTotals32x8: what a slider move computes (one layer + totals);
//  - sliderMoveToTotalsAndPoint: QSlider::setValue -> model (undo command) -> row, totals label,
//    tradeoff point, no painting;
//  - sliderMovePainted: the same, then the plot replotted and the window repainted at once.
#include <QApplication>
#include <QSlider>
#include <QTableView>

#include <benchmark/benchmark.h>

#include "benchmain.h"
#include "gui/syntheticprofile.h"
#include <cmath>

#include "policytablemodel.h"
#include "policyview.h"
#include "routing/estimate.h"
#include "widgets/tradeoffplot.h"

using namespace ladimo;

namespace {

constexpr int kLayers = 32;
constexpr int kExperts = 8;

core::PolicyTables syntheticTables()
{
    core::PolicyTables t;
    for (int l = 0; l < kLayers; ++l) {
        core::LayerTable lt;
        lt.experts = kExperts;
        lt.denseParams = 3.0 * 4096 * 11008;
        for (int k = 1; k <= kExperts; ++k) {
            lt.paramsByK.push_back(lt.denseParams * k / kExperts);
            lt.errorByK.push_back((1.0 + 0.1 * l) * std::exp(-0.5 * k));
        }
        for (int i = 0; i < 20; ++i) {
            const double p = 0.05 + 0.05 * i, k = 1 + (kExperts - 1) * i / 19.0;
            lt.thresholds.push_back(p);
            lt.meanKByThreshold.push_back(k);
            lt.paramsByThreshold.push_back(lt.denseParams * k / kExperts);
            lt.errorByThreshold.push_back(0.8 * (1.0 + 0.1 * l) * std::exp(-0.5 * k));
        }
        t.layers.push_back(lt);
    }
    t.latency = test::syntheticLatencyModel(kLayers, kExperts);
    return t;
}

void estimatePolicy32x8(benchmark::State& state)
{
    const auto tables = syntheticTables();
    auto rules = core::uniformRules(kLayers, core::RoutingRule::staticK(6));
    rules[3] = core::RoutingRule::topP(0.83);
    int i = 0;
    for (auto _ : state) {
        rules[static_cast<std::size_t>(i % kLayers)] = core::RoutingRule::staticK(1 + i % kExperts);
        auto e = core::estimatePolicy(tables, rules);
        benchmark::DoNotOptimize(e.errorProxy);
        ++i;
    }
}

void estimateRuleAndTotals32x8(benchmark::State& state)
{
    const auto tables = syntheticTables();
    auto e = core::estimatePolicy(tables, core::uniformRules(kLayers, core::RoutingRule::staticK(6)));
    int i = 0;
    for (auto _ : state) {
        const int l = i % kLayers;
        e.layers[static_cast<std::size_t>(l)]
            = core::estimateRule(tables, l, core::RoutingRule::staticK(1 + i % kExperts));
        core::updateTotals(tables, e);
        benchmark::DoNotOptimize(e.errorProxy);
        ++i;
    }
}

void sliderMove(benchmark::State& state, bool paint)
{
    gui::PolicyView view;
    view.setData(gui::policyDataFromTables(syntheticTables(), 6));
    view.resize(1500, 900);
    view.show();
    QApplication::processEvents();
    std::vector<QSlider*> sliders;
    for (int l = 0; l < kLayers; ++l)
        sliders.push_back(qobject_cast<QSlider*>(
            view.table()->indexWidget(view.model()->index(l, gui::PolicyTableModel::SettingColumn))));
    if (sliders.front() == nullptr) {
        state.SkipWithError("no slider editors");
        return;
    }
    int i = 0;
    for (auto _ : state) {
        auto* s = sliders[static_cast<std::size_t>(i % kLayers)];
        s->setValue(s->value() == kExperts ? 1 : s->value() + 1);
        if (paint) {
            view.plot()->replotNow();
            view.repaint();
        }
        benchmark::DoNotOptimize(view.plot()->currentPoint());
        ++i;
    }
    state.counters["fraction"] = view.model()->estimate().activatedFfnFraction;
}

void sliderMoveToTotalsAndPoint(benchmark::State& state) { sliderMove(state, false); }
void sliderMovePainted(benchmark::State& state) { sliderMove(state, true); }

} // namespace

BENCHMARK(estimatePolicy32x8)->Unit(benchmark::kMicrosecond);
BENCHMARK(estimateRuleAndTotals32x8)->Unit(benchmark::kMicrosecond);
BENCHMARK(sliderMoveToTotalsAndPoint)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(sliderMovePainted)->Unit(benchmark::kMillisecond)->UseRealTime();

int main(int argc, char** argv)
{
    qputenv("QT_QPA_PLATFORM", "offscreen");
    QApplication app(argc, argv);
    return ladimo::test::runBenchmarks(argc, argv);
}
