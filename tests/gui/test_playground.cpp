// The Playground tab, offscreen, on the real tinystories260K model converted and profiled by the
// CLI: dense and converted generation side by side, its per-token routing equal to `ladimo route
// --json` and core::routeProject for the same tokens and policy, Policy view edits re-routing the
// shown text in the same event-loop turn without regenerating, Stop within 100 ms, and an event
// loop that never stalls 100 ms while generating.
#include <QElapsedTimer>
#include <QSignalSpy>
#include <QSlider>
#include <QTableView>
#include <QTest>
#include <QTimer>
#include <QUndoStack>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "mainwindow.h"
#include "model/llama.h"
#include "playgroundview.h"
#include "policytablemodel.h"
#include "policyview.h"
#include "project/route.h"
#include "testutil.h"
#include "widgets/tokenlayermap.h"

using namespace ladimo;
using gui::MainWindow;
using gui::PlaygroundView;
using gui::PolicyTableModel;

namespace {

// tinystories260K converted (2 epochs on 4096 calibration tokens) and profiled by the CLI, with a
// stored policy "mixed" of static and top-p rules; made once. Empty when the data is absent or
// the CLI failed (`why`).
struct Fixture {
    std::string project;
    std::string why;
};

const Fixture& fixture()
{
    static test::TempDir tmp;
    static const Fixture f = [] {
        Fixture f;
        const auto tiny = test::sharedData() / "tinystories260K";
        const std::string data = " --data " + (tiny / "calib.u16").string() + " --max-tokens 4096";
        const std::string project = (tmp / "tiny.ladimo").string();
        for (const std::string& args :
             {"convert " + tiny.string() + data + " --epochs 2 --router-epochs 2 --experts 8 --train-top-k 6 --project "
                  + project,
              "profile " + project + data + " --sensitivity-tokens 0",
              "policy " + project + " --set \"0:2,1:p0.6,2:3,3:p0.8:1-4,4:1\" --name mixed"}) {
            const auto r = test::runLadimo(args);
            if (r.status != 0) {
                f.why = args + ": " + r.out;
                return f;
            }
        }
        f.project = project;
        return f;
    }();
    return f;
}

// The window on the fixture, its Playground loaded and the Policy view on policy "mixed".
void openWindow(MainWindow& w)
{
    const auto& fx = fixture();
    ASSERT_TRUE(fx.why.empty()) << fx.why;
    w.setProperty("quiet", true);
    w.resize(1400, 900);
    w.show(); // clicks need geometry
    QSignalSpy opened(&w, &MainWindow::modelOpened);
    QSignalSpy loaded(w.playgroundView(), &PlaygroundView::modelLoaded);
    QSignalSpy failed(w.playgroundView(), &PlaygroundView::loadFailed);
    w.openPath(QString::fromStdString(fx.project));
    ASSERT_TRUE(opened.wait(20000));
    if (loaded.isEmpty())
        ASSERT_TRUE(loaded.wait(20000)) << (failed.isEmpty() ? std::string("timeout")
                                                             : failed.front().front().toString().toStdString());
    ASSERT_TRUE(w.policyView()->selectPolicy("mixed"));
    ASSERT_TRUE(w.selectView("playground"));
    // The window's first paint and the views' deferred work after opening, before anything is timed.
    EXPECT_TRUE(QTest::qWaitForWindowExposed(&w));
    QTest::qWait(200);
}

// Generates from `prompt` and waits until both models finished and the text is routed.
void generateAndWait(PlaygroundView& p, const QString& prompt, double temperature, int maxTokens, bool stopAtEnd)
{
    p.setPrompt(prompt);
    p.setSampling(temperature, maxTokens, 7, stopAtEnd);
    QSignalSpy finished(&p, &PlaygroundView::generationFinished);
    QSignalSpy routed(&p, &PlaygroundView::routed);
    ASSERT_TRUE(p.generate()) << p.statusText().toStdString();
    ASSERT_TRUE(finished.wait(60000)) << p.statusText().toStdString();
    EXPECT_FALSE(finished.front().at(0).toBool());
    ASSERT_EQ(finished.front().at(1).toString().toStdString(), "");
    if (routed.isEmpty())
        ASSERT_TRUE(routed.wait(10000));
}

std::string joinIds(const std::vector<int64_t>& ids)
{
    std::string s;
    for (auto id : ids)
        s += (s.empty() ? "" : ",") + std::to_string(id);
    return s;
}

QSlider* sliderOf(gui::PolicyView& view, int row)
{
    return qobject_cast<QSlider*>(view.table()->indexWidget(view.model()->index(row, PolicyTableModel::SettingColumn)));
}

} // namespace

TEST(Playground, GeneratesDenseAndPolicySideBySideAndRoutesAsTheCli)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    LADIMO_REQUIRE_SPM();
    MainWindow w;
    ASSERT_NO_FATAL_FAILURE(openWindow(w));
    auto& p = *w.playgroundView();
    QSignalSpy streamed(&p, &PlaygroundView::tokenStreamed);
    ASSERT_NO_FATAL_FAILURE(generateAndWait(p, "Once upon a time", 0.0, 40, true));

    // Both models continued the same prompt, streamed token by token, each at a measured rate.
    const auto loadedModel = core::loadRouteModel(fixture().project, {});
    const auto& model = *loadedModel;
    const auto prompt = core::tokensOfText(model, "Once upon a time");
    const auto dense = p.denseIds(), converted = p.convertedIds();
    ASSERT_GT(dense.size(), prompt.size());
    ASSERT_GT(converted.size(), prompt.size());
    EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), dense.begin()));
    EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), converted.begin()));
    int streamedDense = 0, streamedConverted = 0;
    for (const auto& s : streamed)
        (s.at(0).toBool() ? streamedConverted : streamedDense) += 1;
    EXPECT_EQ(streamedDense, static_cast<int>(dense.size() - prompt.size()));
    EXPECT_EQ(streamedConverted, static_cast<int>(converted.size() - prompt.size()));
    EXPECT_GT(p.tokensPerSecond(false), 0);
    EXPECT_GT(p.tokensPerSecond(true), 0);
    EXPECT_TRUE(p.denseText().startsWith("Once upon a time")) << p.denseText().toStdString();
    // Greedy: the dense side is what the dense model generates alone, the converted side what the
    // converted model generates under the policy.
    core::PlaygroundGenerateOptions g;
    g.maxNew = 40;
    g.temperature = 0;
    EXPECT_EQ(core::generateWith(model, prompt, nullptr, g), dense);
    const auto rules = w.policyView()->model()->rules();
    EXPECT_EQ(core::describeRules(rules, model.experts()), "k=2 p=0.60 k=3 p=0.80 [1..4] k=1");
    EXPECT_EQ(core::generateWith(model, prompt, &rules, g), converted);

    // The shown routing is the converted text's, equal to `ladimo route --json` on the same ids
    // and policy, token by token and layer by layer.
    ASSERT_NE(p.routing(), nullptr);
    EXPECT_EQ(p.routedIds(), converted);
    const auto& shown = *p.routing();
    const auto r = test::runLadimo(
        "route " + fixture().project + " --ids " + joinIds(converted) + " --policy mixed --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto cli = nlohmann::json::parse(r.out);
    ASSERT_EQ(cli["per_token"].size(), shown.tokens.size());
    EXPECT_EQ(cli["activated_ffn_parameters"].get<int64_t>(), shown.parameters);
    for (std::size_t t = 0; t < shown.tokens.size(); ++t) {
        const auto& a = shown.tokens[t];
        const auto& b = cli["per_token"][t];
        ASSERT_EQ(a.id, b["id"].get<int64_t>());
        EXPECT_NEAR(a.klToDense, b["kl_to_dense"].get<double>(), 1e-9);
        for (std::size_t l = 0; l < a.layers.size(); ++l) {
            const auto& bl = b["layers"][l];
            ASSERT_EQ(a.layers[l].experts, bl["experts"].get<std::vector<int>>()) << "token " << t << " layer " << l;
            const auto bw = bl["weights"].get<std::vector<double>>();
            for (std::size_t e = 0; e < bw.size(); ++e)
                EXPECT_NEAR(a.layers[l].weights[e], bw[e], 1e-9);
            EXPECT_EQ(a.layers[l].parameters, bl["activated_ffn_parameters"].get<int64_t>());
        }
    }
    // And equal to core::routeProject with the Policy view's rules given explicitly.
    core::ProjectRouteRequest req;
    req.projectFile = fixture().project;
    req.ids = converted;
    req.rules.rules = rules;
    const auto direct = core::routeProject(req);
    ASSERT_EQ(direct.tokens.size(), shown.tokens.size());
    for (std::size_t t = 0; t < shown.tokens.size(); ++t)
        for (std::size_t l = 0; l < shown.tokens[t].layers.size(); ++l)
            EXPECT_EQ(direct.tokens[t].layers[l].experts, shown.tokens[t].layers[l].experts);

    // The text, its tooltips and the heatmap show it; a heatmap click selects the token.
    auto* map = p.heatmap();
    ASSERT_EQ(map->tokenCount(), static_cast<int>(converted.size()));
    ASSERT_EQ(map->layerCount(), 5);
    for (int l = 0; l < 5; ++l)
        EXPECT_EQ(map->value(l, 3), shown.tokens[3].layers[static_cast<std::size_t>(l)].k);
    const QString tip = p.tokenToolTip(3);
    EXPECT_TRUE(tip.contains(QString("layer 1: e%1").arg(shown.tokens[3].layers[1].experts.front())))
        << tip.toStdString();
    EXPECT_TRUE(p.routedHtml().contains("href=\"tok:3\""));
    QSignalSpy selected(&p, &PlaygroundView::tokenSelected);
    map->replotNow();
    const QPoint at = map->pixelForCell(2, 4);
    QWidget* child = map->childAt(at);
    ASSERT_NE(child, nullptr);
    QTest::mouseClick(child, Qt::LeftButton, {}, child->mapFrom(map, at));
    ASSERT_EQ(selected.size(), 1);
    EXPECT_EQ(p.selectedToken(), 4);
    EXPECT_EQ(map->selectedColumn(), 4);
    p.selectToken(2);
    EXPECT_EQ(map->selectedColumn(), 2);
    // Exported like every plot: the picture, and a row per token with a column per layer.
    test::TempDir out;
    EXPECT_TRUE(map->save(QString::fromStdString((out / "map.png").string())));
    EXPECT_TRUE(map->save(QString::fromStdString((out / "map.svg").string())));
    EXPECT_GT(std::filesystem::file_size(out / "map.png"), 1000u);
    EXPECT_GT(std::filesystem::file_size(out / "map.svg"), 1000u);
    const auto csv = map->csvTable();
    EXPECT_EQ(csv.header, (QStringList{"index", "token", "layer 0", "layer 1", "layer 2", "layer 3", "layer 4"}));
    ASSERT_EQ(csv.rows.size(), static_cast<qsizetype>(converted.size()));
    EXPECT_EQ(csv.rows[3][2].toInt(), shown.tokens[3].layers[0].k);
    EXPECT_TRUE(map->saveCsv(QString::fromStdString((out / "map.csv").string())));
    // Routing the prompt itself equals `ladimo route --prompt`.
    ASSERT_TRUE(p.routePrompt());
    const auto rp
        = test::runLadimo("route " + fixture().project + " --prompt \"Once upon a time\" --policy mixed --json", true);
    ASSERT_EQ(rp.status, 0) << rp.out;
    EXPECT_EQ(nlohmann::json::parse(rp.out)["activated_ffn_parameters"].get<int64_t>(), p.routing()->parameters);
    EXPECT_EQ(p.routedIds(), prompt);
}

TEST(Playground, PolicySliderReroutesInTheSameEventLoopTurnWithoutRegenerating)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    LADIMO_REQUIRE_SPM();
    MainWindow w;
    ASSERT_NO_FATAL_FAILURE(openWindow(w));
    auto& p = *w.playgroundView();
    ASSERT_NO_FATAL_FAILURE(generateAndWait(p, "Once upon a time", 0.8, 32, true));
    const int routes = p.routeCount(), generations = p.generationCount();
    const QString text = p.convertedText();
    const auto ids = p.routedIds();
    for (const auto& t : p.routing()->tokens)
        ASSERT_EQ(t.layers[0].k, 2);

    // Layer 0's slider from k=2 to k=5: checked before any event is processed.
    w.selectView("policy");
    QSlider* slider = sliderOf(*w.policyView(), 0);
    ASSERT_NE(slider, nullptr);
    slider->setValue(5);
    EXPECT_EQ(p.routeCount(), routes + 1);
    EXPECT_EQ(p.generationCount(), generations);
    EXPECT_FALSE(p.isGenerating());
    EXPECT_EQ(p.routedIds(), ids);
    EXPECT_EQ(p.convertedText(), text);
    for (const auto& t : p.routing()->tokens)
        ASSERT_EQ(t.layers[0].k, 5);
    EXPECT_EQ(p.heatmap()->value(0, 1), 5);
    // The same as routing these ids under the new rules directly.
    const auto model = core::loadRouteModel(fixture().project, {});
    const auto direct = core::routeTokens(*model, ids, w.policyView()->model()->rules());
    EXPECT_EQ(direct.parameters, p.routing()->parameters);
    // Undo from the Playground: back to k=2, re-routed again.
    w.session()->undoStack()->undo();
    EXPECT_EQ(p.routeCount(), routes + 2);
    for (const auto& t : p.routing()->tokens)
        ASSERT_EQ(t.layers[0].k, 2);
    // Redo and undo by keyboard from the Playground (focus off the prompt box, whose own undo wins).
    ASSERT_TRUE(w.selectView("playground"));
    w.activateWindow();
    ASSERT_TRUE(QTest::qWaitForWindowActive(&w));
    p.heatmap()->setFocus();
    QTest::keyClick(p.heatmap(), Qt::Key_Z, Qt::ControlModifier | Qt::ShiftModifier);
    EXPECT_EQ(p.routeCount(), routes + 3);
    EXPECT_EQ(p.routing()->tokens.front().layers[0].k, 5);
    QTest::keyClick(p.heatmap(), Qt::Key_Z, Qt::ControlModifier);
    EXPECT_EQ(p.routeCount(), routes + 4);
    EXPECT_EQ(p.routing()->tokens.front().layers[0].k, 2);
    EXPECT_EQ(p.generationCount(), generations);
}

TEST(Playground, StopCancelsWithin100MsAndTheEventLoopNeverStalls)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    LADIMO_REQUIRE_SPM();
    MainWindow w;
    ASSERT_NO_FATAL_FAILURE(openWindow(w));
    auto& p = *w.playgroundView();

    // A whole generation (to the end of the context) with a 10 ms ticker: no gap reaches 100 ms,
    // the final routing included.
    {
        QElapsedTimer clock;
        qint64 last = 0, worst = 0;
        int ticks = 0;
        QTimer ticker;
        ticker.setInterval(10);
        QObject::connect(&ticker, &QTimer::timeout, [&] {
            const qint64 now = clock.elapsed();
            worst = std::max(worst, now - last);
            last = now;
            ++ticks;
        });
        p.setPrompt("Once upon a time");
        p.setSampling(0.8, 200, 3, false);
        QSignalSpy routed(&p, &PlaygroundView::routed);
        clock.start();
        ticker.start();
        ASSERT_TRUE(p.generate());
        ASSERT_TRUE(routed.wait(60000)) << p.statusText().toStdString();
        ticker.stop();
        worst = std::max(worst, clock.elapsed() - last);
        EXPECT_EQ(p.convertedIds().size(), 5u + 200u) << "BOS + 4 prompt tokens + 200";
        EXPECT_GT(ticks, 2);
        EXPECT_LT(worst, 100) << "the event loop stalled " << worst << " ms while generating";
    }

    // Stop while both stream: both end within 100 ms, cancelled, and the text stays.
    p.setSampling(0.8, 4000, 5, false);
    QSignalSpy streamed(&p, &PlaygroundView::tokenStreamed);
    QSignalSpy finished(&p, &PlaygroundView::generationFinished);
    ASSERT_TRUE(p.generate());
    EXPECT_TRUE(p.isGenerating());
    while (streamed.size() < 10)
        ASSERT_TRUE(streamed.wait(10000));
    ASSERT_TRUE(p.isGenerating()) << "the generation should still run (up to the 512-token context)";
    QElapsedTimer stop;
    qint64 ms = -1;
    // Timed at the signal itself (the routing of the text so far follows it in the same turn).
    QObject::connect(&p, &PlaygroundView::generationFinished, &p, [&] { ms = stop.elapsed(); });
    stop.start();
    p.stop();
    ASSERT_TRUE(finished.wait(5000));
    EXPECT_LT(ms, 100) << "Stop took " << ms << " ms";
    EXPECT_TRUE(finished.front().at(0).toBool()) << "reported as cancelled";
    EXPECT_FALSE(p.isGenerating());
    EXPECT_LT(p.convertedIds().size(), 512u);
    EXPECT_TRUE(p.statusText().contains("Stopped")) << p.statusText().toStdString();
}

TEST(Playground, BadInputSaysWhy)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    LADIMO_REQUIRE_SPM();
    MainWindow w;
    ASSERT_NO_FATAL_FAILURE(openWindow(w));
    auto& p = *w.playgroundView();
    p.setPrompt("   ");
    EXPECT_FALSE(p.generate());
    EXPECT_TRUE(p.statusText().contains("prompt is empty")) << p.statusText().toStdString();
    EXPECT_FALSE(p.routePrompt());
    EXPECT_EQ(p.routing(), nullptr);
    // Nothing loaded: a folder, not a project.
    PlaygroundView bare(nullptr, nullptr);
    EXPECT_FALSE(bare.generate());
    EXPECT_TRUE(bare.statusText().contains("open a project")) << bare.statusText().toStdString();
}
