// `ladimo convert`: LaDiMo stage 1 into a conversion folder (one safetensors file per finished
// layer, written atomically, plus conversion.json); a rerun resumes at the first missing layer.
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "common/fileutil.h"
#include "convert/convert.h"

namespace fs = std::filesystem;

namespace ladimo::cli {

namespace {

fs::path layerFile(const fs::path& dir, int layer)
{
    char name[32];
    std::snprintf(name, sizeof name, "layer_%03d.safetensors", layer);
    return dir / name;
}

} // namespace

bool isConversion(const std::string& path) { return fs::exists(fs::path(path) / "conversion.json"); }

Converted loadConversion(const std::string& path, const ModelOptions& modelOptions)
{
    const fs::path dir(path);
    const auto j = nlohmann::json::parse(core::readTextFile(dir / "conversion.json"));
    ModelOptions m = modelOptions;
    m.path = j.at("model").get<std::string>();
    Converted c{m.load(), {}, j};
    for (int l = 0; l < c.model.config().numLayers; ++l) {
        if (!fs::exists(layerFile(dir, l)))
            throw core::Error(path + ": layer " + std::to_string(l) + " is not converted yet (" +
                              layerFile(dir, l).string() + " missing); rerun ladimo convert to resume");
        c.layers.push_back(core::loadMoeLayer(layerFile(dir, l), c.model.device(), c.model.dtype()));
    }
    return c;
}

void registerConvertCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        std::string out;
        std::string partition = "coact";
        std::string gating = "hard";
        core::ConvertSettings s;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("convert", "LaDiMo stage 1: split every FFN into experts + router and distil it layer by layer");
    o->model.add(cmd);
    o->data.add(cmd);
    cmd->add_option("--out", o->out, "Conversion folder (created; a rerun resumes it)")->required();
    cmd->add_option("--experts", o->s.experts, "Experts per layer")->capture_default_str();
    cmd->add_option("--partition", o->partition, "coact, contiguous or weights")->capture_default_str();
    cmd->add_option("--gating", o->gating, "hard (chosen experts at weight 1), renorm (Mixtral) or plain")->capture_default_str();
    cmd->add_option("--train-top-k", o->s.distill.trainTopK, "Experts per token while distilling")->capture_default_str();
    cmd->add_option("--epochs", o->s.distill.epochs, "Distillation epochs")->capture_default_str();
    cmd->add_option("--router-epochs", o->s.distill.routerEpochs, "Router fitting epochs")->capture_default_str();
    cmd->add_option("--lr", o->s.distill.lr, "Distillation learning rate (Adam, cosine)")->capture_default_str();
    cmd->add_option("--batch", o->s.distill.batch, "Tokens per distillation batch")->capture_default_str();
    cmd->add_option("--mode", o->s.mode, "parallel or sequential")->capture_default_str();
    cmd->add_option("--seq-len", o->s.seqLen, "Calibration window length")->capture_default_str();
    cmd->callback([o] {
        o->s.partition = core::parsePartition(o->partition);
        o->s.gating = core::parseGating(o->gating);
        o->s.distill.seed = o->data.seed;
        if (isConversion(o->out)) {
            const auto j = nlohmann::json::parse(core::readTextFile(fs::path(o->out) / "conversion.json"));
            if (j.at("settings") != o->s.toJson() || j.at("model") != o->model.path)
                throw core::Error(o->out + " holds a conversion with other settings or another model; choose another --out");
        }
        auto model = o->model.load();
        ProgressPrinter printer;
        auto calibration = o->data.load(model, loadTokenizerFor(o->model.path).get(), o->s.seqLen, printer.fn());
        fs::create_directories(o->out);
        nlohmann::json record = {{"model", o->model.path}, {"settings", o->s.toJson()},
                                 {"calibration_tokens", calibration.size()}, {"layers", nlohmann::json::array()}};
        const auto recordFile = fs::path(o->out) / "conversion.json";
        if (fs::exists(recordFile))
            record["layers"] = nlohmann::json::parse(core::readTextFile(recordFile)).at("layers");
        std::set<int> skip;
        std::vector<core::MoeLayer> done(static_cast<std::size_t>(model.config().numLayers));
        for (int l = 0; l < model.config().numLayers; ++l)
            if (fs::exists(layerFile(o->out, l))) {
                skip.insert(l);
                done[static_cast<std::size_t>(l)] = core::loadMoeLayer(layerFile(o->out, l), torch::kCPU, torch::kFloat32);
            }
        core::atomicWriteFile(recordFile, record.dump(2) + "\n");
        core::ConvertCallbacks cb;
        cb.progress = printer.fn();
        cb.onLayerDone = [&](int l, const core::MoeLayer& layer, const core::LayerResult& r) {
            core::saveMoeLayer(layerFile(o->out, l), layer);
            record["layers"].push_back({{"index", l}, {"initial_error", r.initialError}, {"final_error", r.finalError},
                                        {"seconds", r.seconds}});
            core::atomicWriteFile(recordFile, record.dump(2) + "\n");
            std::fprintf(stderr, "\nlayer %d: relative error at k=%d %.4f -> %.4f (%.1f s)\n", l,
                         o->s.distill.trainTopK, r.initialError, r.finalError, r.seconds);
        };
        torch::InferenceMode off(false);
        core::convertModel(model, calibration, o->s, cb, skip, done);
        std::printf("converted %s into %s\n", o->model.path.c_str(), o->out.c_str());
    });
}

} // namespace ladimo::cli
