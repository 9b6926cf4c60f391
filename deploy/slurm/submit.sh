#!/bin/bash
# Queues a whole LaDiMo conversion on Slurm: (1) one short job creates the run in the project
# (`ladimo convert ... --prepare`), (2) a job array of TASKS workers converts disjoint layer
# ranges (convert-array.sbatch) once (1) succeeded, (3) `ladimo assemble` verifies every layer's
# checksum and settings fingerprint and records the run once the whole array succeeded.
#
#   deploy/slurm/submit.sh MODEL PROJECT.ladimo TASKS [convert settings ...]
#   e.g. deploy/slurm/submit.sh /shared/llama-7b /shared/llama7b.ladimo 8 --data /shared/calib.txt --max-tokens 100000
#
# Extra sbatch options (partition, account, GPUs) go in SBATCH_* environment variables or
# LADIMO_SBATCH_OPTS. Prints the three job ids (prepare, array, assemble), one per line.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
export LADIMO_MODEL=$1 LADIMO_PROJECT=$2
tasks=$3
shift 3
export LADIMO_ARGS="$*"
: "${LADIMO:=ladimo}"
export LADIMO
# The layer count from the model's config.json (no JSON tool needed).
LADIMO_NUM_LAYERS=$(tr -d '\n' < "$LADIMO_MODEL/config.json" | sed -n 's/.*"num_hidden_layers"[[:space:]]*:[[:space:]]*\([0-9]*\).*/\1/p')
[ -n "$LADIMO_NUM_LAYERS" ] || { echo "submit.sh: no num_hidden_layers in $LADIMO_MODEL/config.json" >&2; exit 1; }
export LADIMO_NUM_LAYERS
opts=(--parsable --export=ALL ${LADIMO_SBATCH_OPTS:-})
logdir=${LADIMO_LOG_DIR:-.}

prepare=$(sbatch "${opts[@]}" --job-name=ladimo-prepare --output="$logdir/ladimo-prepare-%j.log" \
    --wrap "\"$LADIMO\" convert \"$LADIMO_MODEL\" --project \"$LADIMO_PROJECT\" $LADIMO_ARGS --prepare")
array=$(sbatch "${opts[@]}" --dependency="afterok:$prepare" --array="0-$((tasks - 1))" \
    --output="$logdir/ladimo-convert-%A_%a.log" "$here/convert-array.sbatch")
assemble=$(sbatch "${opts[@]}" --dependency="afterok:$array" --job-name=ladimo-assemble \
    --output="$logdir/ladimo-assemble-%j.log" --wrap "\"$LADIMO\" assemble \"$LADIMO_PROJECT\"")
echo "$prepare"
echo "$array"
echo "$assemble"
