// Scale-out of a conversion (core/store/assemble.h): workers with disjoint --layers filling in one
// project concurrently, `ladimo assemble`, `ladimo capture`, the cost model, the deploy recipes.
#include <chrono>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/fileutil.h"
#include "convert/costmodel.h"
#include "store/assemble.h"
#include "store/project.h"
#include "testutil.h"

namespace {

using ladimo::test::runCommand;
using ladimo::test::runLadimo;
namespace core = ladimo::core;

std::string stories() { return (ladimo::test::sharedData() / "tinystories260K").string(); }
std::string ladimoBin() { return std::string(LADIMO_BIN_DIR) + "/ladimo"; }

// Small settings, as the Cli tests use: a conversion of tinystories260K takes seconds.
std::string convertArgs(const std::string& extra = "--experts 8 --train-top-k 6")
{
    return "convert " + stories() + " --data " + stories()
        + "/calib.u16 --max-tokens 4096 --epochs 2 --router-epochs 2 " + extra + " --project ";
}

std::string layerFile(int l)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "runs/1/layer-%03d.safetensors", l);
    return buf;
}

double secondsOf(const std::function<void()>& f)
{
    const auto t = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Every layer of run 1 of both projects: same weights file bytes, same recorded outcome.
void expectSameRun(const std::filesystem::path& a, const std::filesystem::path& b, int layers)
{
    auto pa = core::Project::open(a, {core::Project::Access::ReadOnly, core::Project::Verify::Checksums});
    auto pb = core::Project::open(b, {core::Project::Access::ReadOnly, core::Project::Verify::Checksums});
    const auto la = pa.layers(1), lb = pb.layers(1);
    ASSERT_EQ(la.size(), static_cast<std::size_t>(layers));
    ASSERT_EQ(lb.size(), la.size());
    for (std::size_t i = 0; i < la.size(); ++i) {
        SCOPED_TRACE("layer " + std::to_string(i));
        EXPECT_EQ(la[i].status, core::LayerStatus::Done);
        EXPECT_EQ(lb[i].status, core::LayerStatus::Done);
        EXPECT_EQ(la[i].weightsPath, lb[i].weightsPath);
        EXPECT_EQ(la[i].weightsSha256, lb[i].weightsSha256);
        EXPECT_EQ(core::sha256File(pa.absolutePath(la[i].weightsPath)),
                  core::sha256File(pb.absolutePath(lb[i].weightsPath)));
        EXPECT_EQ(la[i].finalLoss, lb[i].finalLoss); // exact: the same float64 through JSON
        EXPECT_EQ(la[i].relativeError, lb[i].relativeError);
        const auto ca = pa.lossCurve(1, static_cast<int>(i)), cb = pb.lossCurve(1, static_cast<int>(i));
        ASSERT_EQ(ca.size(), cb.size());
        ASSERT_FALSE(ca.empty());
        for (std::size_t k = 0; k < ca.size(); ++k) {
            EXPECT_EQ(ca[k].step, cb[k].step);
            EXPECT_EQ(ca[k].loss, cb[k].loss);
        }
    }
    EXPECT_EQ(pb.run(1).status, core::RunStatus::Done);
}

} // namespace

TEST(Scale, TwoConcurrentWorkersPlusAssembleEqualOneProcess)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto one = tmp / "one.ladimo", two = tmp / "two.ladimo";
    ladimo::test::CommandResult r;
    const double single = secondsOf([&] { r = runLadimo(convertArgs() + one.string()); });
    ASSERT_EQ(r.status, 0) << r.out;

    r = runLadimo(convertArgs() + two.string() + " --prepare");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("prepared run #1"), std::string::npos) << r.out;
    // Two worker processes at once, disjoint ranges, no writer among them.
    const std::string worker = ladimoBin() + " " + convertArgs() + two.string() + " --layers ";
    const std::string script = worker + "0-2 > " + (tmp / "a.log").string() + " 2>&1 & a=$!; " + worker + "3,4 > "
        + (tmp / "b.log").string() + " 2>&1 & b=$!; wait $a; ea=$?; wait $b; eb=$?; echo exits=$ea,$eb";
    const double parallel = secondsOf([&] { r = runCommand(script); });
    const std::string logs = core::readTextFile(tmp / "a.log") + core::readTextFile(tmp / "b.log");
    ASSERT_NE(r.out.find("exits=0,0"), std::string::npos) << r.out << logs;
    EXPECT_NE(logs.find("layers 0-2 (3 to do)"), std::string::npos) << logs;
    EXPECT_NE(logs.find("layers 3-4 (2 to do)"), std::string::npos) << logs;
    std::printf("[ scale    ] single process %.1f s, two concurrent workers %.1f s (tinystories260K, 5 layers)\n",
                single, parallel);
    {
        // The workers left files only; the database still has every layer pending.
        auto p = core::Project::open(two, {core::Project::Access::ReadOnly, core::Project::Verify::None});
        for (const auto& l : p.layers(1)) {
            EXPECT_EQ(l.status, core::LayerStatus::Pending) << l.layer;
            EXPECT_TRUE(std::filesystem::exists(p.absolutePath(core::layerSidecarPath(1, l.layer)))) << l.layer;
        }
    }
    r = runLadimo("assemble " + two.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("recorded layers [0-4] from workers"), std::string::npos) << r.out;
    expectSameRun(one, two, 5);
    // Assembling again changes nothing; a rerun of a worker finds its layers finished.
    r = runLadimo("assemble " + two.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("[0-4] recorded before"), std::string::npos) << r.out;
    r = runLadimo(convertArgs() + two.string() + " --layers 3-4");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("already finished"), std::string::npos) << r.out;
}

TEST(Scale, AssembleRefusesATamperedLayerAndNamesIt)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto p = tmp / "p.ladimo";
    auto r = runLadimo(convertArgs() + p.string() + " --prepare");
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo(convertArgs() + p.string() + " --layers 0-4");
    ASSERT_EQ(r.status, 0) << r.out;
    const auto file = tmp / ("p.ladimo.d/" + layerFile(2));
    const std::string original = core::readTextFile(file);
    std::string bytes = original;
    bytes[bytes.size() - 3] ^= 0x01; // one bit of a weight
    core::atomicWriteFile(file, bytes);
    r = runLadimo("assemble " + p.string());
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("layer 2:"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("layer-002.safetensors"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("SHA-256"), std::string::npos) << r.out;
    {
        // Nothing recorded: not even the four good layers.
        auto proj = core::Project::open(p, {core::Project::Access::ReadOnly, core::Project::Verify::None});
        for (const auto& l : proj.layers(1))
            EXPECT_EQ(l.status, core::LayerStatus::Pending) << l.layer;
    }
    // A sidecar of other settings is refused too, naming its layer.
    core::atomicWriteFile(file, original);
    const auto sidecar = tmp / ("p.ladimo.d/" + core::layerSidecarPath(1, 4));
    auto j = nlohmann::json::parse(core::readTextFile(sidecar));
    const std::string goodFingerprint = j["fingerprint"];
    j["fingerprint"] = std::string(64, '0');
    core::atomicWriteFile(sidecar, j.dump());
    r = runLadimo("assemble " + p.string());
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("layer 4:"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("other settings"), std::string::npos) << r.out;
    j["fingerprint"] = goodFingerprint;
    core::atomicWriteFile(sidecar, j.dump());
    r = runLadimo("assemble " + p.string());
    EXPECT_EQ(r.status, 0) << r.out;
    auto proj = core::Project::open(p, {core::Project::Access::ReadOnly, core::Project::Verify::Checksums});
    for (const auto& l : proj.layers(1))
        EXPECT_EQ(l.status, core::LayerStatus::Done) << l.layer;
}

TEST(Scale, AssembleOfAPartialRunRecordsWhatIsThereAndFails)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto p = tmp / "p.ladimo";
    auto r = runLadimo(convertArgs() + p.string() + " --prepare");
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo(convertArgs() + p.string() + " --layers 1");
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo("assemble " + p.string());
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("recorded layers [1] from workers"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("layers 0,2-4 have no result yet"), std::string::npos) << r.out;
    auto proj = core::Project::open(p, {core::Project::Access::ReadOnly, core::Project::Verify::Checksums});
    EXPECT_EQ(proj.layer(1, 1).status, core::LayerStatus::Done);
    EXPECT_EQ(proj.layer(1, 0).status, core::LayerStatus::Pending);
}

TEST(Scale, WorkersNeedAPreparedRunAndAValidLayerSpec)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto p = tmp / "p.ladimo";
    auto r = runLadimo(convertArgs() + p.string() + " --prepare");
    ASSERT_EQ(r.status, 0) << r.out;
    // Other settings than the prepared run: no run to work on.
    r = runLadimo(convertArgs("--experts 4 --train-top-k 3") + p.string() + " --layers 0");
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("--prepare"), std::string::npos) << r.out;
    for (const char* spec : {"5", "3-1", "a-b", "1,,2"}) {
        r = runLadimo(convertArgs() + p.string() + " --layers " + spec);
        EXPECT_EQ(r.status, 1) << spec << ": " << r.out;
        EXPECT_NE(r.out.find(std::string("--layers '") + spec + "'"), std::string::npos) << r.out;
    }
    r = runLadimo(convertArgs() + p.string() + " --layers 0 --mode sequential");
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find("parallel"), std::string::npos) << r.out;
}

TEST(Scale, CaptureThenConvertEqualsConvertAlone)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto alone = tmp / "alone.ladimo", reuse = tmp / "reuse.ladimo";
    auto r = runLadimo(convertArgs() + alone.string());
    ASSERT_EQ(r.status, 0) << r.out;
    const std::string capture
        = "capture " + stories() + " --data " + stories() + "/calib.u16 --max-tokens 4096 --project " + reuse.string();
    // Layers 0-2 captured ahead; 3 and 4 are left to the conversion's own dense pass.
    r = runLadimo(capture + " --layers 0-2");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("captured layers 0-2"), std::string::npos) << r.out;
    for (int l = 0; l < 3; ++l)
        EXPECT_TRUE(std::filesystem::exists(tmp / ("reuse.ladimo.d/" + core::Project::activationsPath(1, l)))) << l;
    EXPECT_FALSE(std::filesystem::exists(tmp / ("reuse.ladimo.d/" + core::Project::activationsPath(1, 3))));
    r = runLadimo(capture + " --layers 1-2");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("(1-2 already there)"), std::string::npos) << r.out;
    r = runLadimo(convertArgs() + reuse.string());
    ASSERT_EQ(r.status, 0) << r.out;
    for (int l = 0; l < 5; ++l) {
        const bool reused
            = r.out.find("layer " + std::to_string(l) + ": captured activations from") != std::string::npos;
        EXPECT_EQ(reused, l < 3) << l << ": " << r.out;
    }
    expectSameRun(alone, reuse, 5);
}

TEST(Scale, WorkersReuseCapturedActivationsToo)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto alone = tmp / "alone.ladimo", p = tmp / "p.ladimo";
    auto r = runLadimo(convertArgs() + alone.string());
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo(convertArgs() + p.string() + " --prepare");
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo("capture " + stories() + " --data " + stories() + "/calib.u16 --max-tokens 4096 --project "
                  + p.string() + " --layers 2-4");
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo(convertArgs() + p.string() + " --layers 2-4");
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("layer 4: captured activations from"), std::string::npos) << r.out;
    r = runLadimo(convertArgs() + p.string() + " --layers 0-1");
    ASSERT_EQ(r.status, 0) << r.out;
    r = runLadimo("assemble " + p.string());
    ASSERT_EQ(r.status, 0) << r.out;
    expectSameRun(alone, p, 5);
}

TEST(Scale, DryRunPrintsOnlyTheCostModel)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto p = tmp / "p.ladimo";
    auto r = runLadimo(convertArgs() + p.string() + " --device cpu,cpu --dry-run", true);
    ASSERT_EQ(r.status, 0) << r.out;
    for (const char* key : {"cost model: 5 layer(s), 4096 calibration tokens", "FLOPs per layer", "memory per layer",
                            "X/Y 2.0 MiB", "device cpu (2 workers)", "estimated wall time", "assumptions"})
        EXPECT_NE(r.out.find(key), std::string::npos) << key << "\n" << r.out;
    EXPECT_FALSE(std::filesystem::exists(p)) << "a dry run must not create the project";
}

TEST(Scale, CostModelCountsFollowTheShapes)
{
    core::CostInputs in;
    in.config.hiddenSize = 64;
    in.config.intermediateSize = 172;
    in.config.numLayers = 5;
    in.config.numHeads = 8;
    in.config.numKvHeads = 4;
    in.config.headDim = 8;
    in.tokens = 4096;
    in.settings.experts = 8;
    in.settings.distill.trainTopK = 6; // the formulas below: k drawn in [4, 8], no all-experts term
    in.settings.distill.randomK = true;
    in.settings.distill.fullKWeight = 0;
    in.settings.distill.epochs = 2;
    in.settings.distill.routerEpochs = 2;
    in.settings.distill.batch = 512;
    in.settings.seqLen = 256;
    in.layers = {0, 1, 2, 3, 4};
    in.captureLayers = in.layers;
    const auto e = core::estimateCost(in, /*measure=*/false);
    EXPECT_EQ(e.distillSteps, 2 * 8);
    EXPECT_DOUBLE_EQ(e.meanActiveExperts, 6.0); // k uniform in [4, 8]
    EXPECT_EQ(e.memoryPerLayer.activations, 2 * 4096 * 64 * 4);
    EXPECT_EQ(e.memoryPerLayer.experts, (3 * 8 * 22 * 64 + 8 * 64) * 4); // ceil(172/8) = 22 wide
    EXPECT_EQ(e.memoryPerLayer.adam, 2 * e.memoryPerLayer.gradients);
    // Distillation: 3x forward of 6 experts of 22 neurons + the router, per token and epoch, + 2 error passes at k=6.
    const double fwd = 6 * 2 * 3 * 64 * 22 + 2 * 64 * 8;
    EXPECT_DOUBLE_EQ(e.flopsPerLayer.distill, 2 * 4096 * 3 * fwd + 2 * 4096 * fwd);
    // Twice the epochs: the distillation share doubles but for the fixed error passes.
    in.settings.distill.epochs = 4;
    const auto e4 = core::estimateCost(in, false);
    EXPECT_DOUBLE_EQ(e4.flopsPerLayer.distill - 2 * 4096 * fwd, 2 * (e.flopsPerLayer.distill - 2 * 4096 * fwd));
    // Captured activations on disk: no dense pass left to pay.
    in.captureLayers.clear();
    EXPECT_EQ(core::estimateCost(in, false).flopsPerLayer.capture, 0.0);
    // Measured: positive rates; two workers on one CPU share it and take longer per layer.
    in.captureLayers = in.layers;
    in.settings.devices = {torch::kCPU};
    const auto m1 = core::estimateCost(in, true);
    ASSERT_EQ(m1.devices.size(), 1u);
    EXPECT_GT(m1.devices[0].matmulFlops, 1e6);
    EXPECT_GT(m1.devices[0].stepSeconds, 0.0);
    EXPECT_GT(m1.wallSeconds, m1.captureSeconds);
    EXPECT_NEAR(m1.wallSeconds, m1.captureSeconds + 5 * m1.layerSeconds, 1e-9 * m1.wallSeconds);
}

TEST(Scale, KubernetesManifestIsAValidIndexedJob)
{
    if (std::system("/usr/bin/python3 -c 'import yaml' >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "python3-yaml is not installed (apt-get install python3-yaml)";
    const auto src = ladimo::test::sourceDir();
    const auto r = runCommand("/usr/bin/python3 " + (src / "tests/tools/check_k8s_job.py").string() + " "
                              + (src / "deploy/k8s/convert-indexed-job.yaml").string());
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("ok:"), std::string::npos) << r.out;
    // The checker itself rejects a broken manifest.
    ladimo::test::TempDir tmp;
    std::string yaml = core::readTextFile(src / "deploy/k8s/convert-indexed-job.yaml");
    const auto pos = yaml.find("completionMode: Indexed");
    ASSERT_NE(pos, std::string::npos);
    yaml.replace(pos, std::string("completionMode: Indexed").size(), "completionMode: NonIndexed");
    core::atomicWriteFile(tmp / "bad.yaml", yaml);
    const auto bad = runCommand("/usr/bin/python3 " + (src / "tests/tools/check_k8s_job.py").string() + " "
                                + (tmp / "bad.yaml").string());
    EXPECT_NE(bad.status, 0) << bad.out;
    EXPECT_NE(bad.out.find("completionMode"), std::string::npos) << bad.out;
}
