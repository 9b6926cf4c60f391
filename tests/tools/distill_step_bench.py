#!/usr/bin/env python3
"""The equivalent PyTorch (Python) distillation step of bench_moe's distillStep: an MoE layer of
8 experts with top-6 hard routing, token dispatch (index_select per expert, index_add back),
normalised MSE, Adam. Prints steps/s for the same shapes, for comparison with the C++ loop.

    /usr/bin/python3 tests/tools/distill_step_bench.py
"""
import json
import math
import time

import torch


def setup(H, I, T, N=8):
    torch.manual_seed(0)
    gate = torch.randn(I, H) / math.sqrt(H)
    up = torch.randn(I, H) / math.sqrt(H)
    down = torch.randn(H, I) / math.sqrt(I)
    x = torch.randn(T, H)
    y = (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T
    S = I // N
    g = gate.view(N, S, H).clone().requires_grad_(True)
    u = up.view(N, S, H).clone().requires_grad_(True)
    d = down.view(H, N, S).permute(1, 0, 2).contiguous().requires_grad_(True)
    router = torch.randn(N, H)
    return x, y, g, u, d, router


def moe(x, g, u, d, router, k=6):
    probs = torch.softmax(x @ router.T, -1)
    top = probs.topk(k, -1).indices
    mask = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top, True)
    out = torch.zeros_like(x)
    for e in range(g.shape[0]):
        idx = mask[:, e].nonzero().squeeze(-1)
        if idx.numel() == 0:
            continue
        xe = x.index_select(0, idx)
        h = torch.nn.functional.silu(xe @ g[e].T) * (xe @ u[e].T)
        out = out.index_add(0, idx, h @ d[e].T)
    return out


def bench(H, I, T, seconds=3.0):
    x, y, g, u, d, router = setup(H, I, T)
    opt = torch.optim.Adam([g, u, d], lr=1e-3)
    energy = y.pow(2).sum(-1).mean()
    steps, start = 0, time.perf_counter()
    while True:
        loss = (moe(x, g, u, d, router) - y).pow(2).sum(-1).mean() / energy
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps >= 3 and time.perf_counter() - start > seconds:
            break
    return steps / (time.perf_counter() - start)


if __name__ == "__main__":
    print(json.dumps({f"{H}x{I}x{T}": bench(H, I, T) for H, I, T in [(256, 768, 512), (1024, 2816, 512)]}))
