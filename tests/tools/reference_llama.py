#!/usr/bin/env python3
"""Independent LLaMA reference (python3-torch from Debian; shares no code with the C++ engine).

Reads config.json + model.safetensors (or an index of shards) by itself and computes perplexity
over windows of --seq-len tokens of a .u16/.u32 file, the way `ladimo eval` defines it:
exp(mean NLL of every token after the first of each window). Prints JSON.
"""
import argparse
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        buf = bytearray(data[base + b:base + e])
        t = torch.frombuffer(buf, dtype=DTYPES[info["dtype"]]) if e > b else torch.empty(0)
        out[name] = t.reshape(info["shape"]).float()
    return out


def load(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    index = os.path.join(model_dir, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            weights.update(read_safetensors(os.path.join(model_dir, shard)))
    else:
        weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return cfg, weights


def rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def logits(cfg, w, tokens):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", H // nh)
    eps = cfg.get("rms_norm_eps", 1e-6)
    theta = cfg.get("rope_theta", 10000.0)
    B, T = tokens.shape
    x = w["model.embed_tokens.weight"][tokens]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(T).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(v):
        v1, v2 = v[..., : hd // 2], v[..., hd // 2:]
        return v * cos + torch.cat([-v2, v1], -1) * sin

    mask = torch.full((T, T), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(B, T, nh, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(B, T, nkv, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
        x = x + a.transpose(1, 2).reshape(B, T, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(g) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--data", required=True)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=0)
    a = ap.parse_args()
    width = 2 if a.data.endswith(".u16") else 4
    raw = open(a.data, "rb").read()
    ids = list(struct.unpack("<%d%s" % (len(raw) // width, "H" if width == 2 else "I"), raw))
    if a.max_tokens:
        ids = ids[: a.max_tokens]
    cfg, w = load(a.model)
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), a.seq_len):
            win = ids[s:s + a.seq_len]
            if len(win) < 2:
                break
            t = torch.tensor([win])
            lp = torch.log_softmax(logits(cfg, w, t)[0, :-1].double(), -1)
            nll -= lp.gather(-1, t[0, 1:].unsqueeze(-1)).sum().item()
            n += len(win) - 1
    print(json.dumps({"perplexity": math.exp(nll / n), "nll": nll / n, "tokens": n}))


if __name__ == "__main__":
    sys.exit(main())
