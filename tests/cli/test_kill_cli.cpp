// Crash safety of the real program (extends test_store_crash.cpp from the store to `ladimo`):
// `ladimo convert` and `ladimo export` are SIGKILLed after random delays, for several seeds. After
// every kill the project must open with every finished layer intact (the same bytes as an
// uninterrupted run), a rerun must finish with the same result, and the export destination must
// hold either nothing or the whole export, never part of one. The FaultsCli tests fill the disk
// part-way through a layer save or an export instead (LADIMO_FAULT_DISK_FULL_AFTER).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <limits>
#include <map>
#include <random>
#include <thread>

#include "common/fileutil.h"
#include "model/safetensors.h"
#include "store/project.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace ladimo::core;
using ladimo::test::runLadimo;

namespace {

std::string stories() { return (ladimo::test::sharedData() / "tinystories260K").string(); }

std::vector<std::string> convertArgs(const fs::path& project)
{
    return {"convert",         stories(),
            "--data",          stories() + "/calib.u16",
            "--max-tokens",    "4096",
            "--epochs",        "2",
            "--router-epochs", "2",
            "--experts",       "8",
            "--train-top-k",   "6",
            "--e2e-steps",     "0",
            "--project",       project.string()};
}

std::string joined(const std::vector<std::string>& args)
{
    std::string s;
    for (const auto& a : args)
        s += " " + a;
    return s;
}

// Starts build/bin/ladimo with `args` (output discarded), kills it with SIGKILL after `delay`;
// returns true when the kill landed (the program had not finished yet).
bool runAndKill(const std::vector<std::string>& args, std::chrono::milliseconds delay)
{
    const std::string exe = std::string(LADIMO_BIN_DIR) + "/ladimo";
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int null = ::open("/dev/null", O_WRONLY);
        ::dup2(null, 1);
        ::dup2(null, 2);
        ::execv(exe.c_str(), argv.data());
        ::_exit(127);
    }
    std::this_thread::sleep_for(delay);
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFSIGNALED(status);
}

// SHA-256 of every finished layer file of the latest run.
std::map<int, std::string> doneLayers(const fs::path& file)
{
    auto p = Project::open(file, {Project::Access::ReadWrite, Project::Verify::Checksums});
    std::map<int, std::string> out;
    const auto run = p.latestRunId();
    if (!run)
        return out;
    for (const auto& l : p.layers(*run)) {
        EXPECT_NE(l.status, LayerStatus::Running) << "a killed worker's layer must not look alive";
        if (l.status == LayerStatus::Done)
            out[l.layer] = sha256File(p.absolutePath(l.weightsPath));
    }
    return out;
}

// Every file of an export; the weights by content (the JSON files name the project they came from).
std::map<std::string, std::string> treeDigest(const fs::path& dir)
{
    std::map<std::string, std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.is_regular_file())
            out[fs::relative(e.path(), dir).string()]
                = e.path().extension() == ".safetensors" ? sha256File(e.path()) : std::to_string(e.file_size() > 0);
    return out;
}

} // namespace

TEST(KillCli, KilledConversionsAndExportsResumeToTheSameResult)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    // The uninterrupted reference, and how long it takes (the kills land inside that span).
    const auto start = std::chrono::steady_clock::now();
    auto r = runLadimo(joined(convertArgs(tmp / "ref.ladimo")));
    ASSERT_EQ(r.status, 0) << r.out;
    const auto convertMs
        = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    const auto reference = doneLayers(tmp / "ref.ladimo");
    ASSERT_EQ(reference.size(), 5u);
    r = runLadimo("export " + (tmp / "ref.ladimo").string() + " --format hf-mixtral --top-k 2 --out "
                  + (tmp / "ref-hf").string());
    ASSERT_EQ(r.status, 0) << r.out;
    const auto refExport = treeDigest(tmp / "ref-hf");

    int killsInside = 0;
    for (uint64_t seed : {1, 2, 3}) {
        std::mt19937_64 rng(seed);
        const auto file = tmp / ("p" + std::to_string(seed) + ".ladimo");
        for (int kill = 0; kill < 3; ++kill) {
            const auto delay = std::chrono::milliseconds(rng() % static_cast<uint64_t>(convertMs.count() + 1));
            killsInside += runAndKill(convertArgs(file), delay);
            if (!fs::exists(file))
                continue; // killed before the project existed
            for (const auto& [layer, sha] : doneLayers(file))
                EXPECT_EQ(sha, reference.at(layer)) << "seed " << seed << " layer " << layer;
        }
        // Whatever state the kills left, a rerun finishes with the reference's layers.
        r = runLadimo(joined(convertArgs(file)));
        ASSERT_EQ(r.status, 0) << "seed " << seed << ": " << r.out;
        EXPECT_EQ(doneLayers(file), reference) << "seed " << seed;

        // Exports: killed at random, the destination holds nothing or the whole export.
        const auto out = tmp / ("hf" + std::to_string(seed));
        for (int kill = 0; kill < 3 && !fs::exists(out); ++kill) {
            runAndKill({"export", file.string(), "--format", "hf-mixtral", "--top-k", "2", "--out", out.string()},
                       std::chrono::milliseconds(rng() % 1500));
            if (fs::exists(out))
                EXPECT_EQ(treeDigest(out), refExport) << "seed " << seed << ": a half-written export";
        }
        if (!fs::exists(out)) {
            r = runLadimo("export " + file.string() + " --format hf-mixtral --top-k 2 --out " + out.string());
            ASSERT_EQ(r.status, 0) << r.out;
        }
        EXPECT_EQ(treeDigest(out), refExport) << "seed " << seed;
    }
    std::printf("[ kill     ] %d of 9 conversion kills landed before the end (reference run %lld ms)\n", killsInside,
                static_cast<long long>(convertMs.count()));
    EXPECT_GT(killsInside, 0) << "no kill landed inside a conversion: the test did not test much";
}

TEST(KillCli, APoisonedLayerFailsTheRunButTheOtherLayersAreSaved)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto file = tmp / "p.ladimo";
    auto r = runLadimo("capture " + stories() + " --data " + stories() + "/calib.u16 --max-tokens 4096 --project "
                       + file.string() + " --layers 2");
    ASSERT_EQ(r.status, 0) << r.out;
    // Poison one captured activation of layer 2, keeping the metadata that vouches for it.
    const auto act = tmp / ("p.ladimo.d/" + Project::activationsPath(1, 2));
    const std::string original = readTextFile(act);
    {
        auto st = SafetensorsFile::open(act);
        auto x = st->tensor("x").clone();
        x[7][3] = std::numeric_limits<float>::quiet_NaN();
        writeSafetensors(act, {{"x", x}, {"y", st->tensor("y").clone()}}, st->metadata());
    }
    const std::string cmd = joined(convertArgs(file));
    r = runLadimo(cmd);
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("layer 2 FAILED: layer 2: the captured FFN input holds 1 NaN/Inf value"), std::string::npos)
        << r.out;
    EXPECT_NE(r.out.find("1 layer(s) failed (the others are saved"), std::string::npos) << r.out;
    {
        auto p = Project::open(file, {Project::Access::ReadOnly, Project::Verify::Checksums});
        const auto run = *p.latestRunId();
        EXPECT_EQ(p.run(run).status, RunStatus::Failed);
        for (const auto& l : p.layers(run)) {
            EXPECT_EQ(l.status, l.layer == 2 ? LayerStatus::Failed : LayerStatus::Done) << l.layer;
            if (l.layer == 2)
                EXPECT_NE(l.failureReason.find("NaN/Inf"), std::string::npos) << l.failureReason;
        }
    }
    // With the activation repaired, the rerun converts just layer 2.
    atomicWriteFile(act, original);
    r = runLadimo(cmd);
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("1 of 5 layers left"), std::string::npos) << r.out;
}

namespace {

// The hidden temporaries (".NAME.tmp-...") of exports of `name` in `dir`.
std::vector<std::string> temporariesOf(const fs::path& dir, const std::string& name)
{
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.path().filename().string().rfind("." + name + ".tmp-", 0) == 0)
            out.push_back(e.path().filename().string());
    return out;
}

} // namespace

// Issue 9: the disk fills up part-way through a layer file (LADIMO_FAULT_DISK_FULL_AFTER, the
// write hook every writer goes through). The conversion fails saying so; the project reopens
// with the finished layers intact and the failed one not done; a rerun completes to the
// reference result.
TEST(FaultsCli, DiskFullDuringALayerSaveKeepsTheProjectAndARerunCompletes)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    auto r = runLadimo(joined(convertArgs(tmp / "ref.ladimo")));
    ASSERT_EQ(r.status, 0) << r.out;
    const auto reference = doneLayers(tmp / "ref.ladimo");
    ASSERT_EQ(reference.size(), 5u);
    const auto layerBytes = fs::file_size(tmp / ("ref.ladimo.d/" + Project::layerWeightsPath(1, 0)));

    const auto file = tmp / "p.ladimo";
    // Room for layer 0 and half of layer 1.
    r = ladimo::test::runCommand("LADIMO_FAULT_DISK_FULL_AFTER=" + std::to_string(layerBytes + layerBytes / 2) + " "
                                 + std::string(LADIMO_BIN_DIR) + "/ladimo" + joined(convertArgs(file)));
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("disk full"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("layer-001.safetensors"), std::string::npos) << r.out;
    const auto partial = doneLayers(file);
    EXPECT_EQ(partial.size(), 1u) << r.out;
    for (const auto& [layer, sha] : partial)
        EXPECT_EQ(sha, reference.at(layer)) << "layer " << layer;
    {
        auto p = Project::open(file, {Project::Access::ReadOnly, Project::Verify::Checksums});
        EXPECT_TRUE(p.verify().ok()) << p.verify().describe();
        EXPECT_NE(p.layer(*p.latestRunId(), 1).status, LayerStatus::Done);
        for (const auto& e : fs::recursive_directory_iterator(tmp / "p.ladimo.d"))
            EXPECT_NE(e.path().filename().string()[0], '.') << "a temporary was left: " << e.path();
        EXPECT_FALSE(fs::exists(p.absolutePath(Project::layerWeightsPath(*p.latestRunId(), 1))));
    }
    r = runLadimo(joined(convertArgs(file)));
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_EQ(doneLayers(file), reference);
}

// Issue 9: the disk fills up part-way through an export (hf-mixtral, gguf). The export fails with
// a message naming the destination and saying the disk is full; nothing is at the destination or
// next to it; the project is unchanged (no export recorded); the same export then succeeds.
TEST(FaultsCli, DiskFullDuringAnExportLeavesNothingAndARerunCompletes)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto file = tmp / "p.ladimo";
    auto r = runLadimo(joined(convertArgs(file)));
    ASSERT_EQ(r.status, 0) << r.out;
    const auto layers = doneLayers(file);
    std::size_t recorded = 0; // exports finished so far
    for (const std::string format : {"hf-mixtral", "gguf"}) {
        const std::string name = format == "gguf" ? "m.gguf" : "hf";
        const auto out = tmp / name;
        const std::string args
            = " export " + file.string() + " --format " + format + " --top-k 2 --out " + out.string();
        r = ladimo::test::runCommand("LADIMO_FAULT_DISK_FULL_AFTER=20000 " + std::string(LADIMO_BIN_DIR) + "/ladimo"
                                     + args);
        SCOPED_TRACE(format + ": " + r.out);
        EXPECT_NE(r.status, 0);
        EXPECT_NE(r.out.find("export to '" + out.string() + "' failed"), std::string::npos);
        EXPECT_NE(r.out.find("disk full"), std::string::npos);
        EXPECT_FALSE(fs::exists(out));
        EXPECT_TRUE(temporariesOf(tmp.path(), name).empty());
        {
            auto p = Project::open(file, {Project::Access::ReadOnly, Project::Verify::Checksums});
            EXPECT_EQ(p.exports().size(), recorded) << "the failed export was recorded";
        }
        EXPECT_EQ(doneLayers(file), layers);
        r = runLadimo(args);
        ASSERT_EQ(r.status, 0) << r.out;
        EXPECT_TRUE(fs::exists(format == "gguf" ? out : out / "config.json"));
        auto p = Project::open(file, {Project::Access::ReadOnly, Project::Verify::Checksums});
        EXPECT_EQ(p.exports().size(), ++recorded);
    }
}

// Issue 9: gguf exports killed at random points leave nothing at the destination, or the whole
// file; whatever temporary a kill left next to it, the next export removes and says so.
TEST(KillCli, KilledGgufExportsLeaveNothingAndTheNextExportSweepsTheirTemporaries)
{
    LADIMO_REQUIRE_SHARED("tinystories260K/calib.u16");
    ladimo::test::TempDir tmp;
    const auto file = tmp / "p.ladimo";
    auto r = runLadimo(joined(convertArgs(file)));
    ASSERT_EQ(r.status, 0) << r.out;
    const auto start = std::chrono::steady_clock::now();
    r = runLadimo("export " + file.string() + " --format gguf --top-k 2 --out " + (tmp / "ref.gguf").string());
    ASSERT_EQ(r.status, 0) << r.out;
    const auto exportMs
        = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    const auto refSize = fs::file_size(tmp / "ref.gguf");

    const auto out = tmp / "m.gguf";
    std::mt19937_64 rng(7);
    int leftTemporaries = 0;
    for (int kill = 0; kill < 6; ++kill) {
        fs::remove(out);
        runAndKill({"export", file.string(), "--format", "gguf", "--top-k", "2", "--out", out.string()},
                   std::chrono::milliseconds(rng() % static_cast<uint64_t>(exportMs.count() + 1)));
        if (fs::exists(out))
            EXPECT_EQ(fs::file_size(out), refSize) << "a half-written export";
        leftTemporaries += !temporariesOf(tmp.path(), "m.gguf").empty();
    }
    // And one left for sure: the temporary of a dead export process.
    const pid_t dead = ::fork();
    if (dead == 0)
        ::_exit(0);
    ::waitpid(dead, nullptr, 0);
    const auto planted = tmp / (".m.gguf.tmp-" + std::to_string(dead) + "-abc123");
    atomicWriteFile(planted, std::string(1000, 'x'));
    fs::remove(out);
    r = runLadimo("export " + file.string() + " --format gguf --top-k 2 --out " + out.string());
    ASSERT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("note: removed '" + planted.string() + "'"), std::string::npos) << r.out;
    EXPECT_TRUE(temporariesOf(tmp.path(), "m.gguf").empty());
    EXPECT_EQ(fs::file_size(out), refSize);
    std::printf("[ kill     ] %d of 6 gguf export kills left a temporary (reference export %lld ms)\n", leftTemporaries,
                static_cast<long long>(exportMs.count()));
}
