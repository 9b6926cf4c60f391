// The real `ladimo` program on real data: what a user or a script sees.
#include <array>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/fileutil.h"
#include "store/project.h"
#include "ggufreader.h"
#include "testutil.h"

namespace {

using ladimo::test::runCommand;
using ladimo::test::runLadimo;

std::string stories() { return (ladimo::test::sharedData() / "tinystories260K").string(); }

} // namespace

TEST(Cli, GreedyGenerationPrintsReferenceIds)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/reference.json");
    const auto ref = nlohmann::json::parse(
        ladimo::core::readTextFile(ladimo::test::sharedData() / "tinystories260K/reference.json"));
    std::string expected;
    for (const auto& id : ref["greedy_from_bos_32"])
        expected += (expected.empty() ? "" : ",") + std::to_string(id.get<int64_t>());
    const auto r = runLadimo("generate " + stories() + " --prompt-ids 1 --max-new 32 --temperature 0 --ids");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out, expected + "\n");
}

// The real model writes a real story: greedy from BOS decodes (with its own tokenizer.model) to
// the start of the story its data README quotes.
TEST(Cli, GreedyGenerationFromBosTellsTheReadmeStory)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/tokenizer.model");
    const auto r = runLadimo("generate " + stories() + " --prompt-ids 1 --max-new 32 --temperature 0", true);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(r.out,
              "Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One\n");
}

TEST(Cli, EvalJsonHasTheContractKeys)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    const auto r = runLadimo(
        "eval " + stories() + " --data " + stories() + "/calib.u16 --seq-len 256 --max-tokens 2560 --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    for (const char* key : {"perplexity", "nll", "tokens", "tokens_per_second"})
        EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["tokens"].get<int64_t>(), 10 * 255);
    EXPECT_NEAR(j["perplexity"].get<double>(), std::exp(j["nll"].get<double>()), 1e-9);
}

TEST(Cli, InspectJsonCountsParameters)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/config.json");
    const auto r = runLadimo("inspect " + stories() + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["parameters"]["total"].get<int64_t>(), 260032);
    EXPECT_EQ(j["parameters"]["stored"].get<int64_t>(), 260032);
    EXPECT_EQ(j["layers"].size(), 5u);
}

TEST(Cli, ErrorsNameTheProblemAndExitNonZero)
{
    ladimo::test::TempDir tmp;
    auto r = runLadimo("inspect " + tmp.path().string());
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.out.find("config.json"), std::string::npos) << r.out;
    r = runLadimo("eval " + tmp.path().string());
    EXPECT_NE(r.status, 0);
    r = runLadimo("frobnicate");
    EXPECT_NE(r.status, 0);
}

TEST(Cli, EveryCommandHasHelp)
{
    for (const char* c : {"inspect", "eval", "generate", "bench", "pretrain"}) {
        const auto r = runLadimo(std::string(c) + " --help");
        EXPECT_EQ(r.status, 0) << c;
        EXPECT_NE(r.out.find("Usage"), std::string::npos) << c << ": " << r.out;
    }
}

TEST(Cli, PerplexityMatchesAnIndependentPythonImplementation)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    if (std::system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "python3-torch is not installed (tools/deps.sh installs it)";
    const std::string data = stories() + "/calib.u16";
    const auto ours = runLadimo("eval " + stories() + " --data " + data + " --seq-len 256 --json", true);
    ASSERT_EQ(ours.status, 0) << ours.out;
    const std::string script = (ladimo::test::sourceDir() / "tests/tools/reference_llama.py").string();
    const auto ref
        = runCommand("/usr/bin/python3 " + script + " " + stories() + " --data " + data + " --seq-len 256", true);
    ASSERT_EQ(ref.status, 0) << ref.out;
    const auto a = nlohmann::json::parse(ours.out);
    const auto b = nlohmann::json::parse(ref.out);
    EXPECT_EQ(a["tokens"], b["tokens"]);
    EXPECT_NEAR(a["nll"].get<double>(), b["nll"].get<double>(), 1e-5);
    EXPECT_NEAR(a["perplexity"].get<double>(), b["perplexity"].get<double>(), 1e-4 * b["perplexity"].get<double>());
}

TEST(Cli, ConvertResumesToTheSameLayersAsAnUninterruptedRun)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const std::string args = "convert " + stories() + " --data " + stories()
        + "/calib.u16 --max-tokens 4096 --epochs 2 --router-epochs 2 --e2e-steps 0 --project ";
    const std::string a = (tmp / "a.ladimo").string(), b = (tmp / "b.ladimo").string();
    auto r = runLadimo(args + a);
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo(args + b);
    ASSERT_EQ(r.status, 0) << r.out;
    // Layers 3 and 4 of b are lost (as after a crash); verify --repair marks them pending.
    std::filesystem::remove(tmp / "b.ladimo.d/runs/1/layer-003.safetensors");
    std::filesystem::remove(tmp / "b.ladimo.d/runs/1/layer-004.safetensors");
    r = runLadimo("project verify " + b + " --repair");
    EXPECT_NE(r.out.find("layer-003"), std::string::npos) << r.out;
    r = runLadimo(args + b);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("resuming run #1: 2 of 5 layers left"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("layer 0:"), std::string::npos) << "finished layers must be skipped";
    for (const char* f : {"layer-000.safetensors", "layer-003.safetensors", "layer-004.safetensors"})
        EXPECT_EQ(ladimo::core::sha256File(tmp / "a.ladimo.d/runs/1" / f),
                  ladimo::core::sha256File(tmp / "b.ladimo.d/runs/1" / f))
            << f;
    r = runLadimo("project show " + b + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto shown = nlohmann::json::parse(r.out);
    ASSERT_EQ(shown["layers"].size(), 5u);
    for (const auto& l : shown["layers"])
        EXPECT_EQ(l["status"], "done");
    // Other settings start a second run in the same project instead of mixing layers.
    r = runLadimo(args + b + " --experts 4 --train-top-k 3");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("run #2"), std::string::npos) << r.out;
    // The converted model evaluates with the measures of a conversion. The default is 32 experts;
    // every token pays the router's 32 x 64 parameters on top of its experts' (3 x 64 x 172 dense).
    const double router = 32.0 * 64 / (3.0 * 64 * 172);
    r = runLadimo("eval " + a + " --data " + stories() + "/calib.u16 --max-tokens 2048 --top-k 32 --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_NEAR(j["activated_ffn_fraction"].get<double>(), 1.0 + router, 1e-12);
    EXPECT_GE(j["kl_to_dense"].get<double>(), 0.0);
    r = runLadimo("eval " + a + " --data " + stories() + "/calib.u16 --max-tokens 2048 --top-k 16 --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    // 16 of 32 experts of 5 or 6 neurons each: close to half the FFN plus the router, exactly counted.
    EXPECT_NEAR(nlohmann::json::parse(r.out)["activated_ffn_fraction"].get<double>(), 0.5 + router, 0.02);
}

// The end-to-end stage runs after the layers, lowers the KL to dense on its batches, and leaves
// the run pointing at its own weight files, which verify and evaluate like any others.
TEST(Cli, EndToEndStageIsRecordedWithItsCurveAndItsOwnWeightFiles)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const std::string p = (tmp / "p.ladimo").string();
    auto r = runLadimo("convert " + stories() + " --data " + stories()
                       + "/calib.u16 --max-tokens 4096 --epochs 1 --router-epochs 2 --e2e-steps 30 --e2e-windows 4 "
                         "--project "
                       + p);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("end-to-end: KL to dense"), std::string::npos) << r.out;
    {
        auto project = ladimo::core::Project::open(
            p, {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::Exists});
        const auto stage = project.endToEnd(1);
        ASSERT_TRUE(stage.has_value());
        EXPECT_EQ(stage->steps, 30);
        ASSERT_EQ(stage->curve.size(), 30u);
        EXPECT_LT(stage->finalKl, stage->initialKl);
        for (const auto& l : project.layers(1)) {
            EXPECT_NE(l.weightsPath.find("-e2e.safetensors"), std::string::npos) << l.weightsPath;
            EXPECT_TRUE(std::filesystem::exists(project.absolutePath(l.weightsPath))) << l.weightsPath;
        }
        EXPECT_EQ(project.run(1).status, ladimo::core::RunStatus::Done);
    }
    r = runLadimo("project verify " + p);
    EXPECT_EQ(r.status, 0) << r.out;
    r = runLadimo("eval " + p + " --data " + stories() + "/calib.u16 --max-tokens 1024 --no-timing --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_GE(nlohmann::json::parse(r.out)["kl_to_dense"].get<double>(), 0.0);
}

// Shared neurons end to end on the bundled demo model (present in every checkout): the run
// records them, every layer file holds them, `eval` counts them in every token's activated
// parameters exactly, the end-to-end stage trains with them, and formats that cannot hold them
// refuse to export, saying why.
TEST(Cli, SharedNeuronsAreConvertedCountedAndRefusedByMixtralExports)
{
    ladimo::test::TempDir tmp;
    const std::string demo = (ladimo::test::sourceDir() / "resources" / "demo").string();
    const std::string p = (tmp / "p.ladimo").string();
    auto r = runLadimo("convert " + demo + " --self-sample 2048 --seq-len 128 --epochs 1 --router-epochs 2 --experts 8 "
                       + "--shared-neurons 192 --train-top-k 3 --e2e-steps 4 --e2e-windows 2 --project " + p);
    ASSERT_EQ(r.status, 0) << r.out;
    {
        auto project = ladimo::core::Project::open(
            p, {ladimo::core::Project::Access::ReadOnly, ladimo::core::Project::Verify::Exists});
        EXPECT_EQ(project.run(1).extra.at("shared_neurons").get<int64_t>(), 192);
        ASSERT_TRUE(project.endToEnd(1).has_value());
    }
    // Demo: 4 layers, hidden 256, 768 neurons: 192 shared and 8 experts of 72. Top-3 activates,
    // per token and layer, the router (8 x 256), the shared neurons and 3 experts.
    r = runLadimo("eval " + p + " --self-sample 512 --seq-len 128 --top-k 3 --no-timing --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    const double expected = (8.0 * 256 + 3.0 * 256 * 192 + 3 * 3.0 * 256 * 72) / (3.0 * 256 * 768);
    EXPECT_NEAR(j.at("activated_ffn_fraction").get<double>(), expected, 1e-9);
    for (const std::string format : {"hf-mixtral", "gguf"}) {
        const std::string out = (tmp / ("out-" + format)).string() + (format == "gguf" ? ".gguf" : "");
        r = runLadimo("export " + p + " --format " + format + " --top-k 3 --out " + out);
        EXPECT_NE(r.status, 0) << format;
        EXPECT_NE(r.out.find("shared"), std::string::npos) << r.out;
        EXPECT_FALSE(std::filesystem::exists(out)) << out;
    }
    // Qwen2-MoE's shared expert holds them (hard gating: the k is chosen, the notes say what changes).
    const std::string qwen = (tmp / "qwen").string();
    r = runLadimo("export " + p + " --format hf-qwen2-moe --top-k 3 --out " + qwen);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto config = nlohmann::json::parse(ladimo::core::readTextFile(qwen + "/config.json"));
    EXPECT_EQ(config.at("shared_expert_intermediate_size").get<int64_t>(), 192);
    EXPECT_EQ(config.at("num_experts").get<int64_t>(), 8);
    // So does llama.cpp's qwen2moe GGUF layout; the report names its k and what hard gating changes.
    const std::string gguf = (tmp / "qwen.gguf").string();
    r = runLadimo("export " + p + " --format gguf-qwen2moe --top-k 3 --out " + gguf);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("qwen2moe.expert_used_count 3: NOT exact"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("hard gating"), std::string::npos) << r.out;
    const auto g = ladimo::test::GgufFile::load(gguf);
    EXPECT_EQ(g.at("general.architecture").string(), "qwen2moe");
    EXPECT_EQ(g.at("qwen2moe.expert_shared_feed_forward_length").integer(), 192);
    EXPECT_EQ(g.tensor("blk.0.ffn_down_shexp.weight").size(1), 192);
}

TEST(Cli, CtrlCDuringConversionKeepsFinishedLayersAndResumesToTheSameResult)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const std::string args = "convert " + stories() + " --data " + stories()
        + "/calib.u16 --max-tokens 8192 --epochs 6 --router-epochs 2 --experts 8 --train-top-k 6 --e2e-steps 0 "
          "--project ";
    const std::string a = (tmp / "a.ladimo").string(), b = (tmp / "b.ladimo").string();
    auto r = runLadimo(args + a);
    ASSERT_EQ(r.status, 0) << r.out;
    // Interrupt b with SIGINT as soon as its first layer is reported done (mid-layer 1).
    const std::string log = (tmp / "b.log").string();
    const std::string script = std::string(LADIMO_BIN_DIR) + "/ladimo " + args + b + " > " + log + " 2>&1 & pid=$!; "
        + "for i in $(seq 1 600); do grep -q 'layer 0:' " + log + " && break; sleep 0.05; done; "
        + "kill -INT $pid; wait $pid; echo exit=$?";
    ladimo::core::atomicWriteFile(tmp / "interrupt.sh", script + "\n");
    r = runCommand("sh " + (tmp / "interrupt.sh").string());
    EXPECT_NE(r.out.find("exit=130"), std::string::npos) << r.out << ladimo::core::readTextFile(log);
    EXPECT_NE(ladimo::core::readTextFile(log).find("cancelled"), std::string::npos);
    r = runLadimo("project show " + b + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    auto shown = nlohmann::json::parse(r.out);
    EXPECT_EQ(shown["layers"][0]["status"], "done");
    for (std::size_t l = 1; l < shown["layers"].size(); ++l)
        EXPECT_NE(shown["layers"][l]["status"], "running") << l;
    r = runLadimo(args + b);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("resuming run #1"), std::string::npos) << r.out;
    for (int l = 0; l < 5; ++l) {
        const std::string f = "runs/1/layer-00" + std::to_string(l) + ".safetensors";
        EXPECT_EQ(ladimo::core::sha256File(tmp / ("a.ladimo.d/" + f)),
                  ladimo::core::sha256File(tmp / ("b.ladimo.d/" + f)))
            << f;
    }
}

// Two CPU workers convert two layers at once. Their results are reproducible bit for bit, and
// they agree with one worker's to rounding: one worker splits each MoE block over the CPU team
// with single-threaded BLAS products, while two workers leave the BLAS's thread count alone
// (CpuTeam::Solo), and OpenBLAS's last bits depend on its thread count.
TEST(Cli, TwoCpuWorkersAreReproducibleAndAgreeWithOne)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const std::string args = "convert " + stories() + " --data " + stories()
        + "/calib.u16 --max-tokens 4096 --epochs 3 --router-epochs 2 --experts 8 --train-top-k 6 --e2e-steps 0 "
          "--project ";
    auto layers = [&](const std::string& name) {
        auto r = runLadimo("project show " + (tmp / name).string() + " --json", true);
        EXPECT_EQ(r.status, 0) << r.out;
        return nlohmann::json::parse(r.out)["layers"];
    };
    auto r = runLadimo(args + (tmp / "one.ladimo").string() + " --device cpu");
    ASSERT_EQ(r.status, 0) << r.out;
    for (const char* name : {"two.ladimo", "again.ladimo"}) {
        r = runLadimo(args + (tmp / name).string() + " --device cpu,cpu");
        ASSERT_EQ(r.status, 0) << r.out;
    }
    const auto one = layers("one.ladimo"), two = layers("two.ladimo"), again = layers("again.ladimo");
    ASSERT_EQ(one.size(), 5u);
    ASSERT_EQ(two.size(), 5u);
    ASSERT_EQ(again.size(), 5u);
    for (std::size_t l = 0; l < 5; ++l) {
        const std::string f = "runs/1/layer-00" + std::to_string(l) + ".safetensors";
        EXPECT_EQ(ladimo::core::sha256File(tmp / ("two.ladimo.d/" + f)),
                  ladimo::core::sha256File(tmp / ("again.ladimo.d/" + f)))
            << f;
        const double a = one[l]["relative_error"].get<double>(), b = two[l]["relative_error"].get<double>();
        EXPECT_NEAR(a / b, 1.0, 0.02) << "layer " << l << ": one worker " << a << ", two workers " << b;
    }
    r = runLadimo("project show " + (tmp / "two.ladimo").string() + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(nlohmann::json::parse(r.out)["run"]["device"], "cpu,cpu");
}

TEST(Cli, ProfileStoresConsistentRoutingDistributions)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const std::string project = (tmp / "p.ladimo").string();
    auto r = runLadimo("convert " + stories() + " --data " + stories()
                       + "/calib.u16 --max-tokens 4096 --epochs 2 --router-epochs 2 --experts 8 --train-top-k 6 "
                         "--e2e-steps 0 --project "
                       + project);
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo("profile " + project + " --self-sample 2048 --seed 5 --bins 10 --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto profiles = nlohmann::json::parse(r.out);
    ASSERT_EQ(profiles.size(), 5u);
    for (const auto& p : profiles) {
        const auto tokens = p["tokens"].get<double>();
        EXPECT_EQ(tokens, 2048);
        ASSERT_EQ(p["rank_histograms"].size(), 8u);
        for (const auto& hist : p["rank_histograms"]) {
            double sum = 0;
            for (const auto& c : hist)
                sum += c.get<double>();
            EXPECT_EQ(sum, tokens); // every token has a weight at every rank
        }
        const auto& mass = p["extra"]["cumulative_mass"];
        EXPECT_NEAR(mass[7].get<double>(), 1.0, 1e-6);    // float32 softmax
        EXPECT_GE(mass[0].get<double>(), 1.0 / 8 - 1e-9); // the top-1 weight is at least the mean
        double load = 0;
        for (const auto& l : p["expert_load"])
            load += l.get<double>();
        EXPECT_NEAR(load, 1.0, 1e-12);
        const auto& err = p["error_by_k"];
        EXPECT_LT(err[7].get<double>(), err[0].get<double>()); // all experts beat one
        EXPECT_GT(p["entropy"].get<double>(), 0.0);
        EXPECT_LE(p["entropy"].get<double>(), std::log(8.0) + 1e-9);
        const auto& meanK = p["extra"]["mean_k_by_threshold"];
        for (std::size_t i = 1; i < meanK.size(); ++i)
            EXPECT_GE(meanK[i].get<double>(), meanK[i - 1].get<double>()); // higher p, more experts
    }
    r = runLadimo("project show " + project + " --json", true);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("routing_profiles"), std::string::npos);
}

// A tiny pretraining run end to end: the model card states the stored model's configuration (the
// vocabulary and tied embeddings are settled by the tokenizer and the trainer, not the options).
TEST(Cli, PretrainWritesAModelCardThatMatchesTheStoredConfig)
{
    LADIMO_REQUIRE_SHARED("text/austen/persuasion.txt");
    ladimo::test::TempDir tmp;
    const auto text = ladimo::test::sharedData() / "text/austen";
    // Two small training texts cut from the novels, so the tokenizer and the run take seconds.
    const auto cut = [&](const char* novel, const char* name) {
        const auto t = ladimo::core::readTextFile(text / novel).substr(0, 60000);
        const auto p = tmp.path() / name;
        FILE* f = std::fopen(p.string().c_str(), "wb");
        std::fwrite(t.data(), 1, t.size(), f);
        std::fclose(f);
        return p.string();
    };
    const auto train = cut("emma.txt", "train.txt"), validation = cut("persuasion.txt", "validation.txt");
    const auto out = (tmp.path() / "model").string();
    const auto r = runLadimo("pretrain --train " + train + " --validation " + validation + " --out " + out
                                 + " --vocab 512 --hidden 32 --intermediate 64 --layers 1 --heads 2 --kv-heads 1"
                                   " --seq-len 32 --batch 2 --steps 2 --warmup 1 --eval-every 1",
                             true);
    ASSERT_EQ(r.status, 0) << r.out;
    const auto config = nlohmann::json::parse(ladimo::core::readTextFile(tmp.path() / "model/config.json"));
    const auto card = ladimo::core::readTextFile(tmp.path() / "model/README.md");
    EXPECT_EQ(config["vocab_size"].get<int64_t>(), 512);
    EXPECT_NE(card.find("| vocabulary | 512 "), std::string::npos) << card;
    EXPECT_NE(
        card.find(std::string("| tied embeddings | ") + (config["tie_word_embeddings"].get<bool>() ? "yes" : "no")),
        std::string::npos)
        << card;
}
