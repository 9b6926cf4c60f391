// ModelConfig: the architecture of a LLaMA-family checkpoint, read from a Hugging Face
// `config.json`. Plain value type; no LibTorch, so GUI code may include it cheaply.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace ladimo::core {

struct ParameterCounts {
    int64_t total = 0;
    int64_t embeddings = 0; // input embeddings + untied lm_head
    int64_t attention = 0;  // q/k/v/o projections (+ biases), all layers
    int64_t ffn = 0;        // gate/up/down, all layers
    int64_t norms = 0;      // RMSNorm weights
    int64_t ffnPerLayer = 0;
    int64_t attentionPerLayer = 0;
};

struct ModelConfig {
    std::string architecture = "LlamaForCausalLM"; // LlamaForCausalLM or MistralForCausalLM
    std::string modelType = "llama";
    int64_t hiddenSize = 0;
    int64_t intermediateSize = 0;
    int64_t numLayers = 0;
    int64_t numHeads = 0;
    int64_t numKvHeads = 0;
    int64_t headDim = 0;
    int64_t vocabSize = 0;
    int64_t maxPositions = 2048;
    double rmsNormEps = 1e-6;
    double ropeTheta = 10000.0;
    bool tieWordEmbeddings = false;
    bool attentionBias = false;
    std::optional<int64_t> slidingWindow; // Mistral; absent = full causal attention
    std::string torchDtype = "float32";
    int64_t bosTokenId = 1;
    int64_t eosTokenId = 2;

    // Parses and validates; `source` names the file in error messages.
    static ModelConfig fromJson(const nlohmann::json& j, const std::string& source);
    static ModelConfig load(const std::filesystem::path& configJson);
    nlohmann::json toJson() const; // Hugging Face keys

    ParameterCounts parameterCounts() const;
};

// A window length the model can take: 2 <= seqLen <= max_position_embeddings. Bounds what a
// setting may make a forward pass allocate (attention is seqLen^2 per head); throws Error.
void checkSeqLen(int64_t seqLen, const ModelConfig& config);

} // namespace ladimo::core
