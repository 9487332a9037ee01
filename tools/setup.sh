#!/usr/bin/env bash
# Installs every Debian package nnsplitter needs. Idempotent; run as root or through sudo.
#   tools/setup.sh            install what is missing
#   tools/setup.sh --check    only report what is missing (exit 1 if anything is)
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libopenblas-openmp-dev libopenblas0-openmp
  libyaml-cpp-dev libhdf5-dev nlohmann-json3-dev libsodium-dev libcli11-dev
  libspdlog-dev libfmt-dev zlib1g-dev
  libdnnl-dev                                            # the CPU engine's oneDNN convolutions
  linux-perf                                             # page faults and profiles (bench notes)
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev libfuzzer-14-dev libomp-14-dev   # the `sanitize` preset, fuzzing
  libonnx-dev libprotobuf-dev protobuf-compiler   # ONNX models (core/io/onnx.cpp)
  python3 python3-numpy python3-torch python3-h5py python3-matplotlib
  python3-torchvision python3-onnx                 # ONNX test fixtures (tools/make_onnx_fixtures.py)
  dataset-fashion-mnist
  slurm-wlm munge
  clang-14 libfuzzer-14-dev libclang-rt-14-dev libomp-14-dev
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [[ "${1:-}" == "--check" ]]; then
  if ((${#missing[@]})); then echo "missing: ${missing[*]}"; exit 1; fi
  echo "all packages present"; exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup.sh: run as root or install sudo" >&2; exit 1; }
  SUDO="sudo"
fi

if ((${#missing[@]})); then
  echo "setup.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's torch and numpy use whatever libblas.so.3 is selected: pick OpenBLAS's OpenMP build
# (the reference BLAS runs matrix products ~30x slower, and the pthread build oversubscribes
# cores when mixed with OpenMP).
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for alt in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  target=/usr/lib/$arch/openblas-openmp/$alt
  name=$alt-$arch
  if [[ -e $target ]] && update-alternatives --list "$name" 2>/dev/null | grep -qx "$target"; then
    $SUDO update-alternatives --set "$name" "$target" >/dev/null
  fi
done
echo "setup.sh: done"
