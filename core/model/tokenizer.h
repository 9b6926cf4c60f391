// Tokenizer: text <-> token ids for a model directory. Two implementations behind one interface:
// SentencePiece `tokenizer.model` (through libsentencepiece) and Hugging Face `tokenizer.json`
// BPE (byte-fallback as in LLaMA-2/Mistral, byte-level as in LLaMA-3/Qwen2).
// Immutable after loading; const methods may be called from any thread.
// No LibTorch here so GUI code may include it.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace ladimo::core {

class Tokenizer {
public:
    // Token kinds, numbered as llama.cpp / GGUF `tokenizer.ggml.token_type` expects.
    enum class TokenType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

    virtual ~Tokenizer() = default;

    // Encodes text without adding BOS/EOS (exactly what SentencePiece's Encode returns).
    virtual std::vector<int> encode(const std::string& text) const = 0;
    virtual std::string decode(const std::vector<int>& ids) const = 0;
    virtual int vocabSize() const = 0;
    virtual std::string piece(int id) const = 0; // the raw vocabulary piece
    virtual float score(int id) const = 0;       // SentencePiece score / BPE merge priority proxy
    virtual TokenType tokenType(int id) const = 0;
    virtual int bosId() const = 0; // -1 when the vocabulary has none
    virtual int eosId() const = 0;
    virtual std::string kind() const = 0; // "sentencepiece", "bpe-byte-fallback", "bpe-byte-level"

    static std::unique_ptr<Tokenizer> loadSentencePiece(const std::filesystem::path& modelFile);
    static std::unique_ptr<Tokenizer> loadHuggingFace(const std::filesystem::path& tokenizerJson);
    // Picks from what the model directory holds: tokenizer.model first, else tokenizer.json.
    // Returns nullptr when the directory has neither (token-id-only checkpoints).
    static std::unique_ptr<Tokenizer> loadForModel(const std::filesystem::path& modelDir);

protected:
    // Returns id, or throws Error when it is outside [0, vocabSize()).
    int checkedId(int id) const;
};

} // namespace ladimo::core
