#include "mainwindow.h"

#include <QAction>
#include <QComboBox>
#include <QHBoxLayout>
#include <QSignalBlocker>
#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDragEnterEvent>
#include <QDateTime>
#include <QFileDialog>
#include <QFileInfo>
#include <QFormLayout>
#include <QGridLayout>
#include <QGroupBox>
#include <QLineEdit>
#include <QProgressBar>
#include <QPushButton>
#include <QSpinBox>
#include <QHeaderView>
#include <QLabel>
#include <QLocale>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QPainter>
#include <QTabBar>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>
#include <QToolBar>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <cmath>
#include <limits>
#include <set>

#include "calibrationview.h"
#include "pipelineview.h"
#include "playgroundview.h"
#include "common/error.h"
#include "conversiontablemodel.h"
#include "evaluateview.h"
#include "exportview.h"
#include "layertablemodel.h"
#include "model/tokenizer.h"
#include "routingview.h"
#include "tradeoffview.h"
#include "widgets/barplot.h"
#include "widgets/lineplot.h"

namespace ladimo::gui {

namespace {

QString count(qint64 n) { return QLocale().toString(n); }

} // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent)
{
    m_session = new ProjectSession(this);
    buildUi();
    connect(m_session, &ProjectSession::opened, this, &MainWindow::onOpened);
    connect(m_session, &ProjectSession::openFailed, this, &MainWindow::onOpenFailed);
    m_job = new WorkbenchJob(this);
    connect(m_job, &WorkbenchJob::runStarted, this, &MainWindow::onRunStarted);
    connect(m_job, &WorkbenchJob::layerStarted, this, &MainWindow::onLayerStarted);
    connect(m_job, &WorkbenchJob::lossPoints, this, &MainWindow::onLossPoints);
    connect(m_job, &WorkbenchJob::layerFinished, this, &MainWindow::onLayerFinished);
    connect(m_job, &WorkbenchJob::progressed, this, &MainWindow::onJobProgressed);
    connect(m_job, &WorkbenchJob::jobFinished, this, &MainWindow::onJobFinished);
    connect(m_job, &WorkbenchJob::pipelineStep, this, [this](const QString& step, const QString& line) {
        m_pipeline->showStep(step, line);
        m_jobStatus->setText(tr("Pipeline, %1: %2").arg(step, line));
    });
    connect(m_job, &WorkbenchJob::pipelineReport, this,
            [this](const QString& text, const QString&) { m_pipeline->showReport(text); });
    setJobRunning({});
    QSettings settings;
    restoreGeometry(settings.value("window/geometry").toByteArray());
    restoreState(settings.value("window/state").toByteArray());
    setAcceptDrops(true);
}

MainWindow::~MainWindow()
{
    // The job first: it cancels and waits, and nothing it still sends may reach a half-destroyed window.
    m_job->disconnect(this);
    delete m_job;
    m_job = nullptr;
    m_session->disconnect(this);
}

QString MainWindow::demoModelPath()
{
    const QString beside = QDir(QCoreApplication::applicationDirPath()).absoluteFilePath("../../resources/demo");
    if (QDir(beside).exists())
        return QDir(beside).canonicalPath();
    return QStringLiteral(LADIMO_DEMO_DIR);
}

void MainWindow::buildUi()
{
    setWindowTitle(tr("LaDiMo Workbench"));
    resize(1100, 720);

    auto* fileMenu = menuBar()->addMenu(tr("&File"));
    auto* openAction = fileMenu->addAction(tr("&Open project or model..."), this, &MainWindow::onOpenTriggered);
    openAction->setShortcut(QKeySequence::Open);
    openAction->setToolTip(tr("Open a Hugging Face LLaMA-family model folder (config.json + safetensors)"));
    auto* demoAction = fileMenu->addAction(tr("Open &demo model"), this, [this] { openPath(demoModelPath()); });
    demoAction->setShortcut(QKeySequence(Qt::CTRL | Qt::Key_D));
    demoAction->setToolTip(tr("Open the small Austen model bundled with the workbench"));
    m_recentMenu = fileMenu->addMenu(tr("Open &recent"));
    fileMenu->addSeparator();
    fileMenu->addAction(tr("&Quit"), this, &QWidget::close)->setShortcut(QKeySequence::Quit);

    auto* toolbar = addToolBar(tr("Main"));
    toolbar->setObjectName("mainToolbar");
    toolbar->addAction(openAction);
    toolbar->addAction(demoAction);

    m_tabs = new QTabWidget(this);
    auto* modelPage = new QWidget;
    auto* layout = new QVBoxLayout(modelPage);
    m_summary = new QLabel(tr("No model open. Use File > Open model folder, drop a folder here, or open the demo."));
    m_summary->setTextFormat(Qt::RichText);
    m_summary->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_summary->setWordWrap(true);
    layout->addWidget(m_summary);
    auto* split = new QSplitter(Qt::Horizontal);
    m_layers = new LayerTableModel(this);
    m_layerView = new QTableView;
    m_layerView->setModel(m_layers);
    m_layerView->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    m_layerView->verticalHeader()->hide();
    m_layerView->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_layerView->setToolTip(tr("Decoder layers: each FFN becomes an MoE block in the conversion"));
    split->addWidget(m_layerView);
    m_breakdown = new widgets::BarPlot;
    m_breakdown->setAxisLabels(tr("part"), tr("parameters"));
    m_breakdown->setToolTip(tr("Where the parameters are: the FFNs are what LaDiMo makes sparse"));
    split->addWidget(m_breakdown);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);
    split->setSizes({600, 400});
    layout->addWidget(split, 1);
    m_pipeline = new PipelineView;
    connect(m_pipeline, &PipelineView::runRequested, this, [this] { startPipeline(); });
    connect(m_pipeline, &PipelineView::cancelRequested, this, &MainWindow::cancelJob);
    layout->addWidget(m_pipeline);
    m_tabs->addTab(modelPage, tr("Model"));

    m_calibration = new CalibrationView;
    m_tabs->addTab(m_calibration, tr("Calibration"));
    connect(m_calibration, &CalibrationView::settingsChanged, this, &MainWindow::onCalibrationChanged);

    auto* convertPage = new QWidget;
    auto* convertLayout = new QVBoxLayout(convertPage);
    convertLayout->addWidget(buildConvertForm());
    m_runSummary = new QLabel(tr("No conversion yet: open a model, choose the settings above and press Start."));
    m_runSummary->setObjectName("runSummary");
    m_runSummary->setWordWrap(true);
    m_runSummary->setTextInteractionFlags(Qt::TextSelectableByMouse);
    convertLayout->addWidget(m_runSummary);
    auto* convertSplit = new QSplitter(Qt::Horizontal);
    m_conversion = new ConversionTableModel(this);
    m_conversionView = new QTableView;
    m_conversionView->setModel(m_conversion);
    m_conversionView->horizontalHeader()->setSectionResizeMode(QHeaderView::Stretch);
    m_conversionView->verticalHeader()->hide();
    m_conversionView->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_conversionView->setSelectionMode(QAbstractItemView::SingleSelection);
    m_conversionView->setToolTip(
        tr("Per-layer results of the latest conversion run: select a layer to see its loss curve"));
    convertSplit->addWidget(m_conversionView);
    m_lossPlot = new widgets::LinePlot;
    m_lossPlot->setAxisLabels(tr("distillation step"), tr("normalised MSE"));
    m_lossPlot->setLogY(true);
    m_lossPlot->setToolTip(tr(
        "Layer-wise distillation loss: MSE of the MoE block against the dense FFN, divided by the FFN output energy"));
    m_endToEndPlot = new widgets::LinePlot;
    m_endToEndPlot->setObjectName("endToEndPlot");
    m_endToEndPlot->setAxisLabels(tr("end-to-end step"), tr("KL to dense per token"));
    m_endToEndPlot->setLogY(true);
    m_endToEndPlot->setToolTip(tr("End-to-end stage (--e2e-steps): the KL between the dense and the converted "
                                  "model's next-token distributions on each step's calibration windows"));
    m_endToEndPlot->hide();
    auto* plots = new QSplitter(Qt::Vertical);
    plots->addWidget(m_lossPlot);
    plots->addWidget(m_endToEndPlot);
    convertSplit->addWidget(plots);
    convertSplit->setSizes({500, 500});
    convertLayout->addWidget(convertSplit, 1);
    connect(m_conversionView->selectionModel(), &QItemSelectionModel::currentRowChanged, this,
            [this](const QModelIndex& current) { showLossCurve(current.row()); });
    m_tabs->addTab(convertPage, tr("Convert"));

    m_routingView = new RoutingView;
    m_tabs->addTab(m_routingView, tr("Routing"));
    m_tabs->setTabToolTip(m_tabs->count() - 1,
                          tr("Router profiles: weight histograms, cumulative mass, expert load, all layers"));
    m_policyView = new PolicyView(m_session);
    m_tabs->addTab(m_policyView, tr("Policy"));
    m_tabs->setTabToolTip(m_tabs->count() - 1,
                          tr("Per-layer routing rules with instant estimates and the tradeoff plot"));
    m_tradeoffView = new TradeoffView(m_policyView);
    m_tabs->addTab(m_tradeoffView, tr("Tradeoff"));
    m_tabs->setTabToolTip(m_tabs->count() - 1, tr("Error against cost of every policy; click a point to apply it"));
    m_playground = new PlaygroundView(m_session, m_policyView->model());
    m_tabs->addTab(m_playground, tr("Playground"));
    m_tabs->setTabToolTip(m_tabs->count() - 1,
                          tr("A prompt through the dense and the converted model side by side: every token's "
                             "experts, compute and KL under the current policy"));
    m_evaluateView = new EvaluateView;
    m_tabs->addTab(m_evaluateView, tr("Evaluate"));
    connect(m_evaluateView, &EvaluateView::evaluationFinished, this, [this](bool cancelled, const QString& error) {
        if (!error.isEmpty() && !property("quiet").toBool())
            QMessageBox::critical(this, tr("Evaluation failed"), error);
        if (!cancelled && error.isEmpty() && m_current.isProject)
            openPath(m_current.path); // the new evaluation in every view (the tradeoff plot too)
    });
    m_exportView = new ExportView;
    m_tabs->addTab(m_exportView, tr("Export"));
    connect(m_exportView, &ExportView::exportFinished, this, [this](bool cancelled, const QString& error) {
        if (!error.isEmpty() && !property("quiet").toBool())
            QMessageBox::critical(this, tr("Export failed"), error);
        if (!cancelled && error.isEmpty() && m_current.isProject)
            openPath(m_current.path); // the new export in the list
    });
    connect(m_evaluateView, &EvaluateView::runningChanged, this, [this](bool running) {
        m_runningStep = running ? std::optional(core::PipelineStep::Evaluate) : std::nullopt;
        refreshStepStates();
    });
    connect(m_exportView, &ExportView::runningChanged, this, [this](bool running) {
        m_runningStep = running ? std::optional(core::PipelineStep::Export) : std::nullopt;
        refreshStepStates();
    });
    // The pipeline: each step's tab shows its state (icon) and what it produced (tooltip).
    const QWidget* pages[core::kPipelineSteps]
        = {modelPage, m_calibration, convertPage, m_routingView, m_policyView, m_evaluateView, m_exportView};
    const QString tips[core::kPipelineSteps]
        = {tr("The dense model: architecture, parameters, layers"),
           tr("The calibration data the conversion and the profile run on"),
           tr("Convert every FFN into an MoE block by layer-wise distillation"),
           tr("Routing profile of the conversion: weight histograms, top-k mass, expert load"),
           tr("Per-layer routing rules with instant estimates and the tradeoff plot"),
           tr("Measure perplexity, KL to dense and latency of the conversion under a rule"),
           tr("Write the conversion or the dense model as Hugging Face or GGUF files")};
    for (int i = 0; i < core::kPipelineSteps; ++i) {
        m_stepPages[i] = const_cast<QWidget*>(pages[i]);
        m_stepBaseTips[i] = tips[i];
    }
    refreshStepStates();
    setCentralWidget(m_tabs);
    statusBar()->showMessage(tr("Ready"));
    rebuildRecentMenu();
}

void MainWindow::openPath(const QString& path)
{
    statusBar()->showMessage(tr("Opening %1 ...").arg(path));
    m_session->open(path);
}

void MainWindow::onOpenTriggered()
{
    // A project is a file, a model is a folder: offer the project file first, folders on cancel.
    const QString file
        = QFileDialog::getOpenFileName(this, tr("Open project"), m_current.path, tr("LaDiMo projects (*.ladimo)"));
    if (!file.isEmpty()) {
        openPath(file);
        return;
    }
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open model folder"), m_current.path);
    if (!dir.isEmpty())
        openPath(dir);
}

void MainWindow::onOpenFailed(const QString& path, const QString& error)
{
    statusBar()->showMessage(tr("Could not open %1").arg(path));
    Q_EMIT openFailed(error);
    if (!property("quiet").toBool())
        QMessageBox::critical(this, tr("Could not open model"), error);
}

void MainWindow::onOpened(const OpenedModel& m)
{
    showModel(m);
    rememberRecent(m.path);
    Q_EMIT modelOpened(m.path);
}

void MainWindow::showModel(const OpenedModel& m)
{
    m_current = m;
    const auto& c = m.config;
    const auto p = c.parameterCounts();
    m_summary->setText(tr("<b>%1</b> &nbsp; %2<br>%3 layers, hidden %4, FFN width %5, %6 heads (%7 key/value), "
                          "vocabulary %8, tokenizer: %9<br>Parameters: <b>%10</b> total = attention %11 + FFN %12 + "
                          "embeddings %13 + norms %14")
                           .arg(QDir(m.modelPath).dirName().toHtmlEscaped(), QString::fromStdString(c.architecture))
                           .arg(c.numLayers)
                           .arg(c.hiddenSize)
                           .arg(c.intermediateSize)
                           .arg(c.numHeads)
                           .arg(c.numKvHeads)
                           .arg(c.vocabSize)
                           .arg(m.tokenizer.isEmpty() ? tr("none (token ids only)") : m.tokenizer)
                           .arg(count(p.total), count(p.attention), count(p.ffn), count(p.embeddings), count(p.norms)));
    m_layers->setConfig(c);
    m_calibration->setModel(m.modelPath);
    if (!m.calibrationJson.isEmpty()) {
        m_calibration->setSettingJson(m.calibrationJson);
    } else if (m.run && m.run->run.extra.contains("data")) {
        // Never chosen in this project: the data the latest run was converted on.
        const auto data = m.run->run.extra["data"];
        nlohmann::json setting = {{"seed", m.run->run.seed}};
        if (data.contains("self_sample")) {
            setting["kind"] = "self_sample";
            setting["self_sample"] = data["self_sample"];
        } else {
            const std::string file = data.value("file", std::string());
            setting["kind"] = QString::fromStdString(file).endsWith(".txt") ? "text" : "tokens";
            setting["file"] = file;
            setting["max_tokens"] = data.value("max_tokens", int64_t{0});
        }
        m_calibration->setSettingJson(QString::fromStdString(setting.dump()));
    }
    if (!m.isProject) // a model folder: the view's settings go into the project the conversion creates
        m_current.facts.calibration = nlohmann::json::parse(m_calibration->settingJson().toStdString());
    m_calibrationSummary->setText(
        tr("Calibration data: %1 (set in the Calibration view)").arg(m_calibration->summary()));
    showRun(m);
    showProfiles(m);
    if (m.isProject && !m.profiles.empty())
        m_policyView->setData(m.policy);
    else
        m_policyView->clear(
            m.isProject
                ? tr("No routing profile yet: press Profile in the Convert view (or run ladimo profile P.ladimo).")
                : tr("Open a project (*.ladimo) with a conversion run and a routing profile."));
    const bool runDone = m.run && m.run->run.status == core::RunStatus::Done;
    m_playground->setProject(m);
    if (m.isProject && runDone)
        m_evaluateView->setProject(m.path, static_cast<int>(m.run->run.experts), m.run->run.trainTopK, m.policies,
                                   m.evaluations);
    else
        m_evaluateView->clear(m.isProject ? tr("Finish the conversion first (Convert view).")
                                          : tr("Open a project with a finished conversion run."));
    if (m.isProject && runDone)
        m_exportView->setProject(m.path, static_cast<int>(m.run->run.experts), m.policies, m.exports);
    else
        m_exportView->clear(m.isProject ? tr("Finish the conversion first (Convert view).")
                                        : tr("Open a project with a finished conversion run."));
    m_breakdown->setBars({tr("attention"), tr("FFN"), tr("embeddings"), tr("norms")},
                         {double(p.attention), double(p.ffn), double(p.embeddings), double(p.norms)});
    if (m_jobKind != "pipeline")
        m_pipeline->showOpened(m.pipelineReport, m.isProject ? QFileInfo(m.path).absolutePath() : QString());
    setWindowTitle(tr("%1 - LaDiMo Workbench").arg(QDir(m.path).dirName()));
    if (m.isProject)
        m_projectFile->setText(m.path);
    m_projectFile->setReadOnly(m.isProject);
    setJobRunning(m_jobKind);
    refreshStepStates();
    statusBar()->showMessage(tr("Opened %1").arg(m.path));
}

void MainWindow::showRun(const OpenedModel& m)
{
    showEndToEnd(m.run ? m.endToEnd : std::nullopt);
    if (!m.run) {
        m_conversion->clear();
        m_lossPlot->clear();
        m_runSummary->setText(m.isProject ? tr("This project has no conversion run yet: press Start.")
                                          : tr("No conversion yet: choose the settings above and press Start; "
                                               "the project file is asked for when the Project field is empty."));
        return;
    }
    const auto& r = m.run->run;
    int done = 0;
    for (const auto& l : m.run->layers)
        done += l.status == core::LayerStatus::Done;
    const int64_t shared = r.extra.value("shared_neurons", int64_t{0});
    QString stage;
    if (m.endToEnd && m.endToEnd->steps > 0)
        stage = tr(" End-to-end stage: KL to dense %1 to %2 per token over %3 steps (%4 s).")
                    .arg(m.endToEnd->initialKl, 0, 'g', 3)
                    .arg(m.endToEnd->finalKl, 0, 'g', 3)
                    .arg(m.endToEnd->steps)
                    .arg(m.endToEnd->wallSeconds, 0, 'f', 0);
    else if (m.endToEnd)
        stage = tr(" End-to-end stage skipped: %1").arg(QString::fromStdString(m.endToEnd->note));
    m_runSummary->setText(
        tr("Run #%1 (%2): %3 experts%15, %4 partition, %5 gating, trained at top-%6, %7 epochs, lr %8, batch %9, "
           "%10 mode on %11, seed %12. %13 of %14 layers done.%16")
            .arg(r.id)
            .arg(QString::fromLatin1(core::runStatusName(r.status)))
            .arg(r.experts)
            .arg(QString::fromStdString(r.partition), QString::fromStdString(r.gating))
            .arg(r.trainTopK)
            .arg(r.epochs)
            .arg(r.lr)
            .arg(r.batch)
            .arg(QString::fromStdString(r.mode), QString::fromStdString(r.device))
            .arg(r.seed)
            .arg(done)
            .arg(m.run->layers.size())
            .arg(shared > 0 ? tr(" + %1 shared neurons").arg(shared) : QString(), stage));
    m_conversion->setSnapshot(*m.run);
    selectConversionLayer(0);
    if (m_jobKind.isEmpty()) {
        m_overallProgress->setRange(0, std::max<int>(1, static_cast<int>(m.run->layers.size())));
        m_overallProgress->setValue(done);
    }
    // The form takes the run's settings: Start then resumes (or reruns) exactly this run.
    m_experts->setValue(static_cast<int>(r.experts));
    // As the user gave them (0: auto), so that the same settings find the same run.
    m_trainTopK->setValue(r.extra.value("train_top_k", r.trainTopK));
    m_e2eSteps->setValue(r.extra.value("e2e_steps", 0));
    m_sharedNeurons->setValue(r.extra.value("shared_neurons", 0));
    m_epochs->setValue(r.epochs);
    if (const int i = m_partition->findText(QString::fromStdString(r.partition)); i >= 0)
        m_partition->setCurrentIndex(i);
    if (const int i = m_gating->findText(QString::fromStdString(r.gating)); i >= 0)
        m_gating->setCurrentIndex(i);
}

void MainWindow::selectConversionLayer(int layer)
{
    if (layer < 0 || layer >= m_conversion->rowCount())
        return;
    m_conversionView->selectRow(layer);
    showLossCurve(layer);
}

void MainWindow::showLossCurve(int row)
{
    m_lossPlot->clear();
    const auto& snap = m_conversion->snapshot();
    if (row < 0 || row >= static_cast<int>(snap.lossCurves.size()))
        return;
    QVector<double> x, y;
    for (const auto& p : snap.lossCurves[static_cast<std::size_t>(row)]) {
        x << static_cast<double>(p.step);
        y << std::max(p.loss, 1e-12);
    }
    m_lossPlot->addSeries(tr("layer %1, per batch").arg(row), x, y);
    addMovingAverage(m_lossPlot, x, y);
}

void MainWindow::addMovingAverage(widgets::LinePlot* plot, const QVector<double>& x, const QVector<double>& y)
{
    // Single batches' losses jump (each batch has other tokens); a moving average shows the trend.
    const int window = std::max(1, static_cast<int>(y.size()) / 40);
    QVector<double> avg(y.size());
    double sum = 0;
    for (int i = 0; i < y.size(); ++i) {
        sum += y[i] - (i >= window ? y[i - window] : 0.0);
        avg[i] = sum / std::min(i + 1, window);
    }
    plot->addSeries(tr("moving average (%1 steps)").arg(window), x, avg);
}

void MainWindow::showEndToEnd(const std::optional<core::EndToEndRecord>& stage)
{
    m_endToEndPlot->clear();
    m_endToEndPlot->setVisible(stage && !stage->curve.empty());
    if (!stage || stage->curve.empty())
        return;
    QVector<double> x, y;
    for (const auto& p : stage->curve) {
        x << static_cast<double>(p.step);
        y << std::max(p.loss, 1e-12);
    }
    m_endToEndPlot->addSeries(tr("KL per step"), x, y);
    addMovingAverage(m_endToEndPlot, x, y);
}

void MainWindow::showProfiles(const OpenedModel& m)
{
    if (m.profiles.empty())
        m_routingView->clear(
            tr("No routing profile yet: press Profile in the Convert view (or run ladimo profile P.ladimo)."));
    else
        m_routingView->setProfiles(m.run ? m.run->run.id : 0, m.profiles, m.routingRuns);
}

bool MainWindow::selectRoutingLayer(int index) { return m_routingView->selectLayer(index); }

const widgets::LinePlot* MainWindow::rankPlot() const { return m_routingView->rankPlot(); }

QWidget* MainWindow::buildConvertForm()
{
    auto* box = new QGroupBox(tr("Conversion settings"));
    auto* grid = new QGridLayout(box);
    auto spin = [](const char* name, int lo, int hi, int value, const QString& tip) {
        auto* w = new QSpinBox;
        w->setObjectName(QString::fromLatin1(name));
        w->setRange(lo, hi);
        w->setValue(value);
        w->setToolTip(tip);
        return w;
    };
    auto combo = [](const char* name, const QStringList& items, const QString& tip) {
        auto* w = new QComboBox;
        w->setObjectName(QString::fromLatin1(name));
        w->addItems(items);
        w->setToolTip(tip);
        return w;
    };
    const ConvertRequest defaults; // the core's defaults, as `ladimo convert` has them
    m_experts = spin("experts", 2, 256, static_cast<int>(defaults.experts),
                     tr("Experts per layer (--experts): the FFN's neurons are split into this many experts"));
    m_trainTopK = spin("trainTopK", 0, 256, defaults.trainTopK,
                       tr("Experts per token while distilling (--train-top-k); auto: the most that fit in 75% of "
                          "the FFN's parameters, router included"));
    m_trainTopK->setSpecialValueText(tr("auto"));
    m_e2eSteps = spin("e2eSteps", 0, 100000, defaults.e2eSteps,
                      tr("End-to-end stage after the layers (--e2e-steps): steps that train every layer's experts "
                         "together on the KL between dense and converted next-token distributions; 0: none"));
    m_sharedNeurons = spin("sharedNeurons", 0, 1000000, static_cast<int>(defaults.sharedNeurons),
                           tr("Always-on neurons per layer (--shared-neurons): a shared expert every token runs, "
                              "the neurons that contribute most on the calibration tokens; the rest form the "
                              "experts. 0: none"));
    m_epochs
        = spin("epochs", 1, 1000, defaults.epochs, tr("Distillation epochs over the calibration tokens (--epochs)"));
    m_partition = combo("partition", {"coact", "contiguous", "weights"},
                        tr("How neurons are split into experts (--partition): balanced k-means on co-activation, "
                           "contiguous blocks, or k-means on weights"));
    m_gating
        = combo("gating", {"hard", "renorm", "plain"},
                tr("Gating (--gating): hard (chosen experts at weight 1), renorm (Mixtral) or plain softmax weights"));
    m_device = combo("device", {"auto", "cpu", "cuda"}, tr("Device (--device): auto picks CUDA when present"));
    m_projectFile = new QLineEdit;
    m_projectFile->setObjectName("projectFile");
    m_projectFile->setPlaceholderText(tr("asked for on Start"));
    m_projectFile->setToolTip(
        tr("The project (*.ladimo) the conversion writes; a rerun with the same settings resumes"));

    int row = 0;
    auto add = [&](int col, const QString& label, QWidget* w) {
        auto* l = new QLabel(label);
        l->setBuddy(w);
        grid->addWidget(l, row, col * 2);
        grid->addWidget(w, row, col * 2 + 1);
    };
    add(0, tr("&Experts:"), m_experts);
    add(1, tr("Train &top-k:"), m_trainTopK);
    add(2, tr("E&pochs:"), m_epochs);
    add(3, tr("Pa&rtition:"), m_partition);
    ++row;
    add(0, tr("&Gating:"), m_gating);
    add(1, tr("De&vice:"), m_device);
    add(2, tr("En&d-to-end steps:"), m_e2eSteps);
    add(3, tr("S&hared neurons:"), m_sharedNeurons);
    ++row;
    m_calibrationSummary = new QLabel;
    m_calibrationSummary->setObjectName("calibrationSummary");
    m_calibrationSummary->setToolTip(tr("The calibration data of the conversion and the profile: choose it in the "
                                        "Calibration view"));
    grid->addWidget(m_calibrationSummary, row, 0, 1, 8);
    ++row;
    add(0, tr("Pro&ject:"), m_projectFile);
    grid->removeWidget(m_projectFile);
    grid->addWidget(m_projectFile, row, 1, 1, 7);
    ++row;

    m_startButton = new QPushButton(tr("&Start"));
    m_startButton->setObjectName("startConversion");
    m_startButton->setToolTip(
        tr("Convert every layer (ladimo convert); a run with the same settings resumes where it stopped"));
    m_profileButton = new QPushButton(tr("P&rofile"));
    m_profileButton->setObjectName("startProfile");
    m_profileButton->setToolTip(
        tr("Profile the routers of the latest finished run on held-out calibration data (ladimo profile); "
           "fills the Routing and Policy views"));
    m_cancelButton = new QPushButton(tr("&Cancel"));
    m_cancelButton->setObjectName("cancelJob");
    m_cancelButton->setToolTip(tr("Stop after the current batch; finished layers are kept and Start resumes"));
    connect(m_startButton, &QPushButton::clicked, this, [this] { startConversion(); });
    connect(m_profileButton, &QPushButton::clicked, this, [this] { startProfile(); });
    connect(m_cancelButton, &QPushButton::clicked, this, &MainWindow::cancelJob);
    m_stageProgress = new QProgressBar;
    m_stageProgress->setObjectName("stageProgress");
    m_stageProgress->setToolTip(tr("The current step: sampling, capture, or the layer being distilled"));
    m_stageProgress->setFormat(tr("step %p%"));
    m_stageProgress->setValue(0);
    m_overallProgress = new QProgressBar;
    m_overallProgress->setObjectName("overallProgress");
    m_overallProgress->setToolTip(tr("Layers converted of all layers"));
    m_overallProgress->setFormat(tr("overall %p%"));
    m_overallProgress->setValue(0);
    m_jobStatus = new QLabel;
    m_jobStatus->setObjectName("jobStatus");
    auto* actions = new QHBoxLayout;
    actions->addWidget(m_startButton);
    actions->addWidget(m_profileButton);
    actions->addWidget(m_cancelButton);
    actions->addWidget(m_stageProgress, 1);
    actions->addWidget(m_overallProgress, 1);
    grid->addLayout(actions, row, 0, 1, 8);
    ++row;
    grid->addWidget(m_jobStatus, row, 0, 1, 8);
    return box;
}

DataChoice MainWindow::dataChoice() const { return m_calibration->dataChoice(); }

QString MainWindow::missingCalibration() const
{
    return m_calibration->needsFile()
        ? tr("Calibration: choose a calibration file (.txt, .u16, .u32 or .jsonl), or Self-sample.")
        : QString();
}

ConvertRequest MainWindow::convertRequest(const QString& project) const
{
    ConvertRequest r;
    r.modelPath = m_current.modelPath;
    r.projectFile = project;
    r.experts = m_experts->value();
    r.trainTopK = m_trainTopK->value();
    r.epochs = m_epochs->value();
    r.e2eSteps = m_e2eSteps->value();
    r.sharedNeurons = m_sharedNeurons->value();
    r.partition = m_partition->currentText();
    r.gating = m_gating->currentText();
    r.device = m_device->currentText();
    r.data = dataChoice();
    r.calibrationJson = m_calibration->settingJson();
    return r;
}

void MainWindow::onCalibrationChanged()
{
    m_calibrationSummary->setText(
        tr("Calibration data: %1 (set in the Calibration view)").arg(m_calibration->summary()));
    const QString json = m_calibration->settingJson();
    m_current.calibrationJson = json;
    m_current.facts.calibration = nlohmann::json::parse(json.toStdString());
    // Stored as it happens. A project only: a model folder's setting goes into the project the
    // conversion creates. A tiny write; the controls are disabled while a job of ours writes.
    if (m_current.isProject && !m_job->isRunning()) {
        try {
            m_session->storeSetting(core::kCalibrationSetting, *m_current.facts.calibration);
        } catch (const std::exception& e) {
            statusBar()->showMessage(tr("Calibration settings not saved: %1").arg(QString::fromStdString(e.what())));
        }
    }
    refreshStepStates();
}

namespace {
// A small round badge per state, drawn once: grey ring (not run), blue (running), green (done),
// orange (stale).
QIcon stepIcon(core::StepState state)
{
    static QIcon icons[4];
    QIcon& icon = icons[static_cast<int>(state)];
    if (!icon.isNull())
        return icon;
    for (int size : {16, 32}) {
        QPixmap pm(size, size);
        pm.fill(Qt::transparent);
        QPainter p(&pm);
        p.setRenderHint(QPainter::Antialiasing);
        const qreal m = size * 0.15;
        const QRectF r(m, m, size - 2 * m, size - 2 * m);
        switch (state) {
        case core::StepState::NotRun:
            p.setPen(QPen(QColor(150, 150, 150), size * 0.1));
            p.setBrush(Qt::NoBrush);
            break;
        case core::StepState::Running:
            p.setPen(Qt::NoPen);
            p.setBrush(QColor(40, 110, 220));
            break;
        case core::StepState::Done:
            p.setPen(Qt::NoPen);
            p.setBrush(QColor(40, 160, 70));
            break;
        case core::StepState::Stale:
            p.setPen(Qt::NoPen);
            p.setBrush(QColor(235, 140, 20));
            break;
        }
        p.drawEllipse(r);
        icon.addPixmap(pm);
    }
    return icon;
}
} // namespace

void MainWindow::refreshStepStates()
{
    core::PipelineFacts f = m_current.facts;
    if (m_jobKind == "convert")
        f.running = core::PipelineStep::Convert;
    else if (m_jobKind == "profile")
        f.running = core::PipelineStep::Profile;
    else if (m_runningStep)
        f.running = m_runningStep;
    m_steps = core::pipelineStates(f);
    for (int i = 0; i < core::kPipelineSteps; ++i) {
        const int tab = m_tabs->indexOf(m_stepPages[i]);
        if (tab < 0)
            continue;
        const auto& st = m_steps[static_cast<std::size_t>(i)];
        const QString state = QString::fromLatin1(core::stepStateName(st.state));
        m_tabs->setTabIcon(tab, stepIcon(st.state));
        m_tabs->tabBar()->setTabData(tab, state);
        QString tip = m_stepBaseTips[i] + "\n" + tr("State: %1").arg(state);
        if (!st.produced.empty())
            tip += "\n" + tr("Produced: %1").arg(QString::fromStdString(st.produced));
        if (!st.why.empty() && st.state != core::StepState::Done)
            tip += "\n"
                + (st.state == core::StepState::Stale ? tr("Stale: %1") : tr("Why: %1"))
                      .arg(QString::fromStdString(st.why));
        m_tabs->setTabToolTip(tab, tip);
    }
    Q_EMIT stepStatesChanged();
}

core::StepState MainWindow::stepState(core::PipelineStep step) const
{
    return m_steps[static_cast<std::size_t>(step)].state;
}

QString MainWindow::stepToolTip(core::PipelineStep step) const
{
    const int tab = m_tabs->indexOf(m_stepPages[static_cast<int>(step)]);
    return tab < 0 ? QString() : m_tabs->tabToolTip(tab);
}

void MainWindow::setJobRunning(const QString& kind)
{
    m_jobKind = kind;
    const bool running = !kind.isEmpty();
    if (running)
        m_stageClock.reset(); // a new job reuses the stage names
    const bool open = !m_current.path.isEmpty();
    m_startButton->setEnabled(!running && open);
    m_profileButton->setEnabled(!running && m_current.isProject && m_current.run.has_value());
    m_cancelButton->setEnabled(running);
    for (QWidget* w : std::initializer_list<QWidget*>{m_experts, m_trainTopK, m_e2eSteps, m_sharedNeurons, m_epochs,
                                                      m_partition, m_gating, m_device, m_projectFile})
        w->setEnabled(!running);
    m_calibration->setEditable(!running);
    m_pipeline->setState(open, running, kind == "pipeline");
    m_session->setWatching(!running); // our own job writes; its end reloads
}

bool MainWindow::startConversion()
{
    if (m_job->isRunning() || m_current.path.isEmpty())
        return false;
    QString project = m_current.isProject ? m_current.path : m_projectFile->text().trimmed();
    if (project.isEmpty()) {
        project = QFileDialog::getSaveFileName(this, tr("Create project"),
                                               QDir::home().filePath(QDir(m_current.modelPath).dirName() + ".ladimo"),
                                               tr("LaDiMo projects (*.ladimo)"));
        if (project.isEmpty())
            return false;
    }
    if (!project.endsWith(".ladimo"))
        project += ".ladimo";
    m_projectFile->setText(project);
    if (const QString missing = missingCalibration(); !missing.isEmpty()) {
        m_jobStatus->setText(missing);
        Q_EMIT conversionFinished(false, missing);
        return false;
    }
    if (!m_job->startConversion(convertRequest(project)))
        return false;
    m_jobProject = project;
    m_jobStartMs = QDateTime::currentMSecsSinceEpoch();
    m_stageProgress->setValue(0);
    m_overallProgress->setValue(0);
    m_jobStatus->setText(tr("Loading the model and the calibration data ..."));
    setJobRunning("convert");
    refreshStepStates();
    return true;
}

bool MainWindow::startProfile()
{
    if (m_job->isRunning() || !m_current.isProject)
        return false;
    ProfileRequest r;
    r.projectFile = m_current.path;
    r.data = dataChoice();
    if (r.data.selfSample > 0)
        r.data.seed += 1; // held-out: not the tokens the conversion was trained on
    r.sensitivityTokens = std::min<int64_t>(8192, r.data.selfSample > 0 ? r.data.selfSample : r.data.maxTokens);
    if (!m_job->startProfile(r))
        return false;
    m_jobProject = r.projectFile;
    m_jobStartMs = QDateTime::currentMSecsSinceEpoch();
    m_stageProgress->setValue(0);
    m_jobStatus->setText(tr("Profiling the routers of the latest run ..."));
    setJobRunning("profile");
    refreshStepStates();
    return true;
}

bool MainWindow::startPipeline()
{
    if (m_job->isRunning() || m_current.path.isEmpty())
        return false;
    QString out = m_pipeline->outDir();
    if (out.isEmpty()) {
        out = QFileDialog::getExistingDirectory(this, tr("Output folder for the pipeline"), QDir::homePath());
        if (out.isEmpty())
            return false;
        m_pipeline->setOutDir(out);
    }
    if (const QString missing = missingCalibration(); !missing.isEmpty()) {
        m_pipeline->showFinished(false, missing, 0);
        Q_EMIT pipelineFinished(false, missing);
        return false;
    }
    PipelineRequest r;
    r.convert = convertRequest(m_current.isProject ? m_current.path : QString());
    r.outDir = out;
    r.budgetParams = m_pipeline->budget();
    if (!m_job->startPipeline(r))
        return false;
    m_jobProject = r.convert.projectFile.isEmpty() ? QDir(out).filePath("project.ladimo") : r.convert.projectFile;
    m_jobStartMs = QDateTime::currentMSecsSinceEpoch();
    m_pipeline->showReport({});
    setJobRunning("pipeline");
    refreshStepStates();
    return true;
}

void MainWindow::cancelJob()
{
    if (!m_job->isRunning())
        return;
    m_job->cancel();
    m_jobStatus->setText(tr("Cancelling after the current batch ..."));
}

void MainWindow::onRunStarted(const core::RunSnapshot& snapshot, bool resumed)
{
    m_conversion->setSnapshot(snapshot);
    const int done = m_conversion->doneCount();
    m_overallProgress->setRange(0, static_cast<int>(snapshot.layers.size()) * 100);
    m_overallProgress->setValue(done * 100);
    m_runSummary->setText(
        resumed ? tr("Resuming run #%1: %2 of %3 layers already done.")
                      .arg(snapshot.run.id)
                      .arg(done)
                      .arg(snapshot.layers.size())
                : tr("Run #%1 started: %2 layers to convert.").arg(snapshot.run.id).arg(snapshot.layers.size()));
}

void MainWindow::onLayerStarted(int layer)
{
    m_conversion->setLayerStatus(layer, core::LayerStatus::Running);
    m_conversion->clearLossCurve(layer); // a restarted layer's curve begins again
}

void MainWindow::onLossPoints(int layer, const QVector<double>& steps, const QVector<double>& losses)
{
    core::LossCurve points;
    points.reserve(static_cast<std::size_t>(steps.size()));
    for (int i = 0; i < steps.size() && i < losses.size(); ++i)
        points.push_back({static_cast<int64_t>(steps[i]), losses[i]});
    m_conversion->appendLossPoints(layer, points);
    // The plot follows the layer in training, as it follows each finished layer; the job batches
    // points (at most 10 updates a second), so redrawing here keeps the event loop free.
    if (m_conversionView->currentIndex().row() != layer)
        selectConversionLayer(layer);
    else
        showLossCurve(layer);
    Q_EMIT lossPointsShown(layer, m_lossPlot->seriesCount() > 0 ? m_lossPlot->pointCount(0) : 0);
}

void MainWindow::onLayerFinished(int layer, double finalLoss, double relativeError, double seconds,
                                 const QVector<double>& steps, const QVector<double>& losses)
{
    core::LayerResult r;
    r.layer = layer;
    r.status = core::LayerStatus::Done;
    r.finalLoss = finalLoss;
    r.relativeError = relativeError;
    r.wallSeconds = seconds;
    core::LossCurve curve;
    for (int i = 0; i < steps.size() && i < losses.size(); ++i)
        curve.push_back({static_cast<int64_t>(steps[i]), losses[i]});
    m_conversion->setLayerResult(layer, r, curve);
    m_overallProgress->setValue(m_conversion->doneCount() * 100);
    selectConversionLayer(layer); // the newest curve in view
}

void MainWindow::onJobProgressed(const QString& stage, double done, double total)
{
    if (m_jobKind == "pipeline")
        m_pipeline->showProgress(stage, done, total);
    m_stageProgress->setRange(0, 1000);
    m_stageProgress->setValue(total > 0 ? static_cast<int>(1000.0 * done / total) : 0);
    // Time left: for a conversion's layers, of all of them (the stage "layers"); else of the
    // stage, at its own pace (the model load, sampling or capture before it not charged).
    double left = -1;
    if (m_jobKind == "convert" && stage.startsWith("layer ") && m_conversion->rowCount() > 0) {
        const int layers = m_conversion->rowCount();
        const double layersDone = m_conversion->doneCount() + (total > 0 ? done / total : 0.0);
        m_overallProgress->setValue(static_cast<int>(layersDone * 100));
        left = m_stageClock.secondsLeft("layers", layersDone, layers);
    } else {
        left = m_stageClock.secondsLeft(stage.toStdString(), done, total);
    }
    const QString eta = left >= 0 ? tr(", about %1 s left").arg(left, 0, 'f', 0) : QString();
    m_jobStatus->setText(tr("%1: %2 of %3%4").arg(stage).arg(done, 0, 'f', 0).arg(total, 0, 'f', 0).arg(eta));
}

void MainWindow::onJobFinished(bool cancelled, const QString& error)
{
    const QString kind = m_jobKind;
    setJobRunning({});
    refreshStepStates();
    const double secs = (QDateTime::currentMSecsSinceEpoch() - m_jobStartMs) / 1000.0;
    if (kind == "pipeline") {
        m_pipeline->showFinished(cancelled, error, secs);
        m_jobStatus->setText(m_pipeline->statusText());
        if (!error.isEmpty() && !property("quiet").toBool())
            QMessageBox::critical(this, tr("Pipeline failed"), error);
        Q_EMIT pipelineFinished(cancelled, error);
        if (!m_jobProject.isEmpty() && QFileInfo::exists(m_jobProject))
            openPath(m_jobProject);
        return;
    }
    if (!error.isEmpty()) {
        m_jobStatus->setText(tr("%1 failed: %2").arg(kind, error));
        if (!property("quiet").toBool())
            QMessageBox::critical(this, kind == "profile" ? tr("Profile failed") : tr("Conversion failed"), error);
    } else if (cancelled) {
        m_jobStatus->setText(kind == "profile" ? tr("Profile cancelled; nothing was stored.")
                                               : tr("Cancelled: finished layers are kept; Start resumes the run."));
    } else {
        m_stageProgress->setValue(m_stageProgress->maximum());
        m_jobStatus->setText(kind == "profile" ? tr("Profiled in %1 s.").arg(secs, 0, 'f', 1)
                                               : tr("Converted in %1 s.").arg(secs, 0, 'f', 1));
    }
    if (kind == "profile")
        Q_EMIT profileFinished(cancelled, error);
    else
        Q_EMIT conversionFinished(cancelled, error);
    // Reopen the project so every view shows what the job stored (a read, off the GUI thread).
    if (!m_jobProject.isEmpty() && QFileInfo::exists(m_jobProject))
        openPath(m_jobProject);
}

QString MainWindow::summaryText() const { return m_summary->text(); }

bool MainWindow::selectView(const QString& name)
{
    for (int i = 0; i < m_tabs->count(); ++i)
        if (m_tabs->tabText(i).compare(name, Qt::CaseInsensitive) == 0) {
            m_tabs->setCurrentIndex(i);
            return true;
        }
    return false;
}

void MainWindow::rememberRecent(const QString& path)
{
    QSettings settings;
    QStringList recent = settings.value("recent").toStringList();
    recent.removeAll(path);
    recent.prepend(path);
    while (recent.size() > 8)
        recent.removeLast();
    settings.setValue("recent", recent);
    rebuildRecentMenu();
}

void MainWindow::rebuildRecentMenu()
{
    m_recentMenu->clear();
    const QStringList recent = QSettings().value("recent").toStringList();
    for (const QString& path : recent)
        m_recentMenu->addAction(path, this, [this, path] { openPath(path); });
    m_recentMenu->setEnabled(!recent.isEmpty());
}

void MainWindow::dragEnterEvent(QDragEnterEvent* event)
{
    if (event->mimeData()->hasUrls())
        event->acceptProposedAction();
}

void MainWindow::dropEvent(QDropEvent* event)
{
    const auto urls = event->mimeData()->urls();
    if (!urls.isEmpty() && urls.front().isLocalFile())
        openPath(urls.front().toLocalFile());
}

void MainWindow::closeEvent(QCloseEvent* event)
{
    QSettings settings;
    settings.setValue("window/geometry", saveGeometry());
    settings.setValue("window/state", saveState());
    QMainWindow::closeEvent(event);
}

} // namespace ladimo::gui
