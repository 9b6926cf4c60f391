#include "model/generate.h"

#include <ATen/CPUGeneratorImpl.h>

#include <atomic>

#include "common/cputeam.h"
#include "common/error.h"
#include "model/llama.h"

namespace ladimo::core {

namespace {

torch::Tensor nextTokens(const torch::Tensor& lastLogits, double temperature, at::Generator& gen)
{
    if (temperature <= 0)
        return lastLogits.argmax(-1);
    // Sample on the CPU so the same seed gives the same ids on every device.
    auto probs = torch::softmax(lastLogits.to(torch::kCPU, torch::kFloat64) / temperature, -1);
    return at::multinomial(probs, 1, /*replacement=*/false, gen).squeeze(-1);
}

} // namespace

std::vector<std::vector<int64_t>> generate(const LlamaModel& model, const std::vector<std::vector<int64_t>>& prompts,
                                           const GenerateOptions& o)
{
    if (prompts.empty() || prompts.front().empty())
        throw Error("generate: the prompt is empty");
    const int64_t B = static_cast<int64_t>(prompts.size());
    const int64_t T = static_cast<int64_t>(prompts.front().size());
    for (const auto& p : prompts) {
        if (static_cast<int64_t>(p.size()) != T)
            throw Error("generate: prompts of a batch must have the same length");
        for (int64_t id : p)
            if (id < 0 || id >= model.config().vocabSize)
                throw Error("generate: prompt id " + std::to_string(id) + " is outside the vocabulary [0, "
                            + std::to_string(model.config().vocabSize) + ")");
    }
    if (o.maxNew < 0)
        throw Error("generate: --max-new must be >= 0");
    if (o.hooks && o.hooks->lastLayer >= 0)
        throw Error("generate: forward hooks must run the whole model (lastLayer is set)");
    const int64_t capacity = T + o.maxNew;
    if (capacity > model.config().maxPositions)
        throw Error("generate: " + std::to_string(capacity) + " positions exceed max_position_embeddings "
                    + std::to_string(model.config().maxPositions));
    torch::InferenceMode guard;
    at::Generator gen = at::detail::createCPUGenerator(o.seed);
    std::vector<int64_t> flat;
    for (const auto& p : prompts)
        flat.insert(flat.end(), p.begin(), p.end());
    auto tokens = torch::tensor(flat, torch::kInt64).view({B, T});
    std::vector<std::vector<int64_t>> out = prompts;
    std::vector<bool> done(static_cast<std::size_t>(B), false);
    KvCache cache = model.makeCache(B, capacity);
    // A streamed model reads every layer for every token: keep layers resident, lowest first, in
    // half the memory budget while generating, and let them go afterwards.
    LayerCacheScope layerCache(model);
    auto input = tokens;
    for (int64_t step = 0; step < o.maxNew; ++step) {
        o.cancel.throwIfCancelled();
        auto logits = model.forward(input, &cache, o.hooks);
        auto next = nextTokens(logits.select(1, logits.size(1) - 1), o.temperature, gen).to(torch::kCPU);
        auto acc = next.accessor<int64_t, 1>();
        bool all = true;
        std::vector<int64_t> drawn(static_cast<std::size_t>(B), -1);
        for (int64_t b = 0; b < B; ++b) {
            if (!done[static_cast<std::size_t>(b)]) {
                drawn[static_cast<std::size_t>(b)] = acc[b];
                out[static_cast<std::size_t>(b)].push_back(acc[b]);
                if (o.stopId >= 0 && acc[b] == o.stopId)
                    done[static_cast<std::size_t>(b)] = true;
            }
            all = all && done[static_cast<std::size_t>(b)];
        }
        if (o.onTokens)
            o.onTokens(drawn);
        if (o.progress)
            o.progress("generate", static_cast<double>(step + 1), static_cast<double>(o.maxNew));
        if (all)
            break;
        input = next.view({B, 1});
    }
    return out;
}

std::vector<int64_t> selfSample(const LlamaModel& model, const SelfSampleOptions& o)
{
    if (o.tokens <= 0)
        throw Error("--self-sample needs a positive token count");
    if (o.seqLen < 2)
        throw Error("--seq-len must be at least 2 for self-sampling");
    if (model.config().bosTokenId < 0)
        throw Error("self-sampling needs a BOS token id in config.json");
    const int64_t sequences = (o.tokens + o.seqLen - 1) / o.seqLen;
    const int64_t chunks = (sequences + o.batch - 1) / o.batch;
    // Chunk c holds sequences [c*batch, ...) and draws from its own generator, derived from the
    // seed: chunks are reproducible on their own, whichever thread runs them. A resident model
    // on the CPU spreads them over the CPU team (one chunk a core, each with a single-threaded
    // BLAS): decoding a small model is many small products, which one core runs as fast as two
    // (tinystories260K, 163,840 tokens on 2 cores: 20 s one chunk at a time, 11 s on the team).
    // A streamed model runs them one by one: its layer cache is shared.
    std::vector<std::vector<int64_t>> made(static_cast<std::size_t>(chunks));
    std::atomic<int64_t> finished{0};
    auto runChunk = [&](int64_t chunk) {
        const int64_t b = std::min(o.batch, sequences - chunk * o.batch);
        GenerateOptions g;
        g.maxNew = o.seqLen - 1;
        g.temperature = o.temperature;
        g.seed = o.seed * 1000003ull + static_cast<uint64_t>(chunk);
        g.cancel = o.cancel;
        std::vector<std::vector<int64_t>> prompts(static_cast<std::size_t>(b),
                                                  std::vector<int64_t>{model.config().bosTokenId});
        auto& out = made[static_cast<std::size_t>(chunk)];
        out.reserve(static_cast<std::size_t>(b * o.seqLen));
        for (const auto& seq : generate(model, prompts, g))
            out.insert(out.end(), seq.begin(), seq.end());
        finished += b;
    };
    auto report = [&] {
        if (o.progress)
            o.progress("self-sample", static_cast<double>(finished.load() * o.seqLen),
                       static_cast<double>(sequences * o.seqLen));
    };
    const bool split = !model.streamed() && model.device().is_cpu();
    const int shares = split ? static_cast<int>(std::min<int64_t>(CpuTeam::instance().size(), chunks)) : 1;
    std::atomic<int64_t> next{0};
    // One share runs every chunk on the calling thread, the BLAS left as it is.
    CpuTeam::instance().run(
        [&](int share, int) {
            for (int64_t c = next++; c < chunks; c = next++) {
                try {
                    runChunk(c);
                } catch (...) {
                    next = chunks; // the other shares stop after their current chunk
                    throw;
                }
                if (share == 0) // the calling thread: callbacks stay on it
                    report();
            }
        },
        shares);
    if (shares > 1)
        report(); // the other shares' last chunks
    std::vector<int64_t> stream;
    stream.reserve(static_cast<std::size_t>(sequences * o.seqLen));
    for (const auto& c : made)
        stream.insert(stream.end(), c.begin(), c.end());
    return stream;
}

} // namespace ladimo::core
