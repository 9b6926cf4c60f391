#include "evaluateview.h"

#include <QCheckBox>
#include <QComboBox>
#include <QGridLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QTableView>
#include <QVBoxLayout>

#include <nlohmann/json.hpp>

#include "evaluationtablemodel.h"
#include "viewparts.h"
#include "workbenchjob.h"

namespace ladimo::gui {

EvaluateView::EvaluateView(QWidget* parent) : QWidget(parent)
{
    auto* layout = new QVBoxLayout(this);
    auto* box = new QGroupBox(tr("Evaluate the latest conversion"));
    auto* grid = new QGridLayout(box);
    m_policy = new QComboBox;
    m_policy->setObjectName("evalPolicy");
    m_policy->setToolTip(tr("What to measure: the dense model, every layer at the same top-k, or a stored policy"));
    m_topK = new QSpinBox;
    m_topK->setObjectName("evalTopK");
    m_topK->setRange(1, 256);
    m_topK->setToolTip(tr("Experts per token in every layer (uniform top-k)"));
    m_dataKind = new QComboBox;
    m_dataKind->setObjectName("evalDataKind");
    m_dataKind->addItems({tr("Self-sample"), tr("File")});
    m_dataKind->setToolTip(tr("Evaluation data: tokens sampled from the dense model (seed 99, not the calibration "
                              "tokens), or a token file"));
    m_dataFile = new QLineEdit;
    m_dataFile->setObjectName("evalDataFile");
    m_dataFile->setPlaceholderText(tr(".txt, .u16, .u32 or .jsonl"));
    m_dataFile->setToolTip(tr("Evaluation token file (--data)"));
    auto* browse = new QPushButton(tr("Browse..."));
    browse->setToolTip(tr("Choose the evaluation token file"));
    connect(browse, &QPushButton::clicked, this, [this] {
        const QString f = chooseTokenFile(this, tr("Evaluation data"), m_dataFile->text());
        if (!f.isEmpty()) {
            m_dataFile->setText(f);
            m_dataKind->setCurrentIndex(1);
        }
    });
    m_tokens = new QSpinBox;
    m_tokens->setObjectName("evalTokens");
    m_tokens->setRange(64, 100'000'000);
    m_tokens->setValue(4096);
    m_tokens->setSingleStep(1024);
    m_tokens->setToolTip(tr("Token budget (--max-tokens / --self-sample N)"));
    m_timing = new QCheckBox(tr("Measure &latency"));
    m_timing->setObjectName("evalTiming");
    m_timing->setChecked(true);
    m_timing->setToolTip(tr("Also time prefill and decode against the dense model on this device"));
    auto label = [](const QString& text, QWidget* buddy) {
        auto* l = new QLabel(text);
        l->setBuddy(buddy);
        return l;
    };
    grid->addWidget(label(tr("P&olicy:"), m_policy), 0, 0);
    grid->addWidget(m_policy, 0, 1);
    grid->addWidget(label(tr("&k:"), m_topK), 0, 2);
    grid->addWidget(m_topK, 0, 3);
    grid->addWidget(label(tr("Token &budget:"), m_tokens), 0, 4);
    grid->addWidget(m_tokens, 0, 5);
    grid->addWidget(m_timing, 0, 6);
    grid->addWidget(label(tr("&Data:"), m_dataKind), 1, 0);
    grid->addWidget(m_dataKind, 1, 1);
    grid->addWidget(m_dataFile, 1, 2, 1, 4);
    grid->addWidget(browse, 1, 6);
    m_start = new QPushButton(tr("&Evaluate"));
    m_start->setObjectName("startEvaluation");
    m_start->setToolTip(
        tr("Measure perplexity, KL to dense and activated FFN fraction (ladimo eval); stored in the project"));
    m_cancel = new QPushButton(tr("&Cancel"));
    m_cancel->setObjectName("cancelEvaluation");
    m_cancel->setToolTip(tr("Stop the measurement; nothing is stored"));
    m_progress = new QProgressBar;
    m_progress->setObjectName("evalProgress");
    m_progress->setValue(0);
    m_status = new QLabel;
    auto* actions = new QHBoxLayout;
    actions->addWidget(m_start);
    actions->addWidget(m_cancel);
    actions->addWidget(m_progress, 1);
    grid->addLayout(actions, 2, 0, 1, 7);
    grid->addWidget(m_status, 3, 0, 1, 7);
    layout->addWidget(box);
    m_result = new QLabel(tr("No measurement yet."));
    m_result->setObjectName("evalResult");
    m_result->setWordWrap(true);
    m_result->setTextInteractionFlags(Qt::TextSelectableByMouse);
    layout->addWidget(m_result);
    m_model = new EvaluationTableModel(this);
    m_table = makeRecordTable(m_model,
                              tr("The project's stored evaluations, newest first (from here and from ladimo eval)"));
    layout->addWidget(m_table, 1);

    m_job = new WorkbenchJob(this);
    followJobProgress(m_job, m_progress, m_status);
    connect(m_job, &WorkbenchJob::evaluated, this, &EvaluateView::onEvaluated);
    connect(m_job, &WorkbenchJob::jobFinished, this, &EvaluateView::onFinished);
    connect(m_start, &QPushButton::clicked, this, [this] { startEvaluation(); });
    connect(m_cancel, &QPushButton::clicked, this, &EvaluateView::cancel);
    connect(m_policy, qOverload<int>(&QComboBox::currentIndexChanged), this,
            [this](int i) { m_topK->setEnabled(i == 1 && !isRunning()); });
    clear(tr("Open a project with a finished conversion run."));
}

EvaluateView::~EvaluateView()
{
    m_job->disconnect(this);
    delete m_job;
}

void EvaluateView::setProject(const QString& projectFile, int experts, int trainTopK,
                              const std::vector<core::Policy>& policies,
                              const std::vector<core::Evaluation>& evaluations)
{
    m_project = projectFile;
    const QString keep = m_policy->currentText();
    m_policy->clear();
    m_policy->addItems({tr("Dense"), tr("Uniform top-k")});
    std::vector<std::pair<int64_t, QString>> names;
    for (const auto& p : policies) {
        m_policy->addItem(QString::fromStdString(p.name));
        names.emplace_back(p.id, QString::fromStdString(p.name));
    }
    const int i = m_policy->findText(keep);
    m_policy->setCurrentIndex(i >= 0 ? i : 1);
    m_topK->setRange(1, std::max(1, experts));
    if (keep.isEmpty())
        m_topK->setValue(trainTopK);
    m_model->setEvaluations(evaluations, std::move(names));
    if (!m_model->evaluations().empty() && !m_job->isRunning()) {
        // The newest measurement, as it was reported.
        const auto& newest = m_model->evaluations().front();
        auto metrics = newest.metrics;
        if (!metrics.contains("policy_label"))
            metrics["policy_label"]
                = m_model->index(0, EvaluationTableModel::PolicyColumn).data().toString().toStdString();
        onEvaluated(QString::fromStdString(metrics.dump()));
    }
    m_status->setText(tr("%1 stored evaluations.").arg(evaluations.size()));
    setRunning(m_job->isRunning());
}

void EvaluateView::clear(const QString& message)
{
    m_project.clear();
    m_model->setEvaluations({}, {});
    m_status->setText(message);
    setRunning(m_job->isRunning());
}

bool EvaluateView::isRunning() const { return m_job->isRunning(); }

QString EvaluateView::resultText() const { return m_result->text(); }

void EvaluateView::setRunning(bool running)
{
    if (running != m_running) {
        m_running = running;
        Q_EMIT runningChanged(running);
    }
    const bool ready = !m_project.isEmpty();
    m_start->setEnabled(!running && ready);
    m_cancel->setEnabled(running);
    for (QWidget* w : std::initializer_list<QWidget*>{m_policy, m_dataKind, m_dataFile, m_tokens, m_timing})
        w->setEnabled(!running && ready);
    m_topK->setEnabled(!running && ready && m_policy->currentIndex() == 1);
}

bool EvaluateView::startEvaluation()
{
    if (m_project.isEmpty() || m_job->isRunning())
        return false;
    EvaluateRequest r;
    r.projectFile = m_project;
    const int i = m_policy->currentIndex();
    r.policy = i == 0 ? EvaluateRequest::Policy::Dense
        : i == 1      ? EvaluateRequest::Policy::UniformTopK
                      : EvaluateRequest::Policy::Stored;
    r.topK = m_topK->value();
    r.policyName = m_policy->currentText();
    if (m_dataKind->currentIndex() == 0) {
        r.data.selfSample = m_tokens->value();
        r.data.seed = 99; // held out: not the calibration tokens (seed 1234 by default)
    } else {
        r.data.file = m_dataFile->text().trimmed();
        r.data.maxTokens = m_tokens->value();
    }
    r.timing = m_timing->isChecked();
    if (!m_job->startEvaluation(r))
        return false;
    m_progress->setValue(0);
    m_status->setText(tr("Evaluating %1 ...").arg(m_policy->currentText()));
    setRunning(true);
    return true;
}

void EvaluateView::cancel()
{
    if (m_job->isRunning()) {
        m_job->cancel();
        m_status->setText(tr("Cancelling ..."));
    }
}

void EvaluateView::onEvaluated(const QString& metricsJson)
{
    const auto j = nlohmann::json::parse(metricsJson.toStdString());
    QString text = tr("<b>%1</b>: perplexity <b>%2</b>")
                       .arg(QString::fromStdString(j.value("policy_label", std::string("?"))).toHtmlEscaped())
                       .arg(j.value("perplexity", 0.0), 0, 'f', 4);
    if (j.contains("kl_to_dense"))
        text += tr(", KL to dense %1").arg(j["kl_to_dense"].get<double>(), 0, 'g', 4);
    text += tr(", activated FFN %1%").arg(100 * j.value("activated_ffn_fraction", 0.0), 0, 'f', 1);
    if (j.contains("prefill_seconds"))
        text += tr("<br>prefill %1 ms (dense %2 ms, x%3), decode %4 ms/token (dense %5 ms, x%6)")
                    .arg(1000 * j.value("prefill_seconds", 0.0), 0, 'f', 2)
                    .arg(1000 * j.value("dense_prefill_seconds", 0.0), 0, 'f', 2)
                    .arg(j.value("prefill_fraction", 0.0), 0, 'f', 3)
                    .arg(1000 * j.value("decode_seconds", 0.0), 0, 'f', 3)
                    .arg(1000 * j.value("dense_decode_seconds", 0.0), 0, 'f', 3)
                    .arg(j.value("decode_fraction", 0.0), 0, 'f', 3);
    m_result->setText(text);
}

void EvaluateView::onFinished(bool cancelled, const QString& error)
{
    setRunning(false);
    if (!error.isEmpty())
        m_status->setText(tr("Evaluation failed: %1").arg(error));
    else if (cancelled)
        m_status->setText(tr("Evaluation cancelled; nothing was stored."));
    else {
        m_progress->setValue(m_progress->maximum());
        m_status->setText(tr("Measured and stored in the project."));
    }
    Q_EMIT evaluationFinished(cancelled, error);
}

} // namespace ladimo::gui
