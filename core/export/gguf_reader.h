// Reading back a GGUF v2/v3 file of llama.cpp's "llama" architecture, as `ladimo export --format
// gguf | gguf-llama` writes it (F32, F16 or BF16 tensors; quantised types are refused with an
// Error naming the tensor): the dense model, and for a converted model its MoE blocks and the
// routing policy recorded under "ladimo.routing_policy" (else llama.cpp's semantics: one top-k
// with renormalised softmax weights). Used by `ladimo eval` / `generate` on an export.
// Every malformed field is an Error naming the file and the key or tensor.
#pragma once

#include <filesystem>

#include "export/hf_mixtral.h" // LoadedMixtral

namespace ladimo::core {

// True when `path` is a regular file that starts with the GGUF magic.
bool isGgufFile(const std::filesystem::path& path);

// The model (resident, in options.dtype on options.device) and, when the file holds experts,
// one MoeLayer per layer with the recorded policy; `layers` is empty for a dense file.
LoadedMixtral loadGguf(const std::filesystem::path& file, const LoadOptions& options = {});

} // namespace ladimo::core
