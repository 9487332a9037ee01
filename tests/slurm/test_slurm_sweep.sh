#!/usr/bin/env bash
# Real-cluster test of `nnsplitter sweep --slurm --submit`: starts a single-node Slurm cluster
# (tools/slurm_local.sh), submits a 4-run sweep (lenet5 on the synthetic dataset, tiny
# budgets), waits for the collect job, checks DIR/summary.h5 and DIR/summary.csv, then runs the
# same sweep locally and checks that the accuracies are identical run for run (same seeds).
#
#   tests/slurm/test_slurm_sweep.sh [NNSPLITTER]    (default: $NNS_BINARY or build/nnsplitter)
#
# Exit 0 passed, 1 failed, 77 skipped (Slurm cannot be installed or started here: not root,
# no apt-get...; ctest's SKIP_RETURN_CODE). Environment: NNS_SLURM_DIR (the cluster's folder,
# default /tmp/nns-slurm; a cluster already running there is used and left running),
# NNS_KEEP=1 keeps the work folder.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${1:-${NNS_BINARY:-$ROOT/build/nnsplitter}}
[[ -x $BIN ]] || { echo "FAILED: no nnsplitter binary at $BIN (pass its path)"; exit 1; }
BIN=$(realpath "$BIN")
SLURM_DIR=${NNS_SLURM_DIR:-/tmp/nns-slurm}
WORK=$(mktemp -d /tmp/nns-slurm-test.XXXXXX)
started_cluster=0
status=1

cleanup() {
  if ((started_cluster)); then
    "$ROOT/tools/slurm_local.sh" stop "$SLURM_DIR" >/dev/null 2>&1 || true
  fi
  if ((status == 0 || status == 77)) && [[ ${NNS_KEEP:-0} != 1 ]]; then
    rm -rf "$WORK"
  else
    echo "work folder kept: $WORK"
  fi
}
trap cleanup EXIT

fail() {
  echo "FAILED: $*"
  for f in "$WORK"/slurm/sweep/logs/*; do
    [[ -s $f ]] && { echo "---- $f"; tail -n 20 "$f"; }
  done
  exit 1
}
skip() {
  status=77
  echo "SKIPPED: $*"
  exit 77
}

"$BIN" sweep --help >/dev/null 2>&1 || fail "$BIN has no sweep command"

# ---- the cluster
if out=$("$ROOT/tools/slurm_local.sh" status "$SLURM_DIR" 2>/dev/null); then
  echo "using the Slurm cluster already running in $SLURM_DIR"
else
  [[ $(id -u) -eq 0 ]] || skip "starting a local Slurm cluster needs root"
  started_cluster=1
  if ! out=$("$ROOT/tools/slurm_local.sh" start "$SLURM_DIR" 2>"$WORK/slurm_local.log"); then
    cat "$WORK/slurm_local.log"
    skip "cannot install or start a local Slurm cluster: $(tail -n 1 "$WORK/slurm_local.log")"
  fi
  echo "started a Slurm cluster in $SLURM_DIR"
fi
eval "$out"
export SLURM_CONF
sinfo

# ---- the sweep: a pre-trained victim (the runs differ in seed and k of the search)
cd "$WORK"
"$BIN" train --model lenet5 --dataset synthetic --epochs 1 --batch 64 --seed 3 --threads 1 \
  --out "$WORK/victim.safetensors" >/dev/null 2>"$WORK/train.log" ||
  { cat "$WORK/train.log"; fail "training the victim"; }
cat >"$WORK/sweep.yaml" <<EOF
name: sweep
threads: 1
dataset: {name: synthetic}
model: {arch: lenet5}
victim: {weights: $WORK/victim.safetensors}
splitter: {val_size: 200, max_epochs: 1, max_steps: 5, batch: 64}
controller: {hidden: 32, updates: 2, episodes_per_update: 2}
attacks: {kinds: [norm_clip]}
output: {dir: $WORK/slurm, plots: false}
slurm: {cpus: 1, mem: 512M, time: "00:10:00", max_parallel: 4}
sweep:
  seed: [1, 2]
  splitter.k: [1, 2]
EOF
"$BIN" sweep sweep.yaml --list

submit=$("$BIN" sweep sweep.yaml --slurm --submit --json) || fail "sweep --slurm --submit"
echo "$submit"
array_job=$(sed -n 's/.*"array_job":"\([0-9]*\)".*/\1/p' <<<"$submit")
collect_job=$(sed -n 's/.*"collect_job":"\([0-9]*\)".*/\1/p' <<<"$submit")
[[ -n $array_job && -n $collect_job ]] || fail "no job ids in: $submit"
DIR=$WORK/slurm/sweep
grep -q -- "--array=0-3%4" "$DIR/sweep.sbatch" || fail "sweep.sbatch has no --array=0-3%4"

# ---- wait for the collect job (scontrol, no accounting needed)
state=""
for _ in $(seq 1 600); do
  state=$(scontrol show job "$collect_job" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | head -n1)
  case $state in
    COMPLETED) break ;;
    FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | PREEMPTED | BOOT_FAIL | DEADLINE)
      scontrol show job "$array_job" | grep -E "JobId|JobState|ExitCode" || true
      fail "collect job $collect_job ended $state" ;;
  esac
  sleep 0.5
done
[[ $state == COMPLETED ]] || fail "collect job $collect_job still '$state' after 300 s"
echo "array job $array_job and collect job $collect_job completed"

# ---- the summary of the Slurm sweep
[[ -f $DIR/summary.h5 ]] || fail "no $DIR/summary.h5"
[[ -f $DIR/summary.csv ]] || fail "no $DIR/summary.csv"
rows=$(($(wc -l <"$DIR/summary.csv") - 1))
((rows == 4)) || fail "summary.csv holds $rows runs, not 4"
for i in 0 1 2 3; do
  [[ -f $DIR/run_000$i.h5 ]] || fail "no $DIR/run_000$i.h5"
  [[ -f $DIR/logs/${array_job}_$i.out ]] || fail "no log $DIR/logs/${array_job}_$i.out"
done
"$BIN" collect "$DIR" >/dev/null 2>"$WORK/collect.err" || { cat "$WORK/collect.err"; fail "collect"; }
grep -q "4 runs, 0 missing" "$WORK/collect.err" || { cat "$WORK/collect.err"; fail "collect sees missing runs"; }
if /usr/bin/python3 -c "import h5py" 2>/dev/null; then
  /usr/bin/python3 - "$DIR/summary.h5" <<'EOF' || fail "summary.h5 content"
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["format"] == "nnsplitter-summary-1", f.attrs["format"]
    assert int(f.attrs["runs"]) == 4, f.attrs["runs"]
    assert f.attrs["missing"] == "", f.attrs["missing"]
    assert list(f["runs/index"][:]) == [0, 1, 2, 3]
    assert [s.decode() for s in f["runs/sweep/seed"][:]] == ["1", "1", "2", "2"]
    assert [s.decode() for s in f["runs/sweep/splitter.k"][:]] == ["1", "2", "1", "2"]
print("summary.h5: 4 runs, none missing")
EOF
fi

# ---- the same sweep locally, into another folder
"$BIN" sweep sweep.yaml --set output.dir="$WORK/local" >/dev/null 2>"$WORK/local.err" ||
  { tail -n 20 "$WORK/local.err"; fail "local sweep"; }
LOCAL=$WORK/local/sweep
[[ -f $LOCAL/summary.csv ]] || fail "no $LOCAL/summary.csv"

# ---- compare run for run
awk -F, '
  FNR == 1 { for (i = 1; i <= NF; ++i) col[$i] = i; next }
  FILENAME == ARGV[1] { so[$1] = $col["original_accuracy"]; sb[$1] = $col["obfuscated_accuracy"];
                        sw[$1] = $col["obfuscated_weights"]; key[$1] = $col["seed"] " " $col["splitter.k"]; next }
  { lo[$1] = $col["original_accuracy"]; lb[$1] = $col["obfuscated_accuracy"]; lw[$1] = $col["obfuscated_weights"] }
  END {
    printf "%-5s %-6s %-3s  %-10s %-10s  %-10s %-10s  %s\n", "run", "seed", "k", "orig slurm", "orig local",
           "obf slurm", "obf local", "weights slurm/local"
    bad = 0; n = 0
    for (r = 0; r in sb; ++r) {
      split(key[r], kv, " ")
      same = (so[r] == lo[r] && sb[r] == lb[r] && sw[r] == lw[r])
      if (!same) bad = 1
      ++n
      printf "%-5s %-6s %-3s  %-10s %-10s  %-10s %-10s  %s/%s %s\n", r, kv[1], kv[2], so[r], lo[r], sb[r], lb[r],
             sw[r], lw[r], same ? "same" : "DIFFERENT"
    }
    if (n != 4) { print "expected 4 runs, got " n; bad = 1 }
    exit bad
  }' "$DIR/summary.csv" "$LOCAL/summary.csv" || fail "Slurm and local results differ"

status=0
echo "PASSED: 4-run sweep on Slurm (array $array_job, collect $collect_job) equals the local sweep run for run"
