#include "widgets/heatmapplot.h"

#include <QVBoxLayout>
#include <cmath>
#include <limits>
#include <qcustomplot.h>

namespace ladimo::widgets {

HeatmapPlot::HeatmapPlot(QWidget* parent) : QWidget(parent), m_plot(new QCustomPlot(this))
{
    auto* layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_plot);
    setMinimumSize(220, 200);
    m_map = new QCPColorMap(m_plot->xAxis, m_plot->yAxis);
    m_map->setInterpolate(false);
    m_map->setTightBoundary(false); // the data range below names cell centres
    m_scale = new QCPColorScale(m_plot);
    m_plot->plotLayout()->addElement(0, 1, m_scale);
    m_scale->setType(QCPAxis::atRight);
    m_scale->setBarWidth(10);
    m_map->setColorScale(m_scale);
    QCPColorGradient gradient(QCPColorGradient::gpThermal);
    gradient.setNanHandling(QCPColorGradient::nhTransparent);
    m_map->setGradient(gradient);
    // The scale's height follows the plot's axis rect.
    auto* margins = new QCPMarginGroup(m_plot);
    m_plot->axisRect()->setMarginGroup(QCP::msBottom | QCP::msTop, margins);
    m_scale->setMarginGroup(QCP::msBottom | QCP::msTop, margins);
    m_selection = new QCPItemRect(m_plot);
    m_selection->setPen(QPen(QColor(40, 200, 255), 2.5));
    m_selection->setBrush(Qt::NoBrush);
    m_selection->setVisible(false);
    m_selection->setSelectable(false);
    connect(m_plot, &QCustomPlot::mousePress, this, &HeatmapPlot::onMousePress);
    installExportActions(
        this, [this](const QString& f) { return save(f); }, [this] { return csvTable(); });
}

void HeatmapPlot::setAxisLabels(const QString& x, const QString& y, const QString& scale)
{
    m_plot->xAxis->setLabel(x);
    m_plot->yAxis->setLabel(y);
    m_scale->axis()->setLabel(scale);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

void HeatmapPlot::setData(const QStringList& rowLabels, double xLower, double xUpper,
                          const QVector<QVector<double>>& values)
{
    m_rowLabels = rowLabels;
    m_values = values;
    m_columns = values.isEmpty() ? 0 : static_cast<int>(values.front().size());
    m_xLower = xLower;
    m_xUpper = xUpper > xLower ? xUpper : xLower + 1;
    const int rows = static_cast<int>(values.size());
    if (rows == 0 || m_columns == 0) {
        clear();
        return;
    }
    const double w = (m_xUpper - m_xLower) / m_columns;
    // Cell centres: bins on x, one row per integer on y.
    m_map->data()->setSize(m_columns, rows);
    m_map->data()->setRange(QCPRange(m_xLower + w / 2, m_xUpper - w / 2), QCPRange(0, std::max(rows - 1, 0)));
    double hi = 0;
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < m_columns; ++c) {
            const double v = c < values[r].size() ? values[r][c] : std::numeric_limits<double>::quiet_NaN();
            m_map->data()->setCell(c, r, v);
            if (std::isfinite(v))
                hi = std::max(hi, v);
        }
    m_map->setDataRange(QCPRange(0, hi > 0 ? hi : 1));
    QSharedPointer<QCPAxisTickerText> ticker(new QCPAxisTickerText);
    const int step = std::max(1, (rows + 11) / 12); // at most about 12 labels
    for (int r = 0; r < rows; r += step)
        ticker->addTick(r, rowLabels.value(r));
    m_plot->yAxis->setTicker(ticker);
    m_plot->xAxis->setRange(m_xLower, m_xUpper);
    m_plot->yAxis->setRange(-0.5, rows - 0.5);
    if (m_selected >= rows)
        m_selected = -1;
    setSelectedRow(m_selected);
}

void HeatmapPlot::clear()
{
    m_rowLabels.clear();
    m_values.clear();
    m_columns = 0;
    m_selected = -1;
    m_map->data()->clear();
    m_selection->setVisible(false);
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

double HeatmapPlot::value(int row, int column) const
{
    if (row < 0 || row >= m_values.size() || column < 0 || column >= m_values[row].size())
        return std::numeric_limits<double>::quiet_NaN();
    return m_values[row][column];
}

void HeatmapPlot::setSelectedRow(int row)
{
    m_selected = row >= 0 && row < rowCount() ? row : -1;
    m_selection->setVisible(m_selected >= 0);
    if (m_selected >= 0) {
        m_selection->topLeft->setCoords(m_xLower, m_selected + 0.5);
        m_selection->bottomRight->setCoords(m_xUpper, m_selected - 0.5);
    }
    m_plot->replot(QCustomPlot::rpQueuedReplot);
}

QPoint HeatmapPlot::pixelForCell(int row, int column) const
{
    const double w = m_columns > 0 ? (m_xUpper - m_xLower) / m_columns : 1;
    const QPointF p(m_plot->xAxis->coordToPixel(m_xLower + (column + 0.5) * w), m_plot->yAxis->coordToPixel(row));
    return m_plot->mapTo(this, p.toPoint());
}

void HeatmapPlot::replotNow() { m_plot->replot(QCustomPlot::rpImmediateRefresh); }

void HeatmapPlot::onMousePress(QMouseEvent* event)
{
    if (event->button() != Qt::LeftButton || rowCount() == 0)
        return;
    if (!m_plot->axisRect()->rect().contains(event->position().toPoint()))
        return;
    const int row = static_cast<int>(std::lround(m_plot->yAxis->pixelToCoord(event->position().y())));
    if (row < 0 || row >= rowCount())
        return;
    setSelectedRow(row);
    Q_EMIT rowClicked(row);
}

bool HeatmapPlot::save(const QString& file, int width, int height)
{
    return savePlotImage(m_plot, file, width, height);
}

CsvTable HeatmapPlot::csvTable() const
{
    CsvTable t;
    t.header << QStringLiteral("bin_lower") << QStringLiteral("bin_upper");
    for (int r = 0; r < rowCount(); ++r)
        t.header << m_rowLabels.value(r, QString::number(r));
    const double w = m_columns > 0 ? (m_xUpper - m_xLower) / m_columns : 1;
    for (int c = 0; c < m_columns; ++c) {
        QStringList row{csvNumber(m_xLower + c * w), csvNumber(m_xLower + (c + 1) * w)};
        for (int r = 0; r < rowCount(); ++r)
            row << csvNumber(value(r, c));
        t.rows << row;
    }
    return t;
}

bool HeatmapPlot::saveCsv(const QString& file) const { return writeCsv(file, csvTable()); }

} // namespace ladimo::widgets
