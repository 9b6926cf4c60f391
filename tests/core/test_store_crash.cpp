// Crash safety of the project store: a worker process killed (SIGKILL) at 50 random moments
// while it writes layer files and commits layers running -> done with results and loss curves.
// After every kill the project must open, every layer ever seen done must still be done with an
// intact file (SHA-256) and its whole loss curve, and the interrupted layer must be resumable.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <set>

#include "common/error.h"
#include "common/fileutil.h"
#include "store/project.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace ladimo::core;

namespace {

constexpr int kLayers = 24;

std::size_t curveLength(int layer) { return static_cast<std::size_t>(3 + layer % 7); }

// The child: only SQLite and files, then _exit. It never returns; the parent kills it.
[[noreturn]] void workerProcess(const fs::path& file, uint64_t seed)
{
    try {
        auto p = Project::open(file, {Project::Access::ReadWrite, Project::Verify::None});
        std::mt19937_64 rng(seed);
        for (;;) {
            auto run = p.latestRunId();
            if (!run || p.resumableLayers(*run).empty()) {
                ConversionRun r;
                r.modelId = p.models().at(0).id;
                r.layers = kLayers;
                run = p.startRun(r);
            } else {
                p.setRunStatus(*run, RunStatus::Running);
            }
            for (int layer : p.resumableLayers(*run)) {
                p.markLayerRunning(*run, layer);
                std::string bytes(1024 + rng() % 4096, '\0');
                for (auto& c : bytes)
                    c = static_cast<char>(rng());
                const auto rel = Project::layerWeightsPath(*run, layer);
                atomicWriteFile(p.prepareFile(rel), bytes);
                LossCurve curve;
                for (std::size_t s = 0; s < curveLength(layer); ++s)
                    curve.push_back({static_cast<int64_t>(s * 10), 1.0 / static_cast<double>(s + 1)});
                p.finishLayer(*run, layer, {0.5, 0.05, 0.01, rel, sha256Bytes(bytes.data(), bytes.size())}, curve);
            }
            p.setRunStatus(*run, RunStatus::Done);
        }
    } catch (const std::exception& e) {
        std::fprintf(stderr, "worker: %s\n", e.what());
        ::_exit(3);
    }
}

} // namespace

TEST(StoreCrash, KilledWorkerLeavesAResumableProject)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "P.ladimo";
    {
        auto p = Project::create(file);
        SourceModel m;
        m.path = "/models/x";
        p.addModel(m);
    } // closed: the parent holds no connection and no writer lock while children run

    std::mt19937_64 rng(20240501);
    std::set<std::pair<int64_t, int>> everDone;
    int recoveredTotal = 0;
    int64_t doneTotal = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int iteration = 0; iteration < 50; ++iteration) {
        const pid_t pid = ::fork();
        ASSERT_GE(pid, 0);
        if (pid == 0)
            workerProcess(file, rng());
        ::usleep(static_cast<useconds_t>(2000 + rng() % 25000));
        ::kill(pid, SIGKILL);
        int status = 0;
        ASSERT_EQ(::waitpid(pid, &status, 0), pid);
        ASSERT_TRUE(WIFSIGNALED(status)) << "worker exited by itself (status " << WEXITSTATUS(status)
                                         << ") in iteration " << iteration;

        // A writer opens it (recovering the interrupted layer), checks every file's checksum.
        auto p = Project::open(file, {Project::Access::ReadWrite, Project::Verify::Checksums});
        recoveredTotal += static_cast<int>(p.recoveredOnOpen().size());
        EXPECT_LE(p.recoveredOnOpen().size(), 1u) << "one worker runs one layer at a time";
        EXPECT_TRUE(p.verify(Project::Verify::Checksums).ok());
        for (const auto& run : p.runs()) {
            EXPECT_NE(run.status, RunStatus::Running) << "a dead worker's run must not look alive";
            const auto snap = p.snapshot(run.id);
            ASSERT_EQ(snap.layers.size(), static_cast<std::size_t>(kLayers));
            for (std::size_t i = 0; i < snap.layers.size(); ++i) {
                const auto& l = snap.layers[i];
                EXPECT_NE(l.status, LayerStatus::Running) << "iteration " << iteration;
                if (l.status == LayerStatus::Done) {
                    EXPECT_EQ(snap.lossCurves[i].size(), curveLength(l.layer));
                    everDone.insert({run.id, l.layer});
                } else {
                    EXPECT_TRUE(snap.lossCurves[i].empty());
                    EXPECT_TRUE(l.weightsPath.empty());
                    EXPECT_FALSE(everDone.count({run.id, l.layer}))
                        << "run " << run.id << " layer " << l.layer << " was done and is not any more";
                }
            }
        }
        // No half-written temporaries survive a writer's open.
        for (const auto& e : fs::recursive_directory_iterator(p.dataDir()))
            EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << e.path();
        doneTotal = static_cast<int64_t>(everDone.size());
        if (HasFailure())
            break;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("[ store    ] 50 kills: %lld layers done, %d interrupted layers recovered, %.1f s\n",
                static_cast<long long>(doneTotal), recoveredTotal, seconds);
    EXPECT_GT(doneTotal, 0);
    EXPECT_GT(recoveredTotal, 0) << "no kill landed inside a layer: the test did not test much";
}
