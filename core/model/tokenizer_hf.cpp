// Hugging Face tokenizer.json BPE, written against the tokenizers format: byte-fallback models
// (LLaMA-2 / Mistral: "▁" metaspace, <0xXX> byte tokens) and byte-level models (GPT-2 /
// LLaMA-3 / Qwen2: bytes mapped to printable characters, regex pre-tokenization via PCRE2).
//
// Pipeline per encode, as the tokenizers library runs it: split off non-special added tokens,
// then for every remaining segment normalizer -> pre-tokenizer stages -> BPE per pre-token.
// Deliberate differences from the library, so that the result equals SentencePiece's Encode:
// special added tokens (<s>, </s>, <|begin_of_text|>) are never read from text, and in
// byte-fallback mode malformed UTF-8 bytes become U+FFFD one byte at a time (SentencePiece's
// normaliser does that; the library cannot even hold such a string).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <queue>
#include <set>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/tokenizer.h"

namespace ladimo::core {

namespace {

constexpr std::size_t kMaxVocab = 1u << 22;
constexpr uint64_t kMaxFileBytes = 512ull << 20;
const std::string kMetaspace = "\xE2\x96\x81";       // U+2581 "▁"
const std::string kReplacementChar = "\xEF\xBF\xBD"; // U+FFFD
// GPT-2's pre-tokenizer pattern, used when ByteLevel has use_regex (its default).
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Length of the well-formed UTF-8 character at s[i], 0 when it is malformed. Same rules as
// SentencePiece's DecodeUTF8 (no overlongs, no surrogates, nothing above U+10FFFF), so the
// byte-fallback path replaces exactly the bytes SentencePiece replaces.
std::size_t validUtf8Length(const std::string& s, std::size_t i)
{
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const auto trail = [&](std::size_t k) { return k < s.size() && (byte(k) & 0xC0) == 0x80; };
    const unsigned char c = byte(i);
    if (c < 0x80)
        return 1;
    uint32_t cp = 0;
    std::size_t n = 0;
    if ((c & 0xE0) == 0xC0 && trail(i + 1)) {
        cp = ((c & 0x1Fu) << 6) | (byte(i + 1) & 0x3Fu);
        n = cp >= 0x80 ? 2 : 0;
    } else if ((c & 0xF0) == 0xE0 && trail(i + 1) && trail(i + 2)) {
        cp = ((c & 0x0Fu) << 12) | ((byte(i + 1) & 0x3Fu) << 6) | (byte(i + 2) & 0x3Fu);
        n = cp >= 0x800 ? 3 : 0;
    } else if ((c & 0xF8) == 0xF0 && trail(i + 1) && trail(i + 2) && trail(i + 3)) {
        cp = ((c & 0x07u) << 18) | ((byte(i + 1) & 0x3Fu) << 12) | ((byte(i + 2) & 0x3Fu) << 6) | (byte(i + 3) & 0x3Fu);
        n = cp >= 0x10000 ? 4 : 0;
    }
    const bool scalar = cp < 0xD800 || (cp >= 0xE000 && cp <= 0x10FFFF);
    return scalar ? n : 0;
}

// Length of the unit starting at s[i] for walking text that is not known to be valid: a
// malformed byte is a unit of its own.
std::size_t unitLength(const std::string& s, std::size_t i)
{
    const std::size_t n = validUtf8Length(s, i);
    return n == 0 ? 1 : n;
}

std::string codepointToUtf8(uint32_t cp)
{
    std::string s;
    if (cp < 0x80)
        s += char(cp);
    else if (cp < 0x800) {
        s += char(0xC0 | (cp >> 6));
        s += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        s += char(0xE0 | (cp >> 12));
        s += char(0x80 | ((cp >> 6) & 0x3F));
        s += char(0x80 | (cp & 0x3F));
    } else {
        s += char(0xF0 | (cp >> 18));
        s += char(0x80 | ((cp >> 12) & 0x3F));
        s += char(0x80 | ((cp >> 6) & 0x3F));
        s += char(0x80 | (cp & 0x3F));
    }
    return s;
}

std::string replaceAll(std::string s, const std::string& from, const std::string& to)
{
    if (from.empty())
        return s;
    std::size_t pos = 0;
    while ((pos = s.find(from, pos)) != std::string::npos) {
        s.replace(pos, from.size(), to);
        pos += to.size();
    }
    return s;
}

// The byte of a "<0xXX>" piece, -1 for any other piece (a hostile vocabulary may hold "<0xZZ>").
int byteOfPiece(const std::string& p)
{
    if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>')
        return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
        const char c = p[static_cast<std::size_t>(k)];
        const int d = c >= '0' && c <= '9' ? c - '0'
            : c >= 'A' && c <= 'F'         ? c - 'A' + 10
            : c >= 'a' && c <= 'f'         ? c - 'a' + 10
                                           : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

uint64_t pairKey(int a, int b)
{
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct PcreDeleter {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
    void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

class HfBpeTokenizer final : public Tokenizer {
public:
    explicit HfBpeTokenizer(const std::filesystem::path& file) : m_file(file.string())
    {
        std::error_code ec;
        const auto size = std::filesystem::file_size(file, ec);
        if (ec)
            throw Error("cannot open tokenizer '" + m_file + "'");
        if (size > kMaxFileBytes)
            throw Error(m_file + ": tokenizer file larger than 512 MiB");
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(readTextFile(file));
        } catch (const nlohmann::json::exception& e) {
            throw Error(m_file + ": invalid JSON: " + e.what());
        }
        // Every structural check below names its key; a wrong type that slips past them still
        // surfaces as an Error naming the file and the section being read.
        try {
            load(j);
        } catch (const nlohmann::json::exception& e) {
            throw Error(m_file + ": unexpected structure in '" + m_section + "': " + e.what());
        }
    }

    std::vector<int> encode(const std::string& text) const override
    {
        std::vector<int> out;
        // Non-special added tokens are cut out of the raw text first, leftmost then longest, as
        // the tokenizers library does. Each token's next occurrence is cached so a long text
        // with many matches stays linear per token.
        std::vector<std::size_t> next(m_added.size(), 0);
        std::vector<bool> fresh(m_added.size(), false);
        std::size_t pos = 0;
        bool first = true;
        while (pos <= text.size()) {
            std::size_t best = std::string::npos, bestLen = 0;
            int bestId = -1;
            for (std::size_t k = 0; k < m_added.size(); ++k) {
                if (!fresh[k] || (next[k] != std::string::npos && next[k] < pos)) {
                    next[k] = text.find(m_added[k].first, pos);
                    fresh[k] = true;
                }
                const std::size_t f = next[k];
                if (f != std::string::npos && (f < best || (f == best && m_added[k].first.size() > bestLen))) {
                    best = f;
                    bestLen = m_added[k].first.size();
                    bestId = m_added[k].second;
                }
            }
            const std::size_t end = best == std::string::npos ? text.size() : best;
            if (end > pos)
                encodeSegment(text.substr(pos, end - pos), first, out);
            first = false;
            if (best == std::string::npos)
                break;
            out.push_back(bestId);
            pos = best + bestLen;
        }
        return out;
    }

    std::string decode(const std::vector<int>& ids) const override
    {
        std::string out;
        for (int id : ids) {
            if (id < 0 || id >= vocabSize() || m_special.count(id))
                continue;
            const std::string& p = m_pieces[static_cast<std::size_t>(id)];
            if (m_addedIds.count(id)) {
                out += p; // added tokens are stored as their literal text
            } else if (m_byteLevel) {
                for (std::size_t i = 0; i < p.size();) {
                    const std::size_t n = unitLength(p, i);
                    auto it = m_unicodeToByte.find(p.substr(i, n));
                    if (it != m_unicodeToByte.end())
                        out.push_back(static_cast<char>(it->second));
                    i += n;
                }
            } else if (const int b = byteOfPiece(p); b >= 0) {
                out.push_back(static_cast<char>(b));
            } else {
                out += replaceAll(p, m_replacement, " ");
            }
        }
        // The Strip decoder of these files removes the one space the prepend added.
        if (!m_byteLevel && m_prepends && !out.empty() && out.front() == ' ')
            out.erase(0, 1);
        return out;
    }

    int vocabSize() const override { return static_cast<int>(m_pieces.size()); }
    std::string piece(int id) const override { return m_pieces[static_cast<std::size_t>(checkedId(id))]; }
    // BPE has no piece scores. What a score orders by is merge priority, so a token made by the
    // merge of rank r (0-based, the first such merge) scores -(r + 1); base tokens, byte tokens
    // and added tokens score 0.
    float score(int id) const override
    {
        auto it = m_mergeRank.find(checkedId(id));
        return it == m_mergeRank.end() ? 0.0f : -static_cast<float>(it->second + 1);
    }
    TokenType tokenType(int id) const override
    {
        checkedId(id);
        if (id == m_unk)
            return TokenType::Unknown;
        if (m_special.count(id))
            return TokenType::Control;
        if (m_addedIds.count(id))
            return TokenType::UserDefined;
        if (!m_byteLevel && byteOfPiece(m_pieces[static_cast<std::size_t>(id)]) >= 0)
            return TokenType::Byte;
        return TokenType::Normal;
    }
    int bosId() const override { return m_bos; }
    int eosId() const override { return m_eos; }
    std::string kind() const override { return m_byteLevel ? "bpe-byte-level" : "bpe-byte-fallback"; }

private:
    enum class PrependScheme { Never, First, Always };
    struct NormalizerStep {
        bool prepend; // else a Replace of `from` by `to`
        std::string from, to;
    };
    struct PreTokenizerStage {
        enum class Kind { Regex, ByteLevel, Metaspace } kind;
        std::unique_ptr<pcre2_code, PcreDeleter> regex; // Regex; ByteLevel with use_regex
        bool addPrefixSpace = false;                    // ByteLevel
        PrependScheme prepend = PrependScheme::Never;   // Metaspace
        bool split = true;                              // Metaspace
        std::string replacement;                        // Metaspace
    };

    [[noreturn]] void fail(const std::string& what) const { throw Error(m_file + ": " + what); }

    void load(const nlohmann::json& j)
    {
        m_section = "model";
        if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
            fail("expected an object with a 'model' object");
        const auto& m = j["model"];
        if (m.contains("type") && !m["type"].is_string())
            fail("'model.type' must be a string");
        const std::string type = m.value("type", "BPE");
        if (type != "BPE")
            fail("model type '" + type + "' is not supported (expected BPE)");

        m_section = "model.vocab";
        if (!m.contains("vocab") || !m["vocab"].is_object())
            fail("'model.vocab' must be an object of piece -> id");
        if (m["vocab"].size() > kMaxVocab)
            fail("'model.vocab' has " + std::to_string(m["vocab"].size()) + " entries, more than the limit of "
                 + std::to_string(kMaxVocab));
        int maxId = -1;
        for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
            if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0
                || it.value().get<int64_t>() >= int64_t(kMaxVocab))
                fail("'model.vocab' entry '" + it.key() + "' must have an integer id in [0, "
                     + std::to_string(kMaxVocab) + ")");
            const int id = it.value().get<int>();
            m_vocab[it.key()] = id;
            maxId = std::max(maxId, id);
        }

        m_section = "added_tokens";
        if (j.contains("added_tokens") && !j["added_tokens"].is_null()) {
            if (!j["added_tokens"].is_array() || j["added_tokens"].size() > kMaxVocab)
                fail("'added_tokens' must be an array of at most " + std::to_string(kMaxVocab) + " entries");
            for (const auto& a : j["added_tokens"]) {
                if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content")
                    || !a["content"].is_string() || (a.contains("special") && !a["special"].is_boolean()))
                    fail("'added_tokens' entries need an integer 'id', a string 'content' and a boolean 'special'");
                const int64_t id64 = a["id"].get<int64_t>();
                const std::string content = a["content"].get<std::string>();
                if (id64 < 0 || id64 >= int64_t(kMaxVocab) || content.empty())
                    fail("'added_tokens' entry '" + content + "' has an id out of range or empty content");
                const int id = static_cast<int>(id64);
                m_vocab[content] = id;
                maxId = std::max(maxId, id);
                // Special (control) tokens are never read from text, as SentencePiece does: data
                // cannot inject <s> or </s>. Other added tokens are matched before BPE.
                if (a.value("special", false)) {
                    m_special.insert(id);
                } else {
                    m_added.emplace_back(content, id);
                    m_addedIds.insert(id);
                }
            }
        }
        m_pieces.assign(static_cast<std::size_t>(maxId + 1), std::string());
        for (const auto& [piece, id] : m_vocab)
            m_pieces[static_cast<std::size_t>(id)] = piece;

        m_section = "model.merges";
        if (m.contains("merges") && !m["merges"].is_null()) {
            if (!m["merges"].is_array())
                fail("'model.merges' must be an array");
            int rank = 0;
            for (const auto& mg : m["merges"]) {
                std::string a, b;
                if (mg.is_string()) {
                    const std::string s = mg.get<std::string>();
                    const auto sp = s.find(' ', 1);
                    if (sp == std::string::npos)
                        fail("'model.merges' entry '" + s + "' is not 'left right'");
                    a = s.substr(0, sp);
                    b = s.substr(sp + 1);
                } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
                    a = mg[0].get<std::string>();
                    b = mg[1].get<std::string>();
                } else {
                    fail("'model.merges' entries must be strings 'a b' or pairs [a, b]");
                }
                // As in the tokenizers library, both halves and the result must be tokens.
                const auto ia = m_vocab.find(a), ib = m_vocab.find(b), iab = m_vocab.find(a + b);
                if (ia == m_vocab.end() || ib == m_vocab.end() || iab == m_vocab.end())
                    fail("'model.merges' entry '" + a + " " + b + "' uses or makes a piece missing from 'model.vocab'");
                m_merges.emplace(pairKey(ia->second, ib->second), std::make_pair(rank, iab->second));
                m_mergeRank.emplace(iab->second, rank);
                ++rank;
            }
        }

        m_section = "model";
        if (m.contains("byte_fallback") && !m["byte_fallback"].is_boolean())
            fail("'model.byte_fallback' must be a boolean");
        m_byteFallback = m.value("byte_fallback", false);
        m_fuseUnk = m.contains("fuse_unk") && m["fuse_unk"].is_boolean() && m["fuse_unk"].get<bool>();
        if (m.contains("unk_token") && m["unk_token"].is_string()) {
            auto it = m_vocab.find(m["unk_token"].get<std::string>());
            m_unk = it == m_vocab.end() ? -1 : it->second;
        }
        if (m_byteFallback)
            for (int b = 0; b < 256; ++b) {
                char name[8];
                std::snprintf(name, sizeof name, "<0x%02X>", b);
                auto it = m_vocab.find(name);
                m_byteIds[b] = it == m_vocab.end() ? -1 : it->second;
            }

        m_section = "normalizer";
        if (j.contains("normalizer") && !j["normalizer"].is_null())
            parseNormalizer(j["normalizer"]);
        m_section = "pre_tokenizer";
        if (j.contains("pre_tokenizer") && !j["pre_tokenizer"].is_null())
            parsePreTokenizer(j["pre_tokenizer"]);
        m_section = "model";
        if (!m_byteLevel && !m_byteFallback && m_unk < 0)
            fail("BPE without 'model.byte_fallback' or a ByteLevel pre-tokenizer needs a 'model.unk_token' in the "
                 "vocabulary");

        m_bos = findAny({"<s>", "<|begin_of_text|>", "<|endoftext|>"});
        m_eos = findAny({"</s>", "<|end_of_text|>", "<|endoftext|>"});
        if (m_byteLevel)
            buildByteTables();
    }

    int findAny(std::initializer_list<const char*> names) const
    {
        for (const char* n : names) {
            auto it = m_vocab.find(n);
            if (it != m_vocab.end())
                return it->second;
        }
        return -1;
    }

    static std::string stringField(const nlohmann::json& o, const char* key, const std::string& fallback)
    {
        return o.contains(key) && o[key].is_string() ? o[key].get<std::string>() : fallback;
    }

    void parseNormalizer(const nlohmann::json& n)
    {
        if (!n.is_object())
            fail("'normalizer' must be an object");
        const std::string type = stringField(n, "type", "");
        if (type == "Sequence") {
            if (!n.contains("normalizers") || !n["normalizers"].is_array())
                fail("'normalizer' Sequence needs a 'normalizers' array");
            for (const auto& s : n["normalizers"])
                parseNormalizer(s);
        } else if (type == "Prepend") {
            if (!n.contains("prepend") || !n["prepend"].is_string())
                fail("'normalizer' Prepend needs a string 'prepend'");
            m_normalizer.push_back({true, "", n["prepend"].get<std::string>()});
            m_prepends = true;
        } else if (type == "Replace") {
            if (!n.contains("pattern") || !n["pattern"].is_object() || !n["pattern"].contains("String")
                || !n["pattern"]["String"].is_string() || !n.contains("content") || !n["content"].is_string())
                fail("'normalizer' Replace is supported with a {\"String\": ...} 'pattern' and a string 'content'");
            m_normalizer.push_back({false, n["pattern"]["String"].get<std::string>(), n["content"].get<std::string>()});
            if (n["pattern"]["String"] == " ")
                m_replacement = n["content"].get<std::string>();
        } else if (type == "NFC" || type == "NFKC") {
            // Not applied: text that is already NFC (all ASCII, and what editors write) is
            // unchanged by it; the models that declare it are byte-level ones, which never fail.
        } else {
            fail("normalizer '" + type + "' is not supported");
        }
    }

    void parsePreTokenizer(const nlohmann::json& p)
    {
        if (!p.is_object())
            fail("'pre_tokenizer' must be an object");
        const std::string type = stringField(p, "type", "");
        PreTokenizerStage stage;
        if (type == "Sequence") {
            if (!p.contains("pretokenizers") || !p["pretokenizers"].is_array())
                fail("'pre_tokenizer' Sequence needs a 'pretokenizers' array");
            for (const auto& q : p["pretokenizers"])
                parsePreTokenizer(q);
            return;
        } else if (type == "ByteLevel") {
            m_byteLevel = true;
            stage.kind = PreTokenizerStage::Kind::ByteLevel;
            stage.addPrefixSpace = p.contains("add_prefix_space") && p["add_prefix_space"].is_boolean()
                && p["add_prefix_space"].get<bool>();
            if (!(p.contains("use_regex") && p["use_regex"].is_boolean() && !p["use_regex"].get<bool>()))
                stage.regex = compileRegex(kGpt2Pattern, false);
        } else if (type == "Split") {
            stage.kind = PreTokenizerStage::Kind::Regex;
            const std::string behavior = stringField(p, "behavior", "Isolated");
            if (behavior != "Isolated" || (p.contains("invert") && p["invert"] == true))
                fail("Split pre-tokenizer is supported with behavior 'Isolated' and no 'invert' (found '" + behavior
                     + "')");
            const auto& pattern = p.contains("pattern") ? p["pattern"] : nlohmann::json();
            if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string())
                stage.regex = compileRegex(pattern["Regex"].get<std::string>(), false);
            else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string())
                stage.regex = compileRegex(pattern["String"].get<std::string>(), true);
            else
                fail("Split pre-tokenizer needs a 'pattern' with a string 'Regex' or 'String'");
        } else if (type == "Metaspace") {
            stage.kind = PreTokenizerStage::Kind::Metaspace;
            stage.replacement = stringField(p, "replacement", kMetaspace);
            if (stage.replacement.empty())
                fail("Metaspace pre-tokenizer needs a non-empty 'replacement'");
            // Newer files say prepend_scheme, older ones add_prefix_space.
            const bool legacyPrefix = !p.contains("add_prefix_space") || p["add_prefix_space"] == true;
            const std::string scheme = stringField(p, "prepend_scheme", legacyPrefix ? "always" : "never");
            if (scheme != "always" && scheme != "first" && scheme != "never")
                fail("Metaspace 'prepend_scheme' must be always, first or never (found '" + scheme + "')");
            stage.prepend = scheme == "always" ? PrependScheme::Always
                : scheme == "first"            ? PrependScheme::First
                                               : PrependScheme::Never;
            stage.split = !(p.contains("split") && p["split"] == false);
            m_replacement = stage.replacement;
            m_prepends = m_prepends || stage.prepend != PrependScheme::Never;
        } else {
            fail("pre-tokenizer '" + type + "' is not supported");
        }
        m_preTokenizer.push_back(std::move(stage));
    }

    std::unique_ptr<pcre2_code, PcreDeleter> compileRegex(const std::string& pattern, bool literal) const
    {
        int err = 0;
        PCRE2_SIZE offset = 0;
        pcre2_code* code
            = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                            PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u), &err, &offset, nullptr);
        if (!code) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(err, msg, sizeof msg);
            fail("pre-tokenizer pattern does not compile at offset " + std::to_string(offset) + ": "
                 + reinterpret_cast<const char*>(msg));
        }
        return std::unique_ptr<pcre2_code, PcreDeleter>(code);
    }

    void buildByteTables()
    {
        // GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to 256 + n.
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const uint32_t cp = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
            m_byteToUnicode[b] = codepointToUtf8(cp);
            m_unicodeToByte[m_byteToUnicode[b]] = static_cast<unsigned char>(b);
        }
    }

    // "Isolated" split: matches and the gaps between them are pieces. The regex runs only over
    // well-formed UTF-8 runs, with PCRE2's own UTF check off: that check rescans the subject
    // from the start offset to its end on every call, which made a whole book quadratic. A
    // malformed byte (possible in byte-level mode) is a piece of its own.
    void splitByRegex(const pcre2_code* re, pcre2_match_data* md, const std::string& s,
                      std::vector<std::string>& out) const
    {
        std::size_t i = 0;
        while (i < s.size()) {
            std::size_t j = i;
            for (std::size_t n; j < s.size() && (n = validUtf8Length(s, j)) != 0;)
                j += n;
            if (j > i)
                splitValidRun(re, md, s.substr(i, j - i), out);
            if (j < s.size())
                out.push_back(s.substr(j++, 1));
            i = j;
        }
    }

    void splitValidRun(const pcre2_code* re, pcre2_match_data* md, const std::string& text,
                       std::vector<std::string>& out) const
    {
        PCRE2_SIZE start = 0, last = 0;
        while (start <= text.size()) {
            const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                                       PCRE2_NO_UTF_CHECK, md, nullptr);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR msg[256];
                pcre2_get_error_message(rc, msg, sizeof msg);
                fail("pre-tokenizer regex failed on the input: " + std::string(reinterpret_cast<const char*>(msg)));
            }
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
            if (ov[0] > last)
                out.push_back(text.substr(last, ov[0] - last));
            if (ov[1] > ov[0])
                out.push_back(text.substr(ov[0], ov[1] - ov[0]));
            last = ov[1];
            if (ov[1] > ov[0])
                start = ov[1];
            else if (ov[1] < text.size())
                start = ov[1] + validUtf8Length(text, ov[1]);
            else
                break;
        }
        if (last < text.size())
            out.push_back(text.substr(last));
    }

    // Metaspace as the library runs it: spaces become the replacement, the replacement is
    // prepended unless the piece already starts with it, and with `split` every replacement
    // starts a new piece (MergedWithNext).
    void metaspace(const PreTokenizerStage& st, const std::string& s, bool atTextStart,
                   std::vector<std::string>& out) const
    {
        std::string t = replaceAll(s, " ", st.replacement);
        const bool prepend = st.prepend == PrependScheme::Always || (st.prepend == PrependScheme::First && atTextStart);
        if (prepend && t.compare(0, st.replacement.size(), st.replacement) != 0)
            t = st.replacement + t;
        if (!st.split) {
            out.push_back(std::move(t));
            return;
        }
        std::size_t begin = 0;
        for (std::size_t f; (f = t.find(st.replacement, begin + 1)) != std::string::npos; begin = f)
            out.push_back(t.substr(begin, f - begin));
        if (begin < t.size())
            out.push_back(t.substr(begin));
    }

    void encodeSegment(const std::string& raw, bool atTextStart, std::vector<int>& out) const
    {
        std::string text;
        if (m_byteLevel) {
            text = raw;
        } else {
            text.reserve(raw.size());
            for (std::size_t i = 0; i < raw.size();) {
                const std::size_t n = validUtf8Length(raw, i);
                text += n == 0 ? kReplacementChar : raw.substr(i, n);
                i += n == 0 ? 1 : n;
            }
        }
        for (const auto& step : m_normalizer) {
            if (step.prepend) {
                if (!text.empty())
                    text = step.to + text;
            } else {
                text = replaceAll(std::move(text), step.from, step.to);
            }
        }
        std::vector<std::string> pieces{std::move(text)};
        if (!m_preTokenizer.empty()) {
            std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(pcre2_match_data_create(4, nullptr));
            for (const auto& st : m_preTokenizer) {
                std::vector<std::string> next;
                for (std::size_t k = 0; k < pieces.size(); ++k) {
                    const std::string& p = pieces[k];
                    if (p.empty())
                        continue;
                    if (st.kind == PreTokenizerStage::Kind::Metaspace) {
                        metaspace(st, p, atTextStart && k == 0, next);
                    } else if (st.kind == PreTokenizerStage::Kind::Regex) {
                        splitByRegex(st.regex.get(), md.get(), p, next);
                    } else {
                        const std::string q = st.addPrefixSpace && p[0] != ' ' ? " " + p : p;
                        std::vector<std::string> words;
                        if (st.regex)
                            splitByRegex(st.regex.get(), md.get(), q, words);
                        else
                            words.push_back(q);
                        for (const auto& w : words) {
                            std::string mapped;
                            mapped.reserve(w.size() * 2);
                            for (unsigned char c : w)
                                mapped += m_byteToUnicode[c];
                            next.push_back(std::move(mapped));
                        }
                    }
                }
                pieces = std::move(next);
            }
        }
        for (const auto& p : pieces)
            bpe(p, out);
    }

    // BPE as the tokenizers library runs it: every character is a symbol (a vocabulary id, or
    // its <0xXX> byte tokens, or <unk>), then the adjacent pair with the lowest merge rank is
    // merged until none is left. A heap of candidate pairs over a linked list of symbols keeps a
    // whole book in one word at O(n log n).
    void bpe(const std::string& word, std::vector<int>& out) const
    {
        struct Sym {
            int id, prev, next;
            bool alive;
        };
        std::vector<Sym> syms;
        syms.reserve(word.size());
        auto add = [&](int id) {
            syms.push_back({id, static_cast<int>(syms.size()) - 1, static_cast<int>(syms.size()) + 1, true});
        };
        for (std::size_t i = 0; i < word.size();) {
            const std::size_t n = unitLength(word, i);
            auto it = m_vocab.find(word.substr(i, n));
            if (it != m_vocab.end()) {
                add(it->second);
            } else {
                bool all = m_byteFallback;
                for (std::size_t k = i; all && k < i + n; ++k)
                    all = m_byteIds[static_cast<unsigned char>(word[k])] >= 0;
                if (all) {
                    for (std::size_t k = i; k < i + n; ++k)
                        add(m_byteIds[static_cast<unsigned char>(word[k])]);
                } else if (m_unk >= 0 && !(m_fuseUnk && !syms.empty() && syms.back().id == m_unk)) {
                    add(m_unk);
                } // with neither, the library drops the character; so do we
            }
            i += n;
        }
        if (syms.empty())
            return;
        syms.back().next = -1;

        struct Cand {
            int rank, left, right, leftId, rightId;
            bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
        };
        std::priority_queue<Cand> heap;
        auto push = [&](int left) {
            if (left < 0)
                return;
            const int right = syms[static_cast<std::size_t>(left)].next;
            if (right < 0)
                return;
            const int a = syms[static_cast<std::size_t>(left)].id, b = syms[static_cast<std::size_t>(right)].id;
            auto it = m_merges.find(pairKey(a, b));
            if (it != m_merges.end())
                heap.push({it->second.first, left, right, a, b});
        };
        for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i)
            push(i);
        while (!heap.empty()) {
            const Cand c = heap.top();
            heap.pop();
            auto& a = syms[static_cast<std::size_t>(c.left)];
            // Stale entries: a side was merged away or changed since this pair was queued.
            if (!a.alive || a.next != c.right || a.id != c.leftId)
                continue;
            auto& b = syms[static_cast<std::size_t>(c.right)];
            if (!b.alive || b.id != c.rightId)
                continue;
            a.id = m_merges.at(pairKey(c.leftId, c.rightId)).second;
            b.alive = false;
            a.next = b.next;
            if (b.next >= 0)
                syms[static_cast<std::size_t>(b.next)].prev = c.left;
            push(a.prev);
            push(c.left);
        }
        for (int i = 0; i >= 0; i = syms[static_cast<std::size_t>(i)].next)
            out.push_back(syms[static_cast<std::size_t>(i)].id);
    }

    std::string m_file;
    std::string m_section; // the key being read, for error messages
    std::unordered_map<std::string, int> m_vocab;
    std::vector<std::string> m_pieces;
    std::unordered_map<uint64_t, std::pair<int, int>> m_merges; // (left id, right id) -> (rank, merged id)
    std::unordered_map<int, int> m_mergeRank;                   // token id -> rank of the first merge making it
    std::vector<std::pair<std::string, int>> m_added;           // non-special added tokens
    std::set<int> m_addedIds;
    std::set<int> m_special;
    std::vector<NormalizerStep> m_normalizer;
    std::vector<PreTokenizerStage> m_preTokenizer;
    std::string m_byteToUnicode[256];
    std::unordered_map<std::string, unsigned char> m_unicodeToByte;
    int m_byteIds[256] = {};
    std::string m_replacement = kMetaspace; // what decode turns back into spaces
    bool m_byteLevel = false;
    bool m_byteFallback = false;
    bool m_fuseUnk = false;
    bool m_prepends = false; // some step prepends the replacement: decode strips one space
    int m_unk = -1;
    int m_bos = -1;
    int m_eos = -1;
};

} // namespace

std::unique_ptr<Tokenizer> Tokenizer::loadHuggingFace(const std::filesystem::path& tokenizerJson)
{
    return std::make_unique<HfBpeTokenizer>(tokenizerJson);
}

std::unique_ptr<Tokenizer> Tokenizer::loadForModel(const std::filesystem::path& modelDir)
{
    std::error_code ec;
    if (std::filesystem::exists(modelDir / "tokenizer.model", ec))
        return loadSentencePiece(modelDir / "tokenizer.model");
    if (std::filesystem::exists(modelDir / "tokenizer.json", ec))
        return loadHuggingFace(modelDir / "tokenizer.json");
    return nullptr;
}

} // namespace ladimo::core
