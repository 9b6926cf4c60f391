// Small file helpers used by every writer in the core: atomic replacement (write to a temporary
// sibling, fsync, rename) so nothing already on disk is lost or half-written, and content
// checksums. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

namespace ladimo::core {

// Calls `write(tmpPath)` to produce the file under a temporary name in the same folder, fsyncs
// it, then renames it over `target`. On any exception the temporary file is removed and
// `target` is untouched.
void atomicWriteFile(const std::filesystem::path& target,
                     const std::function<void(const std::filesystem::path& tmp)>& write);

// Same, for a whole in-memory payload.
void atomicWriteFile(const std::filesystem::path& target, const std::string& bytes);

// Caps on what a (possibly hostile) JSON file may make us read into memory before it is parsed
// and validated. Real files are orders of magnitude smaller.
constexpr std::uint64_t kMaxConfigJsonBytes = 16ull << 20;  // config.json, routing policies
constexpr std::uint64_t kMaxIndexJsonBytes = 256ull << 20;  // model.safetensors.index.json
constexpr std::uint64_t kMaxTextFileBytes = 4ull << 30;     // default of readTextFile

// Reads a whole (small) file; throws Error naming the file when it cannot, or when it is larger
// than `maxBytes` (checked before anything is read).
std::string readTextFile(const std::filesystem::path& file, std::uint64_t maxBytes = kMaxTextFileBytes);

// Lower-case hex SHA-256 of a file's content / of a byte range.
std::string sha256File(const std::filesystem::path& file);
std::string sha256Bytes(const void* data, std::size_t size);

} // namespace ladimo::core
