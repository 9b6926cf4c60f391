#include "convert/convert.h"

#include <chrono>
#include <mutex>
#include <optional>
#include <thread>
#include <sstream>

#include "common/cputeam.h"
#include "common/error.h"
#include "common/parse.h"
#include "common/scratch.h"
#include "model/safetensors.h"
#include "model/tokendata.h"

namespace ladimo::core {

nlohmann::json ConvertSettings::toJson() const
{
    nlohmann::json j = {{"experts", experts},
                        {"partition", partitionName(partition)},
                        {"gating", gatingName(gating)},
                        {"mode", mode},
                        {"train_top_k", distill.trainTopK},
                        {"train_active", trainActive},
                        {"random_k", distill.randomK},
                        {"full_k_weight", distill.fullKWeight},
                        {"router_target", routerTargetName(distill.routerTarget)},
                        {"e2e_steps", endToEnd.steps},
                        {"e2e_lr", endToEnd.lr},
                        {"e2e_windows", endToEnd.windows},
                        {"e2e_routers", endToEnd.trainRouters},
                        {"e2e_full_k_weight", endToEnd.fullKWeight},
                        {"epochs", distill.epochs},
                        {"router_epochs", distill.routerEpochs},
                        {"lr", distill.lr},
                        {"router_lr", distill.routerLr},
                        {"batch", distill.batch},
                        {"seed", distill.seed},
                        {"seq_len", seqLen}};
    if (sharedNeurons > 0) // absent when 0, as runs made before shared neurons record it
        j["shared_neurons"] = sharedNeurons;
    return j;
}

CaptureInfo captureFfn(const LlamaModel& model, const std::vector<int64_t>& stream, int64_t seqLen,
                       std::vector<torch::Tensor>* xs, std::vector<torch::Tensor>* ys, const CaptureOptions& options)
{
    const std::vector<MoeLayer>* moe = options.moe;
    const RoutingRule* rule = options.moe ? &options.rule : nullptr;
    const int upToLayer = options.upToLayer;
    const std::set<int>* only = options.only.empty() ? nullptr : &options.only;
    torch::InferenceMode guard;
    const int L = upToLayer >= 0 ? upToLayer : static_cast<int>(model.config().numLayers) - 1;
    const auto windows = cutWindows(stream, seqLen);
    int64_t tokens = 0;
    for (const auto& w : windows)
        tokens += static_cast<int64_t>(w.size());
    const int64_t H = model.config().hiddenSize;
    const auto kept = [&](int l) { return !only || only->count(l) > 0; };
    int keptLayers = 0;
    for (int l = 0; l <= L; ++l)
        keptLayers += kept(l) ? 1 : 0;
    // Every row is written exactly once below, so the buffers are allocated up front (no
    // per-window pieces to concatenate: half the peak memory) and may live in scratch files.
    CaptureInfo info;
    info.bytes = static_cast<std::uint64_t>(keptLayers) * 2 * static_cast<std::uint64_t>(tokens * H) * sizeof(float);
    const std::uint64_t budget = options.memoryBudget ? options.memoryBudget : availableMemoryBytes() / 2;
    info.spilled = !options.spillDir.empty() && info.bytes > budget;
    const auto buffer = [&]() {
        return info.spilled ? fileBackedTensor(options.spillDir, {tokens, H}, torch::kFloat32)
                            : torch::empty({tokens, H}, torch::TensorOptions().dtype(torch::kFloat32));
    };
    xs->assign(static_cast<std::size_t>(L + 1), torch::Tensor());
    ys->assign(static_cast<std::size_t>(L + 1), torch::Tensor());
    for (int l = 0; l <= L; ++l)
        if (kept(l)) {
            (*xs)[static_cast<std::size_t>(l)] = buffer();
            (*ys)[static_cast<std::size_t>(l)] = buffer();
        }
    std::vector<int64_t> filled(static_cast<std::size_t>(L + 1), 0);
    ForwardHooks hooks;
    hooks.lastLayer = L;
    int64_t passWindows = 0; // windows in the forward pass being run
    hooks.onFfn = [&](int layer, const torch::Tensor& x, const torch::Tensor& y) {
        if (!kept(layer))
            return;
        if (options.faultHook)
            options.faultHook(layer, passWindows);
        const auto i = static_cast<std::size_t>(layer);
        const int64_t n = x.numel() / H;
        (*xs)[i].narrow(0, filled[i], n).copy_(x.reshape({n, H}));
        (*ys)[i].narrow(0, filled[i], n).copy_(y.reshape({n, H}));
        filled[i] += n;
    };
    if (moe && rule)
        hooks.ffnOverride = [&](int layer, const torch::Tensor& x) {
            return layer < static_cast<int>(moe->size()) && (*moe)[static_cast<std::size_t>(layer)].router.defined()
                ? (*moe)[static_cast<std::size_t>(layer)].forward(x, *rule)
                : torch::Tensor();
        };
    std::size_t perPass = static_cast<std::size_t>(std::max<int64_t>(1, options.maxWindows));
    // A streamed model runs a group of passes layer-major, so each layer is read once per group;
    // the group's hidden states take at most an eighth of the budget (at least one pass).
    const std::uint64_t groupBytes = model.streamed() ? budget / 8 : 0;
    const std::uint64_t tokenBytes = static_cast<std::uint64_t>(H) * c10::elementSize(model.dtype());
    const auto report = [&](double done) {
        options.cancel.throwIfCancelled();
        if (options.progress)
            options.progress("capture", done, static_cast<double>(windows.size()));
    };
    for (std::size_t i = 0; i < windows.size();) {
        std::vector<torch::Tensor> passes;
        std::size_t j = i;
        std::uint64_t bytes = 0;
        do {
            const std::size_t len = windows[j].size();
            std::vector<int64_t> flat;
            std::size_t k = j;
            for (; k < windows.size() && windows[k].size() == len && k - j < perPass; ++k)
                flat.insert(flat.end(), windows[k].begin(), windows[k].end());
            passes.push_back(
                torch::tensor(flat, torch::kInt64).view({static_cast<int64_t>(k - j), static_cast<int64_t>(len)}));
            bytes += static_cast<std::uint64_t>(flat.size()) * tokenBytes;
            j = k;
        } while (j < windows.size() && bytes + perPass * windows[j].size() * tokenBytes <= groupBytes);
        passWindows = passes.front().size(0);
        const std::vector<int64_t> before = filled; // rows per layer before this group
        try {
            if (passes.size() == 1) {
                model.forward(passes.front(), nullptr, &hooks);
            } else {
                hooks.onLayerDone = [&](int layer) {
                    report(static_cast<double>(i) + static_cast<double>(j - i) * (layer + 1) / (L + 1));
                };
                model.forwardLayerMajor(passes, &hooks, [](std::size_t, const torch::Tensor&) {});
                hooks.onLayerDone = nullptr;
            }
        } catch (const c10::OutOfMemoryError&) {
            hooks.onLayerDone = nullptr;
            filled = before; // the retry overwrites the failed group's partial rows
            if (passWindows == 1)
                throw Error("out of memory on " + model.device().str()
                            + " capturing FFN activations, even with one window of "
                            + std::to_string(passes.front().size(1))
                            + " tokens per forward pass (free device memory or use a shorter sequence length)");
            perPass = static_cast<std::size_t>(passWindows) / 2;
            if (options.onRecovered)
                options.onRecovered("capture: out of memory with " + std::to_string(passWindows)
                                    + " windows per forward pass, retried with " + std::to_string(perPass));
            continue;
        }
        i = j;
        report(static_cast<double>(i));
    }
    return info;
}

int trainTopKFor(const ConvertSettings& s, const ModelConfig& c)
{
    if (s.distill.trainTopK > 0)
        return static_cast<int>(std::min<int64_t>(s.distill.trainTopK, s.experts));
    const double H = static_cast<double>(c.hiddenSize), I = static_cast<double>(c.intermediateSize);
    const double N = static_cast<double>(s.experts), M = static_cast<double>(s.sharedNeurons);
    const double perExpert = 3 * H * (I - M) / N, budget = s.trainActive * 3 * H * I - N * H - 3 * H * M;
    return static_cast<int>(std::clamp<double>(std::floor(budget / perExpert + 1e-9), 1, N));
}

std::vector<MoeLayer> convertModel(const LlamaModel& model, const std::vector<int64_t>& calibration,
                                   const ConvertSettings& settings, const ConvertCallbacks& cb,
                                   const std::set<int>& skip, std::vector<MoeLayer> done)
{
    ConvertSettings s = settings;
    s.distill.trainTopK = trainTopKFor(settings, model.config());
    const int L = static_cast<int>(model.config().numLayers);
    checkSeqLen(s.seqLen, model.config());
    done.resize(static_cast<std::size_t>(L));
    const bool sequential = s.mode == "sequential";
    if (!sequential && s.mode != "parallel")
        throw Error("unknown mode '" + s.mode + "' (expected parallel or sequential)");
    std::vector<torch::Tensor> xs(static_cast<std::size_t>(L)), ys(static_cast<std::size_t>(L));
    if (!sequential) {
        // Only the layers still to do; those supplied by the caller need no dense forward pass.
        std::set<int> missing;
        for (int l = 0; l < L; ++l)
            if (!skip.count(l)
                && !(cb.loadCaptured
                     && cb.loadCaptured(l, &xs[static_cast<std::size_t>(l)], &ys[static_cast<std::size_t>(l)])))
                missing.insert(l);
        if (!missing.empty()) {
            std::vector<torch::Tensor> cx, cy;
            CaptureOptions co = s.capture;
            co.progress = cb.progress;
            co.cancel = cb.cancel;
            co.upToLayer = *missing.rbegin();
            co.only = missing;
            const auto info = captureFfn(model, calibration, s.seqLen, &cx, &cy, co);
            if (cb.onCapture)
                cb.onCapture(info);
            for (int l : missing) {
                xs[static_cast<std::size_t>(l)] = cx[static_cast<std::size_t>(l)];
                ys[static_cast<std::size_t>(l)] = cy[static_cast<std::size_t>(l)];
            }
        }
    }
    const auto trainRule = RoutingRule::staticK(s.distill.trainTopK);
    // One layer, on one device: partition, router fit, distillation. Deterministic for a seed,
    // whichever worker runs it.
    auto convertLayer = [&](int l, const torch::Device& device, const CancelToken& cancel) {
        const auto start = std::chrono::steady_clock::now();
        DenseFfn ffn;
        {
            const auto w = model.layer(l); // a streamed model reads the layer now and frees it after the copy
            ffn = DenseFfn{w->gate.to(device, torch::kFloat32), w->up.to(device, torch::kFloat32),
                           w->down.to(device, torch::kFloat32)};
        }
        const auto x = xs[static_cast<std::size_t>(l)].to(device);
        const auto y = ys[static_cast<std::size_t>(l)].to(device);
        auto layer
            = buildMoeLayer(ffn, partitionNeurons(ffn, x, s.experts, s.partition, s.distill.seed + l, s.sharedNeurons),
                            s.experts, s.gating);
        ffn = DenseFfn{}; // the experts are cut; a 7B layer's dense copy is 0.5 GB
        DistillOptions d = s.distill;
        d.seed = s.distill.seed + static_cast<uint64_t>(l);
        d.cancel = cancel;
        const int64_t steps = d.epochs * ((x.size(0) + d.batch - 1) / d.batch);
        d.onStep = [&](int, int64_t step, double loss) {
            cb.cancel.throwIfCancelled(); // the caller's token, besides the workers' shared one
            if (cb.onStep)
                cb.onStep(l, step, loss);
            if (cb.progress)
                cb.progress("layer " + std::to_string(l), static_cast<double>(step + 1), static_cast<double>(steps));
        };
        requireFinite(x, "layer " + std::to_string(l) + ": the captured FFN input");
        requireFinite(y, "layer " + std::to_string(l) + ": the captured FFN output");
        fitRouter(layer, x, d);
        requireFinite(layer.router, "layer " + std::to_string(l) + ": the fitted router");
        const auto r = distill(layer, x, y, d);
        LayerConversion res;
        res.recovered = r.recovered;
        res.layer = l;
        res.initialError = r.initialLoss;
        res.finalError = r.finalLoss;
        res.lossCurve = r.lossCurve;
        res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        for (auto* t : {&layer.router, &layer.gate, &layer.up, &layer.down, &layer.sharedGate, &layer.sharedUp,
                        &layer.sharedDown})
            if (t->defined())
                *t = t->to(torch::kCPU);
        return std::make_pair(layer, res);
    };
    // A NumericalFault fails just that layer when the caller takes per-layer failures.
    using Converted = std::optional<std::pair<MoeLayer, LayerConversion>>;
    auto tryConvertLayer
        = [&](int l, const torch::Device& device, const CancelToken& cancel, std::mutex* callbackMutex) -> Converted {
        try {
            return convertLayer(l, device, cancel);
        } catch (const NumericalFault& e) {
            if (!cb.onLayerFailed)
                throw;
            std::unique_lock<std::mutex> lock;
            if (callbackMutex)
                lock = std::unique_lock<std::mutex>(*callbackMutex);
            cb.onLayerFailed(l, e.what());
            return std::nullopt;
        }
    };

    const std::vector<torch::Device> devices = s.devices.empty() ? std::vector<torch::Device>{torch::kCPU} : s.devices;
    if (sequential || devices.size() == 1) {
        for (int l = 0; l < L; ++l) {
            cb.cancel.throwIfCancelled();
            if (skip.count(l))
                continue;
            if (cb.onLayerStart)
                cb.onLayerStart(l);
            if (sequential) { // inputs from the converted layers below, dense target of those inputs
                CaptureOptions co = s.capture;
                co.moe = &done;
                co.rule = trainRule;
                co.upToLayer = l;
                captureFfn(model, calibration, s.seqLen, &xs, &ys, co);
            }
            auto converted = tryConvertLayer(l, devices.front(), cb.cancel, nullptr);
            if (!converted)
                continue;
            auto& [layer, res] = *converted;
            done[static_cast<std::size_t>(l)] = layer;
            if (cb.onLayerDone)
                cb.onLayerDone(l, layer, res);
        }
        return done;
    }

    // Parallel mode, several devices: one worker thread per device takes the next layer.
    // Callbacks (which write the project) are serialised; the first failure stops the others.
    std::mutex mutex;              // guards next, firstError and the callbacks
    int next = 0;                  // guarded by mutex
    std::exception_ptr firstError; // guarded by mutex
    CancelToken stopAll;           // set by the first failure or by the caller's token
    auto worker = [&](torch::Device device) {
        try {
            for (;;) {
                int l = -1;
                {
                    std::lock_guard<std::mutex> lock(mutex);
                    while (next < L && skip.count(next))
                        ++next;
                    if (next >= L || firstError || cb.cancel.isCancelled())
                        return;
                    l = next++;
                    if (cb.onLayerStart)
                        cb.onLayerStart(l);
                }
                auto converted = tryConvertLayer(l, device, stopAll, &mutex);
                if (!converted)
                    continue;
                auto& [layer, res] = *converted;
                std::lock_guard<std::mutex> lock(mutex);
                done[static_cast<std::size_t>(l)] = layer;
                if (cb.onLayerDone)
                    cb.onLayerDone(l, layer, res);
            }
        } catch (...) {
            std::lock_guard<std::mutex> lock(mutex);
            if (!firstError)
                firstError = std::current_exception();
            stopAll.cancel();
        }
    };
    // Several workers do BLAS work at once: none may change the process's BLAS thread count.
    CpuTeam::Solo solo;
    std::vector<std::thread> threads;
    for (const auto& d : devices)
        threads.emplace_back(worker, d);
    for (auto& t : threads)
        t.join();
    if (firstError)
        std::rethrow_exception(firstError);
    cb.cancel.throwIfCancelled();
    return done;
}

ForwardHooks moeHooks(const MoeLayers& layers, const std::vector<RoutingRule>& rules, int64_t* activeParams,
                      int64_t* tokens)
{
    ForwardHooks h;
    h.ffnOverride = [layers, rules, activeParams, tokens](int l, const torch::Tensor& x) -> torch::Tensor {
        if (l >= static_cast<int>(layers.size()))
            return {};
        const auto held = layers.get(static_cast<std::size_t>(l));
        const auto& layer = *held;
        if (!layer.router.defined())
            return {};
        const auto& rule = rules.at(static_cast<std::size_t>(l));
        if (!activeParams)
            return layer.forward(x, rule);
        if (tokens && l == 0)
            *tokens += x.numel() / x.size(-1);
        DispatchStats stats;
        auto out = layer.forward(x, rule, &stats);
        *activeParams += stats.parameters;
        return out;
    };
    return h;
}

ForwardHooks oracleHooks(const MoeLayers& layers, const std::vector<RoutingRule>& rules, int64_t* activeParams,
                         int64_t* tokens)
{
    for (const auto& r : rules)
        if (!r.isStatic())
            throw Error("oracle routing needs static top-k rules");
    ForwardHooks h;
    h.ffnOverride = [layers, rules, activeParams, tokens](int l, const torch::Tensor& x) -> torch::Tensor {
        if (l >= static_cast<int>(layers.size()))
            return {};
        const auto layer = layers.get(static_cast<std::size_t>(l));
        if (!layer->router.defined())
            return {};
        if (tokens && l == 0)
            *tokens += x.numel() / x.size(-1);
        DispatchStats stats;
        auto out = layer->forwardOracle(x, rules.at(static_cast<std::size_t>(l)).topK, &stats);
        if (activeParams)
            *activeParams += stats.parameters;
        return out;
    };
    return h;
}

void saveMoeLayer(const std::filesystem::path& file, const MoeLayer& l)
{
    std::string sizes;
    for (auto s : l.sizes)
        sizes += (sizes.empty() ? "" : ",") + std::to_string(s);
    std::vector<std::pair<std::string, torch::Tensor>> tensors
        = {{"router", l.router}, {"gate", l.gate}, {"up", l.up}, {"down", l.down}};
    if (l.sharedGate.defined())
        tensors.insert(tensors.end(),
                       {{"shared_gate", l.sharedGate}, {"shared_up", l.sharedUp}, {"shared_down", l.sharedDown}});
    writeSafetensors(file, tensors,
                     {{"gating", gatingName(l.gating)}, {"sizes", sizes}, {"format", "ladimo-moe-layer-1"}});
}

MoeLayer loadMoeLayer(const std::filesystem::path& file, torch::Device device, torch::ScalarType dtype)
{
    constexpr int64_t kMaxExperts = 1 << 16;
    auto st = SafetensorsFile::open(file);
    MoeLayer l;
    const auto& meta = st->metadata();
    if (!meta.count("gating") || !meta.count("sizes"))
        throw Error(file.string() + ": not a LaDiMo MoE layer file (missing 'gating'/'sizes' metadata)");
    l.gating = parseGating(meta.at("gating"));
    // Read, not mapped: mapped pages would stay in the resident set for as long as the layer lives.
    l.router = st->read("router").to(device, dtype);
    l.gate = st->read("gate").to(device, dtype);
    l.up = st->read("up").to(device, dtype);
    l.down = st->read("down").to(device, dtype);
    // The file may come from anywhere (a copied project): every number is checked before use.
    std::stringstream ss(meta.at("sizes"));
    std::string item;
    while (std::getline(ss, item, ',')) {
        int64_t v = -1;
        try {
            v = parseInteger(item, "size");
        } catch (const Error&) {
            v = -1;
        }
        if (v < 0 || l.sizes.size() >= static_cast<std::size_t>(kMaxExperts))
            throw Error(file.string() + ": metadata 'sizes' must be a comma-separated list of at most "
                        + std::to_string(kMaxExperts) + " expert sizes, got '" + meta.at("sizes") + "'");
        l.sizes.push_back(v);
    }
    if (l.router.dim() != 2 || l.gate.dim() != 3 || l.up.dim() != 3 || l.down.dim() != 3)
        throw Error(file.string() + ": expected router [N, H] and gate/up/down [N, ., .] tensors");
    const int64_t N = l.router.size(0);
    if (static_cast<int64_t>(l.sizes.size()) != N || l.gate.size(0) != N || l.up.sizes() != l.gate.sizes()
        || l.down.size(0) != N || l.down.size(2) != l.gate.size(1) || l.gate.size(2) != l.router.size(1)
        || l.down.size(1) != l.router.size(1))
        throw Error(file.string() + ": inconsistent MoE layer shapes");
    for (auto s : l.sizes)
        if (s < 0 || s > l.gate.size(1))
            throw Error(file.string() + ": expert size " + std::to_string(s) + " exceeds the stored width");
    if (st->find("shared_gate") || st->find("shared_up") || st->find("shared_down")) {
        if (!st->find("shared_gate") || !st->find("shared_up") || !st->find("shared_down"))
            throw Error(file.string() + ": shared neurons need all of shared_gate, shared_up and shared_down");
        l.sharedGate = st->read("shared_gate").to(device, dtype);
        l.sharedUp = st->read("shared_up").to(device, dtype);
        l.sharedDown = st->read("shared_down").to(device, dtype);
        const int64_t H = l.router.size(1), M = l.sharedGate.size(0);
        if (l.sharedGate.dim() != 2 || l.sharedGate.size(1) != H || l.sharedUp.sizes() != l.sharedGate.sizes()
            || l.sharedDown.dim() != 2 || l.sharedDown.size(0) != H || l.sharedDown.size(1) != M)
            throw Error(file.string() + ": expected shared_gate and shared_up [M, " + std::to_string(H)
                        + "] and shared_down [" + std::to_string(H) + ", M]");
    }
    fuseGateUp(l);
    return l;
}

} // namespace ladimo::core
