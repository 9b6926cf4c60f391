#!/usr/bin/env bash
# Installs the pinned @fugood/llama.node (a prebuilt llama.cpp for Node.js, see
# tests/llamanode/package.json) into build/llamanode/node_modules for the GGUF integration test
# (tests/core/test_gguf.cpp). Idempotent: does nothing when the installed lock matches the
# committed one. Offline-tolerant: when Node.js/npm are missing or the registry cannot be reached
# it says so and exits 0; the test then skips with the reason instead of failing.
set -uo pipefail
cd "$(dirname "$0")/.."
src=tests/llamanode
dst=${LADIMO_LLAMANODE_DIR:-build/llamanode}

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "llamanode: node/npm not found (tools/deps.sh installs them); the llama.cpp GGUF test will skip" >&2
  exit 0
fi
mkdir -p "$dst"
if [ -f "$dst/.installed-lock" ] && cmp -s "$src/package-lock.json" "$dst/.installed-lock" \
   && [ -d "$dst/node_modules/@fugood/llama.node" ]; then
  exit 0
fi
cp "$src/package.json" "$src/package-lock.json" "$dst/"
rm -f "$dst/.installed-lock"
# Only the CPU build for this platform (a direct dependency); the CUDA/Vulkan variants are optional.
if (cd "$dst" && npm ci --omit=optional --no-audit --no-fund --loglevel=error); then
  cp "$src/package-lock.json" "$dst/.installed-lock"
  echo "llamanode: installed @fugood/llama.node into $dst"
else
  echo "llamanode: npm ci failed (offline?); the llama.cpp GGUF test will skip" >&2
fi
exit 0
