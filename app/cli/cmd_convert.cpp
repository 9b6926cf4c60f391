// `ladimo convert`: LaDiMo stage 1 into a project (P.ladimo + P.ladimo.d). Every finished layer
// is written atomically and recorded with its loss curve in one transaction; a rerun with the
// same settings resumes the run at its unfinished layers; other settings start a new run.
#include <cstdio>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "common/fileutil.h"
#include "convert/convert.h"
#include "model/device.h"
#include "store/project.h"

namespace fs = std::filesystem;

namespace ladimo::cli {

bool isProjectFile(const std::string& path) { return fs::path(path).extension() == ".ladimo"; }

Converted loadConverted(const std::string& projectFile, const ModelOptions& modelOptions)
{
    auto p = core::Project::open(projectFile, {core::Project::Access::ReadOnly, core::Project::Verify::Exists});
    const auto runId = p.latestRunId();
    if (!runId)
        throw core::Error(projectFile + ": no conversion run yet (run ladimo convert --project " + projectFile + ")");
    const auto run = p.run(*runId);
    ModelOptions m = modelOptions;
    m.path = p.model(run.modelId).path;
    Converted c{m.load(), {}, run.extra, *runId, m.path};
    std::string missing;
    for (const auto& layer : p.layers(*runId)) {
        if (layer.status != core::LayerStatus::Done) {
            missing += (missing.empty() ? "" : ", ") + std::to_string(layer.layer);
            continue;
        }
        c.layers.push_back(core::loadMoeLayer(p.absolutePath(layer.weightsPath), c.model.device(), c.model.dtype()));
    }
    if (!missing.empty())
        throw core::Error(projectFile + ": run #" + std::to_string(*runId) + " has unfinished layers (" + missing +
                          "); rerun ladimo convert to resume");
    return c;
}

void registerConvertCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        std::string project;
        std::string partition = "coact";
        std::string gating = "hard";
        core::ConvertSettings s;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand("convert", "LaDiMo stage 1: split every FFN into experts + router and distil it layer by layer");
    o->model.add(cmd);
    o->data.add(cmd);
    cmd->add_option("--project", o->project, "Project file (*.ladimo), created when absent; a rerun resumes")->required();
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
        if (!isProjectFile(o->project))
            throw core::Error("--project must name a *.ladimo file, got '" + o->project + "'");
        o->s.partition = core::parsePartition(o->partition);
        o->s.gating = core::parseGating(o->gating);
        o->s.distill.seed = o->data.seed;
        const auto source = describeSourceModel(o->model.path);
        auto model = o->model.load();
        o->s.devices = core::parseDevices(o->model.device);
        const int L = static_cast<int>(model.config().numLayers);

        auto project = fs::exists(o->project) ? core::Project::open(o->project, {core::Project::Access::ReadWrite,
                                                                                  core::Project::Verify::Checksums})
                                              : core::Project::create(o->project);
        int64_t modelId = 0;
        for (const auto& m : project.models())
            if (m.path == source.path && m.weightsSha256 == source.weightsSha256)
                modelId = m.id;
        if (!modelId)
            modelId = project.addModel(source);

        nlohmann::json settings = o->s.toJson();
        settings["data"] = o->data.selfSample > 0 ? nlohmann::json{{"self_sample", o->data.selfSample}, {"seed", o->data.seed}}
                                                  : nlohmann::json{{"file", o->data.file}, {"max_tokens", o->data.maxTokens}};
        // Resume the latest run when it is this model with these settings and not finished.
        int64_t runId = 0;
        if (auto latest = project.latestRunId()) {
            const auto run = project.run(*latest);
            if (run.modelId == modelId && run.extra == settings && !project.resumableLayers(*latest).empty())
                runId = *latest;
        }
        ProgressPrinter printer;
        auto calibration = o->data.load(model, core::Tokenizer::loadForModel(o->model.path).get(), o->s.seqLen, printer.fn());
        std::set<int> skip;
        std::vector<core::MoeLayer> done(static_cast<std::size_t>(L));
        if (runId) {
            const auto todo = project.resumableLayers(runId);
            for (const auto& layer : project.layers(runId))
                if (layer.status == core::LayerStatus::Done) {
                    skip.insert(layer.layer);
                    // Only sequential mode feeds finished layers forward; parallel mode never reads them.
                    if (o->s.mode == "sequential")
                        done[static_cast<std::size_t>(layer.layer)] =
                            core::loadMoeLayer(project.absolutePath(layer.weightsPath), torch::kCPU, torch::kFloat32);
                }
            project.setRunStatus(runId, core::RunStatus::Running);
            std::fprintf(stderr, "resuming run #%lld: %zu of %d layers left\n", (long long)runId, todo.size(), L);
        } else {
            core::CalibrationSet cal;
            cal.name = o->data.selfSample > 0 ? "self-sample" : fs::path(o->data.file).filename().string();
            cal.source = o->data.selfSample > 0 ? core::CalibrationSource::SelfSample : core::CalibrationSource::File;
            if (cal.source == core::CalibrationSource::File) {
                cal.filePath = fs::absolute(o->data.file).string();
                cal.fileSha256 = core::sha256File(o->data.file);
            }
            cal.seed = o->data.seed;
            cal.tokens = static_cast<int64_t>(calibration.size());
            cal.seqLen = o->s.seqLen;
            core::ConversionRun run;
            run.modelId = modelId;
            run.calibrationSetId = project.addCalibrationSet(cal);
            run.layers = L;
            run.experts = o->s.experts;
            run.expertSize = model.config().intermediateSize / o->s.experts;
            run.partition = o->partition;
            run.gating = o->gating;
            run.trainTopK = o->s.distill.trainTopK;
            run.epochs = o->s.distill.epochs;
            run.lr = o->s.distill.lr;
            run.batch = o->s.distill.batch;
            run.mode = o->s.mode;
            run.device.clear();
            for (const auto& d : o->s.devices)
                run.device += (run.device.empty() ? "" : ",") + d.str();
            run.seed = o->s.distill.seed;
            run.extra = settings;
            runId = project.startRun(run);
            std::fprintf(stderr, "run #%lld in %s\n", (long long)runId, o->project.c_str());
        }

        core::ConvertCallbacks cb;
        cb.progress = printer.fn();
        cb.cancel = interruptToken();
        int current = -1;
        cb.onLayerStart = [&](int l) {
            current = l;
            project.markLayerRunning(runId, l);
        };
        cb.onLayerDone = [&](int l, const core::MoeLayer& layer, const core::LayerConversion& r) {
            const std::string rel = core::Project::layerWeightsPath(runId, l);
            core::saveMoeLayer(project.prepareFile(rel), layer);
            core::LayerOutcome out;
            // Mean over the last epoch's batches: single batches are noisy (random k per batch).
            const std::size_t tail = std::min<std::size_t>(r.lossCurve.size(), static_cast<std::size_t>(
                                         (calibration.size() + o->s.distill.batch - 1) / o->s.distill.batch));
            out.finalLoss = r.finalError;
            if (tail > 0) {
                double sum = 0;
                for (std::size_t i = r.lossCurve.size() - tail; i < r.lossCurve.size(); ++i)
                    sum += r.lossCurve[i].second;
                out.finalLoss = sum / static_cast<double>(tail);
            }
            out.relativeError = r.finalError;
            out.wallSeconds = r.seconds;
            out.weightsPath = rel;
            core::LossCurve curve;
            for (const auto& [step, loss] : r.lossCurve)
                curve.push_back({step, loss});
            project.finishLayer(runId, l, out, curve);
            std::fprintf(stderr, "\nlayer %d: relative error at k=%d %.4f -> %.4f (%.1f s)\n", l,
                         o->s.distill.trainTopK, r.initialError, r.finalError, r.seconds);
        };
        try {
            torch::InferenceMode off(false);
            core::convertModel(model, calibration, o->s, cb, skip, done);
        } catch (const core::Cancelled&) {
            if (current >= 0 && project.layer(runId, current).status != core::LayerStatus::Done)
                project.resetLayers(runId, {current});
            project.setRunStatus(runId, core::RunStatus::Cancelled);
            std::fprintf(stderr, "\ncancelled: finished layers are kept; rerun the same command to resume\n");
            throw;
        } catch (const std::exception& e) {
            if (current >= 0 && project.layer(runId, current).status != core::LayerStatus::Done)
                project.failLayer(runId, current, e.what());
            project.setRunStatus(runId, core::RunStatus::Failed);
            throw;
        }
        project.setRunStatus(runId, core::RunStatus::Done);
        std::printf("converted %s: run #%lld of %s\n", o->model.path.c_str(), (long long)runId, o->project.c_str());
    });
}

} // namespace ladimo::cli
