#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/).

Small, valid (or nearly valid) examples of each input format, so libFuzzer starts from inputs
that reach deep into the parsers. Rerun after changing a format; the project seed needs a built
fuzz_project (it makes a current-schema project with the core itself):
    tests/fuzz/make_seeds.py [build-asan/bin/fuzz_project]
"""
import json
import os
import sqlite3
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, align=True):
    """tensors: list of (name, dtype, shape, raw bytes)."""
    header, offset, blobs = {}, 0, []
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    while align and (8 + len(h)) % 8:
        h += b" "
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def f32(*xs):
    return struct.pack("<%df" % len(xs), *xs)


# ---- safetensors
put("safetensors", "two_tensors", safetensors(
    [("w", "F32", [2, 3], f32(1, 2, 3, 4, 5, 6)), ("b", "BF16", [2], b"\x80\x3f\x00\x40")],
    metadata={"format": "pt"}))
put("safetensors", "empty_header", safetensors([]))
put("safetensors", "unaligned_i8_bool", safetensors(
    [("x", "I8", [3], b"\x01\x02\x03"), ("m", "BOOL", [1, 1], b"\x01"), ("z", "F16", [0], b"")], align=False))

# ---- checkpoint index (the shard a.safetensors holds one tensor "w")
put("checkpoint_index", "one_shard", json.dumps(
    {"metadata": {"total_size": 24}, "weight_map": {"w": "a.safetensors"}}))
put("checkpoint_index", "empty_map", json.dumps({"weight_map": {}}))

# ---- config.json
llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
         "intermediate_size": 172, "num_hidden_layers": 5, "num_attention_heads": 8,
         "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
         "tie_word_embeddings": False, "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2}
put("config", "llama", json.dumps(llama, indent=1))
mistral = dict(llama, architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=4096,
               eos_token_id=[2, 3], head_dim=16, rope_scaling=None)
put("config", "mistral", json.dumps(mistral))

# ---- tokenizer.json
def byte_level_char(b):
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if b in printable:
        return chr(b)
    n = 0
    for c in range(256):
        if c not in printable:
            if c == b:
                return chr(256 + n)
            n += 1

vocab = {byte_level_char(b): b for b in range(256)}
G = byte_level_char(ord(" "))
merges = [("H", "e"), ("l", "l"), ("He", "ll"), ("Hell", "o"), (G, "w"), ("o", "r"), (G + "w", "or")]
for k, (a, b) in enumerate(merges):
    vocab[a + b] = 256 + k
vocab["<|endoftext|>"] = 300
put("tokenizer_json", "byte_level", json.dumps({
    "normalizer": None,
    "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
    "added_tokens": [{"id": 300, "content": "<|endoftext|>", "special": True}],
    "model": {"type": "BPE", "vocab": vocab, "merges": [a + " " + b if k % 2 else [a, b] for k, (a, b) in enumerate(merges)]}},
    ensure_ascii=False))
sp_vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    sp_vocab["<0x%02X>" % b] = 3 + b
for w in ["\u2581", "H", "e", "l", "o", "w", "r", "d", "\u2581H", "He", "ll", "Hell", "Hello", "\u2581w", "or"]:
    sp_vocab.setdefault(w, len(sp_vocab))
put("tokenizer_json", "byte_fallback", json.dumps({
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                         {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
    "pre_tokenizer": None,
    "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                   {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "added_tokens": [{"id": 0, "content": "<unk>", "special": True}, {"id": 1, "content": "<s>", "special": True},
                     {"id": 2, "content": "</s>", "special": True}],
    "model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>", "fuse_unk": True, "vocab": sp_vocab,
              "merges": ["H e", "l l", "He ll", "Hell o", "\u2581 H", "\u2581 w", "o r"]}}, ensure_ascii=False))

# ---- token files: the first byte picks .u16 (0), .u32 (1), .jsonl (2); +3 caps at 7 tokens
put("tokendata", "u16", bytes([0]) + struct.pack("<10H", *range(1, 11)))
put("tokendata", "u32_capped", bytes([4]) + struct.pack("<9I", *range(100, 109)))
put("tokendata", "jsonl", bytes([2]) + b'{"tokens": [1, 5, 7]}\n\n{"tokens": [3, 4, 511]}\n')

# ---- routing policy documents (4 layers, 8 experts)
rules = [{"layer": 0, "top_k": 2}, {"layer": 1, "top_p": 0.9, "min_k": 1, "max_k": 4},
         {"layer": 2, "top_k": 8}, {"layer": 3, "top_p": 0.5, "min_k": 2, "max_k": 8}]
put("policy", "mixed", json.dumps({"format": "ladimo-routing-policy", "version": 1, "name": "mixed",
                                   "gating": "hard", "experts": 8, "layers": 4, "rules": rules}, indent=1))
put("policy", "uniform_soft", json.dumps({"format": "ladimo-routing-policy", "version": 1, "name": "k2",
                                          "gating": "soft", "experts": 8, "layers": 4,
                                          "rules": [{"layer": i, "top_k": 2} for i in range(4)]}))

# ---- GGUF v3: two metadata keys, an array, one F32 tensor
def gguf_str(s):
    s = s.encode()
    return struct.pack("<Q", len(s)) + s

def gguf():
    kv = gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str("llama")
    kv += gguf_str("general.alignment") + struct.pack("<I", 4) + struct.pack("<I", 32)
    kv += gguf_str("tokenizer.ggml.scores") + struct.pack("<I", 9) + struct.pack("<IQ", 6, 3) + f32(0, -1, -2)
    info = gguf_str("t") + struct.pack("<I", 2) + struct.pack("<QQ", 3, 2) + struct.pack("<I", 0) + struct.pack("<Q", 0)
    head = b"GGUF" + struct.pack("<IQQ", 3, 1, 3) + kv + info
    head += b"\0" * (-len(head) % 32)
    return head + f32(1, 2, 3, 4, 5, 6)

put("gguf", "llama_one_tensor", gguf())

# ---- GGUF models for the core's reader: a one-layer llama, dense and MoE (2 experts), F32.
def gguf_model(moe):
    H, HEADS, D, I, N, S, V = 8, 2, 4, 8, 2, 4, 16
    def u32(k, v): return gguf_str(k) + struct.pack("<II", 4, v)
    def f32kv(k, v): return gguf_str(k) + struct.pack("<If", 6, v)
    kv = [gguf_str("general.architecture") + struct.pack("<I", 8) + gguf_str("llama"), u32("general.alignment", 32),
          u32("llama.context_length", 32), u32("llama.embedding_length", H), u32("llama.block_count", 1),
          u32("llama.feed_forward_length", S if moe else I), u32("llama.attention.head_count", HEADS),
          u32("llama.attention.head_count_kv", HEADS), u32("llama.attention.key_length", D),
          f32kv("llama.rope.freq_base", 10000.0), f32kv("llama.attention.layer_norm_rms_epsilon", 1e-5)]
    tensors = [("token_embd.weight", [V, H]), ("blk.0.attn_norm.weight", [H]), ("blk.0.attn_q.weight", [HEADS * D, H]),
               ("blk.0.attn_k.weight", [HEADS * D, H]), ("blk.0.attn_v.weight", [HEADS * D, H]),
               ("blk.0.attn_output.weight", [H, HEADS * D]), ("blk.0.ffn_norm.weight", [H])]
    if moe:
        kv += [u32("llama.expert_count", N), u32("llama.expert_used_count", 1)]
        tensors += [("blk.0.ffn_gate_inp.weight", [N, H]), ("blk.0.ffn_gate_exps.weight", [N, S, H]),
                    ("blk.0.ffn_up_exps.weight", [N, S, H]), ("blk.0.ffn_down_exps.weight", [N, H, S])]
    else:
        tensors += [("blk.0.ffn_gate.weight", [I, H]), ("blk.0.ffn_up.weight", [I, H]), ("blk.0.ffn_down.weight", [H, I])]
    tensors.append(("output_norm.weight", [H]))
    info, data = b"", b""
    for name, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        info += gguf_str(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in reversed(shape))
        info += struct.pack("<IQ", 0, len(data))
        data += f32(*[((i * 7) % 11 - 5) / 10 for i in range(n)])
        data += b"\0" * (-len(data) % 32)
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)) + b"".join(kv) + info
    head += b"\0" * (-len(head) % 32)
    return head + data

put("gguf_load", "llama_dense", gguf_model(False))
put("gguf_load", "llama_moe", gguf_model(True))

# ---- project files: the v1 schema of tests/data/store (opening migrates it) and, when a built
# fuzz_project is given, a current-schema project with a run, layers and a policy.
with tempfile.TemporaryDirectory() as tmp:
    p = os.path.join(tmp, "v1.ladimo")
    db = sqlite3.connect(p)
    db.execute("PRAGMA page_size=512")
    with open(os.path.join(HERE, "..", "data", "store", "project_v1.sql")) as f:
        db.executescript(f.read())
    db.execute("VACUUM")
    db.close()
    with open(p, "rb") as f:
        put("project", "schema_v1", f.read())
    if len(sys.argv) > 1:
        cur = os.path.join(tmp, "P.ladimo")
        subprocess.run([sys.argv[1]], env=dict(os.environ, LADIMO_FUZZ_MAKE_SEED=cur), check=True)
        db = sqlite3.connect(cur)
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("PRAGMA page_size=512")
        db.execute("VACUUM")
        db.close()
        with open(cur, "rb") as f:
            put("project", "current", f.read())
