#!/usr/bin/env bash
# Configures and builds nnsplitter (Release; CUDA compiled when nvcc is found).
#   tools/build.sh [PRESET]     PRESET: release (default), ci (warnings as errors), cpu, debug,
#                               sanitize (clang-14, ASan+UBSan, CPU only; see CMakePresets.json)
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
cmake --preset "$preset" "${generator[@]}" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
