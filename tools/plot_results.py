#!/usr/bin/python3
"""Figures from nnsplitter result files (layout: docs/results-format.md).

    /usr/bin/python3 tools/plot_results.py RUN.h5     [--out DIR]
    /usr/bin/python3 tools/plot_results.py SUMMARY.h5 [--out DIR]

The kind of file is read from its root attribute `format`.

A run file (`nnsplitter-run-1`) gives, each only when its group is in the file:
  <stem>_reward.png           reward per episode, running best, controller update boundaries
  <stem>_accuracy.png         validation accuracy per episode; original / obfuscated /
                              restored test accuracy as horizontal lines
  <stem>_weights_hist.png     weight histograms before and after obfuscation (all eligible
                              weights; the obfuscated entries only), log counts, clamp bounds
  <stem>_attack_norm_clip.png       accuracy vs k (mean +- k std clipping), global clipping
  <stem>_attack_finetune.png        accuracy vs epoch per data fraction, obfuscated vs scratch
  <stem>_attack_boundary_reset.png  accuracy before/after the reset, few-shot fine-tuning

A sweep summary (`nnsplitter-summary-1`, from `nnsplitter collect`) gives, over the swept keys
(keys whose last part is `seed` are averaged over rather than plotted, unless nothing else
varies):
  two or more keys: <stem>_heatmap_<k1>__<k2>_<metric>.png for obfuscated_accuracy and
                    obfuscated_fraction, each cell the mean over the other keys
  one key:          <stem>_sweep_<key>.png, accuracies and obfuscated fraction vs the key
                    (mean and min..max over the other keys)

PNGs go beside the input file, or into --out DIR. The paths written are printed one per line.
Exit codes: 0 success, 1 a malformed file (message on stderr), 2 usage error or a missing,
incomplete (a temporary `.<name>.nns-tmp-...` or `.h5.tmp`) or unrecognized file.
Needs Debian python3-h5py and python3-matplotlib; renders headless (Agg).
"""
import argparse
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402

try:
    import h5py
except ImportError:  # pragma: no cover - Debian's python3-h5py is expected
    h5py = None

RUN_FORMAT = "nnsplitter-run-1"
SUMMARY_FORMAT = "nnsplitter-summary-1"
DPI = 110


class UsageError(Exception):
    """Exit 2: missing, incomplete or unrecognized input."""


class FormatError(Exception):
    """Exit 1: a result file that does not follow docs/results-format.md."""


# ---- reading ----

def text(v):
    """An HDF5 string (bytes or str, scalar or 0-d array) as str."""
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, bytes):
        return v.decode("utf-8")
    return str(v)


def units(ds):
    return text(ds.attrs["units"]) if "units" in ds.attrs else "?"


def label(name, ds):
    """Axis label with the dataset's units, e.g. "accuracy (fraction)"."""
    return f"{name} ({units(ds)})"


def arr(f, path, ndim=None):
    if path not in f:
        raise FormatError(f"{f.filename}: missing dataset '{path}'")
    ds = f[path]
    if not isinstance(ds, h5py.Dataset):
        raise FormatError(f"{f.filename}: '{path}' is a group, expected a dataset")
    a = ds[()]
    if ndim is not None and np.ndim(a) != ndim:
        raise FormatError(f"{f.filename}: '{path}' has shape {np.shape(a)}, expected {ndim} dimension(s)")
    return a


def scalar(f, path, default=None):
    if path not in f:
        return default
    a = np.asarray(f[path][()])
    if a.size != 1:
        raise FormatError(f"{f.filename}: '{path}' has shape {a.shape}, expected a scalar")
    return float(a.reshape(-1)[0])


def attr_float(obj, name, default=None):
    if name not in obj.attrs:
        return default
    try:
        return float(np.asarray(obj.attrs[name]).reshape(-1)[0])
    except (TypeError, ValueError):
        return default


def strings(f, path):
    return [text(x) for x in arr(f, path, 1)]


def open_result(path):
    """(h5py.File, format) or UsageError for a missing/incomplete/unrecognized file."""
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise UsageError(f"{path}: not a regular file")
    if path.endswith(".tmp") or ".nns-tmp-" in os.path.basename(path):
        raise UsageError(f"{path}: incomplete result (a .tmp file is still being written or was "
                         f"left by an interrupted run)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UsageError(f"{path}: not a readable HDF5 file (incomplete, truncated or corrupt): {e}")
    fmt = text(f.attrs["format"]) if "format" in f.attrs else None
    if fmt not in (RUN_FORMAT, SUMMARY_FORMAT):
        f.close()
        if fmt is None:
            raise UsageError(f"{path}: incomplete or not an nnsplitter result (no root attribute 'format')")
        raise UsageError(f"{path}: unknown format '{fmt}' (expected {RUN_FORMAT} or {SUMMARY_FORMAT})")
    return f, fmt


# ---- figure helpers ----

def save(fig, out_dir, name, written):
    path = os.path.join(out_dir, name)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    written.append(path)


def run_title(f, what):
    name = text(f.attrs["run_name"]) if "run_name" in f.attrs else os.path.basename(f.filename)
    return f"{what} — {name}"


def accuracy_lines(ax, f, which=("original", "obfuscated", "restored")):
    """Test accuracies as horizontal lines (distinct styles: restored usually equals original)."""
    styles = {"original": ("tab:green", "--"), "obfuscated": ("tab:red", "--"),
              "restored": ("tab:blue", ":")}
    for key in which:
        v = scalar(f, f"accuracy/{key}")
        if v is not None:
            color, ls = styles[key]
            ax.axhline(v, color=color, ls=ls, lw=1.6, label=f"{key} test accuracy = {v:.4f}")


# ---- run figures ----

def plot_reward(f, out_dir, stem, written):
    t = f["search/trajectory"]
    reward = np.asarray(arr(f, "search/trajectory/reward", 1), dtype=float)
    if reward.size == 0:
        return
    ep = (np.asarray(arr(f, "search/trajectory/episode", 1)) if "episode" in t
          else np.arange(reward.size))
    if ep.size != reward.size:
        raise FormatError(f"{f.filename}: search/trajectory/episode and reward differ in length")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(ep, reward, ".", ms=5, color="tab:blue", alpha=0.7, label="reward per episode")
    ax.plot(ep, np.maximum.accumulate(reward), "-", color="tab:orange", lw=2, label="running best")
    if "update" in t:
        upd = np.asarray(arr(f, "search/trajectory/update", 1))
        if upd.size == reward.size and upd.size > 1:
            starts = np.nonzero(np.diff(upd) != 0)[0] + 1
            for i, s in enumerate(starts):
                ax.axvline((ep[s - 1] + ep[s]) / 2, color="gray", lw=0.8, ls=":",
                           label="controller update" if i == 0 else None)
    best = attr_float(f["search"], "best_episode")
    if best is not None and 0 <= best:
        hit = np.nonzero(ep == best)[0]
        if hit.size:
            ax.plot(ep[hit[0]], reward[hit[0]], "*", ms=14, color="tab:red",
                    label=f"best episode ({int(best)})")
    ax.set_xlabel(label("episode", t["episode"]) if "episode" in t else "episode (count)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label("reward = −validation accuracy", t["reward"]))
    ax.set_title(run_title(f, "Search reward"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save(fig, out_dir, f"{stem}_reward.png", written)


def plot_accuracy(f, out_dir, stem, written):
    t = f["search/trajectory"]
    acc = np.asarray(arr(f, "search/trajectory/accuracy", 1), dtype=float)
    if acc.size == 0:
        return
    ep = (np.asarray(arr(f, "search/trajectory/episode", 1)) if "episode" in t
          else np.arange(acc.size))
    if ep.size != acc.size:
        raise FormatError(f"{f.filename}: search/trajectory/episode and accuracy differ in length")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(ep, acc, ".-", ms=4, lw=0.8, color="tab:purple",
            label="validation accuracy (lowest of the episode)")
    if "accuracy" in f:
        accuracy_lines(ax, f)
    ax.set_xlabel(label("episode", t["episode"]) if "episode" in t else "episode (count)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label("accuracy", t["accuracy"]))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(run_title(f, "Accuracy per episode"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save(fig, out_dir, f"{stem}_accuracy.png", written)


def plot_histograms(f, out_dir, stem, written):
    h = f["stealth/histogram"]
    edges = np.asarray(arr(f, "stealth/histogram/edges", 1), dtype=float)
    panels = [("All eligible weights", "original", "obfuscated"),
              ("Obfuscated entries only", "masked_original", "masked_obfuscated")]
    panels = [p for p in panels if p[1] in h and p[2] in h]
    if not panels or edges.size < 2:
        return
    lo = attr_float(f["search"], "clamp_lo") if "search" in f else None
    hi = attr_float(f["search"], "clamp_hi") if "search" in f else None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, before, after) in zip(axes[0], panels):
        top = 1.0
        for key, color, desc in ((before, "tab:blue", "before (original)"),
                                 (after, "tab:red", "after (obfuscated)")):
            counts = np.asarray(arr(f, f"stealth/histogram/{key}", 1), dtype=float)
            if counts.size != edges.size - 1:
                raise FormatError(f"{f.filename}: stealth/histogram/{key} has {counts.size} bins, "
                                  f"edges has {edges.size} values (expected bins + 1)")
            ax.stairs(counts, edges, color=color, lw=1.4, label=desc)
            top = max(top, counts.max(initial=0))
        ax.set_yscale("log")
        ax.set_ylim(0.5, top * 2)  # empty bins fall below the axis instead of to -inf
        for v, name, ls in ((lo, "clamp_lo", "--"), (hi, "clamp_hi", "-.")):
            if v is not None:
                ax.axvline(v, color="black", ls=ls, lw=1.2, label=f"{name} = {v:.4g}")
        ax.set_xlabel(label("weight value", h["edges"]))
        ax.set_ylabel(f"count per bin ({units(h[before])}, log scale)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="major")
        ax.legend(loc="upper right", fontsize=8)
    extra = []
    ks = scalar(f, "stealth/ks_distance")
    if ks is not None:
        extra.append(f"KS distance {ks:.3f}")
    ab = scalar(f, "stealth/at_bounds_fraction")
    if ab is not None:
        extra.append(f"{100 * ab:.1f}% of obfuscated weights at the clamp bounds")
    fig.suptitle(run_title(f, "Weight histograms before and after obfuscation")
                 + (("\n" + ", ".join(extra)) if extra else ""), fontsize=11)
    save(fig, out_dir, f"{stem}_weights_hist.png", written)


def plot_norm_clip(f, out_dir, stem, written):
    g = f["attacks/norm_clip"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if "k" in g and "accuracy" in g:
        k = np.asarray(arr(f, "attacks/norm_clip/k", 1), dtype=float)
        acc = np.asarray(arr(f, "attacks/norm_clip/accuracy", 1), dtype=float)
        if k.size != acc.size:
            raise FormatError(f"{f.filename}: attacks/norm_clip/k and accuracy differ in length")
        order = np.argsort(k)
        ax.plot(k[order], acc[order], "o-", color="tab:purple",
                label="clipped to mean ± k·std per layer")
        ax.set_xlabel(label("k", g["k"]))
    else:
        ax.set_xlabel("k (1)")
    ga = scalar(f, "attacks/norm_clip/global_accuracy")
    if ga is not None:
        ds = g["global_accuracy"]
        lo, hi = attr_float(ds, "lo"), attr_float(ds, "hi")
        rng = f" [{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else ""
        ax.axhline(ga, color="tab:orange", ls="-.", lw=1.5,
                   label=f"clipped to the global range{rng} = {ga:.4f}")
    accuracy_lines(ax, f, ("original", "obfuscated"))
    ax.set_ylabel("test accuracy (fraction)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(run_title(f, "Attack: norm clipping"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    save(fig, out_dir, f"{stem}_attack_norm_clip.png", written)


def plot_finetune(f, out_dir, stem, written):
    g = f["attacks/finetune"]
    fractions = np.asarray(arr(f, "attacks/finetune/fractions", 1), dtype=float)
    acc = np.asarray(arr(f, "attacks/finetune/accuracy", 2), dtype=float)
    scratch = (np.asarray(arr(f, "attacks/finetune/scratch_accuracy", 2), dtype=float)
               if "scratch_accuracy" in g else None)
    if acc.shape[0] != fractions.size or (scratch is not None and scratch.shape[0] != fractions.size):
        raise FormatError(f"{f.filename}: attacks/finetune accuracy rows do not match fractions")
    fig, ax = plt.subplots(figsize=(8, 4.8))
    colors = plt.cm.viridis(np.linspace(0.0, 0.85, max(1, fractions.size)))
    for i, p in enumerate(fractions):
        ax.plot(np.arange(acc.shape[1]), acc[i], "o-", ms=4, color=colors[i],
                label=f"p = {100 * p:g}%: obfuscated model fine-tuned")
        if scratch is not None:
            ax.plot(np.arange(scratch.shape[1]), scratch[i], "s--", ms=4, color=colors[i],
                    alpha=0.8, label=f"p = {100 * p:g}%: trained from scratch")
    accuracy_lines(ax, f, ("original",))
    ax.set_xlabel("fine-tuning epoch (count; 0 = before fine-tuning)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(label("test accuracy", g["accuracy"]))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(run_title(f, "Attack: fine-tuning with a fraction p of the training data"))
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    save(fig, out_dir, f"{stem}_attack_finetune.png", written)


def plot_boundary_reset(f, out_dir, stem, written):
    g = f["attacks/boundary_reset"]
    curve = (np.asarray(arr(f, "attacks/boundary_reset/accuracy_finetuned", 1), dtype=float)
             if "accuracy_finetuned" in g else np.zeros(0))
    ncols = 2 if curve.size > 1 else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6.2 * ncols, 4.5), squeeze=False)
    ax = axes[0][0]
    bars = [("original", scalar(f, "accuracy/original"), "tab:green"),
            ("obfuscated\n(before reset)", scalar(f, "accuracy/obfuscated"), "tab:red"),
            ("after reset", scalar(f, "attacks/boundary_reset/accuracy_reset"), "tab:orange")]
    if curve.size > 1:
        bars.append((f"after reset +\n{curve.size - 1} epochs fine-tuning", float(curve[-1]),
                     "tab:purple"))
    bars = [b for b in bars if b[1] is not None]
    xs = np.arange(len(bars))
    ax.bar(xs, [b[1] for b in bars], color=[b[2] for b in bars])
    for x, b in zip(xs, bars):
        ax.text(x, b[1] + 0.01, f"{b[1]:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(xs, [b[0] for b in bars], fontsize=8)
    ax.set_ylabel("test accuracy (fraction)")
    ax.set_ylim(0, 1.1)
    mode = text(g.attrs["mode"]) if "mode" in g.attrs else "?"
    delta = attr_float(g, "delta")
    sub = f"mode {mode}" + (f", δ = {delta:.3g}" if delta is not None else "")
    det, tp, obf = (scalar(f, f"attacks/boundary_reset/{k}") for k in
                    ("detected", "true_positives", "obfuscated"))
    if det is not None and tp is not None and obf is not None:
        prec = tp / det if det else 0.0
        rec = tp / obf if obf else 0.0
        sub += (f"\ndetected {int(det)} weights, {int(tp)} truly obfuscated of {int(obf)} "
                f"(precision {prec:.2f}, recall {rec:.2f})")
    ax.set_title(f"Before / after the reset — {sub}", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    if curve.size > 1:
        ax2 = axes[0][1]
        ax2.plot(np.arange(curve.size), curve, "o-", color="tab:purple",
                 label="reset model, few-shot fine-tuning")
        accuracy_lines(ax2, f, ("original", "obfuscated"))
        ax2.set_xlabel("fine-tuning epoch (count; 0 = right after the reset)")
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.set_ylabel(label("test accuracy", g["accuracy_finetuned"]))
        ax2.set_ylim(-0.02, 1.02)
        ax2.set_title("Fine-tuning after the reset", fontsize=10)
        ax2.grid(alpha=0.3)
        ax2.legend(loc="best", fontsize=8)
    fig.suptitle(run_title(f, "Attack: boundary reset (GroupCover)"), fontsize=11)
    save(fig, out_dir, f"{stem}_attack_boundary_reset.png", written)


def plot_groupcover(f, out_dir, stem, written):
    """Recovered accuracy against queries, one line per reset mode; the black-box floor dashed."""
    g = "attacks/groupcover"
    budgets = np.asarray(arr(f, f"{g}/budgets", 1), dtype=float)
    resets = strings(f, f"{g}/resets")
    rec = np.asarray(arr(f, f"{g}/recovered", 2), dtype=float).reshape(len(resets), len(budgets))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    order = np.argsort(budgets)
    for i, r in enumerate(resets):
        ax.plot(budgets[order], rec[i][order], "o-", label=f"detect → reset to {r} → knockoff")
    for which, color in (("donor", "tab:gray"), ("scratch", "black")):
        if f"{g}/floor_{which}" in f:
            v = np.asarray(arr(f, f"{g}/floor_{which}", 1), dtype=float)
            ax.plot(budgets[order], v[order], "s--", color=color,
                    label=f"black-box floor (from {which})")
    victim = scalar(f, f"{g}/accuracy_victim_eval")
    if victim is not None:
        ax.axhline(victim, color="tab:green", lw=1, ls=":", label="victim")
    ax.set_xlabel("queries (count)")
    ax.set_ylabel("accuracy on held-out images (fraction)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.suptitle(run_title(f, "Attack: GroupCover protocol"), fontsize=11)
    save(fig, out_dir, f"{stem}_attack_groupcover.png", written)


def plot_run(f, out_dir, stem):
    written = []
    if "search/trajectory/reward" in f:
        plot_reward(f, out_dir, stem, written)
    if "search/trajectory/accuracy" in f:
        plot_accuracy(f, out_dir, stem, written)
    if "stealth/histogram" in f:
        plot_histograms(f, out_dir, stem, written)
    if "attacks/norm_clip" in f:
        plot_norm_clip(f, out_dir, stem, written)
    if "attacks/finetune" in f:
        plot_finetune(f, out_dir, stem, written)
    if "attacks/boundary_reset" in f:
        plot_boundary_reset(f, out_dir, stem, written)
    if "attacks/groupcover/budgets" in f:
        plot_groupcover(f, out_dir, stem, written)
    return written


# ---- sweep summaries ----

METRIC_LABELS = {
    "obfuscated_accuracy": "obfuscated test accuracy",
    "obfuscated_fraction": "obfuscated weights / all parameters",
    "original_accuracy": "original test accuracy",
    "restored_accuracy": "restored test accuracy",
}


def safe_name(s):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


def ordered_values(values):
    """Distinct values, numerically sorted when they all parse as numbers."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def is_seed_key(key):
    return key.split(".")[-1] in ("seed", "seeds")


def missing_runs(f):
    """Indexes in the root attribute `missing`: comma-separated text ("3,5", "" for none), as
    `nnsplitter collect` writes it, or an integer array."""
    if "missing" not in f.attrs:
        return []
    m = f.attrs["missing"]
    if isinstance(m, (str, bytes)) or (isinstance(m, np.ndarray) and m.dtype.kind in "OSU"):
        parts = [text(m)] if np.ndim(m) == 0 else [text(x) for x in np.ravel(m)]
        return [int(x) for p in parts for x in p.split(",") if x.strip()]
    return [int(x) for x in np.ravel(m)]


def missing_note(f):
    """", 2 runs missing" when the summary lists runs without a complete file."""
    n = len(missing_runs(f))
    return f", {n} run{'s' if n != 1 else ''} missing" if n else ""


def summary_columns(f):
    if "runs" not in f:
        raise FormatError(f"{f.filename}: missing group 'runs'")
    keys = []
    if "runs/sweep" in f:
        keys = sorted(f["runs/sweep"].keys())
    cols = {k: strings(f, f"runs/sweep/{k}") for k in keys}
    n = None
    for k, v in cols.items():
        if n is not None and len(v) != n:
            raise FormatError(f"{f.filename}: runs/sweep/{k} has {len(v)} rows, expected {n}")
        n = len(v)
    return cols


def plot_heatmap(f, cols, kx, ky, metric, out_dir, stem, written):
    vals = np.asarray(arr(f, f"runs/{metric}", 1), dtype=float)
    xs, ys = ordered_values(cols[kx]), ordered_values(cols[ky])
    grid = np.full((len(ys), len(xs)), np.nan)
    count = np.zeros((len(ys), len(xs)), dtype=int)
    for j, yv in enumerate(ys):
        for i, xv in enumerate(xs):
            sel = [r for r in range(vals.size) if cols[kx][r] == xv and cols[ky][r] == yv
                   and np.isfinite(vals[r])]
            if sel:
                grid[j, i] = float(np.mean(vals[sel]))
                count[j, i] = len(sel)
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(xs) + 3), max(4.0, 0.8 * len(ys) + 2.2)))
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("lightgray")
    lo, hi = (0.0, 1.0) if metric.endswith("accuracy") else (None, None)
    im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap,
                   vmin=lo, vmax=hi)
    for j in range(len(ys)):
        for i in range(len(xs)):
            if count[j, i]:
                v = grid[j, i]
                txt = f"{v:.3f}" if metric.endswith("accuracy") else f"{v:.2e}"
                if count[j, i] > 1:
                    txt += f"\nn={count[j, i]}"
                norm_v = im.norm(v)
                ax.text(i, j, txt, ha="center", va="center", fontsize=8,
                        color="white" if norm_v < 0.5 else "black")
            else:
                ax.text(i, j, "missing", ha="center", va="center", fontsize=7, color="dimgray")
    ax.set_xticks(range(len(xs)), xs)
    ax.set_yticks(range(len(ys)), ys)
    ax.set_xlabel(f"{kx} (swept value)")
    ax.set_ylabel(f"{ky} (swept value)")
    u = units(f[f"runs/{metric}"])
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(f"{METRIC_LABELS.get(metric, metric)} ({u}), mean")
    others = [k for k in cols if k not in (kx, ky)]
    avg = (f"mean over {', '.join(others)}" if others else "one run per cell") + missing_note(f)
    ax.set_title(f"{METRIC_LABELS.get(metric, metric)} — {os.path.basename(f.filename)}\n({avg})",
                 fontsize=10)
    save(fig, out_dir, f"{stem}_heatmap_{safe_name(kx)}__{safe_name(ky)}_{metric}.png", written)


def plot_sweep_line(f, cols, key, out_dir, stem, written):
    xs = ordered_values(cols[key])
    numeric = True
    try:
        xpos = [float(x) for x in xs]
    except ValueError:
        numeric, xpos = False, list(range(len(xs)))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    acc_metrics = [("original_accuracy", "tab:green", "s--"),
                   ("obfuscated_accuracy", "tab:red", "o-"),
                   ("restored_accuracy", "tab:blue", "^:")]
    panels = [(axes[0], acc_metrics, "test accuracy"),
              (axes[1], [("obfuscated_fraction", "tab:purple", "o-")], "obfuscated fraction")]
    others = [k for k in cols if k != key]
    for ax, metrics, ylabel in panels:
        u = "?"
        for metric, color, style in metrics:
            if f"runs/{metric}" not in f:
                continue
            u = units(f[f"runs/{metric}"])
            vals = np.asarray(arr(f, f"runs/{metric}", 1), dtype=float)
            mean, lo, hi = [], [], []
            for xv in xs:
                sel = vals[[r for r in range(vals.size) if cols[key][r] == xv]]
                sel = sel[np.isfinite(sel)]
                mean.append(sel.mean() if sel.size else np.nan)
                lo.append(sel.min() if sel.size else np.nan)
                hi.append(sel.max() if sel.size else np.nan)
            mean, lo, hi = map(np.asarray, (mean, lo, hi))
            ax.plot(xpos, mean, style, color=color, label=METRIC_LABELS.get(metric, metric) + " (mean)")
            if others:
                ax.fill_between(xpos, lo, hi, color=color, alpha=0.15)
        if others:  # one neutral legend entry for the bands of every colour
            ax.fill_between([], [], [], color="gray", alpha=0.3,
                            label=f"shaded: min..max over {', '.join(others)}")
        if not numeric:
            ax.set_xticks(xpos, xs)
        ax.set_xlabel(f"{key} (swept value)")
        ax.set_ylabel(f"{ylabel} ({u})")
        if ylabel == "test accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(f"Sweep over {key} — {os.path.basename(f.filename)} "
                 f"({int(attr_float(f, 'runs', 0) or 0)} runs{missing_note(f)})", fontsize=11)
    save(fig, out_dir, f"{stem}_sweep_{safe_name(key)}.png", written)


RECOVERY = re.compile(r"^(groupcover\.[A-Za-z_]+|floor\.donor|floor\.scratch)@(\d+)$")


def plot_recovery(f, cols, out_dir, stem, written):
    """From a summary: recovered accuracy against queries, one line per method (splitter.method,
    else the other non-seed swept keys), mean ± sd over seeds; one panel per model.arch; the
    black-box floors dashed. One figure per reset mode."""
    series = {}  # name -> {budget: column}
    for name in f["runs/attacks"].keys():
        m = RECOVERY.match(name)
        if m:
            series.setdefault(m.group(1), {})[int(m.group(2))] = np.asarray(
                arr(f, f"runs/attacks/{name}", 1), dtype=float)
    attacks = sorted(k for k in series if k.startswith("groupcover."))
    if not attacks:
        return
    n = len(next(iter(next(iter(series.values())).values())))
    panel_key = "model.arch" if "model.arch" in cols else None
    method_keys = (["splitter.method"] if "splitter.method" in cols else
                   [k for k in cols if not is_seed_key(k) and k != panel_key])
    panels = ordered_values(cols[panel_key]) if panel_key else [None]

    def method_of(i):
        return ", ".join(cols[k][i] for k in method_keys) or "all runs"

    methods = list(dict.fromkeys(method_of(i) for i in range(n)))
    for attack in attacks:
        fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 4.6), squeeze=False)
        for ax, panel in zip(axes[0], panels):
            rows = [i for i in range(n) if panel is None or cols[panel_key][i] == panel]
            budgets = sorted(series[attack])
            for method in methods:
                sel = [i for i in rows if method_of(i) == method]
                if not sel:
                    continue
                y = [np.nanmean(series[attack][b][sel]) for b in budgets]
                e = [np.nanstd(series[attack][b][sel]) for b in budgets]
                ax.errorbar(budgets, y, yerr=e, fmt="o-", capsize=3, label=method)
            for floor, color in (("floor.donor", "tab:gray"), ("floor.scratch", "black")):
                if floor in series:
                    fb = sorted(series[floor])
                    y = [np.nanmean(series[floor][b][rows]) for b in fb]
                    ax.plot(fb, y, "s--", color=color,
                            label=f"black-box floor ({floor.split('.')[1]})")
            ax.set_xlabel("queries (count)")
            ax.set_ylabel("recovered accuracy (fraction)")
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=8)
            if panel is not None:
                ax.set_title(f"{panel_key} = {panel}", fontsize=10)
        fig.suptitle(f"{attack.replace('groupcover.', 'GroupCover protocol, reset to ')} "
                     f"(mean ± sd over seeds){missing_note(f)}", fontsize=11)
        save(fig, out_dir, f"{stem}_recovery_{safe_name(attack)}.png", written)


HEADLINE = re.compile(r"^(best|floor|gap)@(\d+)$")


def headline_series(f):
    """{(what, Q): per-run values} of the headline columns best@Q, floor@Q, gap@Q."""
    out = {}
    if "runs/attacks" not in f:
        return out
    for name in f["runs/attacks"].keys():
        m = HEADLINE.match(name)
        if m:
            out[(m.group(1), int(m.group(2)))] = np.asarray(arr(f, f"runs/attacks/{name}", 1),
                                                            dtype=float)
    return out


def curve_groups(f, cols):
    """Runs grouped by (method, policy, budget): the curve's points; seeds are averaged."""
    n = len(next(iter(cols.values())))
    kind = cols.get("controller.kind", ["rl"] * n)
    groups = {}
    for i in range(n):
        groups.setdefault((cols["splitter.method"][i], kind[i], float(cols["splitter.budget"][i])),
                          []).append(i)
    return groups


def mean_sd(v, rows):
    x = v[rows]
    x = x[np.isfinite(x)]
    if not x.size:
        return np.nan, np.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def plot_curve(f, cols, out_dir, stem, written):
    """The security-vs-budget curve: per query budget Q, the best attack against the realised
    share of changed weights, one curve per method (RL policy), the floor at Q as a line; and the
    RL policy against random filter choice for every method that has both."""
    if not {"splitter.budget", "splitter.method"} <= set(cols):
        return
    series = headline_series(f)
    qs = sorted({q for (what, q) in series if what == "best"})
    if not qs:
        return
    frac = np.asarray(arr(f, "runs/obfuscated_fraction", 1), dtype=float)
    obf = np.asarray(arr(f, "runs/obfuscated_accuracy", 1), dtype=float)
    groups = curve_groups(f, cols)
    methods = list(dict.fromkeys(m for (m, k, b) in groups))
    budgets = sorted({b for (m, k, b) in groups})
    fig, axes = plt.subplots(1, len(qs) + 1, figsize=(5.2 * (len(qs) + 1), 4.6), squeeze=False)
    for ax, q in zip(axes[0], qs + [None]):
        for method in methods:
            pts = [(b, groups[(method, "rl", b)]) for b in budgets if (method, "rl", b) in groups]
            if not pts:
                continue
            x = [100 * mean_sd(frac, rows)[0] for b, rows in pts]
            vals = series[("best", q)] if q is not None else obf
            y = [mean_sd(vals, rows) for b, rows in pts]
            ax.errorbar(x, [v[0] for v in y], yerr=[v[1] for v in y], fmt="o-", capsize=3,
                        label=method)
        if q is not None and ("floor", q) in series:
            fl = series[("floor", q)]
            ax.axhline(np.nanmean(fl), color="black", ls="--",
                       label=f"floor at {q} queries (scratch, mean)")
            ax.axhline(np.nanmean(fl) + 0.05, color="black", ls=":", lw=0.8,
                       label="floor + 5 points")
            ax.set_title(f"best attack with {q} queries", fontsize=10)
            ax.set_ylabel("accuracy after the best attack (fraction)")
        else:
            ax.axhline(0.12, color="tab:red", ls=":", lw=0.8, label="12%")
            ax.set_title("deployed (obfuscated) model", fontsize=10)
            ax.set_ylabel("test accuracy (fraction)")
        ax.set_xscale("log")
        ax.set_xlabel("weights changed (% of all, realised)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(f"Security vs budget — {os.path.basename(f.filename)} (RL policy; mean ± sd over "
                 f"seeds where there are several){missing_note(f)}", fontsize=11)
    save(fig, out_dir, f"{stem}_curve.png", written)

    pairs = [m for m in methods if any((m, "random", b) in groups for b in budgets)]
    if not pairs:
        return
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.6 * len(pairs), 4.4), squeeze=False)
    q = 300 if 300 in qs else qs[0]
    for ax, method in zip(axes[0], pairs):
        for kind, style in (("rl", "o-"), ("random", "s--")):
            pts = [(b, groups[(method, kind, b)]) for b in budgets if (method, kind, b) in groups]
            x = [100 * b for b, rows in pts]
            ax.plot(x, [mean_sd(obf, rows)[0] for b, rows in pts], style, color="tab:red",
                    label=f"deployed accuracy, {kind}")
            ax.plot(x, [mean_sd(series[("best", q)], rows)[0] for b, rows in pts], style,
                    color="tab:blue", label=f"best attack at {q} queries, {kind}")
        ax.set_xscale("log")
        ax.set_xlabel("budget (% of all weights)")
        ax.set_ylabel("accuracy (fraction)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
        ax.set_title(method, fontsize=10)
    fig.suptitle(f"RL policy vs random filter choice — {os.path.basename(f.filename)}", fontsize=11)
    save(fig, out_dir, f"{stem}_rl_vs_random.png", written)


def curve_markdown(files):
    """The curve's table (docs/attacks.md) of one or more curve summaries (the same grid, other
    methods): one row per (method, policy, budget), mean ± sd over the seeds present, in %."""
    cols, series, frac, obf = {}, {}, [], []
    for f in files:
        c = summary_columns(f)
        if not {"splitter.budget", "splitter.method"} <= set(c):
            raise FormatError(f"{f.filename}: not a curve sweep (needs splitter.budget and "
                              f"splitter.method)")
        n = len(next(iter(c.values())))
        for k in set(cols) | set(c):
            cols[k] = cols.get(k, [""] * len(frac)) + c.get(k, ["rl" if k == "controller.kind" else ""] * n)
        s = headline_series(f)
        for key in set(series) | set(s):
            series[key] = np.concatenate([series.get(key, np.full(len(frac), np.nan)),
                                          s.get(key, np.full(n, np.nan))])
        frac += list(np.asarray(arr(f, "runs/obfuscated_fraction", 1), dtype=float))
        obf += list(np.asarray(arr(f, "runs/obfuscated_accuracy", 1), dtype=float))
    frac, obf = np.asarray(frac), np.asarray(obf)
    qs = sorted({q for (what, q) in series if what == "best"})
    f = files[0]
    def cell(v, rows, scale=100, digits=1):
        m, sd = mean_sd(v, rows)
        if np.isnan(m):
            return "–"
        return f"{scale * m:.{digits}f}" + (f" ± {scale * sd:.{digits}f}" if len(rows) > 1 else "")
    head = ["method", "policy", "budget", "n", "changed %", "deployed %"]
    for q in qs:
        head += [f"best@{q} %", f"floor@{q} %", f"gap@{q}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (m, k, b), rows in sorted(curve_groups(f, cols).items(), key=lambda e: (e[0][1], e[0][0], e[0][2])):
        row = [m, k, f"{100 * b:g}%", str(len(rows)), cell(frac, rows, 100, 3), cell(obf, rows)]
        for q in qs:
            row += [cell(series[("best", q)], rows), cell(series[("floor", q)], rows),
                    cell(series[("gap", q)], rows)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot_summary(f, out_dir, stem):
    cols = summary_columns(f)
    for m in ("obfuscated_accuracy", "obfuscated_fraction"):
        arr(f, f"runs/{m}", 1)  # both are needed whatever the sweep's shape
    varying = [k for k, v in cols.items() if len(set(v)) > 1]
    axes_keys = [k for k in varying if not is_seed_key(k)] or varying
    if not axes_keys:
        raise FormatError(f"{f.filename}: no swept key takes more than one value "
                          f"(runs/sweep holds {', '.join(cols) or 'nothing'})")
    written = []
    if len(axes_keys) == 1:
        plot_sweep_line(f, cols, axes_keys[0], out_dir, stem, written)
    else:
        for a in range(len(axes_keys)):
            for b in range(a + 1, len(axes_keys)):
                for m in ("obfuscated_accuracy", "obfuscated_fraction"):
                    plot_heatmap(f, cols, axes_keys[a], axes_keys[b], m, out_dir, stem, written)
    if "runs/attacks" in f:
        plot_recovery(f, cols, out_dir, stem, written)
        plot_curve(f, cols, out_dir, stem, written)
    return written


# ---- entry point ----

def main(argv=None):
    ap = argparse.ArgumentParser(description="Plot an nnsplitter run file or sweep summary (HDF5).")
    ap.add_argument("file", nargs="+",
                    help="RUN.h5 (format nnsplitter-run-1) or SUMMARY.h5 (nnsplitter-summary-1); "
                         "with --markdown, one or more curve summaries")
    ap.add_argument("--out", help="folder for the PNGs (default: beside the file)")
    ap.add_argument("--markdown", action="store_true",
                    help="print the security-vs-budget table of a curve sweep summary and exit")
    args = ap.parse_args(argv)
    if h5py is None:
        print("plot_results.py: h5py is missing (apt-get install python3-h5py)", file=sys.stderr)
        return 2
    if len(args.file) > 1 and not args.markdown:
        print("plot_results.py: several files only with --markdown", file=sys.stderr)
        return 2
    if args.markdown:
        try:
            opened = [open_result(p)[0] for p in args.file]
        except UsageError as e:
            print(f"plot_results.py: {e}", file=sys.stderr)
            return 2
        try:
            print(curve_markdown(opened))
        except (FormatError, KeyError, ValueError) as e:
            print(f"plot_results.py: {e}", file=sys.stderr)
            return 1
        finally:
            for f in opened:
                f.close()
        return 0
    args.file = args.file[0]
    try:
        f, fmt = open_result(args.file)
    except UsageError as e:
        print(f"plot_results.py: {e}", file=sys.stderr)
        return 2
    out_dir = args.out or os.path.dirname(os.path.abspath(args.file))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        print(f"plot_results.py: cannot create output folder {out_dir}: {e}", file=sys.stderr)
        return 2
    stem = os.path.splitext(os.path.basename(args.file))[0]
    try:
        with f:
            written = plot_run(f, out_dir, stem) if fmt == RUN_FORMAT else plot_summary(f, out_dir, stem)
    except (FormatError, KeyError, ValueError) as e:
        print(f"plot_results.py: {args.file}: {e}", file=sys.stderr)
        return 1
    if not written:
        print(f"plot_results.py: {args.file}: nothing to plot (no search, stealth or attacks groups)",
              file=sys.stderr)
    for p in written:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
