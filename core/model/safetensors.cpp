#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <limits>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"

namespace ladimo::core {

namespace {

struct DTypeEntry {
    const char* name;
    StDType dtype;
    std::size_t size;
    torch::ScalarType torchType;
};

const DTypeEntry kDTypes[] = {
    {"F64", StDType::F64, 8, torch::kFloat64}, {"F32", StDType::F32, 4, torch::kFloat32},
    {"F16", StDType::F16, 2, torch::kFloat16}, {"BF16", StDType::BF16, 2, torch::kBFloat16},
    {"I64", StDType::I64, 8, torch::kInt64},   {"I32", StDType::I32, 4, torch::kInt32},
    {"I16", StDType::I16, 2, torch::kInt16},   {"I8", StDType::I8, 1, torch::kInt8},
    {"U8", StDType::U8, 1, torch::kUInt8},     {"BOOL", StDType::BOOL, 1, torch::kBool},
};

const DTypeEntry& entry(StDType d)
{
    for (const auto& e : kDTypes)
        if (e.dtype == d)
            return e;
    throw Error("internal: unknown safetensors dtype");
}

bool mulOverflows(uint64_t a, uint64_t b, uint64_t* out)
{
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a)
        return true;
    *out = a * b;
    return false;
}

} // namespace

const char* dtypeName(StDType d) { return entry(d).name; }
std::size_t dtypeSize(StDType d) { return entry(d).size; }
torch::ScalarType toTorch(StDType d) { return entry(d).torchType; }

StDType fromTorch(torch::ScalarType t)
{
    for (const auto& e : kDTypes)
        if (e.torchType == t)
            return e.dtype;
    throw Error(std::string("dtype ") + c10::toString(t) + " cannot be stored in safetensors");
}

int64_t StTensorInfo::numel() const
{
    int64_t n = 1;
    for (auto s : shape)
        n *= s;
    return n;
}

std::vector<StTensorInfo> SafetensorsFile::parseHeader(const std::string& headerJson, uint64_t dataSize,
                                                       const std::string& source,
                                                       std::map<std::string, std::string>* metadata)
{
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(headerJson);
    } catch (const nlohmann::json::exception& e) {
        throw Error(source + ": safetensors header is not valid JSON: " + e.what());
    }
    if (!j.is_object())
        throw Error(source + ": safetensors header must be a JSON object");
    if (j.size() > kMaxTensors + 1)
        throw Error(source + ": safetensors header lists " + std::to_string(j.size()) + " entries (limit "
                    + std::to_string(kMaxTensors) + ")");
    std::vector<StTensorInfo> out;
    out.reserve(j.size());
    for (auto it = j.begin(); it != j.end(); ++it) {
        const std::string& name = it.key();
        const auto& v = it.value();
        if (name == "__metadata__") {
            if (!v.is_object())
                throw Error(source + ": __metadata__ must be an object of strings");
            for (auto m = v.begin(); m != v.end(); ++m) {
                if (!m.value().is_string())
                    throw Error(source + ": __metadata__ value '" + m.key() + "' must be a string");
                if (metadata)
                    (*metadata)[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        const std::string where = source + ": tensor '" + name + "'";
        if (!v.is_object())
            throw Error(where + ": entry must be an object");
        if (!v.contains("dtype") || !v["dtype"].is_string())
            throw Error(where + ": missing string 'dtype'");
        if (!v.contains("shape") || !v["shape"].is_array())
            throw Error(where + ": missing array 'shape'");
        if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
            throw Error(where + ": 'data_offsets' must be [begin, end]");
        StTensorInfo info;
        info.name = name;
        const std::string dt = v["dtype"].get<std::string>();
        bool known = false;
        for (const auto& e : kDTypes)
            if (dt == e.name) {
                info.dtype = e.dtype;
                known = true;
            }
        if (!known)
            throw Error(where + ": unsupported dtype '" + dt
                        + "' (expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
        if (v["shape"].size() > kMaxRank)
            throw Error(where + ": rank " + std::to_string(v["shape"].size()) + " exceeds " + std::to_string(kMaxRank));
        uint64_t bytes = dtypeSize(info.dtype);
        for (const auto& d : v["shape"]) {
            if (!d.is_number_unsigned())
                throw Error(where + ": shape entries must be non-negative integers, got " + d.dump());
            const uint64_t dim = d.get<uint64_t>();
            if (dim > uint64_t(std::numeric_limits<int64_t>::max()) || mulOverflows(bytes, dim, &bytes))
                throw Error(where + ": shape is too large");
            info.shape.push_back(static_cast<int64_t>(dim));
        }
        for (const auto& o : v["data_offsets"])
            if (!o.is_number_unsigned())
                throw Error(where + ": data_offsets must be non-negative integers");
        info.begin = v["data_offsets"][0].get<uint64_t>();
        info.end = v["data_offsets"][1].get<uint64_t>();
        if (info.end < info.begin)
            throw Error(where + ": data_offsets end " + std::to_string(info.end) + " < begin "
                        + std::to_string(info.begin));
        if (info.end > dataSize)
            throw Error(where + ": byte range [" + std::to_string(info.begin) + ", " + std::to_string(info.end)
                        + ") lies past the end of the data (" + std::to_string(dataSize) + " bytes; file truncated?)");
        if (info.end - info.begin != bytes)
            throw Error(where + ": shape x dtype size = " + std::to_string(bytes) + " bytes but data_offsets span "
                        + std::to_string(info.end - info.begin));
        out.push_back(std::move(info));
    }
    std::vector<const StTensorInfo*> byOffset;
    for (const auto& t : out)
        byOffset.push_back(&t);
    std::sort(byOffset.begin(), byOffset.end(),
              [](const StTensorInfo* a, const StTensorInfo* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < byOffset.size(); ++i) {
        const auto* prev = byOffset[i - 1];
        const auto* cur = byOffset[i];
        if (cur->begin < prev->end && cur->end > cur->begin && prev->end > prev->begin)
            throw Error(source + ": tensors '" + prev->name + "' and '" + cur->name + "' have overlapping byte ranges");
    }
    return out;
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::filesystem::path& file)
{
    const std::string source = file.string();
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        throw Error("cannot open '" + source + "': " + std::strerror(errno));
    struct stat st { };
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        throw Error("'" + source + "' is not a regular file");
    }
    const uint64_t fileSize = static_cast<uint64_t>(st.st_size);
    if (fileSize < 8) {
        ::close(fd);
        throw Error(source + ": file is " + std::to_string(fileSize)
                    + " bytes, too short for a safetensors header (truncated?)");
    }
    void* map = ::mmap(nullptr, fileSize, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        const int err = errno;
        ::close(fd);
        throw Error("cannot memory-map '" + source + "': " + std::strerror(err));
    }
    std::shared_ptr<SafetensorsFile> f(new SafetensorsFile());
    f->m_fd = fd;
    f->m_path = file;
    f->m_map = map;
    f->m_mapSize = fileSize;
    f->m_self = f;
    const auto* bytes = static_cast<const uint8_t*>(map);
    uint64_t headerLen = 0;
    for (int i = 7; i >= 0; --i)
        headerLen = (headerLen << 8) | bytes[i];
    if (headerLen > kMaxHeaderBytes)
        throw Error(source + ": header length " + std::to_string(headerLen) + " exceeds the "
                    + std::to_string(kMaxHeaderBytes) + "-byte limit (not a safetensors file?)");
    if (headerLen > fileSize - 8)
        throw Error(source + ": header length " + std::to_string(headerLen) + " runs past the end of the file ("
                    + std::to_string(fileSize) + " bytes)");
    const std::string header(reinterpret_cast<const char*>(bytes + 8), headerLen);
    f->m_tensors = parseHeader(header, fileSize - 8 - headerLen, source, &f->m_metadata);
    f->m_data = bytes + 8 + headerLen;
    f->m_dataOffset = 8 + headerLen;
    for (std::size_t i = 0; i < f->m_tensors.size(); ++i)
        f->m_index[f->m_tensors[i].name] = i;
    return f;
}

SafetensorsFile::~SafetensorsFile()
{
    if (m_map)
        ::munmap(m_map, m_mapSize);
    if (m_fd >= 0)
        ::close(m_fd);
}

const StTensorInfo* SafetensorsFile::find(const std::string& name) const
{
    auto it = m_index.find(name);
    return it == m_index.end() ? nullptr : &m_tensors[it->second];
}

torch::Tensor SafetensorsFile::tensor(const std::string& name) const
{
    const StTensorInfo* info = find(name);
    if (!info)
        throw Error(m_path.string() + ": missing tensor '" + name + "'");
    const auto type = toTorch(info->dtype);
    const uint8_t* ptr = m_data + info->begin;
    auto options = torch::TensorOptions().dtype(type).device(torch::kCPU);
    if (info->numel() == 0)
        return torch::empty(info->shape, options);
    if (reinterpret_cast<uintptr_t>(ptr) % dtypeSize(info->dtype) != 0) {
        // Unaligned data (allowed by the format): copy into an aligned buffer.
        auto t = torch::empty(info->shape, options);
        std::memcpy(t.data_ptr(), ptr, info->end - info->begin);
        return t;
    }
    std::shared_ptr<const SafetensorsFile> keepAlive = m_self.lock();
    return torch::from_blob(
        const_cast<uint8_t*>(ptr), info->shape, [keepAlive](void*) mutable { keepAlive.reset(); }, options);
}

torch::Tensor SafetensorsFile::read(const std::string& name, int64_t rowBegin, int64_t rows, bool pinned) const
{
    const StTensorInfo* info = find(name);
    if (!info)
        throw Error(m_path.string() + ": missing tensor '" + name + "'");
    std::vector<int64_t> shape = info->shape;
    const int64_t total = shape.empty() ? 1 : shape[0];
    if (rows < 0)
        rows = total - rowBegin;
    if (rowBegin < 0 || rows < 0 || rowBegin + rows > total || (shape.empty() && (rowBegin != 0 || rows != 1)))
        throw Error(m_path.string() + ": tensor '" + name + "': rows [" + std::to_string(rowBegin) + ", "
                    + std::to_string(rowBegin + rows) + ") lie outside its " + std::to_string(total) + " rows");
    const uint64_t rowBytes = total > 0 ? (info->end - info->begin) / static_cast<uint64_t>(total) : 0;
    if (!shape.empty())
        shape[0] = rows;
    auto options = torch::TensorOptions().dtype(toTorch(info->dtype)).device(torch::kCPU).pinned_memory(pinned);
    auto t = torch::empty(shape, options);
    const uint64_t bytes = shape.empty() ? info->end - info->begin : rowBytes * static_cast<uint64_t>(rows);
    preadFully(m_fd, t.data_ptr(), bytes, m_dataOffset + info->begin + rowBytes * static_cast<uint64_t>(rowBegin),
               "tensor '" + name + "'", m_path);
    return t;
}

void writeSafetensorsHeader(OutputFile& out, const std::string& header)
{
    uint8_t len[8];
    for (int i = 0; i < 8; ++i)
        len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
    out.write(len, 8);
    out.write(header.data(), header.size());
}

void writeSafetensors(const std::filesystem::path& file,
                      const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata)
{
    nlohmann::json header = nlohmann::json::object();
    if (!metadata.empty())
        header["__metadata__"] = metadata;
    std::vector<torch::Tensor> cpu;
    cpu.reserve(tensors.size());
    uint64_t offset = 0;
    for (const auto& [name, t] : tensors) {
        if (header.contains(name))
            throw Error(file.string() + ": duplicate tensor name '" + name + "'");
        torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
        const StDType dt = fromTorch(c.scalar_type());
        const uint64_t bytes = static_cast<uint64_t>(c.numel()) * dtypeSize(dt);
        header[name]
            = {{"dtype", dtypeName(dt)}, {"shape", c.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
        offset += bytes;
        cpu.push_back(std::move(c));
    }
    std::string h = header.dump();
    while ((8 + h.size()) % 8 != 0) // keep the data section 8-byte aligned for zero-copy reads
        h.push_back(' ');
    atomicWriteOutput(file, [&](OutputFile& out) {
        writeSafetensorsHeader(out, h);
        for (const auto& c : cpu)
            out.write(c.data_ptr(), static_cast<std::size_t>(c.numel()) * c.element_size());
    });
}

} // namespace ladimo::core
