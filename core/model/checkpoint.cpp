#include "model/checkpoint.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/safetensors.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

std::string shapeString(c10::IntArrayRef s)
{
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i)
        out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

} // namespace

void checkShardName(const std::string& name, const fs::path& indexFile)
{
    const fs::path p(name);
    if (name.empty() || p.is_absolute() || p.has_parent_path() || name == "." || name == "..")
        throw Error(indexFile.string() + ": shard name '" + name
                    + "' must be a plain file name inside the checkpoint folder");
}

CheckpointFiles CheckpointFiles::open(const fs::path& dir)
{
    CheckpointFiles c;
    c.m_dir = dir;
    const fs::path index = dir / "model.safetensors.index.json";
    const fs::path single = dir / "model.safetensors";
    std::error_code ec;
    if (fs::exists(index, ec)) {
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(readTextFile(index, kMaxIndexJsonBytes));
        } catch (const nlohmann::json::exception& e) {
            throw Error(index.string() + ": invalid JSON: " + e.what());
        }
        if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
            throw Error(index.string() + ": expected an object with a 'weight_map' object");
        for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
            if (!it.value().is_string())
                throw Error(index.string() + ": weight_map entry '" + it.key() + "' must be a file name");
            const std::string file = it.value().get<std::string>();
            checkShardName(file, index);
            c.m_where[it.key()] = file;
            if (!c.m_open.count(file)) {
                c.m_open[file] = SafetensorsFile::open(dir / file);
                c.m_files.push_back(dir / file);
            }
        }
        for (const auto& [file, st] : c.m_open)
            for (const auto& t : st->tensors()) {
                auto w = c.m_where.find(t.name);
                if (w == c.m_where.end())
                    c.m_where[t.name] = file; // present but unlisted: still usable
            }
        for (const auto& [name, file] : c.m_where)
            if (!c.m_open.at(file)->find(name))
                throw Error(index.string() + ": lists tensor '" + name + "' in '" + file
                            + "' but that file does not contain it");
    } else if (fs::exists(single, ec)) {
        auto st = SafetensorsFile::open(single);
        c.m_open["model.safetensors"] = st;
        c.m_files.push_back(single);
        for (const auto& t : st->tensors())
            c.m_where[t.name] = "model.safetensors";
    } else {
        throw Error("'" + dir.string() + "' holds neither model.safetensors nor model.safetensors.index.json");
    }
    return c;
}

torch::Tensor CheckpointFiles::tensor(const std::string& name) const
{
    auto it = m_where.find(name);
    if (it == m_where.end())
        throw Error(m_dir.string() + ": missing tensor '" + name + "' (checked " + describe() + ")");
    return m_open.at(it->second)->tensor(name);
}

torch::Tensor CheckpointFiles::tensor(const std::string& name, const std::vector<int64_t>& expected) const
{
    auto t = tensor(name);
    if (t.sizes().vec() != expected)
        throw Error((m_dir / m_where.at(name)).string() + ": tensor '" + name + "' has shape " + shapeString(t.sizes())
                    + ", config.json implies " + shapeString(expected));
    return t;
}

const StTensorInfo& CheckpointFiles::info(const std::string& name) const
{
    auto it = m_where.find(name);
    if (it == m_where.end())
        throw Error(m_dir.string() + ": missing tensor '" + name + "' (checked " + describe() + ")");
    return *m_open.at(it->second)->find(name);
}

torch::Tensor CheckpointFiles::read(const std::string& name, int64_t rowBegin, int64_t rows, bool pinned) const
{
    auto it = m_where.find(name);
    if (it == m_where.end())
        throw Error(m_dir.string() + ": missing tensor '" + name + "' (checked " + describe() + ")");
    return m_open.at(it->second)->read(name, rowBegin, rows, pinned);
}

std::string CheckpointFiles::describe() const
{
    if (m_files.size() == 1)
        return m_files.front().filename().string();
    return std::to_string(m_files.size()) + " shards";
}

std::vector<StTensorInfo> CheckpointFiles::tensorInfos() const
{
    std::vector<StTensorInfo> out;
    for (const auto& [file, st] : m_open)
        out.insert(out.end(), st->tensors().begin(), st->tensors().end());
    return out;
}

LlamaWeights loadLlamaWeights(const fs::path& dir, const ModelConfig& c, torch::Device device, torch::ScalarType dtype)
{
    return loadLlamaWeights(CheckpointFiles::open(dir), c, device, dtype);
}

std::vector<std::pair<std::string, torch::Tensor LayerWeights::*>> layerTensorNames(int layer, bool biases,
                                                                                    bool withFfn)
{
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    std::vector<std::pair<std::string, torch::Tensor LayerWeights::*>> out
        = {{p + "input_layernorm.weight", &LayerWeights::inputNorm},
           {p + "self_attn.q_proj.weight", &LayerWeights::q},
           {p + "self_attn.k_proj.weight", &LayerWeights::k},
           {p + "self_attn.v_proj.weight", &LayerWeights::v},
           {p + "self_attn.o_proj.weight", &LayerWeights::o}};
    if (biases) {
        out.push_back({p + "self_attn.q_proj.bias", &LayerWeights::qBias});
        out.push_back({p + "self_attn.k_proj.bias", &LayerWeights::kBias});
        out.push_back({p + "self_attn.v_proj.bias", &LayerWeights::vBias});
        out.push_back({p + "self_attn.o_proj.bias", &LayerWeights::oBias});
    }
    out.push_back({p + "post_attention_layernorm.weight", &LayerWeights::postNorm});
    if (withFfn) {
        out.push_back({p + "mlp.gate_proj.weight", &LayerWeights::gate});
        out.push_back({p + "mlp.up_proj.weight", &LayerWeights::up});
        out.push_back({p + "mlp.down_proj.weight", &LayerWeights::down});
    }
    return out;
}

void checkLlamaTensors(const CheckpointFiles& files, const ModelConfig& c, bool withFfn)
{
    // Zero-copy views of the mapped files: the headers are checked, no data page is touched.
    (void)loadLlamaWeights(files, c, torch::kCPU, std::nullopt, withFfn);
}

LlamaWeights loadLlamaWeights(const CheckpointFiles& files, const ModelConfig& c, torch::Device device,
                              std::optional<torch::ScalarType> dtype, bool withFfn)
{
    auto get = [&](const std::string& name, std::vector<int64_t> shape) {
        auto t = files.tensor(name, shape);
        if (!t.is_floating_point())
            throw Error(files.dir().string() + ": tensor '" + name + "' has integer dtype, expected F32/F16/BF16");
        // Same dtype on the CPU: keep the zero-copy view of the mapped file.
        return t.to(device, dtype.value_or(t.scalar_type()));
    };
    const int64_t H = c.hiddenSize, I = c.intermediateSize;
    const int64_t qDim = c.numHeads * c.headDim, kvDim = c.numKvHeads * c.headDim;
    LlamaWeights w;
    w.embed = get("model.embed_tokens.weight", {c.vocabSize, H});
    for (int64_t i = 0; i < c.numLayers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        LayerWeights l;
        l.inputNorm = get(p + "input_layernorm.weight", {H});
        l.q = get(p + "self_attn.q_proj.weight", {qDim, H});
        l.k = get(p + "self_attn.k_proj.weight", {kvDim, H});
        l.v = get(p + "self_attn.v_proj.weight", {kvDim, H});
        l.o = get(p + "self_attn.o_proj.weight", {H, qDim});
        if (c.attentionBias || files.has(p + "self_attn.q_proj.bias")) {
            l.qBias = get(p + "self_attn.q_proj.bias", {qDim});
            l.kBias = get(p + "self_attn.k_proj.bias", {kvDim});
            l.vBias = get(p + "self_attn.v_proj.bias", {kvDim});
        }
        if (c.attentionBias || files.has(p + "self_attn.o_proj.bias"))
            l.oBias = get(p + "self_attn.o_proj.bias", {H});
        l.postNorm = get(p + "post_attention_layernorm.weight", {H});
        if (withFfn) {
            l.gate = get(p + "mlp.gate_proj.weight", {I, H});
            l.up = get(p + "mlp.up_proj.weight", {I, H});
            l.down = get(p + "mlp.down_proj.weight", {H, I});
        }
        w.layers.push_back(std::move(l));
    }
    w.finalNorm = get("model.norm.weight", {H});
    if (!c.tieWordEmbeddings)
        w.lmHead = get("lm_head.weight", {c.vocabSize, H});
    return w;
}

} // namespace ladimo::core
