// A workbench project: one SQLite file `P.ladimo` (everything a person looks at) plus the
// sibling folder `P.ladimo.d/` (tensor files, referenced from rows by relative path + SHA-256).
// A Project owns one connection; use it from one thread. Concurrency is one writer process
// (the worker, which holds `P.ladimo.d/writer.lock`) and any number of readers (the GUI, other
// threads, `ladimo project show`), each with its own Project opened ReadOnly: the database is
// in WAL mode, so readers see the last committed state and never block the writer; a busy
// timeout covers the short moments of checkpointing. Every write that belongs together is one
// transaction, so a process killed at any moment leaves the last committed state.
//
// Interrupted work: a layer is `running` only while a writer holds the lock. When a writer
// opens the project, every layer still `running` was left by a dead process: recoverInterrupted()
// (run automatically) marks it `pending` again and its run `interrupted`, so a rerun resumes it.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "store/database.h"
#include "store/records.h"

namespace ladimo::core {

struct LayerRef {
    int64_t runId = 0;
    int layer = 0;
    bool operator==(const LayerRef& o) const { return runId == o.runId && layer == o.layer; }
};

// A run with its layers and loss curves, read in one transaction (never half a commit).
struct RunSnapshot {
    ConversionRun run;
    std::vector<LayerResult> layers;   // by layer index
    std::vector<LossCurve> lossCurves; // parallel to `layers`
};

struct VerifyProblem {
    enum class Kind { Missing, Corrupt, BadPath };
    int64_t runId = 0;
    int layer = 0;
    std::string path; // as stored (relative)
    Kind kind = Kind::Missing;
    std::string detail;
};

struct VerifyReport {
    std::vector<VerifyProblem> problems;
    bool ok() const { return problems.empty(); }
    std::vector<int> badLayers(int64_t runId) const;
    std::string describe() const; // one line per problem
};

class Project {
public:
    static constexpr int kSchemaVersion = 6;
    static constexpr int32_t kApplicationId = 0x4C444D4F; // "LDMO" in PRAGMA application_id

    enum class Access { ReadOnly, ReadWrite };
    // How much of the tensor files open() checks: None, that each file exists, or its SHA-256.
    enum class Verify { None, Exists, Checksums };
    struct OpenOptions {
        Access access = Access::ReadWrite;
        Verify verify = Verify::Exists;
    };

    // Creates a new project (the file must not exist) and its folder, opened for writing.
    static Project create(const std::filesystem::path& file);
    // Checks the file read-only first (is it a project? not from a newer version? are its tensor
    // files there?) and throws an Error naming the problem without touching the file. Only then,
    // for ReadWrite, takes the writer lock, migrates an older schema and recovers interrupted
    // layers. ReadOnly refuses a schema older than v4 (open it for writing once to upgrade); a v4
    // project opens read-only and simply has no settings (v5) yet.
    static Project open(const std::filesystem::path& file, const OpenOptions& options);
    static Project open(const std::filesystem::path& file) { return open(file, OpenOptions{}); }

    // `P.ladimo` -> `P.ladimo.d`
    static std::filesystem::path dataDirFor(const std::filesystem::path& file);

    Project(Project&&) noexcept;
    Project& operator=(Project&&) noexcept;
    ~Project();

    const std::filesystem::path& file() const { return m_file; }
    const std::filesystem::path& dataDir() const { return m_dataDir; }
    bool writable() const { return m_writable; }
    ProjectInfo info();
    Database& database() { return m_db; }

    // ---- tensor files: relative paths inside the project folder
    static std::string layerWeightsPath(int64_t runId, int layer);           // runs/R/layer-LLL.safetensors
    static std::string activationsPath(int64_t calibrationSetId, int layer); // activations/C/layer-LLL.safetensors
    // Throws an Error unless `relative` is a plain relative path that stays inside the folder
    // (not empty, not absolute, no "..", no "." components, no backslashes).
    static void validateRelativePath(const std::string& relative);
    // Validated absolute location; creates no folders. Also rejects symlinks leading outside.
    std::filesystem::path absolutePath(const std::string& relative) const;
    // absolutePath() with its parent folders created (for writers).
    std::filesystem::path prepareFile(const std::string& relative) const;

    // ---- source models and calibration sets
    int64_t addModel(const SourceModel& model);
    SourceModel model(int64_t id);
    std::vector<SourceModel> models();
    int64_t addCalibrationSet(const CalibrationSet& set);
    CalibrationSet calibrationSet(int64_t id);
    std::vector<CalibrationSet> calibrationSets();

    // ---- conversion runs and their layers
    // Inserts the run and one `pending` row per layer in one transaction; returns the run id.
    int64_t startRun(const ConversionRun& run);
    // Running clears `finished` (a resumed run); any other status stamps it.
    void setRunStatus(int64_t runId, RunStatus status);
    ConversionRun run(int64_t runId);
    std::vector<ConversionRun> runs();
    std::optional<int64_t> latestRunId();

    void markLayerRunning(int64_t runId, int layer);
    // Marks the layer done with its results and replaces its loss curve, in one transaction.
    // The weights file must already be in place (written with atomicWriteFile).
    void finishLayer(int64_t runId, int layer, const LayerOutcome& outcome, const LossCurve& curve);
    void failLayer(int64_t runId, int layer, const std::string& reason);
    // Back to `pending` (file, results and loss curve forgotten), in one transaction.
    void resetLayers(int64_t runId, const std::vector<int>& layers);
    void resetLayers(const VerifyReport& report);
    std::vector<LayerResult> layers(int64_t runId);
    LayerResult layer(int64_t runId, int layer);
    LossCurve lossCurve(int64_t runId, int layer);
    // Records the end-to-end stage in one transaction: each layer's new weights file (already in
    // place; `outcomes` by layer) replaces the layer-wise one, and the record is stored. A stage
    // that was skipped passes no outcomes.
    void finishEndToEnd(const EndToEndRecord& record, const std::map<int, LayerOutcome>& outcomes);
    std::optional<EndToEndRecord> endToEnd(int64_t runId);
    // Layers a rerun must (re)do: everything not `done`.
    std::vector<int> resumableLayers(int64_t runId);
    RunSnapshot snapshot(int64_t runId);

    // ---- routing profiles (one per run and layer; saving again replaces it)
    void saveRoutingProfile(const RoutingProfile& profile);
    std::optional<RoutingProfile> routingProfile(int64_t runId, int layer);
    std::vector<RoutingProfile> routingProfiles(int64_t runId);

    // ---- policies, evaluations, exports
    // Inserts (id 0) or updates (id set) a policy; returns its id. Names are unique.
    int64_t savePolicy(const Policy& policy);
    Policy policy(int64_t id);
    std::vector<Policy> policies();
    void deletePolicy(int64_t id);
    int64_t addEvaluation(const Evaluation& evaluation);
    std::vector<Evaluation> evaluations();
    // Latency microbenchmarks of a run's blocks on one device (schema v4), as routing/latency.h
    // serialises them; replaced when measured again.
    void saveLatencyModel(int64_t runId, const std::string& device, const nlohmann::json& model);
    std::optional<nlohmann::json> latencyModel(int64_t runId, const std::string& device);
    int64_t addExport(const ExportRecord& record);
    std::vector<ExportRecord> exports();

    // ---- project settings (schema v5): named JSON values the workbench keeps between sessions,
    // e.g. "calibration" (the Calibration view's data choice). setSetting replaces the value.
    void setSetting(const std::string& key, const nlohmann::json& value);
    std::optional<nlohmann::json> setting(const std::string& key); // none when unset

    // ---- integrity
    // Checks the weights file of every `done` layer (existence, or also its SHA-256).
    VerifyReport verify(Verify level = Verify::Checksums);
    // Writer only; see the header comment. Returns the layers put back to `pending`.
    std::vector<LayerRef> recoverInterrupted();
    // What the automatic recovery on open found.
    const std::vector<LayerRef>& recoveredOnOpen() const { return m_recovered; }

private:
    Project(Database db, std::filesystem::path file, bool writable);
    void requireWritable(const char* what) const;
    void migrate();
    void configureWriter();
    void removeStaleTemporaryFiles();

    Database m_db;
    std::filesystem::path m_file;
    std::filesystem::path m_dataDir;
    bool m_writable = false;
    int m_lockFd = -1; // flock on dataDir/writer.lock, held while writable
    std::vector<LayerRef> m_recovered;
};

std::string currentToolVersion();
std::string nowUtc();

} // namespace ladimo::core
