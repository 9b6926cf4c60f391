// A project file (P.ladimo, SQLite) from elsewhere: open it for writing (schema check, migration,
// recovery of interrupted layers) and read everything the GUI shows. Stored tensor paths must
// never resolve outside the project folder.
#include <cstdlib>
#include <filesystem>

#include <torch/torch.h>

#include "fuzzutil.h"
#include "model/safetensors.h"
#include "routing/policy.h"
#include "store/project.h"

namespace {

// make_seeds.py: LADIMO_FUZZ_MAKE_SEED=P.ladimo writes a current-schema seed project (a model, a
// calibration set, a 3-layer run with one layer done, one failed, one left running, a policy, a
// routing profile, an evaluation and an export) and exits.
void makeSeed(const std::filesystem::path& file)
{
    using namespace ladimo::core;
    auto p = Project::create(file);
    SourceModel m;
    m.path = "/models/tiny";
    m.config = {{"hidden_size", 8}};
    m.weightsSha256 = std::string(64, 'a');
    const auto model = p.addModel(m);
    CalibrationSet c;
    c.name = "cal";
    c.filePath = "cal.u16";
    c.tokens = 100;
    c.seqLen = 10;
    const auto cal = p.addCalibrationSet(c);
    ConversionRun r;
    r.modelId = model;
    r.calibrationSetId = cal;
    r.layers = 3;
    r.experts = 4;
    r.trainTopK = 2;
    const auto run = p.startRun(r);
    const auto rel = Project::layerWeightsPath(run, 0);
    writeSafetensors(p.prepareFile(rel), {{"router", torch::ones({4, 8})}});
    p.markLayerRunning(run, 0);
    p.finishLayer(run, 0, {0.5, 0.1, 1.0, rel, ""}, {{0, 1.0}, {1, 0.5}});
    p.failLayer(run, 1, "loss is NaN");
    p.markLayerRunning(run, 2);
    RoutingProfile prof;
    prof.runId = run;
    prof.layer = 0;
    prof.tokens = 10;
    prof.binEdges = {0, 0.5, 1};
    prof.rankHistograms = {{1, 2}, {3, 4}, {0, 0}, {0, 0}};
    prof.expertLoad = {0.25, 0.25, 0.25, 0.25};
    prof.errorByK = {0.4, 0.2, 0.1, 0};
    p.saveRoutingProfile(prof);
    Policy pol;
    pol.name = "k2";
    pol.runId = run;
    pol.rules = ladimo::core::rulesToJson(uniformRules(3, RoutingRule::staticK(2)));
    const auto polId = p.savePolicy(pol);
    Evaluation e;
    e.policyId = polId;
    e.runId = run;
    e.metrics = {{"ppl", 3.5}};
    p.addEvaluation(e);
    ExportRecord x;
    x.format = "hf";
    x.path = "out";
    x.policyId = polId;
    x.runId = run;
    p.addExport(x);
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***)
{
    if (const char* seed = std::getenv("LADIMO_FUZZ_MAKE_SEED")) {
        makeSeed(seed);
        std::exit(0);
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size)
{
    namespace fs = std::filesystem;
    using namespace ladimo::core;
    const fs::path dir = ladimo::fuzz::scratchDir();
    std::error_code ec;
    for (const char* leftover : {"P.ladimo-wal", "P.ladimo-shm", "P.ladimo-journal"})
        fs::remove(dir / leftover, ec);
    fs::remove_all(dir / "P.ladimo.d", ec);
    const auto file = ladimo::fuzz::writeScratch("P.ladimo", data, size);
    LADIMO_FUZZ_EXPECT_ONLY_ERRORS({
        Project::OpenOptions o;
        o.verify = Project::Verify::Exists;
        auto p = Project::open(file, o);
        (void)p.info();
        (void)p.models();
        (void)p.calibrationSets();
        for (const auto& run : p.runs()) {
            const auto snap = p.snapshot(run.id);
            for (const auto& l : snap.layers)
                if (!l.weightsPath.empty())
                    (void)p.absolutePath(l.weightsPath);
            (void)p.routingProfiles(run.id);
            (void)p.resumableLayers(run.id);
        }
        for (const auto& pol : p.policies())
            (void)pol.name;
        (void)p.evaluations();
        (void)p.exports();
        (void)p.verify(Project::Verify::Exists);
    });
    return 0;
}
