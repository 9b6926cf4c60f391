#include "project/run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "common/error.h"
#include "common/fileutil.h"
#include "export/formats.h"
#include "project/convert.h"
#include "project/evaluate.h"
#include "project/export.h"
#include "project/profile.h"
#include "routing/estimate.h"
#include "routing/policy.h"
#include "routing/search.h"
#include "store/project.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string fixed(double v, int digits)
{
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", digits, v);
    return buf;
}

// The policy's mean k over layers (estimated for top-p rules), rounded, within 1..experts.
int roundedMeanK(const PolicyEstimate& e, int64_t experts)
{
    double sum = 0;
    for (const auto& l : e.layers)
        sum += l.meanK;
    const int k = e.layers.empty() ? 1 : static_cast<int>(std::lround(sum / static_cast<double>(e.layers.size())));
    return std::clamp<int>(k, 1, static_cast<int>(experts));
}

// The newest evaluation of `runId` labelled `label` on `data`, if any.
std::optional<Evaluation> findEvaluation(Project& project, int64_t runId, const std::string& label,
                                         const std::string& data)
{
    std::optional<Evaluation> found;
    for (auto& e : project.evaluations())
        if (e.runId == runId && e.data == data && e.metrics.value("policy_label", "") == label)
            found = e;
    return found;
}

// Runs the steps in order, timing each and telling the caller as each starts and ends.
class Steps {
public:
    Steps(const PipelineRequest& r, PipelineReport& report) : m_request(r), m_report(report) { }

    template <class Fn> void run(const std::string& step, Fn&& fn)
    {
        m_request.cancel.throwIfCancelled();
        if (m_request.onStep)
            m_request.onStep(step, "started");
        const auto t = Clock::now();
        PipelineStepReport s;
        s.step = step;
        fn(s);
        s.seconds = secondsSince(t);
        if (m_request.onStep)
            m_request.onStep(step, (s.reused ? "reused: " : "done: ") + s.summary + " (" + fixed(s.seconds, 1) + " s)");
        m_report.steps.push_back(std::move(s));
    }

private:
    const PipelineRequest& m_request;
    PipelineReport& m_report;
};

} // namespace

PipelineReport runPipeline(const PipelineRequest& r)
{
    if (r.outDir.empty())
        throw Error("the pipeline needs an output folder (the export and report.json go there)");
    if (!(r.budgetParams > 0 && r.budgetParams <= 1))
        throw Error("the parameter budget must be in (0, 1], got " + std::to_string(r.budgetParams));
    const auto start = Clock::now();
    fs::create_directories(r.outDir);
    PipelineReport report;
    report.projectFile
        = r.convert.projectFile.empty() ? (fs::path(r.outDir) / "project.ladimo").string() : r.convert.projectFile;
    const DataSource calibration
        = r.convert.data.file.empty() && r.convert.data.selfSample <= 0 ? kDefaultCalibration : r.convert.data;
    const LoadOptions& load = r.convert.load;
    Steps steps(r, report);
    const SearchOptions searchOptions = [&] {
        SearchOptions so;
        so.cost = CostKind::Params;
        so.rules = parseRuleKinds(r.rules);
        return so;
    }();

    // Stage 1.
    steps.run("convert", [&](PipelineStepReport& s) {
        ProjectConvertRequest req = r.convert;
        if (r.trainAtBudget && req.settings.distill.trainTopK == 0)
            req.settings.trainActive = r.budgetParams;
        req.projectFile = report.projectFile;
        req.data = calibration;
        req.prepareOnly = false;
        req.reuseFinished = true;
        ProjectConvertHooks hooks;
        hooks.callbacks.progress = r.progress;
        hooks.callbacks.cancel = r.cancel;
        const auto res = convertProject(req, hooks);
        report.runId = res.runId;
        report.layers = res.layers;
        s.reused = res.reused;
        s.summary = "run #" + std::to_string(res.runId) + ", " + std::to_string(res.layers) + " layers on "
            + std::to_string(res.calibrationTokens) + " tokens of " + calibration.describe();
    });

    // Stage 2a: the routing profile on the calibration data (it is what the policy is fitted on).
    steps.run("profile", [&](PipelineStepReport& s) {
        auto project = Project::open(report.projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
        const auto stored = project.routingProfiles(report.runId);
        if (static_cast<int>(stored.size()) == report.layers) {
            s.reused = true;
            s.summary
                = std::to_string(stored.size()) + " layers on " + std::to_string(stored.front().tokens) + " tokens";
            return;
        }
        ProjectProfileRequest req;
        req.projectFile = report.projectFile;
        req.load = load;
        req.seqLen = r.convert.settings.seqLen;
        req.sensitivityTokens = r.sensitivityTokens;
        req.progress = r.progress;
        req.cancel = r.cancel;
        const auto res = profileProject(req);
        s.summary = std::to_string(res.profiles.size()) + " layers on " + std::to_string(res.profiles.front().tokens)
            + " tokens of " + res.data;
    });

    // Stage 2b: search for the budget, refine by measured NLL on the calibration data, store.
    // Policy names are unique in a project: the run is part of the name, so a later conversion
    // run of the same project (other settings) gets a policy of its own.
    char nameBuf[96];
    std::snprintf(nameBuf, sizeof nameBuf, "run%lld-params-%.2f-%s", static_cast<long long>(report.runId),
                  r.budgetParams, r.rules.c_str());
    report.policy = nameBuf;
    steps.run("policy", [&](PipelineStepReport& s) {
        // Read-only while searching and measuring (minutes): the writer lock only for the save.
        auto project = Project::open(report.projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
        const auto run = project.run(report.runId);
        report.experts = run.experts;
        const auto tables = loadPolicyTables(project, report.runId, load.device.str());
        const auto chosen = [&](const PolicyRules& rules) {
            const auto estimate = estimatePolicy(tables, rules);
            report.rules = describeRules(rules, run.experts);
            report.estimatedFfnFraction = estimate.activatedFfnFraction;
            report.exportTopK = roundedMeanK(estimate, run.experts);
        };
        for (const auto& p : project.policies())
            if (p.name == report.policy && p.runId == report.runId) {
                chosen(policyRules(p, run.layers, run.experts));
                s.reused = true;
                s.summary = "'" + p.name + "': " + report.rules;
                return;
            }
        auto rules = searchBudget(tables, r.budgetParams, searchOptions).rules;
        std::string refined;
        if (r.refineEvaluations > 1) {
            ProjectRefineRequest req;
            req.projectFile = report.projectFile;
            req.load = load;
            req.data = runCalibrationData(project, report.runId);
            req.seqLen = r.convert.settings.seqLen;
            req.options.cost = CostKind::Params;
            req.options.budgetFraction = r.budgetParams;
            req.options.maxEvaluations = r.refineEvaluations;
            req.options.progress = r.progress;
            req.options.cancel = r.cancel;
            const auto res = refineProjectPolicy(req, tables, rules);
            rules = res.best.rules;
            refined = ", refined over " + std::to_string(res.measured.size()) + " measured policies (NLL "
                + fixed(res.start.measured, 4) + " -> " + fixed(res.best.measured, 4) + ")";
        }
        Policy p;
        p.name = report.policy;
        p.origin = PolicyOrigin::Auto;
        p.runId = report.runId;
        p.rules = rulesToJson(rules);
        Project::open(report.projectFile, {Project::Access::ReadWrite, Project::Verify::None}).savePolicy(p);
        chosen(rules);
        s.summary = "'" + p.name + "': " + report.rules + refined;
    });

    // Held-out evaluation: the dense model and the policy, on the same tokens.
    DataSource evaluation = r.evaluation ? *r.evaluation : calibration;
    if (!r.evaluation) {
        evaluation.file.clear();
        evaluation.selfSample = calibration.selfSample > 0 ? calibration.selfSample : kDefaultCalibration.selfSample;
        evaluation.seed = calibration.seed + 1;
        evaluation.maxTokens = 0;
    }
    report.evaluationData = evaluation.describe();
    for (const bool dense : {true, false}) {
        const std::string label = dense ? "dense" : report.policy;
        steps.run(dense ? "evaluate dense" : "evaluate policy", [&](PipelineStepReport& s) {
            nlohmann::json metrics;
            {
                auto project = Project::open(report.projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
                if (auto e = findEvaluation(project, report.runId, label, evaluation.describe())) {
                    metrics = e->metrics;
                    s.reused = true;
                }
            }
            if (metrics.is_null()) {
                ProjectEvalRequest req;
                req.projectFile = report.projectFile;
                req.load = load;
                req.data = evaluation;
                req.seqLen = r.convert.settings.seqLen;
                req.dense = dense;
                req.policy = dense ? "" : report.policy;
                req.timing = false; // perplexity and KL only: timing is `ladimo eval`'s and `bench`'s job
                req.recordLabel = true;
                req.progress = r.progress;
                req.cancel = r.cancel;
                metrics = evaluateProject(req).metrics;
            }
            (dense ? report.dense : report.converted) = metrics;
            s.summary = "perplexity " + fixed(metrics.value("perplexity", 0.0), 4)
                + (dense ? "" : ", activated FFN " + fixed(metrics.value("activated_ffn_fraction", 0.0), 4));
        });
    }

    // Export under the policy.
    steps.run("export", [&](PipelineStepReport& s) {
        const auto& format = exportFormat(r.exportFormat);
        const fs::path out
            = fs::path(r.outDir) / (format.singleFile ? "model." + r.exportFormat : std::string("model"));
        const std::string outAbs = fs::absolute(out).lexically_normal().string();
        {
            auto project = Project::open(report.projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
            int64_t policyId = 0;
            for (const auto& p : project.policies())
                if (p.name == report.policy)
                    policyId = p.id;
            for (const auto& e : project.exports())
                if (e.path == outAbs && e.runId == report.runId && e.policyId == policyId && e.format == r.exportFormat
                    && fs::exists(out)) {
                    report.exported
                        = {{"out", e.path}, {"format", e.format}, {"sha256", e.sha256}, {"export_id", e.id}};
                    s.reused = true;
                    s.summary = r.exportFormat + " at " + e.path;
                    return;
                }
        }
        std::error_code ec;
        if (fs::exists(out, ec))
            throw Error("'" + out.string() + "' exists but is not this run's export under policy '" + report.policy
                        + "'; move it away (an export never replaces files)");
        ProjectExportRequest req;
        req.projectFile = report.projectFile;
        req.format = r.exportFormat;
        req.out = out.string();
        req.dtype = r.exportDtype;
        req.policy = report.policy;
        req.topK = report.exportTopK;
        req.progress = r.progress;
        req.cancel = r.cancel;
        const auto res = exportProject(req);
        report.exported = res.toJson();
        s.summary
            = r.exportFormat + " at " + res.record.path + (res.report.exact ? " (exact)" : " (approximate: see notes)");
    });

    report.seconds = secondsSince(start);
    atomicWriteFile(fs::path(r.outDir) / "report.json", report.toJson().dump(2) + "\n");
    atomicWriteFile(fs::path(r.outDir) / "report.txt", report.describe());
    return report;
}

nlohmann::json PipelineReport::toJson() const
{
    nlohmann::json j = {{"project", projectFile},
                        {"run", runId},
                        {"layers", layers},
                        {"experts", experts},
                        {"policy", policy},
                        {"rules", rules},
                        {"estimated_activated_ffn_fraction", estimatedFfnFraction},
                        {"export_top_k", exportTopK},
                        {"evaluation_data", evaluationData},
                        {"dense", dense},
                        {"converted", converted},
                        {"export", exported},
                        {"seconds", seconds}};
    j["steps"] = nlohmann::json::array();
    for (const auto& s : steps)
        j["steps"].push_back({{"step", s.step}, {"reused", s.reused}, {"seconds", s.seconds}, {"summary", s.summary}});
    return j;
}

std::string PipelineReport::describe() const
{
    std::string out = "LaDiMo pipeline report (" + projectFile + ")\n";
    for (const auto& s : steps)
        out += "  " + s.step + std::string(s.step.size() < 16 ? 16 - s.step.size() : 1, ' ')
            + (s.reused ? "reused " : "") + fixed(s.seconds, 1) + " s  " + s.summary + "\n";
    const double densePpl = dense.value("perplexity", 0.0);
    const double ppl = converted.value("perplexity", 0.0);
    out += "\n  on " + evaluationData + " (held out from calibration):\n";
    out += "    dense      perplexity " + fixed(densePpl, 4) + "\n";
    out += "    " + policy + "  perplexity " + fixed(ppl, 4)
        + (densePpl > 0 ? " (" + std::string(ppl >= densePpl ? "+" : "") + fixed(100 * (ppl / densePpl - 1), 1) + "%)"
                        : "")
        + ", KL to dense " + fixed(converted.value("kl_to_dense", 0.0), 4) + " nats/token, activated FFN "
        + fixed(100 * converted.value("activated_ffn_fraction", 0.0), 1) + "% (estimated "
        + fixed(100 * estimatedFfnFraction, 1) + "%)\n";
    out += "  rules per layer: " + rules + "\n";
    out += "  exported: " + exported.value("out", std::string("-"));
    if (exported.contains("exact") && !exported["exact"].get<bool>())
        out += " (one k = " + std::to_string(exportTopK)
            + " in every layer for other tools; the per-layer policy is stored with it)";
    out += "\n";
    out += "  total " + fixed(seconds, 1) + " s\n";
    return out;
}

} // namespace ladimo::core
