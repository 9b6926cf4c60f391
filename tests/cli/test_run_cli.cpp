// `ladimo run`: the whole pipeline in one command on the bundled demo model (no ../shared
// needed), and its resumption: a rerun takes every finished step from the project.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "testutil.h"

namespace fs = std::filesystem;

namespace {

nlohmann::json parseReport(const std::string& out)
{
    const auto brace = out.find('{');
    EXPECT_NE(brace, std::string::npos) << out;
    return nlohmann::json::parse(out.substr(brace == std::string::npos ? 0 : brace));
}

} // namespace

TEST(RunCli, WholePipelineConvertsTunesEvaluatesExportsAndResumes)
{
    ladimo::test::TempDir tmp;
    const auto demo = (ladimo::test::sourceDir() / "resources" / "demo").string();
    const auto out = tmp.path() / "out";
    const std::string args = "run " + demo + " --out " + out.string()
        + " --self-sample 2048 --experts 4 --train-top-k 3 --epochs 1 --refine-evals 3"
          " --eval-tokens 1024 --budget-params 0.75 --json";
    auto r = ladimo::test::runLadimo(args, /*stdoutOnly=*/true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto first = parseReport(r.out);

    const std::vector<std::string> steps
        = {"convert", "profile", "policy", "evaluate dense", "evaluate policy", "export"};
    ASSERT_EQ(first["steps"].size(), steps.size()) << first.dump(2);
    for (std::size_t i = 0; i < steps.size(); ++i) {
        EXPECT_EQ(first["steps"][i]["step"], steps[i]);
        EXPECT_FALSE(first["steps"][i]["reused"].get<bool>()) << steps[i];
    }
    EXPECT_NE(first["steps"][1]["summary"].get<std::string>().find("self-sample 2048, seed 1234"), std::string::npos)
        << "the profile defaults to the run's calibration data: " << first["steps"][1]["summary"];
    EXPECT_EQ(first["layers"], 4);
    EXPECT_EQ(first["experts"], 4);
    // The policy fits the budget by the estimate, and the measured activation agrees with it.
    const double estimated = first["estimated_activated_ffn_fraction"].get<double>();
    EXPECT_LE(estimated, 0.75 + 1e-9);
    EXPECT_GT(estimated, 0.4);
    EXPECT_NEAR(first["converted"]["activated_ffn_fraction"].get<double>(), estimated, 0.1);
    // Dense and converted are measured on the same held-out tokens; the converted model is worse,
    // but not broken.
    const double dense = first["dense"]["perplexity"].get<double>();
    const double conv = first["converted"]["perplexity"].get<double>();
    EXPECT_GT(dense, 1.0);
    EXPECT_GT(conv, dense * 0.99);
    EXPECT_LT(conv, dense * 3);
    EXPECT_GT(first["converted"]["kl_to_dense"].get<double>(), 0.0);
    EXPECT_EQ(first["dense"]["tokens"], first["converted"]["tokens"]);
    EXPECT_NE(first["evaluation_data"].get<std::string>().find("seed 1235"), std::string::npos)
        << "evaluation must not reuse the calibration seed: " << first["evaluation_data"];
    // The export and the report file.
    EXPECT_TRUE(fs::exists(out / "model" / "config.json"));
    EXPECT_TRUE(fs::exists(out / "project.ladimo"));
    EXPECT_TRUE(fs::exists(out / "report.txt"));
    std::ifstream in(out / "report.json");
    const auto stored = nlohmann::json::parse(in);
    EXPECT_EQ(stored["converted"]["perplexity"], first["converted"]["perplexity"]);
    EXPECT_EQ(stored["rules"], first["rules"]);

    // The registry's small format: the policy as a JSON report, through the same export command.
    const auto policyJson = out / "policy.json";
    r = ladimo::test::runLadimo("export " + (out / "project.ladimo").string() + " --format policy-json --policy "
                                    + first["policy"].get<std::string>() + " --out " + policyJson.string() + " --json",
                                true);
    ASSERT_EQ(r.status, 0) << r.out;
    std::ifstream pj(policyJson);
    const auto policyDoc = nlohmann::json::parse(pj);
    EXPECT_EQ(policyDoc["report"], "ladimo-policy-report");
    EXPECT_EQ(policyDoc["name"], first["policy"]);
    EXPECT_EQ(policyDoc["layers"], 4);
    ASSERT_EQ(policyDoc["per_layer"].size(), 4u);
    EXPECT_EQ(policyDoc["per_layer"][0]["experts"], 4);
    r = ladimo::test::runLadimo("export " + (out / "project.ladimo").string() + " --format nonsense --out "
                                + (out / "x").string());
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("expected hf-mixtral, hf-qwen2-moe, gguf, gguf-qwen2moe, hf-llama, gguf-llama or policy-json"),
              std::string::npos)
        << r.out;

    // A rerun does nothing again and reports the same figures.
    r = ladimo::test::runLadimo(args, true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto second = parseReport(r.out);
    ASSERT_EQ(second["steps"].size(), steps.size());
    for (const auto& s : second["steps"])
        EXPECT_TRUE(s["reused"].get<bool>()) << s.dump();
    EXPECT_EQ(second["run"], first["run"]);
    EXPECT_EQ(second["rules"], first["rules"]);
    EXPECT_EQ(second["converted"]["perplexity"], first["converted"]["perplexity"]);
    EXPECT_EQ(second["dense"]["perplexity"], first["dense"]["perplexity"]);

    // Another budget on the same project: the conversion and profile are reused, the rest is new.
    r = ladimo::test::runLadimo(
        "run " + demo + " --out " + (tmp.path() / "out50").string() + " --project " + (out / "project.ladimo").string()
            + " --self-sample 2048 --experts 4 --train-top-k 3 --epochs 1 --refine-evals 0 --eval-tokens 1024"
              " --budget-params 0.5 --json",
        true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto third = parseReport(r.out);
    EXPECT_TRUE(third["steps"][0]["reused"].get<bool>());
    EXPECT_TRUE(third["steps"][1]["reused"].get<bool>());
    EXPECT_FALSE(third["steps"][2]["reused"].get<bool>());
    EXPECT_LE(third["estimated_activated_ffn_fraction"].get<double>(), 0.5 + 1e-9);
    EXPECT_TRUE(third["steps"][3]["reused"].get<bool>()) << "the dense evaluation on the same data is reused";
    EXPECT_FALSE(third["steps"][4]["reused"].get<bool>());

    // Other conversion settings on the same project: a new run with a policy of its own (policy
    // names are unique in a project), beside the first run's.
    r = ladimo::test::runLadimo(
        "run " + demo + " --out " + (tmp.path() / "out2").string() + " --project " + (out / "project.ladimo").string()
            + " --self-sample 2048 --experts 4 --train-top-k 3 --epochs 2 --refine-evals 0 --eval-tokens 1024"
              " --budget-params 0.75 --json",
        true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto fourth = parseReport(r.out);
    EXPECT_FALSE(fourth["steps"][0]["reused"].get<bool>());
    EXPECT_NE(fourth["run"], first["run"]);
    EXPECT_NE(fourth["policy"], first["policy"]);
    EXPECT_EQ(fourth["policy"].get<std::string>().rfind("run" + std::to_string(fourth["run"].get<int>()) + "-", 0), 0u)
        << fourth["policy"];
}

// With the training k left to the budget, the pipeline distils for its parameter budget (4
// experts on the demo: k 1 fits 50% with the router, k 2 fits 75%); --train-active overrides it.
TEST(RunCli, AutomaticTrainingKFollowsTheBudget)
{
    ladimo::test::TempDir tmp;
    const auto demo = (ladimo::test::sourceDir() / "resources" / "demo").string();
    const auto project = (tmp.path() / "p.ladimo").string();
    const std::string common = " --project " + project
        + " --self-sample 512 --seq-len 128 --experts 4 --epochs 1 --refine-evals 0 --eval-tokens 256"
          " --budget-params 0.5 --json";
    auto r = ladimo::test::runLadimo("run " + demo + " --out " + (tmp.path() / "a").string() + common, true);
    ASSERT_EQ(r.status, 0) << r.out;
    r = ladimo::test::runLadimo(
        "run " + demo + " --out " + (tmp.path() / "b").string() + common + " --train-active 0.75", true);
    ASSERT_EQ(r.status, 0) << r.out;
    r = ladimo::test::runLadimo("project show " + project + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto shown = nlohmann::json::parse(r.out);
    std::vector<std::pair<double, int>> runs; // (train_active, trained k) of each run
    for (const auto& run : shown.at("runs"))
        runs.emplace_back(run.at("extra").at("train_active").get<double>(), run.at("train_top_k").get<int>());
    ASSERT_EQ(runs.size(), 2u) << r.out;
    EXPECT_EQ(runs[0], std::make_pair(0.5, 1));
    EXPECT_EQ(runs[1], std::make_pair(0.75, 2));
}

TEST(RunCli, BadArgumentsAreNamed)
{
    ladimo::test::TempDir tmp;
    const auto demo = (ladimo::test::sourceDir() / "resources" / "demo").string();
    auto r = ladimo::test::runLadimo("run " + demo + " --out " + tmp.path().string() + " --format hf-llama");
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("--format"), std::string::npos) << r.out;
    r = ladimo::test::runLadimo("run " + (tmp.path() / "nomodel").string() + " --out " + tmp.path().string());
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.out.find("nomodel"), std::string::npos) << r.out;
}
