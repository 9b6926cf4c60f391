#include "widgets/barplot.h"

#include <QVBoxLayout>
#include <cmath>
#include <qcustomplot.h>

namespace ladimo::widgets {

BarPlot::BarPlot(QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot(this))
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_plot);
    setMinimumHeight(160);
    connect(m_plot, &QCustomPlot::plottableClick, this, [this](QCPAbstractPlottable*, int dataIndex, QMouseEvent*) {
        emit barClicked(dataIndex);
    });
}

void BarPlot::setAxisLabels(const QString& x, const QString& y)
{
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
}

void BarPlot::setBars(const QStringList& labels, const QVector<double>& values)
{
    m_plot->clearPlottables();
    auto* bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
    bars->setBrush(QColor(70, 120, 190));
    bars->setPen(Qt::NoPen);
    QVector<double> keys;
    for (int i = 0; i < values.size(); ++i)
        keys << i;
    bars->setData(keys, values, true);
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    for (int i = 0; i < labels.size(); ++i)
        ticker->addTick(i, labels[i]);
    m_plot->xAxis->setTicker(ticker);
    m_plot->xAxis->setRange(-0.7, std::max<qsizetype>(1, values.size()) - 0.3);
    double top = 0;
    for (double v : values)
        top = std::max(top, v);
    m_plot->yAxis->setRange(0, top > 0 ? top * 1.1 : 1);
    m_count = static_cast<int>(values.size());
    m_plot->replot();
}

bool BarPlot::save(const QString& file, int width, int height)
{
    if (file.endsWith(".pdf", Qt::CaseInsensitive))
        return m_plot->savePdf(file, width, height);
    return m_plot->savePng(file, width, height);
}

} // namespace ladimo::widgets
