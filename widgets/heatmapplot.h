// HeatmapPlot: rows x equal-width bins as coloured cells with a labelled colour scale (the Routing
// view's all-layers overview: layers x routing-weight bins). Clicking a cell emits its row; the
// selected row is outlined. Export as PNG/SVG/PDF and CSV from the context menu or the keyboard
// (plotexport.h). Neutral types in; the plotting library stays inside widgets/. GUI thread only.
#pragma once

#include <QStringList>
#include <QVector>
#include <QWidget>

#include "widgets/plotexport.h"

class QCustomPlot;
class QCPColorMap;
class QCPColorScale;
class QCPItemRect;
class QMouseEvent;

namespace ladimo::widgets {

class HeatmapPlot : public QWidget {
    Q_OBJECT
public:
    explicit HeatmapPlot(QWidget* parent = nullptr);

    // x: the binned quantity, y: what a row is, scale: what a colour means.
    void setAxisLabels(const QString& x, const QString& y, const QString& scale);
    // values[row][bin]; the bins split [xLower, xUpper] equally; rowLabels name the rows (bottom
    // to top). Rows shorter than the first are padded with NaN (drawn blank).
    void setData(const QStringList& rowLabels, double xLower, double xUpper, const QVector<QVector<double>>& values);
    void clear();

    int rowCount() const { return static_cast<int>(m_values.size()); }
    int columnCount() const { return m_columns; }
    double value(int row, int column) const;
    QString rowLabel(int row) const { return m_rowLabels.value(row); }
    // Outlines `row` (-1: none); does not emit rowClicked.
    void setSelectedRow(int row);
    int selectedRow() const { return m_selected; }
    // The centre of a cell in this widget's pixels (for tests that click).
    QPoint pixelForCell(int row, int column) const;
    // Draws now instead of at the next event loop turn.
    void replotNow();

    // Writes the plot as PNG, SVG or PDF (by extension); returns false when it cannot.
    bool save(const QString& file, int width = 0, int height = 0);
    // One row per bin: bin_lower, bin_upper, then a column per row label.
    CsvTable csvTable() const;
    bool saveCsv(const QString& file) const;

Q_SIGNALS:
    void rowClicked(int row);

private:
    void onMousePress(QMouseEvent* event);

    QCustomPlot* m_plot = nullptr;
    QCPColorMap* m_map = nullptr;
    QCPColorScale* m_scale = nullptr;
    QCPItemRect* m_selection = nullptr;
    QStringList m_rowLabels;
    QVector<QVector<double>> m_values;
    int m_columns = 0;
    double m_xLower = 0, m_xUpper = 1;
    int m_selected = -1;
};

} // namespace ladimo::widgets
