#include "exportview.h"

#include "export/formats.h"

#include <QComboBox>
#include <QFileDialog>
#include <QGridLayout>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QPushButton>
#include <QSpinBox>

#include <nlohmann/json.hpp>

#include "exporttablemodel.h"
#include "viewparts.h"
#include "workbenchjob.h"

namespace ladimo::gui {

namespace {

JobViewText exportText()
{
    JobViewText t;
    t.title = ExportView::tr("Export");
    t.start = ExportView::tr("&Export");
    t.startTip = ExportView::tr("Write the export (ladimo export) and record it in the project");
    t.cancelTip = ExportView::tr("Stop writing; nothing is left half-written and nothing is recorded");
    t.startName = "startExport";
    t.cancelName = "cancelExport";
    t.progressName = "exportProgress";
    t.resultName = "exportReport";
    t.noResult = ExportView::tr("No export yet.");
    t.recordsTip = ExportView::tr("The project's recorded exports, newest first (from here and from ladimo export)");
    t.failed = ExportView::tr("Export failed: %1");
    t.cancelled = ExportView::tr("Export cancelled; nothing was recorded.");
    t.done = ExportView::tr("Exported and recorded in the project.");
    return t;
}

} // namespace

ExportView::ExportView(QWidget* parent) : JobView(exportText(), parent)
{
    auto* grid = form();
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
    m_model = new ExportTableModel(this);
    finishForm(8, m_model);
    connect(job(), &WorkbenchJob::exported, this, &ExportView::onExported);
    connect(startButton(), &QPushButton::clicked, this, [this] { startExport(); });
    connect(m_format, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] { setRunning(isRunning()); });
    clear(tr("Open a project with a finished conversion run."));
}

void ExportView::setProject(const QString& projectFile, int experts, const std::vector<core::Policy>& policies,
                            const std::vector<core::ExportRecord>& exports)
{
    setProjectFile(projectFile);
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
    showStatus(tr("%1 recorded exports.").arg(exports.size()));
    if (!m_model->exports().empty() && !isRunning() && resultText() == tr("No export yet.")) {
        const auto& e = m_model->exports().front();
        showResult(tr("Newest export: <b>%1</b> (%2), SHA-256 %3")
                       .arg(QString::fromStdString(e.path).toHtmlEscaped(), QString::fromStdString(e.format),
                            QString::fromStdString(e.sha256)));
    }
    setRunning(isRunning());
}

void ExportView::clear(const QString& message)
{
    setProjectFile({});
    m_model->setExports({}, {});
    showStatus(message);
    setRunning(isRunning());
}

QList<QWidget*> ExportView::formWidgets() const { return {m_format, m_dtype, m_out, m_browse}; }

void ExportView::refineEnabled(bool editable)
{
    const auto* format = core::findExportFormat(m_format->currentText().toStdString());
    const bool moe = format && format->moe;
    m_policy->setEnabled(editable && moe);
    m_topK->setEnabled(editable && moe);
}

bool ExportView::startExport()
{
    if (project().isEmpty() || isRunning())
        return false;
    if (m_out->text().trimmed().isEmpty()) {
        showStatus(tr("To: choose a destination folder, or a file for a single-file format."));
        return false;
    }
    ExportRequest r;
    r.projectFile = project();
    r.format = m_format->currentText();
    r.dtype = m_dtype->currentText();
    r.out = m_out->text().trimmed();
    r.policyName = m_policy->currentIndex() > 0 ? m_policy->currentText() : QString();
    r.topK = m_topK->value();
    if (!job()->startExport(r))
        return false;
    jobStarted(tr("Exporting to %1 ...").arg(r.out));
    return true;
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
    showResult(text);
}

void ExportView::jobFinished(bool cancelled, const QString& error) { Q_EMIT exportFinished(cancelled, error); }

} // namespace ladimo::gui
