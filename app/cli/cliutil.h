// Shared pieces of the `ladimo` subcommands: model loading options, data options
// (--data FILE | --self-sample N), and progress on stderr for anything that takes > 1 s.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "common/progress.h"
#include "common/stageclock.h"
#include "convert/latestrun.h"
#include "project/convert.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "moe/moelayer.h"
#include "store/project.h"
#include "store/records.h"

#include <nlohmann/json.hpp>

namespace ladimo::cli {

struct ModelOptions {
    std::string path;
    std::string device = "auto";
    std::string dtype = "auto";
    std::string memoryBudget = "0"; // --memory-budget, "0": the default (half the available memory)
    std::string weights = "auto";   // --weights auto | resident | streamed
    void add(CLI::App* cmd, bool positional = true);
    // Device (the first of a list), compute dtype, residency and memory budget.
    core::LoadOptions loadOptions() const;
    core::LlamaModel load() const;
};

// The peak resident set size of the process so far, added to a command's --json output.
void addPeakRss(nlohmann::json& j);

struct DataOptions {
    std::string file;
    int64_t selfSample = 0;
    uint64_t seed = 1234;
    int64_t maxTokens = 0;
    void add(CLI::App* cmd);
    core::DataSource source() const;
    // What the data is, for records: "file F (N tokens max)" or "self-sample N, seed S".
    std::string describe() const;
    // Reads / samples the token stream; `seqLen` sets the self-sampled sequence length.
    std::vector<int64_t> load(const core::LlamaModel& model, const core::Tokenizer* tokenizer, int64_t seqLen,
                              const core::ProgressFn& progress) const;
};

// Prints "stage done/total (elapsed, time left in the stage)" on stderr only after the job has run
// for a second (so quick commands stay quiet): on a terminal one line rewritten at most 5 times a
// second, into a file or pipe a line every 5 seconds (and each stage's last step).
class ProgressPrinter {
public:
    core::ProgressFn fn();
    ~ProgressPrinter();

private:
    std::chrono::steady_clock::time_point m_start = std::chrono::steady_clock::now();
    std::chrono::steady_clock::time_point m_last{};
    core::StageClock m_clock; // "~Ns left" from the stage's own pace, not the job's
    bool m_printed = false;
};

// The process-wide cancel token: Ctrl-C (SIGINT) or SIGTERM cancels it, long jobs stop at the
// next batch boundary and leave their project consistent. A second Ctrl-C kills as usual.
const core::CancelToken& interruptToken();
void installInterruptHandler();

// A project's source-model record for a dense model folder (config, weights checksum, counts).
core::SourceModel describeSourceModel(const std::string& modelDir);

// The latest conversion run of a project (`ladimo convert --project`): its dense model and every
// MoE layer. Throws Error naming the unfinished layers when the run is incomplete.
struct Converted {
    core::LlamaModel model;
    core::MoeLayers layers;
    nlohmann::json settings;
    int64_t runId = 0;
    std::string modelPath;
};
bool isProjectFile(const std::string& path);
Converted loadConverted(const std::string& projectFile, const ModelOptions& modelOptions);
// What the messages of core::loadLatestRun tell a CLI user to do.
core::LatestRunHints convertedHints(const std::string& projectFile);

// `--layers` of convert and capture: "A", "A-B" or a comma-separated list of them ("0-3,6"),
// each within [0, layers). Throws Error naming the spec and what was expected.
std::set<int> parseLayerSpec(const std::string& spec, int layers);
std::string describeLayers(const std::set<int>& layers); // "0-3,6"

// The calibration-set record of data loaded with `data` (tokens, window length).
core::CalibrationSet calibrationRecord(const DataOptions& data, const std::vector<int64_t>& tokens, int64_t seqLen);
// core::findCalibrationSet (project/convert.h) finds a recorded calibration set.

} // namespace ladimo::cli
