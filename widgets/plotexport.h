// Export of the plot widgets: the picture as PNG, SVG or PDF (by extension) and the plotted data
// as CSV (a header row, then one row per point or bin). One place for every plot widget: each
// hands over its QCustomPlot and a function that tabulates its series, and gets the same context
// menu, keyboard shortcuts and file formats. GUI thread only.
#pragma once

#include <QStringList>
#include <QVector>

#include <functional>

class QCustomPlot;
class QWidget;

namespace ladimo::widgets {

// What a plot shows, as a table: `header` names the columns, each row has as many cells.
struct CsvTable {
    QStringList header;
    QVector<QStringList> rows;
};

// A number as CSV writes it: shortest round-trip form, "" for NaN.
QString csvNumber(double v);

// Named x/y series as one table: when every series has the same x values (histograms over the same
// bins) one row per x with a column per series; otherwise long form (series, x, y).
CsvTable seriesTable(const QString& xName, const QStringList& names, const QVector<QVector<double>>& xs,
                     const QVector<QVector<double>>& ys);

// Writes the table (RFC 4180 quoting) atomically; false when the file cannot be written.
bool writeCsv(const QString& file, const CsvTable& table);

// Writes the plot as .png, .svg or .pdf (by extension, PNG otherwise) at width x height pixels
// (0: the widget's size, 640 x 480 when it has none yet). False when it cannot.
bool savePlotImage(QCustomPlot* plot, const QString& file, int width = 0, int height = 0);

// Adds "Export image..." (Ctrl+Shift+E) and "Export data as CSV..." (Ctrl+Shift+C) to `owner`:
// its context menu (right click, the Menu key or Shift+F10 when it has focus) and shortcuts while
// it has focus. The actions ask for a file and call `saveImage` / write `table()`.
void installExportActions(QWidget* owner, std::function<bool(const QString&)> saveImage,
                          std::function<CsvTable()> table);

} // namespace ladimo::widgets
