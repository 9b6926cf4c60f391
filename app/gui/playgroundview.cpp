#include "playgroundview.h"

#include <QCheckBox>
#include <QComboBox>
#include <QCursor>
#include <QDoubleSpinBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QPlainTextEdit>
#include <QPushButton>
#include <QScrollBar>
#include <QShortcut>
#include <QSpinBox>
#include <QSplitter>
#include <QTextBrowser>
#include <QToolTip>
#include <QUndoStack>
#include <QUrl>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>

#include "common/error.h"
#include "model/llama.h"
#include "project/route.h"
#include "widgets/tokenlayermap.h"

namespace ladimo::gui {

namespace {

// A token's text for one line (heatmap labels, tooltips): newlines and tabs made visible.
QString oneLine(const std::string& text)
{
    QString s = QString::fromStdString(text);
    s.replace('\n', QStringLiteral("\u21b5")).replace('\t', QStringLiteral("\u2192"));
    return s;
}

// White to orange by `t` in [0, 1].
QColor heat(double t)
{
    t = std::clamp(std::isfinite(t) ? t : 0.0, 0.0, 1.0);
    return QColor::fromRgbF(1.0, 1.0 - 0.55 * t, 1.0 - 0.9 * t);
}

} // namespace

PlaygroundView::PlaygroundView(ProjectSession* session, PolicyTableModel* policy, QWidget* parent)
    : QWidget(parent), m_session(session), m_policy(policy)
{
    buildUi();
    connect(&m_loader, &QFutureWatcher<Loaded>::finished, this, &PlaygroundView::onLoaded);
    for (int i = 0; i < 2; ++i)
        connect(&m_workers[i], &QFutureWatcher<Outcome>::finished, this, [this, i] { onOneFinished(i); });
    m_pool.setMaxThreadCount(3);
    connect(&m_router, &QFutureWatcher<Routed>::finished, this, [this] {
        const Routed r = m_router.result();
        if (r.sequence != m_routeSequence || !m_model)
            return; // a newer routing was asked for, or the model went
        if (!r.error.isEmpty()) {
            setStatus(tr("Routing failed: %1").arg(r.error));
            return;
        }
        showRouted(std::make_unique<core::RouteResult>(*r.result));
    });
    m_drain.setInterval(20);
    connect(&m_drain, &QTimer::timeout, this, &PlaygroundView::drainTokens);
    if (m_policy)
        // A Policy view edit re-routes the shown tokens now, on this thread: routing only.
        connect(m_policy, &PolicyTableModel::estimateChanged, this, [this] {
            updateRulesLabel();
            if (!m_routedIds.empty())
                reroute();
        });
    clear(tr("Open a project (*.ladimo) with a finished conversion run to try it on a prompt."));
}

PlaygroundView::~PlaygroundView()
{
    m_cancel.cancel();
    for (auto& w : m_workers)
        w.waitForFinished();
    m_router.waitForFinished();
    m_loader.waitForFinished();
}

void PlaygroundView::buildUi()
{
    auto* layout = new QVBoxLayout(this);
    auto* promptRow = new QHBoxLayout;
    auto* promptLabel = new QLabel(tr("&Prompt:"));
    m_prompt = new QPlainTextEdit;
    m_prompt->setObjectName("playgroundPrompt");
    m_prompt->setPlaceholderText(tr("Once upon a time"));
    m_prompt->setMaximumHeight(64);
    m_prompt->setTabChangesFocus(true);
    m_prompt->setToolTip(tr("Text to continue (Ctrl+Return generates) or to route as it is (Route prompt)"));
    promptLabel->setBuddy(m_prompt);
    promptRow->addWidget(promptLabel);
    promptRow->addWidget(m_prompt, 1);
    layout->addLayout(promptRow);

    auto* controls = new QHBoxLayout;
    m_temperature = new QDoubleSpinBox;
    m_temperature->setObjectName("playgroundTemperature");
    m_temperature->setRange(0, 2);
    m_temperature->setSingleStep(0.1);
    m_temperature->setValue(0.8);
    m_temperature->setToolTip(tr("Sampling temperature; 0 = greedy"));
    m_maxTokens = new QSpinBox;
    m_maxTokens->setObjectName("playgroundMaxTokens");
    m_maxTokens->setRange(1, 4096);
    m_maxTokens->setValue(64);
    m_maxTokens->setToolTip(tr("Tokens to generate at most (the model's context limits it)"));
    m_seed = new QSpinBox;
    m_seed->setObjectName("playgroundSeed");
    m_seed->setRange(0, 1000000000);
    m_seed->setToolTip(tr("Sampling seed: both models draw with the same seed"));
    m_stopAtEnd = new QCheckBox(tr("Stop at end of text"));
    m_stopAtEnd->setObjectName("playgroundStopAtEnd");
    m_stopAtEnd->setChecked(true);
    m_generate = new QPushButton(tr("&Generate"));
    m_generate->setObjectName("playgroundGenerate");
    m_generate->setToolTip(tr("Continue the prompt with the dense and the converted model side by side (Ctrl+Return)"));
    m_stop = new QPushButton(tr("&Stop"));
    m_stop->setObjectName("playgroundStop");
    m_stop->setToolTip(tr("Stop both generations at their next token (Esc)"));
    m_stop->setEnabled(false);
    m_routePrompt = new QPushButton(tr("&Route prompt"));
    m_routePrompt->setObjectName("playgroundRoutePrompt");
    m_routePrompt->setToolTip(tr("Show the experts every token of the prompt itself uses, without generating"));
    m_colourBy = new QComboBox;
    m_colourBy->setObjectName("playgroundColourBy");
    m_colourBy->addItem(tr("experts used (mean k)"));
    m_colourBy->addItem(tr("activated FFN parameters"));
    m_colourBy->addItem(tr("KL to dense"));
    m_colourBy->setToolTip(tr("What the colour of a token (and of a heatmap cell) shows"));
    auto* colourLabel = new QLabel(tr("&Colour by:"));
    colourLabel->setBuddy(m_colourBy);
    auto* tempLabel = new QLabel(tr("&Temperature:"));
    tempLabel->setBuddy(m_temperature);
    auto* maxLabel = new QLabel(tr("&Max tokens:"));
    maxLabel->setBuddy(m_maxTokens);
    auto* seedLabel = new QLabel(tr("S&eed:"));
    seedLabel->setBuddy(m_seed);
    for (QWidget* w : std::initializer_list<QWidget*>{tempLabel, m_temperature, maxLabel, m_maxTokens, seedLabel,
                                                      m_seed, m_stopAtEnd, m_generate, m_stop, m_routePrompt})
        controls->addWidget(w);
    controls->addStretch(1);
    controls->addWidget(colourLabel);
    controls->addWidget(m_colourBy);
    layout->addLayout(controls);
    m_rules = new QLabel;
    m_rules->setObjectName("playgroundRules");
    m_rules->setWordWrap(true);
    layout->addWidget(m_rules);

    auto* vertical = new QSplitter(Qt::Vertical);
    auto* panes = new QSplitter(Qt::Horizontal);
    const QString names[2] = {QStringLiteral("denseText"), QStringLiteral("convertedText")};
    for (int i = 0; i < 2; ++i) {
        auto* box = new QWidget;
        auto* v = new QVBoxLayout(box);
        v->setContentsMargins(0, 0, 0, 0);
        m_paneTitle[i] = new QLabel;
        m_pane[i] = new QPlainTextEdit;
        m_pane[i]->setObjectName(names[i]);
        m_pane[i]->setReadOnly(true);
        v->addWidget(m_paneTitle[i]);
        v->addWidget(m_pane[i], 1);
        panes->addWidget(box);
    }
    vertical->addWidget(panes);
    auto* routing = new QWidget;
    auto* rv = new QVBoxLayout(routing);
    rv->setContentsMargins(0, 0, 0, 0);
    m_routeSummary = new QLabel;
    m_routeSummary->setObjectName("playgroundRouteSummary");
    m_routeSummary->setWordWrap(true);
    rv->addWidget(m_routeSummary);
    auto* routeSplit = new QSplitter(Qt::Horizontal);
    m_routed = new QTextBrowser;
    m_routed->setObjectName("routedText");
    m_routed->setOpenLinks(false);
    m_routed->setToolTip(tr("Each token coloured by what it cost; hover for its experts per layer, click to select"));
    routeSplit->addWidget(m_routed);
    m_heatmap = new widgets::TokenLayerMap;
    m_heatmap->setObjectName("tokenLayerMap");
    m_heatmap->setToolTip(tr("Token x layer: click a column to select its token. Right click to export."));
    routeSplit->addWidget(m_heatmap);
    routeSplit->setSizes({450, 550});
    rv->addWidget(routeSplit, 1);
    vertical->addWidget(routing);
    vertical->setSizes({300, 500});
    layout->addWidget(vertical, 1);
    m_status = new QLabel;
    m_status->setObjectName("playgroundStatus");
    m_status->setWordWrap(true);
    layout->addWidget(m_status);

    connect(m_generate, &QPushButton::clicked, this, [this] { generate(); });
    connect(m_stop, &QPushButton::clicked, this, &PlaygroundView::stop);
    connect(m_routePrompt, &QPushButton::clicked, this, [this] { routePrompt(); });
    connect(m_colourBy, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] { showRouting(); });
    connect(m_routed, &QTextBrowser::anchorClicked, this, [this](const QUrl& url) { selectToken(url.path().toInt()); });
    connect(m_routed, qOverload<const QUrl&>(&QTextBrowser::highlighted), this, [this](const QUrl& url) {
        if (url.scheme() == QLatin1String("tok"))
            QToolTip::showText(QCursor::pos(), tokenToolTip(url.path().toInt()), m_routed);
    });
    connect(m_heatmap, &widgets::TokenLayerMap::tokenClicked, this, &PlaygroundView::selectToken);
    auto* run = new QShortcut(QKeySequence(Qt::CTRL | Qt::Key_Return), this);
    run->setContext(Qt::WidgetWithChildrenShortcut);
    connect(run, &QShortcut::activated, this, [this] { generate(); });
    auto* esc = new QShortcut(QKeySequence(Qt::Key_Escape), this);
    esc->setContext(Qt::WidgetWithChildrenShortcut);
    connect(esc, &QShortcut::activated, this, &PlaygroundView::stop);
    // Undo / redo of policy edits from here (the prompt box keeps its own while it has focus).
    if (m_session) {
        auto* undo = new QShortcut(QKeySequence::Undo, this);
        undo->setContext(Qt::WidgetWithChildrenShortcut);
        connect(undo, &QShortcut::activated, m_session->undoStack(), &QUndoStack::undo);
        auto* redo = new QShortcut(QKeySequence::Redo, this);
        redo->setContext(Qt::WidgetWithChildrenShortcut);
        connect(redo, &QShortcut::activated, m_session->undoStack(), &QUndoStack::redo);
    }
}

void PlaygroundView::clear(const QString& message)
{
    m_cancel.cancel();
    ++m_generation; // tokens and results of a generation still running are dropped
    ++m_routeSequence;
    m_drain.stop();
    {
        const std::lock_guard<std::mutex> lock(m_pendingMutex);
        m_pendingGeneration = m_generation;
        m_pending[0].clear();
        m_pending[1].clear();
    }
    m_model.reset();
    m_loadedPath.clear();
    m_loadedRun = 0;
    m_routedIds.clear();
    m_routing.reset();
    m_selected = -1;
    for (int i = 0; i < 2; ++i) {
        m_ids[i].clear();
        m_pane[i]->clear();
        m_rate[i] = 0;
    }
    m_routed->clear();
    m_heatmap->clear();
    m_routeSummary->clear();
    m_generate->setEnabled(false);
    m_routePrompt->setEnabled(false);
    updateRates();
    updateRulesLabel();
    setStatus(message);
}

void PlaygroundView::setProject(const OpenedModel& m)
{
    if (!m.isProject) {
        clear(tr("Open a project (*.ladimo) with a finished conversion run to try it on a prompt."));
        return;
    }
    if (!m.run || m.run->run.status != core::RunStatus::Done) {
        clear(tr("Finish the conversion first (Convert view): the Playground runs the converted model."));
        return;
    }
    const int64_t run = m.run->run.id;
    if ((m_model && m_loadedPath == m.path && m_loadedRun == run)
        || (m_loader.isRunning() && m_loadingPath == m.path && m_loadingRun == run))
        return; // the same run: keep what is shown
    if (isGenerating())
        stop();
    m_loadingPath = m.path;
    m_loadingRun = run;
    m_generate->setEnabled(false);
    m_routePrompt->setEnabled(false);
    setStatus(tr("Loading run #%1 of %2...").arg(run).arg(m.path));
    const QString path = m.path;
    m_loader.setFuture(QtConcurrent::run([path] {
        Loaded l;
        l.model = ProjectSession::readRouteModel(path, &l.error);
        return l;
    }));
}

void PlaygroundView::onLoaded()
{
    const Loaded l = m_loader.result();
    if (!l.model) {
        clear(tr("Cannot load the converted model: %1").arg(l.error));
        Q_EMIT loadFailed(l.error);
        return;
    }
    clear(QString());
    m_model = l.model;
    m_loadedPath = m_loadingPath;
    m_loadedRun = m_loadingRun;
    m_generate->setEnabled(true);
    m_routePrompt->setEnabled(true);
    updateRulesLabel();
    updateRates();
    setStatus(tr("Run #%1 loaded: type a prompt and press Generate.").arg(m_loadedRun));
    Q_EMIT modelLoaded();
}

std::vector<core::RoutingRule> PlaygroundView::currentRules() const
{
    if (!m_model)
        return {};
    if (m_policy && static_cast<int>(m_policy->rules().size()) == m_model->layers()
        && m_policy->experts() == m_model->experts())
        return m_policy->rules();
    return core::resolveRouteRules(*m_model, {});
}

void PlaygroundView::updateRulesLabel()
{
    if (!m_model) {
        m_rules->setText(QString());
        return;
    }
    const bool fromPolicy = m_policy && static_cast<int>(m_policy->rules().size()) == m_model->layers();
    try {
        m_rules->setText(tr("Converted model runs: %1 (%2)")
                             .arg(QString::fromStdString(core::describeRules(currentRules(), m_model->experts())))
                             .arg(fromPolicy ? tr("the Policy view's current rules, followed live")
                                             : tr("the training k in every layer: no routing profile yet")));
    } catch (const std::exception& e) {
        m_rules->setText(QString::fromStdString(e.what()));
    }
}

void PlaygroundView::setPrompt(const QString& text) { m_prompt->setPlainText(text); }

void PlaygroundView::setSampling(double temperature, int maxTokens, int seed, bool stopAtEnd)
{
    m_temperature->setValue(temperature);
    m_maxTokens->setValue(maxTokens);
    m_seed->setValue(seed);
    m_stopAtEnd->setChecked(stopAtEnd);
}

bool PlaygroundView::isGenerating() const { return m_running > 0; }

bool PlaygroundView::generate()
{
    if (!m_model) {
        setStatus(tr("Nothing to generate with: open a project with a finished conversion run."));
        return false;
    }
    if (isGenerating()) {
        setStatus(tr("A generation is running: Stop it first."));
        return false;
    }
    std::vector<int64_t> prompt;
    std::vector<core::RoutingRule> rules;
    try {
        prompt = core::tokensOfText(*m_model, m_prompt->toPlainText().toStdString());
        rules = currentRules();
    } catch (const std::exception& e) {
        setStatus(QString::fromStdString(e.what()));
        return false;
    }
    const int64_t room = m_model->run.model->config().maxPositions - static_cast<int64_t>(prompt.size());
    if (room < 1) {
        setStatus(
            tr("The prompt takes %1 tokens, the model's whole context: nothing left to generate.").arg(prompt.size()));
        return false;
    }
    m_cancel = core::CancelToken();
    m_activeGeneration = ++m_generation;
    {
        const std::lock_guard<std::mutex> lock(m_pendingMutex);
        m_pendingGeneration = m_generation;
        m_pending[0].clear();
        m_pending[1].clear();
    }
    ++m_generationCount;
    m_generationError.clear();
    m_generationCancelled = false;
    const QString promptText = m_prompt->toPlainText();
    for (int i = 0; i < 2; ++i) {
        m_ids[i] = prompt;
        m_streamed[i] = 0;
        m_rate[i] = 0;
        m_pane[i]->setPlainText(promptText);
    }
    m_generate->setEnabled(false);
    m_stop->setEnabled(true);
    setStatus(tr("Generating..."));
    m_clock.start();
    m_running = 2;
    startOne(0, prompt, {});
    startOne(1, prompt, rules);
    m_drain.start();
    updateRates();
    return true;
}

void PlaygroundView::startOne(int which, const std::vector<int64_t>& prompt,
                              const std::vector<core::RoutingRule>& rules)
{
    core::PlaygroundGenerateOptions o;
    o.maxNew = std::min<int64_t>(m_maxTokens->value(),
                                 m_model->run.model->config().maxPositions - static_cast<int64_t>(prompt.size()));
    o.temperature = m_temperature->value();
    o.seed = static_cast<uint64_t>(m_seed->value());
    o.stopAtEos = m_stopAtEnd->isChecked();
    o.cancel = m_cancel;
    const int generation = m_generation;
    // Into the pending buffer, which the GUI thread drains in batches (the destructor waits for
    // the worker, so `this` outlives it).
    o.onToken = [this, generation, which](int64_t id) {
        const std::lock_guard<std::mutex> lock(m_pendingMutex);
        if (m_pendingGeneration == generation)
            m_pending[which].push_back(id);
    };
    const auto model = m_model;
    m_workers[which].setFuture(QtConcurrent::run(&m_pool, [model, prompt, rules, which, o] {
        Outcome out;
        QElapsedTimer clock;
        clock.start();
        try {
            out.ids = core::generateWith(*model, prompt, which == 1 ? &rules : nullptr, o);
            out.generated = static_cast<int64_t>(out.ids.size() - prompt.size());
        } catch (const core::Cancelled&) {
            out.cancelled = true;
        } catch (const std::exception& e) {
            out.error = QString::fromStdString(e.what());
        }
        out.seconds = static_cast<double>(clock.nsecsElapsed()) * 1e-9;
        return out;
    }));
}

void PlaygroundView::drainTokens()
{
    std::vector<int64_t> drawn[2];
    {
        const std::lock_guard<std::mutex> lock(m_pendingMutex);
        if (m_pendingGeneration != m_generation || !m_model)
            return;
        for (int i = 0; i < 2; ++i)
            drawn[i].swap(m_pending[i]);
    }
    const double seconds = static_cast<double>(m_clock.nsecsElapsed()) * 1e-9;
    for (int which = 0; which < 2; ++which) {
        if (drawn[which].empty())
            continue;
        std::string text;
        for (const int64_t id : drawn[which]) {
            m_ids[which].push_back(id);
            text += core::tokenText(*m_model, id);
        }
        m_streamed[which] += static_cast<int64_t>(drawn[which].size());
        auto* pane = m_pane[which];
        pane->moveCursor(QTextCursor::End);
        pane->insertPlainText(QString::fromStdString(text));
        m_rate[which] = seconds > 0 ? static_cast<double>(m_streamed[which]) / seconds : 0;
        for (const int64_t id : drawn[which])
            Q_EMIT tokenStreamed(which == 1, id);
    }
    updateRates();
}

void PlaygroundView::onOneFinished(int which)
{
    const Outcome out = m_workers[which].result();
    m_running = std::max(0, m_running - 1);
    if (m_activeGeneration != m_generation) { // cleared (another project) while it ran
        m_stop->setEnabled(isGenerating());
        return;
    }
    drainTokens(); // every token this worker drew is in the buffer by now
    if (out.cancelled)
        m_generationCancelled = true;
    if (!out.error.isEmpty())
        m_generationError = (which ? tr("converted: ") : tr("dense: ")) + out.error;
    if (!out.cancelled && out.error.isEmpty()) {
        m_ids[which] = out.ids;
        m_rate[which] = out.seconds > 0 ? static_cast<double>(out.generated) / out.seconds : 0;
    }
    updateRates();
    if (isGenerating())
        return;
    m_drain.stop();
    m_generate->setEnabled(m_model != nullptr);
    m_stop->setEnabled(false);
    setStatus(!m_generationError.isEmpty() ? tr("Generation failed: %1").arg(m_generationError)
                  : m_generationCancelled
                  ? tr("Stopped.")
                  : tr("Generated %1 tokens (dense), %2 (converted).").arg(m_streamed[0]).arg(m_streamed[1]));
    Q_EMIT generationFinished(m_generationCancelled, m_generationError);
    // The converted model's text, as far as it got, routed under the rules it ran with.
    if (m_generationError.isEmpty() && m_ids[1].size() > 0) {
        m_routedIds = m_ids[1];
        reroute(/*inBackground=*/true);
    }
}

void PlaygroundView::stop()
{
    if (!isGenerating())
        return;
    m_cancel.cancel();
    setStatus(tr("Stopping..."));
}

bool PlaygroundView::routePrompt()
{
    if (!m_model) {
        setStatus(tr("Nothing to route with: open a project with a finished conversion run."));
        return false;
    }
    try {
        m_routedIds = core::tokensOfText(*m_model, m_prompt->toPlainText().toStdString());
    } catch (const std::exception& e) {
        setStatus(QString::fromStdString(e.what()));
        return false;
    }
    reroute();
    return m_routing != nullptr;
}

void PlaygroundView::reroute(bool inBackground)
{
    if (!m_model || m_routedIds.empty())
        return;
    const int sequence = ++m_routeSequence;
    core::RouteOptions o;
    // One window: the text as it was generated, in one context.
    o.seqLen = std::min<int64_t>(m_model->run.model->config().maxPositions,
                                 std::max<int64_t>(256, static_cast<int64_t>(m_routedIds.size())));
    std::vector<core::RoutingRule> rules;
    try {
        rules = currentRules();
    } catch (const std::exception& e) {
        setStatus(tr("Routing failed: %1").arg(QString::fromStdString(e.what())));
        return;
    }
    if (inBackground) {
        const auto model = m_model;
        const auto ids = m_routedIds;
        m_router.setFuture(QtConcurrent::run(&m_pool, [model, ids, rules, o, sequence] {
            Routed r;
            r.sequence = sequence;
            try {
                r.result = std::make_shared<core::RouteResult>(core::routeTokens(*model, ids, rules, o));
            } catch (const std::exception& e) {
                r.error = QString::fromStdString(e.what());
            }
            return r;
        }));
        return;
    }
    try {
        showRouted(std::make_unique<core::RouteResult>(core::routeTokens(*m_model, m_routedIds, rules, o)));
    } catch (const std::exception& e) {
        setStatus(tr("Routing failed: %1").arg(QString::fromStdString(e.what())));
    }
}

void PlaygroundView::showRouted(std::unique_ptr<core::RouteResult> result)
{
    m_routing = std::move(result);
    ++m_routeCount;
    if (m_selected >= static_cast<int>(m_routing->tokens.size()))
        m_selected = -1;
    showRouting();
    Q_EMIT routed();
}

PlaygroundView::ColourBy PlaygroundView::colourBy() const { return static_cast<ColourBy>(m_colourBy->currentIndex()); }

void PlaygroundView::setColourBy(ColourBy by) { m_colourBy->setCurrentIndex(static_cast<int>(by)); }

QString PlaygroundView::routedHtml() const
{
    if (!m_routing)
        return {};
    const auto& tokens = m_routing->tokens;
    const auto by = colourBy();
    auto valueOf = [&](const core::RouteToken& t) {
        return by == ColourBy::Experts   ? t.meanK
            : by == ColourBy::Parameters ? static_cast<double>(t.parameters)
                                         : t.klToDense;
    };
    // White at the text's lowest value, orange at its highest.
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (const auto& t : tokens) {
        lo = std::min(lo, valueOf(t));
        hi = std::max(hi, valueOf(t));
    }
    QString html = QStringLiteral("<div style=\"font-family: monospace; font-size: 11pt;\">");
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        const auto& t = tokens[i];
        QString text = QString::fromStdString(t.text).toHtmlEscaped();
        text.replace(' ', QStringLiteral("&nbsp;"));
        text.replace('\n', QStringLiteral("\u21b5<br>"));
        const bool selected = static_cast<int>(i) == m_selected;
        html += QStringLiteral(
                    "<a href=\"tok:%1\" style=\"background-color: %2; color: %3; text-decoration: %4;\">%5</a>")
                    .arg(i)
                    .arg(heat(hi > lo ? (valueOf(t) - lo) / (hi - lo) : 0.5).name())
                    .arg(selected ? QStringLiteral("#0050c0") : QStringLiteral("#000000"))
                    .arg(selected ? QStringLiteral("underline") : QStringLiteral("none"))
                    .arg(text);
    }
    return html + QStringLiteral("</div>");
}

QString PlaygroundView::tokenToolTip(int index) const
{
    if (!m_routing || index < 0 || index >= static_cast<int>(m_routing->tokens.size()))
        return {};
    const auto& t = m_routing->tokens[static_cast<std::size_t>(index)];
    QString tip = tr("<b>'%1'</b> (id %2, position %3)<br>mean k %4, %5 FFN parameters, KL to dense %6<br>"
                     "next token: dense '%7', converted '%8'")
                      .arg(oneLine(t.text).toHtmlEscaped())
                      .arg(t.id)
                      .arg(t.position)
                      .arg(t.meanK, 0, 'f', 2)
                      .arg(t.parameters)
                      .arg(t.klToDense, 0, 'g', 4)
                      .arg(oneLine(core::tokenText(*m_model, t.denseTop)).toHtmlEscaped(),
                           oneLine(core::tokenText(*m_model, t.convertedTop)).toHtmlEscaped());
    for (std::size_t l = 0; l < t.layers.size(); ++l) {
        const auto& rl = t.layers[l];
        QString experts;
        for (std::size_t e = 0; e < rl.experts.size(); ++e)
            experts += (e ? QStringLiteral(", ") : QString())
                + QStringLiteral("e%1 %2").arg(rl.experts[e]).arg(rl.weights[e], 0, 'f', 2);
        tip += tr("<br>layer %1: %2 (k=%3, error %4)").arg(l).arg(experts).arg(rl.k).arg(rl.relativeError, 0, 'f', 3);
    }
    return tip;
}

void PlaygroundView::showRouting()
{
    if (!m_routing) {
        m_routed->clear();
        m_heatmap->clear();
        m_routeSummary->clear();
        return;
    }
    const auto& r = *m_routing;
    const int scroll = m_routed->verticalScrollBar()->value();
    m_routed->setHtml(routedHtml());
    m_routed->verticalScrollBar()->setValue(scroll);
    const auto by = colourBy();
    QStringList tokens, layers;
    const int L = r.tokens.empty() ? 0 : static_cast<int>(r.tokens.front().layers.size());
    QVector<QVector<double>> values(L);
    for (const auto& t : r.tokens) {
        tokens << oneLine(t.text);
        for (int l = 0; l < L; ++l) {
            const auto& rl = t.layers[static_cast<std::size_t>(l)];
            values[l] << (by == ColourBy::Experts          ? static_cast<double>(rl.k)
                              : by == ColourBy::Parameters ? static_cast<double>(rl.parameters)
                                                           : rl.relativeError);
        }
    }
    for (int l = 0; l < L; ++l)
        layers << tr("layer %1").arg(l);
    m_heatmap->setScaleLabel(by == ColourBy::Experts          ? tr("experts used")
                                 : by == ColourBy::Parameters ? tr("activated FFN parameters")
                                                              : tr("layer relative error"));
    m_heatmap->setData(tokens, layers, values);
    m_heatmap->setSelectedColumn(m_selected);
    const QString colour = by == ColourBy::Experts ? tr("mean k")
        : by == ColourBy::Parameters               ? tr("parameters")
                                                   : tr("KL");
    m_routeSummary->setText(tr("%1 tokens routed under %2: mean k %3 of %4 experts, activated FFN %5% of dense, "
                               "KL to dense %6 per token. Text colour: %7 from its lowest (white) to its highest "
                               "(orange); hover a token for its experts.")
                                .arg(r.tokens.size())
                                .arg(QString::fromStdString(core::describeRules(r.rules, r.experts)))
                                .arg(r.meanK, 0, 'f', 2)
                                .arg(r.experts)
                                .arg(100 * r.activatedFfnFraction(), 0, 'f', 1)
                                .arg(r.meanKlToDense, 0, 'g', 4)
                                .arg(colour));
}

void PlaygroundView::selectToken(int index)
{
    const int n = m_routing ? static_cast<int>(m_routing->tokens.size()) : 0;
    m_selected = index >= 0 && index < n ? index : -1;
    m_heatmap->setSelectedColumn(m_selected);
    const int scroll = m_routed->verticalScrollBar()->value();
    m_routed->setHtml(routedHtml());
    m_routed->verticalScrollBar()->setValue(scroll);
    Q_EMIT tokenSelected(m_selected);
}

void PlaygroundView::updateRates()
{
    const QString names[2] = {tr("Dense model"), tr("Converted model")};
    for (int i = 0; i < 2; ++i)
        m_paneTitle[i]->setText(m_rate[i] > 0 ? tr("<b>%1</b>: %2 tokens/s").arg(names[i]).arg(m_rate[i], 0, 'f', 1)
                                              : tr("<b>%1</b>").arg(names[i]));
}

QString PlaygroundView::denseText() const { return m_pane[0]->toPlainText(); }
QString PlaygroundView::convertedText() const { return m_pane[1]->toPlainText(); }
QString PlaygroundView::statusText() const { return m_status->text(); }

void PlaygroundView::setStatus(const QString& text) { m_status->setText(text); }

} // namespace ladimo::gui
