// LinePlot: one or more named x/y series (loss curves, histograms, tradeoff curves) with an optional
// log y axis. A series can take the colour of another and a dashed pen, so a comparison overlay
// reads as "the same curve, other layer". Export as PNG/SVG/PDF and CSV from the context menu or
// the keyboard (plotexport.h). Neutral types in, the plotting library stays inside widgets/.
// GUI thread only.
#pragma once

#include <QVector>
#include <QWidget>

#include "widgets/plotexport.h"

class QCustomPlot;

namespace ladimo::widgets {

// How a series is drawn: colour from the palette (-1: the next one), solid or dashed.
struct SeriesStyle {
    int color = -1;
    bool dashed = false;
};

class LinePlot : public QWidget {
    Q_OBJECT
public:
    using Style = SeriesStyle;

    explicit LinePlot(QWidget* parent = nullptr);

    void setAxisLabels(const QString& x, const QString& y);
    void setLogY(bool on);
    void clear();
    void addSeries(const QString& name, const QVector<double>& x, const QVector<double>& y, Style style = {});
    int seriesCount() const;
    int pointCount(int series) const;
    QString seriesName(int series) const;
    QVector<double> seriesX(int series) const;
    QVector<double> seriesY(int series) const;
    bool seriesDashed(int series) const;
    // Writes the plot as PNG, SVG or PDF (by extension); returns false when it cannot.
    bool save(const QString& file, int width = 0, int height = 0);
    // The plotted series (see seriesTable) and writing them as CSV.
    CsvTable csvTable() const;
    bool saveCsv(const QString& file) const;

private:
    QCustomPlot* m_plot = nullptr;
    int m_nextColor = 0;
};

} // namespace ladimo::widgets
