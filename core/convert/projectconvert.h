// Stage 1 into a project, as `ladimo convert --project` does it, shared by the CLI and the
// workbench: describe the dense model, find the calibration set, resume the latest unfinished
// run with the same model and settings (or start a new one), then convert the remaining layers,
// committing each finished layer (weights file, outcome, loss curve) in its own transaction.
// A cancelled or failed conversion leaves the project consistent: the layer being trained is
// reset (or marked failed) and the run is marked cancelled (failed); a rerun resumes.
// Runs on the calling thread (the caller's worker); callbacks are called on that thread.
#pragma once

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "convert/convert.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "store/project.h"
#include "store/records.h"

namespace ladimo::core {

// A project's source-model record for a dense model folder (config, weights checksum, counts).
// Without `checksum` the weightsSha256 stays empty (a dry run reads no weights at all).
SourceModel describeSourceModel(const std::string& modelDir, bool checksum = true);
// One checksum for a model's weights: the SHA-256 of the single *.safetensors file, or for a
// sharded checkpoint the SHA-256 of its `sha256sum`-style listing ("<hex>  <name>\n", by name).
std::string weightsChecksum(const std::filesystem::path& modelDir);

// Where calibration / evaluation tokens come from: a token file, or samples of the dense model.
struct DataSource {
    std::string file;
    int64_t selfSample = 0; // > 0: sample this many tokens from the model instead of `file`
    uint64_t seed = 1234;
    int64_t maxTokens = 0;  // 0 = all
    // Recorded in the run's settings ("data"): part of what makes two runs the same.
    nlohmann::json toJson() const;
    std::string describe() const; // "file F" / "self-sample N, seed S" (+ ", first N tokens")
    std::vector<int64_t> load(const LlamaModel& model, const Tokenizer* tokenizer, int64_t seqLen,
                              const ProgressFn& progress, const CancelToken& cancel) const;
    // The calibration-set record of `tokens` loaded from this source.
    CalibrationSet record(const std::vector<int64_t>& tokens, int64_t seqLen) const;
};

// The id of a recorded calibration set with the same source, content and window length, or 0.
int64_t findCalibrationSet(Project& project, const CalibrationSet& wanted);

// What a finished layer records: the mean loss over the last epoch's batches (single batches
// are noisy, k is drawn per batch), the final relative error, the loss curve.
LayerOutcome layerOutcome(const LayerConversion& r, int64_t tokens, int64_t batch, const std::string& weightsPath,
                          LossCurve* curve);

struct RunRequest {
    SourceModel source;            // describeSourceModel()
    ConvertSettings settings;
    std::string partition;         // as given by the user ("coact"), recorded verbatim
    std::string gating;
    nlohmann::json settingsJson;   // settings.toJson() plus "data": the run's identity
    CalibrationSet calibration;    // DataSource::record()
    int layers = 0;
    int64_t intermediateSize = 0;
};

struct RunPlan {
    int64_t runId = 0;
    bool resumed = false;   // an unfinished run with the same model and settings was found
    std::set<int> finished; // its layers already done
};

// Adds the model when new, then resumes the latest run when it is this model with these settings
// and not finished, or starts a new run. `markRunning`: set a resumed run's status to running.
RunPlan findOrStartRun(Project& project, const RunRequest& request, bool markRunning = true);

struct ProjectConvertCallbacks {
    ProgressFn progress;
    CancelToken cancel;
    ConvertCallbacks::LoadCapturedFn loadCaptured; // parallel mode only
    std::function<void(const CaptureInfo&)> onCapture; // as ConvertCallbacks::onCapture
    std::function<void(int layer)> onLayerStarted; // after the layer is marked running
    // After every distillation batch (ConvertCallbacks::onStep): live loss points of a layer.
    std::function<void(int layer, int64_t step, double loss)> onStep;
    // After the layer is committed to the project.
    std::function<void(int layer, const LayerConversion&, const LayerOutcome&, const LossCurve&)> onLayerFinished;
    // After a layer that could not be converted (numerical fault) is recorded as failed; the
    // other layers go on.
    std::function<void(int layer, const std::string& reason)> onLayerFailed;
};

// Converts the plan's unfinished layers into `project`; the run ends done, or cancelled / failed
// (rethrowing Cancelled / the error) with the interrupted layer reset / marked failed. Layers
// that fail on their own are recorded as failed while the others finish; then the run is failed
// and an Error lists them (a rerun retries them).
void convertRunInProject(Project& project, const RunPlan& plan, const LlamaModel& model,
                         const std::vector<int64_t>& calibration, const ConvertSettings& settings,
                         const ProjectConvertCallbacks& callbacks);

} // namespace ladimo::core
