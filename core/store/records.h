// The plain value types a project stores (one per table) and their JSON form for the CLI and
// the GUI. Copies, not views: a record read from a Project stays valid after the Project is
// closed. Thread-safe as any value type. Ids are SQLite rowids; 0 means "none / not saved yet".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ladimo::core {

enum class LayerStatus { Pending, Running, Done, Failed };
enum class RunStatus { Running, Done, Failed, Cancelled, Interrupted };
enum class PolicyOrigin { Auto, Manual, Imported };
enum class CalibrationSource { File, SelfSample };

const char* layerStatusName(LayerStatus s);
LayerStatus parseLayerStatus(const std::string& name);
const char* runStatusName(RunStatus s);
RunStatus parseRunStatus(const std::string& name);
const char* policyOriginName(PolicyOrigin o);
PolicyOrigin parsePolicyOrigin(const std::string& name);
const char* calibrationSourceName(CalibrationSource s);
CalibrationSource parseCalibrationSource(const std::string& name);

struct ProjectInfo {
    std::string created;     // ISO-8601 UTC
    std::string toolVersion; // the ladimo version that created the project
    int schemaVersion = 0;   // PRAGMA user_version
};

struct SourceModel {
    int64_t id = 0;
    std::string path;                                 // the dense model folder, as the user gave it
    nlohmann::json config = nlohmann::json::object(); // its config.json
    std::string weightsSha256;                        // content checksum of the weights (see `project init`)
    int64_t totalParams = 0;
    int64_t embeddingParams = 0;
    int64_t attentionParams = 0;
    int64_t ffnParams = 0;
    std::string added;
};

struct CalibrationSet {
    int64_t id = 0;
    std::string name;
    CalibrationSource source = CalibrationSource::File;
    std::string filePath; // source File: the token/text file
    std::string fileSha256;
    uint64_t seed = 0; // source SelfSample: the sampling seed
    int64_t tokens = 0;
    int64_t seqLen = 0;
    std::string split = "train"; // train | heldout | eval
    std::string added;
};

struct ConversionRun {
    int64_t id = 0;
    int64_t modelId = 0;
    int64_t calibrationSetId = 0; // 0: none recorded
    int layers = 0;               // number of decoder layers the run converts
    int64_t experts = 8;
    int64_t expertSize = 0; // intermediate neurons per expert
    std::string partition = "coactivation";
    std::string gating = "hard";
    int trainTopK = 0;
    int epochs = 0;
    double lr = 0;
    int64_t batch = 0;
    std::string mode = "parallel"; // parallel | sequential
    std::string device = "cpu";
    uint64_t seed = 0;
    std::string toolVersion; // filled by startRun when empty
    std::string started;     // filled by startRun
    std::string finished;
    RunStatus status = RunStatus::Running;
    nlohmann::json extra = nlohmann::json::object(); // every other setting (schema v2)
};

struct LayerResult {
    int64_t runId = 0;
    int layer = 0;
    LayerStatus status = LayerStatus::Pending;
    std::optional<double> finalLoss;
    std::optional<double> relativeError;
    std::optional<double> wallSeconds;
    std::string weightsPath; // relative to the project folder
    std::string weightsSha256;
    std::string failureReason;
    std::string updated;
};

// What finishLayer records for a layer that trained to the end.
struct LayerOutcome {
    double finalLoss = 0;
    double relativeError = 0;
    double wallSeconds = 0;
    std::string weightsPath;   // relative; the file must already be in place
    std::string weightsSha256; // empty: computed from the file
};

struct LossPoint {
    int64_t step = 0;
    double loss = 0;
};
using LossCurve = std::vector<LossPoint>;

// The end-to-end stage of a run (schema v6): after it, the run's layers are its tuned weights.
struct EndToEndRecord {
    int64_t runId = 0;
    int steps = 0;        // 0: skipped (see note)
    double initialKl = 0; // KL(dense || converted) per token before the stage
    double finalKl = 0;   // at its end
    double wallSeconds = 0;
    std::string note; // why it was skipped, or empty
    LossCurve curve;  // KL per step
    std::string updated;
};

// Router statistics of one layer over held-out tokens. Arrays are stored as BLOBs of
// little-endian float64 (exact, compact); `rankHistograms` row-major [ranks][bins].
struct RoutingProfile {
    int64_t runId = 0;
    int layer = 0;
    int64_t tokens = 0;
    std::vector<double> binEdges;                    // bins + 1 edges
    std::vector<std::vector<double>> rankHistograms; // per rank 1..N: counts per bin
    std::vector<double> expertLoad;                  // fraction of tokens per expert (top-1)
    double entropy = 0;                              // mean routing entropy (nats)
    std::vector<double> errorByK;                    // [k-1]: relative error with top-k
    // Further measures (schema v3): "cumulative_mass" [k-1] (mean top-k routing mass),
    // "thresholds", "error_by_threshold", "mean_k_by_threshold" (token-adaptive top-p grid).
    nlohmann::json extra = nlohmann::json::object();
};

struct Policy {
    int64_t id = 0;
    std::string name; // unique in a project
    PolicyOrigin origin = PolicyOrigin::Manual;
    int64_t runId = 0;                              // the conversion it applies to (0: none)
    nlohmann::json rules = nlohmann::json::array(); // one rule object per layer
    std::string created;
};

struct Evaluation {
    int64_t id = 0;
    int64_t policyId = 0; // 0: the dense baseline
    int64_t runId = 0;
    std::string data; // what it was measured on (file, split, tokens)
    nlohmann::json metrics = nlohmann::json::object();
    std::string device;
    std::string timestamp;
};

struct ExportRecord {
    int64_t id = 0;
    std::string format; // hf | gguf | ...
    std::string path;   // where the user exported to (absolute or relative to the cwd)
    std::string sha256;
    int64_t policyId = 0;
    int64_t runId = 0;
    std::string created;
};

nlohmann::json toJson(const ProjectInfo& v);
nlohmann::json toJson(const SourceModel& v);
nlohmann::json toJson(const CalibrationSet& v);
nlohmann::json toJson(const ConversionRun& v);
nlohmann::json toJson(const LayerResult& v);
nlohmann::json toJson(const RoutingProfile& v);
nlohmann::json toJson(const Policy& v);
nlohmann::json toJson(const Evaluation& v);
nlohmann::json toJson(const ExportRecord& v);

} // namespace ladimo::core
