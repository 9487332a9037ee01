#!/usr/bin/python3
"""Evaluates a weights file on the Fashion-MNIST test set with the PyTorch zoo definitions.

    /usr/bin/python3 tools/eval_pytorch.py --arch lenet5 --weights model.safetensors

Loads the file into tools/torch_models.py's definition with load_state_dict(strict=True) (so a
missing, extra or mis-shaped key is an error) and prints one JSON line
{"correct": N, "total": 10000, "accuracy": a} (eval mode, argmax, first index on ties).
in_channels, input_size, num_classes and width_mult come from the file's metadata when present
(defaults 1, 28, 10, 1.0; --width-mult overrides); input_size 32 zero-pads the 28x28 images
before normalisation. Used to check that models our engine trained, obfuscated, restored or
converted evaluate identically in PyTorch. .pt/.pth state_dicts are accepted too.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402
from safetensors_np import load_file  # noqa: E402
from train_pytorch import DATA_DIR, evaluate, load_split  # noqa: E402


def load_weights(path):
    """Returns (state_dict of torch tensors, metadata dict)."""
    if path.endswith((".pt", ".pth")):
        sd = torch.load(path, map_location="cpu")
        if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
            sd = sd["state_dict"]
        return dict(sd), {}
    tensors, meta = load_file(path)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, meta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=list(torch_models.ARCHS))
    ap.add_argument("--weights", required=True, help="FILE.safetensors (or .pt/.pth state_dict)")
    ap.add_argument("--width-mult", type=float, default=None, help="override the metadata's width_mult")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=DATA_DIR, help="folder of the Fashion-MNIST IDX files")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        sd, meta = load_weights(a.weights)
    except (OSError, ValueError) as e:
        print(f"error: {a.weights}: {e}", file=sys.stderr)
        return 1
    if "arch" in meta and meta["arch"] != a.arch:
        print(f"error: {a.weights} holds a '{meta['arch']}' model, not '{a.arch}'", file=sys.stderr)
        return 1
    try:
        in_channels = int(meta.get("in_channels", 1))
        input_size = int(meta.get("input_size", 32 if a.arch.startswith("vgg") else 28))
        num_classes = int(meta.get("num_classes", 10))
        width_mult = a.width_mult if a.width_mult is not None else float(meta.get("width_mult", 1.0))
    except ValueError as e:
        print(f"error: {a.weights}: bad metadata: {e}", file=sys.stderr)
        return 1
    if in_channels != 1:
        print(f"error: {a.weights}: {in_channels} input channels; Fashion-MNIST has 1", file=sys.stderr)
        return 1
    model = torch_models.build(a.arch, in_channels, num_classes, input_size, width_mult)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        print(f"error: {a.weights} does not match the PyTorch {a.arch} definition:\n{e}", file=sys.stderr)
        return 1
    try:
        images, labels = load_split("test", a.data)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    correct, total = evaluate(model, images, labels, input_size)
    print(json.dumps({"correct": correct, "total": total, "accuracy": correct / total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
