#!/usr/bin/env bash
# GPU checks on a machine that has a CUDA driver, cuBLAS and cuDNN but not the project's Debian
# packages (HDF5, yaml-cpp, OpenBLAS, libsodium) and no network: for example a lent cloud GPU
# with a Python/CUDA image. Build here, pack, carry the pack there, run it there.
#
#   tools/gpu_prebuilt.sh pack BUILD_DIR PACK_DIR   # here: binaries + their non-system libraries
#                                                   # into PACK_DIR/pack.tar.xz
#   tools/gpu_prebuilt.sh run PACK_DIR [OUT_DIR]    # there: CUDA test suite, benchmarks, and an
#                                                   # end-to-end run on the GPU
#
# BUILD_DIR must be a CUDA build (NNS_CUDA=ON) for the target's architecture, e.g.
#   cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DNNS_CUDA=ON \
#         -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build-gpu --target nnsplitter test_cuda bench_cuda_conv
# Build on a glibc no newer than the target's. The CUDA libraries (cudart, cuBLAS, cuDNN) are
# NOT packed: `run` finds the target's own, in its linker cache, /usr/local/cuda, or the
# nvidia-* Python wheels of its python3. `run` copies a Fashion-MNIST folder found at
# PACK_DIR/data/fashion-mnist into reach of the end-to-end run; without it that run uses the
# generated dataset. Everything is logged under OUT_DIR (default PACK_DIR/out); the last lines
# printed are a summary. Exit status: non-zero when a test, a benchmark or the end-to-end run fails.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

die() { echo "gpu_prebuilt: $*" >&2; exit 2; }

pack() {
  local build=$1 dir=$2
  for f in nnsplitter tests/test_cuda bench/bench_cuda_conv; do
    [[ -x $build/$f ]] || die "$build/$f missing: build the targets nnsplitter test_cuda bench_cuda_conv"
  done
  grep -q "NNS_CUDA:BOOL=ON" "$build/CMakeCache.txt" || die "$build is not a CUDA build (NNS_CUDA=ON)"
  local stage
  stage=$(mktemp -d) || exit 1
  mkdir -p "$stage/bin" "$stage/lib" "$dir"
  cp "$build/nnsplitter" "$build/tests/test_cuda" "$build/bench/bench_cuda_conv" "$stage/bin/"
  # Every shared library the binaries resolve, except glibc's, the C++ runtime (the target's is
  # newer) and CUDA's (the target's own must match its driver).
  ldd "$stage"/bin/* | awk '/=>/ {print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so|ld-linux|libcuda|libcudart|libcublas|libcudnn' |
    while read -r lib; do cp -L "$lib" "$stage/lib/"; done
  tar -C "$stage" -cJf "$dir/pack.tar.xz.tmp" bin lib && mv "$dir/pack.tar.xz.tmp" "$dir/pack.tar.xz"
  rm -rf "$stage"
  echo "gpu_prebuilt: $(du -h "$dir/pack.tar.xz" | cut -f1) in $dir/pack.tar.xz"
}

run() {
  local dir=$1 out=${2:-$1/out}
  [[ -f $dir/pack.tar.xz ]] || die "$dir/pack.tar.xz missing (make it with: $0 pack BUILD_DIR $dir)"
  mkdir -p "$out"
  local root
  root=$(mktemp -d) || exit 1
  tar -C "$root" -xJf "$dir/pack.tar.xz" || exit 1
  local bin=$root/bin
  # CUDA libraries of the target machine.
  local cudalibs="$root/lib"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/lib; do [[ -d $d ]] && cudalibs+=":$d"; done
  if command -v python3 >/dev/null; then
    local site
    site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)
    for d in "$site"/nvidia/*/lib; do [[ -d $d ]] && cudalibs+=":$d"; done
  fi
  export LD_LIBRARY_PATH="$cudalibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  local status=0
  declare -a summary=()
  rec() { summary+=("$(printf '%-26s %s' "$1" "$2")"); }
  stamp() { date +%s; }

  echo "==== machine"
  nvidia-smi -L 2>&1 | head -2
  if ! ldd "$bin/test_cuda" "$bin/nnsplitter" | grep "not found"; then rec "libraries" "all resolved"
  else rec "libraries" "MISSING (see above)"; status=1; fi

  echo "==== CUDA test suite (test_cuda)"
  local t0
  t0=$(stamp)
  timeout 240 "$bin/test_cuda" --gtest_brief=1 >"$out/test_cuda.log" 2>&1
  local rc=$?
  tail -15 "$out/test_cuda.log"
  local passed skipped failed
  passed=$(grep -oE '\[  PASSED  \] [0-9]+' "$out/test_cuda.log" | grep -oE '[0-9]+$')
  skipped=$(grep -oE '\[  SKIPPED \] [0-9]+ test' "$out/test_cuda.log" | grep -oE '[0-9]+' | head -1)
  failed=$(grep -oE '[0-9]+ FAILED TEST' "$out/test_cuda.log" | grep -oE '^[0-9]+')
  rec "test_cuda" "rc $rc: ${passed:-0} passed, ${skipped:-0} skipped, ${failed:-0} failed ($(($(stamp) - t0)) s)"
  ((rc == 0)) || status=1
  grep -m3 "no CUDA device" "$out/test_cuda.log" && { rec "CUDA device" "NOT USABLE"; status=1; }

  for engine in native cudnn; do
    echo "==== nnsplitter bench --device cuda --conv-engine $engine"
    local gemm=native
    [[ $engine == cudnn ]] && gemm=cublas
    if timeout 100 "$bin/nnsplitter" bench --device cuda --conv-engine "$engine" --gemm-engine "$gemm" \
         --models resnet18,resnet20,lenet5,vgg11_bn,mobilenet_v2 --min-time 1.5 \
         --out "$out/bench_$engine.json" >"$out/bench_$engine.log" 2>&1; then
      rec "bench cuda $engine" "ok"
    else
      rec "bench cuda $engine" "FAILED"; status=1
    fi
    cat "$out/bench_$engine.log"
  done

  echo "==== bench_cuda_conv"
  timeout 60 "$bin/bench_cuda_conv" >"$out/bench_cuda_conv.log" 2>&1 && rec "bench_cuda_conv" "ok" ||
    { rec "bench_cuda_conv" "FAILED"; status=1; }
  tail -30 "$out/bench_cuda_conv.log"

  echo "==== PyTorch on the same GPU"
  if python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    timeout 90 python3 tools/bench_pytorch.py --device cuda --min-time 1.5 \
      --only lenet5 resnet20 resnet18 >"$out/bench_torch.log" 2>&1 && rec "bench pytorch cuda" "ok" ||
      rec "bench pytorch cuda" "failed (not counted)"
    cat "$out/bench_torch.log"
  else
    rec "bench pytorch cuda" "skipped (no torch with CUDA)"
  fi

  echo "==== end to end on the GPU: nnsplitter run configs/quickstart.yaml --set device=cuda"
  local data="synthetic"
  declare -a extra=(--set splitter.val_size=500)  # the generated set has 2000 training images
  if [[ -d $dir/data/fashion-mnist ]]; then
    export NNS_DATA_DIR=$dir/data; data="fashion-mnist"; extra=()
  fi
  t0=$(stamp)
  if timeout 180 "$bin/nnsplitter" run configs/quickstart.yaml --set device=cuda \
       --set dataset.name="$data" --set output.dir="$out/results" --set output.plots=false \
       "${extra[@]}" >"$out/e2e.log" 2>&1; then
    rec "end to end ($data)" "ok ($(($(stamp) - t0)) s)"
  else
    rec "end to end ($data)" "FAILED ($(($(stamp) - t0)) s)"; status=1
  fi
  grep -vE '^\s*\[|ETA' "$out/e2e.log" | tail -25

  echo "==== summary"
  for s in "${summary[@]}"; do echo "$s"; done
  ((status == 0)) && echo "gpu_prebuilt: OK" || echo "gpu_prebuilt: FAILED"
  rm -rf "$root"
  return $status
}

case ${1:-} in
  pack) [[ $# -eq 3 ]] || die "usage: $0 pack BUILD_DIR PACK_DIR"; pack "$2" "$3" ;;
  run) [[ $# -ge 2 ]] || die "usage: $0 run PACK_DIR [OUT_DIR]"; run "$2" "${3:-}" ;;
  *) sed -n '2,20p' "$0"; exit 2 ;;
esac
