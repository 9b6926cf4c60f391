// Multiple-choice scoring on the bundled demo model: each choice's log-likelihood equals a
// token-by-token KV-cache computation, accuracy follows from the scores, and malformed .jsonl
// files are refused with the file, line and key.
#include <fstream>

#include <torch/torch.h>

#include "common/error.h"
#include "eval/choice.h"
#include "model/llama.h"
#include "model/tokenizer.h"
#include "testutil.h"

using namespace ladimo::core;

namespace {

std::filesystem::path writeLines(const std::filesystem::path& file, const std::string& text)
{
    std::ofstream(file) << text;
    return file;
}

std::filesystem::path demo() { return ladimo::test::sourceDir() / "resources" / "demo"; }

} // namespace

TEST(Choice, ScoresEqualTokenByTokenLikelihoods)
{
    LADIMO_REQUIRE_SPM(); // the demo / shared tokenizer.model
    ladimo::test::TempDir tmp;
    const auto file = writeLines(
        tmp / "mc.jsonl",
        R"({"question": "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a", "choices": ["wife", "horse", "carriage"], "answer": 0})"
        "\n\n"
        R"({"question": "She was the youngest of the two daughters of a most affectionate, indulgent", "choices": ["father", "table", "river"], "answer": "father"})"
        "\n"
        R"({"question": "Emma Woodhouse, handsome, clever, and", "choices": ["rich", "blue", "seven"], "answer": 0})"
        "\n");
    const auto items = loadChoiceItems(file);
    ASSERT_EQ(items.size(), 3u);
    EXPECT_EQ(items[1].answer, 0);
    const auto model = LlamaModel::load(demo());
    const auto tok = Tokenizer::loadForModel(demo());
    ASSERT_TRUE(tok);
    const auto r = evaluateChoices(model, *tok, items);
    ASSERT_EQ(r.scores.size(), 3u);
    int64_t correct = 0;
    torch::InferenceMode guard;
    for (std::size_t i = 0; i < items.size(); ++i) {
        for (std::size_t c = 0; c < items[i].choices.size(); ++c) {
            // The same likelihood through the KV cache, one token at a time.
            std::vector<int64_t> ctx = {tok->bosId()};
            for (int id : tok->encode(items[i].question))
                ctx.push_back(id);
            const auto cont = tok->encode(items[i].choices[c]);
            auto cache = model.makeCache(1, static_cast<int64_t>(ctx.size() + cont.size()));
            auto logits = model.forward(torch::tensor(ctx, torch::kInt64).view({1, -1}), &cache);
            double s = 0;
            for (int id : cont) {
                auto logp = torch::log_softmax(logits.select(1, logits.size(1) - 1).to(torch::kFloat64), -1);
                s += logp[0][id].item<double>();
                logits = model.forward(torch::tensor({static_cast<int64_t>(id)}, torch::kInt64).view({1, 1}), &cache);
            }
            EXPECT_NEAR(r.scores[i][c], s, 1e-3 * std::max(1.0, std::abs(s))) << "item " << i << " choice " << c;
        }
        const auto best = std::max_element(r.scores[i].begin(), r.scores[i].end()) - r.scores[i].begin();
        correct += best == items[i].answer;
    }
    EXPECT_EQ(r.correct, correct);
    EXPECT_DOUBLE_EQ(r.accuracy, static_cast<double>(correct) / 3.0);
    EXPECT_EQ(r.items, 3);
}

TEST(Choice, MalformedFilesNameTheLineAndKey)
{
    ladimo::test::TempDir tmp;
    auto expectError = [&](const std::string& text, const std::string& needle) {
        const auto file = writeLines(tmp / "bad.jsonl", text);
        try {
            loadChoiceItems(file);
            ADD_FAILURE() << "no error for " << text;
        } catch (const Error& e) {
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expectError("{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 0}\nnot json\n",
                "bad.jsonl:2: not valid JSON");
    expectError("{\"choices\": [\"a\", \"b\"], \"answer\": 0}\n", "'question' must be a string");
    expectError("{\"question\": \"q\", \"choices\": [\"a\"], \"answer\": 0}\n", "'choices' must be an array of 2..");
    expectError("{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n",
                "'answer' 2 is not a choice index");
    expectError("{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": \"c\"}\n", "is not one of the choices");
    expectError("\n\n", "holds no items");
    EXPECT_THROW(loadChoiceItems(tmp / "missing.jsonl"), Error);
}
