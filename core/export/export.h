// Export of a (converted) model to formats other tools load. Shared input/option types of the
// exporters: Hugging Face Mixtral layout (export/hf_mixtral.h) and GGUF v3 for llama.cpp
// (export/gguf.h). Writers are atomic: everything goes to temporary names next to the
// destination and is renamed into place at the end; a failed or cancelled export leaves nothing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fileutil.h"
#include "common/progress.h"
#include "model/llama.h"
#include "moe/moelayer.h"
#include "routing/policy.h"

namespace ladimo::core {

struct ExportInput {
    std::filesystem::path modelDir;                // the dense source model (config.json, tokenizer files)
    const LlamaModel* model = nullptr;             // dense weights: embeddings, attention, norms, head (and FFNs)
    const std::vector<MoeLayer>* layers = nullptr; // converted FFNs, one per layer; nullptr: dense export
    PolicyRules rules;                             // the per-layer policy (empty for a dense export)
    std::string policyName;
    nlohmann::json conversion; // the conversion run's settings, recorded for a re-import (may be null)
};

struct ExportOptions {
    std::filesystem::path out; // directory (hf-mixtral) or file (gguf)
    std::string dtype = "f32"; // f32 | bf16 | f16 (gguf: f32 | f16)
    int64_t shardBytes = 0;    // hf-mixtral: 0 = one file
    int expertsPerToken = 0;   // k written for tools with one k for all layers; 0 = from a uniform static policy
    ProgressFn progress;
    CancelToken cancel;
    std::function<void(const std::string& line)> log; // notes for the user's log (stale temporaries removed)
};

// Removes what exports of `out` killed earlier left next to it (removeStaleTemporaries: only
// ".NAME.tmp-PID-HEX" of dead processes) and says so through options.log.
inline void removeStaleExportTemporaries(const std::filesystem::path& out, const ExportOptions& options)
{
    for (const auto& p : removeStaleTemporaries(out))
        if (options.log)
            options.log("removed '" + p.string() + "', left by an export of '" + out.string()
                        + "' that was killed (its process is gone)");
}

// Runs an exporter's writing part; an Error (a full disk, say) comes out naming the destination.
inline void writeExport(const std::filesystem::path& out, const std::function<void()>& write)
{
    try {
        write();
    } catch (const Cancelled&) {
        throw;
    } catch (const Error& e) {
        throw Error("export to '" + out.string() + "' failed, nothing was left there: " + e.what());
    }
}

// Throws an Error naming `where` when m's always-on neurons are not shared_gate/up [M, H] and
// shared_down [H, M] (export/hf_mixtral.cpp; nothing to check without shared neurons).
void requireSharedNeuronShapes(const MoeLayer& m, int64_t hidden, const std::string& where);

// What an export wrote and whether the target format computes exactly what the workbench does.
struct ExportReport {
    bool exact = true;
    std::vector<std::string> notes;           // plain-language differences when not exact
    std::vector<std::filesystem::path> files; // final paths
    int64_t bytes = 0;
    int expertsPerToken = 0; // the k written (converted models)
    std::string sha256;      // SHA-256 of the manifest "file sha256\n" of every file, sorted
};

} // namespace ladimo::core
