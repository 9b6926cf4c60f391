#include "cliutil.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "common/error.h"
#include "common/fileutil.h"
#include "common/memory.h"
#include "project/convert.h"
#include "model/device.h"
#include "model/generate.h"
#include "model/tokendata.h"

namespace ladimo::cli {

void ModelOptions::add(CLI::App* cmd, bool positional)
{
    if (positional)
        cmd->add_option("model", path, "Model directory (Hugging Face layout)")->required();
    cmd->add_option("--device", device,
                    "cpu, cuda, cuda:N or auto (CUDA when available); convert takes a list, one worker per entry")
        ->capture_default_str();
    cmd->add_option("--dtype", dtype,
                    "Compute dtype: auto (float32 on CPU, bfloat16 on CUDA), float32, bfloat16, float16")
        ->capture_default_str();
    cmd->add_option("--memory-budget", memoryBudget,
                    "Memory the job may keep resident (weights, layer caches, activations), e.g. 8GB; "
                    "0 = half the available memory")
        ->capture_default_str();
    cmd->add_option("--weights", weights,
                    "auto (models over 1 GiB or half the budget are streamed layer by layer), resident or streamed")
        ->capture_default_str();
}

core::LoadOptions ModelOptions::loadOptions() const
{
    core::LoadOptions o;
    o.device = core::parseDevices(device).front(); // a device list: the model lives on the first
    o.dtype = core::parseComputeDType(dtype, o.device);
    o.residency = core::parseResidency(weights);
    o.memoryBudget = memoryBudget == "0" ? 0 : static_cast<std::uint64_t>(core::parseByteSize(memoryBudget));
    return o;
}

void addPeakRss(nlohmann::json& j) { j["peak_rss_bytes"] = core::peakRssBytes(); }

core::LlamaModel ModelOptions::load() const { return core::LlamaModel::load(path, loadOptions()); }

void DataOptions::add(CLI::App* cmd)
{
    auto* d = cmd->add_option("--data", file, "Token data: .txt, .u16, .u32 or .jsonl");
    auto* s = cmd->add_option("--self-sample", selfSample,
                              "Data-free: sample N tokens from the dense model itself (temperature 1, BOS-led)");
    d->excludes(s);
    cmd->add_option("--seed", seed, "Seed for --self-sample")->capture_default_str();
    cmd->add_option("--max-tokens", maxTokens, "Use at most N tokens of the data (0 = all)")->capture_default_str();
}

core::DataSource DataOptions::source() const { return {file, selfSample, seed, maxTokens}; }

std::string DataOptions::describe() const { return source().describe(); }

std::vector<int64_t> DataOptions::load(const core::LlamaModel& model, const core::Tokenizer* tokenizer, int64_t seqLen,
                                       const core::ProgressFn& progress) const
{
    return source().load(model, tokenizer, seqLen, progress, interruptToken());
}

core::ProgressFn ProgressPrinter::fn()
{
    // A terminal gets one line rewritten up to 5 times a second; a file or pipe (a log, a batch
    // job) a line of its own every 5 seconds, and the last step of each stage.
    const bool terminal = ::isatty(STDERR_FILENO) == 1;
    return [this, terminal](const std::string& stage, double done, double total) {
        const auto now = std::chrono::steady_clock::now();
        const double elapsed = std::chrono::duration<double>(now - m_start).count();
        const double eta
            = m_clock.secondsLeft(stage, done, total, now); // every report: a stage's pace starts at its first
        const auto every = terminal ? std::chrono::milliseconds(200) : std::chrono::milliseconds(5000);
        if (elapsed < 1.0 || (now - m_last < every && done < total))
            return;
        m_last = now;
        m_printed = terminal;
        char left[48] = "";
        if (eta >= 0)
            std::snprintf(left, sizeof left, ", ~%.0fs left", eta);
        std::fprintf(stderr,
                     terminal ? "\r%s %.0f/%.0f (%.0f%%, %.0fs elapsed%s)   "
                              : "%s %.0f/%.0f (%.0f%%, %.0fs elapsed%s)\n",
                     stage.c_str(), done, total, total > 0 ? 100.0 * done / total : 0.0, elapsed, left);
        std::fflush(stderr);
    };
}

ProgressPrinter::~ProgressPrinter()
{
    if (m_printed)
        std::fprintf(stderr, "\n");
}

namespace {
std::atomic<bool>* g_interrupted = nullptr;

extern "C" void onInterrupt(int sig)
{
    if (g_interrupted)
        g_interrupted->store(true);
    std::signal(sig, SIG_DFL); // the next one terminates at once
}
} // namespace

const core::CancelToken& interruptToken()
{
    static const core::CancelToken token;
    return token;
}

void installInterruptHandler()
{
    static_assert(std::atomic<bool>::is_always_lock_free, "signal-safe flag");
    g_interrupted = interruptToken().flag();
    std::signal(SIGINT, onInterrupt);
    std::signal(SIGTERM, onInterrupt);
}

std::set<int> parseLayerSpec(const std::string& spec, int layers)
{
    const auto bad = [&](const std::string& why) {
        return core::Error("--layers '" + spec + "': " + why + " (expected A, A-B or a list like 0-3,6 within 0-"
                           + std::to_string(layers - 1) + ")");
    };
    const auto number = [&](const std::string& text) {
        if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos || text.size() > 9)
            throw bad("'" + text + "' is not a layer number");
        const int v = std::stoi(text);
        if (v >= layers)
            throw bad("layer " + text + " does not exist, the model has " + std::to_string(layers) + " layers");
        return v;
    };
    std::set<int> out;
    std::size_t start = 0;
    while (start <= spec.size()) {
        const std::size_t comma = spec.find(',', start);
        const std::string part = spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        const std::size_t dash = part.find('-');
        const int a = number(part.substr(0, dash));
        const int b = dash == std::string::npos ? a : number(part.substr(dash + 1));
        if (b < a)
            throw bad("range " + part + " runs backwards");
        for (int l = a; l <= b; ++l)
            out.insert(l);
        if (comma == std::string::npos)
            break;
        start = comma + 1;
    }
    return out;
}

std::string describeLayers(const std::set<int>& layers)
{
    std::string out;
    for (auto it = layers.begin(); it != layers.end();) {
        int a = *it, b = a;
        while (++it != layers.end() && *it == b + 1)
            ++b;
        out += (out.empty() ? "" : ",") + std::to_string(a) + (b > a ? "-" + std::to_string(b) : "");
    }
    return out;
}

core::CalibrationSet calibrationRecord(const DataOptions& data, const std::vector<int64_t>& tokens, int64_t seqLen)
{
    return data.source().record(tokens, seqLen);
}

} // namespace ladimo::cli
