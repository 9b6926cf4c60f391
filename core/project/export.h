// `ladimo export P.ladimo` and the workbench's Export job, one sequence: the project's latest
// conversion run or its dense source model, in one of the formats of export/formats.h, written under
// a policy (a stored one by name, or the training k in every layer), then recorded in the project.
// The project is read, and opened for writing only to record the finished export. Runs on the
// calling thread (InferenceMode is taken here).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "convert/latestrun.h"
#include "export/export.h"
#include "store/records.h"

namespace ladimo::core {

struct ProjectExportRequest {
    std::string projectFile;
    std::string format = "hf-mixtral"; // a name of exportFormats() (export/formats.h)
    std::string out;                   // folder (absent or empty) or, for single-file formats, a file (absent)
    std::string dtype = "f32";
    int64_t shardBytes = 0; // hf-*: largest safetensors file, 0 = one file
    std::string policy;     // empty: the training k in every layer
    int topK = 0;           // k for formats with one k for all layers; 0 = from a uniform static policy
    LatestRunHints hints;
    ProgressFn progress;
    CancelToken cancel;
    std::function<void(const std::string&)> note; // remarks on the way (a policy made for another run)
};

struct ProjectExportResult {
    ExportReport report;
    ExportRecord record; // as recorded (absolute path)
    int64_t exportId = 0;
    int64_t runId = 0;
    std::string policyName;  // the policy written ("train-k6" for the default)
    bool moe = false;        // the conversion, not the dense model (ExportFormat::moe)
    bool singleFile = false; // ExportFormat::singleFile
    std::string dtype;
    // {out, format, bytes, exact, notes, sha256, policy, run, export_id, dtype, files[,
    // experts_per_token]}: what `ladimo export --json` prints.
    nlohmann::json toJson() const;
};

// Throws an Error for an unknown format, a GGUF file that exists, or a policy the project lacks;
// a finished export that cannot be recorded names the files it left.
ProjectExportResult exportProject(const ProjectExportRequest& request);

} // namespace ladimo::core
