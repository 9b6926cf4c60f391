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
        core::ConversionProfileOptions po;
        po.seqLen = o->seqLen;
        po.bins = o->bins;
        po.sensitivityTokens = o->sensitivityTokens;
        po.spillDir = project.absolutePath("scratch"); // activations beyond the budget, as convert does
        po.memoryBudget = o->model.loadOptions().memoryBudget;
        const auto profiles = core::profileConversion(converted.model, converted.layers, converted.runId, stream, po,
                                                      &interruptToken(), progress);
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
