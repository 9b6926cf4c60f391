#include "widgets/tradeoffplot.h"

#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <qcustomplot.h>

namespace ladimo::widgets {

namespace {

constexpr double kClickRadius = 10.0; // pixels

void setPoints(QCPCurve* curve, const QVector<QPointF>& points)
{
    QVector<double> t, x, y;
    for (int i = 0; i < points.size(); ++i) {
        t << i;
        x << points[i].x();
        y << points[i].y();
    }
    curve->setData(t, x, y);
}

} // namespace

TradeoffPlot::TradeoffPlot(QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot(this))
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_plot);
    setMinimumSize(280, 220);
    m_plot->legend->setVisible(true);
    m_plot->legend->setFont(QFont(font().family(), std::max(7, font().pointSize() - 1)));
    m_plot->legend->setBrush(QColor(255, 255, 255, 220));
    m_plot->axisRect()->insetLayout()->setInsetAlignment(0, Qt::AlignTop | Qt::AlignRight);
    // Drawn in this order: the current policy last, on top of everything.
    m_front = addCurve(tr("Pareto front (searched)"), QColor(70, 120, 190), QCPScatterStyle::ssDisc, 6, true);
    m_uniform = addCurve(tr("uniform top-k"), QColor(120, 120, 120), QCPScatterStyle::ssSquare, 7, false);
    // The dense model has error 0, off a log axis: a vertical line at its cost.
    m_dense = addCurve(tr("dense model (error 0)"), QColor(0, 0, 0), QCPScatterStyle::ssNone, 0, true);
    m_dense->setPen(QPen(QColor(0, 0, 0), 1.2, Qt::DashLine));
    m_stored = addCurve(tr("stored policies"), QColor(60, 160, 80), QCPScatterStyle::ssTriangle, 9, false);
    m_estimated = addCurve(tr("evaluated: estimate"), QColor(170, 60, 160), QCPScatterStyle::ssCircle, 9, false);
    m_measured = addCurve(tr("evaluated: measured"), QColor(170, 60, 160), QCPScatterStyle::ssDisc, 7, false);
    m_currentCurve = addCurve(tr("current policy"), QColor(220, 60, 40), QCPScatterStyle::ssDiamond, 14, false);
    // Errors span orders of magnitude between top-1 and all experts: log y keeps the useful
    // (low-error) end of the front readable.
    m_plot->yAxis->setScaleType(QCPAxis::stLogarithmic);
    m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    m_plot->yAxis->setNumberFormat("gb");
    connect(m_plot, &QCustomPlot::mousePress, this, &TradeoffPlot::onMousePress);
    // Many evaluated or stored policies sit close together: their labels would pile up into an
    // unreadable blot. Which labels fit depends on the axis ranges and the widget's size, so it
    // is decided again before every replot.
    connect(m_plot, &QCustomPlot::beforeReplot, this, &TradeoffPlot::hideOverlappingLabels);
    m_plot->setToolTip(tr("Error proxy against cost as a fraction of the dense model. Click a point of the "
                          "Pareto front or a uniform top-k point to apply that policy. Right click to export."));
    installExportActions(
        this, [this](const QString& f) { return save(f); }, [this] { return csvTable(); });
}

QCPCurve* TradeoffPlot::addCurve(const QString& name, const QColor& color, int shape, double size, bool line)
{
    auto* c = new QCPCurve(m_plot->xAxis, m_plot->yAxis);
    c->setName(name);
    c->setPen(line ? QPen(color, 1.5) : QPen(color));
    c->setLineStyle(line ? QCPCurve::lsLine : QCPCurve::lsNone);
    c->setScatterStyle(QCPScatterStyle(static_cast<QCPScatterStyle::ScatterShape>(shape), QPen(color, 1.5),
                                       shape == QCPScatterStyle::ssCircle ? QBrush(Qt::NoBrush) : QBrush(color), size));
    return c;
}

void TradeoffPlot::replaceLabels(const char* series, const QVector<QPointF>& points, const QStringList& labels,
                                 const QColor& color, Qt::Alignment alignment, const QMargins& padding)
{
    const QString name = QString::fromLatin1(series);
    for (auto it = m_labels.begin(); it != m_labels.end();) {
        if ((*it)->property("series").toString() == name) {
            m_plot->removeItem(*it);
            it = m_labels.erase(it);
        } else {
            ++it;
        }
    }
    for (int i = 0; i < points.size() && i < labels.size(); ++i) {
        auto* t = new QCPItemText(m_plot);
        t->setProperty("series", name);
        t->position->setCoords(points[i].x(), points[i].y());
        t->setPositionAlignment(alignment);
        t->setPadding(padding);
        t->setColor(color);
        t->setText(labels[i]);
        m_labels << t;
    }
}

void TradeoffPlot::hideOverlappingLabels()
{
    QVector<QCPItemText*> ordered; // uniform first (they name the axis of k), then stored, then measured
    for (const char* series : {"uniform", "stored", "measured"})
        for (auto* t : std::as_const(m_labels))
            if (t->property("series").toString() == QLatin1String(series))
                ordered << t;
    QVector<QRectF> drawn;
    for (auto* t : std::as_const(ordered)) {
        const QPointF at = t->position->pixelPosition();
        const QMargins pad = t->padding();
        const QSizeF size
            = QFontMetricsF(t->font()).size(0, t->text()) + QSizeF(pad.left() + pad.right(), pad.top() + pad.bottom());
        const Qt::Alignment a = t->positionAlignment();
        const double x = a & Qt::AlignRight ? at.x() - size.width()
            : a & Qt::AlignHCenter          ? at.x() - size.width() / 2
                                            : at.x();
        const double y = a & Qt::AlignBottom ? at.y() - size.height()
            : a & Qt::AlignVCenter           ? at.y() - size.height() / 2
                                             : at.y();
        const QRectF box(QPointF(x, y), size);
        const bool clear = QRectF(m_plot->axisRect()->rect()).contains(box) && // not cut off at the edge
            std::none_of(drawn.begin(), drawn.end(), [&](const QRectF& r) { return r.intersects(box); });
        t->setVisible(clear);
        if (clear)
            drawn << box;
    }
}

QStringList TradeoffPlot::visibleLabels() const
{
    QStringList out;
    for (const auto* t : m_labels)
        if (t->visible())
            out << t->text();
    return out;
}

void TradeoffPlot::setAxisLabels(const QString& x, const QString& y)
{
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void TradeoffPlot::setFront(const QVector<QPointF>& points)
{
    m_frontPoints = points;
    setPoints(m_front, points);
    rescale();
}

void TradeoffPlot::setUniform(const QVector<QPointF>& points, const QStringList& labels)
{
    m_uniformPoints = points;
    setPoints(m_uniform, points);
    replaceLabels("uniform", points, labels, QColor(90, 90, 90), Qt::AlignLeft | Qt::AlignBottom, QMargins(5, 0, 0, 3));
    rescale();
}

void TradeoffPlot::setDense(const QPointF& point)
{
    m_densePoint = point;
    m_hasDense = true;
    rescale();
}

void TradeoffPlot::setStored(const QVector<QPointF>& points, const QStringList& labels)
{
    setPoints(m_stored, points);
    replaceLabels("stored", points, labels, QColor(40, 120, 60), Qt::AlignRight | Qt::AlignTop, QMargins(0, 3, 5, 0));
    rescale();
}

void TradeoffPlot::setMeasured(const QVector<QPair<QPointF, QPointF>>& pairs, const QStringList& labels)
{
    for (auto* link : std::as_const(m_links))
        m_plot->removePlottable(link);
    m_links.clear();
    QVector<QPointF> estimated, measured;
    for (const auto& p : pairs) {
        estimated << p.first;
        measured << p.second;
        auto* link = new QCPCurve(m_plot->xAxis, m_plot->yAxis);
        link->removeFromLegend();
        link->setPen(QPen(QColor(170, 60, 160), 1.2, Qt::DashLine));
        setPoints(link, {p.first, p.second});
        m_links << link;
    }
    setPoints(m_estimated, estimated);
    setPoints(m_measured, measured);
    replaceLabels("measured", measured, labels, QColor(150, 50, 140), Qt::AlignLeft | Qt::AlignTop,
                  QMargins(5, 3, 0, 0));
    rescale();
}

void TradeoffPlot::setCurrent(const QPointF& point)
{
    m_current = point;
    const bool first = !m_hasCurrent;
    m_hasCurrent = true;
    setPoints(m_currentCurve, {point});
    // Rescale only when the point leaves the visible range: a drag keeps the axes still.
    if (first || !m_plot->xAxis->range().contains(point.x()) || !m_plot->yAxis->range().contains(point.y()))
        rescale();
    else
        m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void TradeoffPlot::clear()
{
    m_frontPoints.clear();
    m_uniformPoints.clear();
    for (auto* c : {m_front, m_uniform, m_dense, m_stored, m_estimated, m_measured, m_currentCurve})
        c->data()->clear();
    for (auto* link : std::as_const(m_links))
        m_plot->removePlottable(link);
    m_links.clear();
    for (auto* item : std::as_const(m_labels))
        m_plot->removeItem(item);
    m_labels.clear();
    m_hasCurrent = false;
    m_hasDense = false;
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

int TradeoffPlot::frontCount() const { return m_front->dataCount(); }
int TradeoffPlot::uniformCount() const { return m_uniform->dataCount(); }
int TradeoffPlot::storedCount() const { return m_stored->dataCount(); }
int TradeoffPlot::measuredCount() const { return m_measured->dataCount(); }

QPointF TradeoffPlot::frontPoint(int index) const
{
    return index >= 0 && index < m_frontPoints.size() ? m_frontPoints[index] : QPointF();
}

QPoint TradeoffPlot::pixelFor(const QPointF& point) const
{
    const QPointF p(m_plot->xAxis->coordToPixel(point.x()), m_plot->yAxis->coordToPixel(point.y()));
    return m_plot->mapTo(this, p.toPoint());
}

void TradeoffPlot::replotNow() { m_plot->replot(QCustomPlot::rpImmediateRefresh); }

bool TradeoffPlot::save(const QString& file, int width, int height)
{
    return savePlotImage(m_plot, file, width, height);
}

CsvTable TradeoffPlot::csvTable() const
{
    CsvTable t;
    t.header << QStringLiteral("series")
             << (m_plot->xAxis->label().isEmpty() ? QStringLiteral("x") : m_plot->xAxis->label())
             << (m_plot->yAxis->label().isEmpty() ? QStringLiteral("y") : m_plot->yAxis->label())
             << QStringLiteral("label");
    // Labels by series and position, as the text items hold them.
    auto labelAt = [this](const char* series, double x, double y) {
        for (const auto* item : m_labels)
            if (item->property("series").toString() == QLatin1String(series)
                && item->position->coords() == QPointF(x, y))
                return item->text();
        return QString();
    };
    const std::pair<QCPCurve*, const char*> series[]
        = {{m_front, ""},     {m_uniform, "uniform"},   {m_dense, ""},       {m_stored, "stored"},
           {m_estimated, ""}, {m_measured, "measured"}, {m_currentCurve, ""}};
    for (const auto& [curve, labels] : series) {
        if (curve == m_dense) {
            if (m_hasDense)
                t.rows << QStringList{curve->name(), csvNumber(m_densePoint.x()), csvNumber(m_densePoint.y()),
                                      QString()};
            continue;
        }
        for (auto it = curve->data()->constBegin(); it != curve->data()->constEnd(); ++it)
            t.rows << QStringList{curve->name(), csvNumber(it->key), csvNumber(it->value),
                                  *labels ? labelAt(labels, it->key, it->value) : QString()};
    }
    return t;
}

bool TradeoffPlot::saveCsv(const QString& file) const { return writeCsv(file, csvTable()); }

void TradeoffPlot::onMousePress(QMouseEvent* event)
{
    if (event->button() != Qt::LeftButton)
        return;
    const QPointF at = event->position();
    auto nearest = [&](const QVector<QPointF>& points, double* distance) {
        int best = -1;
        *distance = std::numeric_limits<double>::infinity();
        for (int i = 0; i < points.size(); ++i) {
            const double dx = m_plot->xAxis->coordToPixel(points[i].x()) - at.x();
            const double dy = m_plot->yAxis->coordToPixel(points[i].y()) - at.y();
            const double d = std::hypot(dx, dy);
            if (d < *distance) {
                *distance = d;
                best = i;
            }
        }
        return best;
    };
    double df = 0, du = 0;
    const int f = nearest(m_frontPoints, &df);
    const int u = nearest(m_uniformPoints, &du);
    if (f >= 0 && df <= kClickRadius && df <= du)
        Q_EMIT frontPointClicked(f);
    else if (u >= 0 && du <= kClickRadius)
        Q_EMIT uniformPointClicked(u);
}

void TradeoffPlot::rescale()
{
    double x0 = std::numeric_limits<double>::infinity(), x1 = -x0, y0 = x0, y1 = -x0;
    int n = 0;
    for (auto* c : {m_front, m_uniform, m_stored, m_estimated, m_measured, m_currentCurve})
        for (auto it = c->data()->constBegin(); it != c->data()->constEnd(); ++it) {
            if (!(it->value > 0))
                continue; // not on the log axis
            x0 = std::min(x0, it->key);
            x1 = std::max(x1, it->key);
            y0 = std::min(y0, it->value);
            y1 = std::max(y1, it->value);
            ++n;
        }
    if (m_hasDense) {
        x0 = std::min(x0, m_densePoint.x());
        x1 = std::max(x1, m_densePoint.x());
    }
    // Empty series stay out of the legend.
    for (auto* c : {m_front, m_uniform, m_dense, m_stored, m_estimated, m_measured, m_currentCurve}) {
        if (c->dataCount() > 0)
            c->addToLegend();
        else
            c->removeFromLegend();
    }
    if (n > 0) {
        const double px = std::max(0.02, 0.05 * (x1 - x0));
        // Room on the right and above for the labels.
        m_plot->xAxis->setRange(x0 - px, x1 + 2 * px);
        m_plot->yAxis->setRange(y0 / 1.6, y1 * 1.6);
        if (m_hasDense)
            setPoints(m_dense, {QPointF(m_densePoint.x(), y0 / 1.6), QPointF(m_densePoint.x(), y1 * 1.6)});
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

} // namespace ladimo::widgets
