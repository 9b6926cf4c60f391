// `ladimo export` (a project's latest conversion to Hugging Face Mixtral layout, or its dense model
// to LlamaForCausalLM layout) and `ladimo import` (an exported Mixtral directory back into a
// project as a finished conversion run plus its policy). The export reads the project only; it is
// opened for writing just to record the finished export.
#include <cstdio>
#include <iostream>
#include <limits>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "convert/convert.h"
#include "export/formats.h"
#include "project/export.h"
#include "export/hf_mixtral.h"
#include "routing/policy.h"
#include "store/project.h"

namespace fs = std::filesystem;

namespace ladimo::cli {

void registerExportCommand(CLI::App& app)
{
    struct Opts {
        std::string project;
        std::string format = "hf-mixtral";
        std::string out;
        std::string policy;
        int topK = 0;
        std::string dtype = "f32";
        std::string shardSize = "0";
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand(
        "export", "Export a project's conversion (" + core::exportFormatNames(true) + ") or its dense source model");
    cmd->add_option("project", o->project, "Project file (*.ladimo); its latest conversion run is exported")
        ->required();
    std::string formats, files, dtypes;
    for (const auto& f : core::exportFormats()) {
        formats += std::string(formats.empty() ? "" : "; ") + f.name + ": " + f.description;
        if (f.singleFile)
            files += std::string(files.empty() ? "" : ", ") + f.name;
        std::string d;
        for (const auto& t : f.dtypes)
            d += (d.empty() ? "" : "/") + t;
        dtypes += std::string(dtypes.empty() ? "" : "; ") + f.name + " " + d;
    }
    cmd->add_option("--format", o->format, formats)->capture_default_str();
    cmd->add_option("--out", o->out,
                    "Output directory (must not exist or be empty) or, for " + files + ", a file (must not exist)")
        ->required();
    cmd->add_option("--policy", o->policy, "Routing policy of the project (default: the training k in every layer)");
    cmd->add_option("--top-k", o->topK,
                    "The one k Mixtral uses in every layer; needed when the policy or gating is not Mixtral's");
    cmd->add_option("--dtype", o->dtype, "Weight type (" + dtypes + ")")->capture_default_str();
    cmd->add_option("--shard-size", o->shardSize, "Largest safetensors file, e.g. 2GB or 500MiB (0 = one file)")
        ->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        if (!isProjectFile(o->project))
            throw core::Error("export needs a project file (*.ladimo), got '" + o->project + "'");
        const int64_t shardBytes = o->shardSize == "0" ? 0 : core::parseByteSize(o->shardSize);
        // The sequence the workbench's Export job runs too.
        core::ProjectExportRequest req;
        req.projectFile = o->project;
        req.format = o->format;
        req.out = o->out;
        req.dtype = o->dtype;
        req.shardBytes = shardBytes;
        req.policy = o->policy;
        req.topK = o->topK;
        req.hints = convertedHints(o->project);
        ProgressPrinter printer;
        req.progress = printer.fn();
        req.cancel = interruptToken();
        req.note = [](const std::string& note) { std::fprintf(stderr, "note: %s\n", note.c_str()); };
        const auto res = core::exportProject(req);
        const auto& report = res.report;
        const bool moe = res.moe;
        if (o->json) {
            auto j = res.toJson();
            addPeakRss(j);
            std::cout << j.dump(2) << "\n";
            return;
        }
        std::printf("exported run #%lld of %s to %s (%s, %s, %zu files, %.1f MB)\n", (long long)res.runId,
                    o->project.c_str(), o->out.c_str(), o->format.c_str(), o->dtype.c_str(), report.files.size(),
                    static_cast<double>(report.bytes) / 1e6);
        const bool gguf = res.singleFile;
        if (moe && report.expertsPerToken == 0) { // a report, not a model
            for (const auto& n : report.notes)
                std::printf("  - %s\n", n.c_str());
        } else if (moe) {
            const bool qwen = o->format == "gguf-qwen2moe" || o->format == "hf-qwen2-moe";
            const char* target = gguf ? "llama.cpp" : qwen ? "Qwen2-MoE" : "Mixtral";
            const char* key = !gguf ? "num_experts_per_tok"
                : qwen              ? "qwen2moe.expert_used_count"
                                    : "llama.expert_used_count";
            std::printf("policy %s, %s %d: %s%s%s\n", res.policyName.c_str(), key, report.expertsPerToken,
                        report.exact ? "exact (" : "NOT exact; what changes under ", target,
                        report.exact ? " computes what the workbench computes)" : ":");
            for (const auto& n : report.notes)
                std::printf("  - %s\n", n.c_str());
            if (!report.exact && !gguf)
                std::printf("  (the workbench policy is kept in config.json 'ladimo' and routing_policy.json; "
                            "ladimo eval/import of the export use it)\n");
        }
    });
}

void registerImportCommand(CLI::App& app)
{
    struct Opts {
        std::string dir;
        std::string project;
        std::string model;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand(
        "import", "Import an exported Mixtral directory into a project (a finished conversion run + its policy)");
    cmd->add_option("dir", o->dir, "Exported Mixtral directory")->required();
    cmd->add_option("--project", o->project, "Project file (*.ladimo), created when absent")->required();
    cmd->add_option("--model", o->model, "Dense source model folder (default: the one recorded in the export)");
    cmd->callback([o] {
        if (!isProjectFile(o->project))
            throw core::Error("--project must name a *.ladimo file, got '" + o->project + "'");
        torch::InferenceMode guard;
        auto m = core::loadHfMixtral(o->dir, {torch::kCPU, torch::kFloat32});
        const std::string configFile = (fs::path(o->dir) / "config.json").string();
        const std::string modelDir = o->model.empty() ? m.sourceModel : o->model;
        if (modelDir.empty())
            throw core::Error(configFile
                              + " records no source model (key 'ladimo.source_model'): give --model DENSE_DIR");
        if (!fs::exists(fs::path(modelDir) / "config.json"))
            throw core::Error("source model '" + modelDir + "'" + (o->model.empty() ? " recorded in " + configFile : "")
                              + " has no config.json (moved?): give --model DENSE_DIR");
        const auto source = describeSourceModel(modelDir);
        const auto dense = core::ModelConfig::fromJson(source.config, modelDir + "/config.json");
        const auto& c = m.model.config();
        if (dense.hiddenSize != c.hiddenSize || dense.numLayers != c.numLayers || dense.numHeads != c.numHeads
            || dense.numKvHeads != c.numKvHeads || dense.headDim != c.headDim || dense.vocabSize != c.vocabSize)
            throw core::Error("source model '" + modelDir + "' does not match the export " + configFile
                              + " (hidden size, layers, heads or vocabulary differ)");
        const int L = static_cast<int>(m.layers.size());
        const int64_t N = m.layers.front().numExperts();

        auto project = fs::exists(o->project)
            ? core::Project::open(o->project, {core::Project::Access::ReadWrite, core::Project::Verify::Exists})
            : core::Project::create(o->project);
        int64_t modelId = 0;
        for (const auto& sm : project.models())
            if (sm.path == source.path && sm.weightsSha256 == source.weightsSha256)
                modelId = sm.id;
        if (!modelId)
            modelId = project.addModel(source);

        nlohmann::json settings
            = m.ladimo.is_object() && m.ladimo.contains("conversion") && m.ladimo["conversion"].is_object()
            ? m.ladimo["conversion"]
            : nlohmann::json::object();
        if (!settings.contains("train_top_k"))
            settings["train_top_k"] = m.expertsPerToken;
        settings["experts"] = N;
        settings["gating"] = core::gatingName(m.gating);
        settings["imported_from"] = fs::absolute(o->dir).lexically_normal().string();
        core::ConversionRun run;
        run.modelId = modelId;
        run.layers = L;
        run.experts = N;
        run.expertSize = dense.intermediateSize / N;
        run.partition = settings.value("partition", std::string("imported"));
        run.gating = core::gatingName(m.gating);
        run.trainTopK = settings.at("train_top_k").get<int>();
        run.epochs = settings.value("epochs", 0);
        run.lr = settings.value("lr", 0.0);
        run.batch = settings.value("batch", int64_t(0));
        run.mode = settings.value("mode", std::string("parallel"));
        run.device = "cpu";
        run.seed = settings.value("seed", uint64_t(0));
        run.extra = settings;
        const int64_t runId = project.startRun(run);
        try {
            const double unknown = std::numeric_limits<double>::quiet_NaN(); // stored as NULL: not measured here
            for (int l = 0; l < L; ++l) {
                const std::string rel = core::Project::layerWeightsPath(runId, l);
                core::saveMoeLayer(project.prepareFile(rel), m.layers[static_cast<std::size_t>(l)]);
                core::LayerOutcome out;
                out.finalLoss = unknown;
                out.relativeError = unknown;
                out.wallSeconds = unknown;
                out.weightsPath = rel;
                project.finishLayer(runId, l, out, {});
            }
        } catch (...) {
            project.setRunStatus(runId, core::RunStatus::Failed);
            throw;
        }
        project.setRunStatus(runId, core::RunStatus::Done);

        // The policy under its recorded name; a name already taken gets a suffix.
        std::string base
            = m.policyName.empty() ? fs::absolute(o->dir).lexically_normal().filename().string() : m.policyName;
        try {
            core::validatePolicyName(base);
        } catch (const core::Error&) {
            base = "imported";
        }
        std::string name = base;
        const auto existing = project.policies();
        for (int i = 2;; ++i) {
            bool taken = false;
            for (const auto& p : existing)
                taken = taken || p.name == name;
            if (!taken)
                break;
            name = base + "-" + std::to_string(i);
        }
        core::Policy policy;
        policy.name = name;
        policy.origin = core::PolicyOrigin::Imported;
        policy.runId = runId;
        policy.rules = core::rulesToJson(m.rules);
        project.savePolicy(policy);
        std::printf("imported %s into %s: run #%lld (%d layers, %lld experts, %s gating), policy '%s'\n",
                    o->dir.c_str(), o->project.c_str(), (long long)runId, L, (long long)N, core::gatingName(m.gating),
                    name.c_str());
    });
}

} // namespace ladimo::cli
