// `ladimo convert`: LaDiMo stage 1 into a project (P.ladimo + P.ladimo.d). Every finished layer
// is written atomically and recorded with its loss curve in one transaction; a rerun with the
// same settings resumes the run at its unfinished layers; other settings start a new run.
// Scale-out (store/assemble.h): `--prepare` creates the run and exits; `--layers A-B` workers
// (any number of processes or machines) open the project read-only and leave each finished
// layer as weights + outcome sidecar; `ladimo assemble` records them. Captured activations of
// `ladimo capture` are reused in parallel mode. A cost model is printed before converting.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <set>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "common/fileutil.h"
#include "convert/activations.h"
#include "convert/convert.h"
#include "convert/costmodel.h"
#include "project/convert.h"
#include "export/hf_mixtral.h"
#include "model/device.h"
#include "store/assemble.h"
#include "store/project.h"

namespace fs = std::filesystem;

namespace ladimo::cli {

namespace {

std::string joinLines(const std::vector<std::string>& lines)
{
    std::string out;
    for (const auto& l : lines)
        out += (out.empty() ? "" : "; ") + l;
    return out;
}

} // namespace

bool isProjectFile(const std::string& path) { return fs::path(path).extension() == ".ladimo"; }

static void reportCapture(const core::CaptureInfo& info)
{
    std::fprintf(stderr, "\ncaptured %.1f MiB of FFN activations%s\n", static_cast<double>(info.bytes) / (1 << 20),
                 info.spilled ? " in scratch files in the project folder (more than --activation-memory)"
                              : " in memory");
}

core::LatestRunHints convertedHints(const std::string& projectFile)
{
    core::LatestRunHints h;
    h.noRun = " (run ladimo convert --project " + projectFile + ")";
    h.unfinished = "; rerun ladimo convert to resume";
    return h;
}

Converted loadConverted(const std::string& projectFile, const ModelOptions& modelOptions)
{
    auto r = core::loadLatestRun(projectFile, modelOptions.loadOptions(), convertedHints(projectFile));
    return Converted{std::move(*r.model), std::move(r.layers), r.run.extra, r.runId, r.modelDir};
}

namespace {

std::string hostName()
{
    char buf[256] = {};
    return ::gethostname(buf, sizeof buf - 1) == 0 ? buf : "unknown";
}

} // namespace

void registerConvertCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        DataOptions data;
        std::string project;
        std::string partition = "coact";
        std::string gating = "hard";
        std::string layers;
        bool prepare = false;
        bool dryRun = false;
        bool json = false;
        std::string activationMemory = "0";
        std::string routerTarget = core::routerTargetName(core::RouterTarget::Norms);
        core::ConvertSettings s;
    };
    auto o = std::make_shared<Opts>();
    o->s.capture.onRecovered = [](const std::string& what) { std::fprintf(stderr, "note: %s\n", what.c_str()); };
    auto* cmd = app.add_subcommand(
        "convert", "LaDiMo stage 1: split every FFN into experts + router and distil it layer by layer");
    o->model.add(cmd);
    o->data.add(cmd);
    cmd->add_option("--project", o->project, "Project file (*.ladimo), created when absent; a rerun resumes")
        ->required();
    cmd->add_option("--experts", o->s.experts, "Experts per layer")->capture_default_str();
    cmd->add_option("--shared-neurons", o->s.sharedNeurons,
                    "Always-on neurons per layer (a shared expert every token runs), chosen from the calibration "
                    "tokens; the rest form the experts")
        ->capture_default_str();
    cmd->add_option("--partition", o->partition, "coact, contiguous or weights")->capture_default_str();
    cmd->add_option("--gating", o->gating, "hard (chosen experts at weight 1), renorm (Mixtral) or plain")
        ->capture_default_str();
    cmd->add_option("--train-top-k", o->s.distill.trainTopK,
                    "Experts per token while distilling (0: the most that fit in --train-active)")
        ->capture_default_str();
    cmd->add_option("--train-active", o->s.trainActive,
                    "With --train-top-k 0: the share of the dense FFN's parameters a token activates while "
                    "distilling, router included")
        ->capture_default_str();
    cmd->add_flag("--random-k", o->s.distill.randomK,
                  "Distil at a k drawn per batch from N/2..N instead of --train-top-k (costs quality at every k)");
    cmd->add_option("--full-k-weight", o->s.distill.fullKWeight,
                    "Weight of the all-experts error in the distillation loss (keeps the full model dense; 0: off)")
        ->capture_default_str();
    cmd->add_option("--router-target", o->routerTarget,
                    "Hard gating: fit the router to expert-output norms (norms) or to their shares (shares)")
        ->capture_default_str();
    cmd->add_option("--e2e-steps", o->s.endToEnd.steps,
                    "End-to-end stage after the layers: steps of KL(dense || converted) on the calibration windows "
                    "(0: none; needs the model in memory)")
        ->capture_default_str();
    cmd->add_option("--e2e-lr", o->s.endToEnd.lr, "End-to-end learning rate (Adam, cosine)")->capture_default_str();
    cmd->add_option("--e2e-windows", o->s.endToEnd.windows, "Calibration windows per end-to-end step")
        ->capture_default_str();
    cmd->add_flag("--e2e-routers", o->s.endToEnd.trainRouters,
                  "Train the routers too in the end-to-end stage (hard gating: straight-through gradient)");
    cmd->add_option("--e2e-full-k-weight", o->s.endToEnd.fullKWeight,
                    "End-to-end: weight of the KL with every expert active (keeps the full model dense; 0: off)")
        ->capture_default_str();
    cmd->add_option("--epochs", o->s.distill.epochs, "Distillation epochs")->capture_default_str();
    cmd->add_option("--router-epochs", o->s.distill.routerEpochs, "Router fitting epochs")->capture_default_str();
    cmd->add_option("--lr", o->s.distill.lr, "Distillation learning rate (Adam, cosine)")->capture_default_str();
    cmd->add_option("--batch", o->s.distill.batch, "Tokens per distillation batch")->capture_default_str();
    cmd->add_option("--mode", o->s.mode, "parallel or sequential")->capture_default_str();
    cmd->add_option("--seq-len", o->s.seqLen, "Calibration window length")->capture_default_str();
    auto* layersOpt = cmd->add_option(
        "--layers", o->layers,
        "Worker mode (parallel mode only): convert just these layers (A, A-B, 0-3,6) of the run made by --prepare, "
        "opening the project read-only; each layer lands in its own files; `ladimo assemble` records them");
    auto* prepareOpt
        = cmd->add_flag("--prepare", o->prepare,
                        "Create (or find) the run for these settings, then exit: the step before workers start");
    prepareOpt->excludes(layersOpt);
    cmd->add_flag("--dry-run", o->dryRun, "Print the cost model (tokens, FLOPs, memory, estimated time) and exit");
    cmd->add_flag("--json", o->json, "With --dry-run: the cost model as JSON (with peak_rss_bytes of the dry run)");
    cmd->add_option("--activation-memory", o->activationMemory,
                    "Captured activations kept in memory up to this size, e.g. 8GB; beyond it they go to scratch "
                    "files in the project folder (0 = half the available memory)")
        ->capture_default_str();
    cmd->callback([o] {
        if (!isProjectFile(o->project))
            throw core::Error("--project must name a *.ladimo file, got '" + o->project + "'");
        o->s.partition = core::parsePartition(o->partition);
        o->s.gating = core::parseGating(o->gating);
        o->s.distill.routerTarget = core::parseRouterTarget(o->routerTarget);
        o->s.distill.seed = o->data.seed;
        o->s.capture.memoryBudget = o->activationMemory == "0"
            ? o->model.loadOptions().memoryBudget
            : static_cast<std::uint64_t>(core::parseByteSize(o->activationMemory));
        const bool worker = !o->layers.empty();
        if (!o->dryRun && !worker) { // the project path, shared with the workbench (core/project/convert.h)
            core::ProjectConvertRequest request;
            request.modelDir = o->model.path;
            request.projectFile = o->project;
            request.load = o->model.loadOptions();
            request.settings = o->s;
            request.settings.devices = core::parseDevices(o->model.device);
            request.partition = o->partition;
            request.gating = o->gating;
            request.data = o->data.source();
            request.prepareOnly = o->prepare;
            ProgressPrinter printer;
            core::ProjectConvertHooks hooks;
            hooks.callbacks.progress = printer.fn();
            hooks.callbacks.cancel = interruptToken();
            hooks.callbacks.onCapture = reportCapture;
            hooks.note = [](const std::string& what) { std::fprintf(stderr, "%s\n", what.c_str()); };
            int trainK = 0;
            hooks.onRun = [&](core::Project& project, const core::RunPlan& plan) {
                trainK = project.run(plan.runId).trainTopK;
                if (plan.resumed)
                    std::fprintf(stderr, "resuming run #%lld: %zu of %d layers left\n", (long long)plan.runId,
                                 project.resumableLayers(plan.runId).size(), project.run(plan.runId).layers);
                else
                    std::fprintf(stderr, "run #%lld in %s\n", (long long)plan.runId, o->project.c_str());
            };
            hooks.onCost = [](const core::CostEstimate& cost, int layers) {
                std::fprintf(stderr, "%s", cost.describe(layers).c_str());
            };
            hooks.callbacks.onLayerFinished
                = [&](int l, const core::LayerConversion& r, const core::LayerOutcome&, const core::LossCurve&) {
                      std::fprintf(stderr, "\nlayer %d: relative error at k=%d %.4f -> %.4f (%.1f s)\n", l, trainK,
                                   r.initialError, r.finalError, r.seconds);
                      for (const auto& f : r.recovered)
                          std::fprintf(stderr, "layer %d: recovered from a fault: %s\n", l, f.c_str());
                  };
            hooks.callbacks.onLayerFailed = [](int l, const std::string& reason) {
                std::fprintf(stderr, "\nlayer %d FAILED: %s\n", l, reason.c_str());
            };
            hooks.callbacks.onEndToEndFinished = [](const core::EndToEndRecord& r) {
                if (r.steps == 0)
                    std::fprintf(stderr, "\nend-to-end stage %s\n", r.note.c_str());
                else
                    std::fprintf(stderr, "\nend-to-end: KL to dense %.4f -> %.4f per token over %d steps (%.1f s)\n",
                                 r.initialKl, r.finalKl, r.steps, r.wallSeconds);
            };
            core::ProjectConvertResult result;
            try {
                result = core::convertProject(request, hooks);
            } catch (const core::Cancelled&) {
                std::fprintf(stderr, "\ncancelled: finished layers are kept; rerun the same command to resume\n");
                throw;
            }
            if (o->prepare)
                std::printf("prepared run #%lld in %s; start workers with the same command and --layers A-B instead of "
                            "--prepare, then run ladimo assemble %s\n",
                            (long long)result.runId, o->project.c_str(), o->project.c_str());
            else
                std::printf("converted %s: run #%lld of %s\n", o->model.path.c_str(), (long long)result.runId,
                            o->project.c_str());
            return;
        }
        // A dry run without a project needs no weights checksum (hashing a 7B checkpoint takes
        // seconds); everything else records the model by it.
        const bool checksum = !o->dryRun || fs::exists(o->project);
        const auto source
            = checksum ? describeSourceModel(o->model.path) : core::describeSourceModel(o->model.path, false);
        auto model = o->model.load();
        o->s.devices = core::parseDevices(o->model.device);
        const int L = static_cast<int>(model.config().numLayers);
        std::set<int> selected;
        for (int l = 0; l < L; ++l)
            selected.insert(l);
        if (worker) {
            selected = parseLayerSpec(o->layers, L);
            if (o->s.mode != "parallel")
                throw core::Error("--layers needs --mode parallel: in sequential mode each layer's input depends on "
                                  "the converted layers below it");
        }

        nlohmann::json settings = o->s.toJson();
        settings["data"] = o->data.source().toJson();
        ProgressPrinter printer;
        auto calibration
            = o->data.load(model, core::Tokenizer::loadForModel(o->model.path).get(), o->s.seqLen, printer.fn());
        const auto calRecord = calibrationRecord(o->data, calibration, o->s.seqLen);
        const core::CaptureKey captureKey{source.weightsSha256, core::tokenStreamSha256(calibration), o->s.seqLen};

        const auto costFor = [&](const std::set<int>& layers, const std::set<int>& captured) {
            return core::conversionCost(model, source, static_cast<int64_t>(calibration.size()), o->s, layers,
                                        captured);
        };
        if (o->dryRun) {
            std::set<int> captured;
            if (fs::exists(o->project)) {
                auto p
                    = core::Project::open(o->project, {core::Project::Access::ReadOnly, core::Project::Verify::None});
                captured = core::capturedLayers(p, core::findCalibrationSet(p, calRecord), captureKey, selected);
            }
            const auto cost = costFor(selected, captured);
            if (o->json) {
                auto j = cost.toJson();
                addPeakRss(j);
                std::cout << j.dump(2) << "\n";
            } else {
                std::printf("%s", cost.describe(static_cast<int>(selected.size())).c_str());
            }
            return;
        }

        if (worker) {
            // Worker mode: the project is only read; results go to per-layer files (store/assemble.h).
            auto project
                = core::Project::open(o->project, {core::Project::Access::ReadOnly, core::Project::Verify::None});
            int64_t runId = 0;
            for (const auto& run : project.runs()) {
                const auto m = project.model(run.modelId);
                if (m.weightsSha256 == source.weightsSha256 && run.extra == settings && run.id > runId)
                    runId = run.id;
            }
            if (!runId)
                throw core::Error(o->project + ": no conversion run of " + o->model.path
                                  + " with these settings; create it once, before starting workers, with the same "
                                    "command and --prepare instead of --layers");
            const auto run = project.run(runId);
            const std::string fingerprint = core::runFingerprint(source.weightsSha256, run.extra);
            core::WorkerLock lock(project.dataDir());
            std::set<int> skip;
            for (int l = 0; l < L; ++l)
                if (!selected.count(l))
                    skip.insert(l);
            for (const auto& layer : project.layers(runId)) {
                if (!selected.count(layer.layer))
                    continue;
                if (layer.status == core::LayerStatus::Done) {
                    skip.insert(layer.layer);
                    continue;
                }
                // A layer a worker finished before (a requeued task) is kept when it checks out.
                if (auto side = core::readLayerSidecar(project, runId, layer.layer))
                    if (side->fingerprint == fingerprint && fs::exists(project.absolutePath(side->outcome.weightsPath))
                        && core::sha256File(project.absolutePath(side->outcome.weightsPath))
                            == side->outcome.weightsSha256)
                        skip.insert(layer.layer);
            }
            std::set<int> todo;
            for (int l : selected)
                if (!skip.count(l))
                    todo.insert(l);
            std::fprintf(stderr, "worker for run #%lld in %s: layers %s (%zu to do)\n", (long long)runId,
                         o->project.c_str(), describeLayers(selected).c_str(), todo.size());
            if (todo.empty()) {
                std::printf("run #%lld: layers %s already finished; run ladimo assemble %s\n", (long long)runId,
                            describeLayers(selected).c_str(), o->project.c_str());
                return;
            }
            core::ConvertCallbacks cb;
            cb.progress = printer.fn();
            cb.cancel = interruptToken();
            cb.loadCaptured
                = core::capturedActivations(project, run.calibrationSetId, captureKey, [](const std::string& what) {
                      std::fprintf(stderr, "%s\n", what.c_str());
                  });
            cb.onCapture = reportCapture;
            std::fprintf(stderr, "%s",
                         costFor(todo, core::capturedLayers(project, run.calibrationSetId, captureKey, todo))
                             .describe(static_cast<int>(todo.size()))
                             .c_str());
            const std::string host = hostName();
            cb.onLayerDone = [&](int l, const core::MoeLayer& layer, const core::LayerConversion& r) {
                core::LayerSidecar side;
                side.runId = runId;
                side.layer = l;
                side.fingerprint = fingerprint;
                const std::string rel = core::Project::layerWeightsPath(runId, l);
                side.outcome = core::layerOutcome(r, static_cast<int64_t>(calibration.size()), o->s.distill.batch, rel,
                                                  &side.curve);
                const auto file = project.prepareFile(rel);
                core::saveMoeLayer(file, layer); // atomic; then the sidecar that vouches for it
                side.outcome.weightsSha256 = core::sha256File(file);
                side.host = host;
                side.pid = static_cast<int64_t>(::getpid());
                side.finished = core::nowUtc();
                core::writeLayerSidecar(project, side);
                std::fprintf(stderr, "\nlayer %d: relative error at k=%d %.4f -> %.4f (%.1f s)\n", l,
                             core::trainTopKFor(o->s, model.config()), r.initialError, r.finalError, r.seconds);
                for (const auto& f : r.recovered)
                    std::fprintf(stderr, "layer %d: recovered from a fault: %s\n", l, f.c_str());
            };
            std::vector<std::string> failures;
            cb.onLayerFailed = [&](int l, const std::string& reason) {
                failures.push_back("layer " + std::to_string(l) + ": " + reason);
                std::fprintf(stderr, "\nlayer %d FAILED: %s\n", l, reason.c_str());
            };
            try {
                torch::InferenceMode off(false);
                o->s.capture.spillDir = project.absolutePath("scratch"); // as convertRunInProject does
                core::convertModel(model, calibration, o->s, cb, skip);
            } catch (const core::Cancelled&) {
                std::fprintf(stderr, "\ncancelled: finished layers are kept; rerun the same command to resume\n");
                throw;
            }
            if (!failures.empty())
                throw core::Error(std::to_string(failures.size())
                                  + " layer(s) failed (the others are saved): " + joinLines(failures));
            std::printf("converted layers %s of run #%lld in %s; run ladimo assemble %s when every worker is done\n",
                        describeLayers(todo).c_str(), (long long)runId, o->project.c_str(), o->project.c_str());
            return;
        }
    });
}

} // namespace ladimo::cli
