#include "common/error.h"
#include "convert/activations.h"
#include "project/convert.h"
#include "model/device.h"
#include "model/tokendata.h"
#include "model/tokenizer.h"
#include "convert/latestrun.h"
#include "project/evaluate.h"
#include "project/export.h"
#include "routing/estimate.h"
#include "routing/profile.h"
#include "routing/refine.h"
#include "project/pipeline.h"
#include "project/profile.h"
#include "project/run.h"
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
#include <mutex>
#include <optional>

namespace fs = std::filesystem;

namespace ladimo::gui {

namespace {

core::DataSource toCore(const DataChoice& d) { return {d.file.toStdString(), d.selfSample, d.seed, d.maxTokens}; }

core::LoadOptions loadOptions(const QString& device, const std::string& dtype = "auto")
{
    core::LoadOptions o;
    o.device = core::parseDevices(device.toStdString()).front();
    o.dtype = core::parseComputeDType(dtype, o.device);
    return o;
}

// The Convert view's settings as `ladimo convert` takes them (core::convertProject).
core::ProjectConvertRequest toCore(const ConvertRequest& r)
{
    core::ProjectConvertRequest req;
    req.modelDir = r.modelPath.toStdString();
    req.projectFile = r.projectFile.toStdString();
    req.load = loadOptions(r.device);
    req.settings.experts = r.experts;
    req.settings.sharedNeurons = r.sharedNeurons;
    req.settings.distill.trainTopK = r.trainTopK;
    req.settings.distill.epochs = r.epochs;
    req.settings.endToEnd.steps = r.e2eSteps;
    req.settings.partition = core::parsePartition(r.partition.toStdString());
    req.settings.gating = core::parseGating(r.gating.toStdString());
    req.settings.devices = core::parseDevices(r.device.toStdString());
    req.partition = r.partition.toStdString();
    req.gating = r.gating.toStdString();
    req.data = toCore(r.data);
    if (!r.calibrationJson.isEmpty())
        req.calibrationSetting = nlohmann::json::parse(r.calibrationJson.toStdString());
    return req;
}

core::LlamaModel loadModel(const std::string& dir, const QString& device)
{
    return core::LlamaModel::load(dir, loadOptions(device));
}

// The workbench's words for what to do when the latest run is missing or unfinished.
core::LatestRunHints runHints()
{
    core::LatestRunHints h;
    h.noRun = "; convert first";
    h.unfinished = "; finish the conversion (Start in the Convert view resumes it) first";
    return h;
}

} // namespace

CalibrationPreview previewCalibration(const QString& modelDir, const DataChoice& data, int previewTokens)
{
    CalibrationPreview out;
    try {
        const std::string dir = modelDir.toStdString();
        const auto tokenizer = core::Tokenizer::loadForModel(dir);
        std::vector<int64_t> tokens;
        if (data.selfSample > 0) {
            c10::InferenceMode inference; // thread-local: on this worker
            auto model = loadModel(dir, "cpu");
            core::DataSource d = toCore(data);
            d.selfSample = std::min<int64_t>(data.selfSample, std::max(previewTokens, 64));
            tokens = d.load(model, tokenizer.get(), std::min<int64_t>(d.selfSample, 256), {}, core::CancelToken());
            out.tokens = data.selfSample;
        } else {
            if (data.file.isEmpty())
                throw core::Error("choose a calibration file");
            const auto config = core::ModelConfig::load(fs::path(dir) / "config.json");
            core::TokenDataOptions o;
            o.vocabSize = config.vocabSize;
            o.bosId = config.bosTokenId;
            o.maxTokens = data.maxTokens;
            tokens = core::loadTokenFile(data.file.toStdString(), tokenizer.get(), o);
            out.tokens = static_cast<qint64>(tokens.size());
        }
        const std::size_t n
            = std::min<std::size_t>(tokens.size(), static_cast<std::size_t>(std::max(previewTokens, 0)));
        if (tokenizer) {
            out.text = QString::fromStdString(
                tokenizer->decode(std::vector<int>(tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(n))));
        } else {
            QStringList ids;
            for (std::size_t i = 0; i < n; ++i)
                ids << QString::number(tokens[i]);
            out.text = ids.join(' ');
        }
    } catch (const std::exception& e) {
        out.error = QString::fromStdString(e.what());
    }
    return out;
}

WorkbenchJob::WorkbenchJob(QObject* parent) : QObject(parent)
{
    qRegisterMetaType<ladimo::core::RunSnapshot>();
    connect(&m_watcher, &QFutureWatcher<JobOutcome>::finished, this, [this] {
        const JobOutcome out = m_watcher.result();
        Q_EMIT jobFinished(out.cancelled, out.error);
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
        Q_EMIT progressed(QString::fromStdString(stage), done, total);
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
        const auto req = toCore(r);
        core::ProjectConvertHooks hooks;
        hooks.onRun = [this](core::Project& project, const core::RunPlan& plan) {
            Q_EMIT runStarted(project.snapshot(plan.runId), plan.resumed);
        };
        auto& cb = hooks.callbacks;
        cb.progress = progress;
        cb.cancel = cancel;
        // Live loss points, batched so the GUI gets at most 10 updates a second whatever the batch rate.
        struct Live {
            std::mutex mutex;
            int layer = -1;
            QVector<double> steps, losses;
            std::chrono::steady_clock::time_point last;
        };
        auto live = std::make_shared<Live>();
        auto flush = [this, live] { // with live->mutex held
            if (live->layer >= 0 && !live->steps.isEmpty())
                Q_EMIT lossPoints(live->layer, live->steps, live->losses);
            live->steps.clear();
            live->losses.clear();
            live->last = std::chrono::steady_clock::now();
        };
        cb.onStep = [live, flush](int l, int64_t step, double loss) {
            std::lock_guard<std::mutex> lock(live->mutex);
            if (l != live->layer) {
                flush();
                live->layer = l;
            }
            live->steps << static_cast<double>(step);
            live->losses << loss;
            if (std::chrono::steady_clock::now() - live->last >= std::chrono::milliseconds(100))
                flush();
        };
        cb.onLayerStarted = [this](int l) { Q_EMIT layerStarted(l); };
        cb.onLayerFinished = [this, live, flush](int l, const core::LayerConversion&, const core::LayerOutcome& out,
                                                 const core::LossCurve& curve) {
            {
                std::lock_guard<std::mutex> lock(live->mutex);
                if (live->layer == l)
                    flush();
            }
            QVector<double> steps, losses;
            steps.reserve(static_cast<int>(curve.size()));
            losses.reserve(static_cast<int>(curve.size()));
            for (const auto& p : curve) {
                steps << static_cast<double>(p.step);
                losses << p.loss;
            }
            Q_EMIT layerFinished(l, out.finalLoss, out.relativeError, out.wallSeconds, steps, losses);
        };
        core::convertProject(req, hooks);
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startProfile(const ProfileRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        core::ProjectProfileRequest req; // as `ladimo profile`: every layer of the latest run
        req.projectFile = r.projectFile.toStdString();
        req.load = loadOptions("auto");
        req.hints = runHints();
        const auto data = toCore(r.data);
        if (!data.file.empty() || data.selfSample > 0)
            req.data = data;
        req.seqLen = r.seqLen;
        req.bins = r.bins;
        req.sensitivityTokens = r.sensitivityTokens;
        req.progress = progress;
        req.cancel = cancel;
        core::profileProject(req);
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startEvaluation(const EvaluateRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        // The sequence of `ladimo eval P.ladimo`, in core.
        core::ProjectEvalRequest req;
        req.projectFile = r.projectFile.toStdString();
        req.load = loadOptions("auto");
        req.hints = runHints();
        req.data = toCore(r.data);
        req.seqLen = r.seqLen;
        req.dense = r.policy == EvaluateRequest::Policy::Dense;
        if (r.policy == EvaluateRequest::Policy::Stored)
            req.policy = r.policyName.toStdString();
        else if (r.policy == EvaluateRequest::Policy::UniformTopK)
            req.topK = r.topK;
        req.timing = r.timing;
        req.recordLabel = true;
        req.progress = progress;
        req.cancel = cancel;
        const auto res = core::evaluateProject(req);
        Q_EMIT evaluated(QString::fromStdString(res.metrics.dump()));
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startExport(const ExportRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        // The sequence of `ladimo export P.ladimo`, in core.
        core::ProjectExportRequest req;
        req.projectFile = r.projectFile.toStdString();
        req.format = r.format.toStdString();
        req.out = r.out.toStdString();
        req.dtype = r.dtype.toStdString();
        req.policy = r.policyName.toStdString();
        req.topK = r.topK;
        req.hints = runHints();
        req.progress = progress;
        req.cancel = cancel;
        std::vector<std::string> log; // shown in the export report (e.g. stale temporaries removed)
        req.note = [&log](const std::string& line) { log.push_back(line); };
        const auto res = core::exportProject(req);
        auto j = res.toJson();
        j["log"] = log;
        Q_EMIT exported(QString::fromStdString(j.dump()));
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startPipeline(const PipelineRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        core::PipelineRequest req; // as `ladimo run`
        req.convert = toCore(r.convert);
        req.outDir = r.outDir.toStdString();
        req.budgetParams = r.budgetParams;
        req.progress = progress;
        req.cancel = cancel;
        req.onStep = [this](const std::string& step, const std::string& line) {
            Q_EMIT pipelineStep(QString::fromStdString(step), QString::fromStdString(line));
        };
        const auto report = core::runPipeline(req);
        Q_EMIT pipelineReport(QString::fromStdString(report.describe()),
                              QString::fromStdString(report.toJson().dump()));
        return JobOutcome{};
    });
    return true;
}

bool WorkbenchJob::startRefine(const RefineRequest& r)
{
    if (isRunning())
        return false;
    start([this, r, progress = throttledProgress()](const core::CancelToken& cancel) {
        // The sequence of `ladimo policy P --budget-... --refine-data`: the tables of the latest
        // run as the CLI loads them, then the refinement in core.
        const std::string projectFile = r.projectFile.toStdString();
        core::PolicyTables tables;
        core::ConversionRun run;
        {
            auto project
                = core::Project::open(projectFile, {core::Project::Access::ReadOnly, core::Project::Verify::Exists});
            const auto runId = project.latestRunId();
            if (!runId)
                throw core::Error(projectFile + ": no conversion run yet" + runHints().noRun);
            run = project.run(*runId);
            tables = core::loadPolicyTables(project, *runId,
                                            r.latencyDevice.isEmpty() ? "cpu" : r.latencyDevice.toStdString());
        }
        const auto start = core::rulesFromJson(nlohmann::json::parse(r.startRules.toStdString()), run.layers,
                                               run.experts, "the policy to refine");
        core::ProjectRefineRequest req;
        req.projectFile = projectFile;
        req.load = loadOptions("auto");
        req.hints = runHints();
        req.data = toCore(r.data);
        req.seqLen = r.seqLen;
        req.options.cost = static_cast<core::CostKind>(r.cost);
        req.options.budgetFraction = r.budget;
        req.options.maxEvaluations = r.maxEvaluations;
        req.options.perRound = r.perRound;
        req.options.progress = progress;
        req.options.cancel = cancel;
        auto measured = std::make_shared<int>(0); // only touched on this worker thread
        req.options.onMeasured = [this, measured, experts = run.experts](const core::RefineCandidate& c) {
            Q_EMIT refineMeasured((*measured)++, QString::fromStdString(core::describeRules(c.rules, experts)), c.cost,
                                  c.proxy, c.measured);
        };
        const auto res = core::refineProjectPolicy(req, tables, start);
        nlohmann::json j = {{"data", req.data.describe()},
                            {"measure", "nll"},
                            {"rounds", res.rounds},
                            {"start_nll", res.start.measured},
                            {"best_nll", res.best.measured},
                            {"start_rules", core::rulesToJson(res.start.rules)},
                            {"best_rules", core::rulesToJson(res.best.rules)},
                            {"best_cost", res.best.cost},
                            {"best_proxy", res.best.proxy}};
        j["measured"] = nlohmann::json::array();
        for (const auto& c : res.measured)
            j["measured"].push_back({{"rules", core::describeRules(c.rules, run.experts)},
                                     {"cost", c.cost},
                                     {"error_proxy", c.proxy},
                                     {"nll", c.measured}});
        Q_EMIT refined(QString::fromStdString(j.dump()));
        return JobOutcome{};
    });
    return true;
}

} // namespace ladimo::gui
