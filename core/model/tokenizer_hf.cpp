// Hugging Face tokenizer.json BPE, written against the tokenizers format: byte-fallback models
// (LLaMA-2 / Mistral: "▁" metaspace, <0xXX> byte tokens) and byte-level models (GPT-2 /
// LLaMA-3 / Qwen2: bytes mapped to printable characters, regex pre-tokenization via PCRE2).
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <map>
#include <memory>
#include <queue>
#include <set>
#include <cstdio>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/tokenizer.h"

namespace ladimo::core {

namespace {

constexpr std::size_t kMaxVocab = 1u << 22;
constexpr uint64_t kMaxFileBytes = 512ull << 20;
const std::string kMetaspace = "\xE2\x96\x81"; // U+2581 "▁"
// GPT-2's pre-tokenizer pattern, used when ByteLevel has use_regex and no Split gives one.
const char* kGpt2Pattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::size_t utf8Length(unsigned char c)
{
    if (c < 0x80) return 1;
    if ((c >> 5) == 0x6) return 2;
    if ((c >> 4) == 0xE) return 3;
    if ((c >> 3) == 0x1E) return 4;
    return 1; // invalid lead byte: treat as one unit (it will fall back to bytes)
}

std::string codepointToUtf8(uint32_t cp)
{
    std::string s;
    if (cp < 0x80) s += char(cp);
    else if (cp < 0x800) { s += char(0xC0 | (cp >> 6)); s += char(0x80 | (cp & 0x3F)); }
    else if (cp < 0x10000) { s += char(0xE0 | (cp >> 12)); s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F)); }
    else { s += char(0xF0 | (cp >> 18)); s += char(0x80 | ((cp >> 12) & 0x3F)); s += char(0x80 | ((cp >> 6) & 0x3F)); s += char(0x80 | (cp & 0x3F)); }
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

struct PcreDeleter {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};

class HfBpeTokenizer final : public Tokenizer {
public:
    explicit HfBpeTokenizer(const std::filesystem::path& file)
    {
        const std::string src = file.string();
        std::error_code ec;
        const auto size = std::filesystem::file_size(file, ec);
        if (ec)
            throw Error("cannot open tokenizer '" + src + "'");
        if (size > kMaxFileBytes)
            throw Error(src + ": tokenizer file larger than 512 MiB");
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(readTextFile(file));
        } catch (const nlohmann::json::exception& e) {
            throw Error(src + ": invalid JSON: " + e.what());
        }
        if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
            throw Error(src + ": expected an object with a 'model' object");
        const auto& m = j["model"];
        const std::string type = m.value("type", "BPE");
        if (type != "BPE")
            throw Error(src + ": model type '" + type + "' is not supported (expected BPE)");
        if (!m.contains("vocab") || !m["vocab"].is_object())
            throw Error(src + ": 'model.vocab' must be an object of piece -> id");
        if (m["vocab"].size() > kMaxVocab)
            throw Error(src + ": vocabulary of " + std::to_string(m["vocab"].size()) + " entries exceeds the limit");
        int maxId = -1;
        for (auto it = m["vocab"].begin(); it != m["vocab"].end(); ++it) {
            if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
                it.value().get<int64_t>() >= int64_t(kMaxVocab))
                throw Error(src + ": vocab entry '" + it.key() + "' must have a non-negative integer id");
            const int id = it.value().get<int>();
            m_vocab[it.key()] = id;
            maxId = std::max(maxId, id);
        }
        if (j.contains("added_tokens") && j["added_tokens"].is_array())
            for (const auto& a : j["added_tokens"]) {
                if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
                    !a["content"].is_string())
                    throw Error(src + ": 'added_tokens' entries need integer 'id' and string 'content'");
                const int id = a["id"].get<int>();
                if (id < 0 || id >= int(kMaxVocab))
                    throw Error(src + ": added token id out of range");
                m_vocab[a["content"].get<std::string>()] = id;
                maxId = std::max(maxId, id);
                // Special (control) tokens are never read from text, as SentencePiece does: data
                // cannot inject <s> or </s>. Other added tokens are matched before BPE.
                if (a.value("special", false))
                    m_special.insert(id);
                else
                    m_added[a["content"].get<std::string>()] = id;
            }
        m_pieces.assign(static_cast<std::size_t>(maxId + 1), std::string());
        for (const auto& [piece, id] : m_vocab)
            m_pieces[static_cast<std::size_t>(id)] = piece;
        if (m.contains("merges")) {
            if (!m["merges"].is_array())
                throw Error(src + ": 'model.merges' must be an array");
            int rank = 0;
            for (const auto& mg : m["merges"]) {
                std::string a, b;
                if (mg.is_string()) {
                    const std::string s = mg.get<std::string>();
                    const auto sp = s.find(' ', 1);
                    if (sp == std::string::npos)
                        throw Error(src + ": merge '" + s + "' is not 'left right'");
                    a = s.substr(0, sp);
                    b = s.substr(sp + 1);
                } else if (mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string()) {
                    a = mg[0].get<std::string>();
                    b = mg[1].get<std::string>();
                } else {
                    throw Error(src + ": merges must be strings 'a b' or pairs [a, b]");
                }
                m_ranks.emplace(a + '\x01' + b, rank++);
                auto merged = m_vocab.find(a + b);
                if (merged != m_vocab.end() && m_mergeRank.find(merged->second) == m_mergeRank.end())
                    m_mergeRank[merged->second] = rank;
            }
        }
        m_byteFallback = m.value("byte_fallback", false);
        m_fuseUnk = m.value("fuse_unk", false);
        if (m.contains("unk_token") && m["unk_token"].is_string()) {
            auto it = m_vocab.find(m["unk_token"].get<std::string>());
            m_unk = it == m_vocab.end() ? -1 : it->second;
        }
        parsePipeline(j, src);
        m_bos = findAny({"<s>", "<|begin_of_text|>", "<|endoftext|>"});
        m_eos = findAny({"</s>", "<|end_of_text|>", "<|endoftext|>"});
        if (m_byteLevel)
            buildByteTables();
    }

    std::vector<int> encode(const std::string& text) const override
    {
        std::vector<int> out;
        // Non-special added tokens are matched in the raw text first (as the tokenizers library does).
        std::size_t pos = 0;
        while (pos <= text.size()) {
            std::size_t best = std::string::npos, bestLen = 0;
            int bestId = -1;
            for (const auto& [content, id] : m_added) {
                if (content.empty())
                    continue;
                const auto f = text.find(content, pos);
                if (f != std::string::npos && (f < best || (f == best && content.size() > bestLen))) {
                    best = f;
                    bestLen = content.size();
                    bestId = id;
                }
            }
            const std::size_t end = best == std::string::npos ? text.size() : best;
            if (end > pos)
                encodeSection(text.substr(pos, end - pos), pos == 0, out);
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
            if (id < 0 || id >= vocabSize())
                continue;
            const std::string& p = m_pieces[static_cast<std::size_t>(id)];
            if (m_special.count(id))
                continue;
            if (m_byteLevel) {
                for (std::size_t i = 0; i < p.size();) {
                    const std::size_t n = utf8Length(static_cast<unsigned char>(p[i]));
                    auto it = m_unicodeToByte.find(p.substr(i, n));
                    if (it != m_unicodeToByte.end())
                        out.push_back(static_cast<char>(it->second));
                    i += n;
                }
            } else if (p.size() == 6 && p.rfind("<0x", 0) == 0 && p.back() == '>') {
                out.push_back(static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16)));
            } else {
                out += replaceAll(p, kMetaspace, " ");
            }
        }
        if (!m_byteLevel && m_prependMetaspace && !out.empty() && out.front() == ' ')
            out.erase(0, 1);
        return out;
    }

    int vocabSize() const override { return static_cast<int>(m_pieces.size()); }
    std::string piece(int id) const override { return m_pieces.at(static_cast<std::size_t>(checkedId(id))); }
    // BPE has no piece scores: earlier merges rank higher, which is what a score orders by.
    float score(int id) const override
    {
        auto it = m_mergeRank.find(checkedId(id));
        return it == m_mergeRank.end() ? 0.0f : -static_cast<float>(it->second);
    }
    TokenType tokenType(int id) const override
    {
        checkedId(id);
        if (id == m_unk)
            return TokenType::Unknown;
        if (m_special.count(id))
            return TokenType::Control;
        if (m_added.count(m_pieces[static_cast<std::size_t>(id)]))
            return TokenType::UserDefined;
        const std::string& p = m_pieces[static_cast<std::size_t>(id)];
        if (!m_byteLevel && p.size() == 6 && p.rfind("<0x", 0) == 0)
            return TokenType::Byte;
        return TokenType::Normal;
    }
    int bosId() const override { return m_bos; }
    int eosId() const override { return m_eos; }
    std::string kind() const override { return m_byteLevel ? "bpe-byte-level" : "bpe-byte-fallback"; }

private:

    int findAny(std::initializer_list<const char*> names) const
    {
        for (const char* n : names) {
            auto it = m_vocab.find(n);
            if (it != m_vocab.end())
                return it->second;
        }
        return -1;
    }

    void collectPreTokenizers(const nlohmann::json& p, const std::string& src)
    {
        if (p.is_null())
            return;
        if (!p.is_object())
            throw Error(src + ": 'pre_tokenizer' must be an object");
        const std::string type = p.value("type", "");
        if (type == "Sequence") {
            for (const auto& q : p.value("pretokenizers", nlohmann::json::array()))
                collectPreTokenizers(q, src);
        } else if (type == "ByteLevel") {
            m_byteLevel = true;
            m_addPrefixSpace = p.value("add_prefix_space", false);
            if (p.value("use_regex", true) && !m_regex)
                compileRegex(kGpt2Pattern, src);
        } else if (type == "Split") {
            std::string pattern;
            if (p.contains("pattern") && p["pattern"].is_object()) {
                if (p["pattern"].contains("Regex"))
                    pattern = p["pattern"]["Regex"].get<std::string>();
                else if (p["pattern"].contains("String"))
                    throw Error(src + ": Split pre-tokenizer with a plain String pattern is not supported");
            }
            if (pattern.empty())
                throw Error(src + ": Split pre-tokenizer needs a 'pattern' with a 'Regex'");
            compileRegex(pattern, src);
        } else if (type == "Metaspace") {
            const std::string scheme = p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
            m_prependMetaspace = scheme != "never";
            m_replaceSpaces = true;
        } else {
            throw Error(src + ": pre-tokenizer '" + type + "' is not supported");
        }
    }

    void parsePipeline(const nlohmann::json& j, const std::string& src)
    {
        if (j.contains("normalizer") && !j["normalizer"].is_null()) {
            const auto& n = j["normalizer"];
            std::vector<nlohmann::json> steps;
            if (n.value("type", "") == "Sequence")
                for (const auto& s : n.value("normalizers", nlohmann::json::array()))
                    steps.push_back(s);
            else
                steps.push_back(n);
            for (const auto& s : steps) {
                const std::string type = s.value("type", "");
                if (type == "Prepend" && s.value("prepend", "") == kMetaspace)
                    m_prependMetaspace = true;
                else if (type == "Replace" && s.contains("pattern") && s["pattern"].value("String", "") == " " &&
                         s.value("content", "") == kMetaspace)
                    m_replaceSpaces = true;
                else if (type == "NFC" || type == "NFKC")
                    ; // ASCII/NFC input passes through; full Unicode normalisation is not applied
                else
                    throw Error(src + ": normalizer '" + type + "' is not supported");
            }
        }
        if (j.contains("pre_tokenizer"))
            collectPreTokenizers(j["pre_tokenizer"], src);
        if (!m_byteLevel && !m_byteFallback && m_unk < 0)
            throw Error(src + ": BPE without byte_fallback needs an unk_token");
    }

    void compileRegex(const std::string& pattern, const std::string& src)
    {
        int err = 0;
        PCRE2_SIZE offset = 0;
        pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                         PCRE2_UTF | PCRE2_UCP, &err, &offset, nullptr);
        if (!code)
            throw Error(src + ": pre-tokenizer regex does not compile at offset " + std::to_string(offset));
        m_regex.reset(code);
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

    std::vector<std::string> preTokenize(const std::string& text) const
    {
        if (!m_regex)
            return {text};
        std::vector<std::string> out;
        std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> md(
            pcre2_match_data_create_from_pattern(m_regex.get(), nullptr), &pcre2_match_data_free);
        PCRE2_SIZE start = 0, last = 0;
        while (start <= text.size()) {
            const int rc = pcre2_match(m_regex.get(), reinterpret_cast<PCRE2_SPTR>(text.c_str()), text.size(), start,
                                       0, md.get(), nullptr);
            if (rc < 0)
                break;
            const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
            if (ov[0] > last)
                out.push_back(text.substr(last, ov[0] - last)); // "Isolated": gaps are pieces too
            if (ov[1] > ov[0])
                out.push_back(text.substr(ov[0], ov[1] - ov[0]));
            last = ov[1];
            start = ov[1] > ov[0] ? ov[1] : ov[1] + utf8Length(static_cast<unsigned char>(text[ov[1]]));
        }
        if (last < text.size())
            out.push_back(text.substr(last));
        return out;
    }

    void encodeSection(const std::string& raw, bool first, std::vector<int>& out) const
    {
        if (m_byteLevel) {
            const std::string text = (m_addPrefixSpace && first && !raw.empty() && raw[0] != ' ') ? " " + raw : raw;
            for (const auto& word : preTokenize(text)) {
                std::string mapped;
                for (unsigned char c : word)
                    mapped += m_byteToUnicode[c];
                bpe(mapped, out);
            }
            return;
        }
        std::string text = m_replaceSpaces ? replaceAll(raw, " ", kMetaspace) : raw;
        if (m_prependMetaspace && first)
            text = kMetaspace + text;
        bpe(text, out);
    }

    // Classic BPE over the UTF-8 characters of `word`: repeatedly merge the adjacent pair with
    // the lowest merge rank (a heap of candidate pairs over a linked list of symbols).
    void bpe(const std::string& word, std::vector<int>& out) const
    {
        struct Sym {
            std::size_t start, len;
            int prev, next;
        };
        std::vector<Sym> syms;
        for (std::size_t i = 0; i < word.size();) {
            const std::size_t n = std::min(utf8Length(static_cast<unsigned char>(word[i])), word.size() - i);
            syms.push_back({i, n, static_cast<int>(syms.size()) - 1, static_cast<int>(syms.size()) + 1});
            i += n;
        }
        if (syms.empty())
            return;
        syms.back().next = -1;
        struct Cand {
            int rank, left;
            std::size_t leftLen, rightLen;
            bool operator<(const Cand& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
        };
        std::priority_queue<Cand> heap;
        auto push = [&](int left) {
            const int right = syms[static_cast<std::size_t>(left)].next;
            if (right < 0)
                return;
            const auto& a = syms[static_cast<std::size_t>(left)];
            const auto& b = syms[static_cast<std::size_t>(right)];
            auto it = m_ranks.find(word.substr(a.start, a.len) + '\x01' + word.substr(b.start, b.len));
            if (it != m_ranks.end())
                heap.push({it->second, left, a.len, b.len});
        };
        for (int i = 0; i + 1 < static_cast<int>(syms.size()); ++i)
            push(i);
        while (!heap.empty()) {
            const Cand c = heap.top();
            heap.pop();
            auto& a = syms[static_cast<std::size_t>(c.left)];
            if (a.len == 0 || a.len != c.leftLen || a.next < 0)
                continue; // stale: the left symbol changed since this pair was queued
            auto& b = syms[static_cast<std::size_t>(a.next)];
            if (b.len != c.rightLen)
                continue;
            a.len += b.len;
            b.len = 0;
            a.next = b.next;
            if (b.next >= 0)
                syms[static_cast<std::size_t>(b.next)].prev = c.left;
            if (a.prev >= 0)
                push(a.prev);
            push(c.left);
        }
        bool lastUnk = false;
        for (int i = 0; i >= 0; i = syms[static_cast<std::size_t>(i)].next) {
            const auto& s = syms[static_cast<std::size_t>(i)];
            const std::string piece = word.substr(s.start, s.len);
            auto it = m_vocab.find(piece);
            if (it != m_vocab.end()) {
                out.push_back(it->second);
                lastUnk = false;
                continue;
            }
            if (m_byteFallback) {
                bool all = true;
                std::vector<int> bytes;
                for (unsigned char ch : piece) {
                    char name[8];
                    std::snprintf(name, sizeof name, "<0x%02X>", ch);
                    auto bt = m_vocab.find(name);
                    if (bt == m_vocab.end()) {
                        all = false;
                        break;
                    }
                    bytes.push_back(bt->second);
                }
                if (all) {
                    out.insert(out.end(), bytes.begin(), bytes.end());
                    lastUnk = false;
                    continue;
                }
            }
            if (m_unk >= 0 && !(m_fuseUnk && lastUnk))
                out.push_back(m_unk);
            lastUnk = true;
        }
    }

    std::unordered_map<std::string, int> m_vocab;
    std::vector<std::string> m_pieces;
    std::unordered_map<std::string, int> m_ranks; // "left\x01right" -> merge rank
    std::unordered_map<int, int> m_mergeRank;     // token id -> rank of the merge that makes it
    std::map<std::string, int> m_added;
    std::set<int> m_special;
    std::unique_ptr<pcre2_code, PcreDeleter> m_regex;
    std::string m_byteToUnicode[256];
    std::unordered_map<std::string, unsigned char> m_unicodeToByte;
    bool m_byteLevel = false;
    bool m_byteFallback = false;
    bool m_fuseUnk = false;
    bool m_prependMetaspace = false;
    bool m_replaceSpaces = false;
    bool m_addPrefixSpace = false;
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
