// The state of each step of the work (Model, Calibration, Convert, Profile, Policy, Evaluate,
// Export) as the project records it: not run, running, done, or stale (an input changed since the
// step ran: the model or the calibration settings after the conversion, a new conversion after
// the profile, a policy edited after its evaluation, ...), with a line saying what the step
// produced. pipelineStates() is a pure function of PipelineFacts, so every transition can be
// tested without a project; readPipelineFacts() collects the facts from a project.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/records.h"

namespace ladimo::core {

class Project;

enum class PipelineStep { Model, Calibration, Convert, Profile, Policy, Evaluate, Export };
constexpr int kPipelineSteps = 7;
enum class StepState { NotRun, Running, Done, Stale };

const char* pipelineStepName(PipelineStep step); // "model", "calibration", ...
const char* stepStateName(StepState state);      // "not run", "running", "done", "stale"

struct StepStatus {
    PipelineStep step = PipelineStep::Model;
    StepState state = StepState::NotRun;
    std::string produced; // what the step made, e.g. "8 layers converted, run 3"; empty when nothing
    std::string why;      // NotRun / Stale / Running: why, e.g. "calibration settings changed since run 3"
};

// The project setting (Project::setting) that holds the calibration choice, as JSON:
// {"kind": "self_sample" | "text" | "tokens", "file": F, "self_sample": N, "seed": S,
//  "max_tokens": M, "tokens": counted tokens (0: not counted yet)}.
constexpr const char* kCalibrationSetting = "calibration";
// The part of a calibration setting that identifies the data, in the form a conversion run
// records it (DataSource::toJson(), the run's settings "data").
nlohmann::json calibrationRunData(const nlohmann::json& setting);

struct PipelineFacts {
    bool modelOpen = false; // a model (or a project with one) is open
    std::string modelName;  // shown in the Model step
    int modelLayers = 0;
    int64_t latestModelId = 0;                 // the project's newest source model (0: none recorded)
    std::optional<nlohmann::json> calibration; // the calibration setting, when chosen
    std::optional<ConversionRun> run;          // the latest conversion run
    int layersDone = 0;                        // of that run
    int64_t profileRunId = 0;                  // the newest run with routing profiles (0: none)
    int profileLayers = 0;
    int64_t profileTokens = 0;
    std::vector<Policy> policies;
    std::vector<Evaluation> evaluations; // in the order recorded
    std::vector<ExportRecord> exports;   // in the order recorded
    std::optional<PipelineStep> running; // the step a job works on right now
};

// Everything pipelineStates() needs from a project (read-only queries). The model step is marked
// open when the project has a model; modelName/modelLayers come from its config.
PipelineFacts readPipelineFacts(Project& project);

// One status per step, in work order (index = int(PipelineStep)). A step is stale when an input
// it was made from changed since, or when a step it depends on is stale.
std::array<StepStatus, kPipelineSteps> pipelineStates(const PipelineFacts& facts);

} // namespace ladimo::core
