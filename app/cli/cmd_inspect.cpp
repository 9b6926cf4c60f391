// `ladimo inspect MODEL`: the architecture, parameter counts and files of a model folder.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "model/checkpoint.h"

namespace ladimo::cli {

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

} // namespace ladimo::cli
