#include "train/pretrain.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstring>
#include <cmath>
#include <random>
#include <sstream>

#include "common/error.h"
#include "common/fileutil.h"
#include "eval/perplexity.h"
#include "model/llama.h"
#include "model/tokendata.h"
#include "model/tokenizer.h"

extern char** environ;

namespace fs = std::filesystem;

namespace ladimo::core {

namespace {

// Runs a program found on PATH with its output sent to `logFile`; throws Error when it fails.
void runProgram(const std::vector<std::string>& args, const fs::path& logFile)
{
    std::vector<char*> argv;
    for (const auto& a : args)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, logFile.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t pid = 0;
    const int rc = posix_spawnp(&pid, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        throw Error("cannot run '" + args[0] + "' (" + std::strerror(rc)
                    + "); it comes with Debian's 'sentencepiece' package");
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        throw Error("'" + args[0] + "' failed; see " + logFile.string());
}

std::unique_ptr<Tokenizer> trainTokenizer(const PretrainOptions& o)
{
    std::string inputs;
    for (const auto& f : o.trainFiles) {
        if (!fs::is_regular_file(f))
            throw Error("pretrain: training file '" + f.string() + "' does not exist");
        inputs += (inputs.empty() ? "" : ",") + f.string();
    }
    const fs::path prefix = o.outDir / "tokenizer";
    // Identity normalisation and kept whitespace so decode(encode(text)) == text; byte fallback
    // covers the rare characters (and newlines) like LLaMA-2's tokenizer does. The trainer runs as
    // Debian's spm_train program: inside this process its logging would write through a
    // std::cerr that RTLD_DEEPBIND leaves unconstructed (see model/spmapi.h).
    const std::vector<std::string> args = {"spm_train",
                                           "--input=" + inputs,
                                           "--model_prefix=" + prefix.string(),
                                           "--vocab_size=" + std::to_string(o.vocabSize),
                                           "--model_type=bpe",
                                           "--character_coverage=1.0",
                                           "--byte_fallback=true",
                                           "--split_digits=true",
                                           "--normalization_rule_name=identity",
                                           "--remove_extra_whitespaces=false",
                                           "--unk_id=0",
                                           "--bos_id=1",
                                           "--eos_id=2",
                                           "--pad_id=-1",
                                           "--num_threads=2",
                                           "--minloglevel=2"};
    runProgram(args, o.outDir / "tokenizer-training.log");
    std::error_code ec;
    fs::remove(o.outDir / "tokenizer.vocab", ec);
    return Tokenizer::loadSentencePiece(o.outDir / "tokenizer.model");
}

double lrAt(const PretrainOptions& o, int64_t step)
{
    if (step < o.warmup)
        return o.lr * static_cast<double>(step + 1) / static_cast<double>(o.warmup);
    const double progress = static_cast<double>(step - o.warmup) / std::max<double>(1, o.steps - o.warmup);
    const double cosine = 0.5 * (1 + std::cos(M_PI * std::min(1.0, progress)));
    return o.lr * (o.minLrRatio + (1 - o.minLrRatio) * cosine);
}

double lossOn(const LlamaModel& model, const torch::Tensor& batch)
{
    const int64_t T = batch.size(1) - 1;
    auto logits = model.forward(batch.narrow(1, 0, T));
    return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                batch.narrow(1, 1, T).reshape(-1))
        .item<double>();
}

// `c` is the stored model's configuration: the vocabulary and tied embeddings are only settled after
// the tokenizer is trained, not in the options.
std::string modelCard(const PretrainOptions& o, const ModelConfig& c, const nlohmann::json& record)
{
    std::ostringstream s;
    s << "# LaDiMo demo model: a small dense LLaMA trained on Jane Austen\n\n"
      << "A " << record["parameters"].get<int64_t>() << "-parameter LLaMA-architecture model (grouped-query "
      << "attention, rotate-half RoPE, RMSNorm, SwiGLU) trained from scratch by `ladimo pretrain` on five "
      << "public-domain novels by Jane Austen, so the workbench can show a full dense-to-MoE conversion "
      << "without downloading anything. It writes English-looking Austen-flavoured text, no more.\n\n"
      << "## Architecture\n\n"
      << "| field | value |\n|---|---|\n"
      << "| layers | " << c.numLayers << " |\n| hidden size | " << c.hiddenSize << " |\n"
      << "| FFN intermediate size | " << c.intermediateSize << " |\n"
      << "| attention heads / key-value heads | " << c.numHeads << " / " << c.numKvHeads << " |\n"
      << "| vocabulary | " << c.vocabSize << " (SentencePiece BPE, byte fallback) |\n"
      << "| context | " << c.maxPositions << " |\n| tied embeddings | " << (c.tieWordEmbeddings ? "yes" : "no")
      << " |\n| stored dtype | " << o.saveDType << " |\n\n"
      << "## Training\n\n"
      << "- Data: ";
    for (std::size_t i = 0; i < o.trainFiles.size(); ++i)
        s << (i ? ", " : "") << "`" << o.trainFiles[i].filename().string() << "`";
    s << " (" << record["train_tokens"].get<int64_t>() << " tokens); held out for validation: `"
      << o.validationFile.filename().string() << "` (" << record["validation_tokens"].get<int64_t>() << " tokens). "
      << "Each novel is tokenized whole with one BOS in front, exactly as `ladimo eval` reads a .txt file.\n"
      << "- Tokenizer: SentencePiece BPE trained on the training novels by libsentencepiece "
      << "(identity normalisation, byte fallback, " << o.vocabSize << " pieces).\n"
      << "- Optimiser: AdamW (beta 0.9/0.95, weight decay " << o.weightDecay << " on matrices), peak lr " << o.lr
      << ", " << o.warmup << " warmup steps then cosine decay to " << o.minLrRatio << " x peak, "
      << "gradient clipping at " << o.clip << ", " << o.steps << " steps of " << o.batch << " x " << o.seqLen
      << " tokens (random windows), seed " << o.seed << ", float32 on the CPU.\n"
      << "- Wall time: " << static_cast<int64_t>(record["seconds"].get<double>()) << " s on "
      << record["threads"].get<int>() << " CPU threads.\n\n"
      << "## Results (measured at the end of training, weights as stored)\n\n"
      << "| measure | value |\n|---|---|\n"
      << "| final training loss (mean of the last 20 steps) | " << record["final_train_loss"].get<double>() << " |\n"
      << "| validation loss on the held-out novel (seq-len " << o.seqLen << ") | "
      << record["validation_nll"].get<double>() << " |\n"
      << "| validation perplexity | " << record["validation_perplexity"].get<double>() << " |\n\n"
      << "Reproduce the validation perplexity:\n\n"
      << "    build/bin/ladimo eval resources/demo --data ../shared/data/text/austen/"
      << o.validationFile.filename().string() << " --seq-len " << o.seqLen << "\n\n"
      << "## Exact command\n\n    " << o.commandLine << "\n\n"
      << "## Licence\n\nThe training texts are in the public domain (Project Gutenberg editions via "
      << "Debian's r-cran-janeaustenr); the weights and tokenizer are released under the project's "
      << "licence (see LICENSE). The texts themselves are not included.\n";
    return s.str();
}

} // namespace

nlohmann::json pretrain(const PretrainOptions& o)
{
    if (o.trainFiles.empty())
        throw Error("pretrain: no training files");
    fs::create_directories(o.outDir);
    const auto start = std::chrono::steady_clock::now();
    auto log = [&](const std::string& line) {
        if (o.log)
            o.log(line);
    };

    log("training the SentencePiece tokenizer (" + std::to_string(o.vocabSize) + " pieces)");
    const auto tokenizer = trainTokenizer(o);

    ModelConfig config = o.model;
    config.vocabSize = tokenizer->vocabSize();
    config.bosTokenId = tokenizer->bosId();
    config.eosTokenId = tokenizer->eosId();
    config.architecture = "LlamaForCausalLM";
    config.modelType = "llama";
    config.tieWordEmbeddings = true;

    TokenDataOptions td;
    td.vocabSize = config.vocabSize;
    td.bosId = config.bosTokenId;
    std::vector<int64_t> train;
    for (const auto& f : o.trainFiles) {
        auto ids = loadTokenFile(f, tokenizer.get(), td);
        train.insert(train.end(), ids.begin(), ids.end());
    }
    const auto validation = loadTokenFile(o.validationFile, tokenizer.get(), td);
    log("tokens: train " + std::to_string(train.size()) + ", validation " + std::to_string(validation.size()));
    if (static_cast<int64_t>(train.size()) <= o.seqLen + 1)
        throw Error("pretrain: training data is shorter than one window");

    auto model = LlamaModel::randomInit(config, o.seed);
    std::vector<torch::Tensor> decay, noDecay;
    for (auto& [name, t] : model.weights().named()) {
        t->set_requires_grad(true);
        (t->dim() >= 2 ? decay : noDecay).push_back(*t);
    }
    std::vector<torch::optim::OptimizerParamGroup> groups;
    groups.emplace_back(decay,
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(o.weightDecay)));
    groups.emplace_back(noDecay,
                        std::make_unique<torch::optim::AdamWOptions>(
                            torch::optim::AdamWOptions(o.lr).betas({0.9, 0.95}).weight_decay(0.0)));
    torch::optim::AdamW optimizer(std::move(groups));

    const auto trainTensor = torch::tensor(train, torch::kInt64);
    const auto validationWindows = cutWindows(validation, o.seqLen + 1);
    std::mt19937_64 rng(o.seed + 1);
    std::uniform_int_distribution<int64_t> startDist(0, static_cast<int64_t>(train.size()) - o.seqLen - 1);
    std::vector<double> recent;
    nlohmann::json curve = nlohmann::json::array();
    auto periodicValidation = [&]() {
        torch::NoGradGuard ng;
        std::vector<int64_t> flat;
        int64_t n = 0;
        for (std::size_t i = 0; i < validationWindows.size() && n < o.evalWindows; i += 7) {
            if (static_cast<int64_t>(validationWindows[i].size()) != o.seqLen + 1)
                continue;
            flat.insert(flat.end(), validationWindows[i].begin(), validationWindows[i].end());
            ++n;
        }
        return lossOn(model, torch::tensor(flat, torch::kInt64).view({n, o.seqLen + 1}));
    };

    for (int64_t step = 0; step < o.steps; ++step) {
        o.cancel.throwIfCancelled();
        const double lr = lrAt(o, step);
        for (auto& g : optimizer.param_groups())
            static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
        std::vector<torch::Tensor> rows;
        for (int64_t b = 0; b < o.batch; ++b)
            rows.push_back(trainTensor.narrow(0, startDist(rng), o.seqLen + 1));
        auto batch = torch::stack(rows);
        auto logits = model.forward(batch.narrow(1, 0, o.seqLen));
        auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                         batch.narrow(1, 1, o.seqLen).reshape(-1));
        optimizer.zero_grad();
        loss.backward();
        std::vector<torch::Tensor> all = decay;
        all.insert(all.end(), noDecay.begin(), noDecay.end());
        torch::nn::utils::clip_grad_norm_(all, o.clip);
        optimizer.step();
        const double l = loss.item<double>();
        if (!std::isfinite(l))
            throw Error("pretrain: loss became " + std::to_string(l) + " at step " + std::to_string(step)
                        + " (lower --lr)");
        recent.push_back(l);
        if (recent.size() > 20)
            recent.erase(recent.begin());
        if ((step + 1) % o.evalEvery == 0 || step + 1 == o.steps) {
            const double v = periodicValidation();
            double mean = 0;
            for (double r : recent)
                mean += r / static_cast<double>(recent.size());
            curve.push_back({{"step", step + 1}, {"train_loss", mean}, {"validation_loss", v}, {"lr", lr}});
            std::ostringstream line;
            line << "step " << step + 1 << "/" << o.steps << "  train loss " << mean << "  validation loss " << v
                 << "  lr " << lr;
            log(line.str());
        }
        if (o.progress)
            o.progress("pretrain", static_cast<double>(step + 1), static_cast<double>(o.steps));
    }

    const torch::ScalarType saveType = o.saveDType == "float32" ? torch::kFloat32
        : o.saveDType == "float16"                              ? torch::kFloat16
                                                                : torch::kBFloat16;
    model.save(o.outDir, saveType);

    // Final validation on the whole held-out file, from the weights as stored (what users load).
    const auto stored = LlamaModel::load(o.outDir);
    EvalOptions eo;
    eo.seqLen = o.seqLen;
    const auto v = evaluatePerplexity(stored, validation, eo);
    double finalTrain = 0;
    for (double r : recent)
        finalTrain += r / static_cast<double>(recent.size());
    nlohmann::json record = {
        {"final_train_loss", finalTrain},
        {"validation_nll", v.nll},
        {"validation_perplexity", v.perplexity},
        {"validation_tokens", static_cast<int64_t>(validation.size())},
        {"train_tokens", static_cast<int64_t>(train.size())},
        {"parameters", countParameters(stored.weights())},
        {"steps", o.steps},
        {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()},
        {"threads", torch::get_num_threads()},
        {"seed", o.seed},
        {"command", o.commandLine},
        {"curve", curve},
    };
    atomicWriteFile(o.outDir / "training.json", record.dump(2) + "\n");
    atomicWriteFile(o.outDir / "README.md", modelCard(o, stored.config(), record));
    return record;
}

} // namespace ladimo::core
