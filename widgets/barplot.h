// BarPlot: a labelled bar chart (per-layer parameters, expert load, ...). Takes neutral types;
// the plotting library stays an implementation detail. GUI thread only.
#pragma once

#include <QVector>
#include <QWidget>

class QCustomPlot;

namespace ladimo::widgets {

class BarPlot : public QWidget {
    Q_OBJECT
public:
    explicit BarPlot(QWidget* parent = nullptr);

    void setAxisLabels(const QString& x, const QString& y);
    void setBars(const QStringList& labels, const QVector<double>& values);
    int barCount() const { return m_count; }
    // Writes the plot as PNG or PDF (by extension); returns false when it cannot.
    bool save(const QString& file, int width = 0, int height = 0);

signals:
    void barClicked(int index);

private:
    QCustomPlot* m_plot = nullptr;
    int m_count = 0;
};

} // namespace ladimo::widgets
