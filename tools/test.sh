#!/usr/bin/env bash
# Builds and runs the whole test suite (CTest). Tests that need ../shared/data skip when it is
# absent; GUI tests run offscreen.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
# The layer walls (docs/ARCHITECTURE.md) and the layout (.clang-format): seconds, so they go first.
python3 tools/check_layers.py
tools/check_format.sh
tools/build.sh "$@"
tools/llamanode.sh   # pinned llama.cpp for the GGUF test; skips (test says why) when offline
export QT_QPA_PLATFORM=offscreen
ctest --test-dir build --output-on-failure -j2 --timeout 900
# CI (CI=true) also runs the sanitizer build of the core tests and the fuzz targets (issue 9);
# locally: LADIMO_SANITIZE=1 tools/test.sh, or tools/sanitize.sh alone.
if [ "${LADIMO_SANITIZE:-}" = 1 ] || { [ "${CI:-}" = true ] && [ "${LADIMO_SANITIZE:-}" != 0 ]; }; then
  tools/sanitize.sh
fi
