// Greedy continuation of a prompt by llama.cpp (through @fugood/llama.node), for the GGUF export
// test (tests/core/test_gguf.cpp). Usage: node greedy.js REQUEST.json, where the request holds
//   {"modules": dir containing node_modules/@fugood/llama.node, "model": the .gguf,
//    "prompt": text, "n_predict": N, "session": a scratch file path}
// Prints one JSON line: the prompt as llama.cpp tokenized it, and `ids`, every token id the
// context evaluated (BOS + prompt + generated), read from the session file llama.cpp saves
// (llama.node reports generated text, not ids; the session file records the ids exactly).
'use strict';
const fs = require('fs');
const path = require('path');

// llama_state_save_file: u32 magic 'ggsn', u32 version, u32 token count, int32 tokens[count], state.
function sessionTokens(file) {
  const b = fs.readFileSync(file);
  if (b.length < 12 || b.readUInt32LE(0) !== 0x6767736e) throw new Error(`${file}: not a llama.cpp session file`);
  const n = b.readUInt32LE(8);
  if (12 + 4 * n > b.length) throw new Error(`${file}: token count ${n} exceeds the file`);
  const ids = [];
  for (let i = 0; i < n; ++i) ids.push(b.readInt32LE(12 + 4 * i));
  return { version: b.readUInt32LE(4), ids };
}

async function main() {
  const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const { loadModel } = require(path.join(req.modules, 'node_modules', '@fugood', 'llama.node'));
  const ctx = await loadModel({
    model: req.model,
    n_ctx: req.n_ctx || 256,
    n_batch: 256,
    n_threads: 2,
    n_gpu_layers: 0,
    n_parallel: 1,
    // Exact arithmetic for the comparison: float32 KV cache, no flash attention (f16 inside).
    cache_type_k: 'f32',
    cache_type_v: 'f32',
    flash_attn_type: 'off',
    use_mmap: true,
  });
  try {
    const tokenized = await ctx.tokenize(req.prompt);
    const result = await ctx.completion({
      prompt: req.prompt,
      n_predict: req.n_predict,
      // Greedy: temperature 0 (argmax) and no sampler that could change the argmax.
      temperature: 0,
      top_k: 1,
      top_p: 1,
      min_p: 0,
      typ_p: 1,
      xtc_probability: 0,
      mirostat: 0,
      penalty_last_n: 0,
      penalty_repeat: 1,
      penalty_freq: 0,
      penalty_present: 0,
      dry_multiplier: 0,
      seed: 0,
      ignore_eos: false,
    });
    await ctx.saveSession(req.session);
    const session = sessionTokens(req.session);
    const info = ctx.getModelInfo ? ctx.getModelInfo() : {};
    console.log(JSON.stringify({
      version: require(path.join(req.modules, 'node_modules', '@fugood', 'llama.node', 'package.json')).version,
      tokenized: Array.from(tokenized.tokens),
      ids: session.ids,
      text: result.text,
      tokens_predicted: result.tokens_predicted,
      n_params: info.nParams,
    }));
  } finally {
    await ctx.release();
  }
}

main().catch((e) => {
  console.error(`greedy.js: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
