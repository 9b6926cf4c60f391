// Scratch space for data too large to keep in memory (captured activations of big models):
// tensors backed by a file in a chosen folder, mapped shared and unlinked at once, so the kernel
// pages them to that disk instead of swap, and nothing is left behind however the process ends.
// Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>

#include <torch/types.h>

namespace ladimo::core {

// An uninitialised CPU tensor of `shape` and `dtype` whose memory is a file in `dir`. The disk
// blocks are reserved up front, so a full disk is an Error naming the folder now rather than a
// fault when a page is first written.
torch::Tensor fileBackedTensor(const std::filesystem::path& dir, at::IntArrayRef shape, torch::ScalarType dtype);

// Physical memory the system could give this process now (MemAvailable), in bytes; 0 if unknown.
std::uint64_t availableMemoryBytes();

} // namespace ladimo::core
