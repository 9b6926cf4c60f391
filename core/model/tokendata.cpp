#include "model/tokendata.h"

#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/tokenizer.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

constexpr uint64_t kMaxTokenFileBytes = 64ull << 30;
// One .jsonl row: a document's text or token list. Longer lines are refused before they are read whole.
constexpr std::size_t kMaxJsonlLineBytes = 64u << 20;

void checkId(int64_t id, int64_t vocab, const fs::path& file, const std::string& where)
{
    if (id < 0 || (vocab > 0 && id >= vocab))
        throw Error(file.string() + ": token id " + std::to_string(id) + " at " + where
                    + " is outside the model vocabulary [0, " + std::to_string(vocab) + ")");
}

bool full(const std::vector<int64_t>& out, const TokenDataOptions& o)
{
    return o.maxTokens > 0 && static_cast<int64_t>(out.size()) >= o.maxTokens;
}

void appendText(std::vector<int64_t>& out, const std::string& text, const Tokenizer* tok, const TokenDataOptions& o,
                const fs::path& file)
{
    if (!tok)
        throw Error(file.string()
                    + ": text data needs a tokenizer, but the model folder has no "
                      "tokenizer.model or tokenizer.json (use .u16/.u32 token ids)");
    if (o.bosId >= 0)
        out.push_back(o.bosId);
    for (int id : tok->encode(text))
        out.push_back(id);
}

std::vector<int64_t> loadRaw(const fs::path& file, std::size_t width, const TokenDataOptions& o)
{
    std::ifstream in(file, std::ios::binary);
    if (!in)
        throw Error("cannot open token file '" + file.string() + "'");
    std::error_code ec;
    const uint64_t size = fs::file_size(file, ec);
    if (ec)
        throw Error("cannot stat token file '" + file.string() + "'");
    if (size % width != 0)
        throw Error(file.string() + ": size " + std::to_string(size) + " bytes is not a multiple of "
                    + std::to_string(width) + " (expected little-endian uint" + std::to_string(8 * width) + " ids)");
    if (size > kMaxTokenFileBytes)
        throw Error(file.string() + ": token file larger than 64 GiB");
    uint64_t count = size / width;
    if (o.maxTokens > 0)
        count = std::min<uint64_t>(count, static_cast<uint64_t>(o.maxTokens));
    std::vector<unsigned char> bytes(count * width);
    in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (static_cast<uint64_t>(in.gcount()) != bytes.size())
        throw Error("cannot read token file '" + file.string() + "'");
    std::vector<int64_t> out(count);
    for (uint64_t i = 0; i < count; ++i) {
        uint64_t v = 0;
        for (std::size_t b = 0; b < width; ++b)
            v |= static_cast<uint64_t>(bytes[i * width + b]) << (8 * b);
        out[i] = static_cast<int64_t>(v);
        checkId(out[i], o.vocabSize, file, "index " + std::to_string(i));
    }
    return out;
}

} // namespace

std::vector<int64_t> loadTokenFile(const fs::path& file, const Tokenizer* tok, const TokenDataOptions& o)
{
    const std::string ext = file.extension().string();
    std::vector<int64_t> out;
    if (ext == ".u16")
        out = loadRaw(file, 2, o);
    else if (ext == ".u32")
        out = loadRaw(file, 4, o);
    else if (ext == ".jsonl") {
        LineReader in(file, kMaxJsonlLineBytes, "token file");
        std::string line;
        while (!full(out, o) && in.next(line)) {
            const int64_t lineNo = in.lineNo();
            if (line.find_first_not_of(" \t\r") == std::string::npos)
                continue;
            const std::string where = in.where();
            nlohmann::json j;
            try {
                j = nlohmann::json::parse(line);
            } catch (const nlohmann::json::exception& e) {
                throw Error(where + ": invalid JSON: " + e.what());
            }
            if (j.is_object() && j.contains("tokens")) {
                if (!j["tokens"].is_array())
                    throw Error(where + ": \"tokens\" must be an array of integers");
                for (const auto& t : j["tokens"]) {
                    if (!t.is_number_integer())
                        throw Error(where + ": \"tokens\" must be an array of integers");
                    checkId(t.get<int64_t>(), o.vocabSize, file, "line " + std::to_string(lineNo));
                    out.push_back(t.get<int64_t>());
                }
            } else if (j.is_object() && j.contains("text") && j["text"].is_string()) {
                appendText(out, j["text"].get<std::string>(), tok, o, file);
            } else {
                throw Error(where + ": expected an object with \"text\" (string) or \"tokens\" (array)");
            }
        }
    } else if (ext == ".txt" || ext == ".text" || ext == ".md") {
        appendText(out, readTextFile(file), tok, o, file);
    } else {
        throw Error("'" + file.string() + "': unknown token data format '" + ext
                    + "' (expected .txt, .u16, .u32 or .jsonl)");
    }
    if (o.maxTokens > 0 && static_cast<int64_t>(out.size()) > o.maxTokens)
        out.resize(static_cast<std::size_t>(o.maxTokens));
    if (out.size() < 2)
        throw Error("'" + file.string() + "' holds fewer than 2 tokens");
    return out;
}

std::vector<std::vector<int64_t>> cutWindows(const std::vector<int64_t>& stream, int64_t seqLen)
{
    if (seqLen < 2)
        throw Error("--seq-len must be at least 2, got " + std::to_string(seqLen));
    std::vector<std::vector<int64_t>> out;
    const std::size_t L = static_cast<std::size_t>(seqLen);
    for (std::size_t i = 0; i < stream.size(); i += L) {
        const std::size_t n = std::min(L, stream.size() - i);
        if (n < 2)
            break;
        out.emplace_back(stream.begin() + static_cast<std::ptrdiff_t>(i),
                         stream.begin() + static_cast<std::ptrdiff_t>(i + n));
    }
    return out;
}

void saveTokenFile(const fs::path& file, const std::vector<int64_t>& ids)
{
    const std::string ext = file.extension().string();
    std::size_t width = ext == ".u16" ? 2 : ext == ".u32" ? 4 : 0;
    if (!width)
        throw Error("'" + file.string() + "': token files are written as .u16 or .u32");
    std::string bytes;
    bytes.reserve(ids.size() * width);
    for (int64_t id : ids) {
        if (id < 0 || (width == 2 && id > 65535) || id > int64_t(std::numeric_limits<uint32_t>::max()))
            throw Error("'" + file.string() + "': id " + std::to_string(id) + " does not fit in " + ext);
        for (std::size_t b = 0; b < width; ++b)
            bytes.push_back(static_cast<char>((static_cast<uint64_t>(id) >> (8 * b)) & 0xff));
    }
    atomicWriteFile(file, bytes);
}

} // namespace ladimo::core
