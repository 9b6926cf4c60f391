// WorkbenchJob: runs one long core job (convert into a project; profile, evaluate or export its
// latest run; refine a policy of it by measurement) on a worker thread (QtConcurrent) with
// cooperative cancellation. Progress and per-layer results are emitted from the worker thread and
// reach receivers in the GUI thread as queued signals, never blocking the worker; progress is
// throttled to 20 per second. Owned by the GUI thread; the
// destructor cancels and waits. One job at a time.
#pragma once

#include <QFutureWatcher>
#include <QMetaType>
#include <QObject>
#include <QString>
#include <QVector>

#include <cstdint>
#include <functional>

#include "common/progress.h"
#include "store/project.h"

namespace ladimo::gui {

// Where tokens come from (core::DataSource): a token file, or samples of the dense model.
struct DataChoice {
    QString file;
    int64_t selfSample = 0; // > 0: sample this many tokens instead of reading `file`
    uint64_t seed = 1234;
    int64_t maxTokens = 0; // 0 = all of the file
};

// The settings of `ladimo convert`; the rest keep the core's defaults (core::ConvertSettings).
struct ConvertRequest {
    QString modelPath;   // the dense model folder
    QString projectFile; // *.ladimo, created when absent; a rerun with the same settings resumes
    int64_t experts = 32;
    int64_t sharedNeurons = 0;   // core::ConvertSettings::sharedNeurons: always-on neurons per layer
    int trainTopK = 0;           // 0: the most experts that fit in 75% of the FFN's parameters (core::trainTopKFor)
    int epochs = 10;             // core::DistillOptions::epochs
    int e2eSteps = 0;            // core::EndToEndOptions::steps (300 measured in the README: off by default)
    QString partition = "coact"; // recorded as given, like `ladimo convert --partition`
    QString gating = "hard";
    QString device = "auto";
    DataChoice data;
    QString calibrationJson; // the Calibration view's setting, stored in the project (core::kCalibrationSetting)
};

struct ProfileRequest {
    QString projectFile;
    DataChoice data;
    int64_t seqLen = 256;
    int bins = 20;
    int64_t sensitivityTokens = 8192; // 0 = skip the per-layer sensitivity
};

// `ladimo eval P.ladimo` from the window: the latest run under a rule, stored in the project.
struct EvaluateRequest {
    enum class Policy { Dense, UniformTopK, Stored };
    QString projectFile;
    DataChoice data;
    int64_t seqLen = 256;
    Policy policy = Policy::UniformTopK;
    int topK = 0;       // UniformTopK: experts per token in every layer (0: the training k)
    QString policyName; // Stored: the project's policy of this name
    bool timing = true; // measure prefill / decode time against the dense model
};

// `ladimo policy P.ladimo --budget-params F --refine-data FILE` from the Policy view: the
// measured refinement (core::refineProjectPolicy) of a policy of the latest run, each candidate
// scored by the converted model's held-out NLL. Nothing is stored; the view applies the result.
struct RefineRequest {
    QString projectFile;
    DataChoice data;
    int64_t seqLen = 256;
    QString startRules;      // core::rulesToJson of the policy to start from, as JSON text
    int cost = 0;            // core::CostKind of the budget
    double budget = 1;       // fraction of dense
    QString latencyDevice;   // whose latency model latency costs use ("" for parameter budgets)
    int maxEvaluations = 24; // as --refine-evals
    int perRound = 8;        // as --refine-per-round
};

// `ladimo export P.ladimo` from the window: writes the files and records the export.
struct ExportRequest {
    QString projectFile;
    QString format = "hf-mixtral"; // a name of core::exportFormats() (export/formats.h)
    QString out;                   // folder (absent or empty) or, for single-file formats, a file (absent)
    QString dtype = "f32";
    QString policyName; // empty: the training k in every layer
    int topK = 0;       // k for formats with one k for all layers; 0 = from a uniform static policy
};

// `ladimo run MODEL --out DIR` from the first screen (core::runPipeline): every step over one
// project with the Convert and Calibration views' settings; a rerun takes finished steps from it.
struct PipelineRequest {
    ConvertRequest convert; // its projectFile empty: OUT/project.ladimo
    QString outDir;         // the export and report.json
    double budgetParams = 0.75;
};

// What the Calibration view shows of its data: how many tokens, and the first of them decoded.
struct CalibrationPreview {
    qint64 tokens = 0;
    QString text;  // the first tokens, decoded (ids when the model has no tokenizer)
    QString error; // non-empty when the data could not be read
};
// Counts the tokens `data` yields for the model in `modelDir` and decodes the first `previewTokens`.
// A file is read as the conversion reads it; self-sampling is previewed on a short sample with the
// same seed (its count is the budget). Blocking: call it on a worker thread (QtConcurrent).
CalibrationPreview previewCalibration(const QString& modelDir, const DataChoice& data, int previewTokens = 48);

struct JobOutcome {
    bool cancelled = false;
    QString error; // empty: success (or cancelled)
};

class WorkbenchJob : public QObject {
    Q_OBJECT
public:
    explicit WorkbenchJob(QObject* parent = nullptr);
    ~WorkbenchJob() override;

    // False when a job is already running.
    bool startConversion(const ConvertRequest& request);
    bool startProfile(const ProfileRequest& request);
    bool startEvaluation(const EvaluateRequest& request);
    bool startExport(const ExportRequest& request);
    bool startRefine(const RefineRequest& request);
    bool startPipeline(const PipelineRequest& request);
    void cancel();
    bool isRunning() const { return m_watcher.isRunning(); }

Q_SIGNALS:
    void progressed(const QString& stage, double done, double total);
    // Conversion: the run was found (resumed) or started, as the project records it now.
    void runStarted(const ladimo::core::RunSnapshot& snapshot, bool resumed);
    void layerStarted(int layer);
    // Loss points of a layer in training, batched: at most 10 signals a second (the last points
    // of a layer come before its layerFinished).
    void lossPoints(int layer, const QVector<double>& steps, const QVector<double>& losses);
    void layerFinished(int layer, double finalLoss, double relativeError, double seconds, const QVector<double>& steps,
                       const QVector<double>& losses);
    // Pipeline: a step started or ended ("convert", "done: run #1, ..."), and at the end the
    // report as text (what `ladimo run` prints) and JSON (report.json), just before jobFinished.
    void pipelineStep(const QString& step, const QString& line);
    void pipelineReport(const QString& text, const QString& json);
    // Evaluation: the metrics recorded in the project (JSON text), just before jobFinished.
    void evaluated(const QString& metricsJson);
    // Export: the report (out, format, exact, notes, files, bytes, sha256, policy) as JSON text.
    void exported(const QString& reportJson);
    // Refinement: one measured candidate (0-based, in the order measured) with its rules as
    // describeRule text ("k4 k3 p0.90"), cost and error proxy estimates, and held-out NLL.
    void refineMeasured(int index, const QString& rules, double cost, double proxy, double nll);
    // Refinement: the result as JSON text, just before jobFinished: rounds, start_nll, best_nll,
    // start_rules and best_rules (rulesToJson), best_cost, best_proxy, and "measured" (rules text,
    // cost, error_proxy, nll, as the CLI's --json report).
    void refined(const QString& reportJson);
    void jobFinished(bool cancelled, const QString& error);

private:
    void start(std::function<JobOutcome(const core::CancelToken&)> work);
    core::ProgressFn throttledProgress();

    QFutureWatcher<JobOutcome> m_watcher;
    core::CancelToken m_cancel;
};

} // namespace ladimo::gui

Q_DECLARE_METATYPE(ladimo::core::RunSnapshot)
