#!/usr/bin/python3
"""Writes tests/fixtures/<arch>.safetensors: PyTorch reference forward/backward dumps of every
zoo model at a small size, for the C++ engine's model tests.

    /usr/bin/python3 tools/make_fixtures.py [--out tests/fixtures] [--only ARCH ...]

Per file (tensor keys, in file order):
    input                       F32 [B, C, H, W]   randn
    labels                      I64 [B]            in [0, num_classes)
    state.<key>                 every state_dict entry before any step (F32; I64 num_batches_tracked)
    eval.logits                 F32 [B, classes]   model.eval()
    eval.loss                   F32 []             mean cross-entropy
    eval.grad.<param>           F32                d eval.loss / d param, every named parameter
    eval.grad_input             F32 [B, C, H, W]   d eval.loss / d input
    train.logits, train.loss, train.grad.<param>, train.grad_input
                                same, in train mode (BatchNorm uses batch statistics; every
                                nn.Dropout kept in eval mode so the dump is deterministic),
                                starting again from the `state.*` values
    train.state_after.<bn>.running_mean / .running_var / .num_batches_tracked
                                every BatchNorm buffer after that one train-mode forward
__metadata__ (strings): arch, in_channels, input_size, num_classes, width_mult, batch, seed,
torch_version, and "meta" = the same fields as one JSON object.

The models start from PyTorch's default initialisation (torch.manual_seed(0)); then every
BatchNorm gets a random affine (weight U(0.5, 1.5), bias 0.2*randn), running statistics
calibrated on random data (so eval-mode activations keep a sane scale in deep nets) and then
perturbed (mean + 0.1*sqrt(var)*randn, var * exp(0.2*randn)), and num_batches_tracked = 5,
so that eval mode differs from train mode and the BN affine is non-trivial.
Computed in float32 with mkldnn disabled and deterministic algorithms.

Conditioning. A fixture is only a test if any correct float32 implementation lands within the
C++ test's tolerance (1e-4 of the largest reference value + 1e-6) whatever its summation order:
the OpenBLAS kernel picked at run time (OPENBLAS_CORETYPE=Haswell, SkylakeX, Zen) changes it.
Training-mode BatchNorm over few values per channel (N*H*W) breaks that: its backward divides
by the batch standard deviation of those values, and with m values the chance that a channel's
batch variance falls below a tenth of its expected value is 4e-2 at m = 4 and 4e-6 at m = 16
(chi-square, m-1 degrees of freedom), so among a model's hundreds of BatchNorm channels some are
nearly degenerate and amplify rounding differences, and a ReLU/ReLU6 kink flipped by rounding
moves about 1/m of a channel's gradient. The old mobilenet_v2 fixture (16x16, batch 4: 16
values per channel in its last stage) failed on Haswell and Zen kernels with every gradient
2-8% off. So every BatchNorm must see at least MIN_BN_VALUES values per channel in training mode
(checked with forward hooks before a file is written).
"""
import argparse
import copy
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402
from safetensors_np import save_file  # noqa: E402

# (arch, in_channels, input_size, width_mult, batch). The widths are chosen so that each file
# stays small (about 12 bytes per parameter: state + two gradients); powers of two keep
# int(c * width_mult) exact in float and double arithmetic alike. Input size and batch are the
# smallest that give every training-mode BatchNorm MIN_BN_VALUES values per channel (see the
# module docstring): resnet18/34 and the VGGs see 2x2 maps in their last stage at 32x32, and
# mobilenet_v2 (CIFAR strides) 2x2 at 16x16, hence batch 16. vgg16_bn uses 64x64, batch 4 (the
# same 64 values): at 32x32, batch 16 its C++ training-mode gradients were 1-4% off on every
# OpenBLAS kernel, most likely one activation sitting on a ReLU or max-pool kink; the floor
# does not rule that out, so a new fixture must pass the C++ test under OPENBLAS_CORETYPE=Haswell,
# SkylakeX, Zen and unset before it is committed. lenet5 has no
# width knob and mobilenet_v2 keeps torchvision's last_channel 1280, so those two are the
# largest files.
FIXTURES = [
    ("lenet5", 1, 28, 1.0, 4),
    ("resnet20", 1, 28, 0.25, 4),
    ("resnet18", 3, 32, 0.03125, 16),
    ("resnet34", 3, 32, 0.03125, 16),
    ("vgg11_bn", 3, 32, 0.03125, 16),
    ("vgg13_bn", 3, 32, 0.03125, 16),
    ("vgg16_bn", 3, 64, 0.03125, 4),
    ("vgg19_bn", 3, 32, 0.03125, 16),
    ("mobilenet_v2", 3, 16, 0.0625, 16),
]
# Values per channel every BatchNorm must see in training mode (N*H*W). The chance that a
# channel's batch variance falls under 1/10 of its expected value (chi-square, m-1 degrees of
# freedom) is 4e-2 at m = 4, 4e-6 at 16 and 5e-21 at 64: with ~1000 BatchNorm channels per
# model, only the last is negligible.
MIN_BN_VALUES = 64
NUM_CLASSES = 10
SEED = 0
NUM_BATCHES_TRACKED = 5


def _np(t):
    return t.detach().cpu().contiguous().numpy().copy()


def _bn_modules(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _set_dropout_eval(model):
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()


def _perturb_bn(model, in_channels, input_size):
    bns = _bn_modules(model)
    with torch.no_grad():
        for _, m in bns:
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
        # Calibrate running statistics on random data (cumulative average over 2 batches).
        saved = [m.momentum for _, m in bns]
        for _, m in bns:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        _set_dropout_eval(model)
        for _ in range(2):
            model(torch.randn(8, in_channels, input_size, input_size))
        for (_, m), mom in zip(bns, saved):
            m.momentum = mom
            m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn_like(m.running_mean))
            m.running_var.mul_(torch.exp(0.2 * torch.randn_like(m.running_var)))
            m.num_batches_tracked.fill_(NUM_BATCHES_TRACKED)


def _check_bn_values(model, x):
    """Raises unless every BatchNorm sees MIN_BN_VALUES values per channel in training mode."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, _o, n=n: seen.append((n, inp[0].numel() // inp[0].shape[1])))
             for n, m in _bn_modules(model)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    few = [f"{n} ({v})" for n, v in seen if v < MIN_BN_VALUES]
    if few:
        raise RuntimeError(f"BatchNorm over fewer than {MIN_BN_VALUES} values per channel (N*H*W) in "
                           f"training mode: {', '.join(few[:4])}: raise the input size or the batch")


def _pass(model, x, labels, prefix, out):
    """One forward + backward; stores logits, loss, parameter gradients and the input gradient."""
    model.zero_grad(set_to_none=True)
    xin = x.clone().requires_grad_(True)
    logits = model(xin)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out[f"{prefix}.logits"] = _np(logits)
    out[f"{prefix}.loss"] = _np(loss).astype(np.float32).reshape(())
    for name, p in model.named_parameters():
        if p.grad is None:
            raise RuntimeError(f"{prefix}: parameter {name} received no gradient")
        out[f"{prefix}.grad.{name}"] = _np(p.grad)
    out[f"{prefix}.grad_input"] = _np(xin.grad)


def make_fixture(arch, in_channels, input_size, width_mult, batch, path):
    torch.manual_seed(SEED)
    model = torch_models.build(arch, in_channels, NUM_CLASSES, input_size, width_mult).float()
    if _bn_modules(model):
        _perturb_bn(model, in_channels, input_size)
    x = torch.randn(batch, in_channels, input_size, input_size)
    labels = torch.randint(0, NUM_CLASSES, (batch,), dtype=torch.int64)
    state = copy.deepcopy(model.state_dict())
    model.train()
    _set_dropout_eval(model)
    _check_bn_values(model, x)
    model.load_state_dict(state, strict=True)  # the hooked pass updated the running statistics

    out = {"input": _np(x), "labels": _np(labels)}
    for k, v in state.items():
        out[f"state.{k}"] = _np(v)

    model.load_state_dict(state, strict=True)
    model.eval()
    _pass(model, x, labels, "eval", out)

    model.load_state_dict(state, strict=True)
    model.train()
    _set_dropout_eval(model)
    _pass(model, x, labels, "train", out)
    for name, _ in _bn_modules(model):
        sd_after = model.state_dict()
        for buf in ("running_mean", "running_var", "num_batches_tracked"):
            key = f"{name}.{buf}"
            out[f"train.state_after.{key}"] = _np(sd_after[key])

    for k, v in out.items():
        if v.dtype not in (np.float32, np.int64):
            raise RuntimeError(f"{k}: unexpected dtype {v.dtype}")
        if v.dtype == np.float32 and not np.all(np.isfinite(v)):
            raise RuntimeError(f"{k}: non-finite values")

    meta = {"arch": arch, "in_channels": str(in_channels), "input_size": str(input_size),
            "num_classes": str(NUM_CLASSES), "width_mult": repr(float(width_mult)), "batch": str(batch)}
    metadata = dict(meta)
    metadata.update({"seed": str(SEED), "torch_version": torch.__version__, "meta": json.dumps(meta)})
    save_file(out, path, metadata)
    nparams = sum(p.numel() for p in model.parameters())
    return nparams, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(root, "tests", "fixtures"))
    ap.add_argument("--only", nargs="*", help="only these archs")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)

    torch.backends.mkldnn.enabled = False
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    known = {f[0] for f in FIXTURES}
    for arch in a.only or []:
        if arch not in known:
            print(f"error: unknown arch '{arch}' (known: {', '.join(sorted(known))})", file=sys.stderr)
            return 2
    total = 0
    print(f"{'file':<28}{'params':>9}{'wm':>9}{'input':>14}{'eval.loss':>11}{'train.loss':>11}{'bytes':>10}")
    for arch, cin, size, wm, batch in FIXTURES:
        if a.only and arch not in a.only:
            continue
        path = os.path.join(a.out, f"{arch}.safetensors")
        nparams, out = make_fixture(arch, cin, size, wm, batch, path)
        nbytes = os.path.getsize(path)
        total += nbytes
        print(f"{os.path.basename(path):<28}{nparams:>9}{wm:>9g}{f'{batch}x{cin}x{size}x{size}':>14}"
              f"{float(out['eval.loss']):>11.5f}{float(out['train.loss']):>11.5f}{nbytes:>10}",
              flush=True)
    print(f"total {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
