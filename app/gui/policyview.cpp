#include "policyview.h"

#include <QAction>
#include <QComboBox>
#include <QDialog>
#include <QDialogButtonBox>
#include <QDoubleSpinBox>
#include <QFormLayout>
#include <QGroupBox>
#include <QHBoxLayout>
#include <QHeaderView>
#include <QInputDialog>
#include <QLabel>
#include <QLineEdit>
#include <QMessageBox>
#include <QProgressBar>
#include <QPushButton>
#include <QSignalBlocker>
#include <QSlider>
#include <QSpinBox>
#include <QSplitter>
#include <QStandardItemModel>
#include <QStyledItemDelegate>
#include <QTableView>
#include <QToolButton>
#include <QUndoStack>
#include <QVBoxLayout>
#include <QtConcurrent/QtConcurrentRun>

#include <algorithm>
#include <initializer_list>
#include <cmath>

#include "common/error.h"
#include "model/device.h"
#include "policytablemodel.h"
#include "projectsession.h"
#include "viewparts.h"
#include "widgets/tradeoffplot.h"
#include "workbenchjob.h"

namespace ladimo::gui {

namespace {

constexpr int kThresholdSteps = 100; // top-p slider: p = value / 100

// The slider of one row: top-k 1..N, or top-p in hundredths. Writes to the model directly
// (persistent editor), marking drags so they merge into one undo step.
class SliderDelegate : public QStyledItemDelegate {
public:
    using QStyledItemDelegate::QStyledItemDelegate;
    QWidget* createEditor(QWidget* parent, const QStyleOptionViewItem&, const QModelIndex& index) const override
    {
        auto* slider = new QSlider(Qt::Horizontal, parent);
        slider->setFocusPolicy(Qt::StrongFocus);
        slider->setAutoFillBackground(true);
        slider->setTickPosition(QSlider::TicksBelow);
        const QPersistentModelIndex at(index);
        auto* model = const_cast<QAbstractItemModel*>(index.model());
        QObject::connect(slider, &QSlider::valueChanged, slider, [slider, at, model](int v) {
            if (!at.isValid())
                return;
            const bool isStatic = at.data(PolicyTableModel::KindRole).toInt() == PolicyTableModel::StaticKind;
            model->setData(at, isStatic ? QVariant(v) : QVariant(static_cast<double>(v) / kThresholdSteps),
                           slider->isSliderDown() ? int(PolicyTableModel::DragEditRole) : int(Qt::EditRole));
        });
        return slider;
    }
    void setEditorData(QWidget* editor, const QModelIndex& index) const override
    {
        auto* slider = static_cast<QSlider*>(editor);
        const QSignalBlocker block(slider);
        const bool isStatic = index.data(PolicyTableModel::KindRole).toInt() == PolicyTableModel::StaticKind;
        const int n = std::max(1, index.data(PolicyTableModel::ExpertsRole).toInt());
        if (isStatic) {
            slider->setRange(1, n);
            slider->setPageStep(1);
            slider->setTickInterval(1);
            slider->setValue(index.data(Qt::EditRole).toInt());
        } else {
            slider->setRange(1, kThresholdSteps);
            slider->setPageStep(5);
            slider->setTickInterval(10);
            slider->setValue(static_cast<int>(std::lround(index.data(Qt::EditRole).toDouble() * kThresholdSteps)));
        }
        slider->setToolTip(index.data(Qt::ToolTipRole).toString()
                           + QObject::tr(" (now %1)").arg(index.data().toString()));
        slider->setAccessibleName(QObject::tr("Layer %1 setting").arg(index.row()));
    }
    void setModelData(QWidget*, QAbstractItemModel*, const QModelIndex&) const override { }
};

// The rule kind of one row: top-k or top-p.
class KindDelegate : public QStyledItemDelegate {
public:
    using QStyledItemDelegate::QStyledItemDelegate;
    QWidget* createEditor(QWidget* parent, const QStyleOptionViewItem&, const QModelIndex& index) const override
    {
        auto* combo = new QComboBox(parent);
        combo->addItem(QObject::tr("top-k"));
        combo->addItem(QObject::tr("top-p"));
        combo->setToolTip(index.data(Qt::ToolTipRole).toString());
        combo->setAccessibleName(QObject::tr("Layer %1 rule kind").arg(index.row()));
        const QPersistentModelIndex at(index);
        auto* model = const_cast<QAbstractItemModel*>(index.model());
        QObject::connect(combo, qOverload<int>(&QComboBox::activated), combo, [at, model](int i) {
            if (at.isValid())
                model->setData(at, i, Qt::EditRole);
        });
        return combo;
    }
    void setEditorData(QWidget* editor, const QModelIndex& index) const override
    {
        auto* combo = static_cast<QComboBox*>(editor);
        const QSignalBlocker block(combo);
        combo->setCurrentIndex(index.data(PolicyTableModel::KindRole).toInt());
    }
    void setModelData(QWidget*, QAbstractItemModel*, const QModelIndex&) const override { }
};

QString percent(double fraction) { return QString::number(100.0 * fraction, 'f', 2) + QStringLiteral(" %"); }

// Self-sampled refinement data uses its own seed: not the calibration tokens (1234 by default)
// nor the Evaluate view's (99), so the policy is neither chosen on what trained the experts nor
// on what later judges it.
constexpr uint64_t kRefineSeed = 7;

// "Refine by measurement...": the held-out data and the measurement limit, as the CLI's
// --refine-data / --refine-self-sample, --refine-tokens and --refine-evals.
class RefineDialog : public QDialog {
public:
    RefineDialog(QWidget* parent, const QString& file, qint64 selfSample, qint64 tokens, int evals) : QDialog(parent)
    {
        setWindowTitle(tr("Refine by measurement"));
        auto* form = new QFormLayout(this);
        auto* intro = new QLabel(tr("Measures the held-out NLL of the current policy, the uniform top-k and their "
                                    "neighbours within the Auto budget on the converted model, and applies the "
                                    "best. Use tokens that neither calibrated the conversion nor will evaluate it."));
        intro->setWordWrap(true);
        form->addRow(intro);
        m_kind = new QComboBox;
        m_kind->setObjectName("refineDataKind");
        m_kind->addItems({tr("File"), tr("Self-sample")});
        m_kind->setCurrentIndex(selfSample > 0 ? 1 : 0);
        m_kind->setToolTip(tr("A token file, or tokens sampled from the dense model (seed %1)").arg(kRefineSeed));
        form->addRow(tr("&Data:"), m_kind);
        auto* fileRow = new QHBoxLayout;
        m_file = new QLineEdit(file);
        m_file->setObjectName("refineDataFile");
        m_file->setPlaceholderText(tr(".txt, .u16, .u32 or .jsonl"));
        auto* browse = new QPushButton(tr("Browse..."));
        connect(browse, &QPushButton::clicked, this, [this] {
            const QString f = chooseTokenFile(this, tr("Refinement data"), m_file->text());
            if (!f.isEmpty()) {
                m_file->setText(f);
                m_kind->setCurrentIndex(0);
            }
        });
        fileRow->addWidget(m_file, 1);
        fileRow->addWidget(browse);
        form->addRow(tr("&File:"), fileRow);
        m_tokens = new QSpinBox;
        m_tokens->setObjectName("refineTokens");
        m_tokens->setRange(512, 100'000'000); // two windows of 256 at least
        m_tokens->setSingleStep(4096);
        m_tokens->setValue(static_cast<int>(selfSample > 0 ? selfSample : tokens));
        m_tokens->setToolTip(tr("Use at most this many tokens of the file, or sample this many (--refine-tokens)"));
        form->addRow(tr("Max &tokens:"), m_tokens);
        m_evals = new QSpinBox;
        m_evals->setObjectName("refineEvals");
        m_evals->setRange(1, 1000);
        m_evals->setValue(evals);
        m_evals->setToolTip(tr("At most this many policies are measured, the starting one included (--refine-evals)"));
        form->addRow(tr("&Measurements:"), m_evals);
        auto* buttons = new QDialogButtonBox(QDialogButtonBox::Ok | QDialogButtonBox::Cancel);
        buttons->button(QDialogButtonBox::Ok)->setText(tr("&Refine"));
        connect(buttons, &QDialogButtonBox::accepted, this, [this] {
            if (m_kind->currentIndex() == 0 && m_file->text().trimmed().isEmpty()) {
                m_file->setFocus();
                return;
            }
            accept();
        });
        connect(buttons, &QDialogButtonBox::rejected, this, &QDialog::reject);
        form->addRow(buttons);
    }
    DataChoice data() const
    {
        DataChoice d;
        if (m_kind->currentIndex() == 1) {
            d.selfSample = m_tokens->value();
            d.seed = kRefineSeed;
        } else {
            d.file = m_file->text().trimmed();
            d.maxTokens = m_tokens->value();
        }
        return d;
    }
    int evaluations() const { return m_evals->value(); }

private:
    QComboBox* m_kind = nullptr;
    QLineEdit* m_file = nullptr;
    QSpinBox* m_tokens = nullptr;
    QSpinBox* m_evals = nullptr;
};

} // namespace

PolicyView::PolicyView(QWidget* parent) : PolicyView(nullptr, parent) { }

PolicyView::PolicyView(ProjectSession* session, QWidget* parent) : QWidget(parent)
{
    // The session reads and writes the project and owns the undo stack; a view on its own (tests,
    // benchmarks) has a session of its own.
    m_session = session ? session : new ProjectSession(this);
    m_undo = m_session->undoStack();
    m_model = new PolicyTableModel(this);
    m_model->setUndoStack(m_undo);
    buildUi();
    connect(m_model, &PolicyTableModel::estimateChanged, this, &PolicyView::onEstimateChanged);
    connect(m_model, &QAbstractItemModel::modelReset, this, &PolicyView::openEditors);
    connect(&m_loadWatcher, &QFutureWatcher<PolicyData>::finished, this, &PolicyView::onLoadFinished);
    connect(&m_autoWatcher, &QFutureWatcher<AutoResult>::finished, this, &PolicyView::onAutoFinished);
    connect(m_session, &ProjectSession::policySaved, this, &PolicyView::onSaveFinished);
    m_refineJob = new WorkbenchJob(this);
    connect(m_refineJob, &WorkbenchJob::progressed, m_refineProgress,
            [this](const QString& stage, double done, double total) {
                m_refineProgress->setRange(0, 1000);
                m_refineProgress->setValue(total > 0 ? static_cast<int>(1000 * done / total) : 0);
                // Candidates report themselves (onRefineMeasured); before them, say what is loading.
                if (stage != QLatin1String("refine"))
                    m_status->setText(tr("%1: %2 (%3 of %4) ...")
                                          .arg(m_refineDescription, stage)
                                          .arg(done, 0, 'f', 0)
                                          .arg(total, 0, 'f', 0));
            });
    connect(m_refineJob, &WorkbenchJob::refineMeasured, this, &PolicyView::onRefineMeasured);
    connect(m_refineJob, &WorkbenchJob::refined, this, [this](const QString& report) { m_refineReport = report; });
    connect(m_refineJob, &WorkbenchJob::jobFinished, this, &PolicyView::onRefineFinished);
    clear(tr("No routing policy yet: open a project with a conversion run and a routing profile (ladimo profile)."));
}

PolicyView::~PolicyView()
{
    // Cancels and waits for a running refinement; its signals no longer reach this view.
    m_refineJob->disconnect(this);
    delete m_refineJob;
    if (m_session)
        m_session->disconnect(this);
    m_loadWatcher.disconnect();
    m_autoWatcher.disconnect();
    m_loadWatcher.waitForFinished();
    m_autoWatcher.waitForFinished();
}

void PolicyView::buildUi()
{
    auto* layout = new QVBoxLayout(this);

    auto* top = new QHBoxLayout;
    top->addWidget(new QLabel(tr("&Policy:")));
    m_policyCombo = new QComboBox;
    m_policyCombo->setObjectName("policyCombo");
    m_policyCombo->setMinimumContentsLength(18);
    m_policyCombo->setSizeAdjustPolicy(QComboBox::AdjustToMinimumContentsLengthWithIcon);
    m_policyCombo->setToolTip(
        tr("Load a policy stored in the project (or the training top-k in every layer); undoable"));
    static_cast<QLabel*>(top->itemAt(0)->widget())->setBuddy(m_policyCombo);
    top->addWidget(m_policyCombo);
    m_saveButton = new QPushButton(tr("&Save as..."));
    m_saveButton->setToolTip(tr("Store the current rules in the project as a named manual policy"));
    top->addWidget(m_saveButton);
    m_undoButton = new QToolButton;
    m_redoButton = new QToolButton;
    auto* undoAction = m_undo->createUndoAction(this, tr("&Undo"));
    undoAction->setShortcut(QKeySequence::Undo);
    undoAction->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    undoAction->setToolTip(tr("Undo the last rule change (Ctrl+Z)"));
    auto* redoAction = m_undo->createRedoAction(this, tr("&Redo"));
    redoAction->setShortcut(QKeySequence::Redo);
    redoAction->setShortcutContext(Qt::WidgetWithChildrenShortcut);
    redoAction->setToolTip(tr("Redo the rule change undone last (Ctrl+Shift+Z)"));
    addAction(undoAction);
    addAction(redoAction);
    m_undoButton->setDefaultAction(undoAction);
    m_redoButton->setDefaultAction(redoAction);
    top->addWidget(m_undoButton);
    top->addWidget(m_redoButton);
    top->addSpacing(16);

    auto* autoBox = new QGroupBox(tr("Auto: search per-layer rules for a budget"));
    autoBox->setToolTip(tr("Dynamic programme over layers: the rules with the smallest error proxy within the budget"));
    auto* autoLayout = new QHBoxLayout(autoBox);
    autoLayout->setContentsMargins(6, 2, 6, 2);
    auto* budgetLabel = new QLabel(tr("&Budget:"));
    m_budget = new QDoubleSpinBox;
    m_budget->setObjectName("autoBudget");
    m_budget->setRange(0.01, 1.0);
    m_budget->setSingleStep(0.05);
    m_budget->setDecimals(2);
    m_budget->setValue(0.75);
    m_budget->setToolTip(tr("Largest cost allowed, as a fraction of the dense model"));
    budgetLabel->setBuddy(m_budget);
    autoLayout->addWidget(budgetLabel);
    autoLayout->addWidget(m_budget);
    auto* ofLabel = new QLabel(tr("of &dense"));
    m_measure = new QComboBox;
    m_measure->setObjectName("autoMeasure");
    m_measure->addItem(tr("FFN parameters"), static_cast<int>(core::CostKind::Params));
    m_measure->addItem(tr("prefill latency"), static_cast<int>(core::CostKind::PrefillLatency));
    m_measure->addItem(tr("decode latency"), static_cast<int>(core::CostKind::DecodeLatency));
    m_measure->setToolTip(tr("What the budget bounds: activated FFN parameters, or estimated prefill / decode time "
                             "(needs the latency model of `ladimo latency`)"));
    ofLabel->setBuddy(m_measure);
    autoLayout->addWidget(ofLabel);
    autoLayout->addWidget(m_measure);
    m_ruleKinds = new QComboBox;
    m_ruleKinds->addItem(tr("top-k rules"), static_cast<int>(core::RuleKinds::Static));
    m_ruleKinds->addItem(tr("top-p rules"), static_cast<int>(core::RuleKinds::Threshold));
    m_ruleKinds->addItem(tr("top-k and top-p"), static_cast<int>(core::RuleKinds::Both));
    m_ruleKinds->setCurrentIndex(2);
    m_ruleKinds->setToolTip(tr("Which kinds of rule the search may give a layer"));
    autoLayout->addWidget(m_ruleKinds);
    m_autoButton = new QPushButton(tr("&Auto"));
    m_autoButton->setToolTip(tr("Run the policy search for this budget and apply the result (undoable)"));
    autoLayout->addWidget(m_autoButton);
    m_refineButton = new QPushButton(tr("Refine by &measurement…"));
    m_refineButton->setObjectName("refineButton");
    autoLayout->addWidget(m_refineButton);
    top->addWidget(autoBox);
    top->addStretch(1);
    layout->addLayout(top);

    m_totals = new QLabel;
    m_totals->setTextFormat(Qt::RichText);
    m_totals->setWordWrap(true);
    m_totals->setTextInteractionFlags(Qt::TextSelectableByMouse);
    m_totals->setToolTip(tr("Whole-model estimates of the current rules, from the routing profile and latency model"));
    m_totals->setFrameShape(QFrame::StyledPanel);
    m_totals->setMargin(4);
    layout->addWidget(m_totals);

    auto* split = new QSplitter(Qt::Horizontal);
    m_table = new QTableView;
    m_table->setModel(m_model);
    m_table->setItemDelegateForColumn(PolicyTableModel::KindColumn, new KindDelegate(m_table));
    m_table->setItemDelegateForColumn(PolicyTableModel::SettingColumn, new SliderDelegate(m_table));
    m_table->verticalHeader()->hide();
    m_table->setSelectionBehavior(QAbstractItemView::SelectRows);
    m_table->setSelectionMode(QAbstractItemView::SingleSelection);
    m_table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    m_table->horizontalHeader()->setSectionResizeMode(QHeaderView::ResizeToContents);
    m_table->horizontalHeader()->setSectionResizeMode(PolicyTableModel::SettingColumn, QHeaderView::Stretch);
    m_table->horizontalHeader()->setMinimumSectionSize(48);
    m_table->setToolTip(tr("One routing rule per layer. Drag a slider (or select a row and press + / -) to change "
                           "its experts per token; T switches the row between top-k and top-p."));
    auto addKey = [this](const QString& text, const QKeySequence& key, auto fn) {
        auto* a = new QAction(text, m_table);
        a->setShortcut(key);
        a->setShortcutContext(Qt::WidgetWithChildrenShortcut);
        connect(a, &QAction::triggered, this, fn);
        m_table->addAction(a);
    };
    addKey(tr("More experts"), QKeySequence(Qt::Key_Plus), [this] { stepCurrentRow(+1); });
    addKey(tr("More experts"), QKeySequence(Qt::Key_Equal), [this] { stepCurrentRow(+1); });
    addKey(tr("Fewer experts"), QKeySequence(Qt::Key_Minus), [this] { stepCurrentRow(-1); });
    addKey(tr("Switch top-k / top-p"), QKeySequence(Qt::Key_T), [this] { toggleCurrentRowKind(); });
    split->addWidget(m_table);

    auto* right = new QWidget;
    auto* rightLayout = new QVBoxLayout(right);
    rightLayout->setContentsMargins(0, 0, 0, 0);
    auto* axisRow = new QHBoxLayout;
    auto* axisLabel = new QLabel(tr("Tradeoff &x axis:"));
    m_axisCombo = new QComboBox;
    m_axisCombo->addItem(tr("activated FFN parameters"));
    m_axisCombo->addItem(tr("estimated prefill latency"));
    m_axisCombo->addItem(tr("estimated decode latency"));
    m_axisCombo->setToolTip(tr("Cost on the x axis of the tradeoff plot, as a fraction of the dense model"));
    axisLabel->setBuddy(m_axisCombo);
    axisRow->addWidget(axisLabel);
    axisRow->addWidget(m_axisCombo, 1);
    rightLayout->addLayout(axisRow);
    m_plot = new widgets::TradeoffPlot;
    rightLayout->addWidget(m_plot, 1);
    split->addWidget(right);
    split->setStretchFactor(0, 3);
    split->setStretchFactor(1, 2);
    split->setSizes({700, 480});
    layout->addWidget(split, 1);

    auto* statusRow = new QHBoxLayout;
    m_status = new QLabel;
    m_status->setWordWrap(true);
    m_status->setTextInteractionFlags(Qt::TextSelectableByMouse);
    statusRow->addWidget(m_status, 1);
    m_refineProgress = new QProgressBar;
    m_refineProgress->setObjectName("refineProgress");
    m_refineProgress->setMaximumWidth(220);
    m_refineProgress->setToolTip(tr("Policies measured of the measurement limit"));
    m_refineProgress->hide();
    statusRow->addWidget(m_refineProgress);
    m_refineCancel = new QPushButton(tr("&Cancel refinement"));
    m_refineCancel->setObjectName("refineCancel");
    m_refineCancel->setToolTip(tr("Stop measuring; the policy stays as it is"));
    m_refineCancel->hide();
    statusRow->addWidget(m_refineCancel);
    layout->addLayout(statusRow);

    connect(m_policyCombo, qOverload<int>(&QComboBox::activated), this, [this](int i) {
        if (i == 0)
            applyUniform(m_data.run.trainTopK);
        else
            selectPolicy(QString::fromStdString(m_data.policies[static_cast<std::size_t>(i - 1)].name));
    });
    connect(m_axisCombo, qOverload<int>(&QComboBox::currentIndexChanged), this, [this] { refreshPlot(); });
    connect(m_autoButton, &QPushButton::clicked, this, [this] {
        runAuto(m_budget->value(), static_cast<core::CostKind>(m_measure->currentData().toInt()),
                static_cast<core::RuleKinds>(m_ruleKinds->currentData().toInt()));
    });
    connect(m_refineButton, &QPushButton::clicked, this, &PolicyView::askAndRefine);
    connect(m_refineCancel, &QPushButton::clicked, this, &PolicyView::cancelRefine);
    // The button follows whether the current rules fit the budget they would be refined in.
    connect(m_budget, qOverload<double>(&QDoubleSpinBox::valueChanged), this, &PolicyView::updateRefineEnabled);
    connect(m_measure, qOverload<int>(&QComboBox::currentIndexChanged), this, &PolicyView::updateRefineEnabled);
    connect(m_saveButton, &QPushButton::clicked, this, [this] {
        bool ok = false;
        const QString name = QInputDialog::getText(
            this, tr("Save policy"), tr("Name (letters, digits, '.', '_', '-'):"), QLineEdit::Normal,
            m_policyCombo->currentIndex() > 0 ? m_policyCombo->currentText() : tr("manual"), &ok);
        if (!ok || name.isEmpty())
            return;
        for (const auto& p : m_data.policies)
            if (QString::fromStdString(p.name) == name
                && QMessageBox::question(this, tr("Replace policy"), tr("Replace the stored policy '%1'?").arg(name))
                    != QMessageBox::Yes)
                return;
        savePolicyAs(name);
    });
    connect(m_plot, &widgets::TradeoffPlot::frontPointClicked, this, [this](int i) { applyFrontPoint(i); });
    connect(m_plot, &widgets::TradeoffPlot::uniformPointClicked, this, [this](int i) { applyUniform(i + 1); });
}

void PolicyView::openProject(const QString& projectPath)
{
    if (m_loadWatcher.isRunning())
        return;
    m_status->setText(tr("Reading routing profiles of %1 ...").arg(projectPath));
    m_loadWatcher.setFuture(QtConcurrent::run(&ProjectSession::readPolicyData, projectPath));
}

void PolicyView::onLoadFinished()
{
    const PolicyData d = m_loadWatcher.result();
    if (!d.error.isEmpty()) {
        clear(d.error);
        Q_EMIT loadFailed(d.error);
        return;
    }
    setData(d);
    Q_EMIT loaded();
}

void PolicyView::setData(const PolicyData& d)
{
    if (!d.error.isEmpty() || d.tables.layers.empty()) {
        clear(d.error.isEmpty() ? tr("No routing profile yet: run ladimo profile P.ladimo --data FILE.") : d.error);
        return;
    }
    const int layers = static_cast<int>(d.tables.layers.size());
    const int n = static_cast<int>(d.tables.layers.front().experts);
    // The same run again (the project reloaded after another process or job wrote to it): the
    // person's rules and their undo history stay.
    const bool sameRun
        = !m_data.path.isEmpty() && m_data.path == d.path && m_data.run.id == d.run.id && m_model->rowCount() == layers;
    const core::PolicyRules kept = sameRun ? m_model->rules() : core::PolicyRules{};
    m_data = d;
    core::PolicyRules rules = core::uniformRules(layers, core::RoutingRule::staticK(std::clamp(d.run.trainTopK, 1, n)));
    QString select;
    if (sameRun) {
        rules = kept;
        select = m_policyCombo->currentText();
    } else {
        m_undo->clear();
        // Where the person left off: the policy stored last; else the training k everywhere.
        if (!d.policies.empty()) {
            rules = d.policyRules.back();
            select = QString::fromStdString(d.policies.back().name);
        }
    }
    m_model->setPolicy(d.tables, rules);
    refreshPolicyCombo(select);
    const bool lat = d.tables.latency.has_value();
    // Latency choices only with a latency model.
    for (QComboBox* combo : {m_measure, m_axisCombo}) {
        if (!lat && combo->currentIndex() > 0)
            combo->setCurrentIndex(0);
        if (auto* items = qobject_cast<QStandardItemModel*>(combo->model()))
            for (int i = 1; i < 3; ++i)
                items->item(i)->setEnabled(lat);
        combo->setEnabled(true);
    }
    for (QWidget* w :
         std::initializer_list<QWidget*>{m_policyCombo, m_saveButton, m_autoButton, m_budget, m_ruleKinds, m_table})
        w->setEnabled(true);
    updateRefineEnabled();
    refreshPlot();
    m_status->setText(tr("Run #%1: %2 layers, %3 experts, %4 gating, trained at top-%5. %6")
                          .arg(d.run.id)
                          .arg(layers)
                          .arg(n)
                          .arg(QString::fromStdString(d.run.gating))
                          .arg(d.run.trainTopK)
                          .arg(lat ? tr("Latency model of %1.").arg(d.device)
                                   : tr("No latency model: run ladimo latency P.ladimo for time estimates.")));
}

void PolicyView::clear(const QString& message)
{
    m_data = PolicyData{};
    m_undo->clear();
    m_model->clear();
    m_plot->clear();
    m_policyCombo->clear();
    for (QWidget* w : std::initializer_list<QWidget*>{m_policyCombo, m_saveButton, m_autoButton, m_budget, m_measure,
                                                      m_ruleKinds, m_axisCombo, m_table})
        w->setEnabled(false);
    m_totals->setText(tr("No policy."));
    m_status->setText(message);
    updateRefineEnabled();
    Q_EMIT plotDataChanged();
}

void PolicyView::refreshPolicyCombo(const QString& select)
{
    const QSignalBlocker block(m_policyCombo);
    m_policyCombo->clear();
    m_policyCombo->addItem(tr("training top-%1 everywhere").arg(m_data.run.trainTopK));
    m_policyCombo->setItemData(0, tr("The rule the conversion was trained with, in every layer"), Qt::ToolTipRole);
    int current = 0;
    for (std::size_t i = 0; i < m_data.policies.size(); ++i) {
        const auto& p = m_data.policies[i];
        const QString name = QString::fromStdString(p.name);
        m_policyCombo->addItem(name);
        m_policyCombo->setItemData(
            static_cast<int>(i + 1),
            tr("%1 policy, stored %2")
                .arg(QString::fromLatin1(core::policyOriginName(p.origin)), QString::fromStdString(p.created)),
            Qt::ToolTipRole);
        if (name == select)
            current = static_cast<int>(i + 1);
    }
    m_policyCombo->setCurrentIndex(current);
}

double PolicyView::xOf(const core::PolicyEstimate& e) const { return pointOf(e, axis()).x(); }

QPointF PolicyView::pointOf(const core::PolicyEstimate& e) const { return pointOf(e, axis()); }

QPointF PolicyView::pointOf(const core::PolicyEstimate& e, Axis a) const
{
    switch (a) {
    case PrefillAxis: return {e.prefillFraction, e.errorProxy};
    case DecodeAxis: return {e.decodeFraction, e.errorProxy};
    case ParamsAxis: break;
    }
    return {e.activatedFfnFraction, e.errorProxy};
}

const std::vector<core::SearchResult>& PolicyView::currentFront() const
{
    return m_data.fronts[static_cast<int>(axis())];
}

void PolicyView::setAxis(Axis a) { m_axisCombo->setCurrentIndex(static_cast<int>(a)); }

PolicyView::Axis PolicyView::axis() const
{
    const int i = m_axisCombo->currentIndex();
    return i >= 0 && i < 3 ? static_cast<Axis>(i) : ParamsAxis;
}

void PolicyView::refreshPlot()
{
    fillTradeoffPlot(m_plot, axis());
    Q_EMIT plotDataChanged();
}

void PolicyView::fillTradeoffPlot(widgets::TradeoffPlot* plot, Axis axis) const
{
    plot->clear();
    if (m_data.tables.layers.empty())
        return;
    static const char* const names[3] = {QT_TR_NOOP("activated FFN parameters (fraction of dense)"),
                                         QT_TR_NOOP("estimated prefill time (fraction of dense)"),
                                         QT_TR_NOOP("estimated decode time (fraction of dense)")};
    plot->setAxisLabels(tr(names[static_cast<int>(axis)]), tr("error proxy (sum of layer relative errors)"));
    QVector<QPointF> front;
    for (const auto& r : m_data.fronts[static_cast<int>(axis)])
        front << pointOf(r.estimate, axis);
    plot->setFront(front);
    const int layers = static_cast<int>(m_data.tables.layers.size());
    QVector<QPointF> uniform;
    QStringList labels;
    for (int k = 1; k <= m_model->experts(); ++k) {
        uniform << pointOf(
            core::estimatePolicy(m_data.tables, core::uniformRules(layers, core::RoutingRule::staticK(k))), axis);
        labels << QStringLiteral("k=%1").arg(k);
    }
    plot->setUniform(uniform, labels);
    plot->setDense(QPointF(1.0, 0.0));
    QVector<QPointF> stored;
    QStringList storedNames;
    QVector<QPair<QPointF, QPointF>> measured;
    QStringList measuredLabels;
    static const char* const keys[3] = {"activated_ffn_fraction", "prefill_fraction", "decode_fraction"};
    for (std::size_t i = 0; i < m_data.policies.size(); ++i) {
        const auto e = core::estimatePolicy(m_data.tables, m_data.policyRules[i]);
        const QPointF at = pointOf(e, axis);
        stored << at;
        storedNames << QString::fromStdString(m_data.policies[i].name);
        for (const auto& ev : m_data.evaluations) {
            if (ev.policyId != m_data.policies[i].id || !ev.metrics.contains(keys[static_cast<int>(axis)]))
                continue;
            // The measured cost at the estimated error: the horizontal gap is the estimate's error.
            const double x = ev.metrics[keys[static_cast<int>(axis)]].get<double>();
            measured << qMakePair(at, QPointF(x, at.y()));
            QString label = tr("measured");
            if (ev.metrics.contains("perplexity"))
                label += tr(": ppl %1").arg(ev.metrics["perplexity"].get<double>(), 0, 'f', 2);
            if (ev.metrics.contains("kl_to_dense"))
                label += tr(", KL %1").arg(ev.metrics["kl_to_dense"].get<double>(), 0, 'g', 3);
            measuredLabels << label;
        }
    }
    plot->setStored(stored, storedNames);
    plot->setMeasured(measured, measuredLabels);
    plot->setCurrent(pointOf(m_model->estimate(), axis));
}

void PolicyView::onEstimateChanged()
{
    const auto& e = m_model->estimate();
    if (e.layers.empty())
        return;
    QString text = tr("<b>Whole model:</b> activated FFN <b>%1</b> of dense &nbsp;&middot;&nbsp; error proxy <b>%2</b>")
                       .arg(percent(e.activatedFfnFraction))
                       .arg(e.errorProxy, 0, 'f', 5);
    if (e.hasLatency)
        text += tr(" &nbsp;&middot;&nbsp; prefill <b>%1 ms</b> (%2 of dense %3 ms) &nbsp;&middot;&nbsp; decode <b>%4 "
                   "ms</b> "
                   "(%5 of dense %6 ms) on %7")
                    .arg(1e3 * e.prefillSeconds, 0, 'f', 2)
                    .arg(percent(e.prefillFraction))
                    .arg(1e3 * e.densePrefillSeconds, 0, 'f', 2)
                    .arg(1e3 * e.decodeSeconds, 0, 'f', 3)
                    .arg(percent(e.decodeFraction))
                    .arg(1e3 * e.denseDecodeSeconds, 0, 'f', 3)
                    .arg(m_data.device.toHtmlEscaped());
    else
        text += tr(" &nbsp;&middot;&nbsp; no latency model (ladimo latency)");
    m_totals->setText(text);
    m_plot->setCurrent(pointOf(e));
    updateRefineEnabled();
}

QString PolicyView::totalsText() const { return m_totals->text(); }
QString PolicyView::statusText() const { return m_status->text(); }

bool PolicyView::selectPolicy(const QString& name)
{
    for (std::size_t i = 0; i < m_data.policies.size(); ++i)
        if (QString::fromStdString(m_data.policies[i].name) == name) {
            m_model->requestRules(m_data.policyRules[i], tr("load policy %1").arg(name));
            const QSignalBlocker block(m_policyCombo);
            m_policyCombo->setCurrentIndex(static_cast<int>(i + 1));
            return true;
        }
    return false;
}

void PolicyView::applyFrontPoint(int index) { applyFrontPoint(index, axis()); }

void PolicyView::applyFrontPoint(int index, Axis a)
{
    const auto& front = m_data.fronts[static_cast<int>(a)];
    if (index < 0 || index >= static_cast<int>(front.size()))
        return;
    const auto& r = front[static_cast<std::size_t>(index)];
    m_model->requestRules(r.rules, tr("Pareto point %1 (cost %2)").arg(index).arg(r.cost, 0, 'f', 3));
    m_status->setText(tr("Applied Pareto point %1: cost %2 of dense, error proxy %3.")
                          .arg(index)
                          .arg(r.cost, 0, 'f', 3)
                          .arg(r.estimate.errorProxy, 0, 'f', 5));
}

void PolicyView::applyUniform(int k)
{
    if (k < 1 || k > m_model->experts())
        return;
    m_model->requestRules(core::uniformRules(m_model->rowCount(), core::RoutingRule::staticK(k)),
                          tr("top-%1 everywhere").arg(k));
}

void PolicyView::stepCurrentRow(int delta)
{
    const int row = m_table->currentIndex().row();
    if (row < 0 || row >= m_model->rowCount())
        return;
    const auto& rule = m_model->rules()[static_cast<std::size_t>(row)];
    const auto at = m_model->index(row, PolicyTableModel::SettingColumn);
    if (rule.isStatic())
        m_model->setData(at, std::clamp(rule.topK + delta, 1, static_cast<int>(m_model->experts())));
    else
        m_model->setData(at,
                         std::clamp(std::round((rule.threshold + 0.05 * delta) * kThresholdSteps) / kThresholdSteps,
                                    1.0 / kThresholdSteps, 1.0));
}

void PolicyView::toggleCurrentRowKind()
{
    const int row = m_table->currentIndex().row();
    if (row < 0 || row >= m_model->rowCount())
        return;
    const auto at = m_model->index(row, PolicyTableModel::KindColumn);
    m_model->setData(at,
                     static_cast<int>(at.data(PolicyTableModel::KindRole).toInt() == PolicyTableModel::StaticKind
                                          ? PolicyTableModel::ThresholdKind
                                          : PolicyTableModel::StaticKind));
}

void PolicyView::openEditors()
{
    for (int r = 0; r < m_model->rowCount(); ++r) {
        m_table->openPersistentEditor(m_model->index(r, PolicyTableModel::KindColumn));
        m_table->openPersistentEditor(m_model->index(r, PolicyTableModel::SettingColumn));
    }
    m_table->setColumnWidth(PolicyTableModel::KindColumn, 80);
}

void PolicyView::runAuto(double budget, core::CostKind cost, core::RuleKinds rules)
{
    if (m_autoWatcher.isRunning() || m_data.tables.layers.empty())
        return;
    core::SearchOptions so;
    so.cost = cost;
    so.rules = rules;
    m_autoDescription
        = tr("Auto: %1 %2 of dense").arg(QString::fromLatin1(core::costKindName(cost))).arg(budget, 0, 'f', 2);
    m_autoButton->setEnabled(false);
    m_status->setText(tr("Searching: %1 ...").arg(m_autoDescription));
    m_autoWatcher.setFuture(QtConcurrent::run([tables = m_data.tables, budget, so] {
        AutoResult r;
        try {
            r.result = core::searchBudget(tables, budget, so);
        } catch (const std::exception& e) {
            r.error = QString::fromStdString(e.what());
        }
        return r;
    }));
}

void PolicyView::onAutoFinished()
{
    m_autoButton->setEnabled(!m_data.tables.layers.empty());
    const AutoResult r = m_autoWatcher.result();
    if (!r.error.isEmpty()) {
        fail(tr("Auto failed: %1").arg(r.error));
        return;
    }
    m_model->requestRules(r.result.rules, m_autoDescription);
    m_status->setText(tr("%1: cost %2, error proxy %3.")
                          .arg(m_autoDescription)
                          .arg(r.result.cost, 0, 'f', 4)
                          .arg(r.result.estimate.errorProxy, 0, 'f', 5));
    Q_EMIT autoFinished(r.result.cost);
}

void PolicyView::savePolicyAs(const QString& name)
{
    if (!m_savingName.isEmpty() || m_data.path.isEmpty() || m_model->rowCount() == 0)
        return;
    try {
        core::validatePolicyName(name.toStdString());
    } catch (const std::exception& e) {
        fail(QString::fromStdString(e.what()));
        return;
    }
    m_savingName = name;
    m_saveButton->setEnabled(false);
    m_status->setText(tr("Saving policy %1 ...").arg(name));
    core::Policy policy;
    policy.name = name.toStdString();
    policy.origin = core::PolicyOrigin::Manual;
    policy.runId = m_data.run.id;
    policy.rules = core::rulesToJson(m_model->rules());
    m_session->savePolicy(m_data.path, policy);
}

void PolicyView::onSaveFinished(const QString& name, const std::vector<core::Policy>& policies, const QString& error)
{
    if (name != m_savingName || m_savingName.isEmpty())
        return; // a save of another view of the session
    m_savingName.clear();
    m_saveButton->setEnabled(!m_data.tables.layers.empty());
    if (!error.isEmpty()) {
        fail(tr("Could not save policy %1: %2").arg(name, error));
        return;
    }
    const int layers = static_cast<int>(m_data.tables.layers.size());
    m_data.policies.clear();
    m_data.policyRules.clear();
    for (const auto& p : policies) {
        if (p.runId != 0 && p.runId != m_data.run.id)
            continue;
        try {
            m_data.policyRules.push_back(core::policyRules(p, layers, m_data.run.experts));
            m_data.policies.push_back(p);
        } catch (const core::Error&) {
        }
    }
    refreshPolicyCombo(name);
    refreshPlot();
    m_status->setText(tr("Saved policy %1 in %2.").arg(name, m_data.path));
    Q_EMIT policySaved(name);
}

bool PolicyView::isRefining() const { return m_refineJob->isRunning(); }

QString PolicyView::refineBlocker() const
{
    if (isRefining())
        return tr("A refinement is running.");
    if (m_data.path.isEmpty() || m_model->rowCount() == 0)
        return tr("Open a project with a converted, profiled run first.");
    const auto cost = static_cast<core::CostKind>(m_measure->currentData().toInt());
    if (cost != core::CostKind::Params && !m_data.tables.latency)
        return tr("No latency model for a latency budget: run ladimo latency P.ladimo.");
    // As the core's check of the starting policy (routing/refine.cpp), with its tolerance.
    const double now = core::costFraction(m_model->estimate(), cost);
    if (now > m_budget->value() * (1 + 1e-9))
        return tr("The current policy costs %1 of dense, over the budget %2: run Auto (or lower the sliders) first.")
            .arg(now, 0, 'f', 3)
            .arg(m_budget->value(), 0, 'f', 2);
    return {};
}

void PolicyView::updateRefineEnabled()
{
    if (!m_refineJob)
        return; // during construction
    const QString blocker = refineBlocker();
    m_refineButton->setEnabled(blocker.isEmpty());
    m_refineButton->setToolTip(tr("Measure the held-out NLL of the current policy, the uniform top-k and their "
                                  "neighbours within the budget on "
                                  "the converted model, and apply the best (undoable); as ladimo policy --refine-data")
                               + (blocker.isEmpty() ? QString() : QStringLiteral("\n") + blocker));
}

void PolicyView::askAndRefine()
{
    RefineDialog dialog(this, m_refineFile, m_refineSelfSample, m_refineTokens, m_refineEvals);
    if (dialog.exec() != QDialog::Accepted)
        return;
    const DataChoice d = dialog.data();
    m_refineFile = d.selfSample > 0 ? m_refineFile : d.file;
    m_refineSelfSample = d.selfSample;
    m_refineTokens = d.selfSample > 0 ? d.selfSample : d.maxTokens;
    m_refineEvals = dialog.evaluations();
    runRefine(d, m_refineEvals);
}

bool PolicyView::runRefine(const DataChoice& data, int maxEvaluations)
{
    const QString blocker = refineBlocker();
    if (!blocker.isEmpty()) {
        m_status->setText(blocker);
        return false;
    }
    const auto cost = static_cast<core::CostKind>(m_measure->currentData().toInt());
    RefineRequest r;
    r.projectFile = m_data.path;
    r.data = data;
    r.startRules = QString::fromStdString(core::rulesToJson(m_model->rules()).dump());
    r.cost = static_cast<int>(cost);
    r.budget = m_budget->value();
    r.latencyDevice = m_data.device;
    r.maxEvaluations = maxEvaluations;
    if (!m_refineJob->startRefine(r))
        return false;
    m_refinePath = m_data.path;
    m_refineLayers = m_model->rowCount();
    m_refineReport.clear();
    m_status->setToolTip({});
    m_refineDescription = tr("Refining within %1 %2 of dense")
                              .arg(QString::fromLatin1(core::costKindName(cost)))
                              .arg(r.budget, 0, 'f', 2);
    m_refineProgress->setRange(0, 0); // busy until the first count: the model and data load first
    m_refineProgress->show();
    m_refineCancel->show();
    m_refineCancel->setEnabled(true);
    m_status->setText(
        tr("%1: loading the converted model and %2 ...")
            .arg(m_refineDescription, data.selfSample > 0 ? tr("sampling %1 tokens").arg(data.selfSample) : data.file));
    updateRefineEnabled();
    return true;
}

void PolicyView::cancelRefine()
{
    if (!isRefining())
        return;
    m_refineJob->cancel();
    m_refineCancel->setEnabled(false);
    m_status->setText(tr("%1: cancelling ...").arg(m_refineDescription));
}

void PolicyView::onRefineMeasured(int index, const QString& rules, double cost, double proxy, double nll)
{
    m_status->setText(tr("%1: measured %2 policies; last [%3]: NLL %4, cost %5, error proxy %6")
                          .arg(m_refineDescription)
                          .arg(index + 1)
                          .arg(rules)
                          .arg(nll, 0, 'f', 5)
                          .arg(cost, 0, 'f', 4)
                          .arg(proxy, 0, 'f', 5));
    Q_EMIT refineMeasured(index, rules, nll);
}

void PolicyView::onRefineFinished(bool cancelled, const QString& error)
{
    m_refineProgress->hide();
    m_refineCancel->hide();
    updateRefineEnabled();
    if (!error.isEmpty()) {
        fail(tr("Refinement failed: %1").arg(error));
        Q_EMIT refineFinished(false, error);
        return;
    }
    if (cancelled) {
        m_status->setText(tr("Refinement cancelled; the policy is unchanged."));
        Q_EMIT refineFinished(true, {});
        return;
    }
    if (m_data.path != m_refinePath || m_model->rowCount() != m_refineLayers) {
        const QString why = tr("the project changed while measuring; the result was not applied");
        fail(tr("Refinement: %1.").arg(why));
        Q_EMIT refineFinished(false, why);
        return;
    }
    core::PolicyRules best;
    nlohmann::json report;
    try {
        report = nlohmann::json::parse(m_refineReport.toStdString());
        best = core::rulesFromJson(report.at("best_rules"), m_refineLayers, m_model->experts(), "the refined policy");
    } catch (const std::exception& e) {
        fail(tr("Refinement: %1").arg(QString::fromStdString(e.what())));
        Q_EMIT refineFinished(false, QString::fromStdString(e.what()));
        return;
    }
    const std::size_t measured = report.at("measured").size();
    m_model->requestRules(best, tr("refined by measurement (%1 policies)").arg(measured));
    const double startNll = report.at("start_nll").get<double>();
    const double bestNll = report.at("best_nll").get<double>();
    m_status->setText(tr("Refined by measurement on %1: %2 policies measured in %3 rounds (held-out NLL, nats/token). "
                         "Kept NLL <b>%4</b> against %5 for the starting policy%6; cost %7 of dense, error proxy %8.")
                          .arg(QString::fromStdString(report.value("data", std::string())).toHtmlEscaped())
                          .arg(measured)
                          .arg(report.value("rounds", 0))
                          .arg(bestNll, 0, 'f', 5)
                          .arg(startNll, 0, 'f', 5)
                          .arg(bestNll < startNll ? QString() : tr(" (the starting policy stays)"))
                          .arg(report.value("best_cost", 0.0), 0, 'f', 4)
                          .arg(report.value("best_proxy", 0.0), 0, 'f', 5));
    // Every candidate, for whoever wants to see what the search tried.
    QString table = tr("Measured (cost, error proxy, NLL, rules):");
    for (const auto& c : report.at("measured"))
        table += QStringLiteral("\n%1  %2  %3  %4")
                     .arg(c.value("cost", 0.0), 0, 'f', 4)
                     .arg(c.value("error_proxy", 0.0), 0, 'f', 5)
                     .arg(c.value("nll", 0.0), 0, 'f', 5)
                     .arg(QString::fromStdString(c.value("rules", std::string())));
    m_status->setToolTip(table);
    Q_EMIT refineFinished(false, {});
}

void PolicyView::fail(const QString& message)
{
    m_status->setText(QStringLiteral("<span style='color:#b03020'>%1</span>").arg(message.toHtmlEscaped()));
    Q_EMIT actionFailed(message);
    if (!window()->property("quiet").toBool())
        QMessageBox::warning(this, tr("Policy"), message);
}

} // namespace ladimo::gui
