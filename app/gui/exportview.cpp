#include "exportview.h"

#include "export/formats.h"

#include <QComboBox>
#include <QFileDialog>
#include <QGridLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QTableView>
#include <QVBoxLayout>

#include <nlohmann/json.hpp>

#include "exporttablemodel.h"
#include "viewparts.h"
#include "workbenchjob.h"

namespace ladimo::gui {

ExportView::ExportView(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    auto* box = new QGroupBox(tr("Export"));
    auto* grid = new QGridLayout(box);
    m_format = new QComboBox;
    m_format->setObjectName("exportFormat");
    QString formats;
    for (const auto& f : core::exportFormats()) { // the registry (core/export/formats.h)
        m_format->addItem(QString::fromLatin1(f.name));
        m_format->setItemData(m_format->count() - 1, QString::fromUtf8(f.description), Qt::ToolTipRole);
        formats
            += QStringLiteral("%1%2: %3").arg(formats.isEmpty() ? "" : "\n", f.name, QString::fromUtf8(f.description));
    }
    m_format->setToolTip(formats);
    m_dtype = new QComboBox;
    m_dtype->setObjectName("exportDtype");
    m_dtype->addItems({"f32", "bf16", "f16"});
    m_dtype->setToolTip(tr("Weight type of the written tensors (GGUF: f32 or f16)"));
    m_policy = new QComboBox;
    m_policy->setObjectName("exportPolicy");
    m_policy->setToolTip(tr("Routing policy written with the conversion; formats with one k for every layer say "
                            "in the report whether they compute exactly what the workbench does"));
    m_topK = new QSpinBox;
    m_topK->setObjectName("exportTopK");
    m_topK->setRange(0, 256);
    m_topK->setSpecialValueText(tr("from policy"));
    m_topK->setToolTip(tr("The one k Mixtral / llama.cpp use in every layer (--top-k); needed when the policy is "
                          "not a uniform static top-k"));
    m_out = new QLineEdit;
    m_out->setObjectName("exportOut");
    m_out->setPlaceholderText(tr("folder (hf-*, must be absent or empty) or file (gguf*, must not exist)"));
    m_out->setToolTip(tr("Destination: an export never replaces existing files"));
    m_browse = new QPushButton(tr("Browse..."));
    m_browse->setToolTip(tr("Choose the destination"));
    connect(m_browse, &QPushButton::clicked, this, [this] {
        const auto& format = core::exportFormat(m_format->currentText().toStdString());
        const QString path = format.singleFile
            ? QFileDialog::getSaveFileName(this, tr("Export to file"), m_out->text(),
                                           QString::fromUtf8(format.fileFilter))
            : QFileDialog::getExistingDirectory(this, tr("Export to folder"), m_out->text());
        if (!path.isEmpty())
            m_out->setText(path);
    });
    auto label = [](const QString& text, QWidget* buddy) {
        auto* l = new QLabel(text);
        l->setBuddy(buddy);
        return l;
    };
    grid->addWidget(label(tr("&Format:"), m_format), 0, 0);
    grid->addWidget(m_format, 0, 1);
    grid->addWidget(label(tr("&Dtype:"), m_dtype), 0, 2);
    grid->addWidget(m_dtype, 0, 3);
    grid->addWidget(label(tr("P&olicy:"), m_policy), 0, 4);
    grid->addWidget(m_policy, 0, 5);
    grid->addWidget(label(tr("&k:"), m_topK), 0, 6);
    grid->addWidget(m_topK, 0, 7);
    grid->addWidget(label(tr("&To:"), m_out), 1, 0);
    grid->addWidget(m_out, 1, 1, 1, 6);
    grid->addWidget(m_browse, 1, 7);
    m_start = new QPushButton(tr("&Export"));
    m_start->setObjectName("startExport");
    m_start->setToolTip(tr("Write the export (ladimo export) and record it in the project"));
    m_cancel = new QPushButton(tr("&Cancel"));
    m_cancel->setObjectName("cancelExport");
    m_cancel->setToolTip(tr("Stop writing; nothing is left half-written and nothing is recorded"));
    m_progress = new QProgressBar;
    m_progress->setObjectName("exportProgress");
    m_progress->setValue(0);
    m_status = new QLabel;
    auto* actions = new QHBoxLayout;
    actions->addWidget(m_start);
    actions->addWidget(m_cancel);
    actions->addWidget(m_progress, 1);
    grid->addLayout(actions, 2, 0, 1, 8);
    grid->addWidget(m_status, 3, 0, 1, 8);
    layout->addWidget(box);
    m_report = new QLabel(tr("No export yet."));
    m_report->setObjectName("exportReport");
    m_report->setWordWrap(true);
    m_report->setTextInteractionFlags(Qt::TextSelectableByMouse);
    layout->addWidget(m_report);
    m_model = new ExportTableModel(this);
    m_table = makeRecordTable(m_model,
                              tr("The project's recorded exports, newest first (from here and from ladimo export)"));
    layout->addWidget(m_table, 1);

    m_job = new WorkbenchJob(this);
    followJobProgress(m_job, m_progress, m_status);
    connect(m_job, &WorkbenchJob::exported, this, &ExportView::onExported);
    connect(m_job, &WorkbenchJob::jobFinished, this, &ExportView::onFinished);
    connect(m_start, &QPushButton::clicked, this, [this] { startExport(); });
    connect(m_cancel, &QPushButton::clicked, this, &ExportView::cancel);
    connect(m_format, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] { setRunning(isRunning()); });
    clear(tr("Open a project with a finished conversion run."));
}

ExportView::~ExportView()
{
    m_job->disconnect(this);
    delete m_job;
}

void ExportView::setProject(const QString& projectFile, int experts, const std::vector<core::Policy>& policies,
                            const std::vector<core::ExportRecord>& exports)
{
    m_project = projectFile;
    const QString keep = m_policy->currentText();
    m_policy->clear();
    m_policy->addItem(tr("training k"));
    std::vector<std::pair<int64_t, QString>> names;
    for (const auto& p : policies) {
        m_policy->addItem(QString::fromStdString(p.name));
        names.emplace_back(p.id, QString::fromStdString(p.name));
    }
    m_policy->setCurrentIndex(std::max(0, m_policy->findText(keep)));
    m_topK->setRange(0, std::max(1, experts));
    m_model->setExports(exports, std::move(names));
    m_status->setText(tr("%1 recorded exports.").arg(exports.size()));
    if (!m_model->exports().empty() && !m_job->isRunning() && m_report->text() == tr("No export yet.")) {
        const auto& e = m_model->exports().front();
        m_report->setText(tr("Newest export: <b>%1</b> (%2), SHA-256 %3")
                              .arg(QString::fromStdString(e.path).toHtmlEscaped(), QString::fromStdString(e.format),
                                   QString::fromStdString(e.sha256)));
    }
    setRunning(m_job->isRunning());
}

void ExportView::clear(const QString& message)
{
    m_project.clear();
    m_model->setExports({}, {});
    m_status->setText(message);
    setRunning(m_job->isRunning());
}

bool ExportView::isRunning() const { return m_job->isRunning(); }

QString ExportView::reportText() const { return m_report->text(); }

void ExportView::setRunning(bool running)
{
    if (running != m_running) {
        m_running = running;
        Q_EMIT runningChanged(running);
    }
    const bool ready = !m_project.isEmpty();
    const auto* format = core::findExportFormat(m_format->currentText().toStdString());
    const bool moe = format && format->moe;
    m_start->setEnabled(!running && ready);
    m_cancel->setEnabled(running);
    for (QWidget* w : std::initializer_list<QWidget*>{m_format, m_dtype, m_out, m_browse})
        w->setEnabled(!running && ready);
    m_policy->setEnabled(!running && ready && moe);
    m_topK->setEnabled(!running && ready && moe);
}

bool ExportView::startExport()
{
    if (m_project.isEmpty() || m_job->isRunning())
        return false;
    if (m_out->text().trimmed().isEmpty()) {
        m_status->setText(tr("To: choose a destination folder (hf-*) or file (gguf*)."));
        return false;
    }
    ExportRequest r;
    r.projectFile = m_project;
    r.format = m_format->currentText();
    r.dtype = m_dtype->currentText();
    r.out = m_out->text().trimmed();
    r.policyName = m_policy->currentIndex() > 0 ? m_policy->currentText() : QString();
    r.topK = m_topK->value();
    if (!m_job->startExport(r))
        return false;
    m_progress->setValue(0);
    m_status->setText(tr("Exporting to %1 ...").arg(r.out));
    setRunning(true);
    return true;
}

void ExportView::cancel()
{
    if (m_job->isRunning()) {
        m_job->cancel();
        m_status->setText(tr("Cancelling ..."));
    }
}

void ExportView::onExported(const QString& reportJson)
{
    const auto j = nlohmann::json::parse(reportJson.toStdString());
    QStringList files;
    for (const auto& f : j["files"])
        files << QString::fromStdString(f.get<std::string>());
    QString text = tr("Wrote <b>%1</b> (%2, %3): %4 files, %5 bytes; SHA-256 %6")
                       .arg(QString::fromStdString(j["out"].get<std::string>()).toHtmlEscaped(),
                            QString::fromStdString(j["format"].get<std::string>()),
                            QString::fromStdString(j["dtype"].get<std::string>()))
                       .arg(files.size())
                       .arg(QLocale().toString(static_cast<qlonglong>(j["bytes"].get<int64_t>())))
                       .arg(QString::fromStdString(j["sha256"].get<std::string>()));
    text += tr("<br>Files: %1").arg(files.join(", ").toHtmlEscaped());
    if (j.contains("experts_per_token")) {
        text += tr("<br>Policy %1, k = %2: ")
                    .arg(QString::fromStdString(j["policy"].get<std::string>()).toHtmlEscaped())
                    .arg(j["experts_per_token"].get<int>());
        if (j["exact"].get<bool>()) {
            text += tr("<b>exact</b>, the target computes what the workbench computes.");
        } else {
            text += tr("<b>not exact</b>; what changes:");
            for (const auto& n : j["notes"])
                text += "<br>&nbsp;&nbsp;- " + QString::fromStdString(n.get<std::string>()).toHtmlEscaped();
        }
    }
    if (j.contains("log"))
        for (const auto& line : j["log"])
            text += tr("<br>Note: %1").arg(QString::fromStdString(line.get<std::string>()).toHtmlEscaped());
    m_report->setText(text);
}

void ExportView::onFinished(bool cancelled, const QString& error)
{
    setRunning(false);
    if (!error.isEmpty())
        m_status->setText(tr("Export failed: %1").arg(error));
    else if (cancelled)
        m_status->setText(tr("Export cancelled; nothing was recorded."));
    else {
        m_progress->setValue(m_progress->maximum());
        m_status->setText(tr("Exported and recorded in the project."));
    }
    Q_EMIT exportFinished(cancelled, error);
}

} // namespace ladimo::gui
