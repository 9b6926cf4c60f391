#include "mainwindow.h"

#include <QAction>
#include <QComboBox>
#include <QHBoxLayout>
#include <QSignalBlocker>
#include <QApplication>
#include <QCloseEvent>
#include <QDir>
#include <QDragEnterEvent>
#include <QFileDialog>
#include <QHeaderView>
#include <QLabel>
#include <QLocale>
#include <QMenuBar>
#include <QMessageBox>
#include <QMimeData>
#include <QSettings>
#include <QSplitter>
#include <QStatusBar>
#include <QTabWidget>
#include <QTableView>
#include <QToolBar>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <cmath>
#include <set>

#include "common/error.h"
#include "conversiontablemodel.h"
#include "layertablemodel.h"
#include "model/tokenizer.h"
#include "widgets/barplot.h"
#include "widgets/lineplot.h"

namespace ladimo::gui {

namespace {

OpenedModel openModel(const QString& path)
{
    OpenedModel m;
    m.path = path;
    m.modelPath = path;
    try {
        std::filesystem::path dir = path.toStdString();
        if (path.endsWith(".ladimo")) {
            // Read-only: the GUI is a reader; a converter may be writing at the same time.
            auto p = core::Project::open(dir, {core::Project::Access::ReadOnly, core::Project::Verify::Exists});
            m.isProject = true;
            const auto runId = p.latestRunId();
            const auto models = p.models();
            if (runId) {
                m.run = p.snapshot(*runId);
                m.profiles = p.routingProfiles(*runId);
                if (!m.profiles.empty())
                    m.policy = loadPolicyData(path);
                dir = p.model(m.run->run.modelId).path;
            } else if (!models.empty()) {
                dir = models.front().path;
            } else {
                throw core::Error(path.toStdString() + ": the project has no model yet");
            }
            m.modelPath = QString::fromStdString(dir.string());
        }
        m.config = core::ModelConfig::load(dir / "config.json");
        if (auto tok = core::Tokenizer::loadForModel(dir))
            m.tokenizer = QString::fromStdString(tok->kind());
    } catch (const std::exception& e) {
        m.error = QString::fromStdString(e.what());
    }
    return m;
}

QString count(qint64 n) { return QLocale().toString(n); }

} // namespace

MainWindow::MainWindow(QWidget* parent) : QMainWindow(parent)
{
    buildUi();
    connect(&m_openWatcher, &QFutureWatcher<OpenedModel>::finished, this, &MainWindow::onOpenFinished);
    QSettings settings;
    restoreGeometry(settings.value("window/geometry").toByteArray());
    restoreState(settings.value("window/state").toByteArray());
    setAcceptDrops(true);
}

MainWindow::~MainWindow()
{
    m_openWatcher.disconnect();
    m_openWatcher.waitForFinished();
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
    m_tabs->addTab(modelPage, tr("Model"));

    auto* convertPage = new QWidget;
    auto* convertLayout = new QVBoxLayout(convertPage);
    m_runSummary = new QLabel(tr("No conversion yet. Convert with: ladimo convert MODEL --data FILE --project P.ladimo, then open P.ladimo."));
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
    m_conversionView->setToolTip(tr("Per-layer results of the latest conversion run: select a layer to see its loss curve"));
    convertSplit->addWidget(m_conversionView);
    m_lossPlot = new widgets::LinePlot;
    m_lossPlot->setAxisLabels(tr("distillation step"), tr("normalised MSE"));
    m_lossPlot->setLogY(true);
    m_lossPlot->setToolTip(tr("Layer-wise distillation loss: MSE of the MoE block against the dense FFN, divided by the FFN output energy"));
    convertSplit->addWidget(m_lossPlot);
    convertSplit->setSizes({500, 500});
    convertLayout->addWidget(convertSplit, 1);
    connect(m_conversionView->selectionModel(), &QItemSelectionModel::currentRowChanged, this,
            [this](const QModelIndex& current) { showLossCurve(current.row()); });
    m_tabs->addTab(convertPage, tr("Convert"));

    auto* routingPage = new QWidget;
    auto* routingLayout = new QVBoxLayout(routingPage);
    auto* routingTop = new QHBoxLayout;
    m_routingSummary = new QLabel(tr("No routing profile yet: run ladimo profile P.ladimo --data FILE."));
    m_routingSummary->setWordWrap(true);
    m_routingLayer = new QComboBox;
    m_routingLayer->setToolTip(tr("Layer whose routing profile is shown"));
    routingTop->addWidget(new QLabel(tr("Layer:")));
    routingTop->addWidget(m_routingLayer);
    routingTop->addWidget(m_routingSummary, 1);
    routingLayout->addLayout(routingTop);
    auto* routingGrid = new QSplitter(Qt::Horizontal);
    m_rankPlot = new widgets::LinePlot;
    m_rankPlot->setAxisLabels(tr("routing weight"), tr("tokens"));
    m_rankPlot->setToolTip(tr("Histogram of the routing weight of the 1st, 2nd, ... ranked expert of each token: "
                              "a tall top-1 curve near 1 means one expert dominates and few experts are needed"));
    routingGrid->addWidget(m_rankPlot);
    auto* rightSplit = new QSplitter(Qt::Vertical);
    m_massPlot = new widgets::LinePlot;
    m_massPlot->setAxisLabels(tr("experts per token (k)"), tr("value"));
    m_massPlot->setToolTip(tr("Mean cumulative routing mass of the top-k experts, and the MoE block's relative error at each k"));
    rightSplit->addWidget(m_massPlot);
    m_loadPlot = new widgets::BarPlot;
    m_loadPlot->setAxisLabels(tr("expert"), tr("share of tokens (top-1)"));
    m_loadPlot->setToolTip(tr("Fraction of tokens whose top-1 expert is each expert"));
    rightSplit->addWidget(m_loadPlot);
    routingGrid->addWidget(rightSplit);
    routingGrid->setSizes({550, 450});
    routingLayout->addWidget(routingGrid, 1);
    connect(m_routingLayer, qOverload<int>(&QComboBox::currentIndexChanged), this, [this](int i) { selectRoutingLayer(i); });
    m_tabs->addTab(routingPage, tr("Routing"));
    m_policyView = new PolicyView;
    m_tabs->addTab(m_policyView, tr("Policy"));
    m_tabs->setTabToolTip(m_tabs->count() - 1, tr("Per-layer routing rules with instant estimates and the tradeoff plot"));
    setCentralWidget(m_tabs);
    statusBar()->showMessage(tr("Ready"));
    rebuildRecentMenu();
}

void MainWindow::openPath(const QString& path)
{
    if (m_openWatcher.isRunning())
        return;
    statusBar()->showMessage(tr("Opening %1 ...").arg(path));
    m_openWatcher.setFuture(QtConcurrent::run(openModel, path));
}

void MainWindow::onOpenTriggered()
{
    // A project is a file, a model is a folder: offer the project file first, folders on cancel.
    const QString file = QFileDialog::getOpenFileName(this, tr("Open project"), m_current.path,
                                                      tr("LaDiMo projects (*.ladimo)"));
    if (!file.isEmpty()) {
        openPath(file);
        return;
    }
    const QString dir = QFileDialog::getExistingDirectory(this, tr("Open model folder"), m_current.path);
    if (!dir.isEmpty())
        openPath(dir);
}

void MainWindow::onOpenFinished()
{
    const OpenedModel m = m_openWatcher.result();
    if (!m.error.isEmpty()) {
        statusBar()->showMessage(tr("Could not open %1").arg(m.path));
        emit openFailed(m.error);
        if (!property("quiet").toBool())
            QMessageBox::critical(this, tr("Could not open model"), m.error);
        return;
    }
    showModel(m);
    rememberRecent(m.path);
    emit modelOpened(m.path);
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
    showRun(m);
    showProfiles(m);
    if (m.isProject && !m.profiles.empty())
        m_policyView->setData(m.policy);
    else
        m_policyView->clear(m.isProject ? tr("No routing profile yet: run ladimo profile P.ladimo --data FILE.")
                                        : tr("Open a project (*.ladimo) with a conversion run and a routing profile."));
    m_breakdown->setBars({tr("attention"), tr("FFN"), tr("embeddings"), tr("norms")},
                         {double(p.attention), double(p.ffn), double(p.embeddings), double(p.norms)});
    setWindowTitle(tr("%1 - LaDiMo Workbench").arg(QDir(m.path).dirName()));
    statusBar()->showMessage(tr("Opened %1").arg(m.path));
}

void MainWindow::showRun(const OpenedModel& m)
{
    if (!m.run) {
        m_conversion->clear();
        m_lossPlot->clear();
        m_runSummary->setText(m.isProject ? tr("This project has no conversion run yet.")
                                          : tr("No conversion yet. Convert with: ladimo convert MODEL --data FILE --project P.ladimo, then open P.ladimo."));
        return;
    }
    const auto& r = m.run->run;
    int done = 0;
    for (const auto& l : m.run->layers)
        done += l.status == core::LayerStatus::Done;
    m_runSummary->setText(tr("Run #%1 (%2): %3 experts, %4 partition, %5 gating, trained at top-%6, %7 epochs, lr %8, batch %9, "
                             "%10 mode on %11, seed %12. %13 of %14 layers done.")
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
                              .arg(m.run->layers.size()));
    m_conversion->setSnapshot(*m.run);
    selectConversionLayer(0);
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
    // Batches draw k at random, so single-batch losses jump; a moving average shows the trend.
    const int window = std::max(1, static_cast<int>(y.size()) / 40);
    QVector<double> avg(y.size());
    double sum = 0;
    for (int i = 0; i < y.size(); ++i) {
        sum += y[i] - (i >= window ? y[i - window] : 0.0);
        avg[i] = sum / std::min(i + 1, window);
    }
    m_lossPlot->addSeries(tr("moving average (%1 steps)").arg(window), x, avg);
}

void MainWindow::showProfiles(const OpenedModel& m)
{
    const QSignalBlocker block(m_routingLayer);
    m_routingLayer->clear();
    for (const auto& p : m.profiles)
        m_routingLayer->addItem(tr("layer %1").arg(p.layer), p.layer);
    m_routingLayer->setEnabled(!m.profiles.empty());
    if (m.profiles.empty()) {
        m_rankPlot->clear();
        m_massPlot->clear();
        m_loadPlot->setBars({}, {});
        m_routingSummary->setText(tr("No routing profile yet: run ladimo profile P.ladimo --data FILE."));
        return;
    }
    selectRoutingLayer(0);
}

bool MainWindow::selectRoutingLayer(int index)
{
    const auto& profiles = m_current.profiles;
    if (index < 0 || index >= static_cast<int>(profiles.size()))
        return false;
    if (m_routingLayer->currentIndex() != index) {
        const QSignalBlocker block(m_routingLayer);
        m_routingLayer->setCurrentIndex(index);
    }
    const auto& p = profiles[static_cast<std::size_t>(index)];
    QVector<double> centers;
    for (std::size_t b = 0; b + 1 < p.binEdges.size(); ++b)
        centers << 0.5 * (p.binEdges[b] + p.binEdges[b + 1]);
    m_rankPlot->clear();
    const std::size_t N = p.rankHistograms.size();
    // Ranks 1, 2, the middle one and the last: enough to see how peaked the routing is.
    for (std::size_t r : std::set<std::size_t>{0, std::min<std::size_t>(1, N - 1), N / 2, N - 1}) {
        m_rankPlot->addSeries(tr("rank %1").arg(r + 1), centers,
                              QVector<double>(p.rankHistograms[r].begin(), p.rankHistograms[r].end()));
    }
    m_massPlot->clear();
    QVector<double> ks, mass, err;
    const auto cumulative = p.extra.value("cumulative_mass", nlohmann::json::array());
    for (std::size_t k = 0; k < p.errorByK.size(); ++k) {
        ks << static_cast<double>(k + 1);
        err << p.errorByK[k];
        mass << (k < cumulative.size() ? cumulative[k].get<double>() : 0.0);
    }
    m_massPlot->addSeries(tr("cumulative routing mass"), ks, mass);
    m_massPlot->addSeries(tr("relative error"), ks, err);
    QStringList labels;
    for (std::size_t e = 0; e < p.expertLoad.size(); ++e)
        labels << QString::number(e);
    m_loadPlot->setBars(labels, QVector<double>(p.expertLoad.begin(), p.expertLoad.end()));
    m_routingSummary->setText(tr("%1 tokens; routing entropy %2 nats (uniform: %3); mean top-1 weight %4")
                                  .arg(p.tokens)
                                  .arg(p.entropy, 0, 'f', 3)
                                  .arg(std::log(static_cast<double>(std::max<std::size_t>(N, 1))), 0, 'f', 3)
                                  .arg(cumulative.empty() ? 0.0 : cumulative[0].get<double>(), 0, 'f', 3));
    return true;
}

QString MainWindow::summaryText() const { return m_summary->text(); }

bool MainWindow::selectView(const QString& name)
{
    if (name.compare("tradeoff", Qt::CaseInsensitive) == 0)
        return selectView("policy");
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
