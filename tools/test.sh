#!/usr/bin/env bash
# Builds and runs the whole test suite (CTest). Tests that need ../shared/data skip when it is
# absent; GUI tests run offscreen.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh "$@"
tools/llamanode.sh   # pinned llama.cpp for the GGUF test; skips (test says why) when offline
export QT_QPA_PLATFORM=offscreen
ctest --test-dir build --output-on-failure -j2 --timeout 900
