#include "viewparts.h"

#include <QFileDialog>
#include <QHeaderView>
#include <QLabel>
#include <QProgressBar>
#include <QTableView>

#include "workbenchjob.h"

namespace ladimo::gui {

QTableView* makeRecordTable(QAbstractItemModel* model, const QString& toolTip)
{
    auto* table = new QTableView;
    table->setModel(model);
    table->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    table->horizontalHeader()->setStretchLastSection(true);
    table->verticalHeader()->hide();
    table->setSelectionBehavior(QAbstractItemView::SelectRows);
    table->setToolTip(toolTip);
    return table;
}

void followJobProgress(WorkbenchJob* job, QProgressBar* bar, QLabel* status)
{
    QObject::connect(
        job, &WorkbenchJob::progressed, bar, [bar, status](const QString& stage, double done, double total) {
            bar->setRange(0, 1000);
            bar->setValue(total > 0 ? static_cast<int>(1000 * done / total) : 0);
            status->setText(QObject::tr("%1: %2 of %3").arg(stage).arg(done, 0, 'f', 0).arg(total, 0, 'f', 0));
        });
}

QString chooseTokenFile(QWidget* parent, const QString& title, const QString& current)
{
    return QFileDialog::getOpenFileName(parent, title, current,
                                        QObject::tr("Token data (*.txt *.u16 *.u32 *.jsonl);;All files (*)"));
}

} // namespace ladimo::gui
