#!/usr/bin/python3
"""Memory does not grow with depth (issue 19): on generated checkpoints as wide as LLaMA-2-7B
(hidden 4096, FFN 11008, 32 heads, vocab 32000, bf16) with 2 and with 6 layers, the peak resident
memory of `ladimo eval` (512 tokens) and of a `ladimo convert --layers 0` worker differ by less
than 15%. Prints every figure. Exit 77 (skipped) without python3-torch or 6 GB of free disk.

    memory_depth_test.py BUILD/bin/ladimo SOURCE_DIR
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time


def run(cmd, **kw):
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"FAILED ({p.returncode}): {' '.join(cmd)}")
    return p, time.time() - t0


def peak(stderr):
    m = re.search(r"peak resident memory .* \((\d+) bytes\)", stderr)
    if not m:
        raise SystemExit("no peak memory line in:\n" + stderr[-2000:])
    return int(m.group(1))


def main():
    ladimo, source = sys.argv[1], sys.argv[2]
    try:
        import torch  # noqa: F401  (the generator needs it)
    except ImportError:
        print("skipped: python3-torch is not installed")
        return 77
    work = tempfile.mkdtemp(prefix="ladimo-depth-")
    try:
        if shutil.disk_usage(work).free < 6e9:
            print(f"skipped: less than 6 GB free under {work}")
            return 77
        ids = [random.Random(1).randrange(3, 32000) for _ in range(1024)]
        data = os.path.join(work, "tokens.u16")
        with open(data, "wb") as f:
            f.write(b"".join(i.to_bytes(2, "little") for i in ids))
        results = {}
        for layers in (2, 6):
            model = os.path.join(work, f"wide{layers}")
            _, gen = run([sys.executable, os.path.join(source, "tools", "make_llama_checkpoint.py"), model,
                          "--layers", str(layers), "--shard-bytes", "2e9"])
            p, t_eval = run([ladimo, "--peak-memory", "eval", model, "--data", data, "--max-tokens", "512", "--json"])
            j = json.loads(p.stdout)
            eval_peak = peak(p.stderr)
            assert j["peak_rss_bytes"] > 0
            project = os.path.join(work, f"p{layers}.ladimo")
            settings = ["--data", data, "--max-tokens", "512", "--epochs", "1", "--router-epochs", "1"]
            run([ladimo, "convert", model, "--project", project, *settings, "--prepare"])
            p, t_conv = run([ladimo, "--peak-memory", "convert", model, "--project", project, *settings, "--layers", "0"])
            conv_peak = peak(p.stderr)
            results[layers] = (eval_peak, conv_peak)
            print(f"{layers} layers: generated in {gen:.0f} s; eval 512 tokens: peak {eval_peak / 2**30:.2f} GiB, "
                  f"{t_eval:.1f} s (perplexity {j['perplexity']:.1f}); convert --layers 0: peak "
                  f"{conv_peak / 2**30:.2f} GiB, {t_conv:.1f} s", flush=True)
            shutil.rmtree(model)
        failed = False
        for i, what in enumerate(("eval", "convert --layers 0")):
            a, b = results[2][i], results[6][i]
            ratio = abs(b - a) / min(a, b)
            print(f"{what}: 6 layers vs 2 layers differ by {100 * ratio:.1f}% (limit 15%)")
            failed |= ratio >= 0.15
        print("1 passed, 0 failed" if not failed else "0 passed, 1 failed")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
