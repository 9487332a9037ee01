#!/usr/bin/env bash
# One command for the whole test suite on a fresh Debian machine (= CI, .ci/run). Phases:
#   1. setup     tools/setup.sh: the Debian packages (clang-14 and libFuzzer included)
#   2. build     the `ci` preset: Release, warnings as errors, CUDA compiled when nvcc exists
#   3. tests     every test (ctest)
#   4. blas      the BLAS-sensitive tests again with OPENBLAS_CORETYPE in the other state than
#                this shell's (unset if set, Haswell if unset), for that one command only, so
#                that a test passing on one OpenBLAS kernel only fails here: the kernel tests
#                (ctest label `kernels`) and the PyTorch fixture tests (`Models/ZooFixture.`)
#   5. sanitize  the `sanitize` preset (clang-14, ASan+UBSan, CPU only) built and its test suite
#                run, minus the tests in SANITIZE_EXCLUDE below; any report stops the test
#   6. fuzz      tools/fuzz.sh --ci build-sanitize: a short pass of every libFuzzer harness
# Prints the duration of each phase. Phases 5 and 6 run only with NNS_SANITIZE=1 for now: they
# have not yet had a complete run on the CI machine (to be made the default once they have).
set -euo pipefail
cd "$(dirname "$0")/.."

# Left out of the sanitizer run to bound its time: the end-to-end sweep and attack pipelines
# (whole `nnsplitter` runs over code the rest of the suite covers unit by unit), the Slurm tests
# (a real daemon, not our code's memory safety) and the Python tools (Python, not C++). A first
# choice: the sanitizer phase has not yet been timed on the CI machine. Also left out: the
# comparison tool's smoke test (Python driving whole runs) and the PyTorch fixture tests, whose
# tolerances are for the release build: clang -O1 sums in another order, and vgg16_bn's
# training-mode gradients then miss by 1.24e-6 against 1.0e-6 (numerics, not memory safety;
# they run in the main build under both OpenBLAS settings). And the keygen test under
# `ulimit -f 0`: the sanitizer build links LLVM's OpenMP runtime, which at load time, before
# main() can ignore SIGXFSZ, creates /dev/shm/__KMP_REGISTERED_LIB_<pid> and ftruncates it to
# 1 KB, so a zero limit kills the process there (the release build uses GCC's libgomp, which
# does not; the test runs there).
SANITIZE_EXCLUDE='^(slurm_sweep|python_tools|bench_compare_tiny)$|^(SweepCli|AttackCli|SweepSlurm)\.|^WriteLimits\.KeygenLeavesNoEmptyKeyBehind$|^Models/ZooFixture\.'

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

if [[ "${NNS_SANITIZE:-0}" != 1 ]]; then
  phase ""
  echo "test.sh: sanitizer build and fuzz pass skipped (NNS_SANITIZE=1 runs them)"
  exit 0
fi

phase sanitize-build
tools/build.sh sanitize

phase sanitize-tests
# halt_on_error: the first report fails the test (UBSan's is also made fatal at compile time,
# -fno-sanitize-recover); OMP_NUM_THREADS is set per test by CMake.
ASAN_OPTIONS="halt_on_error=1:detect_leaks=1" \
UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
  ctest --test-dir build-sanitize --output-on-failure -j 2 --timeout 900 -E "$SANITIZE_EXCLUDE"

if [[ -x tools/fuzz.sh ]]; then
  phase fuzz
  tools/fuzz.sh --ci build-sanitize
fi
phase ""
echo "test.sh: all phases passed in $SECONDS s"
