// `ladimo pretrain`: trains the bundled demo model (tokenizer + dense LLaMA) from text files.
#include <cstdio>
#include <iostream>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "train/pretrain.h"

namespace ladimo::cli {

void registerPretrainCommand(CLI::App& app)
{
    struct Opts {
        core::PretrainOptions p;
        std::vector<std::string> train;
        std::string validation;
        std::string out;
        int threads = 0;
    };
    auto o = std::make_shared<Opts>();
    o->p.model.hiddenSize = 256;
    o->p.model.intermediateSize = 768;
    o->p.model.numLayers = 4;
    o->p.model.numHeads = 8;
    o->p.model.numKvHeads = 2;
    o->p.model.maxPositions = 512;
    o->p.model.rmsNormEps = 1e-5;
    auto* cmd
        = app.add_subcommand("pretrain", "Train a small dense LLaMA model and its SentencePiece tokenizer from text");
    cmd->add_option("--train", o->train, "Training text files")->required()->check(CLI::ExistingFile);
    cmd->add_option("--validation", o->validation, "Held-out text file for validation")
        ->required()
        ->check(CLI::ExistingFile);
    cmd->add_option("--out", o->out, "Output model directory (Hugging Face layout)")->required();
    cmd->add_option("--vocab", o->p.vocabSize, "SentencePiece vocabulary size")->capture_default_str();
    cmd->add_option("--hidden", o->p.model.hiddenSize, "Hidden size")->capture_default_str();
    cmd->add_option("--intermediate", o->p.model.intermediateSize, "FFN intermediate size")->capture_default_str();
    cmd->add_option("--layers", o->p.model.numLayers, "Decoder layers")->capture_default_str();
    cmd->add_option("--heads", o->p.model.numHeads, "Attention heads")->capture_default_str();
    cmd->add_option("--kv-heads", o->p.model.numKvHeads, "Key/value heads (grouped-query attention)")
        ->capture_default_str();
    cmd->add_option("--context", o->p.model.maxPositions, "max_position_embeddings")->capture_default_str();
    cmd->add_option("--seq-len", o->p.seqLen, "Training window length")->capture_default_str();
    cmd->add_option("--batch", o->p.batch, "Windows per step")->capture_default_str();
    cmd->add_option("--steps", o->p.steps, "Optimiser steps")->capture_default_str();
    cmd->add_option("--warmup", o->p.warmup, "Linear warmup steps")->capture_default_str();
    cmd->add_option("--lr", o->p.lr, "Peak learning rate")->capture_default_str();
    cmd->add_option("--weight-decay", o->p.weightDecay, "AdamW weight decay (matrices only)")->capture_default_str();
    cmd->add_option("--clip", o->p.clip, "Gradient norm clipping")->capture_default_str();
    cmd->add_option("--eval-every", o->p.evalEvery, "Validation every N steps")->capture_default_str();
    cmd->add_option("--seed", o->p.seed, "Seed")->capture_default_str();
    cmd->add_option("--save-dtype", o->p.saveDType, "float32, bfloat16 or float16")->capture_default_str();
    cmd->add_option("--threads", o->threads, "CPU threads (0 = LibTorch default)")->capture_default_str();
    cmd->callback([o, &app] {
        if (o->threads > 0)
            torch::set_num_threads(o->threads);
        o->p.model.headDim = o->p.model.hiddenSize / o->p.model.numHeads;
        for (const auto& t : o->train)
            o->p.trainFiles.emplace_back(t);
        o->p.validationFile = o->validation;
        o->p.outDir = o->out;
        std::string cmdline = "build/bin/ladimo pretrain";
        for (const auto& t : o->train)
            cmdline += " --train " + t;
        cmdline += " --validation " + o->validation + " --out " + o->out + " --vocab " + std::to_string(o->p.vocabSize)
            + " --hidden " + std::to_string(o->p.model.hiddenSize) + " --intermediate "
            + std::to_string(o->p.model.intermediateSize) + " --layers " + std::to_string(o->p.model.numLayers)
            + " --heads " + std::to_string(o->p.model.numHeads) + " --kv-heads " + std::to_string(o->p.model.numKvHeads)
            + " --seq-len " + std::to_string(o->p.seqLen) + " --batch " + std::to_string(o->p.batch) + " --steps "
            + std::to_string(o->p.steps) + " --warmup " + std::to_string(o->p.warmup) + " --lr "
            + CLI::detail::to_string(o->p.lr) + " --seed " + std::to_string(o->p.seed) + " --save-dtype "
            + o->p.saveDType;
        o->p.commandLine = cmdline;
        ProgressPrinter printer;
        o->p.progress = printer.fn();
        o->p.log = [](const std::string& line) { std::fprintf(stderr, "\n%s\n", line.c_str()); };
        const auto record = core::pretrain(o->p);
        std::printf("saved %s: final train loss %.4f, validation loss %.4f (perplexity %.2f) in %.0f s\n",
                    o->out.c_str(), record["final_train_loss"].get<double>(), record["validation_nll"].get<double>(),
                    record["validation_perplexity"].get<double>(), record["seconds"].get<double>());
    });
}

} // namespace ladimo::cli
