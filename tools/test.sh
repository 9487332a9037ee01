#!/usr/bin/env bash
# One command for the whole test suite on a fresh Debian machine: installs the packages,
# builds with warnings as errors (CUDA compiled when nvcc exists), runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh ci
cd build
ctest --output-on-failure -j 2 --timeout 900
