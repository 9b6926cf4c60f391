#include "evaluateview.h"

#include <QCheckBox>
#include <QComboBox>
#include <QGridLayout>
#include <QLabel>
#include <QLineEdit>
#include <QPushButton>
#include <QSpinBox>

#include <nlohmann/json.hpp>

#include "evaluationtablemodel.h"
#include "viewparts.h"
#include "workbenchjob.h"

namespace ladimo::gui {

namespace {

JobViewText evaluateText()
{
    JobViewText t;
    t.title = EvaluateView::tr("Evaluate the latest conversion");
    t.start = EvaluateView::tr("&Evaluate");
    t.startTip = EvaluateView::tr(
        "Measure perplexity, KL to dense and activated FFN fraction (ladimo eval); stored in the project");
    t.cancelTip = EvaluateView::tr("Stop the measurement; nothing is stored");
    t.startName = "startEvaluation";
    t.cancelName = "cancelEvaluation";
    t.progressName = "evalProgress";
    t.resultName = "evalResult";
    t.noResult = EvaluateView::tr("No measurement yet.");
    t.recordsTip = EvaluateView::tr("The project's stored evaluations, newest first (from here and from ladimo eval)");
    t.failed = EvaluateView::tr("Evaluation failed: %1");
    t.cancelled = EvaluateView::tr("Evaluation cancelled; nothing was stored.");
    t.done = EvaluateView::tr("Measured and stored in the project.");
    return t;
}

} // namespace

EvaluateView::EvaluateView(QWidget* parent) : JobView(evaluateText(), parent)
{
    auto* grid = form();
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
    m_model = new EvaluationTableModel(this);
    finishForm(7, m_model);
    connect(job(), &WorkbenchJob::evaluated, this, &EvaluateView::onEvaluated);
    connect(startButton(), &QPushButton::clicked, this, [this] { startEvaluation(); });
    connect(m_policy, qOverload<int>(&QComboBox::currentIndexChanged), this,
            [this](int i) { m_topK->setEnabled(i == 1 && !isRunning()); });
    clear(tr("Open a project with a finished conversion run."));
}

void EvaluateView::setProject(const QString& projectFile, int experts, int trainTopK,
                              const std::vector<core::Policy>& policies,
                              const std::vector<core::Evaluation>& evaluations)
{
    setProjectFile(projectFile);
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
    if (!m_model->evaluations().empty() && !isRunning()) {
        // The newest measurement, as it was reported.
        const auto& newest = m_model->evaluations().front();
        auto metrics = newest.metrics;
        if (!metrics.contains("policy_label"))
            metrics["policy_label"]
                = m_model->index(0, EvaluationTableModel::PolicyColumn).data().toString().toStdString();
        onEvaluated(QString::fromStdString(metrics.dump()));
    }
    showStatus(tr("%1 stored evaluations.").arg(evaluations.size()));
    setRunning(isRunning());
}

void EvaluateView::clear(const QString& message)
{
    setProjectFile({});
    m_model->setEvaluations({}, {});
    showStatus(message);
    setRunning(isRunning());
}

QList<QWidget*> EvaluateView::formWidgets() const { return {m_policy, m_dataKind, m_dataFile, m_tokens, m_timing}; }

void EvaluateView::refineEnabled(bool editable) { m_topK->setEnabled(editable && m_policy->currentIndex() == 1); }

bool EvaluateView::startEvaluation()
{
    if (project().isEmpty() || isRunning())
        return false;
    EvaluateRequest r;
    r.projectFile = project();
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
    if (!job()->startEvaluation(r))
        return false;
    jobStarted(tr("Evaluating %1 ...").arg(m_policy->currentText()));
    return true;
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
    showResult(text);
}

void EvaluateView::jobFinished(bool cancelled, const QString& error) { Q_EMIT evaluationFinished(cancelled, error); }

} // namespace ladimo::gui
