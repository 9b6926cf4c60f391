#include "project/convert.h"

#include <algorithm>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/tokenizer.h"
#include "project/pipeline.h"

namespace fs = std::filesystem;

namespace ladimo::core {

DataSource runCalibrationData(Project& project, int64_t runId)
{
    const auto run = project.run(runId);
    if (!run.extra.contains("data"))
        throw Error(project.file().string() + ": run #" + std::to_string(runId)
                    + " records no calibration data (settings \"data\"); give the data explicitly");
    auto d = DataSource::fromJson(run.extra.at("data"));
    if (!d.file.empty() && run.calibrationSetId) {
        const auto cal = project.calibrationSet(run.calibrationSetId);
        if (!cal.filePath.empty())
            d.file = cal.filePath;
    }
    return d;
}

int64_t findCalibrationSet(Project& project, const CalibrationSet& w)
{
    for (const auto& c : project.calibrationSets()) {
        const bool same = c.source == w.source && c.tokens == w.tokens && c.seqLen == w.seqLen && c.split == w.split
            && (w.source == CalibrationSource::File ? c.fileSha256 == w.fileSha256 : c.seed == w.seed);
        if (same)
            return c.id;
    }
    return 0;
}

LayerOutcome layerOutcome(const LayerConversion& r, int64_t tokens, int64_t batch, const std::string& rel,
                          LossCurve* curve)
{
    LayerOutcome out;
    const std::size_t tail
        = std::min<std::size_t>(r.lossCurve.size(), static_cast<std::size_t>((tokens + batch - 1) / batch));
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
    for (const auto& [step, loss] : r.lossCurve)
        curve->push_back({step, loss});
    return out;
}

RunPlan findOrStartRun(Project& project, const RunRequest& req, bool markRunning)
{
    int64_t modelId = 0;
    for (const auto& m : project.models())
        if (m.path == req.source.path && m.weightsSha256 == req.source.weightsSha256)
            modelId = m.id;
    if (!modelId)
        modelId = project.addModel(req.source);

    RunPlan plan;
    if (auto latest = project.latestRunId()) {
        const auto run = project.run(*latest);
        // Unfinished: a layer to convert, or the end-to-end stage still to run.
        const bool stagePending = req.settings.endToEnd.steps > 0 && !project.endToEnd(*latest).has_value();
        if (run.modelId == modelId && run.extra == req.settingsJson
            && (!project.resumableLayers(*latest).empty() || stagePending))
            plan.runId = *latest;
    }
    if (plan.runId) {
        plan.resumed = true;
        for (const auto& layer : project.layers(plan.runId))
            if (layer.status == LayerStatus::Done)
                plan.finished.insert(layer.layer);
        if (markRunning)
            project.setRunStatus(plan.runId, RunStatus::Running);
        return plan;
    }
    const auto& s = req.settings;
    ConversionRun run;
    run.modelId = modelId;
    // Runs on the same data share the calibration set, and so the captured activations.
    run.calibrationSetId = findCalibrationSet(project, req.calibration);
    if (!run.calibrationSetId)
        run.calibrationSetId = project.addCalibrationSet(req.calibration);
    run.layers = req.layers;
    run.experts = s.experts;
    run.expertSize = req.intermediateSize / s.experts;
    run.partition = req.partition;
    run.gating = req.gating;
    run.trainTopK = s.distill.trainTopK;
    run.epochs = s.distill.epochs;
    run.lr = s.distill.lr;
    run.batch = s.distill.batch;
    run.mode = s.mode;
    run.device.clear();
    for (const auto& d : s.devices)
        run.device += (run.device.empty() ? "" : ",") + d.str();
    run.seed = s.distill.seed;
    run.extra = req.settingsJson;
    plan.runId = project.startRun(run);
    return plan;
}

namespace {

// The stage's weights go to new files, recorded in one transaction with the stage, so an
// interrupted stage leaves the layer-wise weights in force and a rerun starts it again from them.
std::string endToEndWeightsPath(int64_t runId, int layer)
{
    auto rel = Project::layerWeightsPath(runId, layer);
    const std::string ext = ".safetensors";
    return rel.substr(0, rel.size() - ext.size()) + "-e2e" + ext;
}

void runEndToEndStage(Project& project, int64_t runId, const LlamaModel& model, const std::vector<int64_t>& calibration,
                      const ConvertSettings& settings, const ProjectConvertCallbacks& callbacks)
{
    EndToEndRecord record;
    record.runId = runId;
    if (model.streamed()) {
        record.note = "skipped: the dense model is streamed layer by layer (too large to hold every layer's "
                      "activations for the backward pass)";
        project.finishEndToEnd(record, {});
        if (callbacks.onEndToEndFinished)
            callbacks.onEndToEndFinished(record);
        return;
    }
    const auto results = project.layers(runId);
    std::vector<MoeLayer> layers(static_cast<std::size_t>(model.config().numLayers));
    std::vector<RoutingRule> rules(layers.size());
    for (const auto& r : results) {
        auto& m = layers.at(static_cast<std::size_t>(r.layer));
        m = loadMoeLayer(project.absolutePath(r.weightsPath), model.device(), torch::kFloat32);
        rules[static_cast<std::size_t>(r.layer)]
            = RoutingRule::staticK(std::clamp<int>(settings.distill.trainTopK, 1, static_cast<int>(m.numExperts())));
    }
    EndToEndOptions o = settings.endToEnd;
    o.seqLen = settings.seqLen;
    o.seed = settings.distill.seed;
    o.cancel = callbacks.cancel;
    o.progress = callbacks.progress;
    o.onStep = callbacks.onEndToEndStep;
    const auto result = trainEndToEnd(model, layers, rules, calibration, o);
    std::map<int, LayerOutcome> outcomes;
    for (const auto& r : results) {
        const auto rel = endToEndWeightsPath(runId, r.layer);
        saveMoeLayer(project.prepareFile(rel), layers[static_cast<std::size_t>(r.layer)]);
        LayerOutcome out;
        out.weightsPath = rel;
        outcomes[r.layer] = out;
    }
    record.steps = o.steps;
    record.initialKl = result.initialKl;
    record.finalKl = result.finalKl;
    record.wallSeconds = result.seconds;
    for (const auto& [step, kl] : result.curve)
        record.curve.push_back({step, kl});
    project.finishEndToEnd(record, outcomes);
    if (callbacks.onEndToEndFinished)
        callbacks.onEndToEndFinished(record);
}

} // namespace

void convertRunInProject(Project& project, const RunPlan& plan, const LlamaModel& model,
                         const std::vector<int64_t>& calibration, const ConvertSettings& settings,
                         const ProjectConvertCallbacks& callbacks)
{
    const int64_t runId = plan.runId;
    const int L = static_cast<int>(model.config().numLayers);
    std::vector<MoeLayer> done(static_cast<std::size_t>(L));
    // Only sequential mode feeds finished layers forward; parallel mode never reads them.
    if (settings.mode == "sequential")
        for (const auto& layer : project.layers(runId))
            if (plan.finished.count(layer.layer))
                done[static_cast<std::size_t>(layer.layer)]
                    = loadMoeLayer(project.absolutePath(layer.weightsPath), torch::kCPU, torch::kFloat32);

    ConvertCallbacks cb;
    cb.progress = callbacks.progress;
    cb.onStep = callbacks.onStep;
    cb.cancel = callbacks.cancel;
    if (settings.mode == "parallel")
        cb.loadCaptured = callbacks.loadCaptured;
    cb.onCapture = callbacks.onCapture;
    // Activations that do not fit in memory go to scratch files in the project folder (on the
    // disk the user chose for this model's data, not /tmp).
    ConvertSettings s = settings;
    if (s.capture.spillDir.empty())
        s.capture.spillDir = project.absolutePath("scratch");
    int current = -1;
    cb.onLayerStart = [&](int l) {
        current = l;
        project.markLayerRunning(runId, l);
        if (callbacks.onLayerStarted)
            callbacks.onLayerStarted(l);
    };
    cb.onLayerDone = [&](int l, const MoeLayer& layer, const LayerConversion& r) {
        const std::string rel = Project::layerWeightsPath(runId, l);
        saveMoeLayer(project.prepareFile(rel), layer);
        LossCurve curve;
        const auto out = layerOutcome(r, static_cast<int64_t>(calibration.size()), settings.distill.batch, rel, &curve);
        project.finishLayer(runId, l, out, curve);
        if (callbacks.onLayerFinished)
            callbacks.onLayerFinished(l, r, out, curve);
    };
    std::string failures;
    int failed = 0;
    cb.onLayerFailed = [&](int l, const std::string& reason) {
        project.failLayer(runId, l, reason);
        failures += (failures.empty() ? "" : "; ") + ("layer " + std::to_string(l) + ": " + reason);
        ++failed;
        if (callbacks.onLayerFailed)
            callbacks.onLayerFailed(l, reason);
    };
    try {
        torch::InferenceMode off(false);
        convertModel(model, calibration, s, cb, plan.finished, std::move(done));
    } catch (const Cancelled&) {
        if (current >= 0 && project.layer(runId, current).status != LayerStatus::Done)
            project.resetLayers(runId, {current});
        project.setRunStatus(runId, RunStatus::Cancelled);
        throw;
    } catch (const std::exception& e) {
        if (current >= 0 && project.layer(runId, current).status != LayerStatus::Done)
            project.failLayer(runId, current, e.what());
        project.setRunStatus(runId, RunStatus::Failed);
        throw;
    }
    if (failed > 0) {
        project.setRunStatus(runId, RunStatus::Failed);
        throw Error(std::to_string(failed) + " layer(s) failed (the others are saved in " + project.file().string()
                    + "; rerun to retry the failed ones): " + failures);
    }
    if (settings.endToEnd.steps > 0 && !project.endToEnd(runId)) {
        try {
            runEndToEndStage(project, runId, model, calibration, settings, callbacks);
        } catch (const Cancelled&) {
            project.setRunStatus(runId, RunStatus::Cancelled);
            throw;
        } catch (const std::exception&) {
            project.setRunStatus(runId, RunStatus::Failed);
            throw;
        }
    }
    project.setRunStatus(runId, RunStatus::Done);
}

ConvertCallbacks::LoadCapturedFn capturedActivations(const Project& project, int64_t calibrationSetId,
                                                     const CaptureKey& key,
                                                     std::function<void(const std::string&)> note)
{
    return [&project, calibrationSetId, key, note](int l, torch::Tensor* x, torch::Tensor* y) {
        const auto file = project.absolutePath(Project::activationsPath(calibrationSetId, l));
        std::string why;
        if (loadActivations(file, l, key, x, y, &why)) {
            if (note)
                note("layer " + std::to_string(l) + ": captured activations from " + file.string());
            return true;
        }
        std::error_code ec;
        if (note && fs::exists(file, ec))
            note("layer " + std::to_string(l) + ": not reusing " + why);
        return false;
    };
}

std::set<int> capturedLayers(const Project& project, int64_t calibrationSetId, const CaptureKey& key,
                             const std::set<int>& layers)
{
    std::set<int> captured;
    if (!calibrationSetId)
        return captured;
    torch::Tensor x, y;
    std::string why;
    for (int l : layers)
        if (loadActivations(project.absolutePath(Project::activationsPath(calibrationSetId, l)), l, key, &x, &y, &why))
            captured.insert(l);
    return captured;
}

CostEstimate conversionCost(const LlamaModel& model, const SourceModel& source, int64_t calibrationTokens,
                            const ConvertSettings& settings, const std::set<int>& layers, const std::set<int>& captured)
{
    CostInputs in;
    in.config = model.config();
    in.tokens = calibrationTokens;
    in.settings = settings;
    in.layers.assign(layers.begin(), layers.end());
    for (int l : layers)
        if (!captured.count(l))
            in.captureLayers.push_back(l);
    in.modelBytes = model.streamed() ? 0 : source.totalParams * static_cast<int64_t>(c10::elementSize(model.dtype()));
    in.streamed = model.streamed();
    in.layerBytes = static_cast<int64_t>(model.layerBytes());
    in.computeElementBytes = static_cast<int64_t>(c10::elementSize(model.dtype()));
    in.memoryBudget = static_cast<int64_t>(settings.capture.memoryBudget);
    return estimateCost(in);
}

ProjectConvertResult convertProject(const ProjectConvertRequest& r, const ProjectConvertHooks& hooks)
{
    if (fs::path(r.projectFile).extension() != ".ladimo")
        throw Error("the project file must end in .ladimo, got '" + r.projectFile + "'");
    ConvertSettings s = r.settings;
    s.distill.seed = r.data.seed;
    const auto& cb = hooks.callbacks;
    const auto source = describeSourceModel(r.modelDir);
    nlohmann::json settingsJson = s.toJson();
    settingsJson["data"] = r.data.toJson();
    if (r.reuseFinished && fs::exists(r.projectFile)) {
        auto project = Project::open(r.projectFile, {Project::Access::ReadOnly, Project::Verify::Exists});
        const auto runs = project.runs();
        for (auto run = runs.rbegin(); run != runs.rend(); ++run) // the newest such run
            if (run->status == RunStatus::Done && run->extra == settingsJson
                && project.model(run->modelId).weightsSha256 == source.weightsSha256) {
                ProjectConvertResult out;
                out.runId = run->id;
                out.reused = true;
                out.layers = run->layers;
                out.calibrationTokens
                    = run->calibrationSetId ? project.calibrationSet(run->calibrationSetId).tokens : 0;
                return out;
            }
    }
    auto model = LlamaModel::load(r.modelDir, r.load);
    s.distill.trainTopK = trainTopKFor(s, model.config()); // the run records the k itself
    const auto tokenizer = Tokenizer::loadForModel(r.modelDir);
    const auto calibration = r.data.load(model, tokenizer.get(), s.seqLen, cb.progress, cb.cancel);
    cb.cancel.throwIfCancelled();
    auto project = fs::exists(r.projectFile)
        ? Project::open(r.projectFile, {Project::Access::ReadWrite, Project::Verify::Checksums})
        : Project::create(r.projectFile);
    RunRequest req;
    req.source = source;
    req.settings = s;
    req.partition = r.partition;
    req.gating = r.gating;
    req.settingsJson = settingsJson;
    req.calibration = r.data.record(calibration, s.seqLen);
    req.layers = static_cast<int>(model.config().numLayers);
    req.intermediateSize = model.config().intermediateSize;
    if (r.calibrationSetting)
        project.setSetting(kCalibrationSetting, *r.calibrationSetting);
    const auto plan = findOrStartRun(project, req, /*markRunning=*/!r.prepareOnly);
    ProjectConvertResult out;
    out.runId = plan.runId;
    out.resumed = plan.resumed;
    out.layers = req.layers;
    out.calibrationTokens = static_cast<int64_t>(calibration.size());
    if (hooks.onRun)
        hooks.onRun(project, plan);
    if (r.prepareOnly)
        return out;

    std::set<int> todo;
    for (int l = 0; l < req.layers; ++l)
        if (!plan.finished.count(l))
            todo.insert(l);
    ProjectConvertCallbacks callbacks = cb;
    const int64_t calibrationSetId = project.run(plan.runId).calibrationSetId;
    const CaptureKey key{source.weightsSha256, tokenStreamSha256(calibration), s.seqLen};
    std::set<int> captured;
    if (s.mode == "parallel" && calibrationSetId) {
        callbacks.loadCaptured = capturedActivations(project, calibrationSetId, key, hooks.note);
        captured = capturedLayers(project, calibrationSetId, key, todo);
    }
    if (hooks.onCost)
        hooks.onCost(conversionCost(model, source, out.calibrationTokens, s, todo, captured),
                     static_cast<int>(todo.size()));
    convertRunInProject(project, plan, model, calibration, s, callbacks);
    out.converted = todo;
    return out;
}

} // namespace ladimo::core
