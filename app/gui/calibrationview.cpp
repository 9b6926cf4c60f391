#include "calibrationview.h"

#include <QComboBox>
#include <QFileDialog>
#include <QFileInfo>
#include <QFontDatabase>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QLineEdit>
#include <QLocale>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QSpinBox>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <limits>

namespace ladimo::gui {

namespace {
const char* kindName(int kind)
{
    return kind == CalibrationView::SelfSample ? "self_sample" : kind == CalibrationView::TextFile ? "text" : "tokens";
}
} // namespace

CalibrationView::CalibrationView(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    auto* box = new QGroupBox(tr("Calibration data (used by Convert and by Profile)"));
    auto* form = new QFormLayout(box);
    m_kind = new QComboBox;
    m_kind->setObjectName("dataKind");
    m_kind->addItems({tr("Self-sample from the dense model"), tr("Token file (.u16, .u32, .jsonl)"),
                      tr("Text file (tokenized with the model's tokenizer)")});
    m_kind->setToolTip(tr("Where the calibration tokens come from: sampled from the dense model itself (no data "
                          "needed), a file of token ids, or a text file the model's tokenizer turns into tokens"));
    form->addRow(tr("&Data:"), m_kind);

    m_file = new QLineEdit;
    m_file->setObjectName("dataFile");
    m_file->setPlaceholderText(tr(".txt, .u16, .u32 or .jsonl"));
    m_file->setToolTip(tr("Calibration file (--data): .txt is tokenized with the model's tokenizer; .u16 / .u32 hold "
                          "token ids; .jsonl holds {\"text\": ...} documents"));
    m_browse = new QPushButton(tr("&Browse..."));
    m_browse->setObjectName("dataBrowse");
    m_browse->setToolTip(tr("Choose the calibration file"));
    auto* fileRow = new QWidget;
    auto* fileLayout = new QHBoxLayout(fileRow);
    fileLayout->setContentsMargins(0, 0, 0, 0);
    fileLayout->addWidget(m_file, 1);
    fileLayout->addWidget(m_browse);
    form->addRow(tr("&File:"), fileRow);

    m_tokens = new QSpinBox;
    m_tokens->setObjectName("tokens");
    m_tokens->setRange(64, 100'000'000);
    m_tokens->setSingleStep(1024);
    m_tokens->setValue(16384);
    m_tokens->setGroupSeparatorShown(true);
    m_tokens->setToolTip(tr("Token budget (--self-sample N / --max-tokens N): tokens sampled, or the most read from "
                            "the file. The conversion captures the dense FFNs on these tokens"));
    form->addRow(tr("Token &budget:"), m_tokens);

    m_seed = new QSpinBox;
    m_seed->setObjectName("seed");
    m_seed->setRange(0, std::numeric_limits<int>::max());
    m_seed->setValue(1234);
    m_seed->setToolTip(tr("Seed (--seed) of self-sampling, and of the partition and distillation of the conversion; "
                          "the profile samples its held-out tokens with seed + 1"));
    form->addRow(tr("&Seed:"), m_seed);

    m_previewButton = new QPushButton(tr("Count and &preview"));
    m_previewButton->setObjectName("calibrationPreview");
    m_previewButton->setToolTip(tr("Read (or sample) the data in the background: count the tokens and show the first "
                                   "of them decoded"));
    m_count = new QLabel(tr("Tokens: not counted yet"));
    m_count->setObjectName("calibrationCount");
    m_count->setToolTip(tr("How many calibration tokens these settings give"));
    auto* previewRow = new QHBoxLayout;
    previewRow->addWidget(m_previewButton);
    previewRow->addWidget(m_count, 1);
    form->addRow(previewRow);
    layout->addWidget(box);

    auto* previewBox = new QGroupBox(tr("First tokens, decoded"));
    auto* previewLayout = new QVBoxLayout(previewBox);
    m_text = new QPlainTextEdit;
    m_text->setObjectName("calibrationText");
    m_text->setReadOnly(true);
    m_text->setFont(QFontDatabase::systemFont(QFontDatabase::FixedFont));
    m_text->setPlaceholderText(tr("Press Count and preview to see the beginning of the calibration data."));
    m_text->setToolTip(tr("The beginning of the calibration data as the model sees it (decoded token ids)"));
    previewLayout->addWidget(m_text);
    layout->addWidget(previewBox, 1);

    connect(m_kind, qOverload<int>(&QComboBox::currentIndexChanged), this, &CalibrationView::onEdited);
    connect(m_file, &QLineEdit::textChanged, this, &CalibrationView::onEdited);
    connect(m_tokens, qOverload<int>(&QSpinBox::valueChanged), this, &CalibrationView::onEdited);
    connect(m_seed, qOverload<int>(&QSpinBox::valueChanged), this, &CalibrationView::onEdited);
    connect(m_browse, &QPushButton::clicked, this, [this] {
        const bool text = m_kind->currentIndex() == TextFile;
        const QString f
            = QFileDialog::getOpenFileName(this, tr("Calibration data"), m_file->text(),
                                           text ? tr("Text (*.txt *.jsonl);;All files (*)")
                                                : tr("Token data (*.u16 *.u32 *.txt *.jsonl);;All files (*)"));
        if (f.isEmpty())
            return;
        if (m_kind->currentIndex() == SelfSample)
            m_kind->setCurrentIndex(f.endsWith(".txt") || f.endsWith(".jsonl") ? TextFile : TokenFile);
        m_file->setText(f);
    });
    connect(m_previewButton, &QPushButton::clicked, this, [this] { startPreview(); });
    connect(&m_preview, &QFutureWatcher<CalibrationPreview>::finished, this, &CalibrationView::onPreviewFinished);
    updateEnabled();
}

CalibrationView::~CalibrationView()
{
    m_preview.disconnect();
    m_preview.waitForFinished();
}

void CalibrationView::setModel(const QString& modelDir)
{
    if (modelDir == m_modelDir)
        return;
    m_modelDir = modelDir;
    m_counted = 0;
    m_count->setText(tr("Tokens: not counted yet"));
    m_text->clear();
    updateEnabled();
}

void CalibrationView::setSettingJson(const QString& json)
{
    const QJsonObject o = QJsonDocument::fromJson(json.toUtf8()).object();
    if (o.isEmpty())
        return;
    m_loading = true;
    const QString kind = o.value("kind").toString();
    m_kind->setCurrentIndex(kind == "self_sample" ? SelfSample : kind == "text" ? TextFile : TokenFile);
    m_file->setText(o.value("file").toString());
    const qint64 budget = o.value("budget").toInteger(kind == "self_sample" ? o.value("self_sample").toInteger()
                                                                            : o.value("max_tokens").toInteger());
    if (budget > 0)
        m_tokens->setValue(static_cast<int>(budget));
    m_seed->setValue(static_cast<int>(o.value("seed").toInteger(1234)));
    m_counted = o.value("tokens").toInteger();
    m_count->setText(m_counted > 0 ? tr("Tokens: %1").arg(QLocale().toString(m_counted))
                                   : tr("Tokens: not counted yet"));
    m_loading = false;
    updateEnabled();
}

QString CalibrationView::settingJson() const
{
    const int kind = m_kind->currentIndex();
    const bool self = kind == SelfSample;
    QJsonObject o;
    o["kind"] = QString::fromLatin1(kindName(kind));
    o["file"] = self ? QString() : m_file->text().trimmed();
    o["self_sample"] = self ? m_tokens->value() : 0;
    o["max_tokens"] = self ? 0 : m_tokens->value();
    o["budget"] = m_tokens->value();
    o["seed"] = m_seed->value();
    o["tokens"] = m_counted;
    return QString::fromUtf8(QJsonDocument(o).toJson(QJsonDocument::Compact));
}

DataChoice CalibrationView::dataChoice() const
{
    DataChoice d;
    d.seed = static_cast<uint64_t>(m_seed->value()); // also seeds partition and distillation, as --seed does
    if (m_kind->currentIndex() == SelfSample) {
        d.selfSample = m_tokens->value();
    } else {
        d.file = m_file->text().trimmed();
        d.maxTokens = m_tokens->value();
    }
    return d;
}

bool CalibrationView::needsFile() const
{
    return m_kind->currentIndex() != SelfSample && m_file->text().trimmed().isEmpty();
}

QString CalibrationView::summary() const
{
    const QString budget = QLocale().toString(m_tokens->value());
    if (m_kind->currentIndex() == SelfSample)
        return tr("self-sample %1 tokens, seed %2").arg(budget).arg(m_seed->value());
    const QString file = m_file->text().trimmed();
    return tr("%1 %2, at most %3 tokens%4")
        .arg(m_kind->currentIndex() == TextFile ? tr("text") : tr("tokens"),
             file.isEmpty() ? tr("(no file chosen)") : QFileInfo(file).fileName(), budget,
             m_counted > 0 ? tr(" (%1 counted)").arg(QLocale().toString(m_counted)) : QString());
}

void CalibrationView::setEditable(bool editable)
{
    m_editable = editable;
    updateEnabled();
}

bool CalibrationView::startPreview()
{
    if (m_preview.isRunning() || m_modelDir.isEmpty() || needsFile())
        return false;
    m_count->setText(tr("Tokens: counting ..."));
    m_previewButton->setEnabled(false);
    m_preview.setFuture(QtConcurrent::run(previewCalibration, m_modelDir, dataChoice(), 48));
    return true;
}

QString CalibrationView::previewText() const { return m_text->toPlainText(); }

void CalibrationView::onPreviewFinished()
{
    const CalibrationPreview p = m_preview.result();
    updateEnabled();
    if (!p.error.isEmpty()) {
        m_count->setText(tr("Tokens: could not read the data: %1").arg(p.error));
        m_text->clear();
        Q_EMIT previewFinished(p.error);
        return;
    }
    m_counted = p.tokens;
    m_count->setText(m_kind->currentIndex() == SelfSample
                         ? tr("Tokens: %1 (sampled when the job runs; preview from a short sample with this seed)")
                               .arg(QLocale().toString(p.tokens))
                         : tr("Tokens: %1").arg(QLocale().toString(p.tokens)));
    m_text->setPlainText(p.text);
    Q_EMIT settingsChanged(); // the count is part of the stored setting
    Q_EMIT previewFinished({});
}

void CalibrationView::onEdited()
{
    if (m_loading)
        return;
    m_counted = 0;
    m_count->setText(tr("Tokens: not counted yet"));
    updateEnabled();
    Q_EMIT settingsChanged();
}

void CalibrationView::updateEnabled()
{
    const bool file = m_kind->currentIndex() != SelfSample;
    m_kind->setEnabled(m_editable);
    m_file->setEnabled(m_editable && file);
    m_browse->setEnabled(m_editable && file);
    m_tokens->setEnabled(m_editable);
    m_seed->setEnabled(m_editable);
    m_previewButton->setEnabled(m_editable && !m_modelDir.isEmpty() && !needsFile() && !m_preview.isRunning());
}

} // namespace ladimo::gui
