// Safetensors reader and writer, written against the format specification
// (8-byte little-endian header length, JSON header, raw little-endian data).
// The reader is strict: every violation is an Error naming the file and tensor. The file is
// memory-mapped; tensors returned by SafetensorsFile::tensor() are zero-copy CPU views that keep
// the mapping alive (copy-on-write, so writing to them never touches the file).
// A SafetensorsFile is immutable after open(); its methods may be called from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

namespace ladimo::core {

enum class StDType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtypeName(StDType d);
std::size_t dtypeSize(StDType d);

struct StTensorInfo {
    std::string name;
    StDType dtype = StDType::F32;
    std::vector<int64_t> shape;
    uint64_t begin = 0; // offsets relative to the start of the data section
    uint64_t end = 0;
    int64_t numel() const;
};

class SafetensorsFile {
public:
    // Limits on what a (possibly hostile) header may make us allocate.
    static constexpr uint64_t kMaxHeaderBytes = 100ull << 20;
    static constexpr std::size_t kMaxTensors = 1u << 20;
    static constexpr std::size_t kMaxRank = 8;

    static std::shared_ptr<SafetensorsFile> open(const std::filesystem::path& file);
    // Validates a header + data size without a file (used by open and by the fuzz target).
    static std::vector<StTensorInfo> parseHeader(const std::string& headerJson, uint64_t dataSize,
                                                 const std::string& source,
                                                 std::map<std::string, std::string>* metadata);

    ~SafetensorsFile();
    SafetensorsFile(const SafetensorsFile&) = delete;
    SafetensorsFile& operator=(const SafetensorsFile&) = delete;

    const std::filesystem::path& path() const { return m_path; }
    const std::vector<StTensorInfo>& tensors() const { return m_tensors; }
    const std::map<std::string, std::string>& metadata() const { return m_metadata; }
    const StTensorInfo* find(const std::string& name) const;
    // CPU tensor in the file's dtype; throws Error if the name is absent. A zero-copy view of the
    // mapping: its pages count in the resident set once touched, for as long as the file is open.
    torch::Tensor tensor(const std::string& name) const;
    // A fresh CPU tensor in the file's dtype read with pread(), rows [rowBegin, rowBegin + rows)
    // of the first dimension (rows < 0: to the end): nothing of the file stays resident after the
    // tensor is freed (the kernel's page cache is not this process's memory). With `pinned` the
    // buffer is page-locked host memory (fast, asynchronous copies to CUDA).
    torch::Tensor read(const std::string& name, int64_t rowBegin = 0, int64_t rows = -1, bool pinned = false) const;

private:
    SafetensorsFile() = default;
    std::filesystem::path m_path;
    std::vector<StTensorInfo> m_tensors;
    std::map<std::string, std::size_t> m_index;
    std::map<std::string, std::string> m_metadata;
    int m_fd = -1;             // kept open for read()
    uint64_t m_dataOffset = 0; // file offset of the data section
    void* m_map = nullptr;
    std::size_t m_mapSize = 0;
    const uint8_t* m_data = nullptr; // start of the data section
    std::weak_ptr<SafetensorsFile> m_self;
};

torch::ScalarType toTorch(StDType d);
StDType fromTorch(torch::ScalarType t);

// Writes tensors (any device / dtype of the safetensors set, made contiguous on CPU) in the
// given order, atomically. `metadata` goes under "__metadata__".
class OutputFile;
// The start of a safetensors file: the header length (little-endian uint64) and the header JSON,
// padded by the caller to keep the data 8-byte aligned. Shared by every safetensors writer.
void writeSafetensorsHeader(OutputFile& out, const std::string& header);

void writeSafetensors(const std::filesystem::path& file,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

} // namespace ladimo::core
