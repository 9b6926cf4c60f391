// The whole pipeline in one call, as `ladimo run` and the workbench's first screen run it:
// calibration data (a file or the model's own samples), stage 1 (convert), stage 2a (profile),
// stage 2b (a policy searched for the parameter budget, then refined by measured NLL on the
// calibration data), evaluation of the dense model and of the policy on held-out data, and an
// export, over one project, ending in a short report (also written as OUT/report.json).
//
// Resumable: every step is recorded in the project as it finishes, and a rerun with the same
// request takes each finished step from the project instead of redoing it (a finished conversion
// with the same model and settings, its profile, the policy of the same name, evaluations on the
// same data, an export already at the same place). An interrupted conversion resumes at its
// unfinished layers. The report is also written as OUT/report.json and, as describe() prints it,
// OUT/report.txt. Runs on the calling thread; honours `cancel` between and inside steps.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "convert/datasource.h"
#include "project/convert.h"

namespace ladimo::core {

struct PipelineRequest {
    // Stage 1 as `ladimo convert` takes it: model, project (empty: OUT/project.ladimo), load
    // options (used by every step), settings and calibration data (neither file nor self-sample:
    // kDefaultCalibration). prepareOnly and reuseFinished are the pipeline's to set.
    ProjectConvertRequest convert;
    std::string outDir; // the export (OUT/model) and the report (OUT/report.json)
    // Held-out evaluation data; empty: as many tokens as calibration's, sampled with another
    // seed (never the calibration tokens).
    std::optional<DataSource> evaluation;
    double budgetParams = 0.75; // activated FFN parameters (router included) of the dense FFN's
    // With convert.settings.distill.trainTopK 0 (auto), distil for the budget: settings.trainActive
    // becomes budgetParams (a conversion trained for the budget's k is better there: README table).
    bool trainAtBudget = true;
    std::string rules = "both";       // rule kinds searched: static, threshold, both
    int refineEvaluations = 12;       // measured refinement of the search's choice (0: none)
    int64_t sensitivityTokens = 8192; // windows are convert.settings.seqLen long in every step
    std::string exportFormat = "hf-mixtral";
    std::string exportDtype = "f32";
    ProgressFn progress;
    CancelToken cancel;
    // A line at the start and the end of each step ("convert", "done: run #1, 6 layers (83 s)").
    std::function<void(const std::string& step, const std::string& line)> onStep;
};

// The calibration data when none is given: 16384 tokens sampled from the dense model, seed 1234.
inline const DataSource kDefaultCalibration{"", 16384, 1234, 0};

struct PipelineStepReport {
    std::string step;    // convert, profile, policy, evaluate, export
    bool reused = false; // taken from the project (a finished step of an earlier run)
    double seconds = 0;
    std::string summary;
};

struct PipelineReport {
    std::string projectFile;
    int64_t runId = 0;
    int layers = 0;
    int64_t experts = 0;
    std::string policy; // the policy's name in the project
    std::string rules;  // its per-layer rules ("k6 k5 p0.9 ...")
    double estimatedFfnFraction = 0;
    // The one k written for formats with one k in every layer (Mixtral's num_experts_per_tok,
    // llama.cpp's expert_used_count): the policy's mean k, rounded; the export's notes say what
    // differs from the per-layer policy.
    int exportTopK = 0;
    nlohmann::json dense;       // evaluation metrics as recorded (perplexity, nll, tokens, ...)
    nlohmann::json converted;   // under the policy (adds kl_to_dense, activated_ffn_fraction)
    std::string evaluationData; // DataSource::describe()
    nlohmann::json exported;    // ProjectExportResult::toJson()
    std::vector<PipelineStepReport> steps;
    double seconds = 0;

    nlohmann::json toJson() const;
    std::string describe() const; // the short report `ladimo run` prints
};

PipelineReport runPipeline(const PipelineRequest& request);

} // namespace ladimo::core
