// Small file helpers used by every writer in the core: atomic replacement (write to a temporary
// sibling, fsync, rename) so nothing already on disk is lost or half-written, and content
// checksums. Thread-safe (no shared state).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace ladimo::core {

// A file being written under its temporary name by atomicWriteOutput. Every byte the core's
// writers put on disk goes through write(), so a full disk (or any write error) is reported the
// same way everywhere, naming the file the caller asked for, and can be simulated
// (injectDiskFullAfter).
class OutputFile {
public:
    OutputFile(const std::filesystem::path& tmp, const std::filesystem::path& target);
    ~OutputFile();
    OutputFile(const OutputFile&) = delete;
    OutputFile& operator=(const OutputFile&) = delete;
    // Throws Error "cannot write 'TARGET': disk full (...)" on ENOSPC / EDQUOT, else with the reason.
    void write(const void* data, std::size_t n);
    uint64_t written() const { return m_written; }
    void close(); // flushes and closes; throws as write() does

private:
    [[noreturn]] void fail(int err) const;
    std::FILE* m_file = nullptr;
    std::filesystem::path m_target;
    uint64_t m_written = 0;
};

// Calls `write(tmpPath)` to produce the file under a temporary name in the same folder, fsyncs
// it, then renames it over `target`. On any exception the temporary file is removed and
// `target` is untouched.
void atomicWriteFile(const std::filesystem::path& target,
                     const std::function<void(const std::filesystem::path& tmp)>& write);

// Same, writing through an OutputFile (closed and checked before the rename).
void atomicWriteOutput(const std::filesystem::path& target, const std::function<void(OutputFile& out)>& write);

// Same, for a whole in-memory payload.
void atomicWriteFile(const std::filesystem::path& target, const std::string& bytes);

// The temporary sibling name of `target` this process uses: ".NAME.tmp-PID-HEX" in its folder
// (files of atomicWriteFile, folders of the HF exporter).
std::filesystem::path temporarySibling(const std::filesystem::path& target);

// Temporary siblings of `target` (exactly ".NAME.tmp-PID-HEX", nothing else) left by a writer
// that was killed: those whose process is no longer alive are removed (files and folders) and
// their paths returned. Live writers' temporaries are left alone.
std::vector<std::filesystem::path> removeStaleTemporaries(const std::filesystem::path& target);

// Tests only (fault injection): after `bytes` more bytes written through OutputFile in this
// process, every write fails as on a full disk (ENOSPC), part-way through the write that crosses
// the limit; negative turns it off. The environment variable LADIMO_FAULT_DISK_FULL_AFTER (bytes)
// sets it at start-up, for tests of the `ladimo` program.
void injectDiskFullAfter(int64_t bytes);
struct DiskFullInjection { // injectDiskFullAfter for a scope (tests)
    explicit DiskFullInjection(int64_t bytes) { injectDiskFullAfter(bytes); }
    ~DiskFullInjection() { injectDiskFullAfter(-1); }
    DiskFullInjection(const DiskFullInjection&) = delete;
    DiskFullInjection& operator=(const DiskFullInjection&) = delete;
};

// Caps on what a (possibly hostile) JSON file may make us read into memory before it is parsed
// and validated. Real files are orders of magnitude smaller.
constexpr std::uint64_t kMaxConfigJsonBytes = 16ull << 20; // config.json, routing policies
constexpr std::uint64_t kMaxIndexJsonBytes = 256ull << 20; // model.safetensors.index.json
constexpr std::uint64_t kMaxTextFileBytes = 4ull << 30;    // default of readTextFile

// Reads a whole (small) file; throws Error naming the file when it cannot, or when it is larger
// than `maxBytes` (checked before anything is read).
std::string readTextFile(const std::filesystem::path& file, std::uint64_t maxBytes = kMaxTextFileBytes);

// Reads a text file line by line with a cap on a line's length: a hostile file (one huge line)
// fails with an Error naming the file and the line before more than `maxLineBytes` is held.
class LineReader {
public:
    // `what` names the kind of file in the error when it cannot be opened ("token file").
    LineReader(const std::filesystem::path& file, std::size_t maxLineBytes, const std::string& what);
    // The next line, without its '\n'; false at the end of the file.
    bool next(std::string& line);
    int64_t lineNo() const { return m_lineNo; }
    std::string where() const; // "FILE:LINE" of the last line read

private:
    std::ifstream m_in;
    std::filesystem::path m_file;
    std::size_t m_max;
    int64_t m_lineNo = 0;
};

// Lower-case hex SHA-256 of a file's content / of a byte range.
std::string sha256File(const std::filesystem::path& file);

// Reads exactly `size` bytes at `offset` of an open file (pread, retried on EINTR and short
// reads); throws Error "cannot read WHAT from FILE: reason" (end of file: truncated?).
void preadFully(int fd, void* dst, std::uint64_t size, std::uint64_t offset, const std::string& what,
                const std::filesystem::path& file);
std::string sha256Bytes(const void* data, std::size_t size);

} // namespace ladimo::core
