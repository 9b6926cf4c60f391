// `ladimo project show --json` / `project verify` on a project filled through the store API:
// what a script sees.
#include <array>
#include <cstdio>
#include <fstream>

#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "common/fileutil.h"
#include "store/project.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace ladimo::core;
using ladimo::test::CommandResult;

namespace {

CommandResult runCli(const std::string& args) { return ladimo::test::runLadimo(args); }

} // namespace

TEST(StoreCli, ShowJsonListsTheLatestRunsLayers)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "P.ladimo";
    {
        auto p = Project::create(file);
        SourceModel m;
        m.path = "/models/m";
        m.config = {{"num_hidden_layers", 3}};
        const auto model = p.addModel(m);
        CalibrationSet c;
        c.name = "self";
        c.source = CalibrationSource::SelfSample;
        c.seed = 9;
        c.tokens = 1000;
        p.addCalibrationSet(c);
        ConversionRun old;
        old.modelId = model;
        old.layers = 1;
        p.startRun(old);
        ConversionRun r;
        r.modelId = model;
        r.layers = 3;
        r.experts = 4;
        r.mode = "sequential";
        const auto run = p.startRun(r);
        const auto rel = Project::layerWeightsPath(run, 0);
        atomicWriteFile(p.prepareFile(rel), std::string("w0"));
        p.finishLayer(run, 0, {0.5, 0.1, 2.0, rel, ""}, {{0, 1.0}, {1, 0.5}});
        p.markLayerRunning(run, 1);
        Policy pol;
        pol.name = "k2";
        pol.rules = nlohmann::json::array({{{"top_k", 2}}});
        const auto policy = p.savePolicy(pol);
        Evaluation e;
        e.policyId = policy;
        e.metrics = {{"perplexity", 10.5}};
        p.addEvaluation(e);
        p.addExport({0, "hf", "/out/x", "abc", policy, run, ""});
    }
    const auto r = runCli("project show " + file.string() + " --json");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    ASSERT_EQ(j["layers"].size(), 3u);
    EXPECT_EQ(j["layers"][0]["index"], 0);
    EXPECT_EQ(j["layers"][0]["status"], "done");
    EXPECT_EQ(j["layers"][0]["loss_curve_points"], 2);
    EXPECT_EQ(j["layers"][1]["status"], "running");
    EXPECT_EQ(j["layers"][2]["status"], "pending");
    EXPECT_EQ(j["run"]["id"], 2);
    EXPECT_EQ(j["run"]["experts"], 4);
    EXPECT_EQ(j["run"]["mode"], "sequential");
    EXPECT_EQ(j["model"]["path"], "/models/m");
    EXPECT_EQ(j["calibration_sets"][0]["seed"], 9);
    EXPECT_EQ(j["policies"][0]["name"], "k2");
    EXPECT_EQ(j["evaluations"][0]["metrics"]["perplexity"], 10.5);
    EXPECT_EQ(j["exports"][0]["format"], "hf");
    EXPECT_TRUE(j["problems"].empty());

    // A lost layer file: show still works and names it; verify fails until --repair.
    fs::remove(Project::dataDirFor(file) / "runs/2/layer-000.safetensors");
    const auto j2 = nlohmann::json::parse(runCli("project show " + file.string() + " --json").out);
    ASSERT_EQ(j2["problems"].size(), 1u);
    EXPECT_EQ(j2["problems"][0]["layer"], 0);
    const auto v = runCli("project verify " + file.string());
    EXPECT_EQ(v.status, 1) << v.out;
    EXPECT_NE(v.out.find("run 2 layer 0"), std::string::npos) << v.out;
    EXPECT_EQ(runCli("project verify " + file.string() + " --repair").status, 0);
    const auto j3 = nlohmann::json::parse(runCli("project show " + file.string() + " --json").out);
    EXPECT_EQ(j3["layers"][0]["status"], "pending");
    // The writer that repaired it also found layer 1 left running by a dead process.
    EXPECT_EQ(j3["layers"][1]["status"], "pending");
    EXPECT_EQ(j3["run"]["status"], "interrupted");

    const auto text = runCli("project show " + file.string());
    EXPECT_EQ(text.status, 0);
    EXPECT_NE(text.out.find("layers of run #2"), std::string::npos) << text.out;

    std::ofstream(dir / "notes.ladimo") << "not a project";
    const auto bad = runCli("project show " + (dir / "notes.ladimo").string());
    EXPECT_EQ(bad.status, 1);
    EXPECT_NE(bad.out.find("is not a LaDiMo project"), std::string::npos) << bad.out;
}
