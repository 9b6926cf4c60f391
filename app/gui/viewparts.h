// Pieces the job views (Evaluate, Export) share: the table listing a project's stored records,
// and the progress bar + status line that follow a WorkbenchJob. GUI thread only.
#pragma once

#include <QString>

class QAbstractItemModel;
class QLabel;
class QProgressBar;
class QTableView;

namespace ladimo::gui {

class WorkbenchJob;

// A read-only, row-selecting table over `model`, sized to its contents.
QTableView* makeRecordTable(QAbstractItemModel* model, const QString& toolTip);

// Shows the job's progress ("stage: done of total") in `bar` and `status` while it runs.
void followJobProgress(WorkbenchJob* job, QProgressBar* bar, QLabel* status);

} // namespace ladimo::gui
