// The cost of a stage-1 conversion before it runs (`ladimo convert` prints it; `--dry-run`
// prints only it): calibration tokens, FLOPs per layer by phase, memory per layer on the device
// that trains it, and a wall-time estimate for the given devices from a quick measurement of
// each device (a dense matmul rate and the time of real distillation steps at the layer's
// shapes). estimateCost() runs on the calling thread; measuring takes about a second per
// distinct device. The assumptions are part of the result (CostEstimate::assumptions).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

#include <nlohmann/json.hpp>

#include "convert/convert.h"
#include "model/config.h"

namespace ladimo::core {

struct CostInputs {
    ModelConfig config;
    int64_t tokens = 0;              // calibration tokens
    ConvertSettings settings;        // experts, distillation options, seqLen, mode, devices
    std::vector<int> layers;         // the layers this process converts
    std::vector<int> captureLayers;  // of those, the ones whose X/Y must come from the dense model
    int64_t modelBytes = 0;          // the dense model's weights in memory (on the first device)
    bool streamed = false;           // weights streamed layer by layer (LlamaModel::streamed())
    int64_t layerBytes = 0;          // one layer's weights in the compute dtype (LlamaModel::layerBytes())
    int64_t computeElementBytes = 4; // of the compute dtype
    int64_t memoryBudget = 0;        // CaptureOptions::memoryBudget; 0 = defaultMemoryBudget()
};

struct LayerFlops {
    double capture = 0;   // this layer's share of the dense forward pass over the calibration tokens
    double partition = 0; // neuron clustering (co-activation or weights k-means)
    double router = 0;    // expert-importance targets + router fitting
    double distill = 0;   // forward+backward of the routed experts over all epochs, plus 2 error passes
    double total() const { return capture + partition + router + distill; }
};

struct LayerMemory {         // bytes, float32, on the device that trains the layer
    int64_t activations = 0; // X and Y of the layer
    int64_t denseFfn = 0;    // the dense FFN copy the experts are cut from
    int64_t experts = 0;     // expert weights + router
    int64_t gradients = 0;
    int64_t adam = 0;      // two moments per parameter
    int64_t workspace = 0; // the largest transient (batch activations, router targets, clustering)
    int64_t total() const { return activations + denseFfn + experts + gradients + adam + workspace; }
};

struct DeviceSpeed {
    std::string device;
    int workers = 1;        // workers sharing it (a repeated entry, e.g. "cpu,cpu")
    double matmulFlops = 0; // measured dense matmul rate, FLOP/s, whole device
    double stepSeconds = 0; // measured distillation step (forward+backward+Adam), whole device
};

struct CostEstimate {
    int64_t tokens = 0;
    int64_t distillSteps = 0;     // per layer
    double meanActiveExperts = 0; // per token while distilling
    LayerFlops flopsPerLayer;
    LayerMemory memoryPerLayer;
    int64_t captureHeldBytes = 0; // X/Y of every captured layer, held while the run lasts
    int64_t modelBytes = 0;
    int64_t weightsHeldBytes = 0;      // weights resident at once: the model, or 2 streamed layers + chunks
    int64_t captureWorkspaceBytes = 0; // the dense forward passes of the capture (hidden states, FFN, attention)
    int64_t peakHostBytes = 0;         // predicted peak resident memory of the process (CPU)
    int64_t peakDeviceBytes = 0;       // predicted peak memory on the first device (= host on the CPU)
    std::vector<DeviceSpeed> devices;
    double captureSeconds = 0;
    double layerSeconds = 0; // one layer on the first device, alone
    double wallSeconds = 0;  // whole run on the given devices
    std::vector<std::string> assumptions;
    nlohmann::json toJson() const;
    std::string describe(int layers) const; // the multi-line text the CLI prints
};

// Measures a device at a layer's shapes (hidden, expert width, active experts, batch).
DeviceSpeed measureDevice(const torch::Device& device, int64_t hidden, int64_t intermediate, int64_t experts,
                          int activeExperts, int64_t batch);

// FLOPs and memory from the shapes; with `measure`, also the device speeds and wall time.
CostEstimate estimateCost(const CostInputs& in, bool measure = true);

} // namespace ladimo::core
