#include "convert/projectconvert.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/tokendata.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

// SHA-256 of a large weights file, remembered across runs in the user's cache folder
// ($XDG_CACHE_HOME or ~/.cache, ladimo/sha256.json) under the file's path, size, modification
// time and inode: a 7B checkpoint takes 10+ s to hash, and every command that records the model
// would hash it again. Files under 64 MiB, or with no cache folder, are always hashed.
std::string cachedSha256(const fs::path& file)
{
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0 || st.st_size < (64 << 20))
        return sha256File(file);
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    if ((!xdg || !*xdg) && (!home || !*home))
        return sha256File(file);
    const fs::path cacheFile = (xdg && *xdg ? fs::path(xdg) : fs::path(home) / ".cache") / "ladimo" / "sha256.json";
    const std::string key = fs::absolute(file).lexically_normal().string();
    const std::string stamp = std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
                              std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino);
    nlohmann::json cache = nlohmann::json::object();
    std::error_code ec;
    try {
        if (fs::exists(cacheFile, ec))
            cache = nlohmann::json::parse(readTextFile(cacheFile, 16 << 20));
    } catch (const std::exception&) {
        cache = nlohmann::json::object(); // unreadable: start afresh
    }
    if (!cache.is_object())
        cache = nlohmann::json::object();
    if (cache.contains(key) && cache[key].is_object() && cache[key].value("stamp", "") == stamp &&
        cache[key].value("sha256", "").size() == 64)
        return cache[key]["sha256"].get<std::string>();
    const std::string sum = sha256File(file);
    cache[key] = {{"stamp", stamp}, {"sha256", sum}};
    try {
        fs::create_directories(cacheFile.parent_path());
        atomicWriteFile(cacheFile, cache.dump(1) + "\n");
    } catch (const std::exception&) {
        // a read-only home: the checksum is still right, only not remembered
    }
    return sum;
}

} // namespace

std::string weightsChecksum(const fs::path& dir)
{
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file() && e.path().extension() == ".safetensors")
            files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
        throw Error("model folder '" + dir.string() + "' has no *.safetensors file");
    if (files.size() == 1)
        return cachedSha256(files[0]);
    std::string listing;
    for (const auto& f : files)
        listing += cachedSha256(f) + "  " + f.filename().string() + "\n";
    return sha256Bytes(listing.data(), listing.size());
}

SourceModel describeSourceModel(const std::string& modelDir, bool checksum)
{
    const fs::path dir = modelDir;
    const auto configFile = dir / "config.json";
    const auto config = ModelConfig::load(configFile);
    const auto counts = config.parameterCounts();
    SourceModel m;
    m.path = fs::absolute(dir).lexically_normal().string();
    m.config = nlohmann::json::parse(readTextFile(configFile, kMaxConfigJsonBytes));
    if (checksum)
        m.weightsSha256 = weightsChecksum(dir);
    m.totalParams = counts.total;
    m.embeddingParams = counts.embeddings;
    m.attentionParams = counts.attention;
    m.ffnParams = counts.ffn;
    return m;
}

nlohmann::json DataSource::toJson() const
{
    return selfSample > 0 ? nlohmann::json{{"self_sample", selfSample}, {"seed", seed}}
                          : nlohmann::json{{"file", file}, {"max_tokens", maxTokens}};
}

std::string DataSource::describe() const
{
    std::string out = file.empty() ? "self-sample " + std::to_string(selfSample) + ", seed " + std::to_string(seed)
                                   : "file " + file;
    if (maxTokens > 0)
        out += ", first " + std::to_string(maxTokens) + " tokens";
    return out;
}

std::vector<int64_t> DataSource::load(const LlamaModel& model, const Tokenizer* tokenizer, int64_t seqLen,
                                      const ProgressFn& progress, const CancelToken& cancel) const
{
    checkSeqLen(seqLen, model.config());
    if (selfSample > 0) {
        SelfSampleOptions s;
        s.tokens = maxTokens > 0 ? std::min(selfSample, maxTokens) : selfSample;
        s.seqLen = seqLen;
        s.seed = seed;
        s.progress = progress;
        s.cancel = cancel;
        return core::selfSample(model, s);
    }
    if (file.empty())
        throw Error("give --data FILE or --self-sample N");
    TokenDataOptions o;
    o.vocabSize = model.config().vocabSize;
    o.bosId = model.config().bosTokenId;
    o.maxTokens = maxTokens;
    return loadTokenFile(file, tokenizer, o);
}

CalibrationSet DataSource::record(const std::vector<int64_t>& tokens, int64_t seqLen) const
{
    CalibrationSet cal;
    cal.name = selfSample > 0 ? "self-sample" : fs::path(file).filename().string();
    cal.source = selfSample > 0 ? CalibrationSource::SelfSample : CalibrationSource::File;
    if (cal.source == CalibrationSource::File) {
        cal.filePath = fs::absolute(file).string();
        cal.fileSha256 = sha256File(file);
    }
    cal.seed = seed;
    cal.tokens = static_cast<int64_t>(tokens.size());
    cal.seqLen = seqLen;
    return cal;
}

int64_t findCalibrationSet(Project& project, const CalibrationSet& w)
{
    for (const auto& c : project.calibrationSets()) {
        const bool same = c.source == w.source && c.tokens == w.tokens && c.seqLen == w.seqLen && c.split == w.split &&
                          (w.source == CalibrationSource::File ? c.fileSha256 == w.fileSha256 : c.seed == w.seed);
        if (same)
            return c.id;
    }
    return 0;
}

LayerOutcome layerOutcome(const LayerConversion& r, int64_t tokens, int64_t batch, const std::string& rel,
                          LossCurve* curve)
{
    LayerOutcome out;
    const std::size_t tail = std::min<std::size_t>(r.lossCurve.size(), static_cast<std::size_t>((tokens + batch - 1) / batch));
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
        if (run.modelId == modelId && run.extra == req.settingsJson && !project.resumableLayers(*latest).empty())
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
                done[static_cast<std::size_t>(layer.layer)] =
                    loadMoeLayer(project.absolutePath(layer.weightsPath), torch::kCPU, torch::kFloat32);

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
        throw Error(std::to_string(failed) + " layer(s) failed (the others are saved in " + project.file().string() +
                    "; rerun to retry the failed ones): " + failures);
    }
    project.setRunStatus(runId, RunStatus::Done);
}

} // namespace ladimo::core
