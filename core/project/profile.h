// `ladimo profile P.ladimo` and the workbench's Profile job, one sequence: the routing profile of
// every layer of the project's latest (finished) conversion run on token data (by default the
// run's own calibration data), with the per-layer sensitivity, stored in the project.
// Runs on the calling thread (InferenceMode is taken here).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/progress.h"
#include "convert/datasource.h"
#include "convert/latestrun.h"
#include "store/records.h"

namespace ladimo::core {

struct ProjectProfileRequest {
    std::string projectFile;
    LoadOptions load; // device, dtype and memory budget
    LatestRunHints hints;
    std::optional<DataSource> data; // empty: the run's calibration data (runCalibrationData)
    int64_t seqLen = 256;
    int bins = 20;
    int64_t sensitivityTokens = 8192; // 0 = skip the per-layer sensitivity
    ProgressFn progress;
    CancelToken cancel;
};

struct ProjectProfileResult {
    int64_t runId = 0;
    std::string data;                     // DataSource::describe() of the tokens profiled
    std::vector<RoutingProfile> profiles; // as stored, one per layer
};

ProjectProfileResult profileProject(const ProjectProfileRequest& request);

} // namespace ladimo::core
