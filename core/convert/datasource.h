// What a conversion is made from: the dense model's record (config, parameter counts, weights
// checksum) and the token data (a token or text file, or samples of the dense model). Shared by
// every command that reads calibration or evaluation data.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "store/records.h"

namespace ladimo::core {

// A project's source-model record for a dense model folder (config, weights checksum, counts).
// Without `checksum` the weightsSha256 stays empty (a dry run reads no weights at all).
SourceModel describeSourceModel(const std::string& modelDir, bool checksum = true);
// One checksum for a model's weights: the SHA-256 of the single *.safetensors file, or for a
// sharded checkpoint the SHA-256 of its `sha256sum`-style listing ("<hex>  <name>\n", by name).
std::string weightsChecksum(const std::filesystem::path& modelDir);

// Where calibration / evaluation tokens come from: a token file, or samples of the dense model.
struct DataSource {
    std::string file;
    int64_t selfSample = 0; // > 0: sample this many tokens from the model instead of `file`
    uint64_t seed = 1234;
    int64_t maxTokens = 0; // 0 = all
    // Recorded in the run's settings ("data"): part of what makes two runs the same.
    nlohmann::json toJson() const;
    // The inverse of toJson() (a run's settings "data"); names the key it misses.
    static DataSource fromJson(const nlohmann::json& j);
    std::string describe() const; // "file F" / "self-sample N, seed S" (+ ", first N tokens")
    std::vector<int64_t> load(const LlamaModel& model, const Tokenizer* tokenizer, int64_t seqLen,
                              const ProgressFn& progress, CancelToken cancel) const;
    // The calibration-set record of `tokens` loaded from this source.
    CalibrationSet record(const std::vector<int64_t>& tokens, int64_t seqLen) const;
};

} // namespace ladimo::core
