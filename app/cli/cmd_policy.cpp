// LaDiMo stage 2b on the command line:
//   `ladimo latency P.ladimo`  measures the latency model of the active device and stores it;
//   `ladimo policy P.ladimo`   searches (--budget-params / --budget-latency / --max-error), edits
//                              (--set), imports, exports, lists and shows named policies;
//   `ladimo tradeoff P.ladimo` prints the Pareto front with estimates and measured evaluations.
// Estimates come from the stored routing profiles (`ladimo profile`): no model run.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "common/fileutil.h"
#include "convert/convert.h"
#include "project/evaluate.h"
#include "model/device.h"
#include "routing/estimate.h"
#include "routing/latency.h"
#include "routing/policy.h"
#include "routing/refine.h"
#include "routing/search.h"
#include "store/project.h"

namespace ladimo::cli {

namespace {

struct RunContext {
    core::ConversionRun run;
    core::PolicyTables tables;
    std::string device;
};

// The device whose latency model estimates use: what --device names ("auto" = what the model
// would run on).
std::string latencyDeviceName(const std::string& spec) { return core::parseDevice(spec).str(); }

RunContext loadContext(core::Project& project, const std::string& deviceSpec)
{
    const auto runId = project.latestRunId();
    if (!runId)
        throw core::Error(project.file().string() + ": no conversion run yet (run ladimo convert --project ...)");
    RunContext c{project.run(*runId), {}, {}};
    std::string used; // "auto" falls back to the CPU's latency model, as in the workbench
    c.tables = core::loadPolicyTablesFor(project, *runId, deviceSpec, &used);
    c.device = used.empty() ? latencyDeviceName(deviceSpec) : used;
    return c;
}

std::optional<core::Policy> findPolicy(core::Project& project, const std::string& name)
{
    for (auto& p : project.policies())
        if (p.name == name)
            return p;
    return std::nullopt;
}

void printEstimate(const RunContext& c, const std::string& name, const core::PolicyRules& rules,
                   const core::PolicyEstimate& e)
{
    std::printf("policy '%s' for run #%lld (%d layers, %lld experts)\n", name.c_str(), (long long)c.run.id,
                c.run.layers, (long long)c.run.experts);
    std::printf("layer  rule             mean k  FFN params  rel. error  %s%s\n",
                e.proxyIsKl ? "est. dNLL" : "  proxy  ", e.hasLatency ? "  prefill ms  decode ms" : "");
    for (std::size_t l = 0; l < rules.size(); ++l) {
        const auto& le = e.layers[l];
        std::printf("%5zu  %-15s %7.2f  %9.1f%%  %10.5f  %8.5f", l, core::describeRule(rules[l], c.run.experts).c_str(),
                    le.meanK, 100.0 * le.params / c.tables.layers[l].denseParams, le.error, le.proxy);
        if (e.hasLatency)
            std::printf("  %10.3f  %9.4f", 1e3 * le.prefillSeconds, 1e3 * le.decodeSeconds);
        std::printf("%s\n", le.approximate ? "  (approximate)" : "");
    }
    std::printf("model: activated FFN fraction %.4f, error proxy %.5f%s", e.activatedFfnFraction, e.errorProxy,
                e.proxyIsKl ? " (estimated NLL increase, nats/token)" : "");
    if (e.hasLatency)
        std::printf(", estimated prefill %.2f ms (%.1f%% of dense), decode %.3f ms (%.1f%% of dense) on %s",
                    1e3 * e.prefillSeconds, 100 * e.prefillFraction, 1e3 * e.decodeSeconds, 100 * e.decodeFraction,
                    c.device.c_str());
    else
        std::printf(" (no latency model for %s: run `ladimo latency`)", c.device.c_str());
    std::printf("\n");
}

nlohmann::json policyJson(const RunContext& c, const std::string& name, const core::PolicyRules& rules,
                          const core::PolicyEstimate& e)
{
    auto j = core::policyDocument(name, rules, core::parseGating(c.run.gating), c.run.experts);
    j["estimate"] = core::toJson(e);
    return j;
}

nlohmann::json refineJson(const core::RefineResult& r, const DataOptions& data, int64_t experts)
{
    nlohmann::json j = {{"data", data.describe()},     {"measure", "nll"},
                        {"rounds", r.rounds},          {"start_nll", r.start.measured},
                        {"best_nll", r.best.measured}, {"start_rules", core::rulesToJson(r.start.rules)}};
    j["measured"] = nlohmann::json::array();
    for (const auto& c : r.measured)
        j["measured"].push_back({{"rules", core::describeRules(c.rules, experts)},
                                 {"cost", c.cost},
                                 {"error_proxy", c.proxy},
                                 {"nll", c.measured}});
    return j;
}

void printRefine(const core::RefineResult& r, int64_t experts)
{
    std::printf("refinement: %zu policies measured in %d rounds (held-out NLL, nats/token)\n", r.measured.size(),
                r.rounds);
    std::printf("     cost  error proxy        NLL  rules\n");
    for (const auto& c : r.measured)
        std::printf("  %7.4f  %11.5f  %9.5f  %s%s\n", c.cost, c.proxy, c.measured,
                    core::describeRules(c.rules, experts).c_str(), &c == &r.measured.front() ? "  (search)" : "");
    std::printf("kept: %s (NLL %.5f; the search's choice %.5f)\n", core::describeRules(r.best.rules, experts).c_str(),
                r.best.measured, r.start.measured);
}

} // namespace

void registerLatencyCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        core::LatencyOptions latency;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("latency",
                                   "LaDiMo stage 2b: measure the latency model (dense FFN, MoE block at each k, "
                                   "the rest of the model) on the active device and store it");
    cmd->add_option("project", o->model.path, "Project file (*.ladimo) with a finished conversion run")->required();
    o->model.add(cmd, /*positional=*/false);
    o->data.add(cmd);
    cmd->add_option("--prefill", o->latency.prefillTokens, "Prefill batch in tokens")->capture_default_str();
    cmd->add_option("--decode-context", o->latency.decodeContext, "Cached tokens before the timed decode step")
        ->capture_default_str();
    cmd->add_option("--repeats", o->latency.repeats, "Timed runs per measurement (the fastest counts)")
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        if (!isProjectFile(o->model.path))
            throw core::Error("latency needs a project file (*.ladimo), got '" + o->model.path + "'");
        auto project
            = core::Project::open(o->model.path, {core::Project::Access::ReadWrite, core::Project::Verify::Exists});
        auto converted = loadConverted(o->model.path, o->model);
        torch::InferenceMode guard;
        ProgressPrinter printer;
        // Real FFN inputs of the middle layer, so the MoE blocks route as they do in use.
        auto data = o->data;
        if (data.file.empty() && data.selfSample == 0)
            data.selfSample = o->latency.prefillTokens;
        auto stream = data.load(converted.model, core::Tokenizer::loadForModel(converted.modelPath).get(),
                                o->latency.prefillTokens, printer.fn());
        const int mid = converted.model.config().numLayers / 2;
        std::vector<torch::Tensor> xs, ys;
        core::CaptureOptions co;
        co.upToLayer = mid;
        core::captureFfn(converted.model, stream, o->latency.prefillTokens, &xs, &ys, co);
        auto opts = o->latency;
        opts.progress = printer.fn();
        opts.cancel = interruptToken();
        opts.prefillTokens = std::min<int64_t>(opts.prefillTokens, xs[static_cast<std::size_t>(mid)].size(0));
        const auto m = core::measureLatency(converted.model, *converted.layers.get(static_cast<std::size_t>(mid)),
                                            xs[static_cast<std::size_t>(mid)], opts);
        project.saveLatencyModel(converted.runId, m.device, m.toJson());
        if (o->json) {
            std::cout << m.toJson().dump(2) << "\n";
            return;
        }
        std::printf("latency model of run #%lld on %s (stored in %s)\n", (long long)converted.runId, m.device.c_str(),
                    o->model.path.c_str());
        std::printf("  prefill %lld tokens: rest of model %.2f ms, dense FFN %.3f ms/layer, dense model %.2f ms\n",
                    (long long)m.prefillTokens, 1e3 * m.prefillOther, 1e3 * m.prefillDenseFfn, 1e3 * m.densePrefill());
        std::printf("  decode at context %lld: rest of model %.3f ms, dense FFN %.4f ms/layer, dense model %.3f ms\n",
                    (long long)m.decodeContext, 1e3 * m.decodeOther, 1e3 * m.decodeDenseFfn, 1e3 * m.denseDecode());
        std::printf("  MoE block, ms per layer:\n    k  prefill   decode\n");
        for (std::size_t k = 0; k < m.prefillMoe.size(); ++k)
            std::printf("  %3zu  %7.3f  %7.4f\n", k + 1, 1e3 * m.prefillMoe[k], 1e3 * m.decodeMoe[k]);
    });
}

void registerPolicyCommand(CLI::App& app)
{
    struct Opts {
        std::string project;
        std::string device = "auto";
        std::optional<double> budgetParams, budgetLatency, maxError;
        std::string set, importFile, exportFile, show;
        std::string rules = "both";
        std::string latency = "prefill";
        std::string name, base;
        bool list = false, remove = false, json = false;
        DataOptions refine; // --refine-data: measured refinement of a budget search
        core::RefineOptions refineOptions;
        int64_t refineSeqLen = 256;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("policy",
                                   "LaDiMo stage 2b: choose per-layer routing rules (search, edit, import, export)");
    cmd->add_option("project", o->project, "Project file (*.ladimo) with a routing profile (`ladimo profile`)")
        ->required();
    auto* bp = cmd->add_option("--budget-params", o->budgetParams,
                               "Search: activated FFN parameters at most F of the dense FFN (e.g. 0.75)");
    auto* bl = cmd->add_option("--budget-latency", o->budgetLatency,
                               "Search: estimated latency at most F of the dense model's (needs `ladimo latency`)");
    auto* me
        = cmd->add_option("--max-error", o->maxError, "Search: the cheapest policy whose error proxy is at most E");
    auto* st = cmd->add_option(
        "--set", o->set, "Edit: \"0:4,1:6,2-3:p0.9\" (LAYER:K, LAYER:pP, LAYER:pP:MIN-MAX; LAYER may be A-B or *)");
    auto* im = cmd->add_option("--import", o->importFile, "Import a policy JSON document");
    auto* ex = cmd->add_option("--export", o->exportFile, "Export policy --name as a JSON document");
    auto* ls = cmd->add_flag("--list", o->list, "List the stored policies with their estimates");
    auto* sh = cmd->add_option("--show", o->show, "Show one stored policy with per-layer estimates");
    auto* rm = cmd->add_flag("--delete", o->remove, "Delete policy --name");
    for (auto* a : {bp, bl, me, st, im, ex, ls, sh, rm})
        for (auto* b : {bp, bl, me, st, im, ex, ls, sh, rm})
            if (a != b)
                a->excludes(b);
    cmd->add_option("--rules", o->rules, "Search over static, threshold (top-p) or both kinds of rule")
        ->capture_default_str();
    cmd->add_option("--latency", o->latency, "Latency measure for --budget-latency: prefill or decode")
        ->capture_default_str();
    cmd->add_option("--name", o->name, "Policy name (default: derived from the target)");
    cmd->add_option("--base", o->base, "--set edits this stored policy (default: the training k in every layer)");
    cmd->add_option("--device", o->device, "Device whose latency model estimates use")->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    o->refine.maxTokens = 32768;
    auto* rd = cmd->add_option("--refine-data", o->refine.file,
                               "Budget search: then measure the held-out NLL of the search's choice, the uniform top-k "
                               "and their neighbours on this text or token file, and keep the best (not the "
                               "evaluation data)");
    auto* rs = cmd->add_option("--refine-self-sample", o->refine.selfSample,
                               "Budget search: refine as --refine-data does, on N tokens sampled from the dense model");
    cmd->add_option("--refine-seed", o->refine.seed, "Refinement: seed of --refine-self-sample")
        ->capture_default_str()
        ->needs(rs);
    rd->excludes(rs);
    cmd->add_option("--refine-tokens", o->refine.maxTokens,
                    "Refinement: use at most N tokens of --refine-data (0 = all)")
        ->capture_default_str();
    cmd->add_option("--refine-evals", o->refineOptions.maxEvaluations, "Refinement: at most N measured policies")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    cmd->add_option("--refine-per-round", o->refineOptions.perRound,
                    "Refinement: neighbours measured (lowest error proxy first) before moving to the best")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    for (auto* other : {me, st, im, ex, ls, sh, rm}) {
        rd->excludes(other);
        rs->excludes(other);
    }
    cmd->callback([o, cmd] {
        const bool refine = !o->refine.file.empty() || o->refine.selfSample > 0;
        for (const char* opt : {"--refine-tokens", "--refine-evals", "--refine-per-round"})
            if (!refine && cmd->count(opt) > 0)
                throw core::Error(std::string(opt) + " needs --refine-data or --refine-self-sample");
        if (!isProjectFile(o->project))
            throw core::Error("policy needs a project file (*.ladimo), got '" + o->project + "'");
        const bool writes = o->budgetParams || o->budgetLatency || o->maxError || !o->set.empty()
            || !o->importFile.empty() || o->remove;
        auto project = core::Project::open(o->project,
                                           {writes ? core::Project::Access::ReadWrite : core::Project::Access::ReadOnly,
                                            core::Project::Verify::Exists});
        const auto c = loadContext(project, o->device);
        const int L = c.run.layers;
        const int64_t N = c.run.experts;

        nlohmann::json refineReport; // set by a refined search
        auto output = [&](const std::string& name, const core::PolicyRules& rules) {
            const auto e = core::estimatePolicy(c.tables, rules);
            if (o->json) {
                auto j = policyJson(c, name, rules, e);
                if (!refineReport.is_null())
                    j["refine"] = refineReport;
                std::cout << j.dump(2) << "\n";
                return;
            }
            printEstimate(c, name, rules, e);
        };
        auto store = [&](std::string name, core::PolicyOrigin origin, const core::PolicyRules& rules) {
            core::validatePolicyName(name);
            core::Policy p;
            if (auto existing = findPolicy(project, name))
                p = *existing;
            p.name = name;
            p.origin = origin;
            p.runId = c.run.id;
            p.rules = core::rulesToJson(rules);
            project.savePolicy(p);
            output(name, rules);
        };
        auto named = [&](const std::string& name) {
            auto p = findPolicy(project, name);
            if (!p)
                throw core::Error(o->project + " has no policy named '" + name + "'");
            return *p;
        };

        if (o->list) {
            nlohmann::json out = nlohmann::json::array();
            if (!o->json)
                std::printf("  id  name                      origin    FFN fraction  error proxy  prefill vs dense\n");
            for (const auto& p : project.policies()) {
                const auto rules = core::policyRules(p, L, N);
                const auto e = core::estimatePolicy(c.tables, rules);
                if (o->json) {
                    auto j = policyJson(c, p.name, rules, e);
                    j["id"] = p.id;
                    j["origin"] = core::policyOriginName(p.origin);
                    out.push_back(j);
                    continue;
                }
                std::printf("%4lld  %-24s  %-8s  %12.4f  %11.5f  %s\n", (long long)p.id, p.name.c_str(),
                            core::policyOriginName(p.origin), e.activatedFfnFraction, e.errorProxy,
                            e.hasLatency ? (std::to_string(e.prefillFraction)).c_str() : "-");
            }
            if (o->json)
                std::cout << out.dump(2) << "\n";
            return;
        }
        if (!o->show.empty()) {
            const auto p = named(o->show);
            output(p.name, core::policyRules(p, L, N));
            return;
        }
        if (o->remove) {
            if (o->name.empty())
                throw core::Error("--delete needs --name");
            project.deletePolicy(named(o->name).id);
            std::printf("deleted policy '%s'\n", o->name.c_str());
            return;
        }
        if (!o->exportFile.empty()) {
            if (o->name.empty())
                throw core::Error("--export needs --name of a stored policy");
            const auto p = named(o->name);
            const auto rules = core::policyRules(p, L, N);
            auto doc = core::policyDocument(p.name, rules, core::parseGating(c.run.gating), N);
            core::atomicWriteFile(o->exportFile, doc.dump(2) + "\n");
            std::printf("exported policy '%s' to %s\n", p.name.c_str(), o->exportFile.c_str());
            return;
        }
        if (!o->importFile.empty()) {
            auto d = core::loadPolicyDocument(o->importFile, L, N);
            const std::string name = !o->name.empty() ? o->name : !d.name.empty() ? d.name : "imported";
            if (d.gating != core::parseGating(c.run.gating) && !o->json)
                std::printf("note: the policy was written for %s gating; this conversion uses %s\n",
                            core::gatingName(d.gating), c.run.gating.c_str());
            store(name, core::PolicyOrigin::Imported, d.rules);
            return;
        }
        if (!o->set.empty()) {
            auto base = o->base.empty() ? core::uniformRules(L, core::RoutingRule::staticK(c.run.trainTopK))
                                        : core::policyRules(named(o->base), L, N);
            if (o->base.empty() && !o->name.empty())
                if (auto existing = findPolicy(project, o->name))
                    base = core::policyRules(*existing, L, N);
            const auto rules = core::applyEdits(base, o->set, N);
            store(o->name.empty() ? "manual" : o->name, core::PolicyOrigin::Manual, rules);
            return;
        }
        core::SearchOptions so;
        so.rules = core::parseRuleKinds(o->rules);
        char buf[64];
        core::SearchResult r;
        if (o->budgetParams) {
            so.cost = core::CostKind::Params;
            r = core::searchBudget(c.tables, *o->budgetParams, so);
            std::snprintf(buf, sizeof buf, "params-%.2f-%s", *o->budgetParams, o->rules.c_str());
        } else if (o->budgetLatency) {
            so.cost = core::parseCostKind(o->latency);
            if (so.cost == core::CostKind::Params)
                throw core::Error("--latency must be prefill or decode");
            r = core::searchBudget(c.tables, *o->budgetLatency, so);
            std::snprintf(buf, sizeof buf, "%s-%.2f-%s", o->latency.c_str(), *o->budgetLatency, o->rules.c_str());
        } else if (o->maxError) {
            r = core::searchMaxError(c.tables, *o->maxError, so);
            std::snprintf(buf, sizeof buf, "error-%g-%s", *o->maxError, o->rules.c_str());
        } else {
            throw core::Error(
                "policy: give a target (--budget-params, --budget-latency, --max-error), --set, --import, "
                "--export, --show or --list");
        }
        if (refine) {
            auto ro = o->refineOptions;
            ro.cost = so.cost;
            ro.budgetFraction = o->budgetParams ? *o->budgetParams : *o->budgetLatency;
            ModelOptions model;
            model.path = o->project;
            model.device = o->device;
            ProgressPrinter printer;
            ro.progress = printer.fn();
            ro.cancel = interruptToken();
            const auto refined = core::refineProjectPolicy(
                {o->project, model.loadOptions(), convertedHints(o->project), o->refine.source(), o->refineSeqLen, ro},
                c.tables, r.rules);
            refineReport = refineJson(refined, o->refine, N);
            if (!o->json)
                printRefine(refined, N);
            r.rules = refined.best.rules;
        }
        store(o->name.empty() ? buf : o->name, core::PolicyOrigin::Auto, r.rules);
    });
}

void registerTradeoffCommand(CLI::App& app)
{
    struct Opts {
        std::string project;
        std::string device = "auto";
        std::string cost = "params";
        std::string rules = "both";
        int points = 40;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("tradeoff",
                                   "LaDiMo stage 2b: the Pareto front of error proxy against cost, uniform top-k "
                                   "points, stored policies and their measured evaluations");
    cmd->add_option("project", o->project, "Project file (*.ladimo) with a routing profile")->required();
    cmd->add_option("--cost", o->cost, "Cost axis: params, prefill or decode")->capture_default_str();
    cmd->add_option("--rules", o->rules, "Rules the front may use: static, threshold or both")->capture_default_str();
    cmd->add_option("--points", o->points, "At most this many front points")->capture_default_str();
    cmd->add_option("--device", o->device, "Device whose latency model estimates use")->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        auto project
            = core::Project::open(o->project, {core::Project::Access::ReadOnly, core::Project::Verify::Exists});
        const auto c = loadContext(project, o->device);
        core::SearchOptions so;
        so.cost = core::parseCostKind(o->cost);
        so.rules = core::parseRuleKinds(o->rules);
        const auto N = c.run.experts;
        auto point = [&](const core::PolicyRules& rules, const core::PolicyEstimate& e) {
            nlohmann::json j = {{"cost", core::costFraction(e, so.cost)},
                                {"activated_ffn_fraction", e.activatedFfnFraction},
                                {"error_proxy", e.errorProxy},
                                {"rules", core::rulesToJson(rules)}};
            if (e.hasLatency) {
                j["prefill_fraction"] = e.prefillFraction;
                j["decode_fraction"] = e.decodeFraction;
            }
            return j;
        };
        nlohmann::json out = {{"run", c.run.id}, {"cost", o->cost}, {"device", c.device}};
        out["front"] = nlohmann::json::array();
        for (const auto& r : core::paretoFront(c.tables, so, o->points))
            out["front"].push_back(point(r.rules, r.estimate));
        out["uniform"] = nlohmann::json::array();
        for (int k = 1; k <= N; ++k) {
            const auto rules = core::uniformRules(c.run.layers, core::RoutingRule::staticK(k));
            auto j = point(rules, core::estimatePolicy(c.tables, rules));
            j["k"] = k;
            out["uniform"].push_back(j);
        }
        out["policies"] = nlohmann::json::array();
        const auto evaluations = project.evaluations();
        for (const auto& p : project.policies()) {
            const auto rules = core::policyRules(p, c.run.layers, N);
            auto j = point(rules, core::estimatePolicy(c.tables, rules));
            j["name"] = p.name;
            j["id"] = p.id;
            j["measured"] = nlohmann::json::array();
            for (const auto& ev : evaluations)
                if (ev.policyId == p.id)
                    j["measured"].push_back(ev.metrics);
            out["policies"].push_back(j);
        }
        if (o->json) {
            std::cout << out.dump(2) << "\n";
            return;
        }
        std::printf("tradeoff of run #%lld (cost = %s of dense)\n  Pareto front:\n     cost  error proxy  rules\n",
                    (long long)c.run.id, o->cost.c_str());
        for (const auto& j : out["front"]) {
            std::string rules;
            for (const auto& r : j["rules"])
                rules += (rules.empty() ? "" : " ") + core::describeRule(core::ruleFromJson(r, N, "front"), N);
            std::printf("  %7.4f  %11.5f  %s\n", j["cost"].get<double>(), j["error_proxy"].get<double>(),
                        rules.c_str());
        }
        std::printf("  uniform top-k:\n");
        for (const auto& j : out["uniform"])
            std::printf("  k=%-3d %7.4f  %11.5f\n", j["k"].get<int>(), j["cost"].get<double>(),
                        j["error_proxy"].get<double>());
        if (!out["policies"].empty())
            std::printf("  stored policies:\n");
        for (const auto& j : out["policies"]) {
            std::printf("  %-24s %7.4f  %11.5f", j["name"].get<std::string>().c_str(), j["cost"].get<double>(),
                        j["error_proxy"].get<double>());
            for (const auto& m : j["measured"])
                if (m.contains("perplexity"))
                    std::printf("  measured perplexity %.3f", m["perplexity"].get<double>());
            std::printf("\n");
        }
    });
}

} // namespace ladimo::cli
