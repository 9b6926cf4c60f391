#include "eval/choice.h"

#include <fstream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/error.h"
#include "common/fileutil.h"
#include "model/llama.h"
#include "model/tokenizer.h"

namespace ladimo::core {

namespace {
constexpr std::size_t kMaxLine = 1 << 20;
constexpr std::size_t kMaxChoices = 64;
} // namespace

std::vector<ChoiceItem> loadChoiceItems(const std::filesystem::path& file)
{
    LineReader in(file, kMaxLine, "multiple-choice file");
    std::vector<ChoiceItem> items;
    std::string line;
    while (in.next(line)) {
        const std::string at = in.where();
        if (line.find_first_not_of(" \t\r") == std::string::npos)
            continue;
        nlohmann::json j;
        try {
            j = nlohmann::json::parse(line);
        } catch (const nlohmann::json::exception& e) {
            throw Error(at + ": not valid JSON: " + e.what());
        }
        if (!j.is_object())
            throw Error(at + ": expected an object with question, choices and answer");
        ChoiceItem item;
        if (!j.contains("question") || !j["question"].is_string())
            throw Error(at + ": 'question' must be a string");
        item.question = j["question"].get<std::string>();
        if (!j.contains("choices") || !j["choices"].is_array() || j["choices"].size() < 2
            || j["choices"].size() > kMaxChoices)
            throw Error(at + ": 'choices' must be an array of 2.." + std::to_string(kMaxChoices) + " strings");
        for (const auto& c : j["choices"]) {
            if (!c.is_string() || c.get<std::string>().empty())
                throw Error(at + ": every choice must be a non-empty string");
            item.choices.push_back(c.get<std::string>());
        }
        if (!j.contains("answer"))
            throw Error(at + ": missing 'answer'");
        const auto& a = j["answer"];
        if (a.is_number_integer()) {
            const auto v = a.get<int64_t>();
            if (v < 0 || v >= static_cast<int64_t>(item.choices.size()))
                throw Error(at + ": 'answer' " + std::to_string(v) + " is not a choice index 0.."
                            + std::to_string(item.choices.size() - 1));
            item.answer = static_cast<int>(v);
        } else if (a.is_string()) {
            const auto it = std::find(item.choices.begin(), item.choices.end(), a.get<std::string>());
            if (it == item.choices.end())
                throw Error(at + ": 'answer' \"" + a.get<std::string>() + "\" is not one of the choices");
            item.answer = static_cast<int>(it - item.choices.begin());
        } else {
            throw Error(at + ": 'answer' must be a choice index or the choice text");
        }
        items.push_back(std::move(item));
    }
    if (items.empty())
        throw Error("multiple-choice file '" + file.string() + "' holds no items");
    return items;
}

ChoiceResult evaluateChoices(const LlamaModel& model, const Tokenizer& tok, const std::vector<ChoiceItem>& items,
                             const ForwardHooks* hooks, const ProgressFn& progress, CancelToken cancel)
{
    torch::InferenceMode guard;
    ChoiceResult r;
    const int64_t maxLen = model.config().maxPositions;
    for (std::size_t i = 0; i < items.size(); ++i) {
        cancel.throwIfCancelled();
        const auto& item = items[i];
        std::vector<int64_t> context;
        if (tok.bosId() >= 0)
            context.push_back(tok.bosId());
        for (int id : tok.encode(item.question))
            context.push_back(id);
        std::vector<double> scores, perByte;
        for (const auto& choice : item.choices) {
            const auto cont = tok.encode(choice);
            if (cont.empty())
                throw Error("multiple-choice item " + std::to_string(i) + ": choice \"" + choice
                            + "\" encodes to no tokens");
            std::vector<int64_t> seq = context;
            seq.insert(seq.end(), cont.begin(), cont.end());
            // Keep the end of an over-long context: the choice must be scored whole.
            const auto drop = static_cast<int64_t>(seq.size()) - maxLen;
            if (drop > 0)
                seq.erase(seq.begin(), seq.begin() + drop);
            const int64_t T = static_cast<int64_t>(seq.size()), C = static_cast<int64_t>(cont.size());
            if (C >= T)
                throw Error("multiple-choice item " + std::to_string(i) + ": choice longer than the model context");
            auto tokens = torch::tensor(seq, torch::kInt64).view({1, T}).to(model.device());
            auto logp = torch::log_softmax(model.forward(tokens, nullptr, hooks).to(torch::kFloat64), -1);
            // Positions T-C-1 .. T-2 predict the choice tokens T-C .. T-1.
            auto pred = logp.narrow(1, T - C - 1, C);
            auto target = tokens.narrow(1, T - C, C).unsqueeze(-1);
            const double s = pred.gather(-1, target).sum().item<double>();
            scores.push_back(s);
            perByte.push_back(s / static_cast<double>(choice.size()));
        }
        const auto best = std::max_element(scores.begin(), scores.end()) - scores.begin();
        const auto bestNorm = std::max_element(perByte.begin(), perByte.end()) - perByte.begin();
        r.correct += best == item.answer;
        r.correctNorm += bestNorm == item.answer;
        r.scores.push_back(std::move(scores));
        ++r.items;
        if (progress)
            progress("choices", static_cast<double>(i + 1), static_cast<double>(items.size()));
    }
    r.accuracy = static_cast<double>(r.correct) / static_cast<double>(r.items);
    r.accuracyNorm = static_cast<double>(r.correctNorm) / static_cast<double>(r.items);
    return r;
}

} // namespace ladimo::core
