#include "convert/costmodel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include "common/error.h"
#include "common/memory.h"

namespace ladimo::core {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Experts evaluated per token and distillation batch: the training k (uniform in
// [min(minK, trainTopK), N] with random k), plus all N for the all-experts term (distill()).
double meanActive(const ConvertSettings& s)
{
    const int N = static_cast<int>(s.experts);
    if (!s.distill.randomK)
        return std::min<int>(s.distill.trainTopK, N) + (s.distill.fullKWeight > 0 ? N : 0);
    const int minK = s.distill.minTrainK > 0 ? s.distill.minTrainK : std::max(1, N / 2);
    const int lo = std::min(minK, s.distill.trainTopK);
    return 0.5 * (lo + N);
}

std::string bytesText(double b) { return memoryText(b); }

std::string flopsText(double f)
{
    char buf[32];
    const char* unit[] = {"", "K", "M", "G", "T", "P"};
    int u = 0;
    while (f >= 1000 && u < 5) {
        f /= 1000;
        ++u;
    }
    std::snprintf(buf, sizeof buf, "%.2f %sFLOP", f, unit[u]);
    return buf;
}

std::string secondsText(double s)
{
    char buf[32];
    if (s < 120)
        std::snprintf(buf, sizeof buf, "%.1f s", s);
    else if (s < 7200)
        std::snprintf(buf, sizeof buf, "%.1f min", s / 60);
    else
        std::snprintf(buf, sizeof buf, "%.1f h", s / 3600);
    return buf;
}

} // namespace

DeviceSpeed measureDevice(const torch::Device& device, int64_t H, int64_t I, int64_t N, int k, int64_t batch)
{
    DeviceSpeed d;
    d.device = device.str();
    // A private generator: measuring must not move the global RNG of the process.
    at::Generator gen = at::detail::createCPUGenerator(0);
    const auto randn = [&](std::vector<int64_t> shape) { return at::randn(shape, gen, torch::kFloat32).to(device); };
    // At most 1M-parameter products and a 2M-parameter expert set, scaled up by FLOPs: the full
    // shapes of a 7B layer would take gigabytes just to estimate (issue 19); a dry run stays
    // within 0.5 GB.
    const int64_t Ifull = I;
    I = std::max<int64_t>(std::min<int64_t>(I, (int64_t(2) << 20) / (3 * std::max<int64_t>(1, H))), N);
    const int64_t Imat = std::max<int64_t>(1, std::min<int64_t>(Ifull, (int64_t(1) << 20) / std::max<int64_t>(1, H)));
    {
        torch::NoGradGuard ng;
        auto a = randn({batch, H}), b = randn({H, Imat});
        double sink = torch::matmul(a, b).sum().item<double>(); // warm-up (and CUDA init)
        int reps = 0;
        const auto start = Clock::now();
        do {
            sink += torch::matmul(a, b).sum().item<double>(); // .item() waits for the device
            ++reps;
        } while (since(start) < 0.15 && reps < 1000);
        d.matmulFlops = 2.0 * batch * H * Imat * reps / since(start);
        (void)sink;
    }
    // Real distillation steps (the routed MoE forward, backward, Adam) at the layer's shapes;
    // autograd on whatever mode the caller is in.
    c10::InferenceMode trainingAllowed(false);
    torch::AutoGradMode gradients(true);
    MoeLayer layer;
    const int64_t S = (I + N - 1) / N;
    layer.gating = Gating::Hard;
    layer.router = randn({N, H});
    layer.gate = (randn({N, S, H}) * 0.05).set_requires_grad(true);
    layer.up = (randn({N, S, H}) * 0.05).set_requires_grad(true);
    layer.down = (randn({N, H, S}) * 0.05).set_requires_grad(true);
    layer.sizes.assign(static_cast<std::size_t>(N), S);
    torch::optim::Adam adam({layer.gate, layer.up, layer.down}, torch::optim::AdamOptions(1e-3));
    auto x = randn({batch, H}), y = randn({batch, H});
    const auto rule = RoutingRule::staticK(std::max(1, k));
    auto step = [&] {
        auto loss = (layer.forward(x, rule) - y).pow(2).sum(-1).mean();
        adam.zero_grad();
        loss.backward();
        adam.step();
        return loss.item<double>();
    };
    step(); // warm-up
    int steps = 0;
    const auto start = Clock::now();
    do {
        step();
        ++steps;
    } while (since(start) < 0.3 && steps < 200);
    // The expert products scale with the width; the router's share (2 H N per token) does not.
    const double expertPart = 3.0 * static_cast<double>(I), routerPart = static_cast<double>(N);
    d.stepSeconds = since(start) / steps * (3.0 * static_cast<double>(Ifull) + routerPart) / (expertPart + routerPart);
    return d;
}

CostEstimate estimateCost(const CostInputs& in, bool measure)
{
    const auto& c = in.config;
    ConvertSettings s = in.settings;
    s.distill.trainTopK = trainTopKFor(in.settings, c);
    const double T = static_cast<double>(in.tokens);
    const double H = static_cast<double>(c.hiddenSize), I = static_cast<double>(c.intermediateSize);
    const double N = static_cast<double>(s.experts);
    const double S = std::ceil(I / N); // stored expert width
    const double kvDim = static_cast<double>(c.numKvHeads * c.headDim);
    const double kbar = meanActive(s);
    const double kTrain = std::min<double>(s.distill.trainTopK, N);
    const double B = static_cast<double>(s.distill.batch);

    CostEstimate e;
    e.tokens = in.tokens;
    e.modelBytes = in.modelBytes;
    e.meanActiveExperts = kbar;
    e.distillSteps = s.distill.epochs * ((in.tokens + s.distill.batch - 1) / std::max<int64_t>(1, s.distill.batch));

    // Dense forward per token and layer: q/o [H,H], k/v [H,kv], causal attention over a mean
    // context of seqLen/2 (scores + weighted sum), the SwiGLU FFN.
    const double capturePerLayer
        = T * (2 * (2 * H * H + 2 * H * kvDim) + 2 * 2 * (static_cast<double>(s.seqLen) / 2) * H + 2 * 3 * H * I);
    LayerFlops f;
    const int maxCaptured
        = in.captureLayers.empty() ? -1 : *std::max_element(in.captureLayers.begin(), in.captureLayers.end());
    // The dense model runs up to the highest captured layer; that cost is shared by the layers.
    const double captureTotal = capturePerLayer * (maxCaptured + 1);
    f.capture = in.layers.empty() ? 0 : captureTotal / static_cast<double>(in.layers.size());
    const double Tp = std::min(T, 4096.0);
    if (s.partition == Partition::Coactivation)
        f.partition = 2 * 2 * Tp * H * I + 25 * 2 * I * Tp * N;
    else if (s.partition == Partition::Weights)
        f.partition = 25 * 2 * I * 3 * H * N;
    f.router = T * 2 * 3 * H * N * S + s.distill.routerEpochs * T * 3 * 2 * H * N;
    const double expertFwd = 2 * 3 * H * S; // one expert, one token
    f.distill = s.distill.epochs * T * 3 * (kbar * expertFwd + 2 * H * N) + 2 * T * (kTrain * expertFwd + 2 * H * N);
    e.flopsPerLayer = f;

    LayerMemory m;
    const int64_t f32 = 4;
    const auto Hi = c.hiddenSize, Ii = c.intermediateSize, Si = static_cast<int64_t>(S);
    m.activations = 2 * in.tokens * Hi * f32;
    m.denseFfn = 3 * Hi * Ii * f32;
    m.experts = (3 * s.experts * Si * Hi + s.experts * Hi) * f32;
    m.gradients = 3 * s.experts * Si * Hi * f32;
    m.adam = 2 * m.gradients;
    const int64_t batchWork = static_cast<int64_t>(B * kbar * S * 6 + B * H * 6) * f32;
    const int64_t targets = in.tokens * s.experts * f32 + std::min<int64_t>(in.tokens, 2048) * s.experts * Hi * f32;
    const int64_t clustering
        = s.partition == Partition::Coactivation ? static_cast<int64_t>(Tp) * Ii * 3 * f32 : 3 * Hi * Ii * f32;
    m.workspace = std::max({batchWork, targets, clustering});
    e.memoryPerLayer = m;
    e.captureHeldBytes = 2 * in.tokens * Hi * f32 * static_cast<int64_t>(in.captureLayers.size());

    // Peak memory. Weights: the whole model, or (streamed) the running layer, the next one read
    // in the background, and a 64 MiB chunk of the embedding or head. The capture's forward
    // passes: a group's hidden states (an eighth of the budget at most, the whole calibration set
    // at least when it fits), per pass of 8 windows the FFN's three intermediate tensors and the
    // attention scores. Then training: the captured X/Y stay while each worker trains its layer.
    // Plus the process itself (LibTorch, BLAS buffers, tokens): 0.3 GiB, measured.
    const int64_t chunk = int64_t(64) << 20;
    e.weightsHeldBytes = in.streamed ? 2 * in.layerBytes + chunk : in.modelBytes;
    const int64_t passTokens = std::min<int64_t>(in.tokens, 8 * s.seqLen);
    const int64_t el = in.computeElementBytes;
    const int64_t heads = c.numHeads;
    const int64_t groupTokens = in.streamed ? in.tokens : passTokens;
    e.captureWorkspaceBytes = in.captureLayers.empty() ? 0
                                                       : groupTokens * Hi * el + passTokens * (3 * Ii + 6 * Hi) * el
            + passTokens / std::max<int64_t>(1, s.seqLen) * heads * s.seqLen * s.seqLen * (el + 4);
    const std::vector<torch::Device> devs = s.devices.empty() ? std::vector<torch::Device>{torch::kCPU} : s.devices;
    const int64_t workers
        = static_cast<int64_t>(std::min<std::size_t>(devs.size(), std::max<std::size_t>(1, in.layers.size())));
    const int64_t base = int64_t(300) << 20;
    // Training one layer at its peak (the backward of a distillation step): experts, their
    // gradients and the fresh gradients being added to them, Adam's moments and the temporaries
    // of its step (two of the largest tensor), the last good state when it is kept in memory (up
    // to 64 MiB, else in a temporary file), the batch workspace. The dense FFN copy is freed once
    // the experts are cut, before any of this exists. The layer's X/Y are among the held ones.
    const int64_t snapshot = m.experts <= (int64_t(64) << 20) ? m.experts : 0;
    const int64_t training = m.experts + 2 * m.gradients + m.adam + 2 * (m.gradients / 3) + snapshot + m.workspace;
    const bool onCpu = devs.front().is_cpu();
    // Captured X/Y beyond the budget live in scratch files (CaptureOptions); the kernel keeps
    // about the budget's worth of their pages resident: an upper bound there.
    const int64_t budget = in.memoryBudget > 0 ? in.memoryBudget : static_cast<int64_t>(defaultMemoryBudget());
    const int64_t held = std::min(e.captureHeldBytes, budget);
    const int64_t capturePeak = e.weightsHeldBytes + held + e.captureWorkspaceBytes;
    const int64_t trainPeak = (in.streamed ? 0 : in.modelBytes) + held + (onCpu ? workers : 0) * training;
    e.peakHostBytes = base + std::max(capturePeak, trainPeak);
    e.peakDeviceBytes
        = onCpu ? e.peakHostBytes : std::max(e.weightsHeldBytes + e.captureWorkspaceBytes, training + m.activations);

    e.assumptions = {
        "float32 training; FLOPs count multiply-adds as 2; backward = 2x forward",
        std::string(s.distill.randomK ? "distillation draws k uniformly in [N/2, N] per batch"
                                      : "distillation runs the training k")
            + (s.distill.fullKWeight > 0 ? " and all experts" : "") + " (mean " + std::to_string(kbar).substr(0, 4)
            + " expert passes per token); each expert is padded to ceil(I/N) neurons; the end-to-end stage is not "
              "counted",
        "capture: one dense forward pass up to the highest layer that is not already captured on disk, "
        "attention over a mean context of seq_len/2",
        "time: distillation steps at the measured step time, everything else at the measured matmul rate; "
        "workers listed on the same device share it equally; layers go to the first free worker in order",
        "not modelled: loading the model and data, saving layers, the per-epoch shuffles and batch gathers",
    };
    if (!measure || in.layers.empty())
        return e;

    const std::vector<torch::Device> devices = s.devices.empty() ? std::vector<torch::Device>{torch::kCPU} : s.devices;
    std::map<std::string, int> sharing;
    for (const auto& d : devices)
        ++sharing[d.str()];
    std::map<std::string, DeviceSpeed> measured;
    for (const auto& d : devices)
        if (!measured.count(d.str())) {
            // One routed pass at the mean k measured, at most all experts; the all-experts term
            // of the loss is a second pass, counted by scaling.
            const double measuredK = std::min<double>(kbar, N);
            auto speed = measureDevice(d, c.hiddenSize, c.intermediateSize, s.experts,
                                       static_cast<int>(std::lround(measuredK)), s.distill.batch);
            speed.stepSeconds *= kbar / std::max(1.0, measuredK);
            speed.workers = sharing[d.str()];
            measured[d.str()] = speed;
        }
    for (const auto& [name, speed] : measured)
        e.devices.push_back(speed);
    const auto layerSecondsOn = [&](const std::string& d) {
        const auto& sp = measured.at(d);
        const double share = static_cast<double>(sp.workers);
        return share
            * ((f.partition + f.router + 2 * T * (kTrain * expertFwd + 2 * H * N)) / sp.matmulFlops
               + static_cast<double>(e.distillSteps) * sp.stepSeconds);
    };
    e.captureSeconds = captureTotal / measured.at(devices.front().str()).matmulFlops;
    e.layerSeconds = layerSecondsOn(devices.front().str()) / measured.at(devices.front().str()).workers;
    // The worker queue of convertModel: each layer goes to the worker that is free first.
    std::vector<double> freeAt(devices.size(), 0.0);
    for (std::size_t i = 0; i < in.layers.size(); ++i) {
        auto it = std::min_element(freeAt.begin(), freeAt.end());
        *it += layerSecondsOn(devices[static_cast<std::size_t>(it - freeAt.begin())].str());
    }
    e.wallSeconds = e.captureSeconds + *std::max_element(freeAt.begin(), freeAt.end());
    return e;
}

nlohmann::json CostEstimate::toJson() const
{
    const auto& f = flopsPerLayer;
    const auto& m = memoryPerLayer;
    nlohmann::json devs = nlohmann::json::array();
    for (const auto& d : devices)
        devs.push_back({{"device", d.device},
                        {"workers", d.workers},
                        {"matmul_flops_per_second", d.matmulFlops},
                        {"distill_step_seconds", d.stepSeconds}});
    return {{"tokens", tokens},
            {"distill_steps_per_layer", distillSteps},
            {"mean_active_experts", meanActiveExperts},
            {"flops_per_layer",
             {{"capture", f.capture},
              {"partition", f.partition},
              {"router", f.router},
              {"distill", f.distill},
              {"total", f.total()}}},
            {"memory_per_layer_bytes",
             {{"activations", m.activations},
              {"dense_ffn", m.denseFfn},
              {"experts", m.experts},
              {"gradients", m.gradients},
              {"adam", m.adam},
              {"workspace", m.workspace},
              {"total", m.total()}}},
            {"capture_held_bytes", captureHeldBytes},
            {"model_bytes", modelBytes},
            {"weights_held_bytes", weightsHeldBytes},
            {"capture_workspace_bytes", captureWorkspaceBytes},
            {"peak_host_bytes", peakHostBytes},
            {"peak_device_bytes", peakDeviceBytes},
            {"devices", devs},
            {"capture_seconds", captureSeconds},
            {"layer_seconds", layerSeconds},
            {"wall_seconds", wallSeconds},
            {"assumptions", assumptions}};
}

std::string CostEstimate::describe(int layers) const
{
    const auto& f = flopsPerLayer;
    const auto& m = memoryPerLayer;
    std::string out;
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "cost model: %d layer(s), %lld calibration tokens, %lld distillation steps per layer (%.2f expert "
                  "passes per token, the all-experts term included)\n",
                  layers, (long long)tokens, (long long)distillSteps, meanActiveExperts);
    out += buf;
    out += "  FLOPs per layer: " + flopsText(f.total()) + " (capture " + flopsText(f.capture) + ", partition "
        + flopsText(f.partition) + ", router " + flopsText(f.router) + ", distillation " + flopsText(f.distill) + ")\n";
    out += "  memory per layer on its device: " + bytesText(static_cast<double>(m.total())) + " (X/Y "
        + bytesText(static_cast<double>(m.activations)) + ", dense FFN " + bytesText(static_cast<double>(m.denseFfn))
        + ", experts " + bytesText(static_cast<double>(m.experts)) + ", gradients "
        + bytesText(static_cast<double>(m.gradients)) + ", Adam " + bytesText(static_cast<double>(m.adam))
        + ", workspace " + bytesText(static_cast<double>(m.workspace)) + ")\n";
    out += std::string("  first device also holds: ")
        + (weightsHeldBytes == modelBytes ? "dense model " : "streamed weights (2 layers + a chunk) ")
        + bytesText(static_cast<double>(weightsHeldBytes)) + ", captured X/Y of all layers to capture "
        + bytesText(static_cast<double>(captureHeldBytes)) + ", capture forward passes "
        + bytesText(static_cast<double>(captureWorkspaceBytes)) + "\n";
    out += "  predicted peak memory: host " + bytesText(static_cast<double>(peakHostBytes))
        + (peakDeviceBytes != peakHostBytes ? ", device " + bytesText(static_cast<double>(peakDeviceBytes))
                                            : std::string())
        + "\n";
    for (const auto& d : devices) {
        std::snprintf(buf, sizeof buf, "  device %s (%d worker%s): matmul %.1f GFLOP/s, distillation step %.2f ms\n",
                      d.device.c_str(), d.workers, d.workers == 1 ? "" : "s", d.matmulFlops / 1e9, d.stepSeconds * 1e3);
        out += buf;
    }
    if (!devices.empty())
        out += "  estimated wall time: " + secondsText(wallSeconds) + " (capture " + secondsText(captureSeconds)
            + ", one layer " + secondsText(layerSeconds) + ")\n";
    out += "  assumptions:\n";
    for (const auto& a : assumptions)
        out += "    - " + a + "\n";
    return out;
}

} // namespace ladimo::core
