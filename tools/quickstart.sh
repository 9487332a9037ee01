#!/usr/bin/env bash
# The main job on the default: set up, build, and run the whole pipeline of
# configs/quickstart.yaml on Fashion-MNIST on the CPU (train a LeNet-5 victim, protect it,
# evaluate, attack), leaving results/quickstart/run.h5 and its plots in results/quickstart/run/.
#   tools/quickstart.sh [--set key=value ...]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
tools/build.sh release
build/nnsplitter run configs/quickstart.yaml "$@"
