// The Policy view, offscreen: per-layer sliders re-estimate exactly what estimatePolicy gives,
// totals and the tradeoff point follow, undo/redo restore, Auto stays within its budget, a
// clicked Pareto point applies its rules, "Save as..." stores a manual policy; the real window
// on a tinystories260K project converted, profiled and timed by the CLI; and "Refine by measurement"
// on such a project applies what core::refineProjectPolicy finds, or nothing when cancelled or
// failing.
#include "project/evaluate.h"

#include <QAbstractItemModelTester>
#include <QComboBox>
#include <QDoubleSpinBox>
#include <QPushButton>
#include <QSignalSpy>
#include <QSlider>
#include <QTableView>
#include <QTest>
#include <QUndoStack>

#include <gtest/gtest.h>

#include "common/fileutil.h"
#include "mainwindow.h"
#include "policytablemodel.h"
#include "policyview.h"
#include "projectsession.h"
#include "routing/estimate.h"
#include "routing/search.h"
#include "store/project.h"
#include "syntheticprofile.h"
#include "testutil.h"
#include "widgets/tradeoffplot.h"
#include "workbenchjob.h"

#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

using namespace ladimo;
using gui::PolicyTableModel;
using gui::PolicyView;

namespace {

constexpr int kLayers = 4;
constexpr int kExperts = 4;

void expectSameRules(const core::PolicyRules& a, const core::PolicyRules& b)
{
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t l = 0; l < a.size(); ++l) {
        EXPECT_EQ(a[l].topK, b[l].topK) << "layer " << l;
        EXPECT_DOUBLE_EQ(a[l].threshold, b[l].threshold) << "layer " << l;
        EXPECT_EQ(a[l].minK, b[l].minK) << "layer " << l;
        EXPECT_EQ(a[l].maxK, b[l].maxK) << "layer " << l;
    }
}

// A project with a run, one routing profile per layer (the measures the estimates read) and a
// CPU latency model, written through the store exactly as `ladimo profile` / `latency` do.
std::filesystem::path makeProject(const test::TempDir& tmp)
{
    const auto file = tmp / "policy.ladimo";
    auto p = core::Project::create(file);
    core::SourceModel m;
    m.path = (test::sourceDir() / "resources" / "demo").string();
    core::ConversionRun run;
    run.modelId = p.addModel(m);
    run.layers = kLayers;
    run.experts = kExperts;
    run.trainTopK = 2;
    const auto id = p.startRun(run);
    for (int l = 0; l < kLayers; ++l) {
        core::RoutingProfile prof;
        prof.runId = id;
        prof.layer = l;
        prof.tokens = 512;
        prof.binEdges = {0, 0.5, 1};
        prof.rankHistograms = {{100, 412}, {400, 112}, {500, 12}, {512, 0}};
        prof.expertLoad = {0.4, 0.3, 0.2, 0.1};
        prof.entropy = 1.0;
        test::setSyntheticMeasures(prof, kExperts, 1.0 + l, {0.6, 0.85, 0.95, 1.0});
        p.saveRoutingProfile(prof);
    }
    p.saveLatencyModel(id, "cpu", test::syntheticLatencyModel(kLayers, kExperts).toJson());
    return file;
}

// Opens the project in a standalone view and waits for the worker.
void openView(PolicyView& view, const std::filesystem::path& file)
{
    view.setProperty("quiet", true);
    QSignalSpy loaded(&view, &PolicyView::loaded);
    QSignalSpy failed(&view, &PolicyView::loadFailed);
    view.openProject(QString::fromStdString(file.string()));
    ASSERT_TRUE(loaded.wait(20000)) << (failed.isEmpty() ? std::string("timeout")
                                                         : failed.front().front().toString().toStdString());
}

QSlider* sliderOf(PolicyView& view, int row)
{
    return qobject_cast<QSlider*>(view.table()->indexWidget(view.model()->index(row, PolicyTableModel::SettingColumn)));
}

QString percent(double fraction) { return QString::number(100.0 * fraction, 'f', 2) + " %"; }

// The row, the totals, the label and the plot's current point all equal estimatePolicy(rules).
void expectShows(PolicyView& view, const core::PolicyRules& rules)
{
    const auto* model = view.model();
    const auto want = core::estimatePolicy(model->tables(), rules);
    expectSameRules(model->rules(), rules);
    for (int l = 0; l < model->rowCount(); ++l) {
        const auto& e = want.layers[static_cast<std::size_t>(l)];
        EXPECT_DOUBLE_EQ(model->index(l, PolicyTableModel::MeanKColumn).data(Qt::UserRole).toDouble(), e.meanK);
        EXPECT_DOUBLE_EQ(model->index(l, PolicyTableModel::FfnColumn).data(Qt::UserRole).toDouble(),
                         e.params / model->tables().layers[static_cast<std::size_t>(l)].denseParams);
        EXPECT_DOUBLE_EQ(model->index(l, PolicyTableModel::ErrorColumn).data(Qt::UserRole).toDouble(), e.error);
        EXPECT_DOUBLE_EQ(model->index(l, PolicyTableModel::PrefillColumn).data(Qt::UserRole).toDouble(),
                         e.prefillSeconds);
        EXPECT_EQ(model->index(l, PolicyTableModel::RuleColumn).data(Qt::UserRole).toString().toStdString(),
                  core::describeRule(rules[static_cast<std::size_t>(l)], model->experts()));
    }
    const auto& got = model->estimate();
    EXPECT_DOUBLE_EQ(got.activatedFfnFraction, want.activatedFfnFraction);
    EXPECT_DOUBLE_EQ(got.errorProxy, want.errorProxy);
    EXPECT_DOUBLE_EQ(got.prefillFraction, want.prefillFraction);
    EXPECT_DOUBLE_EQ(got.decodeFraction, want.decodeFraction);
    const QString totals = view.totalsText();
    EXPECT_TRUE(totals.contains(percent(want.activatedFfnFraction))) << totals.toStdString();
    EXPECT_TRUE(totals.contains(QString::number(want.errorProxy, 'f', 5))) << totals.toStdString();
    if (want.hasLatency)
        EXPECT_TRUE(totals.contains(QString::number(1e3 * want.prefillSeconds, 'f', 2) + " ms"))
            << totals.toStdString();
    ASSERT_TRUE(view.plot()->hasCurrent());
    const double x = view.axis() == PolicyView::ParamsAxis ? want.activatedFfnFraction
        : view.axis() == PolicyView::PrefillAxis           ? want.prefillFraction
                                                           : want.decodeFraction;
    EXPECT_DOUBLE_EQ(view.plot()->currentPoint().x(), x);
    EXPECT_DOUBLE_EQ(view.plot()->currentPoint().y(), want.errorProxy);
}

} // namespace

TEST(PolicyView, SlidersReEstimateExactlyAndUndoRestores)
{
    test::TempDir tmp;
    const auto file = makeProject(tmp);
    PolicyView view;
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    ASSERT_NO_FATAL_FAILURE(openView(view, file));
    ASSERT_EQ(view.model()->rowCount(), kLayers);
    EXPECT_TRUE(view.data().tables.latency.has_value());
    // No stored policy yet: the training k everywhere.
    const auto start = core::uniformRules(kLayers, core::RoutingRule::staticK(2));
    expectShows(view, start);

    // Move layer 1's slider to k=4: exactly what estimatePolicy gives for that edit.
    QSlider* slider = sliderOf(view, 1);
    ASSERT_NE(slider, nullptr);
    EXPECT_EQ(slider->minimum(), 1);
    EXPECT_EQ(slider->maximum(), kExperts);
    EXPECT_EQ(slider->value(), 2);
    slider->setValue(4);
    auto edited = start;
    edited[1] = core::RoutingRule::staticK(4);
    expectShows(view, edited);
    EXPECT_GT(view.model()->estimate().activatedFfnFraction, 0.5);
    EXPECT_EQ(view.undoStack()->count(), 1);

    // Through setData too (another layer), then undo twice back to the start, redo once.
    ASSERT_TRUE(view.model()->setData(view.model()->index(3, PolicyTableModel::SettingColumn), 1));
    edited[3] = core::RoutingRule::staticK(1);
    expectShows(view, edited);
    EXPECT_FALSE(view.model()->setData(view.model()->index(3, PolicyTableModel::SettingColumn), kExperts + 1));
    view.undoStack()->undo();
    view.undoStack()->undo();
    expectShows(view, start);
    EXPECT_EQ(slider->value(), 2); // the editor follows the model
    view.undoStack()->redo();
    edited = start;
    edited[1] = core::RoutingRule::staticK(4);
    expectShows(view, edited);

    // A drag is one undo step.
    slider->setSliderDown(true);
    slider->setValue(3);
    slider->setValue(1);
    slider->setSliderDown(false);
    edited[1] = core::RoutingRule::staticK(1);
    expectShows(view, edited);
    view.undoStack()->undo();
    edited[1] = core::RoutingRule::staticK(4);
    expectShows(view, edited);
}

TEST(PolicyView, RowsSwitchToTopPWithAThresholdSlider)
{
    test::TempDir tmp;
    const auto file = makeProject(tmp);
    PolicyView view;
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    ASSERT_NO_FATAL_FAILURE(openView(view, file));
    auto* kind
        = qobject_cast<QComboBox*>(view.table()->indexWidget(view.model()->index(2, PolicyTableModel::KindColumn)));
    ASSERT_NE(kind, nullptr);
    EXPECT_EQ(kind->currentIndex(), 0);
    ASSERT_TRUE(view.model()->setData(view.model()->index(2, PolicyTableModel::KindColumn),
                                      static_cast<int>(PolicyTableModel::ThresholdKind)));
    EXPECT_EQ(kind->currentIndex(), 1);
    // Mean k was 2: the grid threshold whose mean k is closest (1.75 at p=0.6).
    auto rules = core::uniformRules(kLayers, core::RoutingRule::staticK(2));
    rules[2] = core::RoutingRule::topP(0.6);
    expectShows(view, rules);
    QSlider* slider = sliderOf(view, 2);
    ASSERT_NE(slider, nullptr);
    EXPECT_EQ(slider->maximum(), 100);
    EXPECT_EQ(slider->value(), 60);
    slider->setValue(83); // off the grid: interpolated
    rules[2] = core::RoutingRule::topP(0.83);
    expectShows(view, rules);
    EXPECT_EQ(view.model()->index(2, PolicyTableModel::RuleColumn).data().toString(), "p=0.83");
    view.undoStack()->undo();
    view.undoStack()->undo();
    expectShows(view, core::uniformRules(kLayers, core::RoutingRule::staticK(2)));
    EXPECT_EQ(sliderOf(view, 2)->maximum(), kExperts);
}

TEST(PolicyView, AutoStaysWithinTheBudgetAndReportsImpossibleOnes)
{
    test::TempDir tmp;
    const auto file = makeProject(tmp);
    PolicyView view;
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    ASSERT_NO_FATAL_FAILURE(openView(view, file));
    QSignalSpy done(&view, &PolicyView::autoFinished);
    view.runAuto(0.6, core::CostKind::Params, core::RuleKinds::Static);
    ASSERT_TRUE(done.wait(20000));
    core::SearchOptions so;
    so.cost = core::CostKind::Params;
    so.rules = core::RuleKinds::Static;
    const auto want = core::searchBudget(view.model()->tables(), 0.6, so);
    expectShows(view, want.rules);
    EXPECT_LE(view.model()->estimate().activatedFfnFraction, 0.6 + 1e-12);
    EXPECT_FALSE(core::isUniformStatic(want.rules)); // a per-layer allocation, not a uniform k
    // By prefill latency, with top-p rules allowed.
    view.runAuto(0.8, core::CostKind::PrefillLatency, core::RuleKinds::Both);
    ASSERT_TRUE(done.wait(20000));
    EXPECT_LE(view.model()->estimate().prefillFraction, 0.8 + 1e-12);
    view.undoStack()->undo();
    expectShows(view, want.rules);

    QSignalSpy failed(&view, &PolicyView::actionFailed);
    view.runAuto(0.01, core::CostKind::Params, core::RuleKinds::Static);
    ASSERT_TRUE(failed.wait(20000));
    EXPECT_TRUE(failed.front().front().toString().contains("no policy fits"))
        << failed.front().front().toString().toStdString();
    expectShows(view, want.rules); // unchanged
}

TEST(PolicyView, ClickingAFrontPointAppliesItsRules)
{
    test::TempDir tmp;
    const auto file = makeProject(tmp);
    PolicyView view;
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    ASSERT_NO_FATAL_FAILURE(openView(view, file));
    view.resize(1400, 800);
    view.show();
    ASSERT_TRUE(QTest::qWaitForWindowExposed(&view));
    auto* plot = view.plot();
    const auto& front = view.currentFront();
    ASSERT_GE(front.size(), 3u);
    ASSERT_EQ(plot->frontCount(), static_cast<int>(front.size()));
    EXPECT_EQ(plot->uniformCount(), kExperts);
    for (std::size_t i = 0; i < front.size(); ++i) {
        EXPECT_DOUBLE_EQ(plot->frontPoint(static_cast<int>(i)).x(), front[i].estimate.activatedFfnFraction);
        EXPECT_DOUBLE_EQ(plot->frontPoint(static_cast<int>(i)).y(), front[i].estimate.errorProxy);
    }
    plot->replotNow();
    // A real click on the plot near a front point: the nearest front point is applied.
    QSignalSpy clicked(plot, &widgets::TradeoffPlot::frontPointClicked);
    const int target = static_cast<int>(front.size() / 2);
    auto* canvas = plot->findChild<QWidget*>();
    ASSERT_NE(canvas, nullptr);
    QTest::mouseClick(canvas, Qt::LeftButton, {}, canvas->mapFrom(plot, plot->pixelFor(plot->frontPoint(target))));
    ASSERT_EQ(clicked.count(), 1);
    const int got = clicked.front().front().toInt();
    const QPoint a = plot->pixelFor(plot->frontPoint(got)), b = plot->pixelFor(plot->frontPoint(target));
    EXPECT_LE((a - b).manhattanLength(), 2); // the same point, or one drawn on top of it
    expectShows(view, front[static_cast<std::size_t>(got)].rules);
    // Invoked directly, and undone.
    view.applyFrontPoint(0);
    expectShows(view, front[0].rules);
    view.undoStack()->undo();
    expectShows(view, front[static_cast<std::size_t>(got)].rules);
    // The latency axis has its own front and moves the current point's x.
    view.setAxis(PolicyView::PrefillAxis);
    ASSERT_FALSE(view.currentFront().empty());
    EXPECT_EQ(plot->frontCount(), static_cast<int>(view.currentFront().size()));
    EXPECT_DOUBLE_EQ(plot->currentPoint().x(), view.model()->estimate().prefillFraction);
    view.applyUniform(3);
    expectShows(view, core::uniformRules(kLayers, core::RoutingRule::staticK(3)));
}

TEST(PolicyView, SaveAsStoresAManualPolicyInTheProject)
{
    test::TempDir tmp;
    const auto file = makeProject(tmp);
    PolicyView view;
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    ASSERT_NO_FATAL_FAILURE(openView(view, file));
    view.model()->setData(view.model()->index(0, PolicyTableModel::SettingColumn), 3);
    view.model()->setData(view.model()->index(2, PolicyTableModel::KindColumn),
                          static_cast<int>(PolicyTableModel::ThresholdKind));
    const auto rules = view.model()->rules();
    QSignalSpy saved(&view, &PolicyView::policySaved);
    view.savePolicyAs("hand-tuned");
    ASSERT_TRUE(saved.wait(20000));
    {
        auto p = core::Project::open(file, {core::Project::Access::ReadOnly, core::Project::Verify::None});
        const auto policies = p.policies();
        ASSERT_EQ(policies.size(), 1u);
        EXPECT_EQ(policies[0].name, "hand-tuned");
        EXPECT_EQ(policies[0].origin, core::PolicyOrigin::Manual);
        expectSameRules(core::policyRules(policies[0], kLayers, kExperts), rules);
    }
    auto* combo = view.findChild<QComboBox*>("policyCombo");
    ASSERT_NE(combo, nullptr);
    EXPECT_EQ(combo->currentText(), "hand-tuned");
    EXPECT_EQ(view.plot()->storedCount(), 1);
    // Saving again under the same name replaces it; a bad name is refused without writing.
    view.model()->setData(view.model()->index(0, PolicyTableModel::SettingColumn), 4);
    view.savePolicyAs("hand-tuned");
    ASSERT_TRUE(saved.wait(20000));
    QSignalSpy failed(&view, &PolicyView::actionFailed);
    view.savePolicyAs("bad name!");
    ASSERT_EQ(failed.count(), 1);
    {
        auto p = core::Project::open(file, {core::Project::Access::ReadOnly, core::Project::Verify::None});
        ASSERT_EQ(p.policies().size(), 1u);
        EXPECT_EQ(core::policyRules(p.policies()[0], kLayers, kExperts)[0].topK, 4);
    }
    // Loading it back in a fresh view restores the rules; selecting the training k is undoable.
    PolicyView again;
    ASSERT_NO_FATAL_FAILURE(openView(again, file));
    auto want = rules;
    want[0] = core::RoutingRule::staticK(4);
    expectShows(again, want);
    EXPECT_TRUE(again.selectPolicy("hand-tuned"));
    EXPECT_FALSE(again.selectPolicy("nope"));
}

// The real window on a project made by the CLI: convert, profile, latency and a searched policy.
TEST(PolicyView, MainWindowShowsTheCliFlowOfTinyStories260K)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    test::TempDir tmp;
    const std::string stories = (test::sharedData() / "tinystories260K").string();
    const std::string data = " --data " + stories + "/calib.u16 --max-tokens 2048";
    const std::string project = (tmp / "p.ladimo").string();
    auto r = test::runLadimo("convert " + stories + data
                             + " --epochs 1 --router-epochs 1 --experts 8 --train-top-k 6 --e2e-steps 0 --project "
                             + project);
    ASSERT_EQ(r.status, 0) << r.out;
    r = test::runLadimo("profile " + project + data);
    ASSERT_EQ(r.status, 0) << r.out;
    r = test::runLadimo("latency " + project + data + " --prefill 128 --repeats 2");
    ASSERT_EQ(r.status, 0) << r.out;
    r = test::runLadimo("policy " + project + " --budget-params 0.75 --name auto-75");
    ASSERT_EQ(r.status, 0) << r.out;

    gui::MainWindow w;
    w.setProperty("quiet", true);
    auto* view = w.policyView();
    QAbstractItemModelTester tester(view->model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    QSignalSpy opened(&w, &gui::MainWindow::modelOpened);
    w.openPath(QString::fromStdString(project));
    ASSERT_TRUE(opened.wait(30000));
    ASSERT_TRUE(w.selectView("policy"));
    ASSERT_TRUE(w.selectView("tradeoff"));
    ASSERT_EQ(view->model()->rowCount(), 5);
    EXPECT_EQ(view->model()->experts(), 8);
    // The stored searched policy is what the view starts from.
    auto* combo = view->findChild<QComboBox*>("policyCombo");
    ASSERT_NE(combo, nullptr);
    EXPECT_EQ(combo->currentText(), "auto-75");
    EXPECT_LE(view->model()->estimate().activatedFfnFraction, 0.75 + 1e-12);
    EXPECT_TRUE(view->model()->estimate().hasLatency);
    EXPECT_GE(view->plot()->frontCount(), 3);
    EXPECT_EQ(view->plot()->uniformCount(), 8);
    EXPECT_EQ(view->plot()->storedCount(), 1);
    auto rules = view->model()->rules();
    QSlider* slider = sliderOf(*view, 0);
    ASSERT_NE(slider, nullptr);
    slider->setValue(1);
    if (rules[0].isStatic())
        rules[0] = core::RoutingRule::staticK(1);
    else
        rules[0].threshold = 0.01;
    expectShows(*view, rules);
    view->undoStack()->undo();
    expectShows(*view, view->data().policyRules.back());
}

namespace {

// A tinystories260K project converted (1 epoch) and profiled by the CLI on the first 2048 calibration
// tokens, and held-out refinement tokens (the 1024 after them), made once for the tests below:
// converting is the slow part. Empty when the shared data is absent or the CLI failed (`why`).
struct RefineFixture {
    std::filesystem::path project;
    std::filesystem::path heldOut;
    std::string why;
};

const RefineFixture& refineFixture()
{
    static test::TempDir tmp;
    static const RefineFixture f = [] {
        RefineFixture f;
        const auto stories = test::sharedData() / "tinystories260K";
        const std::string data = " --data " + (stories / "calib.u16").string() + " --max-tokens 2048";
        const auto project = tmp / "refine.ladimo";
        auto r = test::runLadimo("convert " + stories.string() + data
                                 + " --epochs 1 --router-epochs 1 --experts 8 --train-top-k 6 --e2e-steps 0 --project "
                                 + project.string());
        if (r.status != 0)
            return RefineFixture{{}, {}, r.out};
        r = test::runLadimo("profile " + project.string() + data);
        if (r.status != 0)
            return RefineFixture{{}, {}, r.out};
        std::ifstream in(stories / "calib.u16", std::ios::binary);
        const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        const std::size_t from = 2048 * 2, bytes = 1024 * 2; // uint16 tokens
        if (all.size() < from + bytes)
            return RefineFixture{{}, {}, "calib.u16 is shorter than expected"};
        f.heldOut = tmp / "heldout.u16";
        std::ofstream(f.heldOut, std::ios::binary).write(all.data() + from, static_cast<std::streamsize>(bytes));
        f.project = project;
        return f;
    }();
    return f;
}

// Opens the fixture project and applies the Auto search for `budget` of the dense FFN parameters
// (static rules), with the Auto controls set to that budget as a person would have them.
void openSearched(PolicyView& view, double budget)
{
    ASSERT_NO_FATAL_FAILURE(openView(view, refineFixture().project));
    auto* spin = view.findChild<QDoubleSpinBox*>("autoBudget");
    ASSERT_NE(spin, nullptr);
    spin->setValue(budget);
    QSignalSpy done(&view, &PolicyView::autoFinished);
    view.runAuto(budget, core::CostKind::Params, core::RuleKinds::Static);
    ASSERT_TRUE(done.wait(20000));
}

} // namespace

// The button runs the CLI's refinement in the background and applies its best policy: the rules
// shown are the RefineResult's best (the same as core::refineProjectPolicy gives on the same
// inputs), within the budget, one undo step away from the search's choice.
TEST(PolicyView, RefineByMeasurementAppliesTheMeasuredBestWithinTheBudget)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    const auto& fx = refineFixture();
    ASSERT_FALSE(fx.project.empty()) << fx.why;
    constexpr double kBudget = 0.6;
    constexpr int kEvals = 4;
    PolicyView view;
    QAbstractItemModelTester tester(view.model(), QAbstractItemModelTester::FailureReportingMode::Fatal);
    ASSERT_NO_FATAL_FAILURE(openSearched(view, kBudget));
    auto* button = view.findChild<QPushButton*>("refineButton");
    ASSERT_NE(button, nullptr);
    EXPECT_TRUE(button->isEnabled()) << view.refineBlocker().toStdString();
    const auto searched = view.model()->rules();
    const int undoSteps = view.undoStack()->count();

    gui::DataChoice data;
    data.file = QString::fromStdString(fx.heldOut.string());
    data.maxTokens = 1024;
    QSignalSpy measured(&view, &PolicyView::refineMeasured);
    QSignalSpy finished(&view, &PolicyView::refineFinished);
    ASSERT_TRUE(view.runRefine(data, kEvals));
    EXPECT_TRUE(view.isRefining());
    EXPECT_FALSE(button->isEnabled()); // one refinement at a time
    ASSERT_TRUE(finished.wait(60000));
    ASSERT_EQ(finished.size(), 1);
    EXPECT_FALSE(finished.front().at(0).toBool());
    ASSERT_TRUE(finished.front().at(1).toString().isEmpty()) << finished.front().at(1).toString().toStdString();
    EXPECT_FALSE(view.isRefining());
    EXPECT_TRUE(button->isEnabled());

    // What the worker reported: every candidate live, then the result.
    const auto report = nlohmann::json::parse(view.lastRefineReport().toStdString());
    const int layers = view.model()->rowCount();
    const auto best = core::rulesFromJson(report.at("best_rules"), layers, view.model()->experts(), "test");
    ASSERT_EQ(static_cast<int>(report.at("measured").size()), measured.size());
    EXPECT_GE(measured.size(), 2); // the search's choice and the uniform top-k at least
    EXPECT_LE(measured.size(), kEvals);
    for (int i = 0; i < measured.size(); ++i) {
        EXPECT_EQ(measured.at(i).at(0).toInt(), i);
        EXPECT_DOUBLE_EQ(measured.at(i).at(2).toDouble(),
                         report["measured"][static_cast<std::size_t>(i)]["nll"].get<double>());
    }
    expectSameRules(core::rulesFromJson(report.at("start_rules"), layers, view.model()->experts(), "test"), searched);

    // The same refinement in core, on this thread: the view shows its best.
    core::ProjectRefineRequest req;
    req.projectFile = fx.project.string();
    req.data = {fx.heldOut.string(), 0, 1234, 1024};
    req.options.cost = core::CostKind::Params;
    req.options.budgetFraction = kBudget;
    req.options.maxEvaluations = kEvals;
    const auto direct = core::refineProjectPolicy(req, view.model()->tables(), searched);
    expectSameRules(direct.best.rules, best);
    expectShows(view, direct.best.rules);
    EXPECT_NEAR(report.at("best_nll").get<double>(), direct.best.measured, 1e-6);
    EXPECT_NEAR(report.at("start_nll").get<double>(), direct.start.measured, 1e-6);
    EXPECT_EQ(report.at("measured").size(), direct.measured.size());
    EXPECT_LE(direct.best.measured, direct.start.measured);
    EXPECT_LE(core::costFraction(view.model()->estimate(), core::CostKind::Params), kBudget + 1e-9);
    EXPECT_TRUE(view.statusText().contains(QString("%1 policies measured").arg(direct.measured.size())))
        << view.statusText().toStdString();
    EXPECT_TRUE(view.statusText().contains(QString::number(direct.best.measured, 'f', 5)))
        << view.statusText().toStdString();

    // One undoable step back to the search's choice.
    EXPECT_EQ(view.undoStack()->count(), undoSteps + 1);
    view.undoStack()->undo();
    expectShows(view, searched);
}

// Cancel, a missing file, too few tokens and an over-budget start all leave the rules as they
// were; errors show the core's message.
TEST(PolicyView, RefineCancelledOrFailedLeavesThePolicyAsItWas)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    const auto& fx = refineFixture();
    ASSERT_FALSE(fx.project.empty()) << fx.why;
    PolicyView view;
    ASSERT_NO_FATAL_FAILURE(openSearched(view, 0.6));
    const auto searched = view.model()->rules();
    const int undoSteps = view.undoStack()->count();
    auto* button = view.findChild<QPushButton*>("refineButton");
    ASSERT_NE(button, nullptr);
    auto unchanged = [&] {
        expectShows(view, searched);
        EXPECT_EQ(view.undoStack()->count(), undoSteps);
        EXPECT_FALSE(view.isRefining());
        EXPECT_TRUE(button->isEnabled());
    };

    // Cancelled before the first measurement finishes: nothing applied.
    gui::DataChoice data;
    data.file = QString::fromStdString(fx.heldOut.string());
    data.maxTokens = 1024;
    QSignalSpy finished(&view, &PolicyView::refineFinished);
    ASSERT_TRUE(view.runRefine(data, 24));
    view.cancelRefine();
    ASSERT_TRUE(finished.wait(60000));
    EXPECT_TRUE(finished.back().at(0).toBool());
    EXPECT_TRUE(finished.back().at(1).toString().isEmpty());
    EXPECT_TRUE(view.statusText().contains("cancelled")) << view.statusText().toStdString();
    unchanged();

    // A file that is not there: the core's error, shown and signalled.
    QSignalSpy failed(&view, &PolicyView::actionFailed);
    data.file = QString::fromStdString((fx.project.parent_path() / "missing.u16").string());
    ASSERT_TRUE(view.runRefine(data, 4));
    ASSERT_TRUE(finished.wait(60000));
    EXPECT_FALSE(finished.back().at(0).toBool());
    EXPECT_TRUE(finished.back().at(1).toString().contains("missing.u16"))
        << finished.back().at(1).toString().toStdString();
    ASSERT_EQ(failed.size(), 1);
    EXPECT_TRUE(failed.front().front().toString().contains("missing.u16"));
    EXPECT_TRUE(view.statusText().contains("missing.u16"));
    unchanged();

    // Fewer tokens than two windows of 256.
    data.file = QString::fromStdString(fx.heldOut.string());
    data.maxTokens = 300;
    ASSERT_TRUE(view.runRefine(data, 4));
    ASSERT_TRUE(finished.wait(60000));
    EXPECT_TRUE(finished.back().at(1).toString().contains("expected at least 512 (two windows)"))
        << finished.back().at(1).toString().toStdString();
    unchanged();

    // A start over the budget cannot be refined in it: the button says why, nothing starts.
    view.findChild<QDoubleSpinBox*>("autoBudget")->setValue(0.3);
    EXPECT_FALSE(button->isEnabled());
    EXPECT_TRUE(view.refineBlocker().contains("over the budget")) << view.refineBlocker().toStdString();
    EXPECT_FALSE(view.runRefine(data, 4));
    EXPECT_FALSE(view.isRefining());
    view.findChild<QDoubleSpinBox*>("autoBudget")->setValue(0.6);
    EXPECT_TRUE(button->isEnabled());
}

// Without a project (data the benchmarks show) there is nothing to measure with; a project whose
// run is not converted yet says so, in the workbench's words.
TEST(PolicyView, RefineNeedsAConvertedProject)
{
    test::TempDir tmp;
    const auto file = makeProject(tmp);
    PolicyView view;
    view.setProperty("quiet", true);
    auto* button = view.findChild<QPushButton*>("refineButton");
    ASSERT_NE(button, nullptr);
    EXPECT_FALSE(button->isEnabled());
    auto unsaved = gui::ProjectSession::readPolicyData(QString::fromStdString(file.string()));
    ASSERT_TRUE(unsaved.error.isEmpty()) << unsaved.error.toStdString();
    unsaved.path.clear();
    view.setData(unsaved);
    ASSERT_EQ(view.model()->rowCount(), kLayers);
    EXPECT_FALSE(button->isEnabled());
    EXPECT_FALSE(view.refineBlocker().isEmpty());
    EXPECT_FALSE(view.runRefine(gui::DataChoice{}, 4));

    // The synthetic project has profiles but no converted layers.
    ASSERT_NO_FATAL_FAILURE(openView(view, file));
    EXPECT_TRUE(button->isEnabled()) << view.refineBlocker().toStdString();
    const auto rules = view.model()->rules();
    QSignalSpy finished(&view, &PolicyView::refineFinished);
    gui::DataChoice data;
    data.selfSample = 1024;
    ASSERT_TRUE(view.runRefine(data, 4));
    ASSERT_TRUE(finished.wait(60000));
    const QString error = finished.front().at(1).toString();
    EXPECT_TRUE(error.contains("unfinished layers")) << error.toStdString();
    EXPECT_TRUE(error.contains("Convert view")) << error.toStdString();
    expectSameRules(view.model()->rules(), rules);
}

// Labels of points close together would pile up into a blot: of overlapping labels only the first
// is drawn (uniform before stored before measured), labels apart are all drawn, and the CSV export
// keeps every label.
TEST(TradeoffPlot, OverlappingLabelsAreNotDrawnOnTopOfEachOther)
{
    widgets::TradeoffPlot plot;
    plot.resize(600, 400);
    plot.show();
    plot.setFront({{0.1, 1.0}, {0.5, 0.1}, {1.0, 0.01}});
    plot.setUniform({{0.125, 0.8}, {1.0, 0.012}}, {"k=1", "k=8"});
    auto measured = [&](int n, double dx, double dy) {
        QVector<QPair<QPointF, QPointF>> pairs;
        QStringList labels;
        for (int i = 0; i < n; ++i) {
            const QPointF p(0.2 + dx * i, 0.5 * std::pow(dy, i));
            pairs << qMakePair(p, p);
            labels << QString("measured %1").arg(i);
        }
        plot.setMeasured(pairs, labels);
        plot.replotNow();
        return plot.visibleLabels();
    };
    auto crowded = measured(20, 0.001, 1.0);
    EXPECT_TRUE(crowded.contains("k=1") && crowded.contains("k=8")) << crowded.join(", ").toStdString();
    EXPECT_EQ(crowded.filter("measured").size(), 1) << crowded.join(", ").toStdString();
    int inCsv = 0;
    for (const auto& row : plot.csvTable().rows)
        inCsv += row.back().startsWith("measured") ? 1 : 0;
    EXPECT_EQ(inCsv, 20);
    auto apart = measured(3, 0.3, 0.1);
    EXPECT_EQ(apart.filter("measured").size(), 3) << apart.join(", ").toStdString();
}
