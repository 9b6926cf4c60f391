#include "export/gguf_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "common/error.h"
#include "common/fileutil.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

constexpr uint64_t kMaxString = 1ull << 24; // one metadata string
constexpr uint64_t kMaxArray = 1ull << 24;  // elements of one metadata array
constexpr uint64_t kMaxTensors = 1ull << 20;

// A file read with pread: header fields in order, tensor data by offset.
class Reader {
public:
    explicit Reader(const fs::path& file) : m_path(file)
    {
        m_fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
        if (m_fd < 0)
            throw Error("cannot open '" + file.string() + "': " + std::strerror(errno));
        struct stat st { };
        if (::fstat(m_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(m_fd);
            throw Error("'" + file.string() + "' is not a regular file");
        }
        m_size = static_cast<uint64_t>(st.st_size);
    }
    ~Reader() { ::close(m_fd); }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    void read(void* dst, uint64_t n, uint64_t at, const std::string& what) const
    {
        if (at > m_size || n > m_size - at)
            throw Error(m_path.string() + ": " + what + " lies past the end of the file (" + std::to_string(m_size)
                        + " bytes; truncated?)");
        preadFully(m_fd, dst, n, at, what, m_path);
    }
    template <typename T> T next(const std::string& what)
    {
        T v{};
        read(&v, sizeof(T), m_pos, what);
        m_pos += sizeof(T);
        return v;
    }
    std::string string(const std::string& what)
    {
        const auto n = next<uint64_t>(what);
        if (n > kMaxString)
            throw Error(m_path.string() + ": " + what + " is a string of " + std::to_string(n) + " bytes (limit "
                        + std::to_string(kMaxString) + ")");
        std::string s(n, '\0');
        read(s.data(), n, m_pos, what);
        m_pos += n;
        return s;
    }
    uint64_t pos() const { return m_pos; }
    uint64_t size() const { return m_size; }
    const fs::path& path() const { return m_path; }

private:
    fs::path m_path;
    int m_fd = -1;
    uint64_t m_size = 0;
    uint64_t m_pos = 0;
};

nlohmann::json scalar(Reader& r, uint32_t type, const std::string& what)
{
    switch (type) {
    case 0: return r.next<uint8_t>(what);
    case 1: return r.next<int8_t>(what);
    case 2: return r.next<uint16_t>(what);
    case 3: return r.next<int16_t>(what);
    case 4: return r.next<uint32_t>(what);
    case 5: return r.next<int32_t>(what);
    case 6: return r.next<float>(what);
    case 7: return r.next<uint8_t>(what) != 0;
    case 8: return r.string(what);
    case 10: return r.next<uint64_t>(what);
    case 11: return r.next<int64_t>(what);
    case 12: return r.next<double>(what);
    default: throw Error(r.path().string() + ": " + what + " has unknown value type " + std::to_string(type));
    }
}

struct TensorInfo {
    std::vector<int64_t> shape; // PyTorch order (GGUF's ne reversed)
    uint32_t type = 0;
    uint64_t offset = 0;
};

torch::ScalarType tensorType(uint32_t type, const std::string& where)
{
    switch (type) {
    case 0: return torch::kFloat32;
    case 1: return torch::kFloat16;
    case 30: return torch::kBFloat16;
    default:
        throw Error(where + " has ggml type " + std::to_string(type)
                    + "; only F32, F16 and BF16 tensors can be read (quantised files run in llama.cpp)");
    }
}

// The inverse of the exporter's permutation of q/k rows for llama.cpp's RoPE.
torch::Tensor unpermuteForRope(const torch::Tensor& w, int64_t heads)
{
    auto shape = w.sizes().vec();
    std::vector<int64_t> split = {heads, shape[0] / heads / 2, 2};
    split.insert(split.end(), shape.begin() + 1, shape.end());
    return w.reshape(split).transpose(1, 2).reshape(shape).contiguous();
}

} // namespace

bool isGgufFile(const fs::path& path)
{
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        return false;
    char magic[4] = {};
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f)
        return false;
    const bool ok = std::fread(magic, 1, 4, f) == 4 && std::memcmp(magic, "GGUF", 4) == 0;
    std::fclose(f);
    return ok;
}

LoadedMixtral loadGguf(const fs::path& file, const LoadOptions& options)
{
    Reader r(file);
    const std::string src = file.string();
    char magic[4];
    r.read(magic, 4, 0, "the magic");
    if (std::memcmp(magic, "GGUF", 4) != 0)
        throw Error(src + ": not a GGUF file (no 'GGUF' magic)");
    (void)r.next<uint32_t>("the magic");
    const auto version = r.next<uint32_t>("the version");
    if (version != 2 && version != 3)
        throw Error(src + ": GGUF version " + std::to_string(version) + " (expected 2 or 3)");
    const auto nTensors = r.next<uint64_t>("the tensor count");
    const auto nKv = r.next<uint64_t>("the metadata count");
    if (nTensors > kMaxTensors || nKv > kMaxTensors)
        throw Error(src + ": " + std::to_string(nTensors) + " tensors and " + std::to_string(nKv)
                    + " metadata keys exceed the limits");
    std::map<std::string, nlohmann::json> md;
    for (uint64_t i = 0; i < nKv; ++i) {
        const std::string key = r.string("metadata key " + std::to_string(i));
        const auto type = r.next<uint32_t>("the type of '" + key + "'");
        const std::string what = "metadata '" + key + "'";
        if (type == 9) {
            const auto elem = r.next<uint32_t>(what);
            const auto n = r.next<uint64_t>(what);
            if (n > kMaxArray || elem == 9)
                throw Error(src + ": " + what + " is an array of " + std::to_string(n) + " elements of type "
                            + std::to_string(elem) + " (unsupported)");
            nlohmann::json a = nlohmann::json::array();
            for (uint64_t e = 0; e < n; ++e)
                a.push_back(scalar(r, elem, what));
            md[key] = std::move(a);
        } else {
            md[key] = scalar(r, type, what);
        }
    }
    std::map<std::string, TensorInfo> tensors;
    for (uint64_t i = 0; i < nTensors; ++i) {
        const std::string name = r.string("tensor name " + std::to_string(i));
        TensorInfo t;
        const auto dims = r.next<uint32_t>("the rank of '" + name + "'");
        if (dims == 0 || dims > 4)
            throw Error(src + ": tensor '" + name + "' has rank " + std::to_string(dims) + " (expected 1 to 4)");
        for (uint32_t d = 0; d < dims; ++d) {
            const auto ne = r.next<uint64_t>("the shape of '" + name + "'");
            if (ne == 0 || ne > (1ull << 40))
                throw Error(src + ": tensor '" + name + "' has a dimension of " + std::to_string(ne));
            t.shape.insert(t.shape.begin(), static_cast<int64_t>(ne));
        }
        t.type = r.next<uint32_t>("the type of '" + name + "'");
        t.offset = r.next<uint64_t>("the offset of '" + name + "'");
        tensors[name] = t;
    }
    uint64_t alignment = 32;
    if (md.count("general.alignment") && md["general.alignment"].is_number_unsigned())
        alignment = md["general.alignment"].get<uint64_t>();
    if (alignment == 0 || (alignment & (alignment - 1)) != 0)
        throw Error(src + ": general.alignment " + std::to_string(alignment) + " is not a power of two");
    const uint64_t dataStart = (r.pos() + alignment - 1) / alignment * alignment;

    auto need = [&](const std::string& key) -> const nlohmann::json& {
        auto it = md.find(key);
        if (it == md.end() || !it->second.is_number())
            throw Error(src + ": metadata '" + key + "' is missing or not a number");
        return it->second;
    };
    if (!md.count("general.architecture") || md["general.architecture"] != "llama")
        throw Error(src
                    + ": general.architecture is not 'llama' (only llama.cpp's llama architecture is read; a "
                      "gguf-qwen2moe export is not read back)");
    ModelConfig c;
    c.hiddenSize = need("llama.embedding_length").get<int64_t>();
    c.numLayers = need("llama.block_count").get<int64_t>();
    c.intermediateSize = need("llama.feed_forward_length").get<int64_t>();
    c.numHeads = need("llama.attention.head_count").get<int64_t>();
    c.numKvHeads
        = md.count("llama.attention.head_count_kv") ? need("llama.attention.head_count_kv").get<int64_t>() : c.numHeads;
    c.headDim = md.count("llama.attention.key_length") ? need("llama.attention.key_length").get<int64_t>()
                                                       : (c.numHeads ? c.hiddenSize / c.numHeads : 0);
    c.maxPositions = md.count("llama.context_length") ? need("llama.context_length").get<int64_t>() : 2048;
    c.ropeTheta = md.count("llama.rope.freq_base") ? need("llama.rope.freq_base").get<double>() : 10000.0;
    c.rmsNormEps = need("llama.attention.layer_norm_rms_epsilon").get<double>();
    if (!tensors.count("token_embd.weight") || tensors["token_embd.weight"].shape.size() != 2)
        throw Error(src + ": tensor 'token_embd.weight' is missing or not a matrix");
    c.vocabSize = tensors["token_embd.weight"].shape[0];
    c.tieWordEmbeddings = !tensors.count("output.weight");
    if (md.count("tokenizer.ggml.bos_token_id"))
        c.bosTokenId = need("tokenizer.ggml.bos_token_id").get<int64_t>();
    if (md.count("tokenizer.ggml.eos_token_id"))
        c.eosTokenId = need("tokenizer.ggml.eos_token_id").get<int64_t>();
    constexpr int64_t kMaxDim = int64_t(1) << 24; // keeps every product below of the sizes in range
    const auto bad = [&](int64_t v) { return v <= 0 || v > kMaxDim; };
    if (bad(c.hiddenSize) || bad(c.intermediateSize) || bad(c.numHeads) || bad(c.numKvHeads) || bad(c.headDim)
        || bad(c.vocabSize) || c.numHeads % c.numKvHeads != 0 || c.headDim % 2 != 0 || c.numLayers <= 0
        || c.numLayers > 4096 || c.numHeads * c.headDim > kMaxDim)
        throw Error(src + ": inconsistent llama.* metadata (layers " + std::to_string(c.numLayers) + ", heads "
                    + std::to_string(c.numHeads) + "/" + std::to_string(c.numKvHeads) + ", head dim "
                    + std::to_string(c.headDim) + ")");
    const bool moe = md.count("llama.expert_count") > 0;

    auto get = [&](const std::string& name, const std::vector<int64_t>& shape) {
        auto it = tensors.find(name);
        const std::string where = src + ": tensor '" + name + "'";
        if (it == tensors.end())
            throw Error(src + ": missing tensor '" + name + "'");
        if (it->second.shape != shape) {
            std::string got, want;
            for (auto d : it->second.shape)
                got += (got.empty() ? "" : ", ") + std::to_string(d);
            for (auto d : shape)
                want += (want.empty() ? "" : ", ") + std::to_string(d);
            throw Error(where + " has shape [" + got + "], expected [" + want + "]");
        }
        const auto type = tensorType(it->second.type, where);
        // The tensor must lie inside the file before anything is allocated for it: a damaged or
        // hostile header could otherwise ask for terabytes.
        uint64_t bytes = c10::elementSize(type);
        for (auto d : shape)
            if (d < 0 || (d > 0 && bytes > r.size() / static_cast<uint64_t>(d)))
                throw Error(where + " is larger than the file (" + std::to_string(r.size()) + " bytes; truncated?)");
            else
                bytes *= static_cast<uint64_t>(d);
        if (it->second.offset > r.size() || dataStart > r.size() - it->second.offset
            || bytes > r.size() - dataStart - it->second.offset)
            throw Error(where + " lies past the end of the file (" + std::to_string(r.size()) + " bytes; truncated?)");
        auto t = torch::empty(shape, torch::TensorOptions().dtype(type));
        r.read(t.data_ptr(), bytes, dataStart + it->second.offset, "tensor '" + name + "'");
        return t.to(options.device, options.dtype);
    };
    const int64_t H = c.hiddenSize, qDim = c.numHeads * c.headDim, kvDim = c.numKvHeads * c.headDim;
    LlamaWeights w;
    w.embed = get("token_embd.weight", {c.vocabSize, H});
    std::vector<MoeLayer> layers;
    int64_t N = 0;
    for (int64_t l = 0; l < c.numLayers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        LayerWeights L;
        L.inputNorm = get(p + "attn_norm.weight", {H});
        L.q = unpermuteForRope(get(p + "attn_q.weight", {qDim, H}), c.numHeads);
        L.k = unpermuteForRope(get(p + "attn_k.weight", {kvDim, H}), c.numKvHeads);
        L.v = get(p + "attn_v.weight", {kvDim, H});
        L.o = get(p + "attn_output.weight", {H, qDim});
        if (tensors.count(p + "attn_q.bias")) {
            c.attentionBias = true;
            L.qBias = unpermuteForRope(get(p + "attn_q.bias", {qDim}), c.numHeads);
            L.kBias = unpermuteForRope(get(p + "attn_k.bias", {kvDim}), c.numKvHeads);
            L.vBias = get(p + "attn_v.bias", {kvDim});
        }
        if (tensors.count(p + "attn_output.bias"))
            L.oBias = get(p + "attn_output.bias", {H});
        L.postNorm = get(p + "ffn_norm.weight", {H});
        if (!moe) {
            L.gate = get(p + "ffn_gate.weight", {c.intermediateSize, H});
            L.up = get(p + "ffn_up.weight", {c.intermediateSize, H});
            L.down = get(p + "ffn_down.weight", {H, c.intermediateSize});
        } else {
            N = need("llama.expert_count").get<int64_t>();
            if (N < 1 || N > (int64_t(1) << 16))
                throw Error(src + ": llama.expert_count " + std::to_string(N) + " is outside 1..65536");
            const int64_t S = c.intermediateSize;
            MoeLayer m;
            m.router = get(p + "ffn_gate_inp.weight", {N, H});
            m.gate = get(p + "ffn_gate_exps.weight", {N, S, H});
            m.up = get(p + "ffn_up_exps.weight", {N, S, H});
            m.down = get(p + "ffn_down_exps.weight", {N, H, S});
            m.sizes.assign(static_cast<std::size_t>(N), S); // zero padding computes zero: exact
            fuseGateUp(m);
            layers.push_back(std::move(m));
        }
        w.layers.push_back(std::move(L));
    }
    w.finalNorm = get("output_norm.weight", {H});
    if (!c.tieWordEmbeddings)
        w.lmHead = get("output.weight", {c.vocabSize, H});

    const int k = moe ? static_cast<int>(need("llama.expert_used_count").get<int64_t>()) : 0;
    PolicyRules rules;
    Gating gating = Gating::Renorm;
    std::string policyName;
    if (moe) {
        if (k < 1 || k > N)
            throw Error(src + ": llama.expert_used_count " + std::to_string(k) + " is outside 1.." + std::to_string(N));
        rules = uniformRules(static_cast<int>(c.numLayers), RoutingRule::staticK(k));
        if (md.count("ladimo.routing_policy") && md["ladimo.routing_policy"].is_string()) {
            nlohmann::json doc;
            try {
                doc = nlohmann::json::parse(md["ladimo.routing_policy"].get<std::string>());
            } catch (const nlohmann::json::exception& e) {
                throw Error(src + ": metadata 'ladimo.routing_policy' is not valid JSON: " + e.what());
            }
            const auto policy = parsePolicyDocument(doc, static_cast<int>(c.numLayers), N,
                                                    src + ": metadata 'ladimo.routing_policy'");
            rules = policy.rules;
            gating = policy.gating;
            policyName = policy.name;
        }
        for (auto& m : layers)
            m.gating = gating;
        // As a Mixtral export without its source config: the dense width the experts cover (padded).
        c.intermediateSize = N * c.intermediateSize;
    }
    return LoadedMixtral{LlamaModel(std::move(c), std::move(w)),
                         std::move(layers),
                         std::move(rules),
                         gating,
                         k,
                         policyName,
                         std::string(),
                         nlohmann::json()};
}

} // namespace ladimo::core
