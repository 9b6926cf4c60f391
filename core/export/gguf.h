// GGUF version 3 export for llama.cpp: architecture "llama" (or "qwen2moe", below); a converted model adds
// llama.expert_count / llama.expert_used_count, stacked expert tensors blk.N.ffn_{gate,up,down}_exps
// and the router blk.N.ffn_gate_inp. The SentencePiece tokenizer is embedded as llama.cpp expects
// (tokenizer.ggml.model = "llama", tokens, scores, token types). F32 or F16.
// Runs on the calling thread; only reads the model and layers, so other threads may read them too.
#pragma once

#include "export/export.h"

namespace ladimo::core {

// Writes in.model (and in.layers when converted) to options.out atomically. Throws Error when the
// policy cannot be expressed (llama.cpp uses one k for all layers with renormalised softmax
// gating) and options.expertsPerToken does not say which k to write.
ExportReport exportGguf(const ExportInput& in, const ExportOptions& options);

// The same for llama.cpp's "qwen2moe" architecture: a converted model only; always-on (shared)
// neurons go to its shared expert (blk.N.ffn_{gate,up,down}_shexp, zero-padded to the widest
// layer, with a near-zero ffn_gate_inp_shexp: weight 0.5, and a doubled down projection), Q/K
// rows unpermuted (NEOX RoPE), no attention biases (llama.cpp takes them as optional), the embedding written again as
// output.weight when the head is tied. Exact for plain gating: llama.cpp's qwen2moe weighs the
// chosen experts by their softmax probabilities without renormalising them. Not read back.
ExportReport exportGgufQwen2Moe(const ExportInput& in, const ExportOptions& options);

} // namespace ladimo::core
