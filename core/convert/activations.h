// Captured FFN activations of one layer on disk (`ladimo capture`): X (the FFN input) and Y (the
// dense FFN output), float32 [tokens, H], in one safetensors file written atomically, tagged
// with what they were captured from (dense weights checksum, calibration token stream checksum,
// window length, layer). A conversion reuses a file only when all of these match, so captures
// of another model or other data in the same project folder are never mistaken for its own.
// Free functions; thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <torch/types.h>

namespace ladimo::core {

struct CaptureKey {
    std::string modelSha256;  // SourceModel::weightsSha256 of the dense model
    std::string tokensSha256; // tokenStreamSha256() of the calibration tokens
    int64_t seqLen = 0;
};

// SHA-256 of the token ids as little-endian int64.
std::string tokenStreamSha256(const std::vector<int64_t>& tokens);

void saveActivations(const std::filesystem::path& file, int layer, const torch::Tensor& x, const torch::Tensor& y,
                     const CaptureKey& key);

// Loads X and Y (zero-copy views of the mapped file) when `file` holds this layer captured
// under `key`. Returns false with the reason in `whyNot` when the file is absent or was captured
// from something else; throws Error when it is not a valid activations file.
bool loadActivations(const std::filesystem::path& file, int layer, const CaptureKey& key, torch::Tensor* x,
                     torch::Tensor* y, std::string* whyNot);

} // namespace ladimo::core
