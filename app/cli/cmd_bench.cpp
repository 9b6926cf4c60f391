// `ladimo bench`: prefill and decode speed of a model on this machine.
#include <chrono>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cliutil.h"
#include "commands.h"
#include "common/error.h"
#include "routing/latency.h"

namespace ladimo::cli {

void registerBenchCommand(CLI::App& app)
{
    struct Opts {
        ModelOptions model;
        int64_t prefill = 512;
        int64_t decode = 64;
        int repeats = 3;
        bool json = false;
    };
    auto o = std::make_shared<Opts>();
    auto* cmd = app.add_subcommand(
        "bench", "Dense forward throughput: prefill (batch of N tokens) and decode (1 token with KV cache)");
    o->model.add(cmd);
    cmd->add_option("--prefill", o->prefill, "Prefill length in tokens")->capture_default_str();
    cmd->add_option("--decode", o->decode, "Decode steps")->capture_default_str();
    cmd->add_option("--repeats", o->repeats, "Best of N runs")->capture_default_str();
    cmd->add_flag("--json", o->json, "Machine-readable output");
    cmd->callback([o] {
        torch::InferenceMode guard;
        auto model = o->model.load();
        // A streamed model keeps layers resident in half the budget, as generation does.
        core::LayerCacheScope layerCache(model);
        const auto& c = model.config();
        const int64_t prefill = std::min(o->prefill, c.maxPositions - o->decode);
        if (prefill < 1)
            throw core::Error("bench: --prefill + --decode exceed max_position_embeddings");
        torch::manual_seed(0);
        auto tokens = torch::randint(c.vocabSize, {1, prefill}, torch::kInt64);
        auto sync = [&] {
            if (model.device().is_cuda())
                (void)model.forward(tokens.narrow(1, 0, 1)).sum().item<float>(); // forces completion
        };
        double bestPrefill = 1e30, bestDecode = 1e30;
        for (int r = 0; r < std::max(1, o->repeats) + 1; ++r) { // first run warms up
            auto cache = model.makeCache(1, prefill + o->decode);
            auto t0 = std::chrono::steady_clock::now();
            auto logits = model.forward(tokens, &cache);
            auto next = logits.select(1, prefill - 1).argmax(-1).view({1, 1});
            sync();
            auto t1 = std::chrono::steady_clock::now();
            for (int64_t s = 0; s < o->decode; ++s)
                next = model.forward(next, &cache).select(1, 0).argmax(-1).view({1, 1});
            (void)next.item<int64_t>();
            auto t2 = std::chrono::steady_clock::now();
            if (r == 0)
                continue;
            bestPrefill = std::min(bestPrefill, std::chrono::duration<double>(t1 - t0).count());
            bestDecode = std::min(bestDecode, std::chrono::duration<double>(t2 - t1).count());
        }
        const double prefillTps = static_cast<double>(prefill) / bestPrefill;
        const double decodeTps = o->decode > 0 ? static_cast<double>(o->decode) / bestDecode : 0.0;
        nlohmann::json j
            = {{"device", model.device().str()},          {"dtype", c10::toString(model.dtype())},
               {"threads", torch::get_num_threads()},     {"prefill_tokens", prefill},
               {"prefill_tokens_per_second", prefillTps}, {"decode_tokens", o->decode},
               {"decode_tokens_per_second", decodeTps},   {"weights", model.streamed() ? "streamed" : "resident"}};
        addPeakRss(j);
        if (o->json)
            std::cout << j.dump(2) << "\n";
        else
            std::printf("%s on %s (%s, %d threads): prefill %lld tokens (batch %lld) %.0f tokens/s; decode batch 1 "
                        "%.1f tokens/s\n",
                        o->model.path.c_str(), model.device().str().c_str(), c10::toString(model.dtype()),
                        torch::get_num_threads(), (long long)prefill, (long long)prefill, prefillTps, decodeTps);
    });
}

} // namespace ladimo::cli
