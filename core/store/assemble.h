// Scale-out of a conversion run over many processes or machines that share the project folder.
//
// Design: the SQLite file keeps exactly one writer (the lifetime flock of project.h); workers
// never write it. A run is created once by a writer (`ladimo convert ... --prepare`); then any
// number of workers (`ladimo convert ... --layers A-B`, on any machine that mounts the folder)
// open the project read-only, find that run by its settings and, for every layer they finish,
// write two files atomically (temporary file + fsync + rename, fileutil.h):
//   runs/R/layer-LLL.safetensors     the MoE layer's weights (as a single-process run writes them)
//   runs/R/layer-LLL.outcome.json    the sidecar: run id, layer, settings fingerprint, SHA-256 of
//                                    the weights file, final loss, relative error, wall seconds,
//                                    loss curve, host and pid of the worker
// The weights file is renamed into place before its sidecar, so a sidecar never names a file
// that is not (yet) there; a reader seeing a sidecar checks the weights' SHA-256 anyway.
// Workers with disjoint layer ranges touch disjoint files; overlapping ranges are wasted work,
// not corruption (a layer's result is deterministic and each rename is atomic).
// Finally `ladimo assemble P.ladimo` (a writer) verifies every sidecar against its weights file
// and the run's settings fingerprint, and records all layers at once; any mismatch (tampered
// or truncated weights, a sidecar from other settings or another run) refuses the whole
// assembly with an error naming the layer and the file, recording nothing.
//
// Workers hold a shared flock on `P.ladimo.d/workers.lock` while they run, so a writer that
// opens the project meanwhile does not sweep away their in-flight temporary files (see
// Project::removeStaleTemporaryFiles). flock works across NFS clients on Linux (lockd).
//
// Thread-safety: free functions over a Project (one thread per Project, as project.h says);
// WorkerLock is a move-only RAII handle.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store/project.h"
#include "store/records.h"

namespace ladimo::core {

// What a worker knows about a finished layer (the sidecar's content).
struct LayerSidecar {
    int64_t runId = 0;
    int layer = 0;
    std::string fingerprint; // runFingerprint() of the settings the worker ran with
    LayerOutcome outcome;    // weightsPath relative to the project folder, weightsSha256 set
    LossCurve curve;
    std::string host;
    int64_t pid = 0;
    std::string finished; // ISO-8601 UTC
};

// runs/R/layer-LLL.outcome.json
std::string layerSidecarPath(int64_t runId, int layer);

// SHA-256 over the dense model's weights checksum and the run's settings (ConversionRun::extra):
// the same for every process converting the same model with the same settings.
std::string runFingerprint(const std::string& modelWeightsSha256, const nlohmann::json& settings);

// Writes the sidecar atomically (the weights file must already be in place).
void writeLayerSidecar(const Project& project, const LayerSidecar& sidecar);
// The sidecar of a layer, or nothing when there is none. Throws Error naming the file when it
// is not a valid sidecar of that run and layer.
std::optional<LayerSidecar> readLayerSidecar(const Project& project, int64_t runId, int layer);

// Shared lock on P.ladimo.d/workers.lock for a worker's lifetime (see the header comment).
class WorkerLock {
public:
    explicit WorkerLock(const std::filesystem::path& dataDir);
    WorkerLock(WorkerLock&& o) noexcept;
    WorkerLock& operator=(WorkerLock&&) = delete;
    WorkerLock(const WorkerLock&) = delete;
    ~WorkerLock();
    // Runs `fn` while holding workers.lock exclusively (no worker can start meanwhile) and
    // returns true; returns false without running it when some worker holds the lock.
    static bool whileNoWorkers(const std::filesystem::path& dataDir, const std::function<void()>& fn);

private:
    int m_fd = -1;
};

struct AssembleReport {
    std::vector<int> recorded;    // layers recorded from sidecars now
    std::vector<int> alreadyDone; // layers the project had recorded before
    std::vector<int> missing;     // layers with neither (still to convert)
    bool runFinished = false;     // every layer is done now and the run is marked done
};

// Verifies every sidecar of the run (weights SHA-256, fingerprint, run id, layer, paths) and
// records them all; throws Error naming the first bad layer and recording nothing when any is
// wrong. Layers already done in the project are left alone. Marks the run done when no layer
// is missing. Needs a writable project.
AssembleReport assembleRun(Project& project, int64_t runId);

} // namespace ladimo::core
