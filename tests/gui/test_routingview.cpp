// The Routing view and the Tradeoff tab, offscreen, in the real window on a project with two
// profiled runs: the all-layers heatmap holds the stored top-1 histograms and selects a layer on a
// click, the overlay draws another layer (of this or the other run) dashed over the first, every
// plot widget exports PNG, SVG and CSV with the right contents, and a click on the Tradeoff tab's
// Pareto front applies that policy in the Policy view.
#include <QAction>
#include <QComboBox>
#include <QFile>
#include <QImage>
#include <QSignalSpy>
#include <QTabWidget>
#include <QTest>
#include <QUndoStack>
#include <QXmlStreamReader>

#include <gtest/gtest.h>

#include <cmath>

#include "common/error.h"
#include "mainwindow.h"
#include "policytablemodel.h"
#include "policyview.h"
#include "routingview.h"
#include "store/project.h"
#include "syntheticprofile.h"
#include "testutil.h"
#include "tradeoffview.h"
#include "widgets/barplot.h"
#include "widgets/heatmapplot.h"
#include "widgets/lineplot.h"
#include "widgets/tradeoffplot.h"

using namespace ladimo;
using gui::MainWindow;
using gui::RoutingView;

namespace {

constexpr int kLayers = 4;
constexpr int kExperts = 4;
constexpr int kBins = 5;
constexpr int kTokens = 200;

// Counts per bin of rank r in layer l of run `run` (0 or 1): every rank sums to kTokens.
std::vector<double> histogram(int run, int l, int r)
{
    const double a = 10.0 * ((l + r + run) % 4);
    return {a, 20.0, 60.0 - a + 10.0 * run, 70.0 - 10.0 * run, 50.0};
}

// Two runs of the demo model, each with a routing profile per layer (the measures the Policy
// view's estimates read) and a CPU latency model: written through the store as `ladimo profile`
// and `ladimo latency` do.
std::filesystem::path makeProject(const test::TempDir& tmp)
{
    const auto file = tmp / "routing.ladimo";
    auto p = core::Project::create(file);
    core::SourceModel m;
    m.path = (test::sourceDir() / "resources" / "demo").string();
    const auto modelId = p.addModel(m);
    for (int run = 0; run < 2; ++run) {
        core::ConversionRun cr;
        cr.modelId = modelId;
        cr.layers = kLayers;
        cr.experts = kExperts;
        cr.trainTopK = 2;
        cr.seed = static_cast<uint64_t>(run);
        const auto id = p.startRun(cr);
        for (int l = 0; l < kLayers; ++l) {
            core::RoutingProfile prof;
            prof.runId = id;
            prof.layer = l;
            prof.tokens = kTokens;
            prof.binEdges = {0, 0.2, 0.4, 0.6, 0.8, 1.0};
            for (int r = 0; r < kExperts; ++r)
                prof.rankHistograms.push_back(histogram(run, l, r));
            prof.expertLoad = {0.4 - 0.05 * l, 0.3, 0.2, 0.1 + 0.05 * l};
            prof.entropy = 1.0 + 0.1 * l;
            test::setSyntheticMeasures(prof, kExperts, 1.0 + l + run, {0.5 + 0.05 * l, 0.8, 0.95, 1.0});
            p.saveRoutingProfile(prof);
        }
        p.saveLatencyModel(id, "cpu", test::syntheticLatencyModel(kLayers, kExperts).toJson());
    }
    return file;
}

QVector<double> shares(int run, int l, int r)
{
    QVector<double> v;
    for (double c : histogram(run, l, r))
        v << c / kTokens;
    return v;
}

void expectNear(const QVector<double>& a, const QVector<double>& b)
{
    ASSERT_EQ(a.size(), b.size());
    for (int i = 0; i < a.size(); ++i)
        EXPECT_NEAR(a[i], b[i], 1e-12) << "at " << i;
}

// A window on the two-run project, shown (clicks need geometry), the Routing view in front.
struct Fixture {
    test::TempDir tmp;
    std::filesystem::path file = makeProject(tmp);
    MainWindow w;

    bool open()
    {
        w.setProperty("quiet", true);
        w.resize(1200, 800);
        w.show();
        QSignalSpy opened(&w, &MainWindow::modelOpened);
        QSignalSpy runs(w.routingView(), &RoutingView::runsLoaded);
        w.openPath(QString::fromStdString(file.string()));
        if (!opened.wait(20000))
            return false;
        if (runs.isEmpty() && !runs.wait(20000))
            return false;
        return w.selectView("routing");
    }
};

// Clicks `at` (in `host`'s pixels) on the child widget there.
void clickAt(QWidget* host, const QPoint& at)
{
    QWidget* child = host->childAt(at);
    ASSERT_NE(child, nullptr);
    QTest::mouseClick(child, Qt::LeftButton, {}, child->mapFrom(host, at));
}

} // namespace

TEST(RoutingView, HeatmapHoldsEveryLayersTop1Histogram)
{
    Fixture f;
    ASSERT_TRUE(f.open());
    auto* view = f.w.routingView();
    const auto* heat = view->heatmap();
    // The latest run (the second) is shown: layers x bins, each the share of tokens per bin.
    ASSERT_EQ(heat->rowCount(), kLayers);
    ASSERT_EQ(heat->columnCount(), kBins);
    for (int l = 0; l < kLayers; ++l) {
        EXPECT_EQ(heat->rowLabel(l), QString("L%1").arg(l));
        for (int b = 0; b < kBins; ++b)
            EXPECT_NEAR(heat->value(l, b), histogram(1, l, 0)[static_cast<std::size_t>(b)] / kTokens, 1e-12)
                << "layer " << l << " bin " << b;
    }
    EXPECT_EQ(heat->selectedRow(), 0);
    // The existing plots stay: four rank curves, the top-1 histogram, mass and error, expert load.
    EXPECT_EQ(view->rankPlot()->seriesCount(), 4);
    EXPECT_EQ(view->top1Plot()->seriesCount(), 1);
    expectNear(view->top1Plot()->seriesY(0), shares(1, 0, 0));
    EXPECT_EQ(view->massPlot()->seriesCount(), 2);
    EXPECT_EQ(view->loadPlot()->barCount(), kExperts);
    EXPECT_FALSE(view->toolTip().isEmpty() && heat->toolTip().isEmpty());
    for (auto* combo : view->findChildren<QComboBox*>())
        EXPECT_FALSE(combo->toolTip().isEmpty()) << combo->objectName().toStdString();
}

TEST(RoutingView, ClickingAHeatmapRowSelectsThatLayer)
{
    Fixture f;
    ASSERT_TRUE(f.open());
    auto* view = f.w.routingView();
    auto* heat = view->heatmap();
    heat->replotNow();
    QSignalSpy selected(view, &RoutingView::layerSelected);
    clickAt(heat, heat->pixelForCell(2, 3));
    ASSERT_EQ(selected.size(), 1);
    EXPECT_EQ(selected.front().front().toInt(), 2);
    EXPECT_EQ(view->currentLayer(), 2);
    EXPECT_EQ(heat->selectedRow(), 2);
    EXPECT_EQ(view->findChild<QComboBox*>("routingLayer")->currentText(), "layer 2");
    expectNear(view->top1Plot()->seriesY(0), shares(1, 2, 0));
    expectNear(view->rankPlot()->seriesY(1), shares(1, 2, 1));
    // And back to layer 0 by a click on the bottom row.
    clickAt(heat, heat->pixelForCell(0, 0));
    EXPECT_EQ(view->currentLayer(), 0);
}

TEST(RoutingView, OverlayDrawsAnotherLayerOrRunDashed)
{
    Fixture f;
    ASSERT_TRUE(f.open());
    auto* view = f.w.routingView();
    ASSERT_TRUE(view->selectLayer(0));
    ASSERT_TRUE(view->setComparison(3));
    const auto* top1 = view->top1Plot();
    ASSERT_EQ(top1->seriesCount(), 2);
    EXPECT_FALSE(top1->seriesDashed(0));
    EXPECT_TRUE(top1->seriesDashed(1));
    expectNear(top1->seriesY(0), shares(1, 0, 0));
    expectNear(top1->seriesY(1), shares(1, 3, 0));
    EXPECT_EQ(top1->seriesName(1), "layer 3");
    EXPECT_EQ(view->rankPlot()->seriesCount(), 8);
    expectNear(view->rankPlot()->seriesY(5), shares(1, 3, 1));
    EXPECT_EQ(view->massPlot()->seriesCount(), 4);
    ASSERT_TRUE(view->loadPlot()->hasComparison());
    EXPECT_NEAR(view->loadPlot()->comparisonValues()[0], 0.4 - 0.05 * 3, 1e-12);
    EXPECT_TRUE(view->summaryText().contains("layer 3"));

    // The other run: the project has two profiled runs.
    ASSERT_EQ(view->compareRunCount(), 2);
    EXPECT_TRUE(view->findChild<QComboBox*>("compareRun")->isEnabled());
    ASSERT_TRUE(view->setComparison(1, 1));
    ASSERT_EQ(top1->seriesCount(), 2);
    expectNear(top1->seriesY(1), shares(0, 1, 0));
    EXPECT_TRUE(top1->seriesName(1).contains("run #1")) << top1->seriesName(1).toStdString();

    // (none) removes the overlay.
    ASSERT_TRUE(view->setComparison(-1));
    EXPECT_EQ(top1->seriesCount(), 1);
    EXPECT_FALSE(view->loadPlot()->hasComparison());
}

TEST(RoutingView, EveryPlotExportsPngSvgAndCsv)
{
    Fixture f;
    ASSERT_TRUE(f.open());
    auto* view = f.w.routingView();
    ASSERT_TRUE(view->selectLayer(1));
    auto* tradeoff = f.w.tradeoffView()->plot();
    const QString dir = QString::fromStdString(f.tmp.path().string());
    struct Plot {
        QWidget* widget;
        std::function<bool(const QString&, int, int)> save;
        std::function<bool(const QString&)> csv;
        int rows; // CSV rows after the header
    };
    const std::vector<Plot> plots = {
        {view->rankPlot(), [&](const QString& f, int w, int h) { return view->rankPlot()->save(f, w, h); },
         [&](const QString& f) { return view->rankPlot()->saveCsv(f); }, kBins},
        {view->loadPlot(), [&](const QString& f, int w, int h) { return view->loadPlot()->save(f, w, h); },
         [&](const QString& f) { return view->loadPlot()->saveCsv(f); }, kExperts},
        {view->heatmap(), [&](const QString& f, int w, int h) { return view->heatmap()->save(f, w, h); },
         [&](const QString& f) { return view->heatmap()->saveCsv(f); }, kBins},
        {tradeoff, [&](const QString& f, int w, int h) { return tradeoff->save(f, w, h); },
         [&](const QString& f) { return tradeoff->saveCsv(f); }, -1},
    };
    int i = 0;
    for (const auto& p : plots) {
        SCOPED_TRACE(p.widget->metaObject()->className());
        // The same two actions on every plot: context menu and keyboard.
        EXPECT_EQ(p.widget->contextMenuPolicy(), Qt::ActionsContextMenu);
        auto* image = p.widget->findChild<QAction*>("exportImage");
        auto* csv = p.widget->findChild<QAction*>("exportCsv");
        ASSERT_TRUE(image && csv);
        EXPECT_FALSE(image->shortcut().isEmpty());
        EXPECT_FALSE(csv->toolTip().isEmpty());
        EXPECT_NE(p.widget->focusPolicy(), Qt::NoFocus);

        const QString png = QString("%1/plot%2.png").arg(dir).arg(i);
        ASSERT_TRUE(p.save(png, 400, 300));
        QImage img(png);
        ASSERT_FALSE(img.isNull());
        EXPECT_EQ(img.size(), QSize(400, 300));

        const QString svg = QString("%1/plot%2.svg").arg(dir).arg(i);
        ASSERT_TRUE(p.save(svg, 400, 300));
        QFile svgFile(svg);
        ASSERT_TRUE(svgFile.open(QIODevice::ReadOnly));
        const QByteArray svgText = svgFile.readAll();
        EXPECT_TRUE(svgText.contains("<svg"));
        QXmlStreamReader xml(svgText);
        int elements = 0;
        while (!xml.atEnd())
            if (xml.readNext() == QXmlStreamReader::StartElement)
                ++elements;
        EXPECT_FALSE(xml.hasError()) << xml.errorString().toStdString();
        EXPECT_GT(elements, 10);

        const QString csvFile = QString("%1/plot%2.csv").arg(dir).arg(i);
        ASSERT_TRUE(p.csv(csvFile));
        QFile in(csvFile);
        ASSERT_TRUE(in.open(QIODevice::ReadOnly | QIODevice::Text));
        const QStringList lines = QString::fromUtf8(in.readAll()).split('\n', Qt::SkipEmptyParts);
        ASSERT_FALSE(lines.isEmpty());
        if (p.rows >= 0)
            EXPECT_EQ(lines.size(), p.rows + 1);
        else
            EXPECT_GT(lines.size(), 3);
        ++i;
    }
    // The contents: the rank histograms one row per bin with a column per rank.
    QFile rank(dir + "/plot0.csv");
    ASSERT_TRUE(rank.open(QIODevice::ReadOnly | QIODevice::Text));
    const QStringList lines = QString::fromUtf8(rank.readAll()).split('\n', Qt::SkipEmptyParts);
    EXPECT_EQ(lines[0], "routing weight,rank 1,rank 2,rank 3,rank 4");
    const QStringList bin2 = lines[3].split(',');
    ASSERT_EQ(bin2.size(), 5);
    EXPECT_NEAR(bin2[0].toDouble(), 0.5, 1e-12);
    EXPECT_NEAR(bin2[1].toDouble(), histogram(1, 1, 0)[2] / kTokens, 1e-12);
    // The heatmap: bin bounds, then a column per layer.
    QFile heat(dir + "/plot2.csv");
    ASSERT_TRUE(heat.open(QIODevice::ReadOnly | QIODevice::Text));
    const QStringList heatLines = QString::fromUtf8(heat.readAll()).split('\n', Qt::SkipEmptyParts);
    EXPECT_EQ(heatLines[0], "bin_lower,bin_upper,L0,L1,L2,L3");
    EXPECT_NEAR(heatLines[5].split(',')[4].toDouble(), histogram(1, 2, 0)[4] / kTokens, 1e-12);
    // The tradeoff points: series, x, y, label; the uniform points carry their k.
    QFile t(dir + "/plot3.csv");
    ASSERT_TRUE(t.open(QIODevice::ReadOnly | QIODevice::Text));
    const QString tradeoffText = QString::fromUtf8(t.readAll());
    EXPECT_TRUE(tradeoffText.startsWith("series,")) << tradeoffText.toStdString();
    EXPECT_TRUE(tradeoffText.contains("uniform top-k,")) << tradeoffText.toStdString();
    EXPECT_TRUE(tradeoffText.contains(",k=2"));
}

TEST(TradeoffView, ClickingAFrontPointAppliesThatPolicy)
{
    Fixture f;
    ASSERT_TRUE(f.open());
    ASSERT_TRUE(f.w.selectView("tradeoff"));
    auto* tabs = f.w.findChild<QTabWidget*>();
    ASSERT_NE(tabs, nullptr);
    EXPECT_EQ(tabs->tabText(tabs->currentIndex()), "Tradeoff");
    EXPECT_FALSE(tabs->tabToolTip(tabs->currentIndex()).isEmpty());
    auto* view = f.w.tradeoffView();
    auto* policy = f.w.policyView();
    auto* plot = view->plot();
    ASSERT_GT(plot->frontCount(), 2);
    EXPECT_EQ(plot->frontCount(), policy->plot()->frontCount());
    EXPECT_EQ(plot->uniformCount(), kExperts);
    // x switchable on this tab alone: prefill latency moves the points, the Policy view keeps its axis.
    view->setAxis(gui::PolicyView::PrefillAxis);
    EXPECT_EQ(policy->axis(), gui::PolicyView::ParamsAxis);
    ASSERT_EQ(plot->frontCount(), static_cast<int>(policy->data().fronts[1].size()));
    const int j = plot->frontCount() / 2;
    const QPointF target = plot->frontPoint(j);
    const int undoBefore = policy->undoStack()->count();
    plot->replotNow();
    QSignalSpy applied(view, &gui::TradeoffView::policyApplied);
    clickAt(plot, plot->pixelFor(target));
    ASSERT_EQ(applied.size(), 1);
    EXPECT_EQ(policy->undoStack()->count(), undoBefore + 1);
    const QPointF now = policy->pointOf(policy->model()->estimate(), gui::PolicyView::PrefillAxis);
    EXPECT_NEAR(now.x(), target.x(), 1e-9);
    EXPECT_NEAR(now.y(), target.y(), 1e-9);
    // The current marker on this tab follows the Policy view's model.
    EXPECT_NEAR(plot->currentPoint().x(), target.x(), 1e-9);
    // A uniform point applies top-k everywhere.
    plot->replotNow();
    view->setAxis(gui::PolicyView::ParamsAxis);
    plot->replotNow();
    const auto uniform = policy->pointOf(
        core::estimatePolicy(policy->data().tables, core::uniformRules(kLayers, core::RoutingRule::staticK(1))),
        gui::PolicyView::ParamsAxis);
    clickAt(plot, plot->pixelFor(uniform));
    ASSERT_EQ(applied.size(), 2);
    for (const auto& rule : policy->model()->rules())
        EXPECT_EQ(rule.topK, 1);
}

// The project session reloads the window when another process writes the project (a policy
// stored by `ladimo policy`, here through the store directly), keeps the person's unsaved slider
// edits of the same run and their undo history, and does not reload after its own writes.
TEST(ProjectSession, ReloadsOnOutsideChangesKeepsEditsAndIgnoresItsOwnWrites)
{
    Fixture f;
    ASSERT_TRUE(f.open());
    auto* view = f.w.policyView();
    ASSERT_GT(view->model()->rowCount(), 0);
    // An unsaved edit of layer 0, undoable.
    const auto before = view->model()->rules();
    ASSERT_TRUE(view->model()->setData(view->model()->index(0, gui::PolicyTableModel::SettingColumn), 1, Qt::EditRole));
    const auto edited = view->model()->rules();
    ASSERT_FALSE(core::sameRule(edited[0], before[0]));
    ASSERT_EQ(f.w.session()->undoStack(), view->undoStack());
    ASSERT_TRUE(view->undoStack()->canUndo());

    // Another process stores a policy.
    QSignalSpy reopened(&f.w, &MainWindow::modelOpened);
    {
        auto p = core::Project::open(f.file, {core::Project::Access::ReadWrite, core::Project::Verify::None});
        core::Policy policy;
        policy.name = "from-terminal";
        policy.origin = core::PolicyOrigin::Manual;
        policy.runId = *p.latestRunId();
        policy.rules = core::rulesToJson(core::uniformRules(kLayers, core::RoutingRule::staticK(3)));
        p.savePolicy(policy);
    }
    ASSERT_TRUE(reopened.wait(10000)) << "no reload after the project changed on disk";
    bool listed = false;
    for (const auto& p : view->data().policies)
        listed = listed || p.name == "from-terminal";
    EXPECT_TRUE(listed) << "the outside policy is not in the Policy view";
    EXPECT_TRUE(core::sameRule(view->model()->rules()[0], edited[0])) << "the unsaved edit was lost";
    ASSERT_TRUE(view->undoStack()->canUndo()) << "the undo history was lost";
    view->undoStack()->undo();
    EXPECT_TRUE(core::sameRule(view->model()->rules()[0], before[0]));

    // The session's own write (a setting) reloads nothing.
    reopened.clear();
    f.w.session()->storeSetting("test", nlohmann::json{{"x", 1}});
    EXPECT_FALSE(reopened.wait(2500)) << "the session reloaded after its own write";
}

// Dead and hot experts on constructed profiles: the load plot marks the selected layer's, the
// label lists every layer's, the heatmap rows count them, and the thresholds follow the controls.
TEST(RoutingView, MarksDeadAndHotExpertsOfEveryLayer)
{
    auto profile = [](int layer, std::vector<double> load) {
        core::RoutingProfile p;
        p.layer = layer;
        p.tokens = 1000;
        p.binEdges = {0, 0.5, 1};
        p.rankHistograms = std::vector<std::vector<double>>(load.size(), {500, 500});
        p.expertLoad = std::move(load);
        p.errorByK = std::vector<double>(p.expertLoad.size(), 0.1);
        return p;
    };
    // 4 experts: even 0.25; dead below 0.0625, hot above 0.625.
    std::vector<core::RoutingProfile> profiles = {
        profile(0, {0.25, 0.25, 0.25, 0.25}), profile(1, {0.02, 0.3, 0.0, 0.68}), profile(2, {0.05, 0.3, 0.3, 0.35})};
    gui::RoutingView view;
    view.setProfiles(1, profiles);
    const auto markers = view.loadMarkers();
    ASSERT_EQ(markers.size(), 3u);
    EXPECT_TRUE(markers[0].dead.empty() && markers[0].hot.empty());
    EXPECT_EQ(markers[1].dead, (std::vector<int>{0, 2}));
    EXPECT_EQ(markers[1].hot, (std::vector<int>{3}));
    EXPECT_EQ(markers[2].dead, (std::vector<int>{0}));
    const QString text = view.markersText();
    EXPECT_TRUE(text.contains("layer 1: 0, 2; layer 2: 0")) << text.toStdString();
    EXPECT_TRUE(text.contains("Hot experts (share > 2.5/N): layer 1: 3")) << text.toStdString();
    EXPECT_EQ(view.heatmap()->rowLabel(1), QString("L1 \u20202 \u25b21"));
    EXPECT_EQ(view.heatmap()->rowLabel(0), QString("L0"));

    ASSERT_TRUE(view.selectLayer(1));
    EXPECT_EQ(view.loadPlot()->lowMarks(), (QVector<int>{0, 2}));
    EXPECT_EQ(view.loadPlot()->highMarks(), (QVector<int>{3}));
    const auto csv = view.loadPlot()->csvTable();
    ASSERT_EQ(csv.rows.size(), 4);
    EXPECT_EQ(csv.rows[0][0], "0 dead");
    EXPECT_EQ(csv.rows[3][0], "3 hot");
    EXPECT_EQ(csv.rows[1][0], "1");

    // Stricter thresholds: layer 0 stays even, layer 2's expert 0 is no longer dead.
    view.setLoadThresholds({0.1, 2.0});
    EXPECT_TRUE(view.loadMarkers()[2].dead.empty());
    EXPECT_EQ(view.loadMarkers()[1].hot, (std::vector<int>{3}));
    EXPECT_TRUE(view.markersText().contains("(share < 0.1/N): layer 1: 0, 2.")) << view.markersText().toStdString();
    EXPECT_THROW(view.setLoadThresholds({0.5, 0.9}), core::Error);
}
