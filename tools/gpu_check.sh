#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU: configure (sm_90, warnings as errors), build
# everything, run the whole test suite (CPU and CUDA tests), benchmark the CUDA backend with
# both convolution engines, benchmark PyTorch on CUDA when it is available, and print a summary
# table. Exits non-zero when the configure, the build, any test or a CUDA benchmark fails.
#
#   tools/gpu_check.sh [BUILD_DIR]      (default: build-gpu)
#
# Needs the Debian packages of tools/setup.sh (it installs them when apt works). For a GPU
# machine without them and without network, build elsewhere and use tools/gpu_prebuilt.sh.
#
# Environment: NNS_CUDA_ARCH (default 90), JOBS (default: all cores), BENCH_MODELS
# (default resnet18,resnet20,lenet5), BENCH_MIN_TIME (seconds per measurement, default 3).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
build=${1:-build-gpu}
arch=${NNS_CUDA_ARCH:-90}
jobs=${JOBS:-$(nproc)}
models=${BENCH_MODELS:-resnet18,resnet20,lenet5}
min_time=${BENCH_MIN_TIME:-3}
logdir=$build/gpu_check
status=0
declare -a summary=()

note() { printf '\n==== %s\n' "$*"; }
record() { summary+=("$(printf '%-22s %s' "$1" "$2")"); }
elapsed() { echo "$(($(date +%s) - $1)) s"; }

# ---- machine -----------------------------------------------------------------------------
note "machine"
if command -v nvidia-smi >/dev/null; then
  gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
  nvidia-smi -L
else
  gpu="no nvidia-smi"
fi
echo "gpu: $gpu; cores: $(nproc); nvcc: $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1)"

# ---- packages: install only when something is missing and apt can run ---------------------
note "packages"
if tools/setup.sh --check; then
  record "packages" "present"
else
  can_apt=0
  if command -v apt-get >/dev/null; then
    if [[ $(id -u) -eq 0 ]] || sudo -n true 2>/dev/null; then can_apt=1; fi
  fi
  if ((can_apt)) && timeout 900 tools/setup.sh; then
    record "packages" "installed by tools/setup.sh"
  else
    echo "gpu_check: packages missing and apt unusable (or no network); continuing with what is here"
    record "packages" "some missing (continued)"
  fi
fi

# ---- configure and build ------------------------------------------------------------------
mkdir -p "$build"
note "configure ($build, sm_$arch, -DNNS_WERROR=ON)"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
[[ -f $build/CMakeCache.txt ]] && generator=()  # keep the generator of an existing tree
cmake_extra=()
# CMake < 3.26 does not know nvcc's C++20 flag (CMAKE_CUDA_STANDARD 20 fails to generate).
cmake_ver=$(cmake --version | head -1 | awk '{print $3}')
if [[ $(printf '%s\n3.26\n' "$cmake_ver" | sort -V | head -1) != 3.26 ]]; then
  cmake_extra+=(-DCMAKE_CUDA20_STANDARD_COMPILE_OPTION=-std=c++20
                -DCMAKE_CUDA20_EXTENSION_COMPILE_OPTION=-std=c++20)
fi
mkdir -p "$logdir"
t0=$(date +%s)
if cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DNNS_CUDA=ON \
     -DNNS_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" "${cmake_extra[@]}" \
     >"$logdir/configure.log" 2>&1; then
  grep -E "nnsplitter|CUDA" "$logdir/configure.log" | head -5
  record "configure" "ok"
else
  tail -30 "$logdir/configure.log"
  record "configure" "FAILED (see $logdir/configure.log)"
  status=1
fi

built=0
if ((status == 0)); then
  note "build (-j $jobs)"
  t0=$(date +%s)
  if cmake --build "$build" -j "$jobs" >"$logdir/build.log" 2>&1; then
    built=1
    record "build" "ok ($(elapsed "$t0"))"
  else
    grep -E "error|Error" "$logdir/build.log" | head -40
    record "build" "FAILED (see $logdir/build.log)"
    status=1
  fi
fi

# ---- tests --------------------------------------------------------------------------------
if ((built)); then
  note "ctest (whole suite)"
  t0=$(date +%s)
  ctest --test-dir "$build" --output-on-failure -j "$(( (jobs + 1) / 2 ))" --timeout 900 \
    >"$logdir/ctest.log" 2>&1
  ctest_rc=$?
  tail -25 "$logdir/ctest.log"
  line=$(grep -E "tests passed" "$logdir/ctest.log" | tail -1)
  # Tests that skipped inside gtest (e.g. CUDA tests without a usable device) pass for ctest.
  skipped=$(grep -c "\[  SKIPPED \] 1 test" "$build/Testing/Temporary/LastTest.log" 2>/dev/null)
  if ((ctest_rc == 0)); then
    record "ctest" "ok: ${line:-?} ($(elapsed "$t0")); ${skipped:-0} skipped inside gtest"
  else
    record "ctest" "FAILED: ${line:-ctest rc $ctest_rc} (see $logdir/ctest.log)"
    grep -E "^\s*[0-9]+ - .*\((Failed|Timeout|SEGFAULT|Subprocess)" "$logdir/ctest.log" | head -20
    status=1
  fi
  if ((${skipped:-0} > 0)) && grep -q "no CUDA device" "$build/Testing/Temporary/LastTest.log"; then
    echo "gpu_check: WARNING: CUDA tests skipped: $(grep -m1 -o 'no CUDA device: .*' \
      "$build/Testing/Temporary/LastTest.log")"
  fi
fi

# ---- benchmarks ---------------------------------------------------------------------------
declare -A bench_json=()
if ((built)); then
  for engine in native cudnn; do
    note "nnsplitter bench --device cuda --conv-engine $engine"
    out="$logdir/bench_$engine.json"
    rm -f "$out"
    if "$build/nnsplitter" bench --device cuda --models "$models" --conv-engine "$engine" \
         --min-time "$min_time" --out "$out" 2>&1 | tee "$logdir/bench_$engine.log"; then
      record "bench cuda $engine" "ok"
      bench_json[$engine]=$out
    else
      record "bench cuda $engine" "FAILED (see $logdir/bench_$engine.log)"
      status=1
    fi
  done
fi

note "PyTorch on CUDA (tools/bench_pytorch.py)"
torch_json="$logdir/bench_torch.json"
rm -f "$torch_json"
# The first Python whose torch sees a GPU (Debian's, or a CUDA image's own python3).
torch_py=""
for py in /usr/bin/python3 python3; do
  if "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    torch_py=$py
    break
  fi
done
if [[ -z $torch_py ]]; then
  echo "skipped: no python3 with a CUDA-enabled torch"
  record "bench pytorch cuda" "skipped (no torch with CUDA)"
else
  only=${models//,/ }
  # shellcheck disable=SC2086
  if "$torch_py" tools/bench_pytorch.py --device cuda --json --min-time "$min_time" \
       --only $only >"$torch_json" 2>"$logdir/bench_torch.log"; then
    record "bench pytorch cuda" "ok"
  else
    tail -5 "$logdir/bench_torch.log"
    record "bench pytorch cuda" "failed (see $logdir/bench_torch.log; not counted)"
    rm -f "$torch_json"
  fi
fi

# ---- summary ------------------------------------------------------------------------------
note "summary ($gpu)"
for s in "${summary[@]}"; do echo "$s"; done
if command -v python3 >/dev/null; then
  python3 - "${bench_json[native]:-}" "${bench_json[cudnn]:-}" "$torch_json" <<'EOF'
import json, os, sys
def load(p):
    try:
        return json.load(open(p)) if p and os.path.exists(p) else None
    except Exception:
        return None
native, cudnn, torch = (load(p) for p in sys.argv[1:4])
rows = {}
for tag, doc in (("native", native), ("cudnn", cudnn)):
    for r in (doc or {}).get("results", []):
        row = rows.setdefault(r["model"], {"input": r.get("input", "")})
        row[tag] = (r.get("inference_images_per_second"), r.get("training_images_per_second"))
for r in (torch or {}).get("results", []):
    name = r.get("arch") or r.get("model")
    if name:
        rows.setdefault(name, {"input": ""})["torch"] = (r.get("infer_images_per_s"),
                                                          r.get("train_images_per_s"))
if not rows:
    sys.exit(0)
fmt = lambda v: f"{v:12.0f}" if isinstance(v, (int, float)) else f"{'-':>12}"
print()
print(f"{'images/s (batch 128)':<22}" + "".join(f"{h:>12}" for h in (
    "native inf", "native trn", "cudnn inf", "cudnn trn", "torch inf", "torch trn")))
for name, row in rows.items():
    cells = []
    for tag in ("native", "cudnn", "torch"):
        inf, trn = row.get(tag, (None, None))
        cells += [fmt(inf), fmt(trn)]
    print(f"{name + ' ' + row['input']:<22}" + "".join(cells))
EOF
fi
echo
if ((status == 0)); then echo "gpu_check: OK"; else echo "gpu_check: FAILED"; fi
exit $status
