#include "store/assemble.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "common/fileutil.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

constexpr const char* kSidecarFormat = "ladimo-layer-outcome-1";

int openLockFile(const fs::path& dataDir)
{
    std::error_code ec;
    fs::create_directories(dataDir, ec);
    const fs::path lock = dataDir / "workers.lock";
    const int fd = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        throw Error("cannot open '" + lock.string() + "': " + std::strerror(errno));
    return fd;
}

} // namespace

std::string layerSidecarPath(int64_t runId, int layer)
{
    std::string p = Project::layerWeightsPath(runId, layer);
    const std::string ext = ".safetensors";
    return p.substr(0, p.size() - ext.size()) + ".outcome.json";
}

std::string runFingerprint(const std::string& modelWeightsSha256, const nlohmann::json& settings)
{
    // nlohmann's dump() sorts object keys, so equal settings give equal bytes.
    const std::string text = modelWeightsSha256 + "\n" + settings.dump();
    return sha256Bytes(text.data(), text.size());
}

void writeLayerSidecar(const Project& project, const LayerSidecar& s)
{
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& p : s.curve)
        curve.push_back({p.step, p.loss});
    const nlohmann::json j = {{"format", kSidecarFormat},
                              {"run_id", s.runId},
                              {"layer", s.layer},
                              {"fingerprint", s.fingerprint},
                              {"weights_path", s.outcome.weightsPath},
                              {"weights_sha256", s.outcome.weightsSha256},
                              {"final_loss", s.outcome.finalLoss},
                              {"relative_error", s.outcome.relativeError},
                              {"wall_seconds", s.outcome.wallSeconds},
                              {"loss_curve", curve},
                              {"host", s.host},
                              {"pid", s.pid},
                              {"finished", s.finished}};
    atomicWriteFile(project.prepareFile(layerSidecarPath(s.runId, s.layer)), j.dump(1) + "\n");
}

std::optional<LayerSidecar> readLayerSidecar(const Project& project, int64_t runId, int layer)
{
    const fs::path file = project.absolutePath(layerSidecarPath(runId, layer));
    std::error_code ec;
    if (!fs::exists(file, ec))
        return std::nullopt;
    const auto bad = [&](const std::string& why) {
        return Error("layer " + std::to_string(layer) + ": '" + file.string() + "' " + why);
    };
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(readTextFile(file, kMaxConfigJsonBytes));
    } catch (const nlohmann::json::exception& e) {
        throw bad(std::string("is not valid JSON: ") + e.what());
    }
    LayerSidecar s;
    try {
        if (j.value("format", "") != kSidecarFormat)
            throw bad(std::string("is not a layer outcome file (expected format '") + kSidecarFormat + "')");
        s.runId = j.at("run_id").get<int64_t>();
        s.layer = j.at("layer").get<int>();
        s.fingerprint = j.at("fingerprint").get<std::string>();
        s.outcome.weightsPath = j.at("weights_path").get<std::string>();
        s.outcome.weightsSha256 = j.at("weights_sha256").get<std::string>();
        s.outcome.finalLoss = j.at("final_loss").get<double>();
        s.outcome.relativeError = j.at("relative_error").get<double>();
        s.outcome.wallSeconds = j.at("wall_seconds").get<double>();
        for (const auto& p : j.at("loss_curve"))
            s.curve.push_back({p.at(0).get<int64_t>(), p.at(1).get<double>()});
        s.host = j.value("host", "");
        s.pid = j.value("pid", int64_t{0});
        s.finished = j.value("finished", "");
    } catch (const nlohmann::json::exception& e) {
        throw bad(std::string("is missing a field or has a wrong type: ") + e.what());
    }
    if (s.runId != runId || s.layer != layer)
        throw bad("belongs to run " + std::to_string(s.runId) + " layer " + std::to_string(s.layer) + ", expected run "
                  + std::to_string(runId) + " layer " + std::to_string(layer));
    if (s.outcome.weightsPath != Project::layerWeightsPath(runId, layer))
        throw bad("names weights file '" + s.outcome.weightsPath + "', expected '"
                  + Project::layerWeightsPath(runId, layer) + "'");
    return s;
}

WorkerLock::WorkerLock(const fs::path& dataDir) : m_fd(openLockFile(dataDir))
{
    // Shared: any number of workers; blocks only while a writer sweeps temporaries (an instant).
    if (::flock(m_fd, LOCK_SH) != 0) {
        const std::string why = std::strerror(errno);
        ::close(m_fd);
        throw Error("cannot lock '" + (dataDir / "workers.lock").string() + "': " + why);
    }
}

WorkerLock::WorkerLock(WorkerLock&& o) noexcept : m_fd(o.m_fd) { o.m_fd = -1; }

WorkerLock::~WorkerLock()
{
    if (m_fd >= 0)
        ::close(m_fd); // releases the flock
}

bool WorkerLock::whileNoWorkers(const fs::path& dataDir, const std::function<void()>& fn)
{
    const int fd = openLockFile(dataDir);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        return false;
    }
    try {
        fn();
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    return true;
}

AssembleReport assembleRun(Project& project, int64_t runId)
{
    if (!project.writable())
        throw Error("cannot assemble: project '" + project.file().string() + "' is open read-only");
    const auto run = project.run(runId);
    const std::string expected = runFingerprint(project.model(run.modelId).weightsSha256, run.extra);
    AssembleReport report;
    std::vector<LayerSidecar> todo;
    // Check everything first: a bad layer must not leave the project half assembled.
    for (const auto& l : project.layers(runId)) {
        if (l.status == LayerStatus::Done) {
            report.alreadyDone.push_back(l.layer);
            continue;
        }
        auto s = readLayerSidecar(project, runId, l.layer);
        if (!s) {
            report.missing.push_back(l.layer);
            continue;
        }
        const fs::path weights = project.absolutePath(s->outcome.weightsPath);
        const std::string where = "layer " + std::to_string(l.layer) + ": ";
        if (s->fingerprint != expected)
            throw Error(where + "'" + project.absolutePath(layerSidecarPath(runId, l.layer)).string()
                        + "' was produced with other settings or another model (fingerprint " + s->fingerprint
                        + ", run #" + std::to_string(runId) + " expects " + expected
                        + "); delete it and rerun that layer with the run's settings");
        std::error_code ec;
        if (!fs::is_regular_file(weights, ec))
            throw Error(where + "weights file '" + weights.string() + "' named by its outcome file does not exist");
        const std::string actual = sha256File(weights);
        if (actual != s->outcome.weightsSha256)
            throw Error(where + "weights file '" + weights.string() + "' has SHA-256 " + actual
                        + " but its outcome file records " + s->outcome.weightsSha256
                        + " (modified or truncated after the worker wrote it); delete both files and rerun the layer");
        todo.push_back(std::move(*s));
    }
    for (const auto& s : todo) {
        project.finishLayer(runId, s.layer, s.outcome, s.curve);
        report.recorded.push_back(s.layer);
    }
    report.runFinished = report.missing.empty();
    if (report.runFinished)
        project.setRunStatus(runId, RunStatus::Done);
    return report;
}

} // namespace ladimo::core
