// LinePlot: one or more named x/y series (loss curves, tradeoff curves) with an optional log y
// axis. Neutral types in, the plotting library stays inside widgets/. GUI thread only.
#pragma once

#include <QVector>
#include <QWidget>

class QCustomPlot;

namespace ladimo::widgets {

class LinePlot : public QWidget {
    Q_OBJECT
public:
    explicit LinePlot(QWidget* parent = nullptr);

    void setAxisLabels(const QString& x, const QString& y);
    void setLogY(bool on);
    void clear();
    void addSeries(const QString& name, const QVector<double>& x, const QVector<double>& y);
    int seriesCount() const;
    int pointCount(int series) const;
    // Writes the plot as PNG or PDF (by extension); returns false when it cannot.
    bool save(const QString& file, int width = 0, int height = 0);

private:
    QCustomPlot* m_plot = nullptr;
};

} // namespace ladimo::widgets
