// Issue 9: numerical and resource faults during distillation. NaN losses are retried from the
// epoch's start with a lower learning rate, then fail the layer with the reason while the other
// layers go on; out of memory halves the batch. Faults are injected through
// DistillOptions::faultHook and poisoned captured activations.
#include <sys/mount.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <map>

#include <torch/torch.h>

#include "convert/experts.h"
#include "convert/convert.h"
#include "common/fileutil.h"
#include "model/llama.h"
#include "store/project.h"
#include "testutil.h"
#include "tinymodel.h"

using namespace ladimo::core;

namespace {

struct Tiny {
    MoeLayer layer;
    torch::Tensor x, y;
};

Tiny tinyLayer(uint64_t seed = 0)
{
    torch::manual_seed(static_cast<int64_t>(seed));
    const int64_t H = 8, I = 16, T = 96;
    DenseFfn ffn{torch::randn({I, H}) * 0.3, torch::randn({I, H}) * 0.3, torch::randn({H, I}) * 0.3};
    Tiny t;
    t.x = torch::randn({T, H});
    t.y = torch::matmul(torch::silu(torch::matmul(t.x, ffn.gate.t())) * torch::matmul(t.x, ffn.up.t()), ffn.down.t());
    t.layer = buildMoeLayer(ffn, partitionNeurons(ffn, t.x, 4, Partition::Contiguous, seed), 4, Gating::Hard);
    return t;
}

DistillOptions quick()
{
    DistillOptions o;
    o.epochs = 3;
    o.routerEpochs = 2;
    o.batch = 32;
    o.trainTopK = 2;
    o.randomK = false;
    o.minBatch = 4;
    return o;
}

bool allFinite(const MoeLayer& l)
{
    for (const auto* t : {&l.router, &l.gate, &l.up, &l.down})
        if (!torch::isfinite(*t).all().item<bool>())
            return false;
    return true;
}

using ladimo::testmodel::tinyCalibration;
using ladimo::testmodel::tinyModel;

void expectSameTensors(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b,
                       const std::string& what)
{
    ASSERT_EQ(a.size(), b.size()) << what;
    for (std::size_t l = 0; l < a.size(); ++l) {
        ASSERT_EQ(a[l].sizes(), b[l].sizes()) << what << " layer " << l;
        EXPECT_TRUE(torch::allclose(a[l], b[l], 1e-5, 1e-6))
            << what << " layer " << l << ": max difference " << (a[l] - b[l]).abs().max().item<double>();
    }
}

void throwOom() { TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory (injected)"); }

} // namespace

TEST(NumericalFaults, NanLossIsRetriedFromTheLastGoodStateWithALowerLearningRate)
{
    auto clean = tinyLayer();
    auto o = quick();
    fitRouter(clean.layer, clean.x, o);
    auto faulty = clean;
    faulty.layer.gate = clean.layer.gate.clone();
    faulty.layer.up = clean.layer.up.clone();
    faulty.layer.down = clean.layer.down.clone();
    const auto reference = distill(clean.layer, clean.x, clean.y, o);
    EXPECT_TRUE(reference.recovered.empty());

    int injected = 0;
    o.faultHook = [&](int64_t step, int64_t, torch::Tensor& loss) {
        if (step == 4 && injected++ == 0) // epoch 1 (3 steps per epoch), once
            loss = loss * std::numeric_limits<double>::quiet_NaN();
    };
    const auto r = distill(faulty.layer, faulty.x, faulty.y, o);
    ASSERT_EQ(r.recovered.size(), 1u);
    EXPECT_NE(r.recovered[0].find("epoch 1"), std::string::npos) << r.recovered[0];
    EXPECT_NE(r.recovered[0].find("nan"), std::string::npos) << r.recovered[0];
    EXPECT_DOUBLE_EQ(r.lrScale, 0.1);
    EXPECT_TRUE(allFinite(faulty.layer));
    EXPECT_TRUE(std::isfinite(r.finalLoss));
    // Epoch 0 is the same as without the fault (restored, not re-run); the curve has one entry
    // per step, none from the abandoned attempt.
    ASSERT_EQ(r.lossCurve.size(), reference.lossCurve.size());
    for (std::size_t i = 0; i < r.lossCurve.size(); ++i) {
        EXPECT_EQ(r.lossCurve[i].first, static_cast<int64_t>(i));
        if (i < 3)
            EXPECT_DOUBLE_EQ(r.lossCurve[i].second, reference.lossCurve[i].second);
    }
    // The lower rate still trains: better than before distillation.
    EXPECT_LT(r.finalLoss, r.initialLoss);
}

TEST(NumericalFaults, PersistentNanFailsWithTheReasonAfterTheRetries)
{
    auto t = tinyLayer();
    auto o = quick();
    fitRouter(t.layer, t.x, o);
    int calls = 0;
    o.faultHook = [&](int64_t, int64_t, torch::Tensor& loss) {
        ++calls;
        loss = loss + std::numeric_limits<double>::infinity();
    };
    try {
        distill(t.layer, t.x, t.y, o);
        FAIL() << "expected NumericalFault";
    } catch (const NumericalFault& e) {
        const std::string msg = e.what();
        EXPECT_NE(msg.find("diverged"), std::string::npos) << msg;
        EXPECT_NE(msg.find("2 retries"), std::string::npos) << msg;
    }
    EXPECT_EQ(calls, 3); // the first try and two retries, each stopped at its first batch
    EXPECT_TRUE(allFinite(t.layer)) << "the layer is left at its last good state";
}

TEST(NumericalFaults, NonFiniteInputsAreRefusedAtOnce)
{
    auto t = tinyLayer();
    auto o = quick();
    t.x[5][3] = std::numeric_limits<float>::quiet_NaN();
    try {
        distill(t.layer, t.x, t.y, o);
        FAIL() << "expected NumericalFault";
    } catch (const NumericalFault& e) {
        EXPECT_NE(std::string(e.what()).find("calibration FFN input holds 1 NaN/Inf value"), std::string::npos)
            << e.what();
    }
}

TEST(ResourceFaults, OutOfMemoryHalvesTheBatchAndRetries)
{
    auto t = tinyLayer();
    auto o = quick();
    fitRouter(t.layer, t.x, o);
    std::vector<int64_t> seen;
    o.faultHook = [&](int64_t, int64_t batch, torch::Tensor&) {
        seen.push_back(batch);
        if (batch > 8)
            TORCH_CHECK_WITH(OutOfMemoryError, false, "CUDA out of memory (injected)");
    };
    const auto r = distill(t.layer, t.x, t.y, o);
    EXPECT_EQ(r.batch, 8);
    ASSERT_EQ(r.recovered.size(), 2u);
    EXPECT_NE(r.recovered[0].find("batch 32, retried with 16"), std::string::npos) << r.recovered[0];
    EXPECT_EQ(r.lossCurve.size(), 3u * 96 / 8);
    EXPECT_TRUE(allFinite(t.layer));

    // Below the smallest batch allowed: an Error that says so.
    auto u = tinyLayer();
    fitRouter(u.layer, u.x, o);
    o.minBatch = 16;
    try {
        distill(u.layer, u.x, u.y, o);
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("batch of 16"), std::string::npos) << e.what();
    }
}

TEST(NumericalFaults, APoisonedLayerFailsAndTheOthersAreConverted)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(128);
    ConvertSettings s;
    s.experts = 4;
    s.partition = Partition::Contiguous;
    s.seqLen = 32;
    s.distill = quick();
    std::vector<torch::Tensor> xs, ys;
    captureFfn(model, calibration, s.seqLen, &xs, &ys);
    for (const auto& devices :
         {std::vector<torch::Device>{torch::kCPU}, std::vector<torch::Device>{torch::kCPU, torch::kCPU}}) {
        s.devices = devices;
        ConvertCallbacks cb;
        cb.loadCaptured = [&](int l, torch::Tensor* x, torch::Tensor* y) {
            *x = xs[static_cast<std::size_t>(l)].clone();
            *y = ys[static_cast<std::size_t>(l)];
            if (l == 1)
                (*x)[0][0] = std::numeric_limits<float>::infinity(); // a poisoned activation
            return true;
        };
        std::vector<int> doneLayers;
        std::map<int, std::string> failed;
        cb.onLayerDone = [&](int l, const MoeLayer&, const LayerConversion&) { doneLayers.push_back(l); };
        cb.onLayerFailed = [&](int l, const std::string& why) { failed[l] = why; };
        const auto result = convertModel(model, calibration, s, cb);
        std::sort(doneLayers.begin(), doneLayers.end());
        EXPECT_EQ(doneLayers, (std::vector<int>{0, 2})) << devices.size() << " device(s)";
        ASSERT_EQ(failed.size(), 1u);
        EXPECT_NE(failed[1].find("layer 1: the captured FFN input holds 1 NaN/Inf value"), std::string::npos)
            << failed[1];
        EXPECT_TRUE(result[0].router.defined());
        EXPECT_FALSE(result[1].router.defined());
        EXPECT_TRUE(result[2].router.defined());

        // Without onLayerFailed the fault is thrown, as before.
        cb.onLayerFailed = nullptr;
        EXPECT_THROW(convertModel(model, calibration, s, cb), NumericalFault);
    }
}

// Issue 9: out of memory in the middle of a capture pass (after some layers of that pass were
// recorded) drops the pass's records and runs it again with half the windows; the captured
// activations are those of an un-faulted capture.
TEST(ResourceFaults, OutOfMemoryDuringCaptureHalvesThePassAndKeepsTheSameActivations)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(16 * 20); // 20 windows of 16
    std::vector<torch::Tensor> refX, refY, xs, ys;
    captureFfn(model, calibration, 16, &refX, &refY);

    CaptureOptions o;
    std::vector<int64_t> failedPasses;
    std::vector<std::string> recovered;
    o.faultHook = [&](int layer, int64_t windows) {
        if (layer == 1 && windows > 2) { // layer 0 of this pass is already recorded
            failedPasses.push_back(windows);
            throwOom();
        }
    };
    o.onRecovered = [&](const std::string& what) { recovered.push_back(what); };
    captureFfn(model, calibration, 16, &xs, &ys, o);
    EXPECT_EQ(failedPasses, (std::vector<int64_t>{8, 4}));
    ASSERT_EQ(recovered.size(), 2u);
    EXPECT_NE(recovered[0].find("out of memory with 8 windows per forward pass, retried with 4"), std::string::npos)
        << recovered[0];
    expectSameTensors(xs, refX, "X");
    expectSameTensors(ys, refY, "Y");

    // Only the layers asked for, up to a layer: the same, under the same faults.
    const std::set<int> only = {1};
    std::vector<torch::Tensor> onlyX, onlyY;
    auto onlyOptions = o;
    onlyOptions.upToLayer = 1;
    onlyOptions.only = only;
    captureFfn(model, calibration, 16, &onlyX, &onlyY, onlyOptions);
    ASSERT_EQ(onlyX.size(), 2u);
    EXPECT_FALSE(onlyX[0].defined());
    expectSameTensors({onlyX[1], onlyY[1]}, {refX[1], refY[1]}, "layer 1 only");

    // Out of memory even with one window per pass: an Error that says so.
    o.faultHook = [](int, int64_t) { throwOom(); };
    try {
        captureFfn(model, calibration, 16, &xs, &ys, o);
        FAIL() << "expected an Error";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(
                      "out of memory on cpu capturing FFN activations, even with one window of 16 tokens"),
                  std::string::npos)
            << e.what();
    }
}

// The capture options reach convertModel's own captures (parallel and sequential): a faulted
// conversion gives the layers of an un-faulted one.
TEST(ResourceFaults, OutOfMemoryDuringAConversionsCaptureGivesTheSameLayers)
{
    const auto model = tinyModel();
    const auto calibration = tinyCalibration(16 * 8);
    for (const std::string mode : {"parallel", "sequential"}) {
        ConvertSettings s;
        s.experts = 4;
        s.partition = Partition::Contiguous;
        s.seqLen = 16;
        s.mode = mode;
        s.distill = quick();
        const auto reference = convertModel(model, calibration, s, {});
        int faults = 0;
        s.capture.faultHook = [&](int, int64_t windows) {
            if (windows > 1) {
                ++faults;
                throwOom();
            }
        };
        const auto faulted = convertModel(model, calibration, s, {});
        EXPECT_GT(faults, 0) << mode;
        ASSERT_EQ(faulted.size(), reference.size());
        for (std::size_t l = 0; l < reference.size(); ++l)
            expectSameTensors({faulted[l].router, faulted[l].gate, faulted[l].up, faulted[l].down},
                              {reference[l].router, reference[l].gate, reference[l].up, reference[l].down},
                              mode + " layer " + std::to_string(l));
    }
}

namespace {

// A small tmpfs mounted for the scope (needs root, as in CI); unmounted on the way out.
class SmallTmpfs {
public:
    SmallTmpfs(const std::filesystem::path& dir, const std::string& size) : m_dir(dir)
    {
        std::filesystem::create_directories(dir);
        m_mounted = ::geteuid() == 0 && ::mount("tmpfs", dir.c_str(), "tmpfs", 0, ("size=" + size).c_str()) == 0;
    }
    ~SmallTmpfs()
    {
        if (m_mounted)
            ::umount2(m_dir.c_str(), MNT_DETACH);
    }
    bool mounted() const { return m_mounted; }

private:
    std::filesystem::path m_dir;
    bool m_mounted = false;
};

int64_t twoLayerRun(Project& project)
{
    SourceModel m;
    m.path = "/models/tiny";
    m.weightsSha256 = std::string(64, 'a');
    ConversionRun r;
    r.modelId = project.addModel(m);
    r.layers = 2;
    r.experts = 4;
    return project.startRun(r);
}

// After a save of layer 1 failed on a full disk: nothing half-written (no layer-001 file, no
// temporary), layer 0 intact and verified, layer 1 failed and resumable.
void expectOnlyLayer0Saved(Project& project, int64_t run, const std::filesystem::path& runDir, const std::string& sha0)
{
    std::vector<std::string> names;
    for (const auto& f : std::filesystem::directory_iterator(runDir))
        names.push_back(f.path().filename().string());
    EXPECT_EQ(names, std::vector<std::string>{"layer-000.safetensors"});
    EXPECT_EQ(sha256File(project.absolutePath(Project::layerWeightsPath(run, 0))), sha0);
    EXPECT_TRUE(project.verify().ok()) << project.verify().describe();
    EXPECT_EQ(project.layer(run, 0).status, LayerStatus::Done);
    EXPECT_EQ(project.layer(run, 1).status, LayerStatus::Failed);
    EXPECT_EQ(project.resumableLayers(run), std::vector<int>{1});
}

} // namespace

TEST(ResourceFaults, DiskFullDuringALayerSaveKeepsTheProjectConsistent)
{
    namespace fs = std::filesystem;
    ladimo::test::TempDir dir;
    auto project = Project::create(dir / "P.ladimo");
    const auto run = twoLayerRun(project);
    const auto runDir = dir / ("P.ladimo.d/runs/" + std::to_string(run));
    SmallTmpfs full(runDir, "64k");
    if (!full.mounted())
        GTEST_SKIP() << "needs root to mount a 64 KiB tmpfs as the full disk";

    auto small = tinyLayer(1).layer; // about 2 KiB
    const auto rel0 = Project::layerWeightsPath(run, 0);
    saveMoeLayer(project.prepareFile(rel0), small);
    project.finishLayer(run, 0, {0.1, 0.1, 1, rel0, ""}, {{0, 0.1}});
    const auto sha0 = sha256File(project.absolutePath(rel0));

    MoeLayer big = small; // 4 x 64 x 64 floats x 3 tensors = 192 KiB: does not fit
    big.gate = torch::zeros({4, 64, 64});
    big.up = torch::zeros({4, 64, 64});
    big.down = torch::zeros({4, 64, 64});
    big.sizes = {64, 64, 64, 64};
    big.router = torch::zeros({4, 64});
    const auto rel1 = Project::layerWeightsPath(run, 1);
    project.markLayerRunning(run, 1);
    try {
        saveMoeLayer(project.prepareFile(rel1), big);
        FAIL() << "expected an Error on the full disk";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("disk full"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("layer-001.safetensors"), std::string::npos) << e.what();
        project.failLayer(run, 1, e.what()); // what the CLI does with it
    }
    expectOnlyLayer0Saved(project, run, runDir, sha0);
}

// The same without root: the disk fills up part-way through layer 1's file (the write hook every
// writer goes through); once there is room again, the layer is saved and the run completes.
TEST(ResourceFaults, InjectedDiskFullDuringALayerSaveKeepsTheProjectConsistent)
{
    ladimo::test::TempDir dir;
    auto project = Project::create(dir / "P.ladimo");
    const auto run = twoLayerRun(project);
    const auto runDir = dir / ("P.ladimo.d/runs/" + std::to_string(run));
    const auto save = [&](int layer, uint64_t seed) {
        const auto rel = Project::layerWeightsPath(run, layer);
        project.markLayerRunning(run, layer);
        saveMoeLayer(project.prepareFile(rel), tinyLayer(seed).layer);
        project.finishLayer(run, layer, {0.1, 0.1, 1, rel, ""}, {{0, 0.1}});
    };
    save(0, 1);
    const auto sha0 = sha256File(project.absolutePath(Project::layerWeightsPath(run, 0)));
    try {
        DiskFullInjection full(500); // the header and part of the first tensor
        save(1, 2);
        FAIL() << "expected an Error on the full disk";
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("disk full"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("layer-001.safetensors"), std::string::npos) << e.what();
        project.failLayer(run, 1, e.what());
    }
    expectOnlyLayer0Saved(project, run, runDir, sha0);
    // Reopened, the same; then the rerun of layer 1 completes.
    {
        auto closing = std::move(project);
    }
    project = Project::open(dir / "P.ladimo", {Project::Access::ReadWrite, Project::Verify::Checksums});
    expectOnlyLayer0Saved(project, run, runDir, sha0);
    save(1, 2);
    EXPECT_TRUE(project.resumableLayers(run).empty());
    EXPECT_EQ(project.layer(run, 1).status, LayerStatus::Done);
    EXPECT_TRUE(project.verify().ok()) << project.verify().describe();
}
