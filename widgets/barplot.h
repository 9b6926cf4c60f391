// BarPlot: a labelled bar chart (per-layer parameters, expert load, ...), optionally with a second
// set of bars beside the first for comparison (hatched, with a legend) and marked bars in colours
// of their own (low / high). Export as PNG/SVG/PDF and
// CSV from the context menu or the keyboard (plotexport.h). Takes neutral types; the plotting
// library stays an implementation detail. GUI thread only.
#pragma once

#include <QStringList>
#include <QVector>
#include <QWidget>

#include "widgets/plotexport.h"

class QCustomPlot;

namespace ladimo::widgets {

class BarPlot : public QWidget {
    Q_OBJECT
public:
    explicit BarPlot(QWidget* parent = nullptr);

    void setAxisLabels(const QString& x, const QString& y);
    // Replaces the bars (and drops any comparison); `name` labels them in the legend, which shows
    // only while a comparison is drawn.
    void setBars(const QStringList& labels, const QVector<double>& values, const QString& name = {});
    // Bars of another layer or run beside the first ones; empty values remove them.
    void setComparison(const QString& name, const QVector<double>& values);
    // Marks bars (by index) as low or high: drawn in their own colours and named in the legend
    // (the Routing view's dead and hot experts). Cleared by setBars; empty lists remove them.
    void setMarks(const QVector<int>& low, const QString& lowName, const QVector<int>& high, const QString& highName);
    QVector<int> lowMarks() const { return m_low; }
    QVector<int> highMarks() const { return m_high; }
    int barCount() const { return m_count; }
    bool hasComparison() const { return !m_comparison.isEmpty(); }
    QVector<double> values() const { return m_values; }
    QVector<double> comparisonValues() const { return m_comparison; }
    // Writes the plot as PNG, SVG or PDF (by extension); returns false when it cannot.
    bool save(const QString& file, int width = 0, int height = 0);
    // label, value (and the comparison) per bar.
    CsvTable csvTable() const;
    bool saveCsv(const QString& file) const;

Q_SIGNALS:
    void barClicked(int index);

private:
    void redraw();

    QCustomPlot* m_plot = nullptr;
    int m_count = 0;
    QStringList m_labels;
    QVector<double> m_values, m_comparison;
    QString m_name, m_comparisonName;
    QVector<int> m_low, m_high;
    QString m_lowName, m_highName;
};

} // namespace ladimo::widgets
