// The project store: every entity round-trips, the version-1 fixture migrates, bad files are
// refused without being touched, tensor paths stay inside the project folder, verify() finds
// missing and corrupt layer files, one writer at a time, and readers see whole commits only.
#include <atomic>
#include <chrono>
#include <fstream>
#include <thread>

#include <sqlite3.h>

#include "common/error.h"
#include "common/fileutil.h"
#include "store/database.h"
#include "store/project.h"
#include "testutil.h"

namespace fs = std::filesystem;
using namespace ladimo::core;

namespace {

// Bytes and modification time, to prove a refused file was not modified.
struct FileStamp {
    std::string bytes;
    fs::file_time_type mtime;
    explicit FileStamp(const fs::path& f) : bytes(readTextFile(f)), mtime(fs::last_write_time(f)) { }
    bool operator==(const FileStamp& o) const { return bytes == o.bytes && mtime == o.mtime; }
};

void writeRaw(const fs::path& f, const std::string& bytes)
{
    std::ofstream out(f, std::ios::binary);
    out << bytes;
}

// Runs raw SQL on a plain SQLite file, as another program would.
void execSql(const fs::path& file, const std::string& sql)
{
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
    const std::string msg = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    ASSERT_EQ(rc, SQLITE_OK) << msg;
}

std::string errorOf(const std::function<void()>& f)
{
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

SourceModel sampleModel()
{
    SourceModel m;
    m.path = "/models/tinystories260K";
    m.config = {{"hidden_size", 64}, {"num_hidden_layers", 5}, {"rope_theta", 10000.0}};
    m.weightsSha256 = std::string(64, 'a');
    m.totalParams = 260000;
    m.embeddingParams = 32000;
    m.attentionParams = 80000;
    m.ffnParams = 140000;
    return m;
}

ConversionRun sampleRun(int64_t modelId, int64_t calibrationId, int layers)
{
    ConversionRun r;
    r.modelId = modelId;
    r.calibrationSetId = calibrationId;
    r.layers = layers;
    r.experts = 8;
    r.expertSize = 24;
    r.partition = "weights";
    r.gating = "renorm";
    r.trainTopK = 4;
    r.epochs = 12;
    r.lr = 3e-4;
    r.batch = 256;
    r.mode = "sequential";
    r.device = "cuda:1";
    r.seed = 0xFEDCBA9876543210ull; // above INT64_MAX: must survive the int64 column
    r.extra = {{"router_epochs", 20}, {"random_k", true}};
    return r;
}

// Writes a layer's weights the way the worker does and records it done.
std::string writeLayer(Project& p, int64_t run, int layer, const std::string& bytes, const LossCurve& curve = {})
{
    const auto rel = Project::layerWeightsPath(run, layer);
    atomicWriteFile(p.prepareFile(rel), bytes);
    p.finishLayer(run, layer, {0.1 * layer, 0.01 * layer, 1.5, rel, ""}, curve);
    return rel;
}

} // namespace

TEST(StoreDatabase, StatementsBindAndReadEveryType)
{
    ladimo::test::TempDir dir;
    Database db(dir / "t.db", Database::Mode::Create);
    db.exec("CREATE TABLE t (i INTEGER, d REAL, s TEXT, b BLOB)");
    const std::vector<double> values = {1.5, -0.0, 1e300, 3.141592653589793};
    const auto blob = doublesToBlob(values);
    {
        Transaction tx(db);
        auto st = db.prepare("INSERT INTO t VALUES (?1, ?2, ?3, ?4)");
        st.bind(1, int64_t{-5})
            .bind(2, 2.25)
            .bind(3, std::string("it's \"quoted\"; DROP TABLE t"))
            .bindBlob(4, blob.data(), blob.size());
        st.run();
        tx.commit();
    }
    {
        Transaction tx(db);
        db.prepare("INSERT INTO t (i) VALUES (99)").run();
        // No commit: rolled back by the destructor.
    }
    auto st = db.prepare("SELECT i, d, s, b FROM t");
    ASSERT_TRUE(st.step());
    EXPECT_EQ(st.columnInt(0), -5);
    EXPECT_EQ(st.columnDouble(1), 2.25);
    EXPECT_EQ(st.columnText(2), "it's \"quoted\"; DROP TABLE t");
    EXPECT_EQ(blobToDoubles(st.columnBlob(3), "b"), values);
    EXPECT_FALSE(st.step());
    EXPECT_THROW(db.prepare("SELECT nope FROM t"), Error);
    EXPECT_THROW(blobToDoubles("abc", "x"), Error);
}

TEST(StoreProject, EveryEntityRoundTrips)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "P.ladimo";
    int64_t modelId = 0, calFile = 0, calSelf = 0, runId = 0, policyId = 0;
    RoutingProfile profile;
    {
        auto p = Project::create(file);
        EXPECT_TRUE(fs::is_directory(dir / "P.ladimo.d"));
        EXPECT_EQ(p.dataDir(), dir / "P.ladimo.d");
        modelId = p.addModel(sampleModel());

        CalibrationSet a;
        a.name = "austen";
        a.source = CalibrationSource::File;
        a.filePath = "/data/austen.u16";
        a.fileSha256 = std::string(64, 'b');
        a.tokens = 100000;
        a.seqLen = 256;
        a.split = "train";
        calFile = p.addCalibrationSet(a);
        CalibrationSet b;
        b.name = "self";
        b.source = CalibrationSource::SelfSample;
        b.seed = 1234;
        b.tokens = 8192;
        b.seqLen = 128;
        b.split = "heldout";
        calSelf = p.addCalibrationSet(b);

        runId = p.startRun(sampleRun(modelId, calFile, 3));
        p.markLayerRunning(runId, 0);
        writeLayer(p, runId, 0, "weights of layer 0", {{0, 1.0}, {10, 0.5}, {20, 0.25}});
        p.markLayerRunning(runId, 1);
        p.failLayer(runId, 1, "out of memory on cuda:1");

        profile.runId = runId;
        profile.layer = 0;
        profile.tokens = 4096;
        profile.binEdges = {0, 0.25, 0.5, 0.75, 1.0};
        profile.rankHistograms = {{1, 2, 3, 4}, {4, 3, 2, 1}, {0, 0, 1, 0.5}};
        profile.expertLoad = {0.25, 0.125, 0.5, 0.125};
        profile.entropy = 1.2345678901234567;
        profile.errorByK = {0.9, 0.4, 0.1, 1e-17};
        profile.extra = {{"cumulative_mass", {0.5, 0.8, 0.95, 1.0}}, {"thresholds", {0.9}}};
        p.saveRoutingProfile(profile);

        Policy pol;
        pol.name = "budget 50%";
        pol.origin = PolicyOrigin::Auto;
        pol.runId = runId;
        pol.rules
            = nlohmann::json::array({{{"top_k", 2}}, {{"top_p", 0.9}, {"min_k", 1}, {"max_k", 4}}, {{"top_k", 3}}});
        policyId = p.savePolicy(pol);
        pol.id = policyId;
        pol.origin = PolicyOrigin::Manual;
        pol.rules[0]["top_k"] = 3;
        EXPECT_EQ(p.savePolicy(pol), policyId);
        Policy dup;
        dup.name = "budget 50%";
        EXPECT_NE(errorOf([&] { p.savePolicy(dup); }).find("already has a policy named"), std::string::npos);

        Evaluation e;
        e.policyId = policyId;
        e.runId = runId;
        e.data = "austen.u16 heldout 20480 tokens";
        e.metrics = {{"perplexity", 61.5}, {"kl_to_dense", 0.02}, {"activated_ffn_fraction", 0.375}};
        e.device = "cuda:0";
        p.addEvaluation(e);
        Evaluation dense;
        dense.data = "same";
        dense.metrics = {{"perplexity", 60.0}};
        dense.device = "cpu";
        p.addEvaluation(dense);

        ExportRecord x;
        x.format = "hf";
        x.path = "/exports/moe-model";
        x.sha256 = std::string(64, 'c');
        x.policyId = policyId;
        x.runId = runId;
        p.addExport(x);
    }

    // Everything comes back from a fresh connection (read-only, as the GUI opens it).
    auto p = Project::open(file, {Project::Access::ReadOnly, Project::Verify::Checksums});
    EXPECT_FALSE(p.writable());
    const auto info = p.info();
    EXPECT_EQ(info.schemaVersion, Project::kSchemaVersion);
    EXPECT_EQ(info.toolVersion, currentToolVersion());
    EXPECT_FALSE(info.created.empty());

    const auto m = p.model(modelId);
    const auto want = sampleModel();
    EXPECT_EQ(m.path, want.path);
    EXPECT_EQ(m.config, want.config);
    EXPECT_EQ(m.weightsSha256, want.weightsSha256);
    EXPECT_EQ(m.totalParams, want.totalParams);
    EXPECT_EQ(m.embeddingParams, want.embeddingParams);
    EXPECT_EQ(m.attentionParams, want.attentionParams);
    EXPECT_EQ(m.ffnParams, want.ffnParams);
    EXPECT_EQ(p.models().size(), 1u);

    const auto cals = p.calibrationSets();
    ASSERT_EQ(cals.size(), 2u);
    EXPECT_EQ(cals[0].id, calFile);
    EXPECT_EQ(cals[0].source, CalibrationSource::File);
    EXPECT_EQ(cals[0].filePath, "/data/austen.u16");
    EXPECT_EQ(cals[0].fileSha256, std::string(64, 'b'));
    EXPECT_EQ(cals[0].tokens, 100000);
    EXPECT_EQ(cals[0].seqLen, 256);
    EXPECT_EQ(cals[1].id, calSelf);
    EXPECT_EQ(cals[1].source, CalibrationSource::SelfSample);
    EXPECT_EQ(cals[1].seed, 1234u);
    EXPECT_EQ(cals[1].split, "heldout");
    EXPECT_EQ(p.calibrationSet(calSelf).name, "self");

    const auto r = p.run(runId);
    const auto wantRun = sampleRun(modelId, calFile, 3);
    EXPECT_EQ(r.modelId, modelId);
    EXPECT_EQ(r.calibrationSetId, calFile);
    EXPECT_EQ(r.layers, 3);
    EXPECT_EQ(r.experts, 8);
    EXPECT_EQ(r.expertSize, 24);
    EXPECT_EQ(r.partition, "weights");
    EXPECT_EQ(r.gating, "renorm");
    EXPECT_EQ(r.trainTopK, 4);
    EXPECT_EQ(r.epochs, 12);
    EXPECT_EQ(r.lr, 3e-4);
    EXPECT_EQ(r.batch, 256);
    EXPECT_EQ(r.mode, "sequential");
    EXPECT_EQ(r.device, "cuda:1");
    EXPECT_EQ(r.seed, wantRun.seed);
    EXPECT_EQ(r.toolVersion, currentToolVersion());
    EXPECT_FALSE(r.started.empty());
    EXPECT_TRUE(r.finished.empty());
    EXPECT_EQ(r.status, RunStatus::Running);
    EXPECT_EQ(r.extra, wantRun.extra);
    EXPECT_EQ(p.latestRunId(), runId);

    const auto layers = p.layers(runId);
    ASSERT_EQ(layers.size(), 3u);
    EXPECT_EQ(layers[0].status, LayerStatus::Done);
    EXPECT_EQ(layers[0].weightsPath, "runs/1/layer-000.safetensors");
    EXPECT_EQ(layers[0].weightsSha256, sha256Bytes("weights of layer 0", 18));
    EXPECT_DOUBLE_EQ(*layers[0].finalLoss, 0.0);
    EXPECT_DOUBLE_EQ(*layers[0].wallSeconds, 1.5);
    EXPECT_EQ(layers[1].status, LayerStatus::Failed);
    EXPECT_EQ(layers[1].failureReason, "out of memory on cuda:1");
    EXPECT_FALSE(layers[1].finalLoss.has_value());
    EXPECT_EQ(layers[2].status, LayerStatus::Pending);
    EXPECT_EQ(p.resumableLayers(runId), (std::vector<int>{1, 2}));
    const auto curve = p.lossCurve(runId, 0);
    ASSERT_EQ(curve.size(), 3u);
    EXPECT_EQ(curve[1].step, 10);
    EXPECT_EQ(curve[2].loss, 0.25);
    const auto snap = p.snapshot(runId);
    EXPECT_EQ(snap.lossCurves[0].size(), 3u);
    EXPECT_TRUE(snap.lossCurves[1].empty());

    const auto prof = p.routingProfile(runId, 0);
    ASSERT_TRUE(prof.has_value());
    EXPECT_EQ(prof->tokens, profile.tokens);
    EXPECT_EQ(prof->binEdges, profile.binEdges);
    EXPECT_EQ(prof->rankHistograms, profile.rankHistograms);
    EXPECT_EQ(prof->expertLoad, profile.expertLoad);
    EXPECT_EQ(prof->entropy, profile.entropy);
    EXPECT_EQ(prof->errorByK, profile.errorByK);
    EXPECT_EQ(prof->extra, profile.extra);
    EXPECT_FALSE(p.routingProfile(runId, 2).has_value());
    EXPECT_EQ(p.routingProfiles(runId).size(), 1u);

    const auto pol = p.policy(policyId);
    EXPECT_EQ(pol.name, "budget 50%");
    EXPECT_EQ(pol.origin, PolicyOrigin::Manual);
    EXPECT_EQ(pol.runId, runId);
    EXPECT_EQ(pol.rules[0]["top_k"], 3);
    EXPECT_EQ(pol.rules[1]["top_p"], 0.9);

    const auto evals = p.evaluations();
    ASSERT_EQ(evals.size(), 2u);
    EXPECT_EQ(evals[0].policyId, policyId);
    EXPECT_EQ(evals[0].metrics["kl_to_dense"], 0.02);
    EXPECT_EQ(evals[0].device, "cuda:0");
    EXPECT_FALSE(evals[0].timestamp.empty());
    EXPECT_EQ(evals[1].policyId, 0);

    const auto ex = p.exports();
    ASSERT_EQ(ex.size(), 1u);
    EXPECT_EQ(ex[0].format, "hf");
    EXPECT_EQ(ex[0].path, "/exports/moe-model");
    EXPECT_EQ(ex[0].policyId, policyId);

    // Read-only means read-only.
    EXPECT_NE(errorOf([&] { p.addModel(sampleModel()); }).find("read-only"), std::string::npos);

    // JSON forms carry the contract keys.
    EXPECT_EQ(toJson(layers[1])["status"], "failed");
    EXPECT_EQ(toJson(layers[1])["index"], 1);
    EXPECT_TRUE(toJson(layers[2])["final_loss"].is_null());
    EXPECT_EQ(toJson(r)["mode"], "sequential");
}

// The end-to-end stage swaps a run's layer files and records its curve in one transaction; a
// layer that is not done, or a file that is not there, refuses the whole record.
TEST(StoreProject, EndToEndSwapsLayerFilesAndKeepsItsCurve)
{
    ladimo::test::TempDir dir;
    auto p = Project::create(dir / "P.ladimo");
    const int64_t modelId = p.addModel(sampleModel());
    const int64_t runId = p.startRun(sampleRun(modelId, 0, 2));
    writeLayer(p, runId, 0, "layer 0");
    EXPECT_FALSE(p.endToEnd(runId).has_value());

    EndToEndRecord r;
    r.runId = runId;
    r.steps = 3;
    r.initialKl = 0.2;
    r.finalKl = 0.05;
    r.wallSeconds = 1.5;
    r.curve = {{0, 0.2}, {1, 0.1}, {2, 0.05}};
    const std::string tuned = "runs/1/layer-000-e2e.safetensors";
    LayerOutcome o;
    o.weightsPath = tuned;
    // Layer 1 is not done: nothing is recorded.
    atomicWriteFile(p.prepareFile(tuned), "tuned layer 0");
    EXPECT_THROW(p.finishEndToEnd(r, {{0, o}, {1, o}}), Error);
    EXPECT_FALSE(p.endToEnd(runId).has_value());
    EXPECT_NE(p.layer(runId, 0).weightsPath, tuned);
    // A file that does not exist is refused before anything is written.
    LayerOutcome missing;
    missing.weightsPath = "runs/1/nothing.safetensors";
    EXPECT_THROW(p.finishEndToEnd(r, {{0, missing}}), Error);

    p.finishEndToEnd(r, {{0, o}});
    EXPECT_EQ(p.layer(runId, 0).weightsPath, tuned);
    EXPECT_EQ(p.layer(runId, 0).weightsSha256, sha256File(p.absolutePath(tuned)));
    const auto back = p.endToEnd(runId);
    ASSERT_TRUE(back.has_value());
    EXPECT_EQ(back->steps, 3);
    EXPECT_DOUBLE_EQ(back->initialKl, 0.2);
    EXPECT_DOUBLE_EQ(back->finalKl, 0.05);
    ASSERT_EQ(back->curve.size(), 3u);
    EXPECT_EQ(back->curve[2].step, 2);
    EXPECT_DOUBLE_EQ(back->curve[1].loss, 0.1);
    EXPECT_TRUE(p.verify().ok()) << p.verify().describe();
}

TEST(StoreProject, ForeignKeysAreEnforced)
{
    ladimo::test::TempDir dir;
    auto p = Project::create(dir / "P.ladimo");
    EXPECT_THROW(p.startRun(sampleRun(/*modelId=*/42, 0, 2)), Error);
    EXPECT_TRUE(p.runs().empty()); // the failed transaction left nothing behind
    Evaluation e;
    e.policyId = 7;
    EXPECT_THROW(p.addEvaluation(e), Error);
    EXPECT_THROW(p.markLayerRunning(1, 0), Error);
}

TEST(StoreProject, CreateRefusesAnExistingFile)
{
    ladimo::test::TempDir dir;
    writeRaw(dir / "P.ladimo", "precious");
    EXPECT_NE(errorOf([&] { Project::create(dir / "P.ladimo"); }).find("already exists"), std::string::npos);
    EXPECT_EQ(readTextFile(dir / "P.ladimo"), "precious");
}

TEST(StoreMigration, VersionOneFixtureMigratesToTheCurrentSchema)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "old.ladimo";
    execSql(file, readTextFile(ladimo::test::sourceDir() / "tests/data/store/project_v1.sql"));
    fs::create_directories(dir / "old.ladimo.d/runs/1");
    writeRaw(dir / "old.ladimo.d/runs/1/layer-000.safetensors", "v1 layer 0 weights");
    writeRaw(dir / "old.ladimo.d/runs/1/layer-001.safetensors", "v1 layer 1 weights");

    // Readers cannot migrate, and say so without touching the file.
    const FileStamp before(file);
    const auto roError = errorOf([&] { Project::open(file, {Project::Access::ReadOnly, Project::Verify::Exists}); });
    EXPECT_NE(roError.find("schema version 1"), std::string::npos) << roError;
    EXPECT_TRUE(FileStamp(file) == before);

    {
        auto p = Project::open(file, {Project::Access::ReadWrite, Project::Verify::Checksums});
        EXPECT_EQ(p.info().schemaVersion, Project::kSchemaVersion);
        EXPECT_EQ(p.info().toolVersion, "0.1.0");
        // The layer that the old tool left running is pending again, its run interrupted.
        EXPECT_EQ(p.recoveredOnOpen(), (std::vector<LayerRef>{{1, 2}}));
        const auto layers = p.layers(1);
        ASSERT_EQ(layers.size(), 3u);
        EXPECT_EQ(layers[0].status, LayerStatus::Done);
        EXPECT_EQ(*layers[1].relativeError, 0.25);
        EXPECT_EQ(layers[2].status, LayerStatus::Pending);
        EXPECT_EQ(p.run(1).status, RunStatus::Interrupted);
        EXPECT_EQ(p.run(1).extra, nlohmann::json::object()); // the v2 column's default
        EXPECT_TRUE(p.lossCurve(1, 0).empty());
        EXPECT_EQ(p.model(1).config["hidden_size"], 64);
        EXPECT_EQ(p.calibrationSet(1).seed, 1234u);
        EXPECT_EQ(p.policy(1).rules.size(), 3u);
        EXPECT_EQ(p.evaluations().at(0).metrics["perplexity"], 42.5);
        EXPECT_EQ(p.routingProfile(1, 0)->errorByK, std::vector<double>{1.0});
        EXPECT_EQ(p.routingProfile(1, 0)->extra, nlohmann::json::object()); // the v3 column's default
        // What v2 added works on the migrated project.
        EXPECT_TRUE(p.exports().empty());
        p.addExport({0, "gguf", "/out/model.gguf", std::string(64, 'd'), 1, 1, ""});
        p.markLayerRunning(1, 2);
        writeLayer(p, 1, 2, "new layer 2", {{0, 2.0}, {1, 1.0}});
        EXPECT_EQ(p.lossCurve(1, 2).size(), 2u);
    }

    // The migrated schema is exactly the schema of a new project.
    const auto schemaOf = [](const fs::path& f) {
        Database db(f, Database::Mode::ReadOnly);
        std::string out;
        auto st = db.prepare("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name");
        while (st.step())
            out += st.columnText(0) + " " + st.columnText(1) + ": " + st.columnText(2) + "\n";
        return out;
    };
    Project::create(dir / "new.ladimo");
    EXPECT_EQ(schemaOf(file), schemaOf(dir / "new.ladimo"));
}

TEST(StoreBadInput, FilesThatAreNotProjectsAreRefusedUntouched)
{
    ladimo::test::TempDir dir;
    struct Case {
        std::string name;
        std::function<void(const fs::path&)> make;
        std::string expected;
    };
    const std::vector<Case> cases = {
        {"text.ladimo", [](const fs::path& f) { writeRaw(f, "hello, I am a text file\n"); }, "not an SQLite database"},
        {"empty.ladimo", [](const fs::path& f) { writeRaw(f, ""); }, "without the project tables"},
        {"other.ladimo",
         [](const fs::path& f) { execSql(f, "CREATE TABLE notes (t TEXT); INSERT INTO notes VALUES ('x');"); },
         "without the project tables"},
        {"newer.ladimo",
         [](const fs::path& f) {
             execSql(f,
                     readTextFile(ladimo::test::sourceDir() / "tests/data/store/project_v1.sql")
                         + "PRAGMA user_version = 99;");
         },
         "newer LaDiMo (project schema version 99"},
    };
    for (const auto& c : cases) {
        const auto file = dir / c.name;
        c.make(file);
        const FileStamp before(file);
        for (auto access : {Project::Access::ReadOnly, Project::Access::ReadWrite}) {
            const auto msg = errorOf([&] { Project::open(file, {access, Project::Verify::Exists}); });
            EXPECT_NE(msg.find(c.expected), std::string::npos) << c.name << ": " << msg;
            EXPECT_NE(msg.find(file.string()), std::string::npos) << c.name << ": " << msg;
        }
        EXPECT_TRUE(FileStamp(file) == before) << c.name;
        EXPECT_FALSE(fs::exists(Project::dataDirFor(file))) << c.name;
    }
    EXPECT_NE(errorOf([&] { Project::open(dir / "absent.ladimo"); }).find("does not exist"), std::string::npos);
    EXPECT_NE(errorOf([&] { Project::open(dir.path()); }).find("not a LaDiMo project file"), std::string::npos);
}

TEST(StoreBadInput, MissingOrCorruptTensorFilesAreReportedByLayer)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "P.ladimo";
    int64_t run = 0;
    {
        auto p = Project::create(file);
        run = p.startRun(sampleRun(p.addModel(sampleModel()), 0, 4));
        for (int l = 0; l < 4; ++l)
            writeLayer(p, run, l, "layer " + std::to_string(l));
    }
    const auto data = Project::dataDirFor(file);
    fs::remove(data / Project::layerWeightsPath(run, 1));
    writeRaw(data / Project::layerWeightsPath(run, 3), "layer 3 but bit-rotted");

    // Cheap check: only the missing file. Full check: both, by layer index.
    const FileStamp before(file);
    const auto missing = errorOf([&] { Project::open(file, {Project::Access::ReadWrite, Project::Verify::Exists}); });
    EXPECT_NE(missing.find("run 1 layer 1: 'runs/1/layer-001.safetensors' is missing"), std::string::npos) << missing;
    EXPECT_EQ(missing.find("layer 3"), std::string::npos) << missing;
    const auto both = errorOf([&] { Project::open(file, {Project::Access::ReadOnly, Project::Verify::Checksums}); });
    EXPECT_NE(both.find("layer 1"), std::string::npos) << both;
    EXPECT_NE(both.find("run 1 layer 3: 'runs/1/layer-003.safetensors' fails its checksum"), std::string::npos) << both;
    EXPECT_TRUE(FileStamp(file) == before);

    // Repair: open without verification, mark the bad layers pending, a rerun redoes them.
    auto p = Project::open(file, {Project::Access::ReadWrite, Project::Verify::None});
    const auto report = p.verify(Project::Verify::Checksums);
    EXPECT_EQ(report.badLayers(run), (std::vector<int>{1, 3}));
    EXPECT_EQ(report.problems[1].kind, VerifyProblem::Kind::Corrupt);
    p.resetLayers(report);
    EXPECT_EQ(p.resumableLayers(run), (std::vector<int>{1, 3}));
    EXPECT_TRUE(p.verify().ok());
    EXPECT_EQ(p.layer(run, 3).weightsPath, "");
}

TEST(StorePaths, TensorPathsCannotLeaveTheProjectFolder)
{
    ladimo::test::TempDir dir;
    auto p = Project::create(dir / "P.ladimo");
    EXPECT_EQ(Project::layerWeightsPath(3, 7), "runs/3/layer-007.safetensors");
    EXPECT_EQ(Project::activationsPath(2, 12), "activations/2/layer-012.safetensors");
    EXPECT_EQ(p.absolutePath("runs/3/layer-007.safetensors"), dir / "P.ladimo.d/runs/3/layer-007.safetensors");
    for (const std::string bad :
         {"", "/etc/passwd", "../x.safetensors", "runs/../../x", "runs/..", "./a", "a//b", "a\\..\\b", "runs/"}) {
        const auto msg = errorOf([&] { Project::validateRelativePath(bad); });
        EXPECT_NE(msg.find("invalid project path"), std::string::npos) << "'" << bad << "' accepted";
    }
    // Through a symlink that points outside.
    fs::create_directory_symlink(dir.path(), dir / "P.ladimo.d/escape");
    writeRaw(dir / "outside.safetensors", "x");
    EXPECT_NE(errorOf([&] { p.absolutePath("escape/outside.safetensors"); }).find("outside the project folder"),
              std::string::npos);

    // finishLayer refuses such a path and a missing file, and records nothing.
    const auto run = p.startRun(sampleRun(p.addModel(sampleModel()), 0, 1));
    EXPECT_THROW(p.finishLayer(run, 0, {1, 1, 1, "../../P.ladimo", ""}, {}), Error);
    EXPECT_THROW(p.finishLayer(run, 0, {1, 1, 1, "runs/1/never-written.safetensors", ""}, {}), Error);
    EXPECT_EQ(p.layer(run, 0).status, LayerStatus::Pending);
}

TEST(StoreConcurrency, OneWriterAtATimeReadersAlongside)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "P.ladimo";
    auto writer = Project::create(file);
    const auto msg = errorOf([&] { Project::open(file); });
    EXPECT_NE(msg.find("already open for writing"), std::string::npos) << msg;
    auto reader = Project::open(file, {Project::Access::ReadOnly, Project::Verify::Exists});
    writer.addModel(sampleModel());
    EXPECT_EQ(reader.models().size(), 1u);
}

TEST(StoreConcurrency, ReadersOnlySeeWholeCommits)
{
    ladimo::test::TempDir dir;
    const auto file = dir / "P.ladimo";
    constexpr int kLayers = 60;
    const auto curveLength = [](int layer) { return static_cast<std::size_t>(5 + layer % 11); };
    auto writer = Project::create(file);
    const int64_t run = writer.startRun(sampleRun(writer.addModel(sampleModel()), 0, kLayers));
    auto reader = Project::open(file, {Project::Access::ReadOnly, Project::Verify::None});

    std::atomic<bool> finished{false};
    std::thread writerThread([&] {
        for (int l = 0; l < kLayers; ++l) {
            writer.markLayerRunning(run, l);
            LossCurve curve;
            for (std::size_t s = 0; s < curveLength(l); ++s)
                curve.push_back({static_cast<int64_t>(s), 1.0 / static_cast<double>(s + 1)});
            writeLayer(writer, run, l, std::string(256 + l, static_cast<char>('a' + l % 26)), curve);
        }
        writer.setRunStatus(run, RunStatus::Done);
        finished = true;
    });

    int reads = 0, lastDone = 0;
    std::string failure;
    std::thread readerThread([&] {
        bool last = false;
        while (failure.empty() && !last) {
            last = finished.load();
            const auto s = reader.snapshot(run);
            ++reads;
            int done = 0;
            for (std::size_t i = 0; i < s.layers.size(); ++i) {
                const auto& l = s.layers[i];
                if (l.status == LayerStatus::Done) {
                    ++done;
                    if (s.lossCurves[i].size() != curveLength(l.layer) || l.weightsPath.empty()
                        || !fs::exists(reader.absolutePath(l.weightsPath)) || !l.finalLoss)
                        failure = "layer " + std::to_string(l.layer) + " done without its curve/file/results";
                } else if (!s.lossCurves[i].empty() || !l.weightsPath.empty()) {
                    failure = "layer " + std::to_string(l.layer) + " not done but has a curve or a file";
                }
            }
            if (done < lastDone)
                failure = "done layers went from " + std::to_string(lastDone) + " to " + std::to_string(done);
            if (s.run.status == RunStatus::Done && done != kLayers)
                failure = "run done with only " + std::to_string(done) + " layers";
            lastDone = done;
        }
    });
    writerThread.join();
    readerThread.join();
    EXPECT_EQ(failure, "");
    EXPECT_EQ(lastDone, kLayers);
    EXPECT_GT(reads, 1);
}
