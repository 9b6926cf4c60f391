// Multiple-choice accuracy scored by log-likelihood: each item {question, choices, answer} from a
// .jsonl file; every choice is scored by the summed log-probability of its tokens after
// [BOS] + question, the prediction is the best choice (accuracy) and the best per byte of the
// choice text (length-normalised accuracy, as lm-evaluation-harness's acc_norm). Runs on the
// calling thread; with hooks it scores a converted model.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "common/progress.h"

namespace ladimo::core {

class LlamaModel;
class Tokenizer;
struct ForwardHooks;

struct ChoiceItem {
    std::string question;
    std::vector<std::string> choices;
    int answer = 0; // index into choices
};

// One JSON object per line: {"question": str, "choices": [str, ...], "answer": int or one of the
// choice strings}. Errors name the file, the line and the key.
std::vector<ChoiceItem> loadChoiceItems(const std::filesystem::path& file);

struct ChoiceResult {
    int64_t items = 0;
    int64_t correct = 0;     // best summed log-likelihood
    int64_t correctNorm = 0; // best log-likelihood per byte
    double accuracy = 0;
    double accuracyNorm = 0;
    std::vector<std::vector<double>> scores; // [item][choice] summed log-likelihood
};

ChoiceResult evaluateChoices(const LlamaModel& model, const Tokenizer& tokenizer, const std::vector<ChoiceItem>& items,
                             const ForwardHooks* hooks = nullptr, const ProgressFn& progress = {},
                             CancelToken cancel = {});

} // namespace ladimo::core
