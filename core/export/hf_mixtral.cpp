#include "export/hf_mixtral.h"

#include <unistd.h>
#include <fcntl.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <random>

#include "common/error.h"
#include "common/parse.h"
#include "common/fileutil.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

// One tensor of the export: its name, shape, and how to produce it (on demand, so a large model
// is never copied whole in the output dtype).
struct Entry {
    std::string name;
    std::vector<int64_t> shape;
    std::function<torch::Tensor()> make;
    int64_t bytes = 0;
};

torch::ScalarType exportDType(const std::string& name)
{
    if (name == "f32" || name == "float32")
        return torch::kFloat32;
    if (name == "bf16" || name == "bfloat16")
        return torch::kBFloat16;
    if (name == "f16" || name == "float16")
        return torch::kFloat16;
    throw Error("export dtype '" + name + "' is not supported (expected f32, bf16 or f16)");
}

const char* torchDtypeName(torch::ScalarType t)
{
    return t == torch::kBFloat16 ? "bfloat16" : t == torch::kFloat16 ? "float16" : "float32";
}

std::string shapeString(const std::vector<int64_t>& s)
{
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i)
        out += (i ? ", " : "") + std::to_string(s[i]);
    return out + "]";
}

std::string humanBytes(double b)
{
    const char* units[] = {"B", "KB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) {
        b /= 1000;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
    return buf;
}

// "0, 2-4, 7"
std::string layerList(const std::vector<int>& layers)
{
    std::string out;
    for (std::size_t i = 0; i < layers.size();) {
        std::size_t j = i;
        while (j + 1 < layers.size() && layers[j + 1] == layers[j] + 1)
            ++j;
        out += (out.empty() ? "" : ", ") + std::to_string(layers[i]);
        if (j > i)
            out += "-" + std::to_string(layers[j]);
        i = j + 1;
    }
    return out;
}

void fsyncDirectory(const fs::path& dir)
{
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

struct Progress {
    const ExportOptions& options;
    int64_t done = 0;
    int64_t total = 0;
    void report() const
    {
        if (options.progress)
            options.progress("export", static_cast<double>(done), static_cast<double>(total));
    }
    void checkCancel() const { options.cancel.throwIfCancelled(); }
};

// Streams one safetensors file (8-byte aligned data, as writeSafetensors), producing each tensor
// only when it is written; checks cancellation before every tensor.
void writeShard(const fs::path& file, const std::vector<const Entry*>& entries, torch::ScalarType dtype,
                Progress& progress)
{
    const StDType st = fromTorch(dtype);
    nlohmann::json header = nlohmann::json::object();
    header["__metadata__"] = {{"format", "pt"}};
    uint64_t offset = 0;
    for (const Entry* e : entries) {
        header[e->name] = {{"dtype", dtypeName(st)},
                           {"shape", e->shape},
                           {"data_offsets", {offset, offset + static_cast<uint64_t>(e->bytes)}}};
        offset += static_cast<uint64_t>(e->bytes);
    }
    std::string h = header.dump();
    while ((8 + h.size()) % 8 != 0)
        h.push_back(' ');
    atomicWriteOutput(file, [&](OutputFile& out) {
        writeSafetensorsHeader(out, h);
        for (const Entry* e : entries) {
            progress.checkCancel();
            const torch::Tensor t = e->make().detach().to(torch::kCPU, dtype).contiguous();
            if (t.sizes().vec() != e->shape)
                throw Error("export: tensor '" + e->name + "' has shape " + shapeString(t.sizes().vec()) + ", expected "
                            + shapeString(e->shape));
            out.write(t.data_ptr(), static_cast<std::size_t>(e->bytes));
            progress.done += e->bytes;
            progress.report();
        }
    });
}

// Removes the temporary export directory unless the export reached its final rename.
class TempDirGuard {
public:
    explicit TempDirGuard(fs::path dir) : m_dir(std::move(dir)) { }
    ~TempDirGuard()
    {
        if (!m_dir.empty()) {
            std::error_code ec;
            fs::remove_all(m_dir, ec);
        }
    }
    void release() { m_dir.clear(); }

private:
    fs::path m_dir;
};

const char* const kTokenizerFiles[] = {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                                       "special_tokens_map.json", "generation_config.json"};

// The Hugging Face MoE layouts the conversion exports to.
//  Mixtral: block_sparse_moe.{gate, experts.E.w1/w2/w3}; every expert routed.
//  Qwen2-MoE: mlp.{gate, experts.E.gate_proj/up_proj/down_proj, shared_expert.*,
//  shared_expert_gate}; always-on neurons go to the shared expert (its sigmoid gate of zeros
//  weighs it 0.5, so its down projection is doubled: exact), q/k/v carry (zero) biases, and
//  norm_topk_prob chooses renormalised (true) or plain (false) softmax weights.
enum class HfLayout { Mixtral, Qwen2Moe };

// What the layout computes differently from the workbench under this policy, one plain sentence each.
std::vector<std::string> mixtralDifferences(const PolicyRules& rules, Gating gating, int k, int64_t experts,
                                            HfLayout layout)
{
    std::vector<std::string> notes;
    std::map<std::string, std::vector<int>> byRule;
    std::vector<std::string> order;
    for (std::size_t l = 0; l < rules.size(); ++l) {
        if (rules[l].topK == k)
            continue;
        const std::string d = describeRule(rules[l], experts);
        if (!byRule.count(d))
            order.push_back(d);
        byRule[d].push_back(static_cast<int>(l));
    }
    for (const auto& d : order) {
        const auto& layers = byRule[d];
        const bool topP = d.rfind("p=", 0) == 0;
        notes.push_back(std::string(layers.size() == 1 ? "layer " : "layers ") + layerList(layers) + " used "
                        + (topP ? "top-p " + d.substr(2) : "top-k " + d.substr(2)) + "; "
                        + (layout == HfLayout::Qwen2Moe ? "Qwen2-MoE" : "Mixtral") + " uses k=" + std::to_string(k)
                        + " everywhere");
    }
    if (gating == Gating::Hard)
        notes.push_back(layout == HfLayout::Qwen2Moe
                            ? "hard gating (weight 1 per chosen expert) becomes plain softmax weights "
                              "(norm_topk_prob false: each chosen expert weighs its routing probability)"
                            : "hard gating (weight 1 per chosen expert) becomes renormalised softmax weights "
                              "(the chosen experts' weights sum to 1)");
    else if (gating == Gating::Plain && layout == HfLayout::Mixtral)
        notes.push_back("plain softmax weights (not renormalised over the chosen experts) become renormalised "
                        "softmax weights (the chosen experts' weights sum to 1)");
    return notes;
}

bool declaresMixtral(const nlohmann::json& j)
{
    if (!j.is_object())
        return false;
    if (j.value("model_type", std::string()) == "mixtral")
        return true;
    const auto it = j.find("architectures");
    return it != j.end() && it->is_array() && !it->empty() && it->front() == "MixtralForCausalLM";
}

ExportReport exportHf(const ExportInput& in, const ExportOptions& options, HfLayout layout);

} // namespace

ExportReport exportHfMixtral(const ExportInput& in, const ExportOptions& options)
{
    return exportHf(in, options, HfLayout::Mixtral);
}

ExportReport exportHfQwen2Moe(const ExportInput& in, const ExportOptions& options)
{
    if (!in.layers)
        throw Error("export: hf-qwen2-moe writes a conversion, and this export has no converted layers");
    return exportHf(in, options, HfLayout::Qwen2Moe);
}

namespace {

ExportReport exportHf(const ExportInput& in, const ExportOptions& options, HfLayout layout)
{
    const bool qwen = layout == HfLayout::Qwen2Moe;
    const char* const layoutName = qwen ? "Qwen2-MoE" : "Mixtral";
    if (!in.model)
        throw Error("export: no model given");
    torch::NoGradGuard noGrad;
    const auto& c = in.model->config();
    const torch::ScalarType dtype = exportDType(options.dtype);
    const int64_t elementSize = static_cast<int64_t>(dtypeSize(fromTorch(dtype)));
    const int L = static_cast<int>(c.numLayers);
    const bool moe = in.layers != nullptr;
    if (options.out.empty())
        throw Error("export: no output directory given");

    fs::path out = fs::absolute(options.out).lexically_normal();
    if (!out.has_filename())
        out = out.parent_path();
    std::error_code ec;
    if (fs::exists(out, ec)) {
        if (!fs::is_directory(out, ec))
            throw Error("export: destination '" + out.string() + "' exists and is not a directory");
        if (!fs::is_empty(out, ec))
            throw Error("export: destination '" + out.string()
                        + "' already exists and is not empty; choose a new directory (nothing was written)");
    }
    const fs::path parent = out.parent_path();
    fs::create_directories(parent, ec);
    if (!fs::is_directory(parent))
        throw Error("export: cannot create the folder '" + parent.string() + "'");
    removeStaleExportTemporaries(out, options);

    ExportReport report;
    nlohmann::json config;
    std::vector<Entry> entries;
    // Tensor by tensor: a streamed model reads each from its checkpoint as it is written.
    const auto weights = in.model->namedWeights();
    auto plain = [&](const NamedWeight& w) { entries.push_back({w.name, w.shape, w.get, 0}); };
    auto has = [&](const std::string& name) {
        return std::any_of(weights.begin(), weights.end(), [&](const NamedWeight& w) { return w.name == name; });
    };

    if (!moe) {
        for (const auto& w : weights)
            plain(w);
        for (int l = 0; l < L; ++l)
            if (!has("model.layers." + std::to_string(l) + ".mlp.gate_proj.weight"))
                throw Error("export: layer " + std::to_string(l) + " has no dense FFN; a dense export needs one");
        config = c.toJson();
        config["torch_dtype"] = torchDtypeName(dtype);
    } else {
        const auto& layers = *in.layers;
        if (static_cast<int>(layers.size()) != L)
            throw Error("export: " + std::to_string(layers.size()) + " MoE layers for a model of " + std::to_string(L)
                        + " layers (expected one per layer)");
        const int64_t H = c.hiddenSize;
        int64_t N = 0;
        int64_t S = 0; // the common expert width: the largest real expert of any layer
        int64_t M = 0; // the common shared-expert width (Qwen2-MoE): the most shared neurons of any layer
        nlohmann::json shared = nlohmann::json::array();
        const Gating gating = layers.front().gating;
        nlohmann::json sizes = nlohmann::json::array(), widths = nlohmann::json::array();
        for (int l = 0; l < L; ++l) {
            const auto& m = layers[static_cast<std::size_t>(l)];
            const std::string where = "export: MoE layer " + std::to_string(l);
            if (!m.router.defined() || !m.gate.defined() || !m.up.defined() || !m.down.defined())
                throw Error(where + " is missing (no router or experts)");
            if (l == 0)
                N = m.numExperts();
            const int64_t W = m.gate.size(1);
            if (m.router.sizes().vec() != std::vector<int64_t>{N, H}
                || m.gate.sizes().vec() != std::vector<int64_t>{N, W, H} || m.up.sizes() != m.gate.sizes()
                || m.down.sizes().vec() != std::vector<int64_t>{N, H, W} || static_cast<int64_t>(m.sizes.size()) != N)
                throw Error(where + ": router " + shapeString(m.router.sizes().vec()) + ", gate "
                            + shapeString(m.gate.sizes().vec()) + ", down " + shapeString(m.down.sizes().vec())
                            + " do not match " + std::to_string(N) + " experts of hidden size " + std::to_string(H));
            if (m.gating != gating)
                throw Error(where + " has gating '" + gatingName(m.gating) + "', layer 0 has '" + gatingName(gating)
                            + "' (one gating per export)");
            if (m.sharedNeurons() > 0 && !qwen)
                throw Error(where + " has " + std::to_string(m.sharedNeurons())
                            + " always-on (shared) neurons, which the Mixtral layout cannot hold (every Mixtral "
                              "expert is routed): export as hf-qwen2-moe, whose shared expert holds them");
            requireSharedNeuronShapes(m, H, where);
            M = std::max(M, m.sharedNeurons());
            shared.push_back(m.sharedNeurons());
            for (auto s : m.sizes) {
                if (s < 0 || s > W)
                    throw Error(where + ": expert size " + std::to_string(s) + " exceeds its stored width "
                                + std::to_string(W));
                S = std::max(S, s);
            }
            sizes.push_back(m.sizes);
            widths.push_back(W);
        }
        if (S == 0)
            throw Error("export: every expert is empty");
        for (const auto& w : weights) {
            const auto& n = w.name;
            const bool bias = n.find(".self_attn.") != std::string::npos && n.size() > 5
                && n.compare(n.size() - 5, 5, ".bias") == 0;
            if (!qwen && (c.attentionBias || bias))
                throw Error("export: the model has attention biases, which Mixtral's attention does not have "
                            "(Hugging Face MixtralAttention uses bias=False)");
            if (qwen && bias && n.find(".o_proj.") != std::string::npos)
                throw Error("export: the model has an output projection bias (" + n
                            + "), which Qwen2-MoE's attention does not have (only q, k and v carry biases)");
        }
        // A shared expert of at least one neuron: a layer without shared neurons gets zero rows, exact.
        if (qwen)
            M = std::max<int64_t>(M, 1);

        PolicyRules rules = in.rules;
        if (rules.empty() && options.expertsPerToken > 0)
            rules = uniformRules(L, RoutingRule::staticK(options.expertsPerToken));
        if (static_cast<int>(rules.size()) != L)
            throw Error("export: the policy has " + std::to_string(rules.size()) + " rules for " + std::to_string(L)
                        + " layers (expected one per layer)");
        int uniformK = 0;
        const bool uniform = isUniformStatic(rules, &uniformK);
        int k = options.expertsPerToken;
        if (k < 0 || k > N)
            throw Error("export: experts per token " + std::to_string(k) + " is outside 1.." + std::to_string(N));
        if (k == 0) {
            if (!uniform)
                throw Error(
                    "export: policy '" + in.policyName + "' is not one static top-k in every layer, but " + layoutName
                    + " uses one k (num_experts_per_tok) for all layers: choose the k to write (--top-k K); the "
                      "export then states what changes");
            if (gating == Gating::Hard || (gating == Gating::Plain && !qwen))
                throw Error(std::string("export: the conversion used '") + gatingName(gating) + "' gating, but "
                            + layoutName
                            + (qwen ? " weighs the chosen experts by their softmax weights"
                                    : " renormalises the softmax weights over the chosen experts")
                            + ": choose the k to write (--top-k K) to accept that change; the export then states "
                              "what changes");
            k = uniformK;
        }
        if (k < 1 || k > N)
            throw Error("export: top-k " + std::to_string(k) + " is outside 1.." + std::to_string(N));
        report.expertsPerToken = k;
        report.notes = mixtralDifferences(rules, gating, k, N, layout);
        report.exact = report.notes.empty();

        for (const auto& w : weights) {
            const std::string& name = w.name;
            if (name.find(".mlp.") != std::string::npos)
                continue;
            plain(w);
            const std::string suffix = "post_attention_layernorm.weight";
            if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
                continue;
            const int l = std::stoi(name.substr(std::string("model.layers.").size()));
            const MoeLayer* m = &layers[static_cast<std::size_t>(l)];
            const std::string layerPrefix = "model.layers." + std::to_string(l) + ".";
            const std::string p = layerPrefix + (qwen ? "mlp." : "block_sparse_moe.");
            entries.push_back({p + "gate.weight", {N, H}, [m] { return m->router; }, 0});
            if (qwen) {
                // Qwen2 attention has q/k/v biases: zeros where the model has none.
                for (const char* proj : {"q_proj", "k_proj", "v_proj"}) {
                    const std::string b = layerPrefix + "self_attn." + proj + ".bias";
                    const int64_t rows = (proj[0] == 'q' ? c.numHeads : c.numKvHeads) * c.headDim;
                    if (!has(b))
                        entries.push_back({b, {rows}, [rows] { return torch::zeros({rows}); }, 0});
                }
                const int64_t ms = m->sharedNeurons();
                const std::string x = p + "shared_expert.";
                auto sharedRows = [m, ms, M](const torch::Tensor MoeLayer::*t) {
                    return ms == 0 ? torch::zeros({M, m->router.size(1)})
                                   : torch::constant_pad_nd((*m).*t, {0, 0, 0, M - ms});
                };
                entries.push_back(
                    {x + "gate_proj.weight", {M, H}, [=] { return sharedRows(&MoeLayer::sharedGate); }, 0});
                entries.push_back({x + "up_proj.weight", {M, H}, [=] { return sharedRows(&MoeLayer::sharedUp); }, 0});
                // sigmoid(0) = 0.5 weighs the shared expert: twice its down projection is exact.
                entries.push_back({x + "down_proj.weight",
                                   {H, M},
                                   [m, ms, M] {
                                       return ms == 0 ? torch::zeros({m->router.size(1), M})
                                                      : torch::constant_pad_nd(2 * m->sharedDown, {0, M - ms});
                                   },
                                   0});
                entries.push_back({p + "shared_expert_gate.weight", {1, H}, [H] { return torch::zeros({1, H}); }, 0});
            }
            for (int64_t e = 0; e < N; ++e) {
                // Real neurons only, zero-padded to the common width: exact, whatever the stored padding held.
                const std::string x = p + "experts." + std::to_string(e) + ".";
                const int64_t s = m->sizes[static_cast<std::size_t>(e)];
                entries.push_back({x + (qwen ? "gate_proj.weight" : "w1.weight"),
                                   {S, H},
                                   [m, e, s, S] {
                                       return torch::constant_pad_nd(m->gate[e].narrow(0, 0, s), {0, 0, 0, S - s});
                                   },
                                   0});
                entries.push_back({x + (qwen ? "down_proj.weight" : "w2.weight"),
                                   {H, S},
                                   [m, e, s, S] {
                                       return torch::constant_pad_nd(m->down[e].narrow(1, 0, s), {0, S - s});
                                   },
                                   0});
                entries.push_back({x + (qwen ? "up_proj.weight" : "w3.weight"),
                                   {S, H},
                                   [m, e, s, S] {
                                       return torch::constant_pad_nd(m->up[e].narrow(0, 0, s), {0, 0, 0, S - s});
                                   },
                                   0});
            }
        }

        const auto policy = policyDocument(in.policyName, rules, gating, N);
        config = c.toJson();
        config.erase("attention_bias");
        if (qwen) {
            config["architectures"] = {"Qwen2MoeForCausalLM"};
            config["model_type"] = "qwen2_moe";
            config["moe_intermediate_size"] = S;
            config["shared_expert_intermediate_size"] = M;
            config["num_experts"] = N;
            config["norm_topk_prob"] = gating == Gating::Renorm;
            config["decoder_sparse_step"] = 1;
            config["mlp_only_layers"] = nlohmann::json::array();
            config["use_sliding_window"] = static_cast<bool>(c.slidingWindow);
            config["sliding_window"] = c.slidingWindow ? nlohmann::json(*c.slidingWindow) : nlohmann::json(nullptr);
            config["max_window_layers"] = L;
            config["router_aux_loss_coef"] = 0.001;
        } else {
            config["architectures"] = {"MixtralForCausalLM"};
            config["model_type"] = "mixtral";
            config["intermediate_size"] = S;
            config["num_local_experts"] = N;
            config["sliding_window"] = c.slidingWindow ? nlohmann::json(*c.slidingWindow) : nlohmann::json(nullptr);
            config["router_aux_loss_coef"] = 0.02;
        }
        config["num_experts_per_tok"] = k;
        config["output_router_logits"] = false;
        config["router_jitter_noise"] = 0.0;
        config["attention_dropout"] = 0.0;
        config["use_cache"] = true;
        config["torch_dtype"] = torchDtypeName(dtype);
        nlohmann::json ladimo
            = {{"format", "ladimo-export"},
               {"version", 1},
               {"policy", policy},
               {"experts_per_token", k},
               {"exact", report.exact},
               {"notes", report.notes},
               {"expert_sizes", sizes},
               {"shared_neurons", shared},
               {"layer_widths", widths},
               {"source_model",
                in.modelDir.empty() ? std::string() : fs::absolute(in.modelDir).lexically_normal().string()},
               {"source_config", c.toJson()},
               {"tool_version", LADIMO_VERSION}};
        if (!in.conversion.is_null())
            ladimo["conversion"] = in.conversion;
        config["ladimo"] = ladimo;
    }

    // Plan the shards.
    int64_t total = 0;
    for (auto& e : entries) {
        int64_t n = 1;
        for (auto d : e.shape)
            n *= d;
        e.bytes = n * elementSize;
        total += e.bytes;
    }
    std::vector<std::vector<const Entry*>> shards(1);
    int64_t shardSize = 0;
    for (const auto& e : entries) {
        if (options.shardBytes > 0 && !shards.back().empty() && shardSize + e.bytes > options.shardBytes) {
            shards.emplace_back();
            shardSize = 0;
        }
        shards.back().push_back(&e);
        shardSize += e.bytes;
    }

    // Free space: the tensors, the copied tokenizer files and some room for the small JSON files.
    int64_t needed = total + (1 << 20);
    for (const char* name : kTokenizerFiles)
        if (!in.modelDir.empty() && fs::is_regular_file(in.modelDir / name, ec))
            needed += static_cast<int64_t>(fs::file_size(in.modelDir / name, ec));
    const auto space = fs::space(parent, ec);
    if (!ec && static_cast<int64_t>(std::min<uintmax_t>(space.available, INT64_MAX)) < needed)
        throw Error("export: '" + parent.string() + "' has " + humanBytes(static_cast<double>(space.available))
                    + " free, the export needs about " + humanBytes(static_cast<double>(needed)));

    writeExport(out, [&] {
        const fs::path tmp = temporarySibling(out);
        if (!fs::create_directory(tmp, ec) || ec)
            throw Error("export: cannot create the temporary folder '" + tmp.string() + "'");
        TempDirGuard guard(tmp);

        Progress progress{options, 0, total};
        progress.report();
        std::vector<std::string> files;
        if (shards.size() == 1) {
            writeShard(tmp / "model.safetensors", shards.front(), dtype, progress);
            files.push_back("model.safetensors");
        } else {
            nlohmann::json weightMap = nlohmann::json::object();
            char name[64];
            for (std::size_t i = 0; i < shards.size(); ++i) {
                std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, shards.size());
                writeShard(tmp / name, shards[i], dtype, progress);
                files.push_back(name);
                for (const Entry* e : shards[i])
                    weightMap[e->name] = name;
            }
            const nlohmann::json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weightMap}};
            atomicWriteFile(tmp / "model.safetensors.index.json", index.dump(2) + "\n");
            files.push_back("model.safetensors.index.json");
        }
        progress.checkCancel();
        atomicWriteFile(tmp / "config.json", config.dump(2) + "\n");
        files.push_back("config.json");
        if (moe) {
            atomicWriteFile(tmp / "routing_policy.json", config["ladimo"]["policy"].dump(2) + "\n");
            files.push_back("routing_policy.json");
        }
        for (const char* name : kTokenizerFiles) {
            if (in.modelDir.empty() || !fs::is_regular_file(in.modelDir / name, ec))
                continue;
            atomicWriteFile(tmp / name, readTextFile(in.modelDir / name));
            files.push_back(name);
        }
        std::sort(files.begin(), files.end());
        std::string manifest;
        for (const auto& f : files) {
            progress.checkCancel();
            manifest += f + " " + sha256File(tmp / f) + "\n";
            report.bytes += static_cast<int64_t>(fs::file_size(tmp / f));
            report.files.push_back(out / f);
        }
        report.sha256 = sha256Bytes(manifest.data(), manifest.size());
        progress.checkCancel();
        fsyncDirectory(tmp);
        fs::rename(tmp, out, ec); // replaces an empty destination folder
        if (ec)
            throw Error("export: cannot move the finished export into '" + out.string() + "': " + ec.message());
        guard.release();
        fsyncDirectory(parent);
    });
    return report;
}

} // namespace

bool isHfMixtralDir(const fs::path& dir)
{
    std::error_code ec;
    if (!fs::is_regular_file(dir / "config.json", ec))
        return false;
    try {
        return declaresMixtral(nlohmann::json::parse(readTextFile(dir / "config.json", kMaxConfigJsonBytes)));
    } catch (const std::exception&) {
        return false; // not readable as JSON: the regular loader reports it
    }
}

LoadedMixtral loadHfMixtral(const fs::path& dir, const LoadOptions& options)
{
    const fs::path configFile = dir / "config.json";
    const std::string src = configFile.string();
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(readTextFile(configFile, kMaxConfigJsonBytes));
    } catch (const nlohmann::json::exception& e) {
        throw Error(src + ": invalid JSON: " + e.what());
    }
    if (!declaresMixtral(j))
        throw Error(src
                    + ": not a Mixtral config (expected \"model_type\": \"mixtral\" or "
                      "\"architectures\": [\"MixtralForCausalLM\"])");
    const int64_t N = requireInt(j, "num_local_experts", src, 1, 1 << 16);
    const int64_t k = requireInt(j, "num_experts_per_tok", src, 1, N);
    const int64_t S = requireInt(j, "intermediate_size", src, 1, int64_t(1) << 20);
    // The attention/embedding part is a LLaMA model; its dense intermediate size only feeds
    // parameter counts (the source model's when recorded, else all experts together).
    nlohmann::json llama = j;
    llama["architectures"] = {"LlamaForCausalLM"};
    llama["model_type"] = "llama";
    nlohmann::json ladimo = j.contains("ladimo") ? j.at("ladimo") : nlohmann::json();
    if (!ladimo.is_null() && !ladimo.is_object())
        throw Error(src + ": key 'ladimo' must be an object");
    ModelConfig c = ModelConfig::fromJson(llama, src);
    c.intermediateSize = N * S;
    if (ladimo.is_object() && ladimo.contains("source_config"))
        c.intermediateSize = requireInt(ladimo.at("source_config"), "intermediate_size",
                                        src + ": key 'ladimo.source_config'", 1, int64_t(1) << 20);
    const int L = static_cast<int>(c.numLayers);
    const int64_t H = c.hiddenSize;

    // Real expert sizes and stored widths per layer, when the export recorded them.
    std::vector<std::vector<int64_t>> sizes(static_cast<std::size_t>(L),
                                            std::vector<int64_t>(static_cast<std::size_t>(N), S));
    std::vector<int64_t> widths(static_cast<std::size_t>(L), S);
    if (ladimo.is_object() && ladimo.contains("expert_sizes")) {
        const auto& js = ladimo.at("expert_sizes");
        const std::string where = src + ": key 'ladimo.expert_sizes'";
        if (!js.is_array() || static_cast<int>(js.size()) != L)
            throw Error(where + " must list the expert sizes of each of the " + std::to_string(L) + " layers");
        for (int l = 0; l < L; ++l) {
            const auto& row = js[static_cast<std::size_t>(l)];
            if (!row.is_array() || static_cast<int64_t>(row.size()) != N)
                throw Error(where + ": layer " + std::to_string(l) + " must list " + std::to_string(N) + " sizes");
            for (int64_t e = 0; e < N; ++e) {
                const auto& v = row[static_cast<std::size_t>(e)];
                if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > S)
                    throw Error(where + ": layer " + std::to_string(l) + " expert " + std::to_string(e) + " size "
                                + v.dump() + " is outside 0.." + std::to_string(S));
                sizes[static_cast<std::size_t>(l)][static_cast<std::size_t>(e)] = v.get<int64_t>();
            }
        }
    }
    if (ladimo.is_object() && ladimo.contains("layer_widths")) {
        const auto& jw = ladimo.at("layer_widths");
        const std::string where = src + ": key 'ladimo.layer_widths'";
        if (!jw.is_array() || static_cast<int>(jw.size()) != L)
            throw Error(where + " must list the expert width of each of the " + std::to_string(L) + " layers");
        for (int l = 0; l < L; ++l) {
            const auto& v = jw[static_cast<std::size_t>(l)];
            const auto& s = sizes[static_cast<std::size_t>(l)];
            if (!v.is_number_integer() || v.get<int64_t>() < *std::max_element(s.begin(), s.end()))
                throw Error(where + ": layer " + std::to_string(l) + " width " + v.dump()
                            + " is smaller than its largest expert");
            widths[static_cast<std::size_t>(l)] = v.get<int64_t>();
        }
    }

    const auto filesPtr = std::make_shared<const CheckpointFiles>(CheckpointFiles::open(dir));
    const auto& files = *filesPtr;
    // The dense part (embeddings, attention, norms, head), resident or streamed as a dense model.
    LlamaModel model = LlamaModel::fromCheckpoint(c, filesPtr, options, /*withFfn=*/false);
    auto get = [&](const std::string& name, std::vector<int64_t> shape) {
        auto t = files.tensor(name, shape); // checks name, shape and dtype from the header
        if (!t.is_floating_point())
            throw Error(dir.string() + ": tensor '" + name + "' has integer dtype, expected F32/F16/BF16");
        return files.read(name).to(options.device, options.dtype); // read, not mapped: nothing stays resident
    };
    std::vector<MoeLayer> layers;
    for (int l = 0; l < L; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".block_sparse_moe.";
        const int64_t W = widths[static_cast<std::size_t>(l)];
        MoeLayer m;
        m.router = get(p + "gate.weight", {N, H});
        std::vector<torch::Tensor> g, u, d;
        for (int64_t e = 0; e < N; ++e) {
            const std::string x = p + "experts." + std::to_string(e) + ".";
            g.push_back(get(x + "w1.weight", {S, H}));
            d.push_back(get(x + "w2.weight", {H, S}));
            u.push_back(get(x + "w3.weight", {S, H}));
        }
        m.gate = torch::stack(g);
        m.up = torch::stack(u);
        m.down = torch::stack(d);
        if (W < S) {
            m.gate = m.gate.narrow(1, 0, W).contiguous();
            m.up = m.up.narrow(1, 0, W).contiguous();
            m.down = m.down.narrow(2, 0, W).contiguous();
        } else if (W > S) {
            m.gate = torch::constant_pad_nd(m.gate, {0, 0, 0, W - S});
            m.up = torch::constant_pad_nd(m.up, {0, 0, 0, W - S});
            m.down = torch::constant_pad_nd(m.down, {0, W - S});
        }
        m.sizes = sizes[static_cast<std::size_t>(l)];
        layers.push_back(std::move(m));
    }

    PolicyRules rules = uniformRules(L, RoutingRule::staticK(static_cast<int>(k)));
    Gating gating = Gating::Renorm;
    std::string policyName, sourceModel;
    if (ladimo.is_object()) {
        if (ladimo.contains("policy")) {
            const auto doc = parsePolicyDocument(ladimo.at("policy"), L, N, src + ": key 'ladimo.policy'");
            rules = doc.rules;
            gating = doc.gating;
            policyName = doc.name;
        }
        if (ladimo.contains("source_model") && ladimo.at("source_model").is_string())
            sourceModel = ladimo.at("source_model").get<std::string>();
    }
    for (auto& m : layers)
        m.gating = gating;
    return LoadedMixtral{std::move(model),    std::move(layers), std::move(rules), gating,
                         static_cast<int>(k), policyName,        sourceModel,      ladimo};
}

void requireSharedNeuronShapes(const MoeLayer& m, int64_t hidden, const std::string& where)
{
    if (m.sharedNeurons() > 0
        && (m.sharedGate.dim() != 2 || m.sharedGate.size(1) != hidden || m.sharedUp.sizes() != m.sharedGate.sizes()
            || m.sharedDown.sizes().vec() != std::vector<int64_t>{hidden, m.sharedNeurons()}))
        throw Error(where + ": shared neurons shared_gate " + shapeString(m.sharedGate.sizes().vec()) + ", shared_down "
                    + shapeString(m.sharedDown.sizes().vec()) + " do not match hidden size " + std::to_string(hidden));
}

} // namespace ladimo::core
