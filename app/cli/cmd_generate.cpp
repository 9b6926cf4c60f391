// `ladimo generate`: continue a prompt (text or token ids) with a dense model or an export.
#include <optional>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "common/parse.h"
#include "model/generate.h"
#include "convert/convert.h"
#include "export/gguf_reader.h"
#include "export/hf_mixtral.h"

namespace ladimo::cli {

namespace {

std::vector<int64_t> parseIds(const std::string& text)
{
    std::vector<int64_t> ids;
    std::stringstream ss(text);
    std::string item;
    while (std::getline(ss, item, ','))
        ids.push_back(core::parseInteger(item, "--prompt-ids"));
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

} // namespace ladimo::cli
