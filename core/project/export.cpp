#include "project/export.h"

#include <algorithm>
#include <filesystem>

#include "common/error.h"
#include "export/formats.h"
#include "routing/policy.h"
#include "store/project.h"

namespace fs = std::filesystem;

namespace ladimo::core {

nlohmann::json ProjectExportResult::toJson() const
{
    nlohmann::json j
        = {{"out", record.path},    {"format", record.format}, {"bytes", report.bytes}, {"exact", report.exact},
           {"notes", report.notes}, {"sha256", report.sha256}, {"policy", policyName},  {"run", runId},
           {"export_id", exportId}, {"dtype", dtype}};
    if (moe)
        j["experts_per_token"] = report.expertsPerToken;
    j["files"] = nlohmann::json::array();
    for (const auto& f : report.files)
        j["files"].push_back(f.filename().string());
    return j;
}

ProjectExportResult exportProject(const ProjectExportRequest& r)
{
    const ExportFormat& format = exportFormat(r.format);
    if (r.out.empty())
        throw Error(std::string("choose where to export ") + format.name + ": "
                    + (format.singleFile ? "a file (absent)" : "a folder (absent or empty)"));
    if (std::find(format.dtypes.begin(), format.dtypes.end(), r.dtype) == format.dtypes.end()) {
        std::string list;
        for (const auto& d : format.dtypes)
            list += (list.empty() ? "" : ", ") + d;
        throw Error(std::string(format.name) + " export: dtype '" + r.dtype + "' is not supported (expected " + list
                    + ")");
    }
    if (r.shardBytes > 0 && !format.shards)
        throw Error(std::string("--shard-size does not apply to ") + format.name + ": it writes one file");
    if (format.singleFile && fs::exists(r.out))
        throw Error("'" + r.out
                    + "' already exists; an export never replaces a file (remove it or choose another name)");
    c10::InferenceMode guard; // thread-local: on the calling (worker) thread
    LoadOptions lo;
    lo.device = torch::kCPU;
    lo.dtype = torch::kFloat32;
    // The experts of an MoE export in bf16 / f16 are held in that dtype: half the memory, and the
    // same rounding as converting each tensor while it is written. The router stays float32.
    const bool moeFormat = format.moe;
    std::optional<torch::ScalarType> expertDtype;
    if (moeFormat && r.dtype == "bf16")
        expertDtype = torch::kBFloat16;
    else if (moeFormat && r.dtype == "f16")
        expertDtype = torch::kFloat16;
    const auto conv = loadLatestRun(r.projectFile, lo, r.hints, expertDtype);
    ProjectExportResult out;
    out.moe = format.moe;
    out.singleFile = format.singleFile;
    out.dtype = r.dtype;
    out.runId = conv.runId;
    const auto& layers = conv.layers.resident(); // resident: requested by expertDtype, or a small run
    const int L = static_cast<int>(layers.size());
    const int64_t N = layers.empty() ? 0 : layers.front().numExperts();

    ExportInput in;
    in.modelDir = conv.modelDir;
    in.model = &*conv.model;
    int64_t policyId = 0;
    if (out.moe) {
        in.layers = &layers;
        in.conversion = conv.run.extra;
        if (!r.policy.empty()) {
            auto p = Project::open(r.projectFile, {Project::Access::ReadOnly, Project::Verify::None});
            std::string names;
            for (const auto& pol : p.policies()) {
                names += (names.empty() ? "" : ", ") + pol.name;
                if (pol.name != r.policy)
                    continue;
                in.rules = rulesFromJson(pol.rules, L, N, r.projectFile + ": policy '" + pol.name + "'");
                policyId = pol.id;
                if (pol.runId && pol.runId != conv.runId && r.note)
                    r.note("policy '" + pol.name + "' was made for run #" + std::to_string(pol.runId)
                           + ", exporting run #" + std::to_string(conv.runId));
            }
            if (!policyId)
                throw Error(r.projectFile + ": no policy named '" + r.policy
                            + "' (the project has: " + (names.empty() ? "none" : names) + ")");
            in.policyName = r.policy;
        } else {
            const int k = conv.trainTopK();
            in.rules = uniformRules(L, RoutingRule::staticK(k));
            in.policyName = "train-k" + std::to_string(k);
        }
    }
    ExportOptions eo;
    eo.out = r.out;
    eo.dtype = r.dtype;
    eo.shardBytes = r.shardBytes;
    eo.expertsPerToken = r.topK;
    eo.progress = r.progress;
    eo.cancel = r.cancel;
    eo.log = r.note; // e.g. stale temporaries of killed exports removed
    out.report = format.write(in, eo);
    out.policyName = in.policyName;

    out.record.format = r.format;
    out.record.path = fs::absolute(r.out).lexically_normal().string();
    out.record.sha256 = out.report.sha256;
    out.record.policyId = policyId;
    out.record.runId = conv.runId;
    try {
        auto p = Project::open(r.projectFile, {Project::Access::ReadWrite, Project::Verify::None});
        out.exportId = p.addExport(out.record);
    } catch (const Error& e) {
        throw Error("the export in '" + r.out + "' is complete, but it could not be recorded in " + r.projectFile + ": "
                    + e.what());
    }
    return out;
}

} // namespace ladimo::core
