// `ladimo profile P.ladimo`: LaDiMo stage 2a. Routing profile of every layer of the latest
// conversion run on held-out tokens, stored in the project.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "convert/convert.h"
#include "routing/profile.h"
#include "store/project.h"

namespace ladimo::cli {

void registerProfileCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        int64_t seqLen = 256;
        int bins = 20;
        int64_t sensitivityTokens = 8192;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("profile", "LaDiMo stage 2a: routing-weight distributions and error for each k, per layer");
    cmd->add_option("project", o->model.path, "Project file (*.ladimo) with a finished conversion run")->required();
    o->model.add(cmd, /*positional=*/false);
    o->data.add(cmd);
    cmd->add_option("--seq-len", o->seqLen, "Window length")->capture_default_str();
    cmd->add_option("--bins", o->bins, "Histogram bins on [0, 1]")->capture_default_str();
    cmd->add_option("--sensitivity-tokens", o->sensitivityTokens,
                    "Tokens for the per-layer sensitivity (KL to dense with one layer converted); 0 = skip")
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        if (!isProjectFile(o->model.path))
            throw core::Error("profile needs a project file (*.ladimo), got '" + o->model.path + "'");
        const std::string projectFile = o->model.path;
        // The writer first: it upgrades an older project before the read-only load below.
        auto project = core::Project::open(projectFile, {core::Project::Access::ReadWrite, core::Project::Verify::Exists});
        auto converted = loadConverted(projectFile, o->model);
        ProgressPrinter printer;
        const auto progress = printer.fn();
        auto stream = o->data.load(converted.model, core::Tokenizer::loadForModel(converted.modelPath).get(), o->seqLen, progress);
        std::vector<torch::Tensor> xs, ys;
        core::captureFfn(converted.model, stream, o->seqLen, &xs, &ys);
        core::ProfileOptions po;
        po.bins = o->bins;
        const auto& cfg = converted.model.config();
        po.denseParameters = 3 * cfg.hiddenSize * cfg.intermediateSize;
        std::vector<core::RoutingProfile> profiles;
        for (std::size_t l = 0; l < converted.layers.size(); ++l) {
            interruptToken().throwIfCancelled();
            auto p = core::profileLayer(converted.layers[l], xs[l], ys[l], po);
            p.runId = converted.runId;
            p.layer = static_cast<int>(l);
            profiles.push_back(std::move(p));
            progress("profile", static_cast<double>(l + 1), static_cast<double>(converted.layers.size()));
        }
        xs.clear();
        ys.clear();
        if (o->sensitivityTokens > 0) {
            // How much each layer's error moves the model's output: KL to dense with only that
            // layer converted, at a k in the range policies use.
            const int64_t N = converted.layers.front().numExperts();
            const int k = std::max<int>(1, static_cast<int>(std::lround(0.625 * static_cast<double>(N))));
            std::vector<int64_t> head(stream.begin(),
                                      stream.begin() + std::min<int64_t>(o->sensitivityTokens, static_cast<int64_t>(stream.size())));
            const auto sens = core::layerSensitivity(converted.model, converted.layers, head, o->seqLen,
                                                     core::RoutingRule::staticK(k), &interruptToken());
            for (std::size_t l = 0; l < profiles.size(); ++l) {
                auto& extra = profiles[l].extra;
                const double err = profiles[l].errorByK[static_cast<std::size_t>(k - 1)];
                extra["sensitivity_k"] = k;
                extra["sensitivity_tokens"] = static_cast<int64_t>(head.size());
                extra["sensitivity_kl"] = sens[l].kl;
                extra["sensitivity_nll"] = sens[l].nllIncrease;
                if (err > 0 && sens[l].kl > 0) {
                    extra["kl_per_error"] = sens[l].kl / err;
                    // Harm to the likelihood of real text; never below the KL (a small sample
                    // can even show a small gain).
                    extra["nll_per_error"] = std::max(sens[l].nllIncrease, sens[l].kl) / err;
                }
            }
        }
        nlohmann::json out = nlohmann::json::array();
        for (const auto& p : profiles) {
            project.saveRoutingProfile(p);
            out.push_back(core::toJson(p));
        }
        if (o->json) {
            std::cout << out.dump(2) << "\n";
            return;
        }
        std::printf("routing profile of run #%lld on %lld tokens (stored in %s)\n", (long long)converted.runId,
                    (long long)profiles.front().tokens, projectFile.c_str());
        std::printf("layer  entropy  top-1 mass  NLL/error  relative error for k = 1..N\n");
        for (const auto& j : out) {
            std::printf("%5d  %7.3f  %10.3f  %9.4f ", j["layer"].get<int>(), j["entropy"].get<double>(),
                        j["extra"]["cumulative_mass"][0].get<double>(), j["extra"].value("nll_per_error", 0.0));
            for (const auto& e : j["error_by_k"])
                std::printf(" %.4f", e.get<double>());
            std::printf("\n");
        }
    });
}

} // namespace ladimo::cli
