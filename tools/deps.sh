#!/usr/bin/env bash
# Installs what LaDiMo Workbench needs from Debian 12's archive (sudo when not root).
# Idempotent: packages already present are left alone.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-pthread      # LibTorch (CPU) + a fast BLAS (about 30x faster matmul)
  qt6-base-dev libqcustomplot-dev        # the workbench GUI
  qt6-svg-dev                            # SVG export of the plots (QSvgGenerator)
  libsqlite3-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libssl-dev
  libsentencepiece-dev sentencepiece     # tokenizer.model support and spm_train for the demo tokenizer
  libgtest-dev libbenchmark-dev          # tests and benchmarks
  xvfb xauth                             # screenshots / GUI runs without a display
  python3-torch                          # the independent Python reference used by the tests
  nodejs npm                             # llama.cpp via @fugood/llama.node for the GGUF export test (tools/llamanode.sh)
  slurm-wlm munge python3-yaml           # scale-out tests: private single-host Slurm, k8s manifest check
  clang libclang-rt-14-dev llvm          # tools/sanitize.sh: ASan/UBSan build, libFuzzer, llvm-symbolizer
  clang-format python3                   # tools/check_format.sh, tools/check_layers.py
)

# Virtual packages provided by what is installed count as present (NodeSource's nodejs provides
# and conflicts with npm: asking apt for npm there would fail).
provided=" $(dpkg-query -W -f='${db:Status-Abbrev}|${Provides}\n' 2>/dev/null | awk -F'|' '$1 ~ /^ii/ {print $2}' \
  | tr ',' '\n' | sed 's/(.*)//; s/[[:space:]]//g' | sort -u | tr '\n' ' ') "
missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
     && [[ "$provided" != *" $p "* ]]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "Installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
