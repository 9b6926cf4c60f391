#include "widgets/lineplot.h"

#include <QVBoxLayout>
#include <qcustomplot.h>

namespace ladimo::widgets {

namespace {
const QColor kColors[] = {QColor(70, 120, 190), QColor(220, 110, 40), QColor(60, 160, 80), QColor(170, 60, 160)};
}

LinePlot::LinePlot(QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot(this))
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_plot);
    setMinimumHeight(160);
    m_plot->legend->setVisible(true);
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
}

void LinePlot::setAxisLabels(const QString& x, const QString& y)
{
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
}

void LinePlot::setLogY(bool on)
{
    m_plot->yAxis->setScaleType(on ? QCPAxis::stLogarithmic : QCPAxis::stLinear);
    if (on)
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    else
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    m_plot->replot();
}

void LinePlot::clear()
{
    m_plot->clearGraphs();
    m_plot->replot();
}

void LinePlot::addSeries(const QString& name, const QVector<double>& x, const QVector<double>& y)
{
    auto* g = m_plot->addGraph();
    g->setName(name);
    g->setPen(QPen(kColors[(m_plot->graphCount() - 1) % 4], 1.5));
    g->setData(x, y);
    m_plot->rescaleAxes();
    m_plot->replot();
}

int LinePlot::seriesCount() const { return m_plot->graphCount(); }

int LinePlot::pointCount(int series) const
{
    return series < m_plot->graphCount() ? m_plot->graph(series)->dataCount() : 0;
}

bool LinePlot::save(const QString& file, int width, int height)
{
    if (file.endsWith(".pdf", Qt::CaseInsensitive))
        return m_plot->savePdf(file, width, height);
    return m_plot->savePng(file, width, height);
}

} // namespace ladimo::widgets
