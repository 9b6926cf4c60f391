// Hugging Face Mixtral layout: export of a converted model (config.json with
// "MixtralForCausalLM", safetensors with model.layers.N.block_sparse_moe.{gate, experts.E.w1/w2/w3},
// every other tensor under its LLaMA name, sharded with model.safetensors.index.json, tokenizer
// files copied) and the loader that reads such a directory back into the workbench.
// The full LaDiMo policy travels in config.json under "ladimo" (and as routing_policy.json), so a
// re-import restores per-layer rules, gating and real expert sizes even where Mixtral itself
// cannot express them. A dense model exports in plain LlamaForCausalLM layout.
// Functions run on the calling thread and share no state; export honours options.cancel between
// tensors and reports options.progress in bytes.
#pragma once

#include "common/memory.h" // parseByteSize

#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "export/export.h"

namespace ladimo::core {

// Writes in.model + in.layers (or the dense model when in.layers is null) to options.out, a
// directory that must not exist or be empty. Atomic: written into a temporary sibling directory
// that is renamed into place at the end; a failure or cancellation removes it. Throws Error when
// the policy needs a k the options do not give (Mixtral uses one k in every layer), when the
// model has what Mixtral cannot hold (attention biases), or when the disk has too little space.
ExportReport exportHfMixtral(const ExportInput& in, const ExportOptions& options);

// The same in the Hugging Face Qwen2-MoE layout (Qwen2MoeForCausalLM), which has a shared expert:
// the conversion's always-on neurons (--shared-neurons) go there, exactly (a zero shared-expert
// gate gives sigmoid 0.5 and the down projection is doubled); q/k/v get zero biases (Qwen2's
// attention has them); plain and renorm gating are exact (norm_topk_prob false / true). The
// workbench does not read it back (`ladimo eval` reads hf-mixtral and gguf exports).
ExportReport exportHfQwen2Moe(const ExportInput& in, const ExportOptions& options);

// A Mixtral directory read back: the attention/embedding part as a LlamaModel whose dense FFN
// tensors are undefined (forward without MoE hooks throws an Error), one MoeLayer per layer
// (experts narrowed to the recorded widths, real sizes restored) and the routing to run them with.
struct LoadedMixtral {
    LlamaModel model;
    std::vector<MoeLayer> layers;
    PolicyRules rules;              // from the "ladimo" key, else num_experts_per_tok everywhere
    Gating gating = Gating::Renorm; // likewise (Mixtral semantics when absent)
    int expertsPerToken = 0;        // num_experts_per_tok
    std::string policyName;         // recorded policy name, empty when absent
    std::string sourceModel;        // dense model path recorded at export, empty when absent
    nlohmann::json ladimo;          // the "ladimo" key of config.json, null when absent
};

// True when dir/config.json declares a Mixtral model (model_type or architectures).
bool isHfMixtralDir(const std::filesystem::path& dir);

// Single-file or sharded, F32/BF16/F16 as stored; tensors land on options.device in
// options.dtype. Errors name the file and the key or tensor.
LoadedMixtral loadHfMixtral(const std::filesystem::path& dir, const LoadOptions& options = {});

} // namespace ladimo::core
