#!/usr/bin/env bash
# The real-size measurements of issue 19, on checkpoints written by tools/make_llama_checkpoint.py:
# peak resident memory (as /usr/bin/time -f %M reports it) and wall time of every step, printed
# as a table. Needs about 16 GB of free disk under WORK for the 32-layer checkpoint.
#
#   tests/bench/memory_7b.sh WORK DATA.txt [TOKENIZER_DIR]
#
# WORK/llama7b (32 layers) and WORK/wide2 (2 layers, 7B-wide) are written when absent; DATA.txt
# is the text to evaluate and calibrate on (its tokenizer: TOKENIZER_DIR/tokenizer.model, the
# LLaMA-2 one). Nothing here is committed or cleaned up but the projects it makes.
set -euo pipefail
WORK=${1:?work folder}; DATA=${2:?text file}; TOK=${3:-}
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
B="$ROOT/build/bin/ladimo"
mkdir -p "$WORK"
for m in llama7b:32 wide2:2; do
  name=${m%%:*}; layers=${m##*:}
  if [ ! -e "$WORK/$name/config.json" ]; then
    /usr/bin/python3 "$ROOT/tools/make_llama_checkpoint.py" "$WORK/$name" --layers "$layers"
    [ -n "$TOK" ] && cp "$TOK/tokenizer.model" "$WORK/$name/"
  fi
done
# A token-id file for the GGUF export, which has no tokenizer of its own here.
/usr/bin/python3 -c "
import random; r=random.Random(1)
open('$WORK/tokens.u16','wb').write(b''.join(r.randrange(3,32000).to_bytes(2,'little') for _ in range(1024)))"
printf '| step | peak RSS | wall |\n|---|---|---|\n'
step() {
  local label=$1; shift
  local out; out=$(mktemp)
  if ! /usr/bin/time -f '%M %e' -o "$out.t" "$@" > "$out" 2>&1; then
    cat "$out" >&2; echo "FAILED: $label" >&2; exit 1
  fi
  read -r kb secs < "$out.t"
  awk -v l="$label" -v kb="$kb" -v s="$secs" 'BEGIN { printf "| %s | %.2f GB (%.2f GiB) | %s s |\n", l, kb * 1024 / 1e9, kb / 1048576, s }'
  grep -h "predicted peak memory" "$out" | sed 's/^ */  cost model: /' >&2 || true
  rm -f "$out" "$out.t"
}
S7="--data $DATA --max-tokens 2048 --epochs 1 --router-epochs 1"
rm -rf "$WORK"/m7.ladimo* "$WORK"/m2.ladimo* "$WORK"/m2-moe "$WORK"/m2-moe.gguf
step "7B: convert --dry-run, 100,000 tokens" "$B" convert "$WORK/llama7b" --project "$WORK/m7.ladimo" --data "$DATA" --max-tokens 100000 --dry-run
step "7B: eval, 512 tokens" "$B" eval "$WORK/llama7b" --data "$DATA" --max-tokens 512
step "7B: convert --prepare (hashes 13.5 GB once)" "$B" convert "$WORK/llama7b" --project "$WORK/m7.ladimo" $S7 --prepare
step "7B: convert worker --layers 0-1, 2048 tokens" "$B" convert "$WORK/llama7b" --project "$WORK/m7.ladimo" $S7 --layers 0-1
step "7B-wide, 2 layers: convert, 2048 tokens" "$B" convert "$WORK/wide2" --project "$WORK/m2.ladimo" $S7
step "7B-wide, 2 layers: export hf-mixtral bf16" "$B" export "$WORK/m2.ladimo" --format hf-mixtral --dtype bf16 --top-k 6 --out "$WORK/m2-moe"
step "7B-wide, 2 layers: export gguf f16" "$B" export "$WORK/m2.ladimo" --format gguf --dtype f16 --top-k 6 --out "$WORK/m2-moe.gguf"
step "7B-wide, 2 layers: eval the hf-mixtral export" "$B" eval "$WORK/m2-moe" --data "$WORK/tokens.u16" --max-tokens 512 --no-timing
step "7B-wide, 2 layers: eval the gguf export" "$B" eval "$WORK/m2-moe.gguf" --data "$WORK/tokens.u16" --max-tokens 512 --no-timing
