#include "widgets/barplot.h"

#include <QVBoxLayout>
#include <algorithm>
#include <cmath>
#include <tuple>
#include <qcustomplot.h>

namespace ladimo::widgets {

BarPlot::BarPlot(QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot(this))
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_plot);
    setMinimumHeight(160);
    m_plot->legend->setBrush(QColor(255, 255, 255, 220));
    connect(m_plot, &QCustomPlot::plottableClick, this,
            [this](QCPAbstractPlottable*, int dataIndex, QMouseEvent*) { Q_EMIT barClicked(dataIndex); });
    installExportActions(
        this, [this](const QString& f) { return save(f); }, [this] { return csvTable(); });
}

void BarPlot::setAxisLabels(const QString& x, const QString& y)
{
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
}

void BarPlot::setBars(const QStringList& labels, const QVector<double>& values, const QString& name)
{
    m_labels = labels;
    m_values = values;
    m_name = name;
    m_comparison.clear();
    m_comparisonName.clear();
    m_low.clear();
    m_high.clear();
    redraw();
}

void BarPlot::setMarks(const QVector<int>& low, const QString& lowName, const QVector<int>& high,
                       const QString& highName)
{
    m_low = low;
    m_high = high;
    m_lowName = lowName;
    m_highName = highName;
    redraw();
}

void BarPlot::setComparison(const QString& name, const QVector<double>& values)
{
    m_comparisonName = name;
    m_comparison = values;
    redraw();
}

void BarPlot::redraw()
{
    m_plot->clearPlottables();
    const bool compare = !m_comparison.isEmpty();
    QCPBarsGroup* group = nullptr;
    if (compare) {
        // clearPlottables leaves groups alive: one per redraw would pile up, so reuse the first.
        group = m_plot->findChild<QCPBarsGroup*>();
        if (!group)
            group = new QCPBarsGroup(m_plot);
        group->setSpacing(1);
    }
    auto add = [&](const QVector<double>& values, const QString& name, const QBrush& brush) {
        auto* bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
        bars->setName(name);
        bars->setBrush(brush);
        bars->setPen(compare ? QPen(QColor(70, 120, 190)) : QPen(Qt::NoPen));
        bars->setWidth(compare ? 0.4 : 0.75);
        QVector<double> keys;
        for (int i = 0; i < values.size(); ++i)
            keys << i;
        bars->setData(keys, values, true);
        if (group)
            bars->setBarsGroup(group);
    };
    add(m_values, m_name.isEmpty() ? tr("bars") : m_name, QColor(70, 120, 190));
    if (compare)
        add(m_comparison, m_comparisonName, QBrush(QColor(220, 110, 40), Qt::BDiagPattern));
    // Marked bars over their own (same place), in a colour of their mark; at least a stub tall, so
    // an empty bar still shows its mark. Not with a comparison (the labels still say it).
    double highest = 0;
    for (double v : m_values)
        highest = std::max(highest, v);
    bool marked = false;
    for (const auto& [marks, name, colour] : {std::make_tuple(&m_low, &m_lowName, QColor(150, 150, 150)),
                                              std::make_tuple(&m_high, &m_highName, QColor(210, 40, 40))}) {
        QVector<double> keys, values;
        for (int i : *marks)
            if (i >= 0 && i < m_values.size()) {
                keys << i;
                values << std::max(m_values[i], 0.02 * highest);
            }
        if (keys.isEmpty() || compare)
            continue;
        auto* bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
        bars->setName(*name);
        bars->setBrush(colour);
        bars->setPen(QPen(colour.darker(140), 1.5));
        bars->setWidth(0.75);
        bars->setData(keys, values, true);
        marked = true;
    }
    m_plot->legend->setVisible(compare || marked);
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    for (int i = 0; i < m_labels.size(); ++i)
        ticker->addTick(i, m_labels[i]);
    m_plot->xAxis->setTicker(ticker);
    const auto n = std::max(m_values.size(), m_comparison.size());
    m_plot->xAxis->setRange(-0.7, std::max<qsizetype>(1, n) - 0.3);
    double top = 0;
    for (const auto* vs : {&m_values, &m_comparison})
        for (double v : *vs)
            top = std::max(top, v);
    m_plot->yAxis->setRange(0, top > 0 ? top * (compare ? 1.25 : marked ? 1.9 : 1.1) : 1); // room for the legend
    m_count = static_cast<int>(m_values.size());
    m_plot->replot();
}

bool BarPlot::save(const QString& file, int width, int height) { return savePlotImage(m_plot, file, width, height); }

CsvTable BarPlot::csvTable() const
{
    CsvTable t;
    t.header << (m_plot->xAxis->label().isEmpty() ? QStringLiteral("label") : m_plot->xAxis->label())
             << (m_name.isEmpty()
                     ? (m_plot->yAxis->label().isEmpty() ? QStringLiteral("value") : m_plot->yAxis->label())
                     : m_name);
    if (!m_comparison.isEmpty())
        t.header << m_comparisonName;
    for (int i = 0; i < m_values.size(); ++i) {
        QStringList row{m_labels.value(i, QString::number(i)), csvNumber(m_values[i])};
        if (!m_comparison.isEmpty())
            row << (i < m_comparison.size() ? csvNumber(m_comparison[i]) : QString());
        t.rows << row;
    }
    return t;
}

bool BarPlot::saveCsv(const QString& file) const { return writeCsv(file, csvTable()); }

} // namespace ladimo::widgets
