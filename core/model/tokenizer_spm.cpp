// SentencePiece `tokenizer.model` through libsentencepiece, reached via the plugin bridge
// (model/spmapi.h explains why it is a plugin).
#include <memory>

#include "common/error.h"
#include "model/spmapi.h"
#include "model/tokenizer.h"

namespace ladimo::core {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
public:
    explicit SentencePieceTokenizer(const std::filesystem::path& file) : m_api(spmApi())
    {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(file, ec))
            throw Error("cannot open SentencePiece model '" + file.string() + "'");
        std::string error;
        m_model = m_api.load(file.string(), &error);
        if (!m_model)
            throw Error(file.string() + ": not a valid SentencePiece model: " + error);
    }
    ~SentencePieceTokenizer() override { m_api.release(m_model); }

    std::vector<int> encode(const std::string& text) const override
    {
        std::vector<int> ids;
        m_api.encode(m_model, text, &ids);
        return ids;
    }
    std::string decode(const std::vector<int>& ids) const override
    {
        std::vector<int> valid;
        valid.reserve(ids.size());
        for (int id : ids)
            if (id >= 0 && id < vocabSize())
                valid.push_back(id);
        return m_api.decode(m_model, valid);
    }
    int vocabSize() const override { return m_api.size(m_model); }
    std::string piece(int id) const override { return m_api.piece(m_model, checkedId(id)); }
    float score(int id) const override { return m_api.score(m_model, checkedId(id)); }
    TokenType tokenType(int id) const override { return static_cast<TokenType>(m_api.type(m_model, checkedId(id))); }
    int bosId() const override { return m_api.bos(m_model); }
    int eosId() const override { return m_api.eos(m_model); }
    std::string kind() const override { return "sentencepiece"; }

private:
    const SpmApi& m_api;
    SpmModel* m_model = nullptr;
};

} // namespace

int Tokenizer::checkedId(int id) const
{
    if (id < 0 || id >= vocabSize())
        throw Error("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocabSize())
                    + ")");
    return id;
}

std::unique_ptr<Tokenizer> Tokenizer::loadSentencePiece(const std::filesystem::path& modelFile)
{
    return std::make_unique<SentencePieceTokenizer>(modelFile);
}

} // namespace ladimo::core
