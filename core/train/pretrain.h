// Pretraining a small dense LLaMA model from scratch (the bundled demo model): trains a
// SentencePiece tokenizer on the corpus, then the model with AdamW, warmup + cosine schedule,
// gradient clipping and periodic validation, and saves a Hugging Face checkpoint directory.
// Runs on the calling thread; reports progress and honours cancellation between steps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/progress.h"
#include "model/config.h"

namespace ladimo::core {

struct PretrainOptions {
    std::vector<std::filesystem::path> trainFiles;
    std::filesystem::path validationFile;
    std::filesystem::path outDir;
    int vocabSize = 4096;
    ModelConfig model; // hidden/intermediate/layers/heads; vocab is set from the tokenizer
    int64_t seqLen = 256;
    int64_t batch = 16;
    int64_t steps = 600;
    int64_t warmup = 50;
    double lr = 3e-3;
    double minLrRatio = 0.1;
    double weightDecay = 0.1;
    double clip = 1.0;
    int64_t evalEvery = 100;
    int64_t evalWindows = 32; // validation windows used for the periodic (not the final) loss
    uint64_t seed = 0;
    std::string saveDType = "bfloat16";
    std::string commandLine; // recorded in the model card
    ProgressFn progress;
    // Called with every logged line (step losses, validation) so the CLI can print them.
    std::function<void(const std::string&)> log;
    CancelToken cancel;
};

// Returns the training record (also written to outDir/training.json): final train loss,
// validation loss / perplexity on the whole held-out file, tokens, time, settings.
nlohmann::json pretrain(const PretrainOptions& options);

} // namespace ladimo::core
