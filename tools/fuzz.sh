#!/usr/bin/env bash
# Runs every libFuzzer harness (tests/fuzz/fuzz_*.cpp) for a bounded time.
#   tools/fuzz.sh [--ci] [--seconds N] [--no-build] [BUILD_DIR]
#     --ci         a short pass for CI: 10 s per harness, one per core (7 harnesses: ~40 s on 2)
#     --seconds N  seconds per harness (default 300; --ci sets 15)
#     --no-build   run the harnesses already built (tools/test.sh builds them beforehand)
#     BUILD_DIR    a Clang build with NNS_FUZZ=ON (default build-sanitize, the `sanitize`
#                  preset, configured here when missing); the harnesses are built when needed
# Each harness starts from its committed seeds (tests/fuzz/corpus/<name>, read only) and a
# dictionary (tests/fuzz/<name>.dict) when there is one; what it discovers goes to a temporary
# work corpus, removed at the end (the repository stays clean). Prints per harness the
# executions and the result; exits 1 on any crash, leak, timeout or out-of-memory, leaving the
# reproducer in BUILD_DIR/fuzz-artifacts/ and printing the command that replays it. A
# reproducer worth keeping goes into tests/fuzz/corpus/<name>/ with its fix: ctest then replays
# it (fuzz_corpus_<name>) in the sanitizer build.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=300
build=build-sanitize
build_harnesses=1
while (($#)); do
  case "$1" in
    --ci) seconds=10 ;;
    --no-build) build_harnesses=0 ;;
    --seconds) seconds="${2:?--seconds needs a value}"; shift ;;
    --seconds=*) seconds="${1#--seconds=}" ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) build="$1" ;;
  esac
  shift
done
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "fuzz.sh: --seconds must be a positive integer" >&2; exit 2; }

if ((build_harnesses)) && [[ ! -f "$build/CMakeCache.txt" ]]; then
  if [[ "$build" == build-sanitize ]] && grep -q '"sanitize"' CMakePresets.json; then
    cmake --preset sanitize
  else
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DNNS_CUDA=OFF -DNNS_FUZZ=ON \
      -DNNS_BENCH=OFF -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
      "-DCMAKE_CXX_FLAGS=-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
      "-DCMAKE_C_FLAGS=-fsanitize=address,undefined"
  fi
fi
grep -q '^NNS_FUZZ:BOOL=ON' "$build/CMakeCache.txt" ||
  { echo "fuzz.sh: $build is not configured with -DNNS_FUZZ=ON" >&2; exit 2; }
((build_harnesses)) && cmake --build "$build" --target fuzz_harnesses -j "$(nproc)"

artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d "${TMPDIR:-/tmp}/nns-fuzz-XXXXXX")
trap 'rm -rf "$work"' EXIT

# Per input: 10 s before it counts as a hang; 2 GB of RSS (and no single malloc above it)
# before it counts as unbounded allocation. Inputs up to 64 KB (CIFAR records are 3 KB, the
# other formats' interesting structure is much smaller).
common=(-timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 -detect_leaks=1)
export OMP_NUM_THREADS=1 ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=1:allocator_may_return_null=0"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-}:print_stacktrace=1:halt_on_error=1"

# One harness: its line of the table goes to $work/<name>.result, its exit status decides.
run_one() {
  local exe=$1 name seeds args log start rc execs result repro kind
  name=$(basename "$exe"); name=${name#fuzz_}
  seeds=tests/fuzz/corpus/$name
  mkdir -p "$work/$name"
  args=("${common[@]}" -max_total_time="$seconds" -artifact_prefix="$artifacts/$name-")
  [[ -f tests/fuzz/$name.dict ]] && args+=(-dict="tests/fuzz/$name.dict")
  log="$artifacts/$name.log"
  start=$SECONDS
  set +e
  nice -n 5 "$exe" "${args[@]}" "$work/$name" $([[ -d $seeds ]] && echo "$seeds") >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  if ((rc == 0)); then
    result=ok
  else
    repro=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed 's/Test unit written to //' || true)
    kind=$(grep -o -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|libFuzzer): [a-z-]+|runtime error|out-of-memory|timeout after|deadly signal|harness invariant failed|does not start with|ParseDictionaryFile: [a-z ]+' "$log" | head -1 || true)
    result="FAILED (${kind:-exit $rc}); log $log"
    [[ -n "$repro" ]] && result+="; reproducer $repro (replay: $exe $repro)"
  fi
  printf '%-18s %12s %8s  %s\n' "$name" "${execs:-?}" "$((SECONDS - start))" "$result" >"$work/$name.result"
  return "$rc"
}

# The harnesses run side by side, one per core (each is single-threaded).
failed=0
running=0
names=()
for exe in "$build"/tests/fuzz/fuzz_*; do
  [[ -x "$exe" && -f "$exe" ]] || continue
  n=$(basename "$exe"); names+=("${n#fuzz_}")
  if ((running >= $(nproc))); then
    wait -n || failed=1
    running=$((running - 1))
  fi
  run_one "$exe" &
  running=$((running + 1))
done
while ((running > 0)); do
  wait -n || failed=1
  running=$((running - 1))
done
printf '%-18s %12s %8s  %s\n' harness executions seconds result
for n in "${names[@]}"; do
  if [[ -f "$work/$n.result" ]]; then cat "$work/$n.result"
  else printf '%-18s %12s %8s  %s\n' "$n" "?" "?" "FAILED (no result: see $artifacts/$n.log)"; failed=1; fi
done
exit "$failed"
