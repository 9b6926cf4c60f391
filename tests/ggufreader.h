// An independent GGUF (v2/v3) reader for the tests: parses a whole file held in memory
// (header, metadata, tensor infos, data) without sharing any code with the exporter, so a test can
// check what export/gguf.cpp wrote against the source tensors. Every count, length, dimension
// and offset it reads is bounded by the bytes that remain, so malformed input (it will be
// fuzzed) ends in a ladimo::core::Error naming the file and the offending field, never in a
// crash or a huge allocation. Plain value type; thread-safe.
#pragma once

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/error.h"

namespace ladimo::test {

struct GgufValue {
    uint32_t type = 0;     // gguf_type of the value (9 = array)
    uint32_t elemType = 0; // element type of an array
    bool isArray = false;
    std::vector<int64_t> ints;        // integer and bool elements
    std::vector<double> floats;       // float32 / float64 elements
    std::vector<std::string> strings; // string elements

    int64_t integer() const { return ints.at(0); }
    double number() const { return floats.at(0); }
    const std::string& string() const { return strings.at(0); }
};

struct GgufTensorInfo {
    std::string name;
    std::vector<uint64_t> ne; // ne[0] varies fastest
    uint32_t type = 0;        // ggml_type: 0 F32, 1 F16
    uint64_t offset = 0;      // from the start of the data section
    uint64_t bytes = 0;
};

class GgufFile {
public:
    static GgufFile load(const std::filesystem::path& file)
    {
        std::ifstream in(file, std::ios::binary);
        if (!in)
            throw core::Error("cannot open GGUF file '" + file.string() + "'");
        std::ostringstream ss;
        ss << in.rdbuf();
        return parse(ss.str(), file.string());
    }

    static GgufFile parse(std::string bytes, const std::string& source)
    {
        GgufFile g;
        g.m_source = source;
        g.m_bytes = std::move(bytes);
        g.parseAll();
        return g;
    }

    uint32_t version() const { return m_version; }
    uint64_t alignment() const { return m_alignment; }
    uint64_t dataStart() const { return m_dataStart; }
    const std::map<std::string, GgufValue>& metadata() const { return m_kv; }
    const std::vector<GgufTensorInfo>& tensors() const { return m_tensors; }

    bool has(const std::string& key) const { return m_kv.count(key) != 0; }
    const GgufValue& at(const std::string& key) const
    {
        auto it = m_kv.find(key);
        if (it == m_kv.end())
            throw core::Error(m_source + ": metadata key '" + key + "' is missing");
        return it->second;
    }
    const GgufTensorInfo* find(const std::string& name) const
    {
        for (const auto& t : m_tensors)
            if (t.name == name)
                return &t;
        return nullptr;
    }
    // The tensor as float32, in PyTorch order (the reverse of ne).
    torch::Tensor tensor(const std::string& name) const
    {
        const auto* t = find(name);
        if (!t)
            throw core::Error(m_source + ": no tensor '" + name + "'");
        std::vector<int64_t> shape(t->ne.rbegin(), t->ne.rend());
        const void* p = m_bytes.data() + m_dataStart + t->offset;
        auto dtype = t->type == 0 ? torch::kFloat32 : torch::kFloat16;
        return torch::from_blob(const_cast<void*>(p), shape, dtype).clone().to(torch::kFloat32);
    }

private:
    static constexpr uint64_t kMaxCount = 1u << 24; // tensors / keys / array elements, far above any model
    static constexpr uint32_t kMaxDims = 4;         // GGML_MAX_DIMS

    [[noreturn]] void fail(const std::string& what) const
    {
        throw core::Error(m_source + ": malformed GGUF: " + what + " (at byte " + std::to_string(m_pos) + " of "
                          + std::to_string(m_bytes.size()) + ")");
    }
    uint64_t remaining() const { return m_bytes.size() - m_pos; }
    template <typename T> T get(const char* what)
    {
        if (remaining() < sizeof(T))
            fail(std::string("file ends inside ") + what);
        T v;
        std::memcpy(&v, m_bytes.data() + m_pos, sizeof(T));
        m_pos += sizeof(T);
        return v;
    }
    std::string getString(const std::string& what)
    {
        const auto n = get<uint64_t>(what.c_str());
        if (n > remaining())
            fail(what + " claims " + std::to_string(n) + " bytes, only " + std::to_string(remaining()) + " remain");
        std::string s = m_bytes.substr(m_pos, n);
        m_pos += n;
        return s;
    }
    static uint64_t scalarSize(uint32_t type)
    {
        switch (type) {
        case 0:
        case 1:
        case 7: return 1;
        case 2:
        case 3: return 2;
        case 4:
        case 5:
        case 6: return 4;
        case 10:
        case 11:
        case 12: return 8;
        case 8: return 8; // at least the length
        default: return 0;
        }
    }
    void getScalar(uint32_t type, GgufValue& v, const std::string& key)
    {
        switch (type) {
        case 0: v.ints.push_back(get<uint8_t>("uint8")); break;
        case 1: v.ints.push_back(get<int8_t>("int8")); break;
        case 2: v.ints.push_back(get<uint16_t>("uint16")); break;
        case 3: v.ints.push_back(get<int16_t>("int16")); break;
        case 4: v.ints.push_back(get<uint32_t>("uint32")); break;
        case 5: v.ints.push_back(get<int32_t>("int32")); break;
        case 6: v.floats.push_back(get<float>("float32")); break;
        case 7: {
            const auto b = get<uint8_t>("bool");
            if (b > 1)
                fail("key '" + key + "': bool value " + std::to_string(b));
            v.ints.push_back(b);
            break;
        }
        case 8: v.strings.push_back(getString("string value of key '" + key + "'")); break;
        case 10: v.ints.push_back(static_cast<int64_t>(get<uint64_t>("uint64"))); break;
        case 11: v.ints.push_back(get<int64_t>("int64")); break;
        case 12: v.floats.push_back(get<double>("float64")); break;
        default: fail("key '" + key + "': unknown value type " + std::to_string(type));
        }
    }

    void parseAll()
    {
        if (get<uint32_t>("magic") != 0x46554747u)
            fail("magic is not \"GGUF\"");
        m_version = get<uint32_t>("version");
        if (m_version != 2 && m_version != 3)
            fail("version " + std::to_string(m_version) + " (expected 2 or 3)");
        const auto nTensors = get<uint64_t>("tensor count");
        const auto nKv = get<uint64_t>("metadata count");
        // A key needs at least 12 bytes (length + type), a tensor info at least 24.
        if (nKv > kMaxCount || nKv * 12 > remaining())
            fail("metadata count " + std::to_string(nKv) + " exceeds what the file can hold");
        if (nTensors > kMaxCount || nTensors * 24 > remaining())
            fail("tensor count " + std::to_string(nTensors) + " exceeds what the file can hold");
        for (uint64_t i = 0; i < nKv; ++i) {
            const std::string key = getString("key " + std::to_string(i));
            if (m_kv.count(key))
                fail("key '" + key + "' appears twice");
            GgufValue v;
            v.type = get<uint32_t>("value type");
            if (v.type == 9) {
                v.isArray = true;
                v.elemType = get<uint32_t>("array element type");
                const uint64_t size = scalarSize(v.elemType);
                if (size == 0)
                    fail("key '" + key + "': array of unsupported element type " + std::to_string(v.elemType));
                const auto n = get<uint64_t>("array length");
                if (n > kMaxCount || n * size > remaining())
                    fail("key '" + key + "': array of " + std::to_string(n) + " elements exceeds the file");
                for (uint64_t j = 0; j < n; ++j)
                    getScalar(v.elemType, v, key);
            } else {
                getScalar(v.type, v, key);
            }
            m_kv.emplace(key, std::move(v));
        }
        if (auto it = m_kv.find("general.alignment"); it != m_kv.end()) {
            if (it->second.isArray || it->second.type != 4)
                fail("general.alignment is not a uint32");
            m_alignment = static_cast<uint64_t>(it->second.integer());
            if (m_alignment == 0 || (m_alignment & (m_alignment - 1)) != 0)
                fail("general.alignment " + std::to_string(m_alignment) + " is not a power of two");
        }
        for (uint64_t i = 0; i < nTensors; ++i) {
            GgufTensorInfo t;
            t.name = getString("tensor name " + std::to_string(i));
            if (t.name.size() > 64)
                fail("tensor name '" + t.name.substr(0, 64) + "...' is longer than 64 bytes");
            if (find(t.name))
                fail("tensor '" + t.name + "' appears twice");
            const auto dims = get<uint32_t>("tensor dimension count");
            if (dims == 0 || dims > kMaxDims)
                fail("tensor '" + t.name + "' has " + std::to_string(dims) + " dimensions (expected 1.."
                     + std::to_string(kMaxDims) + ")");
            uint64_t elements = 1;
            for (uint32_t d = 0; d < dims; ++d) {
                const auto n = get<uint64_t>("tensor dimension");
                if (n == 0 || n > (1ull << 40) || elements > (1ull << 40) / n)
                    fail("tensor '" + t.name + "' dimension " + std::to_string(d) + " = " + std::to_string(n)
                         + " is zero or too large");
                elements *= n;
                t.ne.push_back(n);
            }
            t.type = get<uint32_t>("tensor type");
            if (t.type != 0 && t.type != 1)
                fail("tensor '" + t.name + "' has ggml type " + std::to_string(t.type)
                     + " (this reader knows F32 = 0 and F16 = 1)");
            t.bytes = elements * (t.type == 0 ? 4 : 2);
            t.offset = get<uint64_t>("tensor offset");
            if (t.offset % m_alignment != 0)
                fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not aligned to "
                     + std::to_string(m_alignment));
            m_tensors.push_back(std::move(t));
        }
        m_dataStart = (m_pos + m_alignment - 1) / m_alignment * m_alignment;
        if (m_dataStart > m_bytes.size())
            fail("file ends before the data section");
        const uint64_t dataSize = m_bytes.size() - m_dataStart;
        for (const auto& t : m_tensors)
            if (t.offset > dataSize || t.bytes > dataSize - t.offset)
                fail("tensor '" + t.name + "' data [" + std::to_string(t.offset) + ", +" + std::to_string(t.bytes)
                     + ") lies outside the " + std::to_string(dataSize) + "-byte data section");
    }

    std::string m_source;
    std::string m_bytes;
    uint64_t m_pos = 0;
    uint32_t m_version = 0;
    uint64_t m_alignment = 32;
    uint64_t m_dataStart = 0;
    std::map<std::string, GgufValue> m_kv;
    std::vector<GgufTensorInfo> m_tensors;
};

} // namespace ladimo::test
