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
    m_plot->legend->setBrush(QColor(255, 255, 255, 220));
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    installExportActions(
        this, [this](const QString& f) { return save(f); }, [this] { return csvTable(); });
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
    m_nextColor = 0;
    m_plot->replot();
}

void LinePlot::addSeries(const QString& name, const QVector<double>& x, const QVector<double>& y, Style style)
{
    auto* g = m_plot->addGraph();
    g->setName(name);
    const int color = style.color >= 0 ? style.color : m_nextColor++;
    g->setPen(QPen(kColors[color % 4], style.dashed ? 2.0 : 1.5, style.dashed ? Qt::DashLine : Qt::SolidLine));
    g->setData(x, y);
    m_plot->rescaleAxes();
    m_plot->replot();
}

int LinePlot::seriesCount() const { return m_plot->graphCount(); }

int LinePlot::pointCount(int series) const
{
    return series < m_plot->graphCount() ? m_plot->graph(series)->dataCount() : 0;
}

QString LinePlot::seriesName(int series) const
{
    return series >= 0 && series < m_plot->graphCount() ? m_plot->graph(series)->name() : QString();
}

QVector<double> LinePlot::seriesX(int series) const
{
    QVector<double> v;
    if (series >= 0 && series < m_plot->graphCount())
        for (auto it = m_plot->graph(series)->data()->constBegin(); it != m_plot->graph(series)->data()->constEnd();
             ++it)
            v << it->key;
    return v;
}

QVector<double> LinePlot::seriesY(int series) const
{
    QVector<double> v;
    if (series >= 0 && series < m_plot->graphCount())
        for (auto it = m_plot->graph(series)->data()->constBegin(); it != m_plot->graph(series)->data()->constEnd();
             ++it)
            v << it->value;
    return v;
}

bool LinePlot::seriesDashed(int series) const
{
    return series >= 0 && series < m_plot->graphCount() && m_plot->graph(series)->pen().style() == Qt::DashLine;
}

bool LinePlot::save(const QString& file, int width, int height) { return savePlotImage(m_plot, file, width, height); }

CsvTable LinePlot::csvTable() const
{
    QStringList names;
    QVector<QVector<double>> xs, ys;
    for (int i = 0; i < seriesCount(); ++i) {
        names << seriesName(i);
        xs << seriesX(i);
        ys << seriesY(i);
    }
    const QString x = m_plot->xAxis->label().isEmpty() ? QStringLiteral("x") : m_plot->xAxis->label();
    return seriesTable(x, names, xs, ys);
}

bool LinePlot::saveCsv(const QString& file) const { return writeCsv(file, csvTable()); }

} // namespace ladimo::widgets
