// Token data for calibration and evaluation: plain text (tokenized with the model's tokenizer,
// one BOS at the start of each document), raw little-endian token ids (.u16, .u32), and .jsonl
// rows with "text" (a document each) or "tokens". A stream is cut into windows of seq-len tokens
// from its start. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace ladimo::core {

class Tokenizer;

struct TokenDataOptions {
    int64_t vocabSize = 0; // ids must be < vocabSize
    int64_t bosId = 1;     // prepended to each text document; -1 for none
    int64_t maxTokens = 0; // 0 = all; otherwise stop reading after this many tokens
};

// Throws Error naming the file (and line / position) for unreadable or invalid data.
std::vector<int64_t> loadTokenFile(const std::filesystem::path& file, const Tokenizer* tokenizer,
                                   const TokenDataOptions& options);

// Consecutive windows of seqLen tokens from the start; a final shorter window is kept when it
// holds at least 2 tokens (so something is left to predict).
std::vector<std::vector<int64_t>> cutWindows(const std::vector<int64_t>& stream, int64_t seqLen);

// Writes ids as .u16 (all ids < 65536) or .u32, chosen from the file extension.
void saveTokenFile(const std::filesystem::path& file, const std::vector<int64_t>& ids);

} // namespace ladimo::core
