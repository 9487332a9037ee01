#!/usr/bin/python3
"""Trains the acceptance models of issue 17 on Fashion-MNIST in PyTorch and exports them to ONNX.

    nice -n 19 /usr/bin/python3 tools/train_onnx_models.py --out results/onnx-fmnist \
        [--models custom_cnn,squeezenet1_1,shufflenet_v2_x0_5] [--epochs 2]

Per model NAME: OUT/NAME.onnx (eval mode, opset 13, dynamic batch: the "folded" form of
tools/onnx_models.py), OUT/NAME.pt (state_dict), and a line in OUT/counts.json:
{"NAME": {"correct": N, "total": 10000, "accuracy": a, "epochs": E, "seconds": s}} with
PyTorch's test-set correct count (eval mode, argmax, inputs (u8/255 - 0.2860)/0.3530, 1x28x28).
`nnsplitter eval --weights OUT/NAME.onnx --dataset fashion-mnist` must give the same count
(tools/check_onnx_counts.sh runs that check).

Models: custom_cnn (tools/onnx_models.py's CustomCNN, width 16: a Fashion-MNIST CNN outside the
zoo), torchvision's squeezenet1_1 and shufflenet_v2_x0_5 with a 1-channel first convolution and
10 classes. Recipe: Adam lr 2e-3 with a cosine schedule over all steps, batch 128, no
augmentation, seed 0; a few minutes per epoch on 2 cores.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_models  # noqa: E402
from train_pytorch import DATA_DIR, evaluate, load_split, normalize  # noqa: E402


def train(name, epochs, out, data_dir, threads, seed):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tr_x, tr_y = load_split("train", data_dir)
    te_x, te_y = load_split("test", data_dir)
    model = onnx_models.build(name, 1, 10, 16)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    batch = 128
    steps_per_epoch = math.ceil(len(tr_y) / batch)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(tr_y), generator=gen).numpy()
        run_loss, seen = 0.0, 0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            x = normalize(tr_x[idx])
            y = torch.from_numpy(tr_y[idx])
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            run_loss += float(loss) * len(idx)
            seen += len(idx)
        correct, n = evaluate(model, te_x, te_y)
        print(f"{name} epoch {epoch + 1}: train loss {run_loss / seen:.4f}, test {correct}/{n} "
              f"({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    correct, n = evaluate(model, te_x, te_y)
    torch.save(model.state_dict(), os.path.join(out, name + ".pt"))
    onnx_models.export(model, os.path.join(out, name + ".onnx"), "folded", 1, 28)
    return {"correct": correct, "total": n, "accuracy": correct / n, "epochs": epochs,
            "seconds": round(time.time() - t0, 1), "torch": torch.__version__}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default="custom_cnn,squeezenet1_1,shufflenet_v2_x0_5")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=DATA_DIR)
    a = ap.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    counts_path = os.path.join(a.out, "counts.json")
    counts = json.load(open(counts_path)) if os.path.exists(counts_path) else {}
    for name in a.models.split(","):
        counts[name] = train(name, a.epochs, a.out, a.data, a.threads, a.seed)
        with open(counts_path, "w") as f:
            json.dump(counts, f, indent=1)
        print(json.dumps({name: counts[name]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
