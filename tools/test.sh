#!/usr/bin/env bash
# One command for the whole test suite on a fresh Debian machine (= CI, .ci/run). Phases:
#   1. setup     tools/setup.sh: the Debian packages (clang-14 and libFuzzer included)
#   2. build     the `ci` preset: Release, warnings as errors, CUDA compiled when nvcc exists
#   3. tests     every test (ctest)
#   4. blas      the BLAS-sensitive tests again with OPENBLAS_CORETYPE in the other state than
#                this shell's (unset if set, Haswell if unset), for that one command only, so
#                that a test passing on one OpenBLAS kernel only fails here: the kernel tests
#                (ctest label `kernels`) and the PyTorch fixture tests (`Models/ZooFixture.`)
#   5. sanitize  the `sanitize` preset (clang-14, ASan+UBSan, CPU only): the test programs in
#                SANITIZE_PROGRAMS below built and run, and every fuzz corpus replayed; any
#                report fails the phase
#   6. fuzz      tools/fuzz.sh --ci: a short pass of every libFuzzer harness (10 s each)
# Prints the duration of each phase. NNS_SANITIZE=0 skips phases 5 and 6 (a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."

# The sanitizer phase is a named part of the suite, chosen to keep the whole of CI under 30
# minutes on 2 cores: the test programs test_kernels, test_core, test_datasets and test_rl
# (every kernel, tensor, model, optimiser, splitter method, secrets and safetensors reader,
# dataset reader and controller test) and every fuzz harness with its committed corpus. Each
# program runs as one process (under ASan a process start costs ~0.3 s, which ctest would pay
# per test: 900 times). Left out: test_experiments and test_crash (end-to-end runs of the
# `nnsplitter` binary, ~870 s under ASan, whose parsers the fuzz harnesses cover), and in
# test_core the two SecretsCli tests (they run the binary, which this build does not make) and
# the PyTorch fixture tests, whose tolerances are for the release build: clang -O1 sums in
# another order, and vgg16_bn's training-mode gradients then miss by 1.24e-6 against 1.0e-6
# (numerics, not memory safety; they run in the main build under both OpenBLAS settings).
SANITIZE_PROGRAMS=(test_kernels test_core test_datasets test_rl)
SANITIZE_FILTER='-SecretsCli.*:Models/ZooFixture.*'

phase_start=$SECONDS
phase() {  # phase NAME: prints how long the previous phase took, then NAME's banner
  if [[ -n "${phase_name:-}" ]]; then
    echo "test.sh: phase '$phase_name' took $((SECONDS - phase_start)) s (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  fi
  phase_name=$1
  phase_start=$SECONDS
  [[ -n "$phase_name" ]] && echo "test.sh: === $phase_name ==="
  return 0
}

phase setup
tools/setup.sh

phase build
tools/build.sh ci

phase tests
ctest --test-dir build --output-on-failure -j 2 --timeout 900

phase blas
blas_tests=(--test-dir build --output-on-failure -j 2 --timeout 900)
if [[ -n "${OPENBLAS_CORETYPE+x}" ]]; then
  echo "test.sh: again with OPENBLAS_CORETYPE unset (this shell has '$OPENBLAS_CORETYPE')"
  blas_run=(env -u OPENBLAS_CORETYPE)
else
  echo "test.sh: again with OPENBLAS_CORETYPE=Haswell (unset in this shell)"
  blas_run=(env OPENBLAS_CORETYPE=Haswell)
fi
"${blas_run[@]}" ctest "${blas_tests[@]}" -L '^kernels$'
"${blas_run[@]}" ctest "${blas_tests[@]}" -R '^Models/ZooFixture\.'

if [[ "${NNS_SANITIZE:-1}" == 0 ]]; then
  phase ""
  echo "test.sh: sanitizer build and fuzz pass skipped (NNS_SANITIZE=0)"
  exit 0
fi

phase sanitize-build
cmake --preset sanitize >/dev/null
cmake --build build-sanitize -j "$(nproc)" --target "${SANITIZE_PROGRAMS[@]}" fuzz_harnesses

phase sanitize-tests
# halt_on_error: the first report fails the program (UBSan's is also made fatal at compile
# time, -fno-sanitize-recover). The programs run side by side, one per core.
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
san_logs=$(mktemp -d "${TMPDIR:-/tmp}/nns-sanitize-XXXXXX")
run_sanitized() {  # run_sanitized PROGRAM: output and exit status in $san_logs/PROGRAM.{log,rc}
  local rc=0
  (cd build-sanitize/tests && OMP_NUM_THREADS=2 "./$1" --gtest_filter="$SANITIZE_FILTER" \
     --gtest_brief=1 >"$san_logs/$1.log" 2>&1) || rc=$?
  echo "$rc" >"$san_logs/$1.rc"
}
for p in "${SANITIZE_PROGRAMS[@]}"; do
  while (( $(jobs -rp | wc -l) >= $(nproc) )); do wait -n || true; done
  run_sanitized "$p" &
done
wait
san_failed=0
for p in "${SANITIZE_PROGRAMS[@]}"; do
  if [[ "$(cat "$san_logs/$p.rc")" == 0 ]]; then
    echo "test.sh: $p: $(grep -E '^\[  PASSED  \]' "$san_logs/$p.log" | tail -1) under ASan+UBSan"
  else
    san_failed=1
    echo "test.sh: $p FAILED under ASan+UBSan (exit $(cat "$san_logs/$p.rc")); its output:"
    tail -n 80 "$san_logs/$p.log"
  fi
done
rm -rf "$san_logs"
ctest --test-dir build-sanitize --output-on-failure -j 2 --timeout 900 -R '^fuzz_corpus_' || san_failed=1
((san_failed == 0)) || { echo "test.sh: the sanitizer phase failed"; exit 1; }

phase fuzz
tools/fuzz.sh --ci --no-build build-sanitize
phase ""
echo "test.sh: all phases passed in $SECONDS s"
