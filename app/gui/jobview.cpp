#include "jobview.h"

#include <QGridLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QProgressBar>
#include <QPushButton>
#include <QTableView>
#include <QVBoxLayout>

#include "viewparts.h"
#include "workbenchjob.h"

namespace ladimo::gui {

JobView::JobView(const JobViewText& text, QWidget* parent) : QWidget(parent), m_text(text)
{
    auto* layout = new QVBoxLayout(this);
    auto* box = new QGroupBox(text.title);
    m_form = new QGridLayout(box);
    layout->addWidget(box);
    m_result = new QLabel(text.noResult);
    m_result->setObjectName(text.resultName);
    m_result->setWordWrap(true);
    m_result->setTextInteractionFlags(Qt::TextSelectableByMouse);
    layout->addWidget(m_result);
    m_start = new QPushButton(text.start);
    m_start->setObjectName(text.startName);
    m_start->setToolTip(text.startTip);
    m_cancel = new QPushButton(tr("&Cancel"));
    m_cancel->setObjectName(text.cancelName);
    m_cancel->setToolTip(text.cancelTip);
    m_progress = new QProgressBar;
    m_progress->setObjectName(text.progressName);
    m_progress->setValue(0);
    m_status = new QLabel;
    m_job = new WorkbenchJob(this);
    followJobProgress(m_job, m_progress, m_status);
    connect(m_job, &WorkbenchJob::jobFinished, this, &JobView::onFinished);
    connect(m_cancel, &QPushButton::clicked, this, &JobView::cancel);
}

JobView::~JobView()
{
    // The job first: it cancels and waits, and nothing it still sends may reach a half-destroyed view.
    m_job->disconnect(this);
    delete m_job;
}

void JobView::finishForm(int columns, QAbstractItemModel* records)
{
    m_table = makeRecordTable(records, m_text.recordsTip);
    static_cast<QVBoxLayout*>(layout())->addWidget(m_table, 1);
    auto* actions = new QHBoxLayout;
    actions->addWidget(m_start);
    actions->addWidget(m_cancel);
    actions->addWidget(m_progress, 1);
    const int row = m_form->rowCount();
    m_form->addLayout(actions, row, 0, 1, columns);
    m_form->addWidget(m_status, row + 1, 0, 1, columns);
}

QLabel* JobView::label(const QString& text, QWidget* buddy)
{
    auto* l = new QLabel(text);
    l->setBuddy(buddy);
    return l;
}

bool JobView::isRunning() const { return m_job->isRunning(); }

void JobView::cancel()
{
    if (m_job->isRunning()) {
        m_job->cancel();
        m_status->setText(tr("Cancelling ..."));
    }
}

QString JobView::resultText() const { return m_result->text(); }
void JobView::showStatus(const QString& text) { m_status->setText(text); }
void JobView::showResult(const QString& html) { m_result->setText(html); }

void JobView::setRunning(bool running)
{
    if (running != m_running) {
        m_running = running;
        Q_EMIT runningChanged(running);
    }
    const bool editable = !running && !m_project.isEmpty();
    m_start->setEnabled(editable);
    m_cancel->setEnabled(running);
    for (QWidget* w : formWidgets())
        w->setEnabled(editable);
    refineEnabled(editable);
}

void JobView::jobStarted(const QString& status)
{
    m_progress->setValue(0);
    m_status->setText(status);
    setRunning(true);
}

void JobView::onFinished(bool cancelled, const QString& error)
{
    setRunning(false);
    if (!error.isEmpty())
        m_status->setText(m_text.failed.arg(error));
    else if (cancelled)
        m_status->setText(m_text.cancelled);
    else {
        m_progress->setValue(m_progress->maximum());
        m_status->setText(m_text.done);
    }
    jobFinished(cancelled, error);
}

} // namespace ladimo::gui
