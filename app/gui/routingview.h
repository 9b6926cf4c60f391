// RoutingView: stage 2a in the workbench. For the selected layer: histograms of the routing weight
// at each rank and of the top-1 weight, the cumulative top-k mass curve (with the error at each k)
// and the expert load; beside them an all-layers heatmap (layers x top-1 weight bins) where a click
// selects a layer; dead and hot experts (far below or above an even share of the tokens) are
// marked in the load plot and listed for all layers. A second layer, of this run or of another profiled run of the project, can be
// drawn over the first (dashed / hatched, named in the legends). Every plot exports PNG/SVG/CSV
// from its context menu. The runs come from the project session (projectsession.h); the view
// reads no file; the rest is arithmetic on stored histograms. GUI thread only.
#pragma once

#include <QString>
#include <QWidget>

#include <vector>

#include "projectdata.h"
#include "routing/expertload.h"

class QComboBox;
class QDoubleSpinBox;
class QLabel;

namespace ladimo::widgets {
class BarPlot;
class HeatmapPlot;
class LinePlot;
} // namespace ladimo::widgets

namespace ladimo::gui {

class RoutingView : public QWidget {
    Q_OBJECT
public:
    explicit RoutingView(QWidget* parent = nullptr);

    // Shows `profiles` (of run `runId`) at once and selects the first layer; `others`: the
    // project's profiled runs for comparison (the shown one among them is skipped); runsLoaded
    // follows at once.
    void setProfiles(int64_t runId, const std::vector<core::RoutingProfile>& profiles,
                     const std::vector<RoutingRun>& others = {});
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
    // Dead and hot experts (routing/expertload.h): marked in the expert load plot of the selected
    // layer and listed for all layers under the plots; the thresholds are the spin boxes'.
    void setLoadThresholds(const core::ExpertLoadThresholds& thresholds);
    core::ExpertLoadThresholds loadThresholds() const;
    std::vector<core::ExpertLoadMarkers> loadMarkers() const;
    QString markersText() const;

Q_SIGNALS:
    void layerSelected(int index);
    // The project's other runs were read (compareRunCount() tells how many runs there are).
    void runsLoaded();

private:
    void setComparisonRuns(const std::vector<RoutingRun>& runs);
    void fillHeatmap();
    void fillMarkers();
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
    QLabel* m_markers = nullptr;
    QDoubleSpinBox* m_deadBelow = nullptr;
    QDoubleSpinBox* m_hotAbove = nullptr;
};

} // namespace ladimo::gui
