// `ladimo profile P.ladimo`: LaDiMo stage 2a. Routing profile of every layer of the latest
// conversion run on held-out tokens, stored in the project.
#include <algorithm>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "project/profile.h"
#include "routing/expertload.h"
#include "routing/profile.h"

namespace ladimo::cli {

void registerProfileCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        int64_t seqLen = 256;
        int bins = 20;
        int64_t sensitivityTokens = 8192;
        core::ExpertLoadThresholds markers;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("profile",
                                   "LaDiMo stage 2a: routing-weight distributions and error for each k, per layer");
    cmd->add_option("project", o->model.path, "Project file (*.ladimo) with a finished conversion run")->required();
    o->model.add(cmd, /*positional=*/false);
    o->data.add(cmd); // neither --data nor --self-sample: the run's calibration data
    cmd->add_option("--seq-len", o->seqLen, "Window length")->capture_default_str();
    cmd->add_option("--bins", o->bins, "Histogram bins on [0, 1]")->capture_default_str();
    cmd->add_option("--sensitivity-tokens", o->sensitivityTokens,
                    "Tokens for the per-layer sensitivity (KL to dense with one layer converted); 0 = skip")
        ->capture_default_str();
    cmd->add_option("--dead-below", o->markers.deadBelow,
                    "Mark an expert dead when its share of tokens is below this many times the even share 1/N")
        ->capture_default_str();
    cmd->add_option("--hot-above", o->markers.hotAbove,
                    "Mark an expert hot when its share of tokens is above this many times the even share 1/N")
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        if (!isProjectFile(o->model.path))
            throw core::Error("profile needs a project file (*.ladimo), got '" + o->model.path + "'");
        o->markers.validate(); // before the work, not after it
        const std::string projectFile = o->model.path;
        ProgressPrinter printer;
        core::ProjectProfileRequest request;
        request.projectFile = projectFile;
        request.load = o->model.loadOptions();
        request.hints = convertedHints(projectFile);
        if (!o->data.file.empty() || o->data.selfSample > 0)
            request.data = o->data.source();
        request.seqLen = o->seqLen;
        request.bins = o->bins;
        request.sensitivityTokens = o->sensitivityTokens;
        request.progress = printer.fn();
        request.cancel = interruptToken();
        const auto result = core::profileProject(request);
        const auto& profiles = result.profiles;
        nlohmann::json out = nlohmann::json::array();
        const auto markers = core::expertLoadMarkers(profiles, o->markers);
        for (std::size_t i = 0; i < profiles.size(); ++i) {
            out.push_back(core::toJson(profiles[i]));
            out.back()["expert_markers"] = core::toJson(markers[i]);
        }
        if (o->json) {
            std::cout << out.dump(2) << "\n";
            return;
        }
        std::printf("routing profile of run #%lld on %lld tokens of %s (stored in %s)\n", (long long)result.runId,
                    (long long)profiles.front().tokens, result.data.c_str(), projectFile.c_str());
        std::printf("layer  entropy  top-1 mass  NLL/error  relative error for k = 1..N\n");
        for (const auto& j : out) {
            std::printf("%5d  %7.3f  %10.3f  %9.4f ", j["layer"].get<int>(), j["entropy"].get<double>(),
                        j["extra"]["cumulative_mass"][0].get<double>(), j["extra"].value("nll_per_error", 0.0));
            for (const auto& e : j["error_by_k"])
                std::printf(" %.4f", e.get<double>());
            std::printf("\n");
        }
        // Dead and hot experts of every layer, by their share of the layer's tokens (top-1).
        for (const bool dead : {true, false}) {
            std::string list;
            for (const auto& m : markers)
                for (const int e : dead ? m.dead : m.hot)
                    list += (list.empty() ? "" : ", ") + std::string("layer ") + std::to_string(m.layer) + " expert "
                        + std::to_string(e);
            std::printf("%s experts (share %s %.2f / N): %s\n", dead ? "dead" : "hot", dead ? "<" : ">",
                        dead ? o->markers.deadBelow : o->markers.hotAbove, list.empty() ? "none" : list.c_str());
        }
    });
}

} // namespace ladimo::cli
