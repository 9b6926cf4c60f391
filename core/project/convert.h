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
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "convert/activations.h"
#include "convert/convert.h"
#include "convert/costmodel.h"
#include "convert/datasource.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "store/project.h"
#include "store/records.h"

namespace ladimo::core {

// The calibration data a run was converted on (its settings "data"; a file by the absolute path
// recorded with its calibration set, so it is found from any working directory): what commands
// that need data use when given none.
DataSource runCalibrationData(Project& project, int64_t runId);

// The id of a recorded calibration set with the same source, content and window length, or 0.
int64_t findCalibrationSet(Project& project, const CalibrationSet& wanted);

// What a finished layer records: the mean loss over the last epoch's batches (single batches
// are noisy, k is drawn per batch), the final relative error, the loss curve.
LayerOutcome layerOutcome(const LayerConversion& r, int64_t tokens, int64_t batch, const std::string& weightsPath,
                          LossCurve* curve);

struct RunRequest {
    SourceModel source; // describeSourceModel()
    ConvertSettings settings;
    std::string partition; // as given by the user ("coact"), recorded verbatim
    std::string gating;
    nlohmann::json settingsJson; // settings.toJson() plus "data": the run's identity
    CalibrationSet calibration;  // DataSource::record()
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
    ConvertCallbacks::LoadCapturedFn loadCaptured;     // parallel mode only
    std::function<void(const CaptureInfo&)> onCapture; // as ConvertCallbacks::onCapture
    std::function<void(int layer)> onLayerStarted;     // after the layer is marked running
    // After every distillation batch (ConvertCallbacks::onStep): live loss points of a layer.
    std::function<void(int layer, int64_t step, double loss)> onStep;
    // After the layer is committed to the project.
    std::function<void(int layer, const LayerConversion&, const LayerOutcome&, const LossCurve&)> onLayerFinished;
    // After a layer that could not be converted (numerical fault) is recorded as failed; the
    // other layers go on.
    std::function<void(int layer, const std::string& reason)> onLayerFailed;
    // The end-to-end stage's steps: (step, KL per token).
    std::function<void(int64_t step, double kl)> onEndToEndStep;
    // After the stage is recorded (or recorded as skipped, with its note).
    std::function<void(const EndToEndRecord&)> onEndToEndFinished;
};

// Converts the plan's unfinished layers into `project`; the run ends done, or cancelled / failed
// (rethrowing Cancelled / the error) with the interrupted layer reset / marked failed. Layers
// that fail on their own are recorded as failed while the others finish; then the run is failed
// and an Error lists them (a rerun retries them).
// Dense activations written by `ladimo capture` for a calibration set, reused when they match
// the model and tokens (`key`); `note` hears which files were used or passed over, and why.
ConvertCallbacks::LoadCapturedFn capturedActivations(const Project& project, int64_t calibrationSetId,
                                                     const CaptureKey& key,
                                                     std::function<void(const std::string&)> note = {});
// The layers of `layers` whose captured activations are usable.
std::set<int> capturedLayers(const Project& project, int64_t calibrationSetId, const CaptureKey& key,
                             const std::set<int>& layers);

// The cost model of converting `layers` of `model` on `calibrationTokens` tokens, `captured` of
// them from stored activations (convert --dry-run, and the estimate printed before converting).
CostEstimate conversionCost(const LlamaModel& model, const SourceModel& source, int64_t calibrationTokens,
                            const ConvertSettings& settings, const std::set<int>& layers,
                            const std::set<int>& captured);

void convertRunInProject(Project& project, const RunPlan& plan, const LlamaModel& model,
                         const std::vector<int64_t>& calibration, const ConvertSettings& settings,
                         const ProjectConvertCallbacks& callbacks);

// The whole of `ladimo convert --project` and the workbench's Convert job, one sequence:
// describe the model, load it and the calibration data, open (or create) the project, find or
// start the run, estimate its cost, then convert the unfinished layers (convertRunInProject).
// `prepareOnly`: create or find the run (not marked running) and return, the step before
// workers (`--layers`) start. Runs on the calling thread.
struct ProjectConvertRequest {
    std::string modelDir;
    std::string projectFile;         // *.ladimo, created when absent; a rerun with the same settings resumes
    LoadOptions load;                // device, dtype, memory budget of the dense model
    ConvertSettings settings;        // partition and gating parsed; devices; capture options
    std::string partition = "coact"; // as given by the user, recorded verbatim
    std::string gating = "hard";
    DataSource data;
    std::optional<nlohmann::json> calibrationSetting; // stored as kCalibrationSetting (the workbench)
    bool prepareOnly = false;
    // A finished run of this model with these settings is the result (nothing converted) instead
    // of the start of a new one: the whole-pipeline run (`ladimo run`) resumes this way.
    bool reuseFinished = false;
};
struct ProjectConvertResult {
    int64_t runId = 0;
    bool resumed = false;
    int layers = 0;
    std::set<int> converted; // the layers converted by this call
    bool reused = false;     // reuseFinished found a finished run
    int64_t calibrationTokens = 0;
};
struct ProjectConvertHooks {
    ProjectConvertCallbacks callbacks;
    // After the run is found or started, with the project open for writing (the workbench shows it).
    std::function<void(Project&, const RunPlan&)> onRun;
    // Before converting: the cost model of the layers left.
    std::function<void(const CostEstimate&, int layersLeft)> onCost;
    std::function<void(const std::string&)> note; // remarks (captured activations used, recovered faults)
};
ProjectConvertResult convertProject(const ProjectConvertRequest& request, const ProjectConvertHooks& hooks = {});

} // namespace ladimo::core
