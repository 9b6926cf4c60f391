// RoutingView: stage 2a in the workbench. For the selected layer: histograms of the routing weight
// at each rank and of the top-1 weight, the cumulative top-k mass curve (with the error at each k)
// and the expert load; beside them an all-layers heatmap (layers x top-1 weight bins) where a click
// selects a layer. A second layer, of this run or of another profiled run of the project, can be
// drawn over the first (dashed / hatched, named in the legends). Every plot exports PNG/SVG/CSV
// from its context menu. The project's other runs are read on a worker thread; the rest is
// arithmetic on stored histograms. GUI thread only; the destructor waits for its worker.
#pragma once

#include <QFutureWatcher>
#include <QString>
#include <QWidget>

#include <vector>

#include "store/records.h"

class QComboBox;
class QLabel;

namespace ladimo::widgets {
class BarPlot;
class HeatmapPlot;
class LinePlot;
} // namespace ladimo::widgets

namespace ladimo::gui {

// One conversion run's routing profiles.
struct RoutingRun {
    int64_t runId = 0;
    QString description; // "run #3: 8 experts, coact" for the run combo
    std::vector<core::RoutingProfile> profiles;
};

// Every run of `projectPath` that has routing profiles, newest first; throws core::Error.
std::vector<RoutingRun> loadRoutingRuns(const QString& projectPath);

class RoutingView : public QWidget {
    Q_OBJECT
public:
    explicit RoutingView(QWidget* parent = nullptr);
    ~RoutingView() override;

    // Shows `profiles` (of run `runId`) at once and selects the first layer; when `projectPath` is
    // a project, its other profiled runs are read in the background for comparison (runsLoaded).
    void setProfiles(const QString& projectPath, int64_t runId, const std::vector<core::RoutingProfile>& profiles);
    void clear(const QString& message);

    // Selects the profile at `index` (an index into the profiles, not a layer number).
    bool selectLayer(int index);
    int currentLayer() const;
    // Draws the profile at `index` of comparison run `run` (0: this run; see compareRunCount)
    // over the selected one; index -1 removes the overlay.
    bool setComparison(int index, int run = 0);
    int comparisonLayer() const;
    int compareRunCount() const { return static_cast<int>(m_runs.size()); }
    int profileCount() const { return static_cast<int>(current().size()); }

    widgets::LinePlot* rankPlot() const { return m_rankPlot; }
    widgets::LinePlot* top1Plot() const { return m_top1Plot; }
    widgets::LinePlot* massPlot() const { return m_massPlot; }
    widgets::BarPlot* loadPlot() const { return m_loadPlot; }
    widgets::HeatmapPlot* heatmap() const { return m_heatmap; }
    QString summaryText() const;

Q_SIGNALS:
    void layerSelected(int index);
    // The project's other runs were read (compareRunCount() tells how many runs there are).
    void runsLoaded();

private:
    void onRunsLoaded();
    void fillHeatmap();
    void fillCompareLayers();
    void redraw();
    const std::vector<core::RoutingProfile>& current() const;
    const core::RoutingProfile* compared() const;

    std::vector<RoutingRun> m_runs; // [0]: the shown run; then the project's other profiled runs
    QLabel* m_summary = nullptr;
    QComboBox* m_layer = nullptr;
    QComboBox* m_compareRun = nullptr;
    QComboBox* m_compareLayer = nullptr;
    widgets::HeatmapPlot* m_heatmap = nullptr;
    widgets::LinePlot* m_rankPlot = nullptr;
    widgets::LinePlot* m_top1Plot = nullptr;
    widgets::LinePlot* m_massPlot = nullptr;
    widgets::BarPlot* m_loadPlot = nullptr;
    QFutureWatcher<std::vector<RoutingRun>> m_runsWatcher;
    QString m_path;
};

} // namespace ladimo::gui
