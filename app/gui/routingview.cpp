#include "routingview.h"

#include <QComboBox>
#include <QDoubleSpinBox>
#include <QGridLayout>
#include <QHBoxLayout>
#include <QLabel>
#include <QSignalBlocker>
#include <QSplitter>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>
#include <set>

#include "store/records.h"

#include "widgets/barplot.h"
#include "widgets/heatmapplot.h"
#include "widgets/lineplot.h"

namespace ladimo::gui {

namespace {

QVector<double> centers(const core::RoutingProfile& p)
{
    QVector<double> c;
    for (std::size_t b = 0; b + 1 < p.binEdges.size(); ++b)
        c << 0.5 * (p.binEdges[b] + p.binEdges[b + 1]);
    return c;
}

// A rank's histogram as the share of tokens per bin: runs profiled on different token counts compare.
QVector<double> share(const core::RoutingProfile& p, std::size_t rank)
{
    QVector<double> v;
    if (rank >= p.rankHistograms.size())
        return v;
    const double n = p.tokens > 0 ? static_cast<double>(p.tokens) : 1.0;
    for (double c : p.rankHistograms[rank])
        v << c / n;
    return v;
}

QVector<double> cumulativeMass(const core::RoutingProfile& p)
{
    QVector<double> mass;
    const auto cumulative = p.extra.value("cumulative_mass", nlohmann::json::array());
    for (std::size_t k = 0; k < p.errorByK.size(); ++k)
        mass << (k < cumulative.size() ? cumulative[k].get<double>() : 0.0);
    return mass;
}

QVector<double> ks(const core::RoutingProfile& p)
{
    QVector<double> k;
    for (std::size_t i = 0; i < p.errorByK.size(); ++i)
        k << static_cast<double>(i + 1);
    return k;
}

} // namespace

RoutingView::RoutingView(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    auto* top = new QHBoxLayout;
    auto* layerLabel = new QLabel(tr("&Layer:"));
    m_layer = new QComboBox;
    m_layer->setObjectName("routingLayer");
    m_layer->setToolTip(tr("Layer whose routing profile is shown (or click its row in the all-layers heatmap)"));
    layerLabel->setBuddy(m_layer);
    auto* compareLabel = new QLabel(tr("Compare &with:"));
    m_compareLayer = new QComboBox;
    m_compareLayer->setObjectName("compareLayer");
    m_compareLayer->setToolTip(tr("A second layer drawn over the first (dashed lines, hatched bars) for comparison"));
    compareLabel->setBuddy(m_compareLayer);
    auto* runLabel = new QLabel(tr("o&f:"));
    m_compareRun = new QComboBox;
    m_compareRun->setObjectName("compareRun");
    m_compareRun->setToolTip(tr("The conversion run the comparison layer comes from: this run or another profiled run "
                                "of the project"));
    m_compareRun->setSizeAdjustPolicy(QComboBox::AdjustToContents);
    runLabel->setBuddy(m_compareRun);
    m_summary = new QLabel;
    m_summary->setWordWrap(true);
    m_summary->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_summary->setToolTip(tr("The selected layer's profile: tokens profiled, mean routing entropy, mean top-1 weight"));
    top->addWidget(layerLabel);
    top->addWidget(m_layer);
    top->addSpacing(12);
    top->addWidget(compareLabel);
    top->addWidget(m_compareLayer);
    top->addWidget(runLabel);
    top->addWidget(m_compareRun);
    top->addSpacing(12);
    top->addWidget(m_summary, 1);
    layout->addLayout(top);

    auto* split = new QSplitter(Qt::Horizontal);
    m_heatmap = new widgets::HeatmapPlot;
    m_heatmap->setObjectName("routingHeatmap");
    m_heatmap->setAxisLabels(tr("top-1 routing weight"), tr("layer"), tr("share of tokens"));
    m_heatmap->setToolTip(
        tr("All layers: how the top-1 routing weight is distributed (colour: share of the layer's tokens "
           "in each weight bin). Bright cells near 1 mean one expert dominates. Click a row to show "
           "that layer; right click to export."));
    split->addWidget(m_heatmap);
    auto* grid = new QWidget;
    auto* gridLayout = new QGridLayout(grid);
    gridLayout->setContentsMargins(0, 0, 0, 0);
    m_rankPlot = new widgets::LinePlot;
    m_rankPlot->setObjectName("rankHistograms");
    m_rankPlot->setAxisLabels(tr("routing weight"), tr("share of tokens"));
    m_rankPlot->setToolTip(tr("Histogram of the routing weight of the 1st, 2nd, ... ranked expert of each token: "
                              "a tall top-1 curve near 1 means one expert dominates and few experts are needed. "
                              "Right click to export."));
    m_top1Plot = new widgets::LinePlot;
    m_top1Plot->setObjectName("top1Histogram");
    m_top1Plot->setAxisLabels(tr("top-1 routing weight"), tr("share of tokens"));
    m_top1Plot->setToolTip(tr("Histogram of each token's largest routing weight (the row of the heatmap). "
                              "Right click to export."));
    m_massPlot = new widgets::LinePlot;
    m_massPlot->setObjectName("cumulativeMass");
    m_massPlot->setAxisLabels(tr("experts per token (k)"), tr("value"));
    m_massPlot->setToolTip(
        tr("Mean cumulative routing mass of the top-k experts, and the MoE block's relative error at "
           "each k. Right click to export."));
    m_loadPlot = new widgets::BarPlot;
    m_loadPlot->setObjectName("expertLoad");
    m_loadPlot->setAxisLabels(tr("expert"), tr("share of tokens (top-1)"));
    m_loadPlot->setToolTip(tr("Fraction of tokens whose top-1 expert is each expert. Right click to export."));
    gridLayout->addWidget(m_rankPlot, 0, 0);
    gridLayout->addWidget(m_top1Plot, 0, 1);
    gridLayout->addWidget(m_massPlot, 1, 0);
    gridLayout->addWidget(m_loadPlot, 1, 1);
    split->addWidget(grid);
    split->setStretchFactor(0, 2);
    split->setStretchFactor(1, 5);
    split->setSizes({320, 780});
    auto* markerRow = new QHBoxLayout;
    m_deadBelow = new QDoubleSpinBox;
    m_deadBelow->setObjectName("deadBelow");
    m_deadBelow->setRange(0, 0.99);
    m_deadBelow->setSingleStep(0.05);
    m_deadBelow->setValue(core::ExpertLoadThresholds{}.deadBelow);
    m_deadBelow->setToolTip(tr("An expert is dead when its share of the layer's tokens (top-1) is below this many "
                               "times the even share 1/N"));
    m_hotAbove = new QDoubleSpinBox;
    m_hotAbove->setObjectName("hotAbove");
    m_hotAbove->setRange(1.05, 100);
    m_hotAbove->setSingleStep(0.25);
    m_hotAbove->setValue(core::ExpertLoadThresholds{}.hotAbove);
    m_hotAbove->setToolTip(tr(
        "An expert is hot when its share of the layer's tokens (top-1) is above this many times the even share 1/N"));
    auto* deadLabel = new QLabel(tr("&Dead below:"));
    deadLabel->setBuddy(m_deadBelow);
    auto* hotLabel = new QLabel(tr("&hot above:"));
    hotLabel->setBuddy(m_hotAbove);
    m_markers = new QLabel;
    m_markers->setObjectName("expertMarkers");
    m_markers->setTextFormat(Qt::PlainText);
    m_markers->setWordWrap(true);
    m_markers->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_markers->setToolTip(tr("Dead and hot experts of every layer by their share of the layer's tokens"));
    markerRow->addWidget(deadLabel);
    markerRow->addWidget(m_deadBelow);
    markerRow->addWidget(hotLabel);
    markerRow->addWidget(m_hotAbove);
    markerRow->addWidget(new QLabel(tr("x even share")));
    markerRow->addSpacing(12);
    markerRow->addWidget(m_markers, 1);
    layout->addWidget(split, 1);
    layout->addLayout(markerRow);

    for (QDoubleSpinBox* spin : {m_deadBelow, m_hotAbove})
        connect(spin, &QDoubleSpinBox::valueChanged, this, [this] {
            fillMarkers();
            fillHeatmap();
            redraw();
        });
    connect(m_layer, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int i) { selectLayer(i); });
    connect(m_heatmap, &widgets::HeatmapPlot::rowClicked, this, [this](int row) { selectLayer(row); });
    connect(m_compareLayer, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] { redraw(); });
    connect(m_compareRun, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] {
        fillCompareLayers();
        redraw();
    });
    clear(tr("No routing profile yet: press Profile in the Convert view (or run ladimo profile P.ladimo)."));
}

const std::vector<core::RoutingProfile>& RoutingView::current() const
{
    static const std::vector<core::RoutingProfile> none;
    return m_runs.empty() ? none : m_runs.front().profiles;
}

void RoutingView::clear(const QString& message)
{
    m_runs.clear();
    for (QComboBox* c : {m_layer, m_compareLayer, m_compareRun}) {
        const QSignalBlocker block(c);
        c->clear();
        c->setEnabled(false);
    }
    m_heatmap->clear();
    m_rankPlot->clear();
    m_top1Plot->clear();
    m_massPlot->clear();
    m_loadPlot->setBars({}, {});
    m_markers->clear();
    m_summary->setText(message);
}

void RoutingView::setProfiles(int64_t runId, const std::vector<core::RoutingProfile>& profiles,
                              const std::vector<RoutingRun>& others)
{
    if (profiles.empty()) {
        clear(tr("No routing profile yet: press Profile in the Convert view (or run ladimo profile P.ladimo)."));
        return;
    }
    m_runs.clear();
    m_runs.push_back({runId, tr("this run (#%1)").arg(runId), profiles});
    {
        const QSignalBlocker block(m_layer);
        m_layer->clear();
        for (const auto& p : profiles)
            m_layer->addItem(tr("layer %1").arg(p.layer), p.layer);
        m_layer->setEnabled(true);
    }
    {
        const QSignalBlocker block(m_compareRun);
        m_compareRun->clear();
        m_compareRun->addItem(m_runs.front().description);
        m_compareRun->setEnabled(false); // until other runs are found
    }
    fillCompareLayers();
    fillMarkers();
    fillHeatmap();
    selectLayer(0);
    setComparisonRuns(others);
}

void RoutingView::setComparisonRuns(const std::vector<RoutingRun>& runs)
{
    if (m_runs.empty())
        return;
    const int64_t shown = m_runs.front().runId;
    m_runs.resize(1);
    for (const auto& r : runs)
        if (r.runId != shown)
            m_runs.push_back(r);
    {
        const QSignalBlocker block(m_compareRun);
        m_compareRun->clear();
        for (const auto& r : m_runs)
            m_compareRun->addItem(r.description);
        m_compareRun->setCurrentIndex(0);
        m_compareRun->setEnabled(m_runs.size() > 1);
    }
    Q_EMIT runsLoaded();
}

void RoutingView::fillCompareLayers()
{
    const QSignalBlocker block(m_compareLayer);
    m_compareLayer->clear();
    m_compareLayer->addItem(tr("(none)"), -1);
    const int run = std::max(0, m_compareRun->currentIndex());
    if (run < static_cast<int>(m_runs.size()))
        for (const auto& p : m_runs[static_cast<std::size_t>(run)].profiles)
            m_compareLayer->addItem(tr("layer %1").arg(p.layer), p.layer);
    m_compareLayer->setEnabled(m_compareLayer->count() > 1);
}

void RoutingView::fillHeatmap()
{
    const auto& profiles = current();
    if (profiles.empty() || profiles.front().binEdges.size() < 2) {
        m_heatmap->clear();
        return;
    }
    QStringList rows;
    QVector<QVector<double>> values;
    const auto markers = loadMarkers();
    for (std::size_t i = 0; i < profiles.size(); ++i) {
        const auto& p = profiles[i];
        // Rows with dead (†) or hot (▲) experts say how many.
        QString row = tr("L%1").arg(p.layer);
        if (i < markers.size() && !markers[i].dead.empty())
            row += QStringLiteral(" †%1").arg(markers[i].dead.size());
        if (i < markers.size() && !markers[i].hot.empty())
            row += QStringLiteral(" ▲%1").arg(markers[i].hot.size());
        rows << row;
        values << share(p, 0);
    }
    const auto& edges = profiles.front().binEdges;
    m_heatmap->setData(rows, edges.front(), edges.back(), values);
}

int RoutingView::currentLayer() const { return m_layer->currentIndex(); }

int RoutingView::comparisonLayer() const { return m_compareLayer->currentIndex() - 1; }

const core::RoutingProfile* RoutingView::compared() const
{
    const int run = std::max(0, m_compareRun->currentIndex());
    const int index = comparisonLayer();
    if (run >= static_cast<int>(m_runs.size()) || index < 0)
        return nullptr;
    const auto& profiles = m_runs[static_cast<std::size_t>(run)].profiles;
    return index < static_cast<int>(profiles.size()) ? &profiles[static_cast<std::size_t>(index)] : nullptr;
}

bool RoutingView::selectLayer(int index)
{
    const auto& profiles = current();
    if (index < 0 || index >= static_cast<int>(profiles.size()))
        return false;
    if (m_layer->currentIndex() != index) {
        const QSignalBlocker block(m_layer);
        m_layer->setCurrentIndex(index);
    }
    m_heatmap->setSelectedRow(index);
    redraw();
    Q_EMIT layerSelected(index);
    return true;
}

bool RoutingView::setComparison(int index, int run)
{
    if (run < 0 || run >= static_cast<int>(m_runs.size()))
        return false;
    if (index >= static_cast<int>(m_runs[static_cast<std::size_t>(run)].profiles.size()))
        return false;
    {
        const QSignalBlocker block(m_compareRun);
        m_compareRun->setCurrentIndex(run);
    }
    fillCompareLayers();
    {
        const QSignalBlocker block(m_compareLayer);
        m_compareLayer->setCurrentIndex(std::max(index, -1) + 1);
    }
    redraw();
    return true;
}

QString RoutingView::summaryText() const { return m_summary->text(); }

void RoutingView::setLoadThresholds(const core::ExpertLoadThresholds& t)
{
    t.validate();
    {
        const QSignalBlocker a(m_deadBelow), b(m_hotAbove);
        m_deadBelow->setValue(t.deadBelow);
        m_hotAbove->setValue(t.hotAbove);
    }
    fillMarkers();
    fillHeatmap();
    redraw();
}

core::ExpertLoadThresholds RoutingView::loadThresholds() const
{
    core::ExpertLoadThresholds t;
    t.deadBelow = m_deadBelow->value();
    t.hotAbove = m_hotAbove->value();
    return t;
}

std::vector<core::ExpertLoadMarkers> RoutingView::loadMarkers() const
{
    return core::expertLoadMarkers(current(), loadThresholds());
}

QString RoutingView::markersText() const { return m_markers->text(); }

void RoutingView::fillMarkers()
{
    const auto markers = loadMarkers();
    if (markers.empty()) {
        m_markers->clear();
        return;
    }
    QString dead, hot;
    for (const auto& m : markers) {
        QStringList d, h;
        for (int e : m.dead)
            d << QString::number(e);
        for (int e : m.hot)
            h << QString::number(e);
        if (!d.isEmpty())
            dead += (dead.isEmpty() ? QString() : QStringLiteral("; "))
                + tr("layer %1: %2").arg(m.layer).arg(d.join(", "));
        if (!h.isEmpty())
            hot += (hot.isEmpty() ? QString() : QStringLiteral("; "))
                + tr("layer %1: %2").arg(m.layer).arg(h.join(", "));
    }
    const auto t = loadThresholds();
    m_markers->setText(tr("Dead experts (share < %1/N): %2. Hot experts (share > %3/N): %4.")
                           .arg(t.deadBelow)
                           .arg(dead.isEmpty() ? tr("none") : dead)
                           .arg(t.hotAbove)
                           .arg(hot.isEmpty() ? tr("none") : hot));
}

void RoutingView::redraw()
{
    const int index = currentLayer();
    const auto& profiles = current();
    if (index < 0 || index >= static_cast<int>(profiles.size()))
        return;
    const auto& p = profiles[static_cast<std::size_t>(index)];
    const core::RoutingProfile* q = compared();
    const int run = std::max(0, m_compareRun->currentIndex());
    const QString qName = !q ? QString()
        : run == 0           ? tr("layer %1").arg(q->layer)
                             : tr("layer %1 of run #%2").arg(q->layer).arg(m_runs[static_cast<std::size_t>(run)].runId);
    const QString pName = tr("layer %1").arg(p.layer);

    const QVector<double> x = centers(p);
    m_rankPlot->clear();
    const std::size_t N = p.rankHistograms.size();
    // Ranks 1, 2, the middle one and the last: enough to see how peaked the routing is.
    const std::set<std::size_t> ranks{0, std::min<std::size_t>(1, N - 1), N / 2, N - 1};
    int color = 0;
    for (std::size_t r : ranks)
        m_rankPlot->addSeries(q ? tr("rank %1, %2").arg(r + 1).arg(pName) : tr("rank %1").arg(r + 1), x, share(p, r),
                              {color++, false});
    if (q) {
        color = 0;
        const std::size_t M = q->rankHistograms.size();
        for (std::size_t r : ranks) {
            const int c = color++;
            if (r < M)
                m_rankPlot->addSeries(tr("rank %1, %2").arg(r + 1).arg(qName), centers(*q), share(*q, r), {c, true});
        }
    }

    m_top1Plot->clear();
    m_top1Plot->addSeries(pName, x, share(p, 0), {0, false});
    if (q)
        m_top1Plot->addSeries(qName, centers(*q), share(*q, 0), {1, true});

    m_massPlot->clear();
    const QVector<double> err(p.errorByK.begin(), p.errorByK.end());
    const QString massName = tr("cumulative routing mass"), errName = tr("relative error");
    m_massPlot->addSeries(q ? tr("%1, %2").arg(massName, pName) : massName, ks(p), cumulativeMass(p), {0, false});
    m_massPlot->addSeries(q ? tr("%1, %2").arg(errName, pName) : errName, ks(p), err, {1, false});
    if (q) {
        m_massPlot->addSeries(tr("%1, %2").arg(massName, qName), ks(*q), cumulativeMass(*q), {0, true});
        m_massPlot->addSeries(tr("%1, %2").arg(errName, qName), ks(*q),
                              QVector<double>(q->errorByK.begin(), q->errorByK.end()), {1, true});
    }

    const auto marks = core::expertLoadMarkers(p, loadThresholds());
    QStringList labels;
    for (std::size_t e = 0; e < std::max(p.expertLoad.size(), q ? q->expertLoad.size() : 0); ++e) {
        const int id = static_cast<int>(e);
        const bool dead = std::find(marks.dead.begin(), marks.dead.end(), id) != marks.dead.end();
        const bool hot = std::find(marks.hot.begin(), marks.hot.end(), id) != marks.hot.end();
        labels << (dead ? tr("%1 dead").arg(e) : hot ? tr("%1 hot").arg(e) : QString::number(e));
    }
    m_loadPlot->setBars(labels, QVector<double>(p.expertLoad.begin(), p.expertLoad.end()), pName);
    m_loadPlot->setMarks(QVector<int>(marks.dead.begin(), marks.dead.end()),
                         tr("dead: < %1% of tokens").arg(100 * marks.deadShare, 0, 'f', 1),
                         QVector<int>(marks.hot.begin(), marks.hot.end()),
                         tr("hot: > %1% of tokens").arg(100 * marks.hotShare, 0, 'f', 1));
    if (q)
        m_loadPlot->setComparison(qName, QVector<double>(q->expertLoad.begin(), q->expertLoad.end()));

    const auto mass = cumulativeMass(p);
    QString text = tr("%1 tokens; routing entropy %2 nats (uniform: %3); mean top-1 weight %4")
                       .arg(p.tokens)
                       .arg(p.entropy, 0, 'f', 3)
                       .arg(std::log(static_cast<double>(std::max<std::size_t>(N, 1))), 0, 'f', 3)
                       .arg(mass.isEmpty() ? 0.0 : mass.front(), 0, 'f', 3);
    if (q) {
        const auto qm = cumulativeMass(*q);
        text += tr(". Dashed: %1 (entropy %2, mean top-1 weight %3)")
                    .arg(qName)
                    .arg(q->entropy, 0, 'f', 3)
                    .arg(qm.isEmpty() ? 0.0 : qm.front(), 0, 'f', 3);
    }
    m_summary->setText(text);
}

} // namespace ladimo::gui
