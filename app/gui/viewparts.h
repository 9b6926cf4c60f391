// Pieces the job views (Evaluate, Export, Policy's refinement) share: the table listing a
// project's stored records, the progress bar + status line that follow a WorkbenchJob, and the
// token-file chooser. GUI thread only.
#pragma once

#include <QString>

class QAbstractItemModel;
class QLabel;
class QProgressBar;
class QTableView;
class QWidget;

namespace ladimo::gui {

class WorkbenchJob;

// A read-only, row-selecting table over `model`, sized to its contents.
QTableView* makeRecordTable(QAbstractItemModel* model, const QString& toolTip);

// Shows the job's progress ("stage: done of total") in `bar` and `status` while it runs.
void followJobProgress(WorkbenchJob* job, QProgressBar* bar, QLabel* status);

// Asks for a token data file (.txt, .u16, .u32, .jsonl: what core::loadTokenFile reads), starting
// at `current`; empty when the person cancels.
QString chooseTokenFile(QWidget* parent, const QString& title, const QString& current);

} // namespace ladimo::gui
