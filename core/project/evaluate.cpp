#include "project/evaluate.h"

#include <optional>

#include "common/error.h"
#include "convert/convert.h"
#include "eval/choice.h"
#include "model/tokenizer.h"
#include "project/convert.h"
#include "routing/estimate.h"
#include "routing/latency.h"
#include "routing/policy.h"
#include "store/project.h"

namespace ladimo::core {

ProjectEvalResult evaluateProject(const ProjectEvalRequest& r)
{
    c10::InferenceMode guard; // thread-local: on the calling (worker) thread
    const auto converted = loadLatestRun(r.projectFile, r.load, r.hints);
    const auto& model = *converted.model;
    const auto tok = Tokenizer::loadForModel(converted.modelDir);
    // No data given: the run's calibration data (the evaluation record says which data it was).
    DataSource data = r.data;
    if (data.file.empty() && data.selfSample <= 0) {
        auto project = Project::open(r.projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
        data = runCalibrationData(project, converted.runId);
        data.maxTokens = r.data.maxTokens;
    }
    const auto stream = data.load(model, tok.get(), r.seqLen, r.progress, r.cancel);
    EvalOptions e;
    e.seqLen = r.seqLen;
    e.batch = r.batch;
    e.progress = r.progress;
    e.cancel = r.cancel;
    int64_t active = 0, tokens = 0;
    ForwardHooks hooks;
    PolicyRules rules;
    Policy policy;
    std::string label = "dense";
    const bool moe = !r.dense;
    if (moe) {
        const int L = static_cast<int>(converted.layers.size());
        const int64_t N = converted.layers.numExperts();
        if (!r.policy.empty()) {
            auto project = Project::open(r.projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
            bool found = false;
            for (auto& p : project.policies())
                if (p.name == r.policy) {
                    policy = p;
                    found = true;
                }
            if (!found)
                throw Error(r.projectFile + " has no policy named '" + r.policy + "'" + r.policyHint);
            rules = policyRules(policy, L, N);
            label = policy.name;
        } else if (r.topP > 0) {
            rules = uniformRules(L, RoutingRule::topP(r.topP));
            label = "uniform top-p " + std::to_string(r.topP);
        } else {
            const int k = r.topK > 0 ? r.topK : converted.trainTopK();
            if (k < 1 || k > N)
                throw Error("top-k " + std::to_string(k) + " is out of range: the run has " + std::to_string(N)
                            + " experts per layer (expected 1.." + std::to_string(N) + ")");
            rules = uniformRules(L, RoutingRule::staticK(k));
            label = "uniform top-" + std::to_string(k);
        }
        if (r.oracle)
            label += " (oracle)";
        hooks = r.oracle ? oracleHooks(converted.layers, rules, &active, &tokens)
                         : moeHooks(converted.layers, rules, &active, &tokens);
        e.hooks = &hooks;
        e.reference = &model;
    }
    ProjectEvalResult out;
    out.runId = converted.runId;
    out.device = model.device().str();
    out.data = data.describe();
    const auto res = evaluatePerplexity(model, stream, e);
    out.perplexity = res;
    nlohmann::json j = {{"perplexity", res.perplexity},
                        {"nll", res.nll},
                        {"tokens", res.tokens},
                        {"windows", res.windows},
                        {"seconds", res.seconds},
                        {"tokens_per_second", res.tokensPerSecond},
                        {"seq_len", r.seqLen},
                        {"device", model.device().str()},
                        {"dtype", c10::toString(model.dtype())}};
    if (r.recordLabel)
        j["policy_label"] = label;
    if (!r.choices.empty()) {
        if (!tok)
            throw Error("--choices needs a tokenizer, and " + converted.modelDir + " has none");
        auto plain = !moe ? ForwardHooks{}
            : r.oracle    ? oracleHooks(converted.layers, rules)
                          : moeHooks(converted.layers, rules);
        const auto items = loadChoiceItems(r.choices);
        const auto c = evaluateChoices(model, *tok, items, moe ? &plain : nullptr, r.progress, r.cancel);
        j["choice_items"] = c.items;
        j["choice_accuracy"] = c.accuracy;
        j["choice_accuracy_norm"] = c.accuracyNorm;
    }
    if (moe) {
        const auto& c = model.config();
        j["kl_to_dense"] = res.klToReference;
        // The exact count behind the fraction (every token and layer), as `ladimo route` sums it.
        j["activated_ffn_parameters"] = active;
        j["activated_ffn_fraction"] = static_cast<double>(active)
            / (static_cast<double>(tokens) * static_cast<double>(c.numLayers * 3 * c.hiddenSize * c.intermediateSize));
        j["rules"] = rulesToJson(rules);
        if (r.timing && !r.oracle) { // the oracle computes every expert: its timing means nothing
            // Dense and converted timed in interleaved rounds of the same job, so their ratio is meaningful.
            LatencyOptions lo;
            lo.cancel = r.cancel;
            auto plain = moeHooks(converted.layers, rules);
            // Timing reads every layer for every token: streamed MoE layers stay cached meanwhile.
            converted.layers.setCache(model.memoryBudget() / 4);
            const auto timed = measureForwards(model, {&plain, nullptr}, lo);
            converted.layers.setCache(0);
            const auto &m = timed[0], &d = timed[1];
            j["prefill_seconds"] = m.prefillSeconds;
            j["decode_seconds"] = m.decodeSeconds;
            j["prefill_tokens_per_second"] = static_cast<double>(lo.prefillTokens) / m.prefillSeconds;
            j["decode_tokens_per_second"] = 1.0 / m.decodeSeconds;
            j["timing"] = {{"prefill_tokens", lo.prefillTokens}, {"decode_context", lo.decodeContext}};
            j["dense_prefill_seconds"] = d.prefillSeconds;
            j["dense_decode_seconds"] = d.decodeSeconds;
            j["prefill_fraction"] = m.prefillSeconds / d.prefillSeconds;
            j["decode_fraction"] = m.decodeSeconds / d.decodeSeconds;
        }
    } else {
        j["activated_ffn_fraction"] = 1.0;
    }
    auto project = Project::open(r.projectFile, {Project::Access::ReadWrite, Project::Verify::Exists});
    if (moe) {
        // The estimate beside the measurement, so the two can be compared.
        try {
            const auto tables = loadPolicyTables(project, converted.runId, model.device().str());
            const auto est = estimatePolicy(tables, rules);
            j["estimate"] = {{"activated_ffn_fraction", est.activatedFfnFraction}, {"error_proxy", est.errorProxy}};
            if (est.hasLatency) {
                j["estimate"]["prefill_seconds"] = est.prefillSeconds;
                j["estimate"]["decode_seconds"] = est.decodeSeconds;
                j["estimate"]["prefill_fraction"] = est.prefillFraction;
                j["estimate"]["decode_fraction"] = est.decodeFraction;
                j["estimate"]["dense_prefill_seconds"] = est.densePrefillSeconds;
                j["estimate"]["dense_decode_seconds"] = est.denseDecodeSeconds;
                if (j.contains("dense_prefill_seconds")) {
                    // The machine's speed drifts between the latency model's job and this one (other
                    // load): the estimate at the dense speed measured in this job, beside the raw one.
                    j["estimate"]["prefill_seconds_at_measured_dense"]
                        = est.prefillFraction * j["dense_prefill_seconds"].get<double>();
                    j["estimate"]["decode_seconds_at_measured_dense"]
                        = est.decodeFraction * j["dense_decode_seconds"].get<double>();
                }
            }
        } catch (const Error&) {
            // No profile yet: nothing to compare with.
        }
    }
    Evaluation ev;
    ev.policyId = policy.id;
    ev.runId = converted.runId;
    ev.data = data.describe();
    ev.metrics = j;
    ev.device = model.device().str();
    out.evaluationId = project.addEvaluation(ev);
    out.metrics = std::move(j);
    return out;
}

RefineResult refineProjectPolicy(const ProjectRefineRequest& r, const PolicyTables& tables, const PolicyRules& start)
{
    c10::InferenceMode guard; // thread-local: on the calling (worker) thread
    const auto converted = loadLatestRun(r.projectFile, r.load, r.hints);
    const auto& model = *converted.model;
    const auto tok = Tokenizer::loadForModel(converted.modelDir);
    const auto stream = r.data.load(model, tok.get(), r.seqLen, r.options.progress, r.options.cancel);
    if (static_cast<int64_t>(stream.size()) < 2 * r.seqLen)
        throw Error("refinement data (" + r.data.describe() + "): " + std::to_string(stream.size())
                    + " tokens, expected at least " + std::to_string(2 * r.seqLen) + " (two windows)");
    return refinePolicy(tables, start, r.options, [&](const PolicyRules& rules) {
        const auto hooks = moeHooks(converted.layers, rules);
        EvalOptions e;
        e.seqLen = r.seqLen;
        e.hooks = &hooks;
        e.cancel = r.options.cancel;
        return evaluatePerplexity(model, stream, e).nll;
    });
}

} // namespace ladimo::core
