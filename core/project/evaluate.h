// `ladimo eval P.ladimo` and the workbench's Evaluate job, one sequence: the project's latest
// conversion run under a rule (the training k, a uniform top-k / top-p, a stored policy, oracle
// routing, or the dense model itself) on token data; perplexity, KL to the dense model, activated
// FFN fraction, optional multiple-choice accuracy and prefill/decode timing against the dense
// model, with the estimate from the routing profile beside it; recorded in the project as an
// evaluation. Runs on the calling thread (set nothing up on it: InferenceMode is taken here).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "convert/latestrun.h"
#include "project/convert.h"
#include "eval/perplexity.h"
#include "routing/refine.h"

namespace ladimo::core {

struct ProjectEvalRequest {
    std::string projectFile;
    LoadOptions load; // device and compute dtype of the model
    LatestRunHints hints;
    DataSource data; // neither file nor self-sample: the run's calibration data
    int64_t seqLen = 256;
    int64_t batch = 8;        // windows per forward pass
    bool dense = false;       // the dense model (a baseline), no rule
    std::string policy;       // a stored policy of the project (by name)
    std::string policyHint;   // appended to "P has no policy named 'X'"
    int topK = 0;             // uniform top-k (0: the training k)
    double topP = 0;          // > 0: uniform token-adaptive top-p instead
    bool oracle = false;      // oracle routing (a ceiling; never timed)
    bool timing = true;       // measure prefill / decode against the dense model
    std::string choices;      // also multiple-choice accuracy on this .jsonl (needs a tokenizer)
    bool recordLabel = false; // metrics get "policy_label" ("uniform top-4", the policy name, "dense")
    ProgressFn progress;
    CancelToken cancel;
};

struct ProjectEvalResult {
    int64_t runId = 0;
    int64_t evaluationId = 0;
    EvalResult perplexity;
    nlohmann::json metrics; // as recorded in the project
    std::string device;
    std::string data; // DataSource::describe() of the tokens (the run's calibration data when none was given)
};

ProjectEvalResult evaluateProject(const ProjectEvalRequest& request);

// `ladimo policy --refine-data`: the measured refinement (routing/refine.h) of a policy for the
// project's latest run, each candidate measured by the converted model's NLL on `data` (the model
// and the tokens loaded once). Needs at least two windows of tokens. Runs on the calling thread.
struct ProjectRefineRequest {
    std::string projectFile;
    LoadOptions load;
    LatestRunHints hints;
    DataSource data;
    int64_t seqLen = 256;
    RefineOptions options; // budget, measurements, progress and cancel
};

RefineResult refineProjectPolicy(const ProjectRefineRequest& request, const PolicyTables& tables,
                                 const PolicyRules& start);

} // namespace ladimo::core
