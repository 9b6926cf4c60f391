// TradeoffPlot: the accuracy/cost tradeoff of routing policies. x is a cost as a fraction of the
// dense model (activated FFN parameters or estimated latency), y an error measure. Shows the
// Pareto front (a line of clickable points), uniform top-k points with labels, the dense model,
// stored policies, estimate -> measurement pairs joined by a segment, and the current policy as
// one marker that moves live. The error axis is logarithmic; the dense model (error 0) is drawn
// as a vertical line at its cost. Clicking near a front or uniform point emits its index. Neutral Qt
// types in; the plotting library stays inside widgets/. Export as PNG/SVG/PDF and CSV from the
// context menu or the keyboard (plotexport.h). GUI thread only.
#pragma once

#include <QColor>
#include <QMargins>
#include <QPair>
#include <QPointF>
#include <QStringList>
#include <QVector>
#include <QWidget>

#include "widgets/plotexport.h"

class QCustomPlot;
class QCPCurve;
class QCPItemText;
class QMouseEvent;

namespace ladimo::widgets {

class TradeoffPlot : public QWidget {
    Q_OBJECT
public:
    explicit TradeoffPlot(QWidget* parent = nullptr);

    void setAxisLabels(const QString& x, const QString& y);
    // Each setter replaces its series; axes rescale to everything shown except while only the
    // current point moves (so a slider drag does not make the plot jump).
    void setFront(const QVector<QPointF>& points);
    void setUniform(const QVector<QPointF>& points, const QStringList& labels);
    void setDense(const QPointF& point);
    void setStored(const QVector<QPointF>& points, const QStringList& labels);
    // Estimate and measurement of the same policy; `labels` describe the measurement.
    void setMeasured(const QVector<QPair<QPointF, QPointF>>& pairs, const QStringList& labels);
    void setCurrent(const QPointF& point);
    void clear();

    int frontCount() const;
    int uniformCount() const;
    int storedCount() const;
    int measuredCount() const;
    QPointF frontPoint(int index) const;
    QPointF currentPoint() const { return m_current; }
    bool hasCurrent() const { return m_hasCurrent; }
    // Where a plot coordinate lies in this widget's pixels (for tests that click).
    QPoint pixelFor(const QPointF& point) const;
    // Draws now instead of at the next event loop turn (benchmarks, screenshots).
    void replotNow();
    // Writes the plot as PNG, SVG or PDF (by extension); returns false when it cannot.
    bool save(const QString& file, int width = 0, int height = 0);
    // The point labels drawn at the last replot: labels that would be cut off at the plot's edge
    // are not drawn, and where labels would overlap, only the first
    // (uniform, then stored, then measured) is drawn; the CSV export keeps every label.
    QStringList visibleLabels() const;
    // Every point shown: series, x, y, label.
    CsvTable csvTable() const;
    bool saveCsv(const QString& file) const;

Q_SIGNALS:
    void frontPointClicked(int index);
    void uniformPointClicked(int index);

private:
    void onMousePress(QMouseEvent* event);
    void rescale();
    void hideOverlappingLabels();
    void replaceLabels(const char* series, const QVector<QPointF>& points, const QStringList& labels,
                       const QColor& color, Qt::Alignment alignment, const QMargins& padding);
    QCPCurve* addCurve(const QString& name, const QColor& color, int shape, double size, bool line);

    QCustomPlot* m_plot = nullptr;
    QCPCurve* m_front = nullptr;
    QCPCurve* m_uniform = nullptr;
    QCPCurve* m_dense = nullptr;
    QCPCurve* m_stored = nullptr;
    QCPCurve* m_estimated = nullptr;
    QCPCurve* m_measured = nullptr;
    QCPCurve* m_currentCurve = nullptr;
    QVector<QPointF> m_frontPoints, m_uniformPoints;
    QVector<QCPItemText*> m_labels; // uniform and stored labels
    QVector<QCPCurve*> m_links;     // estimate -> measurement segments
    QPointF m_current{};
    QPointF m_densePoint{};
    bool m_hasDense = false;
    bool m_hasCurrent = false;
};

} // namespace ladimo::widgets
