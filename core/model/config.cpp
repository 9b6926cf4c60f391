#include "model/config.h"

#include "common/error.h"
#include "common/parse.h"
#include "common/fileutil.h"

namespace ladimo::core {

namespace {

constexpr int64_t kMaxDim = int64_t(1) << 20;   // hidden / intermediate / heads sanity bound
constexpr int64_t kMaxVocab = int64_t(1) << 22; // 4M pieces
constexpr int64_t kMaxLayers = 4096;

// An optional key of one JSON type: `dflt` when absent or null, an Error naming the key when of
// another type.
template <typename T>
T optTyped(const nlohmann::json& j, const char* key, T dflt, const std::string& source,
           bool (nlohmann::json::*isType)() const noexcept, const char* expected)
{
    if (!j.contains(key) || j.at(key).is_null())
        return dflt;
    if (!(j.at(key).*isType)())
        throw Error(source + ": key '" + key + "' must be " + expected + ", got " + j.at(key).dump());
    return j.at(key).get<T>();
}

double optNumber(const nlohmann::json& j, const char* key, double dflt, const std::string& source)
{
    return optTyped(j, key, dflt, source, &nlohmann::json::is_number, "a number");
}

std::optional<int64_t> optInt(const nlohmann::json& j, const char* key, const std::string& source)
{
    if (!j.contains(key) || j.at(key).is_null())
        return std::nullopt;
    const auto& v = j.at(key);
    if (v.is_array()) { // some configs list several eos ids; the first is the canonical one
        if (v.empty() || !v.front().is_number_integer())
            throw Error(source + ": key '" + key + "' must be an integer or a list of integers");
        return v.front().get<int64_t>();
    }
    if (!v.is_number_integer())
        throw Error(source + ": key '" + key + "' must be an integer, got " + v.dump());
    return v.get<int64_t>();
}

std::string optString(const nlohmann::json& j, const char* key, const std::string& dflt, const std::string& source)
{
    return optTyped(j, key, dflt, source, &nlohmann::json::is_string, "a string");
}

bool optBool(const nlohmann::json& j, const char* key, bool dflt, const std::string& source)
{
    return optTyped(j, key, dflt, source, &nlohmann::json::is_boolean, "true or false");
}

} // namespace

ModelConfig ModelConfig::fromJson(const nlohmann::json& j, const std::string& source)
{
    if (!j.is_object())
        throw Error(source + ": expected a JSON object");
    ModelConfig c;
    if (j.contains("architectures")) {
        const auto& a = j.at("architectures");
        if (!a.is_array() || a.empty() || !a.front().is_string())
            throw Error(source + ": 'architectures' must be a non-empty list of strings");
        c.architecture = a.front().get<std::string>();
    }
    if (c.architecture != "LlamaForCausalLM" && c.architecture != "MistralForCausalLM")
        throw Error(source + ": unsupported architecture '" + c.architecture
                    + "' (expected LlamaForCausalLM or MistralForCausalLM)");
    c.modelType = optString(j, "model_type", c.architecture == "MistralForCausalLM" ? "mistral" : "llama", source);
    c.hiddenSize = requireInt(j, "hidden_size", source, 1, kMaxDim);
    c.intermediateSize = requireInt(j, "intermediate_size", source, 1, kMaxDim);
    c.numLayers = requireInt(j, "num_hidden_layers", source, 1, kMaxLayers);
    c.numHeads = requireInt(j, "num_attention_heads", source, 1, kMaxDim);
    c.numKvHeads = j.contains("num_key_value_heads") && !j.at("num_key_value_heads").is_null()
        ? requireInt(j, "num_key_value_heads", source, 1, kMaxDim)
        : c.numHeads;
    c.vocabSize = requireInt(j, "vocab_size", source, 1, kMaxVocab);
    if (j.contains("max_position_embeddings"))
        c.maxPositions = requireInt(j, "max_position_embeddings", source, 1, int64_t(1) << 24);
    if (j.contains("head_dim") && !j.at("head_dim").is_null())
        c.headDim = requireInt(j, "head_dim", source, 1, kMaxDim);
    else {
        if (c.hiddenSize % c.numHeads != 0)
            throw Error(source + ": hidden_size " + std::to_string(c.hiddenSize)
                        + " is not divisible by num_attention_heads " + std::to_string(c.numHeads));
        c.headDim = c.hiddenSize / c.numHeads;
    }
    if (c.headDim % 2 != 0)
        throw Error(source + ": head dimension " + std::to_string(c.headDim) + " must be even for rotary embeddings");
    if (c.numHeads % c.numKvHeads != 0)
        throw Error(source + ": num_attention_heads " + std::to_string(c.numHeads)
                    + " is not a multiple of num_key_value_heads " + std::to_string(c.numKvHeads));
    c.rmsNormEps = optNumber(j, "rms_norm_eps", 1e-6, source);
    c.ropeTheta = optNumber(j, "rope_theta", 10000.0, source);
    if (!(c.rmsNormEps > 0) || !(c.ropeTheta > 0))
        throw Error(source + ": rms_norm_eps and rope_theta must be positive");
    if (j.contains("rope_scaling") && !j.at("rope_scaling").is_null())
        throw Error(source + ": 'rope_scaling' is not supported yet (expected null or absent)");
    if (j.contains("hidden_act") && j.at("hidden_act") != "silu")
        throw Error(source + ": hidden_act " + j.at("hidden_act").dump() + " is not supported (expected \"silu\")");
    c.tieWordEmbeddings = optBool(j, "tie_word_embeddings", false, source);
    c.attentionBias = optBool(j, "attention_bias", false, source);
    if (auto w = optInt(j, "sliding_window", source); w && *w > 0)
        c.slidingWindow = *w;
    if (j.contains("torch_dtype") && j.at("torch_dtype").is_string())
        c.torchDtype = j.at("torch_dtype").get<std::string>();
    if (auto b = optInt(j, "bos_token_id", source))
        c.bosTokenId = *b;
    if (auto e = optInt(j, "eos_token_id", source))
        c.eosTokenId = *e;
    return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& configJson)
{
    const std::string text = readTextFile(configJson, kMaxConfigJsonBytes);
    nlohmann::json j;
    try {
        j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw Error(configJson.string() + ": invalid JSON: " + e.what());
    }
    // Every check in fromJson names its key; a wrong type that slips past them still becomes an
    // Error naming the file, never a JSON library exception.
    try {
        return fromJson(j, configJson.string());
    } catch (const nlohmann::json::exception& e) {
        throw Error(configJson.string() + ": unexpected structure: " + e.what());
    }
}

nlohmann::json ModelConfig::toJson() const
{
    nlohmann::json j;
    j["architectures"] = {architecture};
    j["model_type"] = modelType;
    j["hidden_size"] = hiddenSize;
    j["intermediate_size"] = intermediateSize;
    j["num_hidden_layers"] = numLayers;
    j["num_attention_heads"] = numHeads;
    j["num_key_value_heads"] = numKvHeads;
    if (headDim != hiddenSize / numHeads)
        j["head_dim"] = headDim;
    j["vocab_size"] = vocabSize;
    j["max_position_embeddings"] = maxPositions;
    j["rms_norm_eps"] = rmsNormEps;
    j["rope_theta"] = ropeTheta;
    j["hidden_act"] = "silu";
    j["tie_word_embeddings"] = tieWordEmbeddings;
    j["attention_bias"] = attentionBias;
    j["torch_dtype"] = torchDtype;
    j["bos_token_id"] = bosTokenId;
    j["eos_token_id"] = eosTokenId;
    if (slidingWindow)
        j["sliding_window"] = *slidingWindow;
    return j;
}

void checkSeqLen(int64_t seqLen, const ModelConfig& config)
{
    if (seqLen < 2 || seqLen > config.maxPositions)
        throw Error("sequence length " + std::to_string(seqLen) + " is outside [2, "
                    + std::to_string(config.maxPositions) + "], the model's max_position_embeddings (config.json)");
}

ParameterCounts ModelConfig::parameterCounts() const
{
    ParameterCounts p;
    const int64_t qDim = numHeads * headDim;
    const int64_t kvDim = numKvHeads * headDim;
    p.attentionPerLayer = hiddenSize * qDim + 2 * hiddenSize * kvDim + qDim * hiddenSize;
    if (attentionBias)
        p.attentionPerLayer += qDim + 2 * kvDim + hiddenSize;
    p.ffnPerLayer = 3 * hiddenSize * intermediateSize;
    p.attention = p.attentionPerLayer * numLayers;
    p.ffn = p.ffnPerLayer * numLayers;
    p.norms = (2 * numLayers + 1) * hiddenSize;
    p.embeddings = vocabSize * hiddenSize * (tieWordEmbeddings ? 1 : 2);
    p.total = p.attention + p.ffn + p.norms + p.embeddings;
    return p;
}

} // namespace ladimo::core
