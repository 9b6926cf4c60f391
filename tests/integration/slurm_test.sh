#!/bin/bash
# Integration test of deploy/slurm: starts a private single-host Slurm (munged + slurmctld +
# slurmd on 127.0.0.1, its own ports, key, state and spool folders under a temporary folder),
# converts the 4-layer demo model with a 3-task job array (submit.sh: prepare job, array of
# `ladimo convert --layers`, dependent `ladimo assemble`), and checks the assembled project has
# the same per-layer weights (byte-identical files) and recorded outcomes as a single-process
# conversion with the same seed. Exit 0: passed; 77: skipped (no Slurm/munge, not root, or the
# daemons cannot start here; the reason is printed); anything else: failed.
#
#   tests/integration/slurm_test.sh LADIMO_BINARY SOURCE_DIR
set -uo pipefail

LADIMO=$(readlink -f "${1:?usage: slurm_test.sh LADIMO_BINARY SOURCE_DIR}")
SRC=$(readlink -f "${2:?usage: slurm_test.sh LADIMO_BINARY SOURCE_DIR}")
MODEL=$SRC/resources/demo
# Small budget: self-sampled calibration tokens (no data files needed), a few epochs.
ARGS="--self-sample 2048 --seed 11 --seq-len 128 --epochs 3 --router-epochs 2"

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

for tool in munged munge slurmctld slurmd sbatch scontrol sinfo python3; do
    command -v "$tool" >/dev/null 2>&1 || skip "'$tool' not found (apt-get install slurm-wlm munge; tools/deps.sh)"
done
[ "$(id -u)" -eq 0 ] || skip "slurmd must run as root to start jobs (running as uid $(id -u))"
[ -x "$LADIMO" ] || fail "no ladimo binary at $LADIMO"

D=$(mktemp -d /tmp/ladimo-slurm-XXXXXX)
chmod 755 "$D"
export SLURM_CONF=$D/slurm.conf
cleanup() {
    scontrol shutdown >/dev/null 2>&1
    for _ in $(seq 1 50); do
        { [ -f "$D/slurmctld.pid" ] && kill -0 "$(cat "$D/slurmctld.pid" 2>/dev/null)" 2>/dev/null; } ||
            { [ -f "$D/slurmd.pid" ] && kill -0 "$(cat "$D/slurmd.pid" 2>/dev/null)" 2>/dev/null; } || break
        sleep 0.1
    done
    for f in slurmd.pid slurmctld.pid munge/munged.pid; do
        [ -f "$D/$f" ] && kill "$(cat "$D/$f" 2>/dev/null)" 2>/dev/null
    done
    if [ -n "${KEEP_SLURM_TEST_DIR:-}" ]; then echo "kept $D"; else rm -rf "$D"; fi
}
trap cleanup EXIT

# munge: a private key and socket.
mkdir -p "$D/munge" && chmod 711 "$D/munge"
head -c 1024 /dev/urandom > "$D/munge/munge.key" && chmod 400 "$D/munge/munge.key"
munged -f --key-file="$D/munge/munge.key" --socket="$D/munge/munge.sock" --pid-file="$D/munge/munged.pid" \
    --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" ||
    skip "munged does not start: $(tail -3 "$D/munge/munged.log" 2>/dev/null)"

# Slurm: ports picked from the process id so parallel runs do not collide.
port=$(( 20000 + ($$ % 4000) * 2 ))
node=$(hostname -s)
mkdir -p "$D/state" "$D/spool" "$D/log" "$D/out"
cat > "$SLURM_CONF" <<CONF
ClusterName=ladimotest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$D/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
slurmctld -f "$SLURM_CONF" || skip "slurmctld does not start: $(tail -3 "$D/log/slurmctld.log" 2>/dev/null)"
slurmd -f "$SLURM_CONF" || skip "slurmd does not start: $(tail -3 "$D/log/slurmd.log" 2>/dev/null)"
for _ in $(seq 1 60); do
    state=$(sinfo -h -o %T 2>/dev/null | head -1)
    [ "$state" = "idle" ] && break
    sleep 0.5
done
[ "$state" = "idle" ] || skip "the Slurm node did not come up (state '${state:-none}'): $(tail -3 "$D/log/slurmd.log" 2>/dev/null)"
echo "slurm up on $node, ports $port/$((port + 1)), $(nproc) CPUs"

# The reference: one process, every layer.
start=$(date +%s)
# shellcheck disable=SC2086
"$LADIMO" convert "$MODEL" --project "$D/ref.ladimo" $ARGS > "$D/ref.log" 2>&1 || fail "reference conversion: $(tail -5 "$D/ref.log")"
ref_seconds=$(( $(date +%s) - start ))

# The recipe under test: prepare, a 3-task array, assemble after it.
start=$(date +%s)
# shellcheck disable=SC2086
ids=$(LADIMO="$LADIMO" LADIMO_LOG_DIR="$D/out" "$SRC/deploy/slurm/submit.sh" "$MODEL" "$D/slurm.ladimo" 3 $ARGS) ||
    fail "submit.sh: $ids"
read -r prepare array assemble <<< "$(echo $ids)"
echo "jobs: prepare $prepare, array $array, assemble $assemble"
for _ in $(seq 1 900); do
    state=$(scontrol -o show job "$assemble" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
    case "$state" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY) break ;; esac
    sleep 1
done
slurm_seconds=$(( $(date +%s) - start ))
for f in "$D"/out/*.log; do echo "--- $(basename "$f")"; tail -4 "$f"; done
[ "$state" = "COMPLETED" ] || fail "assemble job $assemble ended in state '${state:-unknown}'"
grep -q "task 0 of 3 on .*: layers 0-0" "$D"/out/ladimo-convert-*_0.log || fail "task 0 did not convert layer 0"
grep -q "task 1 of 3 on .*: layers 1-1" "$D"/out/ladimo-convert-*_1.log || fail "task 1 did not convert layer 1"
grep -q "task 2 of 3 on .*: layers 2-3" "$D"/out/ladimo-convert-*_2.log || fail "task 2 did not convert layers 2-3"
grep -q "run #1 of .* is complete" "$D"/out/ladimo-assemble-*.log || fail "assemble did not complete the run"

# Same weights (byte for byte) and the same recorded outcomes, layer by layer.
"$LADIMO" project show "$D/ref.ladimo" --json > "$D/ref.json" 2>/dev/null || fail "project show ref"
"$LADIMO" project show "$D/slurm.ladimo" --json > "$D/slurm.json" 2>/dev/null || fail "project show slurm"
python3 - "$D" <<'PY' || fail "the assembled project differs from the single-process conversion"
import hashlib, json, sys
d = sys.argv[1]
ref, got = (json.load(open(f"{d}/{n}.json")) for n in ("ref", "slurm"))
assert len(ref["layers"]) == len(got["layers"]) == 4, (len(ref["layers"]), len(got["layers"]))
assert got["run"]["status"] == "done", got["run"]["status"]
for a, b in zip(ref["layers"], got["layers"]):
    assert a["status"] == b["status"] == "done", (a["index"], a["status"], b["status"])
    for key in ("weights_path", "weights_sha256", "final_loss", "relative_error"):
        assert a[key] == b[key], (a["index"], key, a[key], b[key])
    fa = hashlib.sha256(open(f"{d}/ref.ladimo.d/{a['weights_path']}", "rb").read()).hexdigest()
    fb = hashlib.sha256(open(f"{d}/slurm.ladimo.d/{b['weights_path']}", "rb").read()).hexdigest()
    assert fa == fb == a["weights_sha256"], (a["index"], fa, fb)
    print(f"layer {a['index']}: same weights {fa[:12]}, final loss {a['final_loss']:.6g}, relative error {a['relative_error']:.6g}")
PY
echo "PASS: 3-task Slurm job array + assemble equals one process (reference ${ref_seconds} s, Slurm ${slurm_seconds} s incl. queueing)"
