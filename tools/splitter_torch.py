#!/usr/bin/python3
"""NNSplitter in plain PyTorch, the way the authors' scripts run it: the baseline that
tools/bench_compare.sh times against `nnsplitter protect` (SPEC.md §1).

Kept small and faithful to github.com/Tongzhou0101/NNSplitter, with the REINFORCE sign fixed:
  * controller: LSTM cell (hidden 512) over one-hot tokens (size 256, drawn uniformly in
    [0, min filters] per episode), one linear head per eligible layer, k = 1 filter per layer;
    parameters uniform in [-0.1, 0.1], head biases 0; REINFORCE with the batch-mean baseline,
    loss = -sum (R - b) log pi, Adam lr 0.01, one update per batch of episodes;
  * mask: in each chosen filter the entries with |w - c| < eps, c = mean of the eligible
    weights, eps = auto (the smallest eps selecting `target_per_layer` weights per layer on
    average, as nnsplitter's auto_eps);
  * obfuscation (one episode): model.eval(), every step a full backward of -CE, the gradient of
    every eligible weight multiplied by its mask, an Adam step (lr, fresh per episode) over the
    eligible weights, the weights clamped to [min, max] of the pretrained eligible weights;
    accuracy on the validation images every `eval_every` steps, the lowest one kept; exactly
    `max_steps` steps per episode when patience is large;
  * reward = -(lowest validation accuracy); the best episode over the search is kept.

Data are normalised once into memory tensors (faster than a torchvision DataLoader: the
baseline is given its fastest reasonable form). Use /usr/bin/python3 (Debian's python3-torch).
"""
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_models  # noqa: E402
from safetensors_np import load_file  # noqa: E402

NORM = {"fashion-mnist": ([0.2860], [0.3530]), "mnist": ([0.1307], [0.3081]),
        "cifar10": ([0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616])}


# ------------------------------------------------------------------------------------ data
def _read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find(folder, stem):
    for name in (stem, stem + ".gz"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{folder}: no {stem}[.gz] (Debian: apt install dataset-fashion-mnist)")


def load_dataset(name, folder):
    """Returns ((x_train u8 [N,C,H,W], y_train int64), (x_test, y_test)) in file order."""
    if name in ("fashion-mnist", "mnist"):
        out = []
        for split in ("train", "t10k"):
            x = _read_idx(_find(folder, f"{split}-images-idx3-ubyte"))
            y = _read_idx(_find(folder, f"{split}-labels-idx1-ubyte"))
            out.append((x[:, None, :, :], y.astype(np.int64)))
        return tuple(out)
    if name == "cifar10":
        def read(files):
            raw = b"".join(open(os.path.join(folder, f), "rb").read() for f in files)
            rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3073)
            return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)
        return read([f"data_batch_{i}.bin" for i in range(1, 6)]), read(["test_batch.bin"])
    raise ValueError(f"unknown dataset '{name}' (fashion-mnist, mnist, cifar10)")


def normalise(x_u8, dataset, input_size):
    """float32 (u8/255 - mean)/std per channel, zero-padded to input_size (as nnsplitter)."""
    mean, std = NORM[dataset]
    x = x_u8.astype(np.float32) / np.float32(255)
    x = (x - np.array(mean, np.float32)[None, :, None, None]) / np.array(std, np.float32)[None, :, None, None]
    pad = input_size - x.shape[-1]
    if pad > 0:
        x = np.pad(x, ((0, 0), (0, 0), (pad // 2, pad - pad // 2), (pad // 2, pad - pad // 2)))
    return torch.from_numpy(np.ascontiguousarray(x))


def load_model(path):
    """A torch_models network with the weights and geometry of an nnsplitter safetensors file."""
    tensors, meta = load_file(path)
    model = torch_models.build(meta["arch"], int(meta["in_channels"]), int(meta["num_classes"]),
                               int(meta["input_size"]))
    model.load_state_dict({k: torch.from_numpy(np.array(v, copy=True)) for k, v in tensors.items()},
                          strict=True)
    return model, meta


# ------------------------------------------------------------------------------------ mask
def eligible(model):
    params = dict(model.named_parameters())
    return [(name, params[name]) for name in torch_models.eligible_layers(model, "spatial")]


def stats(layers):
    flat = torch.cat([p.detach().reshape(-1) for _, p in layers]).double()
    return flat.mean().item(), flat.min().item(), flat.max().item()


def auto_eps(layers, c, k, target):
    """The smallest float eps with mean_l (k/F_l) #{|w - c| < eps} >= target (nnsplitter's)."""
    c32 = np.float32(c)
    dist = [np.sort(np.abs(p.detach().numpy().reshape(-1) - c32)) for _, p in layers]
    weight = [min(k, p.shape[0]) / p.shape[0] for _, p in layers]
    cand = np.nextafter(np.unique(np.concatenate(dist)), np.float32(np.inf))
    expected = sum(w * np.searchsorted(d, cand, side="left") for w, d in zip(weight, dist)) / len(dist)
    ok = np.nonzero(expected >= target)[0]
    if not len(ok):
        raise ValueError(f"auto eps: the whole range selects fewer than {target} weights per layer")
    return float(cand[ok[0]])


def masks_for(layers, filters, c, eps):
    """Per eligible layer a 0/1 float mask of W's shape: |w - c| < eps inside the chosen filters."""
    out = []
    for (_, p), fs in zip(layers, filters):
        m = torch.zeros_like(p)
        w = p.detach()[fs]
        m[fs] = ((w - np.float32(c)).abs() < np.float32(eps)).float()
        out.append(m)
    return out


# ------------------------------------------------------------------------------- obfuscator
class Obfuscator:
    """The authors' inner loop: full backward, masked gradient, Adam, clamp (model in eval)."""

    def __init__(self, model, layers, lo, hi, lr=0.05):
        self.model, self.layers, self.lo, self.hi, self.lr = model, layers, lo, hi, lr

    def start(self, masks):
        self.masks = masks
        self.opt = torch.optim.Adam([p for _, p in self.layers], lr=self.lr, betas=(0.9, 0.999), eps=1e-8)

    def step(self, x, y):
        self.model.eval()
        self.opt.zero_grad(set_to_none=False)
        ce = F.cross_entropy(self.model(x), y)
        (-ce).backward()
        for (_, p), m in zip(self.layers, self.masks):
            p.grad.mul_(m)
        self.opt.step()
        with torch.no_grad():
            for _, p in self.layers:
                p.clamp_(self.lo, self.hi)
        return ce.item()


def accuracy(model, x, y, batch=256):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    return correct / len(x)


# ------------------------------------------------------------------------------- controller
class Controller(nn.Module):
    def __init__(self, filters, hidden=512, token_size=256, init_range=0.1):
        super().__init__()
        self.filters, self.token_size = filters, token_size
        self.max_token = min(token_size - 1, min(filters))
        self.cell = nn.LSTMCell(token_size, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, f) for f in filters)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)
        for h in self.heads:
            nn.init.zeros_(h.bias)

    def log_probs(self, tokens):
        """tokens [B, L] -> per layer log-softmax [B, F_l]."""
        b = tokens.shape[0]
        h = torch.zeros(b, self.cell.hidden_size)
        c = torch.zeros_like(h)
        out = []
        for l, head in enumerate(self.heads):
            h, c = self.cell(F.one_hot(tokens[:, l], self.token_size).float(), (h, c))
            out.append(F.log_softmax(head(h), dim=1))
        return out

    def sample(self, gen):
        tokens = torch.randint(0, self.max_token + 1, (1, len(self.filters)), generator=gen)
        with torch.no_grad():
            lps = self.log_probs(tokens)
        draws = [int(torch.multinomial(lp[0].exp(), 1, generator=gen)) for lp in lps]
        return tokens, draws

    def loss(self, episodes, rewards):
        tokens = torch.cat([t for t, _ in episodes])
        draws = torch.tensor([d for _, d in episodes])
        lps = self.log_probs(tokens)
        logp = sum(lp.gather(1, draws[:, l:l + 1]).squeeze(1) for l, lp in enumerate(lps))
        r = torch.tensor(rewards, dtype=torch.float32)
        return -((r - r.mean()) * logp).sum()   # the sign fixed: maximise E[R]


# ----------------------------------------------------------------------------------- search
def search(model, train, val, updates, episodes, steps, eval_every, patience, lr=0.05, target=15.0,
           batch=128, seed=0, log=None):
    """Runs the search; returns a dict with the best episode and its seconds. The model ends
    with the best episode's obfuscated weights applied."""
    gen = torch.Generator().manual_seed(seed)
    layers = eligible(model)
    c, lo, hi = stats(layers)
    eps = auto_eps(layers, c, 1, target)
    ctrl = Controller([p.shape[0] for _, p in layers])
    copt = torch.optim.Adam(ctrl.parameters(), lr=0.01)
    obf = Obfuscator(model, layers, lo, hi, lr)
    original = [p.detach().clone() for _, p in layers]
    (xt, yt), (xv, yv) = train, val
    best = {"reward": -float("inf")}
    t0 = time.perf_counter()
    for u in range(updates):
        eps_batch, rewards = [], []
        for e in range(episodes):
            tokens, draws = ctrl.sample(gen)
            masks = masks_for(layers, [[d] for d in draws], c, eps)
            obf.start(masks)
            perm = torch.randperm(len(xt), generator=gen)
            lowest, since, best_vals, pos = float("inf"), 0, None, 0
            for s in range(1, steps + 1):
                if pos + batch > len(perm):
                    perm, pos = torch.randperm(len(xt), generator=gen), 0
                idx = perm[pos:pos + batch]
                pos += batch
                obf.step(xt[idx], yt[idx])
                if s % eval_every == 0 or s == steps:
                    acc = accuracy(model, xv, yv)
                    if acc < lowest:
                        lowest, since = acc, 0
                        best_vals = [p.detach().clone() for _, p in layers]
                    else:
                        since += 1
                    if since >= patience:
                        break
            reward = -lowest
            if reward >= best["reward"]:
                best = {"reward": reward, "filters": draws, "values": best_vals,
                        "weights": int(sum(m.sum().item() for m in masks)), "episode": u * episodes + e + 1}
            with torch.no_grad():   # back to the pretrained weights
                for (_, p), o in zip(layers, original):
                    p.copy_(o)
            eps_batch.append((tokens, draws))
            rewards.append(reward)
            if log:
                log(f"episode {u * episodes + e + 1}/{updates * episodes}: val acc {100 * lowest:.2f}%, "
                    f"{int(sum(m.sum().item() for m in masks))} weights, {time.perf_counter() - t0:.1f} s")
        if len(eps_batch) > 1:
            copt.zero_grad()
            ctrl.loss(eps_batch, rewards).backward()
            copt.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        for (_, p), v in zip(layers, best["values"]):
            p.copy_(v)
    return {"search_seconds": seconds, "best_val_accuracy": -best["reward"], "obfuscated_weights": best["weights"],
            "best_episode": best["episode"], "c": c, "eps": eps, "clamp": [lo, hi]}
