#!/usr/bin/python3
"""Trains lenet5 or resnet20 on Fashion-MNIST in PyTorch with the zoo definitions of
tools/torch_models.py: the reference our C++ trainer is compared with.

    /usr/bin/python3 tools/train_pytorch.py --arch lenet5 --epochs 30 --out results/lenet5_fmnist

Recipe: inputs (u8/255 - 0.2860)/0.3530, 1x28x28, no augmentation; SGD momentum 0.9, nesterov,
lr 0.05, weight decay 5e-4 on every parameter, cosine schedule per iteration from lr to 0 over
all epochs; batch 128, shuffled each epoch (seeded); cross-entropy. Prints the test accuracy
after every epoch, writes OUT.pt (torch.save of the state_dict) and OUT.safetensors (same keys
and order, metadata: arch, in_channels, input_size, num_classes, width_mult, dataset, classes,
input_shape, norm_mean, norm_std, test_correct, test_accuracy, recipe, ...), and ends with one
JSON line {"correct": N, "total": 10000, "accuracy": a} (test set, eval mode).
Use /usr/bin/python3 (Debian's python3-torch).
"""
import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402
from safetensors_np import save_file  # noqa: E402

DATA_DIR = "/usr/share/datasets/fashion-mnist"
NORM_MEAN = 0.2860
NORM_STD = 0.3530
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _read_idx(base):
    """Reads an IDX file (base or base.gz) into a numpy array."""
    for path, opener in ((base + ".gz", gzip.open), (base, open)):
        if os.path.exists(path):
            with opener(path, "rb") as f:
                data = f.read()
            break
    else:
        raise FileNotFoundError(
            f"Fashion-MNIST file {base}[.gz] not found (looked in {os.path.dirname(base)}); "
            "install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or "
            "pass --data DIR holding the four IDX files")
    if len(data) < 4:
        raise ValueError(f"{path}: too short for an IDX header")
    zero, dtype_code, ndim = data[0] << 8 | data[1], data[2], data[3]
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    count = int(np.prod(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != count:
        raise ValueError(f"{path}: {body.size} bytes of data, dims {list(dims)} need {count}")
    return body.reshape(dims).copy()   # writable (torch.from_numpy warns on read-only arrays)


def load_split(split, data_dir=DATA_DIR):
    """Returns (images u8 [N, 28, 28], labels int64 [N]) of Fashion-MNIST's train or test split."""
    img_name, lbl_name = FILES[split]
    images = _read_idx(os.path.join(data_dir, img_name))
    labels = _read_idx(os.path.join(data_dir, lbl_name)).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{data_dir}: {split} images {images.shape} and labels {labels.shape} disagree")
    return images, labels


def normalize(u8, input_size=28):
    """u8 [N, H, W] -> float32 [N, 1, S, S] = (u8/255 - mean)/std; zero-pads the raw image to
    S x S first when S > H (VGG's 32x32 variant)."""
    x = torch.from_numpy(np.ascontiguousarray(u8))
    if input_size != x.shape[-1]:
        p = input_size - x.shape[-1]
        if p < 0 or p % 2:
            raise ValueError(f"cannot pad {x.shape[-1]}x{x.shape[-1]} images to {input_size}")
        x = F.pad(x, (p // 2, p // 2, p // 2, p // 2))
    x = x.to(torch.float32).unsqueeze(1)
    return (x / 255.0 - NORM_MEAN) / NORM_STD


@torch.no_grad()
def evaluate(model, images, labels, input_size=28, batch=1000):
    """Test accuracy in eval mode: returns (correct, total)."""
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        x = normalize(images[i:i + batch], input_size)
        pred = model(x).argmax(1)
        correct += int((pred == torch.from_numpy(labels[i:i + batch])).sum())
    return correct, len(labels)


def state_to_numpy(model):
    out = {}
    for k, v in model.state_dict().items():
        a = v.detach().cpu().contiguous().numpy()
        out[k] = a.astype(np.int64) if v.dtype == torch.int64 else a.astype(np.float32)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", required=True, choices=["lenet5", "resnet20"])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--out", required=True, help="output prefix: writes OUT.pt and OUT.safetensors")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--data", default=DATA_DIR, help="folder of the Fashion-MNIST IDX files")
    ap.add_argument("--limit-train", type=int, default=0, help="use only the first N training images (smoke tests)")
    a = ap.parse_args(argv)
    if a.epochs < 1 or a.batch < 1 or a.threads < 1:
        ap.error("--epochs, --batch and --threads must be >= 1")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    try:
        tr_x, tr_y = load_split("train", a.data)
        te_x, te_y = load_split("test", a.data)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if a.limit_train:
        tr_x, tr_y = tr_x[:a.limit_train], tr_y[:a.limit_train]
    input_size = 28
    model = torch_models.build(a.arch, 1, len(CLASSES), input_size, a.width_mult)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum, nesterov=True,
                          weight_decay=a.weight_decay)
    steps_per_epoch = math.ceil(len(tr_y) / a.batch)
    total_steps = a.epochs * steps_per_epoch
    gen = torch.Generator().manual_seed(a.seed)
    tr_y_t = torch.from_numpy(tr_y)
    print(f"# {a.arch}: {sum(p.numel() for p in model.parameters())} parameters, "
          f"{len(tr_y)} training images, {a.epochs} epochs x {steps_per_epoch} steps, "
          f"{torch.get_num_threads()} threads", flush=True)
    step = 0
    for epoch in range(a.epochs):
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(tr_y), generator=gen).numpy()
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(0, len(perm), a.batch):
            idx = perm[i:i + a.batch]
            x = normalize(tr_x[idx], input_size)
            y = tr_y_t[idx]
            lr = 0.5 * a.lr * (1.0 + math.cos(math.pi * step / total_steps))
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += float(loss) * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        c, n = evaluate(model, te_x, te_y, input_size)
        print(f"epoch {epoch + 1:3d}/{a.epochs}  train loss {loss_sum / seen:.4f}  train acc "
              f"{correct / seen:.4f}  test acc {c / n:.4f}  ({time.time() - t0:.1f} s)", flush=True)

    correct, total = evaluate(model, te_x, te_y, input_size)
    out = a.out[:-3] if a.out.endswith(".pt") else a.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch.save(model.state_dict(), out + ".pt")
    recipe = (f"pytorch SGD nesterov momentum {a.momentum} lr {a.lr} cosine/iter wd {a.weight_decay} "
              f"batch {a.batch} epochs {a.epochs} seed {a.seed} no augmentation")
    meta = {
        "arch": a.arch, "model": a.arch, "in_channels": "1", "input_size": str(input_size),
        "num_classes": str(len(CLASSES)), "width_mult": repr(float(a.width_mult)),
        "dataset": "fashion-mnist", "classes": ",".join(CLASSES), "input_shape": "[1, 28, 28]",
        "norm_mean": f"{NORM_MEAN:.4f}", "norm_std": f"{NORM_STD:.4f}",
        "test_correct": str(correct), "test_total": str(total), "test_accuracy": f"{correct / total:.4f}",
        "recipe": recipe, "framework": f"torch {torch.__version__}",
    }
    save_file(state_to_numpy(model), out + ".safetensors", meta)
    print(f"# wrote {out}.pt and {out}.safetensors", flush=True)
    print(json.dumps({"correct": correct, "total": total, "accuracy": correct / total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
