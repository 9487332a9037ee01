#!/usr/bin/env bash
# The main job on the default: set up, build, train a model on Fashion-MNIST on the CPU, and
# evaluate it.   tools/quickstart.sh [MODEL] [EPOCHS]   (default: lenet5, 8 epochs)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-lenet5}
epochs=${2:-8}
tools/setup.sh
tools/build.sh release
mkdir -p results
build/nnsplitter train --model "$model" --dataset fashion-mnist --epochs "$epochs" \
  --out "results/$model-fashion-mnist.safetensors"
build/nnsplitter eval --weights "results/$model-fashion-mnist.safetensors" --dataset fashion-mnist
