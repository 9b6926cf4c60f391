#include "pipelineview.h"

#include <QDoubleSpinBox>
#include <QFileDialog>
#include <QFontDatabase>
#include <QGridLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPlainTextEdit>
#include <QProgressBar>
#include <QPushButton>

namespace ladimo::gui {

PipelineView::PipelineView(QWidget* parent) : QGroupBox(tr("Whole pipeline"), parent)
{
    setObjectName("pipelineView");
    setToolTip(tr("Convert, profile, search and refine a policy for the budget, evaluate it against dense on "
                  "held-out samples and export it, in one go (as `ladimo run`), with the settings of the "
                  "Calibration and Convert views. A rerun takes every finished step from the project."));
    auto* grid = new QGridLayout(this);
    m_budget = new QDoubleSpinBox;
    m_budget->setObjectName("pipelineBudget");
    m_budget->setRange(0.05, 1.0);
    m_budget->setSingleStep(0.05);
    m_budget->setDecimals(2);
    m_budget->setValue(0.75);
    m_budget->setToolTip(tr("Activated FFN parameters (router included) as a fraction of the dense FFN's"));
    m_out = new QLineEdit;
    m_out->setObjectName("pipelineOut");
    m_out->setPlaceholderText(tr("output folder: the export, report.json and the project"));
    m_browse = new QPushButton(tr("Browse..."));
    connect(m_browse, &QPushButton::clicked, this, [this] {
        const QString dir = QFileDialog::getExistingDirectory(this, tr("Output folder"), m_out->text());
        if (!dir.isEmpty())
            m_out->setText(dir);
    });
    m_run = new QPushButton(tr("&Run all steps"));
    m_run->setObjectName("runPipeline");
    m_run->setToolTip(toolTip());
    m_cancel = new QPushButton(tr("Cancel"));
    m_cancel->setObjectName("cancelPipeline");
    m_cancel->setEnabled(false);
    connect(m_run, &QPushButton::clicked, this, &PipelineView::runRequested);
    connect(m_cancel, &QPushButton::clicked, this, &PipelineView::cancelRequested);
    m_status = new QLabel(tr("Open a model, then run every step at once."));
    m_status->setObjectName("pipelineStatus");
    m_status->setWordWrap(true);
    m_progress = new QProgressBar;
    m_progress->setObjectName("pipelineProgress");
    m_progress->setRange(0, 1000);
    m_progress->setValue(0);
    m_report = new QPlainTextEdit;
    m_report->setObjectName("pipelineReport");
    m_report->setReadOnly(true);
    m_report->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
    m_report->setPlaceholderText(tr("The report appears here: each step, perplexity of dense and converted, "
                                    "activated parameters, the export."));
    m_report->setMaximumHeight(180);
    auto* budgetLabel = new QLabel(tr("&Budget:"));
    budgetLabel->setBuddy(m_budget);
    auto* outLabel = new QLabel(tr("&Output:"));
    outLabel->setBuddy(m_out);
    grid->addWidget(budgetLabel, 0, 0);
    grid->addWidget(m_budget, 0, 1);
    grid->addWidget(outLabel, 0, 2);
    grid->addWidget(m_out, 0, 3);
    grid->addWidget(m_browse, 0, 4);
    grid->addWidget(m_run, 0, 5);
    grid->addWidget(m_cancel, 0, 6);
    grid->addWidget(m_status, 1, 0, 1, 5);
    grid->addWidget(m_progress, 1, 5, 1, 2);
    grid->addWidget(m_report, 2, 0, 1, 7);
    grid->setColumnStretch(3, 1);
}

double PipelineView::budget() const { return m_budget->value(); }
QString PipelineView::outDir() const { return m_out->text().trimmed(); }
void PipelineView::setOutDir(const QString& dir) { m_out->setText(dir); }
QString PipelineView::reportText() const { return m_report->toPlainText(); }
QString PipelineView::statusText() const { return m_status->text(); }

void PipelineView::setState(bool modelOpen, bool jobRunning, bool pipelineRunning)
{
    m_run->setEnabled(modelOpen && !jobRunning);
    m_cancel->setEnabled(pipelineRunning);
    for (QWidget* w : std::initializer_list<QWidget*>{m_budget, m_out, m_browse})
        w->setEnabled(!pipelineRunning);
}

void PipelineView::showStep(const QString& step, const QString& line)
{
    m_status->setText(tr("%1: %2").arg(step, line));
    if (line == QLatin1String("started"))
        m_progress->setValue(0);
}

void PipelineView::showProgress(const QString& stage, double done, double total)
{
    m_progress->setValue(total > 0 ? static_cast<int>(1000.0 * done / total) : 0);
    m_progress->setFormat(stage + QStringLiteral(" %p%"));
}

void PipelineView::showReport(const QString& text) { m_report->setPlainText(text); }

void PipelineView::showOpened(const QString& storedReport, const QString& outDir)
{
    if (!storedReport.isEmpty() && storedReport == m_report->toPlainText())
        return; // the project of the run just shown, reopened: its status line stays
    m_report->setPlainText(storedReport);
    m_progress->setValue(0);
    m_progress->resetFormat();
    if (!storedReport.isEmpty() && m_out->text().trimmed().isEmpty())
        m_out->setText(outDir);
    m_status->setText(storedReport.isEmpty()
                          ? tr("Run all steps with the settings of the Calibration and Convert views.")
                          : tr("The last run's report (report.txt in %1). Run all steps again takes every "
                               "finished step from the project.")
                                .arg(outDir));
}

void PipelineView::showFinished(bool cancelled, const QString& error, double seconds)
{
    if (!error.isEmpty())
        m_status->setText(tr("The pipeline failed: %1").arg(error));
    else if (cancelled)
        m_status->setText(tr("Cancelled: finished steps are kept in the project; Run resumes."));
    else
        m_status->setText(
            tr("Done in %1 s: the report is below, the files in %2.").arg(seconds, 0, 'f', 1).arg(outDir()));
    if (!cancelled && error.isEmpty())
        m_progress->setValue(m_progress->maximum());
}

} // namespace ladimo::gui
