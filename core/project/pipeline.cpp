#include "project/pipeline.h"

#include <filesystem>

#include "common/names.h"
#include "project/convert.h"
#include "store/project.h"

namespace ladimo::core {

namespace {
constexpr NameTable<PipelineStep, kPipelineSteps> kStepNames{{{PipelineStep::Model, "model"},
                                                              {PipelineStep::Calibration, "calibration"},
                                                              {PipelineStep::Convert, "convert"},
                                                              {PipelineStep::Profile, "profile"},
                                                              {PipelineStep::Policy, "policy"},
                                                              {PipelineStep::Evaluate, "evaluate"},
                                                              {PipelineStep::Export, "export"}}};
constexpr NameTable<StepState, 4> kStateNames{{{StepState::NotRun, "not run"},
                                               {StepState::Running, "running"},
                                               {StepState::Done, "done"},
                                               {StepState::Stale, "stale"}}};
} // namespace

const char* pipelineStepName(PipelineStep step) { return nameOf(kStepNames, step); }
const char* stepStateName(StepState state) { return nameOf(kStateNames, state); }

nlohmann::json calibrationRunData(const nlohmann::json& s)
{
    DataSource d;
    d.selfSample = s.value("kind", std::string()) == "self_sample" ? s.value("self_sample", int64_t{0}) : 0;
    d.file = d.selfSample > 0 ? std::string() : s.value("file", std::string());
    d.seed = s.value("seed", uint64_t{1234});
    d.maxTokens = d.selfSample > 0 ? 0 : s.value("max_tokens", int64_t{0});
    return d.toJson();
}

PipelineFacts readPipelineFacts(Project& project)
{
    PipelineFacts f;
    const auto models = project.models();
    if (!models.empty()) {
        const auto& m = models.back();
        f.modelOpen = true;
        f.latestModelId = m.id;
        f.modelName = std::filesystem::path(m.path).filename().string();
        f.modelLayers = m.config.value("num_hidden_layers", 0);
    }
    f.calibration = project.setting(kCalibrationSetting);
    if (const auto runId = project.latestRunId()) {
        f.run = project.run(*runId);
        for (const auto& l : project.layers(*runId))
            f.layersDone += l.status == LayerStatus::Done;
    }
    {
        auto st = project.database().prepare(
            "SELECT run_id, count(*), max(tokens) FROM routing_profile GROUP BY run_id ORDER BY run_id DESC LIMIT 1");
        if (st.step()) {
            f.profileRunId = st.columnInt(0);
            f.profileLayers = static_cast<int>(st.columnInt(1));
            f.profileTokens = st.columnInt(2);
        }
    }
    f.policies = project.policies();
    f.evaluations = project.evaluations();
    f.exports = project.exports();
    return f;
}

namespace {

std::string runName(int64_t id) { return "run " + std::to_string(id); }

const Policy* findPolicy(const PipelineFacts& f, int64_t id)
{
    for (const auto& p : f.policies)
        if (p.id == id)
            return &p;
    return nullptr;
}

} // namespace

std::array<StepStatus, kPipelineSteps> pipelineStates(const PipelineFacts& f)
{
    std::array<StepStatus, kPipelineSteps> out;
    for (int i = 0; i < kPipelineSteps; ++i)
        out[static_cast<std::size_t>(i)].step = static_cast<PipelineStep>(i);
    auto at = [&](PipelineStep s) -> StepStatus& { return out[static_cast<std::size_t>(s)]; };
    auto stale = [](StepStatus& s, const std::string& why) {
        s.state = StepState::Stale;
        s.why = why;
    };
    // Downstream of a stale step: stale too, naming the step whose input changed.
    auto inherit = [&](PipelineStep s, PipelineStep from) {
        auto& st = at(s);
        if (st.state == StepState::Done && at(from).state == StepState::Stale)
            stale(st, std::string(pipelineStepName(from)) + " is stale: " + at(from).why);
    };
    const int64_t latestRun = f.run ? f.run->id : 0;

    // Model
    {
        auto& s = at(PipelineStep::Model);
        if (f.modelOpen) {
            s.state = StepState::Done;
            s.produced = f.modelName + (f.modelLayers > 0 ? ", " + std::to_string(f.modelLayers) + " layers" : "");
        } else {
            s.why = "open a model or a project";
        }
    }

    // Calibration: chosen in the project, or taken from the latest run when never chosen.
    {
        auto& s = at(PipelineStep::Calibration);
        if (f.calibration) {
            s.state = StepState::Done;
            const auto& c = *f.calibration;
            const std::string kind = c.value("kind", std::string());
            const int64_t tokens = c.value("tokens", int64_t{0});
            s.produced = kind == "self_sample"
                ? "self-sample " + std::to_string(c.value("self_sample", int64_t{0})) + " tokens, seed "
                    + std::to_string(c.value("seed", uint64_t{0}))
                : std::filesystem::path(c.value("file", std::string())).filename().string();
            if (kind != "self_sample" && tokens > 0)
                s.produced += ", " + std::to_string(tokens) + " tokens";
        } else if (f.run && f.run->extra.contains("data")) {
            s.state = StepState::Done;
            s.produced = "as run " + std::to_string(f.run->id) + " used it";
        } else {
            s.why = "choose the calibration data";
        }
    }

    // Convert
    {
        auto& s = at(PipelineStep::Convert);
        if (f.run) {
            const auto& r = *f.run;
            const bool finished = r.status == RunStatus::Done;
            s.produced = std::to_string(f.layersDone) + (finished ? "" : " of " + std::to_string(r.layers))
                + " layers converted, " + runName(r.id);
            if (finished) {
                s.state = StepState::Done;
                if (f.latestModelId && r.modelId && r.modelId != f.latestModelId)
                    stale(s, "the model changed since " + runName(r.id));
                else if (f.calibration && r.extra.contains("data")
                         && (calibrationRunData(*f.calibration) != r.extra["data"]
                             || f.calibration->value("seed", uint64_t{1234}) != r.seed))
                    stale(s, "calibration settings changed since " + runName(r.id));
            } else {
                s.why = runName(r.id) + " is " + runStatusName(r.status) + "; Start resumes it";
            }
        } else {
            s.why = "no conversion yet";
        }
    }

    // Profile
    {
        auto& s = at(PipelineStep::Profile);
        if (f.profileRunId) {
            s.state = StepState::Done;
            s.produced = "profile of " + runName(f.profileRunId) + " on " + std::to_string(f.profileTokens)
                + " tokens, " + std::to_string(f.profileLayers) + " layers";
            if (f.profileRunId != latestRun)
                stale(s, "conversion rerun (" + runName(latestRun) + ") since the profile");
            else
                inherit(PipelineStep::Profile, PipelineStep::Convert);
        } else {
            s.why = "no routing profile yet";
        }
    }

    // Policy: the stored policies of the latest run.
    {
        auto& s = at(PipelineStep::Policy);
        int forLatest = 0;
        std::string newest;
        for (const auto& p : f.policies)
            if (p.runId == latestRun || p.runId == 0) {
                ++forLatest;
                newest = p.name;
            }
        if (forLatest > 0) {
            s.state = StepState::Done;
            s.produced
                = std::to_string(forLatest) + (forLatest == 1 ? " policy" : " policies") + ", newest '" + newest + "'";
            inherit(PipelineStep::Policy, PipelineStep::Profile);
        } else if (!f.policies.empty()) {
            s.state = StepState::Stale;
            s.produced = std::to_string(f.policies.size()) + " policies of earlier runs";
            s.why = "made for an earlier conversion run";
        } else {
            s.why = "no policy saved yet";
        }
    }

    // Evaluate: the newest evaluation.
    {
        auto& s = at(PipelineStep::Evaluate);
        if (!f.evaluations.empty()) {
            const auto& e = f.evaluations.back();
            s.state = StepState::Done;
            const auto& m = e.metrics;
            std::string label = m.value("policy_label", std::string());
            const Policy* p = e.policyId ? findPolicy(f, e.policyId) : nullptr;
            if (label.empty())
                label = p ? "policy '" + p->name + "'" : "";
            s.produced
                = std::to_string(f.evaluations.size()) + (f.evaluations.size() == 1 ? " evaluation" : " evaluations");
            if (m.contains("perplexity") && m["perplexity"].is_number()) {
                char buf[64];
                std::snprintf(buf, sizeof buf, "%.3f", m["perplexity"].get<double>());
                s.produced += ", latest: perplexity " + std::string(buf) + (label.empty() ? "" : " (" + label + ")");
            }
            if (e.runId != latestRun)
                stale(s, "conversion rerun (" + runName(latestRun) + ") since the evaluation");
            else if (e.policyId && !p)
                stale(s, "the evaluated policy was deleted");
            else if (p && m.contains("rules") && m["rules"] != p->rules)
                stale(s, "policy '" + p->name + "' was edited since the evaluation");
            else
                inherit(PipelineStep::Evaluate, PipelineStep::Convert);
        } else {
            s.why = "no evaluation yet";
        }
    }

    // Export: the newest export.
    {
        auto& s = at(PipelineStep::Export);
        if (!f.exports.empty()) {
            const auto& x = f.exports.back();
            s.state = StepState::Done;
            s.produced = std::to_string(f.exports.size()) + (f.exports.size() == 1 ? " export" : " exports")
                + ", latest " + x.format + " to " + std::filesystem::path(x.path).filename().string();
            if (x.runId != latestRun)
                stale(s, "conversion rerun (" + runName(latestRun) + ") since the export");
            else if (x.policyId && !findPolicy(f, x.policyId))
                stale(s, "the exported policy was deleted");
            else
                inherit(PipelineStep::Export, PipelineStep::Convert);
        } else {
            s.why = "nothing exported yet";
        }
    }

    if (f.running) {
        auto& s = at(*f.running);
        s.state = StepState::Running;
        s.why = "running now";
    }
    return out;
}

} // namespace ladimo::core
