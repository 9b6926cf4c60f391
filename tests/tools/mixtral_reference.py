#!/usr/bin/env python3
"""Independent reader of a Hugging Face Mixtral export (python3 + torch only; shares no code with
the C++ exporter or with reference_llama.py).

Parses config.json and the safetensors files (single or sharded via model.safetensors.index.json)
by hand, and implements the forward pass as Hugging Face's MixtralForCausalLM defines it:
RMSNorm (variance in float32, eps), rotate-half RoPE with rope_theta, grouped-query causal
attention, and the sparse MoE block: router logits = gate(x); weights = softmax(logits) in float32;
top-k (num_experts_per_tok); renormalised over the k; each chosen expert
w2(silu(w1 x) * w3 x) scaled by its weight. Computes in float32 from the stored weights.

Usage: mixtral_reference.py DIR (--tokens 1,2,3 | --data FILE.u16/.u32) [--seq-len N]
       [--max-tokens N] [--dump-logits OUT.safetensors]
Prints JSON {"nll", "perplexity", "tokens", "argmax": [...]} (argmax of the first window).
"""
import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (hlen,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + hlen].decode("utf-8"))
    start = 8 + hlen
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        lo, hi = meta["data_offsets"]
        if meta["dtype"] not in DTYPES:
            raise SystemExit("%s: tensor %s has unsupported dtype %s" % (path, name, meta["dtype"]))
        raw = bytearray(blob[start + lo:start + hi])
        t = torch.frombuffer(raw, dtype=DTYPES[meta["dtype"]]) if hi > lo else torch.empty(0, dtype=DTYPES[meta["dtype"]])
        tensors[name] = t.reshape(meta["shape"]).to(torch.float32)
    return tensors


def load_dir(path):
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    if cfg.get("model_type") != "mixtral":
        raise SystemExit("%s/config.json: model_type is %r, expected 'mixtral'" % (path, cfg.get("model_type")))
    index_file = os.path.join(path, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index_file):
        with open(index_file) as f:
            index = json.load(f)
        for shard in sorted(set(index["weight_map"].values())):
            weights.update(read_safetensors(os.path.join(path, shard)))
        missing = [n for n in index["weight_map"] if n not in weights]
        if missing:
            raise SystemExit("index lists tensors the shards do not hold: %s" % missing[:5])
    else:
        weights = read_safetensors(os.path.join(path, "model.safetensors"))
    return cfg, weights


def rms_norm(x, weight, eps):
    variance = x.pow(2).mean(-1, keepdim=True)
    return weight * (x * torch.rsqrt(variance + eps))


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def sparse_moe(cfg, w, prefix, x):
    """MixtralSparseMoeBlock: x [T, H] -> [T, H]."""
    n_experts = cfg["num_local_experts"]
    top_k = cfg["num_experts_per_tok"]
    router_logits = x @ w[prefix + "gate.weight"].T
    probs = F.softmax(router_logits, dim=1, dtype=torch.float)
    top_w, top_i = torch.topk(probs, top_k, dim=-1)
    top_w = top_w / top_w.sum(dim=-1, keepdim=True)
    top_w = top_w.to(x.dtype)
    out = torch.zeros_like(x)
    for e in range(n_experts):
        token_idx, slot = torch.where(top_i == e)
        if token_idx.numel() == 0:
            continue
        xe = x[token_idx]
        p = prefix + "experts.%d." % e
        h = F.silu(xe @ w[p + "w1.weight"].T) * (xe @ w[p + "w3.weight"].T)
        ye = (h @ w[p + "w2.weight"].T) * top_w[token_idx, slot, None]
        out.index_add_(0, token_idx, ye)
    return out


def forward(cfg, w, ids):
    """ids: list of token ids (one sequence) -> logits [T, V] float32."""
    hidden = cfg["hidden_size"]
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or hidden // n_heads
    eps = cfg.get("rms_norm_eps", 1e-5)
    theta = cfg.get("rope_theta", 1e6)
    window = cfg.get("sliding_window")
    T = len(ids)
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    pos = torch.arange(T)
    allowed = pos[None, :] <= pos[:, None]
    if window:
        allowed &= pos[None, :] > pos[:, None] - window
    bias = torch.zeros(T, T).masked_fill(~allowed, float("-inf"))
    for layer in range(cfg["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, n_heads, head_dim).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, n_kv, head_dim).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, n_kv, head_dim).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        groups = n_heads // n_kv
        k = k[:, None].expand(n_kv, groups, T, head_dim).reshape(n_heads, T, head_dim)
        v = v[:, None].expand(n_kv, groups, T, head_dim).reshape(n_heads, T, head_dim)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
        attn = F.softmax(scores, dim=-1, dtype=torch.float32) @ v
        x = x + attn.transpose(0, 1).reshape(T, n_heads * head_dim) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + sparse_moe(cfg, w, p + "block_sparse_moe.", h)
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return x @ head.T


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, t in tensors.items():
        data = t.contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    h = json.dumps(header).encode("utf-8")
    h += b" " * ((8 - (8 + len(h)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--tokens", help="comma-separated token ids (one window)")
    ap.add_argument("--data", help=".u16 or .u32 token file")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=0)
    ap.add_argument("--dump-logits", help="write the first window's logits [T, V] as F32 'logits'")
    a = ap.parse_args()
    if a.tokens:
        ids = [int(t) for t in a.tokens.split(",")]
    elif a.data:
        width = 2 if a.data.endswith(".u16") else 4
        with open(a.data, "rb") as f:
            raw = f.read()
        ids = list(struct.unpack("<%d%s" % (len(raw) // width, "H" if width == 2 else "I"), raw))
    else:
        raise SystemExit("give --tokens or --data")
    if a.max_tokens:
        ids = ids[: a.max_tokens]
    cfg, w = load_dir(a.model)
    nll, count, first = 0.0, 0, None
    with torch.no_grad():
        for s in range(0, len(ids), a.seq_len):
            win = ids[s:s + a.seq_len]
            if len(win) < 2:
                break
            logits = forward(cfg, w, win)
            if first is None:
                first = logits
            lp = torch.log_softmax(logits[:-1].double(), -1)
            nll -= lp.gather(-1, torch.tensor(win[1:]).unsqueeze(-1)).sum().item()
            count += len(win) - 1
    if a.dump_logits:
        write_safetensors(a.dump_logits, {"logits": first})
    print(json.dumps({"nll": nll / count, "perplexity": math.exp(nll / count), "tokens": count,
                      "argmax": first.argmax(-1).tolist()}))


if __name__ == "__main__":
    sys.exit(main())
