// Device and compute-dtype selection shared by every command: "auto" picks CUDA when LibTorch
// sees a GPU, else the CPU; float32 is the CPU default, bfloat16 the CUDA default.
#pragma once

#include <string>
#include <vector>

#include <torch/types.h>

namespace ladimo::core {

// Accepts "auto", "cpu", "cuda", "cuda:N"; throws Error for anything else or an absent GPU.
torch::Device parseDevice(const std::string& spec);
// A comma-separated list ("cuda:0,cuda:1", "cpu,cpu").
std::vector<torch::Device> parseDevices(const std::string& spec);
// Accepts "auto", "float32"/"f32", "bfloat16"/"bf16", "float16"/"f16".
torch::ScalarType parseComputeDType(const std::string& spec, const torch::Device& device);

} // namespace ladimo::core
