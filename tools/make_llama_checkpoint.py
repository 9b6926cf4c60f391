#!/usr/bin/python3
"""Writes a LLaMA-shaped Hugging Face checkpoint with random weights, for measuring memory and
time at real sizes (issue 19): N(0, 0.02) matrices, unit norms, bf16 by default, sharded like the
official LLaMA-2 checkpoints (model-0000i-of-0000n.safetensors + model.safetensors.index.json).

The default shape is LLaMA-2-7B (32 layers, hidden 4096, FFN 11008, 32 heads, vocab 32000):
13.5 GB in bf16. Never commit what it writes.

    /usr/bin/python3 tools/make_llama_checkpoint.py /data/llama7b-random
    /usr/bin/python3 tools/make_llama_checkpoint.py /tmp/wide2 --layers 2 --tokenizer-from ../shared/data/llama2-tokenizer

Needs python3-torch only (the safetensors layout is written by hand). Tensors are generated and
written one at a time, so memory stays at about one matrix.
"""
import argparse
import json
import os
import shutil
import struct
import sys

import torch

DTYPES = {"bf16": (torch.bfloat16, "BF16", 2), "f16": (torch.float16, "F16", 2), "f32": (torch.float32, "F32", 4)}


def tensor_list(layers, hidden, inter, heads, kv_heads, vocab, tied):
    head_dim = hidden // heads
    out = [("model.embed_tokens.weight", [vocab, hidden])]
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", [hidden]),
            (p + "self_attn.q_proj.weight", [heads * head_dim, hidden]),
            (p + "self_attn.k_proj.weight", [kv_heads * head_dim, hidden]),
            (p + "self_attn.v_proj.weight", [kv_heads * head_dim, hidden]),
            (p + "self_attn.o_proj.weight", [hidden, heads * head_dim]),
            (p + "post_attention_layernorm.weight", [hidden]),
            (p + "mlp.gate_proj.weight", [inter, hidden]),
            (p + "mlp.up_proj.weight", [inter, hidden]),
            (p + "mlp.down_proj.weight", [hidden, inter]),
        ]
    out.append(("model.norm.weight", [hidden]))
    if not tied:
        out.append(("lm_head.weight", [vocab, hidden]))
    return out


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def write_shard(path, entries, dtype, st_name, size, gen):
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape in entries:
        nbytes = numel(shape) * size
        header[name] = {"dtype": st_name, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for name, shape in entries:
            if len(shape) == 1:
                t = torch.ones(shape, dtype=torch.float32)
            else:
                t = torch.empty(shape, dtype=torch.float32).normal_(0.0, 0.02, generator=gen)
            t = t.to(dtype)
            raw = t.view(torch.int16) if size == 2 else t.view(torch.int32)
            f.write(raw.numpy().tobytes())
            del t, raw
    os.replace(tmp, path)
    return offset


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096)
    ap.add_argument("--intermediate", type=int, default=11008)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=None)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--shard-bytes", type=float, default=3e9, help="about this many bytes per shard (default 3e9)")
    ap.add_argument("--tied", action="store_true", help="tie the head to the embeddings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-from", help="copy tokenizer.model / tokenizer.json / tokenizer_config.json from this folder")
    a = ap.parse_args()
    kv = a.kv_heads or a.heads
    dtype, st_name, size = DTYPES[a.dtype]
    os.makedirs(a.out, exist_ok=True)
    tensors = tensor_list(a.layers, a.hidden, a.intermediate, a.heads, kv, a.vocab, a.tied)
    shards, cur, cur_bytes = [], [], 0
    for name, shape in tensors:
        b = numel(shape) * size
        if cur and cur_bytes + b > a.shard_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append((name, shape))
        cur_bytes += b
    shards.append(cur)
    gen = torch.Generator().manual_seed(a.seed)
    weight_map, total = {}, 0
    for i, entries in enumerate(shards):
        fname = "model.safetensors" if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        total += write_shard(os.path.join(a.out, fname), entries, dtype, st_name, size, gen)
        for name, _ in entries:
            weight_map[name] = fname
        print(f"wrote {fname} ({len(entries)} tensors)", file=sys.stderr)
    if len(shards) > 1:
        with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": a.hidden,
        "intermediate_size": a.intermediate, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": kv, "vocab_size": a.vocab, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": a.tied,
        "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}[a.dtype],
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if a.tokenizer_from:
        for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json"):
            src = os.path.join(a.tokenizer_from, name)
            if os.path.exists(src):
                shutil.copy(src, os.path.join(a.out, name))
    print(f"{a.out}: {a.layers} layers, {total / 1e9:.2f} GB in {len(shards)} file(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
