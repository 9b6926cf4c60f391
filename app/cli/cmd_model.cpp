// inspect / eval / generate / bench: the dense-model commands.
#include <chrono>
#include <optional>
#include <cstdio>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "eval/choice.h"
#include "project/evaluate.h"
#include "eval/perplexity.h"
#include "model/checkpoint.h"
#include "model/generate.h"
#include "model/safetensors.h"
#include "convert/convert.h"
#include "export/gguf_reader.h"
#include "export/hf_mixtral.h"
#include "routing/estimate.h"
#include "routing/latency.h"
#include "routing/policy.h"
#include "store/project.h"

namespace ladimo::cli {

namespace {

std::vector<int64_t> parseIds(const std::string& text)
{
    std::vector<int64_t> ids;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ',')) {
        try {
            std::size_t used = 0;
            ids.push_back(std::stoll(item, &used));
            if (used != item.size())
                throw std::invalid_argument(item);
        } catch (const std::exception&) {
            throw core::Error("--prompt-ids: '" + item + "' is not an integer");
        }
    }
    return ids;
}

std::string joinIds(const std::vector<int64_t>& ids)
{
    std::string out;
    for (std::size_t i = 0; i < ids.size(); ++i)
        out += (i ? "," : "") + std::to_string(ids[i]);
    return out;
}

} // namespace

void registerInspectCommand(CLI::App& app)
{
    struct Opts {
        std::string path;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("inspect", "Architecture, parameter counts, dtype and layers of a model");
    cmd->add_option("model", o->path, "Model directory")->required();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        const auto config = core::ModelConfig::load(std::filesystem::path(o->path) / "config.json");
        const auto files = core::CheckpointFiles::open(o->path);
        // Every expected tensor present with the right shape; stored dtype, so nothing is copied.
        (void)core::loadLlamaWeights(files, config, torch::kCPU, std::nullopt);
        std::map<std::string, int64_t> dtypes;
        int64_t stored = 0;
        for (const auto& t : files.tensorInfos()) {
            dtypes[core::dtypeName(t.dtype)] += t.numel();
            stored += t.numel();
        }
        const auto p = config.parameterCounts();
        auto tok = core::Tokenizer::loadForModel(o->path);
        nlohmann::json j;
        j["path"] = o->path;
        j["architecture"] = config.architecture;
        j["config"] = config.toJson();
        j["parameters"] = {{"total", p.total},           {"attention", p.attention}, {"ffn", p.ffn},
                           {"embeddings", p.embeddings}, {"norms", p.norms},         {"stored", stored}};
        j["dtypes"] = dtypes;
        j["files"] = nlohmann::json::array();
        for (const auto& f : files.files())
            j["files"].push_back(f.filename().string());
        j["tokenizer"] = tok ? nlohmann::json(tok->kind()) : nlohmann::json(nullptr);
        j["layers"] = nlohmann::json::array();
        for (int64_t i = 0; i < config.numLayers; ++i)
            j["layers"].push_back({{"index", i},
                                   {"attention_parameters", p.attentionPerLayer},
                                   {"ffn_parameters", p.ffnPerLayer},
                                   {"intermediate_size", config.intermediateSize}});
        if (o->json) {
            addPeakRss(j);
            std::cout << j.dump(2) << "\n";
            return;
        }
        std::printf("%s  (%s)\n", o->path.c_str(), config.architecture.c_str());
        std::printf("  layers %lld, hidden %lld, intermediate %lld, heads %lld (kv %lld, head dim %lld)\n",
                    (long long)config.numLayers, (long long)config.hiddenSize, (long long)config.intermediateSize,
                    (long long)config.numHeads, (long long)config.numKvHeads, (long long)config.headDim);
        std::printf("  vocab %lld, max positions %lld, rope theta %g, rms eps %g, tied embeddings %s\n",
                    (long long)config.vocabSize, (long long)config.maxPositions, config.ropeTheta, config.rmsNormEps,
                    config.tieWordEmbeddings ? "yes" : "no");
        std::printf("  parameters: total %lld = attention %lld + FFN %lld + embeddings %lld + norms %lld\n",
                    (long long)p.total, (long long)p.attention, (long long)p.ffn, (long long)p.embeddings,
                    (long long)p.norms);
        std::printf("  stored: %s in %s;", files.describe().c_str(), o->path.c_str());
        for (const auto& [d, n] : dtypes)
            std::printf(" %s %lld", d.c_str(), (long long)n);
        std::printf("\n  tokenizer: %s\n", tok ? tok->kind().c_str() : "none (token ids only)");
        std::printf("  per layer: attention %lld, FFN %lld parameters\n", (long long)p.attentionPerLayer,
                    (long long)p.ffnPerLayer);
    });
}

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
                                                 &interruptToken());
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
                lo.cancel = &interruptToken();
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

void registerGenerateCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        std::string prompt;
        std::string promptIds;
        int64_t maxNew = 64;
        double temperature = 0.8;
        uint64_t seed = 0;
        bool ids = false;
        bool ignoreEos = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("generate", "Continue a prompt with the model (KV cache)");
    o->model.add(cmd);
    auto* p = cmd->add_option("--prompt", o->prompt, "Prompt text (needs a tokenizer); BOS is added");
    auto* pi = cmd->add_option("--prompt-ids", o->promptIds, "Prompt as comma-separated token ids, used as given");
    p->excludes(pi);
    cmd->add_option("--max-new", o->maxNew, "Tokens to generate")->capture_default_str();
    cmd->add_option("--temperature", o->temperature, "0 = greedy")->capture_default_str();
    cmd->add_option("--seed", o->seed, "Sampling seed")->capture_default_str();
    cmd->add_flag("--ids", o->ids, "Print the ids (prompt included), comma-separated");
    cmd->add_flag("--ignore-eos", o->ignoreEos, "Do not stop at the end-of-sequence token");
    cmd->callback([o] {
        torch::InferenceMode guard;
        std::optional<core::LoadedMixtral>
            mixtral; // an exported Mixtral directory or GGUF file runs with its MoE blocks
        if (core::isHfMixtralDir(o->model.path))
            mixtral.emplace(core::loadHfMixtral(o->model.path, o->model.loadOptions()));
        else if (core::isGgufFile(o->model.path))
            mixtral.emplace(core::loadGguf(o->model.path, o->model.loadOptions()));
        auto model = mixtral ? std::move(mixtral->model) : o->model.load();
        if (mixtral && mixtral->layers.empty())
            mixtral.reset(); // a dense GGUF file
        auto tok = core::Tokenizer::loadForModel(o->model.path);
        std::vector<int64_t> prompt;
        if (!o->promptIds.empty()) {
            prompt = parseIds(o->promptIds);
        } else {
            if (!tok)
                throw core::Error("'" + o->model.path + "' has no tokenizer: use --prompt-ids");
            prompt.push_back(model.config().bosTokenId);
            for (int id : tok->encode(o->prompt))
                prompt.push_back(id);
        }
        core::GenerateOptions g;
        g.maxNew = o->maxNew;
        g.temperature = o->temperature;
        g.seed = o->seed;
        g.stopId = o->ignoreEos ? -1 : model.config().eosTokenId;
        core::ForwardHooks hooks;
        if (mixtral) {
            hooks = core::moeHooks(mixtral->layers, mixtral->rules);
            g.hooks = &hooks;
        }
        ProgressPrinter printer;
        g.progress = printer.fn();
        const auto out = core::generate(model, {prompt}, g).front();
        if (o->ids || !tok) {
            std::cout << joinIds(out) << "\n";
            return;
        }
        std::vector<int> text;
        for (int64_t id : out)
            if (id != model.config().bosTokenId && id != model.config().eosTokenId)
                text.push_back(static_cast<int>(id));
        std::cout << tok->decode(text) << "\n";
    });
}

void registerBenchCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        int64_t prefill = 512;
        int64_t decode = 64;
        int repeats = 3;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand(
        "bench", "Dense forward throughput: prefill (batch of N tokens) and decode (1 token with KV cache)");
    o->model.add(cmd);
    cmd->add_option("--prefill", o->prefill, "Prefill length in tokens")->capture_default_str();
    cmd->add_option("--decode", o->decode, "Decode steps")->capture_default_str();
    cmd->add_option("--repeats", o->repeats, "Best of N runs")->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        torch::InferenceMode guard;
        auto model = o->model.load();
        // A streamed model keeps layers resident in half the budget, as generation does.
        core::LayerCacheScope layerCache(model);
        const auto& c = model.config();
        const int64_t prefill = std::min(o->prefill, c.maxPositions - o->decode);
        if (prefill < 1)
            throw core::Error("bench: --prefill + --decode exceed max_position_embeddings");
        torch::manual_seed(0);
        auto tokens = torch::randint(c.vocabSize, {1, prefill}, torch::kInt64);
        auto sync = [&] {
            if (model.device().is_cuda())
                (void)model.forward(tokens.narrow(1, 0, 1)).sum().item<float>(); // forces completion
        };
        double bestPrefill = 1e30, bestDecode = 1e30;
        for (int r = 0; r < std::max(1, o->repeats) + 1; ++r) { // first run warms up
            auto cache = model.makeCache(1, prefill + o->decode);
            auto t0 = std::chrono::steady_clock::now();
            auto logits = model.forward(tokens, &cache);
            auto next = logits.select(1, prefill - 1).argmax(-1).view({1, 1});
            sync();
            auto t1 = std::chrono::steady_clock::now();
            for (int64_t s = 0; s < o->decode; ++s)
                next = model.forward(next, &cache).select(1, 0).argmax(-1).view({1, 1});
            (void)next.item<int64_t>();
            auto t2 = std::chrono::steady_clock::now();
            if (r == 0)
                continue;
            bestPrefill = std::min(bestPrefill, std::chrono::duration<double>(t1 - t0).count());
            bestDecode = std::min(bestDecode, std::chrono::duration<double>(t2 - t1).count());
        }
        const double prefillTps = static_cast<double>(prefill) / bestPrefill;
        const double decodeTps = o->decode > 0 ? static_cast<double>(o->decode) / bestDecode : 0.0;
        nlohmann::json j
            = {{"device", model.device().str()},          {"dtype", c10::toString(model.dtype())},
               {"threads", torch::get_num_threads()},     {"prefill_tokens", prefill},
               {"prefill_tokens_per_second", prefillTps}, {"decode_tokens", o->decode},
               {"decode_tokens_per_second", decodeTps},   {"weights", model.streamed() ? "streamed" : "resident"}};
        addPeakRss(j);
        if (o->json)
            std::cout << j.dump(2) << "\n";
        else
            std::printf("%s on %s (%s, %d threads): prefill %lld tokens (batch %lld) %.0f tokens/s; decode batch 1 "
                        "%.1f tokens/s\n",
                        o->model.path.c_str(), model.device().str().c_str(), c10::toString(model.dtype()),
                        torch::get_num_threads(), (long long)prefill, (long long)prefill, prefillTps, decodeTps);
    });
}

} // namespace ladimo::cli
