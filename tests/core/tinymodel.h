// The tiny random LLaMA (3 layers, hidden 16, FFN 32) that core tests convert in milliseconds,
// and a calibration token stream for it.
#pragma once

#include <cstdint>
#include <vector>

#include "model/llama.h"

namespace ladimo::testmodel {
using namespace ladimo::core;

inline LlamaModel tinyModel(uint64_t seed = 3)
{
    ModelConfig c;
    c.hiddenSize = 16;
    c.intermediateSize = 32;
    c.numLayers = 3;
    c.numHeads = 2;
    c.numKvHeads = 2;
    c.headDim = 8;
    c.vocabSize = 64;
    c.maxPositions = 64;
    return LlamaModel::randomInit(c, seed);
}

inline std::vector<int64_t> tinyCalibration(std::size_t n)
{
    std::vector<int64_t> calibration(n);
    for (std::size_t i = 0; i < calibration.size(); ++i)
        calibration[i] = static_cast<int64_t>((i * 7 + 3) % 64);
    return calibration;
}

} // namespace ladimo::testmodel
