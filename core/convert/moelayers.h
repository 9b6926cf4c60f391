// The MoE layers of a conversion, resident or streamed as the dense model's weights are
// (model/llama.h): resident, every layer held as loaded; streamed, a layer is read from its file
// (`runs/R/layer-LLL.safetensors`) when used and kept only while used, the last one used staying
// cached so that a layer-major pass (every batch through layer l, then l+1) reads each layer once.
// A run of LLaMA-2-7B holds 17 GB of float32 experts; streamed, about one layer's 0.5 GB.
// Copies share their layers and cache. Safe to use from several threads at once.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include <torch/types.h>

#include "moe/moelayer.h"

namespace ladimo::core {

class MoeLayers {
public:
    MoeLayers();
    MoeLayers(std::vector<MoeLayer> layers); // NOLINT: resident layers convert implicitly
    // Layers read from `files` (saveMoeLayer's format) when used, on `device` in `dtype`. The files'
    // headers are checked now (router shape), nothing else is read.
    static MoeLayers streamed(std::vector<std::filesystem::path> files, torch::Device device, torch::ScalarType dtype);

    std::size_t size() const;
    bool empty() const { return size() == 0; }
    bool streamed() const;
    int64_t numExperts() const; // N of layer 0
    // Layer l: the resident one, or read now (a streamed layer lives while a holder does).
    std::shared_ptr<const MoeLayer> get(std::size_t l) const;
    // Every layer as one vector (streamed ones are read, all at once): for writers that need them
    // together. Resident sets hand out their own vector.
    const std::vector<MoeLayer>& resident() const;
    // Streamed sets: keep layers once read, lowest first, in `bytes` (token-major work reads every
    // layer for every token). 0: only the last one used.
    void setCache(std::uint64_t bytes) const;

private:
    struct Impl;
    std::shared_ptr<Impl> m;
};

} // namespace ladimo::core
