#!/usr/bin/env bash
# The newcomer's command: install dependencies, build, and run the main job on the bundled demo
# model. With a display the workbench opens on it; without one, the CLI runs the pipeline and
# prints the report.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
tools/build.sh "$@"

DEMO=resources/demo
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] && [ -z "${CI:-}" ]; then
  exec build/bin/ladimo-workbench --open "$DEMO"
fi
echo
echo "== ladimo inspect $DEMO"
build/bin/ladimo inspect "$DEMO"
echo
echo "== ladimo generate $DEMO --prompt \"It is a truth\" --max-new 40"
build/bin/ladimo generate "$DEMO" --prompt "It is a truth" --max-new 40 --seed 1
echo
echo "== ladimo eval $DEMO --self-sample 4096 (data-free: the model's own samples)"
build/bin/ladimo eval "$DEMO" --self-sample 4096 --seq-len 256
HELD_OUT=../shared/data/text/austen/persuasion.txt
if [ -f "$HELD_OUT" ]; then
  echo
  echo "== ladimo eval $DEMO --data $HELD_OUT (held-out novel)"
  build/bin/ladimo eval "$DEMO" --data "$HELD_OUT" --seq-len 256
fi
