// Loading the weights of a Hugging Face LLaMA-family checkpoint directory: a single
// model.safetensors or shards listed in model.safetensors.index.json. Every tensor is checked
// against the config (name present, shape as expected); errors name the file and tensor.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <torch/types.h>

#include "model/config.h"
#include "model/llama.h"
#include "model/safetensors.h"

namespace ladimo::core {

// All safetensors files of a checkpoint with a name -> file map. Keeps the files mapped.
class CheckpointFiles {
public:
    static CheckpointFiles open(const std::filesystem::path& dir);
    bool has(const std::string& name) const { return m_where.count(name) != 0; }
    // CPU tensor in the stored dtype; Error naming the file when absent.
    torch::Tensor tensor(const std::string& name) const;
    // Fails with an Error naming tensor, file, expected and actual shape.
    torch::Tensor tensor(const std::string& name, const std::vector<int64_t>& expectedShape) const;
    // A fresh CPU tensor read with pread (SafetensorsFile::read): rows of the first dimension, in
    // the stored dtype; nothing of the file stays resident. Error naming file and tensor.
    torch::Tensor read(const std::string& name, int64_t rowBegin = 0, int64_t rows = -1, bool pinned = false) const;
    // The stored dtype and shape of a tensor (from the header); Error naming the file when absent.
    const StTensorInfo& info(const std::string& name) const;
    const std::filesystem::path& dir() const { return m_dir; }
    const std::vector<std::filesystem::path>& files() const { return m_files; }
    // Every tensor of every file (name, dtype, shape), without touching the data.
    std::vector<StTensorInfo> tensorInfos() const;
    std::string describe() const; // "model.safetensors" or "N shards"

private:
    std::filesystem::path m_dir;
    std::vector<std::filesystem::path> m_files;
    std::map<std::string, std::shared_ptr<SafetensorsFile>> m_open; // file name -> file
    std::map<std::string, std::string> m_where;                     // tensor -> file name
};

// Checks every tensor the config implies (present, floating point, shape) and returns them on
// `device` in `dtype`; without a dtype they stay as stored: zero-copy views of the mapped files
// on the CPU, which is how `inspect` validates a checkpoint without reading its data.
// Without `withFfn` the dense FFN tensors are neither required nor loaded (left undefined): a
// Mixtral export holds experts instead (export/hf_mixtral.h).
LlamaWeights loadLlamaWeights(const CheckpointFiles& files, const ModelConfig& config, torch::Device device,
                              std::optional<torch::ScalarType> dtype, bool withFfn = true);
LlamaWeights loadLlamaWeights(const std::filesystem::path& dir, const ModelConfig& config, torch::Device device,
                              torch::ScalarType dtype);

// Checks every tensor the config implies (present, floating point, shape) from the headers only,
// nothing read; the same errors as loadLlamaWeights.
void checkLlamaTensors(const CheckpointFiles& files, const ModelConfig& config, bool withFfn = true);

// The checkpoint names of one layer's tensors, in checkpoint order, and the slot each fills.
std::vector<std::pair<std::string, torch::Tensor LayerWeights::*>> layerTensorNames(int layer, bool biases,
                                                                                    bool withFfn);

// Checks a shard file name from an index: a plain file name inside the checkpoint folder.
void checkShardName(const std::string& name, const std::filesystem::path& indexFile);

} // namespace ladimo::core
