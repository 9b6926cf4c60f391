// LibTorch before Qt: Qt's `slots` macro breaks LibTorch headers that come after it.
#include "common/error.h"
#include "convert/activations.h"
#include "convert/projectconvert.h"
#include "model/device.h"
#include "model/tokenizer.h"
#include "eval/perplexity.h"
#include "export/gguf.h"
#include "export/hf_mixtral.h"
#include "routing/estimate.h"
#include "routing/latency.h"
#include "routing/policy.h"
#include "routing/profile.h"
#include "store/project.h"

#include "workbenchjob.h"

#include <QtConcurrent/QtConcurrentRun>

#ifdef __linux__
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <optional>

namespace fs = std::filesystem;

namespace ladimo::gui {

namespace {

core::DataSource toCore(const DataChoice& d)
{
    return {d.file.toStdString(), d.selfSample, d.seed, d.maxTokens};
}

core::LlamaModel loadModel(const std::string& dir, const QString& device, const std::string& dtype = "auto")
{
    core::LoadOptions o;
    o.device = core::parseDevices(device.toStdString()).front();
    o.dtype = core::parseComputeDType(dtype, o.device);
    return core::LlamaModel::load(dir, o);
}

// The latest conversion run of a project with every layer loaded, as `ladimo profile` and
// `ladimo eval` need it; names the unfinished layers otherwise.
struct LoadedRun {
    int64_t runId = 0;
    core::ConversionRun run;
    std::string modelDir;
    std::optional<core::LlamaModel> model;
    std::vector<core::MoeLayer> layers;
};

LoadedRun loadLatestRun(core::Project& project, const std::string& projectFile, const QString& device = "auto",
                        const std::string& dtype = "auto")
{
    LoadedRun r;
    const auto runId = project.latestRunId();
    if (!runId)
        throw core::Error(projectFile + ": no conversion run yet; convert first");
    r.runId = *runId;
    r.run = project.run(*runId);
    r.modelDir = project.model(r.run.modelId).path;
    r.model.emplace(loadModel(r.modelDir, device, dtype));
    std::string missing;
    for (const auto& layer : project.layers(*runId)) {
        if (layer.status != core::LayerStatus::Done) {
            missing += (missing.empty() ? "" : ", ") + std::to_string(layer.layer);
            continue;
        }
        r.layers.push_back(core::loadMoeLayer(project.absolutePath(layer.weightsPath), r.model->device(), r.model->dtype()));
    }
    if (!missing.empty())
        throw core::Error(projectFile + ": run #" + std::to_string(*runId) + " has unfinished layers (" + missing +
                          "); finish the conversion (Start in the Convert view resumes it) first");
    return r;
}

} // namespace

WorkbenchJob::WorkbenchJob(QObject* parent) : QObject(parent)
{
    qRegisterMetaType<ladimo::core::RunSnapshot>();
    connect(&m_watcher, &QFutureWatcher<JobOutcome>::finished, this, [this] {
        const JobOutcome out = m_watcher.result();
        emit jobFinished(out.cancelled, out.error);
    });
}

WorkbenchJob::~WorkbenchJob()
{
    m_watcher.disconnect();
    m_cancel.cancel();
    m_watcher.waitForFinished();
}

void WorkbenchJob::cancel() { m_cancel.cancel(); }

core::ProgressFn WorkbenchJob::throttledProgress()
{
    // Shared by copies of the callback; only ever called on the one worker thread.
    auto last = std::make_shared<std::chrono::steady_clock::time_point>();
    return [this, last](const std::string& stage, double done, double total) {
        const auto now = std::chrono::steady_clock::now();
        if (done < total && now - *last < std::chrono::milliseconds(50))
            return;
        *last = now;
        emit progressed(QString::fromStdString(stage), done, total);
    };
}

void WorkbenchJob::start(std::function<JobOutcome(const core::CancelToken&)> work)
{
    m_cancel = core::CancelToken(); // a fresh flag: an earlier Cancel does not stop this job
    m_watcher.setFuture(QtConcurrent::run([work = std::move(work), cancel = m_cancel] {
#ifdef __linux__
        // Background work yields the CPU to the GUI thread: a per-thread nice value, inherited by
        // the LibTorch (OpenMP) threads this thread starts, so the window stays responsive on a
        // busy machine.
        ::setpriority(PRIO_PROCESS, static_cast<id_t>(::syscall(SYS_gettid)), 10);
#endif
        try {
            return work(cancel);
        } catch (const core::Cancelled&) {
            return JobOutcome{true, {}};
        } catch (const std::exception& e) {
            return JobOutcome{false, QString::fromStdString(e.what())};
        }
    }));
}

bool WorkbenchJob::startConversion(const ConvertRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        const std::string modelDir = r.modelPath.toStdString();
        const std::string projectFile = r.projectFile.toStdString();
        if (fs::path(projectFile).extension() != ".ladimo")
            throw core::Error("project file must end in .ladimo, got '" + projectFile + "'");
        core::ConvertSettings s;
        s.experts = r.experts;
        s.distill.trainTopK = r.trainTopK;
        s.distill.epochs = r.epochs;
        const core::DataSource data = toCore(r.data);
        s.partition = core::parsePartition(r.partition.toStdString());
        s.gating = core::parseGating(r.gating.toStdString());
        s.distill.seed = data.seed;
        s.devices = core::parseDevices(r.device.toStdString());
        const auto source = core::describeSourceModel(modelDir);
        auto model = loadModel(modelDir, r.device);
        nlohmann::json settings = s.toJson();
        settings["data"] = data.toJson();
        const auto tokenizer = core::Tokenizer::loadForModel(modelDir);
        const auto calibration = data.load(model, tokenizer.get(), s.seqLen, progress, cancel);
        cancel.throwIfCancelled();
        auto project = fs::exists(projectFile)
                           ? core::Project::open(projectFile, {core::Project::Access::ReadWrite, core::Project::Verify::Checksums})
                           : core::Project::create(projectFile);
        core::RunRequest req;
        req.source = source;
        req.settings = s;
        req.partition = r.partition.toStdString();
        req.gating = r.gating.toStdString();
        req.settingsJson = settings;
        req.calibration = data.record(calibration, s.seqLen);
        req.layers = static_cast<int>(model.config().numLayers);
        req.intermediateSize = model.config().intermediateSize;
        const auto plan = core::findOrStartRun(project, req);
        emit runStarted(project.snapshot(plan.runId), plan.resumed);

        core::ProjectConvertCallbacks cb;
        cb.progress = progress;
        cb.cancel = cancel;
        // Activations captured by `ladimo capture` for this calibration set are reused, as in the CLI.
        const int64_t calibrationSetId = project.run(plan.runId).calibrationSetId;
        const core::CaptureKey key{source.weightsSha256, core::tokenStreamSha256(calibration), s.seqLen};
        if (calibrationSetId)
            cb.loadCaptured = [&project, calibrationSetId, key](int l, torch::Tensor* x, torch::Tensor* y) {
                std::string why;
                return core::loadActivations(project.absolutePath(core::Project::activationsPath(calibrationSetId, l)), l,
                                             key, x, y, &why);
            };
        cb.onLayerStarted = [this](int l) { emit layerStarted(l); };
        cb.onLayerFinished = [this](int l, const core::LayerConversion&, const core::LayerOutcome& out,
                                    const core::LossCurve& curve) {
            QVector<double> steps, losses;
            steps.reserve(static_cast<int>(curve.size()));
            losses.reserve(static_cast<int>(curve.size()));
            for (const auto& p : curve) {
                steps << static_cast<double>(p.step);
                losses << p.loss;
            }
            emit layerFinished(l, out.finalLoss, out.relativeError, out.wallSeconds, steps, losses);
        };
        core::convertRunInProject(project, plan, model, calibration, s, cb);
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startProfile(const ProfileRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        c10::InferenceMode inference; // thread-local: set here, on the worker
        const std::string projectFile = r.projectFile.toStdString();
        // As `ladimo profile`: every layer of the latest run, which must be finished.
        auto project = core::Project::open(projectFile, {core::Project::Access::ReadWrite, core::Project::Verify::Exists});
        const auto loaded = loadLatestRun(project, projectFile);
        const auto tokenizer = core::Tokenizer::loadForModel(loaded.modelDir);
        const auto stream = toCore(r.data).load(*loaded.model, tokenizer.get(), r.seqLen, progress, cancel);
        core::ConversionProfileOptions po;
        po.seqLen = r.seqLen;
        po.bins = r.bins;
        po.sensitivityTokens = r.sensitivityTokens;
        const auto profiles =
            core::profileConversion(*loaded.model, loaded.layers, loaded.runId, stream, po, &cancel, progress);
        for (const auto& p : profiles)
            project.saveRoutingProfile(p);
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startEvaluation(const EvaluateRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        c10::InferenceMode inference; // thread-local: set here, on the worker
        const std::string projectFile = r.projectFile.toStdString();
        auto project = core::Project::open(projectFile, {core::Project::Access::ReadWrite, core::Project::Verify::Exists});
        auto loaded = loadLatestRun(project, projectFile);
        const auto& model = *loaded.model;
        const int L = static_cast<int>(loaded.layers.size());
        const int64_t N = loaded.layers.front().numExperts();
        const core::DataSource data = toCore(r.data);
        const auto tokenizer = core::Tokenizer::loadForModel(loaded.modelDir);
        const auto stream = data.load(model, tokenizer.get(), r.seqLen, progress, cancel);
        core::EvalOptions e;
        e.seqLen = r.seqLen;
        e.progress = progress;
        e.cancel = cancel;
        int64_t active = 0, tokens = 0;
        core::PolicyRules rules;
        core::Policy policy;
        core::ForwardHooks hooks;
        nlohmann::json j;
        if (r.policy == EvaluateRequest::Policy::Stored) {
            bool found = false;
            for (auto& p : project.policies())
                if (p.name == r.policyName.toStdString()) {
                    policy = p;
                    found = true;
                }
            if (!found)
                throw core::Error(projectFile + " has no policy named '" + r.policyName.toStdString() + "'");
            rules = core::policyRules(policy, L, N);
            j["policy_label"] = policy.name;
        } else if (r.policy == EvaluateRequest::Policy::UniformTopK) {
            const int k = r.topK > 0 ? r.topK : loaded.run.trainTopK;
            if (k < 1 || k > N)
                throw core::Error("top-k " + std::to_string(k) + " is out of range: the run has " + std::to_string(N) +
                                  " experts per layer (expected 1.." + std::to_string(N) + ")");
            rules = core::uniformRules(L, core::RoutingRule::staticK(k));
            j["policy_label"] = "uniform top-" + std::to_string(k);
        } else {
            j["policy_label"] = "dense";
        }
        const bool moe = r.policy != EvaluateRequest::Policy::Dense;
        if (moe) {
            hooks = core::moeHooks(loaded.layers, rules, &active, &tokens);
            e.hooks = &hooks;
            e.reference = &model;
        }
        const auto res = core::evaluatePerplexity(model, stream, e);
        j["perplexity"] = res.perplexity;
        j["nll"] = res.nll;
        j["tokens"] = res.tokens;
        j["windows"] = res.windows;
        j["tokens_per_second"] = res.tokensPerSecond;
        const auto& c = model.config();
        if (moe) {
            j["kl_to_dense"] = res.klToReference;
            j["activated_ffn_fraction"] = static_cast<double>(active) /
                (static_cast<double>(tokens) * static_cast<double>(c.numLayers * 3 * c.hiddenSize * c.intermediateSize));
            j["rules"] = core::rulesToJson(rules);
        } else {
            j["activated_ffn_fraction"] = 1.0;
        }
        if (r.timing && moe) {
            // Dense and converted timed in the same job, so their ratio is meaningful.
            core::LatencyOptions lo;
            lo.cancel = &cancel;
            auto plain = core::moeHooks(loaded.layers, rules);
            const auto m = core::measureForward(model, &plain, lo);
            const auto d = core::measureForward(model, nullptr, lo);
            j["prefill_seconds"] = m.prefillSeconds;
            j["decode_seconds"] = m.decodeSeconds;
            j["timing"] = {{"prefill_tokens", lo.prefillTokens}, {"decode_context", lo.decodeContext}};
            j["dense_prefill_seconds"] = d.prefillSeconds;
            j["dense_decode_seconds"] = d.decodeSeconds;
            j["prefill_fraction"] = m.prefillSeconds / d.prefillSeconds;
            j["decode_fraction"] = m.decodeSeconds / d.decodeSeconds;
        }
        if (moe) {
            // The estimate beside the measurement, as `ladimo eval` records it.
            try {
                const auto tables = core::loadPolicyTables(project, loaded.runId, model.device().str());
                const auto est = core::estimatePolicy(tables, rules);
                j["estimate"] = {{"activated_ffn_fraction", est.activatedFfnFraction}, {"error_proxy", est.errorProxy}};
            } catch (const core::Error&) {
                // No profile yet: nothing to compare with.
            }
        }
        cancel.throwIfCancelled();
        core::Evaluation ev;
        ev.policyId = policy.id;
        ev.runId = loaded.runId;
        ev.data = data.describe();
        ev.metrics = j;
        ev.device = model.device().str();
        project.addEvaluation(ev);
        emit evaluated(QString::fromStdString(j.dump()));
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startExport(const ExportRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        c10::InferenceMode inference; // thread-local: set here, on the worker
        const std::string projectFile = r.projectFile.toStdString();
        const std::string format = r.format.toStdString();
        const std::string out = r.out.toStdString();
        const bool gguf = format == "gguf" || format == "gguf-llama";
        if (format != "hf-mixtral" && format != "hf-llama" && !gguf)
            throw core::Error("format '" + format + "' is unknown (expected hf-mixtral, hf-llama, gguf or gguf-llama)");
        if (out.empty())
            throw core::Error("choose where to export: a folder (hf-*) or a file (gguf*)");
        if (gguf && fs::exists(out))
            throw core::Error("'" + out + "' already exists; an export never replaces a file (remove it or choose another name)");
        // As `ladimo export`: the project is read, then opened for writing only to record the export.
        LoadedRun conv;
        {
            auto project = core::Project::open(projectFile, {core::Project::Access::ReadOnly, core::Project::Verify::Exists});
            conv = loadLatestRun(project, projectFile, "cpu", "float32");
        }
        const bool moe = format == "hf-mixtral" || format == "gguf";
        const int L = static_cast<int>(conv.layers.size());
        const int64_t N = conv.layers.empty() ? 0 : conv.layers.front().numExperts();
        core::ExportInput in;
        in.modelDir = conv.modelDir;
        in.model = &*conv.model;
        int64_t policyId = 0;
        if (moe) {
            in.layers = &conv.layers;
            in.conversion = conv.run.extra;
            if (!r.policyName.isEmpty()) {
                auto p = core::Project::open(projectFile, {core::Project::Access::ReadOnly, core::Project::Verify::None});
                for (const auto& pol : p.policies())
                    if (pol.name == r.policyName.toStdString()) {
                        in.rules = core::rulesFromJson(pol.rules, L, N, projectFile + ": policy '" + pol.name + "'");
                        policyId = pol.id;
                    }
                if (!policyId)
                    throw core::Error(projectFile + ": no policy named '" + r.policyName.toStdString() + "'");
                in.policyName = r.policyName.toStdString();
            } else {
                const int k = conv.run.trainTopK;
                in.rules = core::uniformRules(L, core::RoutingRule::staticK(k));
                in.policyName = "train-k" + std::to_string(k);
            }
        }
        core::ExportOptions eo;
        eo.out = out;
        eo.dtype = r.dtype.toStdString();
        eo.expertsPerToken = r.topK;
        eo.progress = progress;
        eo.cancel = &cancel;
        std::vector<std::string> log;
        eo.log = [&log](const std::string& line) { log.push_back(line); };
        const auto report = gguf ? core::exportGguf(in, eo) : core::exportHfMixtral(in, eo);
        core::ExportRecord record;
        record.format = format;
        record.path = fs::absolute(out).lexically_normal().string();
        record.sha256 = report.sha256;
        record.policyId = policyId;
        record.runId = conv.runId;
        int64_t exportId = 0;
        try {
            auto p = core::Project::open(projectFile, {core::Project::Access::ReadWrite, core::Project::Verify::None});
            exportId = p.addExport(record);
        } catch (const core::Error& e) {
            throw core::Error("the export in '" + out + "' is complete, but it could not be recorded in " + projectFile +
                              ": " + e.what());
        }
        nlohmann::json j = {{"out", record.path}, {"format", format},       {"bytes", report.bytes},
                            {"exact", report.exact}, {"notes", report.notes}, {"sha256", report.sha256},
                            {"policy", in.policyName}, {"run", conv.runId},  {"export_id", exportId},
                            {"dtype", eo.dtype}, {"log", log}};
        if (moe)
            j["experts_per_token"] = report.expertsPerToken;
        j["files"] = nlohmann::json::array();
        for (const auto& f : report.files)
            j["files"].push_back(f.filename().string());
        emit exported(QString::fromStdString(j.dump()));
        return JobOutcome{};
    });
    return true;
}

} // namespace ladimo::gui
