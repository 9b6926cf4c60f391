#include "convert/datasource.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/config.h"
#include "model/generate.h"
#include "model/tokendata.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

// SHA-256 of a large weights file, remembered across runs in the user's cache folder
// ($XDG_CACHE_HOME or ~/.cache, ladimo/sha256.json) under the file's path, size, modification
// time and inode: a 7B checkpoint takes 10+ s to hash, and every command that records the model
// would hash it again. Files under 64 MiB, or with no cache folder, are always hashed.
std::string cachedSha256(const fs::path& file)
{
    struct stat st { };
    if (::stat(file.c_str(), &st) != 0 || st.st_size < (64 << 20))
        return sha256File(file);
    const char* xdg = std::getenv("XDG_CACHE_HOME");
    const char* home = std::getenv("HOME");
    if ((!xdg || !*xdg) && (!home || !*home))
        return sha256File(file);
    const fs::path cacheFile = (xdg && *xdg ? fs::path(xdg) : fs::path(home) / ".cache") / "ladimo" / "sha256.json";
    const std::string key = fs::absolute(file).lexically_normal().string();
    const std::string stamp = std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "."
        + std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ino);
    nlohmann::json cache = nlohmann::json::object();
    std::error_code ec;
    try {
        if (fs::exists(cacheFile, ec))
            cache = nlohmann::json::parse(readTextFile(cacheFile, 16 << 20));
    } catch (const std::exception&) {
        cache = nlohmann::json::object(); // unreadable: start afresh
    }
    if (!cache.is_object())
        cache = nlohmann::json::object();
    if (cache.contains(key) && cache[key].is_object() && cache[key].value("stamp", "") == stamp
        && cache[key].value("sha256", "").size() == 64)
        return cache[key]["sha256"].get<std::string>();
    const std::string sum = sha256File(file);
    cache[key] = {{"stamp", stamp}, {"sha256", sum}};
    try {
        fs::create_directories(cacheFile.parent_path());
        atomicWriteFile(cacheFile, cache.dump(1) + "\n");
    } catch (const std::exception&) {
        // a read-only home: the checksum is still right, only not remembered
    }
    return sum;
}

} // namespace

std::string weightsChecksum(const fs::path& dir)
{
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
        if (e.is_regular_file() && e.path().extension() == ".safetensors")
            files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty())
        throw Error("model folder '" + dir.string() + "' has no *.safetensors file");
    if (files.size() == 1)
        return cachedSha256(files[0]);
    std::string listing;
    for (const auto& f : files)
        listing += cachedSha256(f) + "  " + f.filename().string() + "\n";
    return sha256Bytes(listing.data(), listing.size());
}

SourceModel describeSourceModel(const std::string& modelDir, bool checksum)
{
    const fs::path dir = modelDir;
    const auto configFile = dir / "config.json";
    const auto config = ModelConfig::load(configFile);
    const auto counts = config.parameterCounts();
    SourceModel m;
    m.path = fs::absolute(dir).lexically_normal().string();
    m.config = nlohmann::json::parse(readTextFile(configFile, kMaxConfigJsonBytes));
    if (checksum)
        m.weightsSha256 = weightsChecksum(dir);
    m.totalParams = counts.total;
    m.embeddingParams = counts.embeddings;
    m.attentionParams = counts.attention;
    m.ffnParams = counts.ffn;
    return m;
}

nlohmann::json DataSource::toJson() const
{
    return selfSample > 0 ? nlohmann::json{{"self_sample", selfSample}, {"seed", seed}}
                          : nlohmann::json{{"file", file}, {"max_tokens", maxTokens}};
}

DataSource DataSource::fromJson(const nlohmann::json& j)
{
    if (!j.is_object() || (!j.contains("self_sample") && !j.contains("file")))
        throw Error("data source: expected an object with \"file\" or \"self_sample\", got " + j.dump());
    DataSource d;
    try {
        if (j.contains("self_sample")) {
            d.selfSample = j.at("self_sample").get<int64_t>();
            d.seed = j.value("seed", d.seed);
        } else {
            d.file = j.at("file").get<std::string>();
            d.maxTokens = j.value("max_tokens", int64_t{0});
        }
    } catch (const nlohmann::json::exception& e) {
        throw Error("data source " + j.dump() + ": " + e.what());
    }
    return d;
}

std::string DataSource::describe() const
{
    std::string out = file.empty() ? "self-sample " + std::to_string(selfSample) + ", seed " + std::to_string(seed)
                                   : "file " + file;
    if (maxTokens > 0)
        out += ", first " + std::to_string(maxTokens) + " tokens";
    return out;
}

std::vector<int64_t> DataSource::load(const LlamaModel& model, const Tokenizer* tokenizer, int64_t seqLen,
                                      const ProgressFn& progress, CancelToken cancel) const
{
    checkSeqLen(seqLen, model.config());
    if (selfSample > 0) {
        SelfSampleOptions s;
        s.tokens = maxTokens > 0 ? std::min(selfSample, maxTokens) : selfSample;
        s.seqLen = seqLen;
        s.seed = seed;
        s.progress = progress;
        s.cancel = cancel;
        return core::selfSample(model, s);
    }
    if (file.empty())
        throw Error("give --data FILE or --self-sample N");
    TokenDataOptions o;
    o.vocabSize = model.config().vocabSize;
    o.bosId = model.config().bosTokenId;
    o.maxTokens = maxTokens;
    return loadTokenFile(file, tokenizer, o);
}

CalibrationSet DataSource::record(const std::vector<int64_t>& tokens, int64_t seqLen) const
{
    CalibrationSet cal;
    cal.name = selfSample > 0 ? "self-sample" : fs::path(file).filename().string();
    cal.source = selfSample > 0 ? CalibrationSource::SelfSample : CalibrationSource::File;
    if (cal.source == CalibrationSource::File) {
        cal.filePath = fs::absolute(file).string();
        cal.fileSha256 = sha256File(file);
    }
    cal.seed = seed;
    cal.tokens = static_cast<int64_t>(tokens.size());
    cal.seqLen = seqLen;
    return cal;
}

} // namespace ladimo::core
