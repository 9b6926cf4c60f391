#include "widgets/tokenlayermap.h"

#include <QVBoxLayout>
#include <cmath>
#include <limits>
#include <qcustomplot.h>

namespace ladimo::widgets {

TokenLayerMap::TokenLayerMap(QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot(this))
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_plot);
    setMinimumSize(240, 160);
    m_map = new QCPColorMap(m_plot->xAxis, m_plot->yAxis);
    m_map->setInterpolate(false);
    m_map->setTightBoundary(false);
    m_scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(0, 1, m_scale);
    m_scale->setType(QCPAxis::atRight);
    m_scale->setBarWidth(10);
    m_map->setColorScale(m_scale);
    QCPColorGradient gradient(QCPColorGradient::gpThermal);
    gradient.setNanHandling(QCPColorGradient::nhTransparent);
    m_map->setGradient(gradient);
    auto* margins = new QCPMarginGroup(m_plot);
    m_plot->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, margins);
    m_scale->setMarginGroup(QCP::msBottom | QCP::msTop, margins);
    m_plot->xAxis->setLabel(tr("token"));
    m_plot->yAxis->setLabel(tr("layer"));
    m_plot->xAxis->setTickLabelRotation(60);
    m_selection = new QCPItemRect(m_plot);
    m_selection->setPen(QPen(QColor(40, 200, 255), 2.5));
    m_selection->setBrush(Qt::NoBrush);
    m_selection->setVisible(false);
    m_selection->setSelectable(false);
    connect(m_plot, &QCustomPlot::mousePress, this, &TokenLayerMap::onMousePress);
    installExportActions(
        this, [this](const QString& f) { return save(f); }, [this] { return csvTable(); });
}

void TokenLayerMap::setScaleLabel(const QString& scale)
{
    m_scale->axis()->setLabel(scale);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void TokenLayerMap::setData(const QStringList& tokenLabels, const QStringList& layerLabels,
                            const QVector<QVector<double>>& values)
{
    m_tokens = tokenLabels;
    m_layers = layerLabels;
    m_values = values;
    const int rows = static_cast<int>(values.size()), cols = static_cast<int>(tokenLabels.size());
    if (rows == 0 || cols == 0) {
        clear();
        return;
    }
    m_map->data()->setSize(cols, rows);
    m_map->data()->setRange(QCPRange(0, std::max(cols - 1, 0)), QCPRange(0, std::max(rows - 1, 0)));
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) {
            const double v = value(r, c);
            m_map->data()->setCell(c, r, v);
            if (std::isfinite(v)) {
                lo = std::min(lo, v);
                hi = std::max(hi, v);
            }
        }
    if (!std::isfinite(lo))
        lo = 0, hi = 1;
    m_map->setDataRange(QCPRange(std::min(lo, 0.0), hi > std::min(lo, 0.0) ? hi : std::min(lo, 0.0) + 1));
    QSharedPointer<QCPAxisTickerText> yTicks(new QCPAxisTickerText);
    for (int r = 0; r < rows; ++r)
        yTicks->addTick(r, layerLabels.value(r, QString::number(r)));
    m_plot->yAxis->setTicker(yTicks);
    QSharedPointer<QCPAxisTickerText> xTicks(new QCPAxisTickerText);
    const int step = std::max(1, (cols + 47) / 48); // at most about 48 labels
    for (int c = 0; c < cols; c += step)
        xTicks->addTick(c, tokenLabels.value(c));
    m_plot->xAxis->setTicker(xTicks);
    m_plot->xAxis->setRange(-0.5, cols - 0.5);
    m_plot->yAxis->setRange(-0.5, rows - 0.5);
    setSelectedColumn(m_selected < cols ? m_selected : -1);
}

void TokenLayerMap::clear()
{
    m_tokens.clear();
    m_layers.clear();
    m_values.clear();
    m_selected = -1;
    m_map->data()->clear();
    m_selection->setVisible(false);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

double TokenLayerMap::value(int layer, int token) const
{
    if (layer < 0 || layer >= m_values.size() || token < 0 || token >= m_values[layer].size())
        return std::numeric_limits<double>::quiet_NaN();
    return m_values[layer][token];
}

void TokenLayerMap::setSelectedColumn(int token)
{
    m_selected = token >= 0 && token < tokenCount() ? token : -1;
    m_selection->setVisible(m_selected >= 0);
    if (m_selected >= 0) {
        m_selection->topLeft->setCoords(m_selected - 0.5, layerCount() - 0.5);
        m_selection->bottomRight->setCoords(m_selected + 0.5, -0.5);
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QPoint TokenLayerMap::pixelForCell(int layer, int token) const
{
    const QPointF p(m_plot->xAxis->coordToPixel(token), m_plot->yAxis->coordToPixel(layer));
    return m_plot->mapTo(this, p.toPoint());
}

void TokenLayerMap::replotNow() { m_plot->replot(QCustomPlot::rpImmediateRefresh); }

void TokenLayerMap::onMousePress(QMouseEvent* event)
{
    if (event->button() != Qt::LeftButton || tokenCount() == 0)
        return;
    if (!m_plot->axisRect()->rect().contains(event->position().toPoint()))
        return;
    const int token = static_cast<int>(std::lround(m_plot->xAxis->pixelToCoord(event->position().x())));
    if (token < 0 || token >= tokenCount())
        return;
    setSelectedColumn(token);
    Q_EMIT tokenClicked(token);
}

bool TokenLayerMap::save(const QString& file, int width, int height)
{
    return savePlotImage(m_plot, file, width, height);
}

CsvTable TokenLayerMap::csvTable() const
{
    CsvTable t;
    t.header << QStringLiteral("index") << QStringLiteral("token");
    for (int r = 0; r < layerCount(); ++r)
        t.header << m_layers.value(r, QString::number(r));
    for (int c = 0; c < tokenCount(); ++c) {
        QStringList row{QString::number(c), m_tokens.value(c)};
        for (int r = 0; r < layerCount(); ++r)
            row << csvNumber(value(r, c));
        t.rows << row;
    }
    return t;
}

bool TokenLayerMap::saveCsv(const QString& file) const { return writeCsv(file, csvTable()); }

} // namespace ladimo::widgets
