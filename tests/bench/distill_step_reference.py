#!/usr/bin/env python3
"""Distillation steps per second of the MoE block in plain PyTorch, the reference that
bench_moe's distillStep is compared with (issue 5). Debian's python3-torch wraps the same LibTorch.

Same algorithm as the C++ step: route top-6 of 8 by a linear router, dispatch tokens to experts
(gather rows, SwiGLU expert, weighted scatter-add), MSE normalised by the target's energy, Adam.
Run: python3 tests/bench/distill_step_reference.py   (prints steps/s per size)
Intra-op threads: THREADS (default: the CPU count, as in the C++ default); try THREADS=1 too.
"""
import os
import time

import torch
import torch.nn.functional as F


def setup(H, I, T, N=8):
    torch.manual_seed(0)
    S = I // N
    gate = (torch.randn(N, S, H) / H**0.5).requires_grad_()
    up = (torch.randn(N, S, H) / H**0.5).requires_grad_()
    down = (torch.randn(N, H, S) / I**0.5).requires_grad_()
    router = torch.randn(N, H)
    x = torch.randn(T, H)
    with torch.no_grad():
        W1, W3 = gate.reshape(I, H), up.reshape(I, H)
        W2 = down.permute(1, 0, 2).reshape(H, I)
        y = (F.silu(x @ W1.t()) * (x @ W3.t())) @ W2.t()
    return gate, up, down, router, x, y


def moe(x, gate, up, down, router, k=6):
    N, S, _ = gate.shape
    probs = torch.softmax(x @ router.t(), -1)
    top = probs.topk(k, -1).indices
    mask = torch.zeros_like(probs, dtype=torch.bool).scatter(-1, top, True)
    pairs = mask.t().nonzero()
    experts, tokens = pairs[:, 0], pairs[:, 1]
    counts = torch.bincount(experts, minlength=N).tolist()
    out = torch.zeros_like(x)
    start = 0
    for e in range(N):
        n = counts[e]
        if n == 0:
            continue
        idx = tokens[start:start + n]
        xe = x.index_select(0, idx)
        h = F.silu(xe @ gate[e].t()) * (xe @ up[e].t())
        out = out.index_add(0, idx, h @ down[e].t())
        start += n
    return out


def main():
    torch.set_num_threads(int(os.environ.get("THREADS", os.cpu_count() or 1)))
    for H, I, T in [(256, 768, 512), (1024, 2816, 512)]:
        gate, up, down, router, x, y = setup(H, I, T)
        opt = torch.optim.Adam([gate, up, down], lr=1e-3)
        energy = y.pow(2).sum(-1).mean().item()

        def step():
            loss = (moe(x, gate, up, down, router) - y).pow(2).sum(-1).mean() / energy
            opt.zero_grad()
            loss.backward()
            opt.step()

        for _ in range(3):
            step()
        best = 0.0
        for _ in range(5):  # the fastest of five rounds: the least disturbed by other load
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 1.0:
                step()
                n += 1
            best = max(best, n / (time.perf_counter() - t0))
        print(f"distillStep/{H}/{I}/{T} steps/s={best:.2f} threads={torch.get_num_threads()}")


if __name__ == "__main__":
    main()
