// `ladimo eval`: perplexity of a dense model, an export (Mixtral folder, GGUF file) or a project's
// conversion under a rule (core/project/evaluate.h), optionally multiple choice and timing.
#include <optional>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "eval/choice.h"
#include "project/evaluate.h"
#include "eval/perplexity.h"
#include "model/generate.h"
#include "convert/convert.h"
#include "export/gguf_reader.h"
#include "export/hf_mixtral.h"
#include "routing/latency.h"
#include "routing/policy.h"

namespace ladimo::cli {

void registerEvalCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        int64_t seqLen = 256;
        int64_t batch = 8;
        int topK = 0;
        double topP = 0;
        std::string policy;
        std::string choices;
        bool noTiming = false;
        bool oracle = false;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd
        = app.add_subcommand("eval", "Perplexity of a model (dense folder, or a conversion folder) on token data");
    o->model.add(cmd);
    o->data.add(cmd);
    cmd->add_option("--seq-len", o->seqLen, "Window length in tokens")->capture_default_str();
    cmd->add_option("--batch", o->batch, "Windows per forward pass")->capture_default_str();
    cmd->add_option("--top-k", o->topK, "Converted model: experts per token in every layer (default: the training k)");
    cmd->add_option("--top-p", o->topP,
                    "Converted model: token-adaptive rule, smallest expert set with routing mass >= P");
    cmd->add_option("--policy", o->policy, "Converted model: a stored per-layer policy (`ladimo policy`)");
    cmd->add_option(
        "--choices", o->choices,
        "Also multiple-choice accuracy on a .jsonl of {question, choices, answer}, scored by log-likelihood");
    cmd->add_flag("--oracle", o->oracle,
                  "Converted model: oracle routing (each token's k experts with the largest true outputs), a ceiling");
    cmd->add_flag("--no-timing", o->noTiming, "Converted model: skip the prefill/decode latency measurement");
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        // The result lines, for a project (core::evaluateProject) and for a folder alike.
        auto print = [o](const nlohmann::json& j, const core::EvalResult& r, const std::string& device,
                         const std::string& suffix) {
            if (o->json)
                std::cout << j.dump(2) << "\n";
            else
                std::printf("perplexity %.4f  (nll %.5f over %lld tokens, %lld windows, %.0f tokens/s on %s)%s\n",
                            r.perplexity, r.nll, (long long)r.tokens, (long long)r.windows, r.tokensPerSecond,
                            device.c_str(), suffix.c_str());
            if (!o->json && j.contains("choice_accuracy"))
                std::printf("multiple choice: accuracy %.4f, length-normalised %.4f over %lld items\n",
                            j["choice_accuracy"].get<double>(), j["choice_accuracy_norm"].get<double>(),
                            (long long)j["choice_items"].get<int64_t>());
            if (!o->json && j.contains("prefill_fraction"))
                std::printf("measured: prefill %.0f tokens/s (%.1f%% of dense time), decode %.0f tokens/s (%.1f%% of "
                            "dense time)\n",
                            j["prefill_tokens_per_second"].get<double>(), 100 * j["prefill_fraction"].get<double>(),
                            j["decode_tokens_per_second"].get<double>(), 100 * j["decode_fraction"].get<double>());
        };
        if (isProjectFile(o->model.path)) {
            // A project's latest conversion: the sequence the workbench's Evaluate job runs too.
            if (!o->policy.empty() && (o->topK > 0 || o->topP > 0))
                throw core::Error("give either --policy or --top-k / --top-p");
            ProgressPrinter printer;
            core::ProjectEvalRequest req;
            req.projectFile = o->model.path;
            req.load = o->model.loadOptions();
            req.hints = convertedHints(o->model.path);
            req.data = o->data.source();
            req.seqLen = o->seqLen;
            req.batch = o->batch;
            req.policy = o->policy;
            req.policyHint = " (see ladimo policy --list)";
            req.topK = o->topK;
            req.topP = o->topP;
            req.oracle = o->oracle;
            req.timing = !o->noTiming;
            req.choices = o->choices;
            req.progress = printer.fn();
            req.cancel = interruptToken();
            const auto res = core::evaluateProject(req);
            if (o->data.file.empty() && o->data.selfSample == 0)
                std::fprintf(stderr,
                             "no --data or --self-sample: evaluated on the run's calibration data (%s), "
                             "which is not held out\n",
                             res.data.c_str());
            auto j = res.metrics;
            addPeakRss(j);
            print(j, res.perplexity, res.device,
                  "; KL to dense " + std::to_string(res.perplexity.klToReference) + ", activated FFN fraction "
                      + std::to_string(j["activated_ffn_fraction"].get<double>()));
            return;
        }
        torch::InferenceMode guard;
        const std::string modelPath = o->model.path;
        std::optional<core::LoadedMixtral>
            mixtral; // an exported Mixtral directory or GGUF file: its MoE blocks and policy
        std::optional<core::LlamaModel> dense;
        if (core::isHfMixtralDir(o->model.path)) {
            mixtral.emplace(core::loadHfMixtral(o->model.path, o->model.loadOptions()));
        } else if (core::isGgufFile(o->model.path)) {
            auto g = core::loadGguf(o->model.path, o->model.loadOptions());
            if (g.layers.empty())
                dense.emplace(std::move(g.model));
            else
                mixtral.emplace(std::move(g));
        } else {
            dense.emplace(o->model.load());
        }
        const auto& model = mixtral ? mixtral->model : *dense;
        auto tok = core::Tokenizer::loadForModel(modelPath);
        ProgressPrinter printer;
        auto stream = o->data.load(model, tok.get(), o->seqLen, printer.fn());
        core::EvalOptions e;
        e.seqLen = o->seqLen;
        e.batch = o->batch;
        e.progress = printer.fn();
        e.cancel = interruptToken();
        int64_t active = 0, tokens = 0;
        core::ForwardHooks hooks;
        core::PolicyRules rules;
        if (mixtral) {
            if (!o->policy.empty() || o->oracle)
                throw core::Error("--policy and --oracle need a project; an exported directory runs its own policy "
                                  "(or --top-k / --top-p)");
            rules = o->topK > 0 || o->topP > 0 ? core::uniformRules(static_cast<int>(mixtral->layers.size()),
                                                                    o->topP > 0 ? core::RoutingRule::topP(o->topP)
                                                                                : core::RoutingRule::staticK(o->topK))
                                               : mixtral->rules;
            hooks = core::moeHooks(mixtral->layers, rules, &active, &tokens);
            e.hooks = &hooks;
        } else if (!o->policy.empty() || o->topK > 0 || o->topP > 0 || o->oracle) {
            throw core::Error("--policy, --top-k, --top-p and --oracle apply to a converted model (a *.ladimo project "
                              "or an exported Mixtral directory)");
        }
        const auto r = core::evaluatePerplexity(model, stream, e);
        nlohmann::json j = {{"perplexity", r.perplexity},
                            {"nll", r.nll},
                            {"tokens", r.tokens},
                            {"windows", r.windows},
                            {"seconds", r.seconds},
                            {"tokens_per_second", r.tokensPerSecond},
                            {"seq_len", o->seqLen},
                            {"device", model.device().str()},
                            {"dtype", c10::toString(model.dtype())}};
        const std::vector<core::MoeLayer>* moeLayers = mixtral ? &mixtral->layers : nullptr;
        j["weights"] = model.streamed() ? "streamed" : "resident";
        if (!o->choices.empty()) {
            if (!tok)
                throw core::Error("--choices needs a tokenizer, and " + modelPath + " has none");
            auto plain = !moeLayers ? core::ForwardHooks{} : core::moeHooks(*moeLayers, rules);
            const auto items = core::loadChoiceItems(o->choices);
            const auto c = core::evaluateChoices(model, *tok, items, moeLayers ? &plain : nullptr, printer.fn(),
                                                 interruptToken());
            j["choice_items"] = c.items;
            j["choice_accuracy"] = c.accuracy;
            j["choice_accuracy_norm"] = c.accuracyNorm;
        }
        if (moeLayers) {
            const auto& c = model.config();
            j["activated_ffn_fraction"] = static_cast<double>(active)
                / (static_cast<double>(tokens)
                   * static_cast<double>(c.numLayers * 3 * c.hiddenSize * c.intermediateSize));
            j["rules"] = core::rulesToJson(rules);
            if (!o->noTiming) {
                // An export without dense FFNs is timed alone.
                core::LatencyOptions lo;
                lo.cancel = interruptToken();
                auto plain = core::moeHooks(*moeLayers, rules);
                const auto moe = core::measureForward(model, &plain, lo);
                j["prefill_seconds"] = moe.prefillSeconds;
                j["decode_seconds"] = moe.decodeSeconds;
                j["prefill_tokens_per_second"] = static_cast<double>(lo.prefillTokens) / moe.prefillSeconds;
                j["decode_tokens_per_second"] = 1.0 / moe.decodeSeconds;
                j["timing"] = {{"prefill_tokens", lo.prefillTokens}, {"decode_context", lo.decodeContext}};
            }
        }
        addPeakRss(j);
        print(j, r, model.device().str(),
              mixtral ? "; activated FFN fraction " + std::to_string(j["activated_ffn_fraction"].get<double>()) : "");
    });
}

} // namespace ladimo::cli
