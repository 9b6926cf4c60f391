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
# The product's job, headless: convert the demo model to experts, profile its routing, search and
# refine a policy for 75% of the FFN parameters, evaluate it against dense on held-out samples,
# export it, and print the report. A rerun takes every finished step from the project.
echo
echo "== ladimo run $DEMO --budget-params 0.75 --out build/demo-run"
build/bin/ladimo run "$DEMO" --budget-params 0.75 --out build/demo-run
echo
echo "== ladimo generate build/demo-run/model --prompt \"It is a truth\" (the exported MoE model)"
build/bin/ladimo generate build/demo-run/model --prompt "It is a truth" --max-new 40 --seed 1
