#include "store/records.h"

#include "common/error.h"
#include "common/names.h"

namespace ladimo::core {

namespace {

constexpr NameTable<LayerStatus, 4> kLayerStatus{{{LayerStatus::Pending, "pending"},
                                                  {LayerStatus::Running, "running"},
                                                  {LayerStatus::Done, "done"},
                                                  {LayerStatus::Failed, "failed"}}};
constexpr NameTable<RunStatus, 5> kRunStatus{{{RunStatus::Running, "running"},
                                              {RunStatus::Done, "done"},
                                              {RunStatus::Failed, "failed"},
                                              {RunStatus::Cancelled, "cancelled"},
                                              {RunStatus::Interrupted, "interrupted"}}};
constexpr NameTable<PolicyOrigin, 3> kPolicyOrigin{
    {{PolicyOrigin::Auto, "auto"}, {PolicyOrigin::Manual, "manual"}, {PolicyOrigin::Imported, "imported"}}};
constexpr NameTable<CalibrationSource, 2> kCalibrationSource{
    {{CalibrationSource::File, "file"}, {CalibrationSource::SelfSample, "self_sample"}}};

nlohmann::json optional(const std::optional<double>& v) { return v ? nlohmann::json(*v) : nlohmann::json(); }
nlohmann::json idOrNull(int64_t id) { return id ? nlohmann::json(id) : nlohmann::json(); }

} // namespace

const char* layerStatusName(LayerStatus s) { return nameOf(kLayerStatus, s); }
LayerStatus parseLayerStatus(const std::string& n) { return parseNamed(kLayerStatus, n, "layer status"); }
const char* runStatusName(RunStatus s) { return nameOf(kRunStatus, s); }
RunStatus parseRunStatus(const std::string& n) { return parseNamed(kRunStatus, n, "run status"); }
const char* policyOriginName(PolicyOrigin o) { return nameOf(kPolicyOrigin, o); }
PolicyOrigin parsePolicyOrigin(const std::string& n) { return parseNamed(kPolicyOrigin, n, "policy origin"); }
const char* calibrationSourceName(CalibrationSource s) { return nameOf(kCalibrationSource, s); }
CalibrationSource parseCalibrationSource(const std::string& n)
{
    return parseNamed(kCalibrationSource, n, "calibration source");
}

nlohmann::json toJson(const ProjectInfo& v)
{
    return {{"created", v.created}, {"tool_version", v.toolVersion}, {"schema_version", v.schemaVersion}};
}

nlohmann::json toJson(const SourceModel& v)
{
    return {{"id", v.id},
            {"path", v.path},
            {"config", v.config},
            {"weights_sha256", v.weightsSha256},
            {"parameters",
             {{"total", v.totalParams},
              {"embeddings", v.embeddingParams},
              {"attention", v.attentionParams},
              {"ffn", v.ffnParams}}},
            {"added", v.added}};
}

nlohmann::json toJson(const CalibrationSet& v)
{
    nlohmann::json j = {{"id", v.id},         {"name", v.name},      {"source", calibrationSourceName(v.source)},
                        {"tokens", v.tokens}, {"seq_len", v.seqLen}, {"split", v.split},
                        {"added", v.added}};
    if (v.source == CalibrationSource::File) {
        j["file"] = v.filePath;
        j["file_sha256"] = v.fileSha256;
    } else {
        j["seed"] = v.seed;
    }
    return j;
}

nlohmann::json toJson(const ConversionRun& v)
{
    return {{"id", v.id},
            {"model_id", v.modelId},
            {"calibration_set_id", idOrNull(v.calibrationSetId)},
            {"layers", v.layers},
            {"experts", v.experts},
            {"expert_size", v.expertSize},
            {"partition", v.partition},
            {"gating", v.gating},
            {"train_top_k", v.trainTopK},
            {"epochs", v.epochs},
            {"lr", v.lr},
            {"batch", v.batch},
            {"mode", v.mode},
            {"device", v.device},
            {"seed", v.seed},
            {"tool_version", v.toolVersion},
            {"started", v.started},
            {"finished", v.finished.empty() ? nlohmann::json() : nlohmann::json(v.finished)},
            {"status", runStatusName(v.status)},
            {"extra", v.extra}};
}

nlohmann::json toJson(const LayerResult& v)
{
    nlohmann::json j
        = {{"index", v.layer},
           {"status", layerStatusName(v.status)},
           {"final_loss", optional(v.finalLoss)},
           {"relative_error", optional(v.relativeError)},
           {"wall_seconds", optional(v.wallSeconds)},
           {"weights_path", v.weightsPath.empty() ? nlohmann::json() : nlohmann::json(v.weightsPath)},
           {"weights_sha256", v.weightsSha256.empty() ? nlohmann::json() : nlohmann::json(v.weightsSha256)},
           {"updated", v.updated}};
    if (!v.failureReason.empty())
        j["failure_reason"] = v.failureReason;
    return j;
}

nlohmann::json toJson(const RoutingProfile& v)
{
    return {{"run_id", v.runId},
            {"layer", v.layer},
            {"tokens", v.tokens},
            {"bin_edges", v.binEdges},
            {"rank_histograms", v.rankHistograms},
            {"expert_load", v.expertLoad},
            {"entropy", v.entropy},
            {"error_by_k", v.errorByK},
            {"extra", v.extra}};
}

nlohmann::json toJson(const Policy& v)
{
    return {{"id", v.id},
            {"name", v.name},
            {"origin", policyOriginName(v.origin)},
            {"run_id", idOrNull(v.runId)},
            {"rules", v.rules},
            {"created", v.created}};
}

nlohmann::json toJson(const Evaluation& v)
{
    return {{"id", v.id},
            {"policy_id", idOrNull(v.policyId)},
            {"run_id", idOrNull(v.runId)},
            {"data", v.data},
            {"metrics", v.metrics},
            {"device", v.device},
            {"timestamp", v.timestamp}};
}

nlohmann::json toJson(const ExportRecord& v)
{
    return {{"id", v.id},
            {"format", v.format},
            {"path", v.path},
            {"sha256", v.sha256},
            {"policy_id", idOrNull(v.policyId)},
            {"run_id", idOrNull(v.runId)},
            {"created", v.created}};
}

} // namespace ladimo::core
