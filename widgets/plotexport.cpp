#include "widgets/plotexport.h"

#include <QAction>
#include <QFileDialog>
#include <QDir>
#include <QFileInfo>
#include <QMessageBox>
#include <QSaveFile>
#include <QSettings>
#include <QSvgGenerator>
#include <QTextStream>
#include <QWidget>
#include <cmath>
#include <qcustomplot.h>

namespace ladimo::widgets {

QString csvNumber(double v)
{
    if (std::isnan(v))
        return {};
    for (int precision = 6; precision < 17; ++precision) {
        const QString s = QString::number(v, 'g', precision);
        if (s.toDouble() == v)
            return s;
    }
    return QString::number(v, 'g', 17);
}

CsvTable seriesTable(const QString& xName, const QStringList& names, const QVector<QVector<double>>& xs,
                     const QVector<QVector<double>>& ys)
{
    CsvTable t;
    bool shared = !xs.isEmpty();
    for (const auto& x : xs)
        shared = shared && x == xs.front();
    if (shared) {
        t.header << xName << names;
        for (int i = 0; i < xs.front().size(); ++i) {
            QStringList row{csvNumber(xs.front()[i])};
            for (const auto& y : ys)
                row << (i < y.size() ? csvNumber(y[i]) : QString());
            t.rows << row;
        }
        return t;
    }
    t.header << QStringLiteral("series") << xName << QStringLiteral("y");
    for (int s = 0; s < xs.size() && s < ys.size(); ++s)
        for (int i = 0; i < xs[s].size() && i < ys[s].size(); ++i)
            t.rows << QStringList{names.value(s), csvNumber(xs[s][i]), csvNumber(ys[s][i])};
    return t;
}

namespace {

QString quoted(const QString& cell)
{
    if (!cell.contains(QLatin1Char(',')) && !cell.contains(QLatin1Char('"')) && !cell.contains(QLatin1Char('\n')))
        return cell;
    QString q = cell;
    q.replace(QLatin1String("\""), QLatin1String("\"\""));
    return QLatin1Char('"') + q + QLatin1Char('"');
}

QString line(const QStringList& cells)
{
    QStringList q;
    for (const auto& c : cells)
        q << quoted(c);
    return q.join(QLatin1Char(',')) + QLatin1Char('\n');
}

} // namespace

bool writeCsv(const QString& file, const CsvTable& table)
{
    QSaveFile out(file);
    if (!out.open(QIODevice::WriteOnly | QIODevice::Text))
        return false;
    QTextStream s(&out);
    s << line(table.header);
    for (const auto& row : table.rows)
        s << line(row);
    s.flush();
    return out.commit();
}

bool savePlotImage(QCustomPlot* plot, const QString& file, int width, int height)
{
    if (width <= 0 || height <= 0) {
        width = plot->width() > 10 ? plot->width() : 640;
        height = plot->height() > 10 ? plot->height() : 480;
    }
    if (file.endsWith(QLatin1String(".pdf"), Qt::CaseInsensitive))
        return plot->savePdf(file, width, height);
    QSaveFile out(file);
    if (!out.open(QIODevice::WriteOnly))
        return false;
    if (file.endsWith(QLatin1String(".svg"), Qt::CaseInsensitive)) {
        QSvgGenerator svg;
        svg.setOutputDevice(&out);
        svg.setSize(QSize(width, height));
        svg.setViewBox(QRect(0, 0, width, height));
        svg.setTitle(QFileInfo(file).completeBaseName());
        svg.setDescription(QStringLiteral("LaDiMo Workbench plot"));
        QCPPainter painter;
        if (!painter.begin(&svg))
            return false;
        plot->toPainter(&painter, width, height);
        painter.end();
    } else {
        const QPixmap pixmap = plot->toPixmap(width, height, 1.0);
        if (pixmap.isNull() || !pixmap.save(&out, "PNG"))
            return false;
    }
    return out.commit();
}

void installExportActions(QWidget* owner, std::function<bool(const QString&)> saveImage,
                          std::function<CsvTable()> table)
{
    owner->setContextMenuPolicy(Qt::ActionsContextMenu);
    if (owner->focusPolicy() == Qt::NoFocus)
        owner->setFocusPolicy(Qt::StrongFocus); // reachable with Tab, so the shortcuts and the Menu key work
    auto ask = [owner](const QString& title, const QString& filters, const QString& suffix, QString* selected) {
        QSettings settings;
        const QString dir = settings.value(QStringLiteral("export/dir"), QDir::homePath()).toString();
        const QString base = owner->objectName().isEmpty() ? QStringLiteral("plot") : owner->objectName();
        QString file = QFileDialog::getSaveFileName(owner, title, QDir(dir).filePath(base + suffix), filters, selected);
        if (file.isEmpty())
            return file;
        if (QFileInfo(file).suffix().isEmpty() && selected) {
            const int star = selected->indexOf(QLatin1String("*."));
            if (star >= 0)
                file += selected->mid(star + 1, selected->indexOf(QLatin1Char(')'), star) - star - 1);
        }
        settings.setValue(QStringLiteral("export/dir"), QFileInfo(file).absolutePath());
        return file;
    };
    auto* image = new QAction(QObject::tr("Export &image (PNG, SVG, PDF)..."), owner);
    image->setObjectName(QStringLiteral("exportImage"));
    image->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_E));
    image->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    image->setToolTip(QObject::tr("Save this plot as a PNG, SVG or PDF file"));
    QObject::connect(image, &QAction::triggered, owner, [owner, ask, saveImage] {
        QString filter = QObject::tr("PNG image (*.png)");
        const QString file = ask(QObject::tr("Export plot image"),
                                 QObject::tr("PNG image (*.png);;SVG image (*.svg);;PDF document (*.pdf)"),
                                 QStringLiteral(".png"), &filter);
        if (!file.isEmpty() && !saveImage(file))
            QMessageBox::warning(owner, QObject::tr("Export failed"), QObject::tr("Could not write %1.").arg(file));
    });
    auto* csv = new QAction(QObject::tr("Export &data as CSV..."), owner);
    csv->setObjectName(QStringLiteral("exportCsv"));
    csv->setShortcut(QKeySequence(Qt::CTRL | Qt::SHIFT | Qt::Key_C));
    csv->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    csv->setToolTip(QObject::tr("Save the plotted series as a CSV table with a header row"));
    QObject::connect(csv, &QAction::triggered, owner, [owner, ask, table] {
        QString filter = QObject::tr("CSV table (*.csv)");
        const QString file
            = ask(QObject::tr("Export plot data"), QObject::tr("CSV table (*.csv)"), QStringLiteral(".csv"), &filter);
        if (!file.isEmpty() && !writeCsv(file, table()))
            QMessageBox::warning(owner, QObject::tr("Export failed"), QObject::tr("Could not write %1.").arg(file));
    });
    owner->addAction(image);
    owner->addAction(csv);
}

} // namespace ladimo::widgets
