#!/usr/bin/python3
"""The security-vs-budget curve (docs/attacks.md): best attack against budget, one curve per
method, the floor as a line, from the run folders of one or more curve sweeps.

    /usr/bin/python3 tools/plot_curve.py --title ResNet-20 --out docs/img/curve-resnet20 \\
        /work/research-runs/curve-resnet20-screen /work/research-runs/curve-resnet20

Each SWEEP folder is what `nnsplitter sweep` wrote: runs.tsv (index and the swept keys) and
run_NNNN.h5 per finished run. gap@Q = best attack - the floor of the run's own victim, at the
middle query budget (the goal: gap <= 5 points with the deployed model <= 12%). Runs are grouped by (method, budget, controller); a group with
several seeds gives mean ± sd. When two folders hold the same cell (same victim, same search),
the first one named wins: name the sweep with the strongest attacker first (the table's last
column says which sweep every cell came from). Writes OUT.png (three panels, Q = 100,
300, 1000 queries; a hollow marker: the deployed model is above 12%, so the point does not meet
the goal whatever the attack does) and OUT.md (the table), and prints the table. A folder without runs.tsv, or
a run file that is not a result, stops with an error naming it.
Use /usr/bin/python3 (Debian's python3-h5py and python3-matplotlib).
"""
import argparse
import csv
import math
import os
import sys

import h5py
import numpy as np


def fail(msg):
    print(f"plot_curve.py: {msg}", file=sys.stderr)
    sys.exit(2)


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def read_sweep(folder):
    tsv = os.path.join(folder, "runs.tsv")
    if not os.path.isfile(tsv):
        fail(f"{folder}: no runs.tsv (not a sweep folder)")
    rows = []
    with open(tsv, newline="") as fh:
        for r in csv.DictReader(fh, delimiter="\t"):
            path = os.path.join(folder, f"run_{int(r['index']):04d}.h5")
            if not os.path.isfile(path):
                continue  # not finished
            try:
                with h5py.File(path, "r") as f:
                    h = f["attacks/headline"]
                    best = np.asarray(h["best_attack"][()], dtype=float)
                    row = {
                        "sweep": os.path.basename(os.path.normpath(folder)),
                        "method": r.get("splitter.method", "nnsplitter"),
                        "budget": float(r["splitter.budget"]),
                        "kind": r.get("controller.kind", "rl"),
                        "seed": int(r.get("seed", 0)),
                        "queries": [int(q) for q in h["budgets"][()]],
                        "best": best,
                        "best_column": [text(c) for c in h["best_attack_column"][()]],
                        "floor": np.asarray(h["floor"][()], dtype=float),
                        "deployed": float(f["accuracy/obfuscated"][()]),
                        "original": float(f["accuracy/original"][()]),
                        "exact": int(f["accuracy/restored_bit_exact"][()]),
                        "weights": int(f["weights/obfuscated_total"][()]),
                        "seconds": float(f["times/total"][()]),
                    }
            except (OSError, KeyError) as e:
                fail(f"{path}: not a curve result ({e})")
            rows.append(row)
    return rows


def pct(v):
    return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def mean_sd(vals):
    vals = [v for v in vals if np.isfinite(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return pct(vals[0])
    return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals, ddof=1):.1f}"


def short_attack(col):
    return col.split("@")[0].replace("knockoff.", "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweeps", nargs="+", help="sweep output folders (runs.tsv + run_*.h5)")
    ap.add_argument("--out", required=True, help="output stem: OUT.png and OUT.md")
    ap.add_argument("--title", default="", help="the model's name in the plot's title")
    a = ap.parse_args()

    cells = {}
    for folder in a.sweeps:
        for r in read_sweep(folder):
            key = (r["method"], r["budget"], r["kind"], r["seed"])
            cells.setdefault(key, r)  # the first folder named wins
    if not cells:
        fail("no finished runs in " + ", ".join(a.sweeps))
    groups = {}
    for (m, b, k, s), r in sorted(cells.items()):
        groups.setdefault((m, b, k), []).append(r)
    queries = next(iter(cells.values()))["queries"]
    floors = {}
    for r in cells.values():
        floors.setdefault(r["seed"], r["floor"])

    lines = []
    qs = " | ".join(f"best@{q}" for q in queries)
    lines.append(f"| method | policy | budget | seeds | weights changed | deployed | {qs} | "
                 f"gap@{queries[min(1, len(queries) - 1)]} | "
                 f"best attack @{queries[min(1, len(queries) - 1)]} | sweep |")
    lines.append("|---|---|---:|---:|---:|---:|" + "---:|" * (len(queries) + 1) + "---|---|")
    methods = sorted({m for m, _, _ in groups}, key=lambda m: (m != "nnsplitter", m))
    for m in methods:
        for (gm, b, k), rs in sorted(groups.items(), key=lambda t: (t[0][2] != "rl", t[0][1])):
            if gm != m:
                continue
            mid = min(1, len(queries) - 1)
            best = " | ".join(mean_sd([r["best"][i] for r in rs]) for i in range(len(queries)))
            winners = sorted({short_attack(r["best_column"][mid]) for r in rs})
            lines.append(
                f"| {m} | {k} | {100 * b:g}% | {','.join(str(r['seed']) for r in rs)} | "
                f"{round(np.mean([r['weights'] for r in rs])):,} | "
                f"{mean_sd([r['deployed'] for r in rs])} | {best} | "
                f"{mean_sd([r['best'][mid] - r['floor'][mid] for r in rs])} | {', '.join(winners)} | "
                f"{', '.join(sorted({r['sweep'] for r in rs}))} |")
    for s, fl in sorted(floors.items()):
        lines.append(f"| floor (scratch), victim seed {s} | | | {s} | | | " +
                     " | ".join(pct(v) for v in fl) + " | | | |")
    table = "\n".join(lines) + "\n"
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out + ".md.tmp", "w") as fh:
        fh.write(table)
    os.replace(a.out + ".md.tmp", a.out + ".md")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(queries), figsize=(5 * len(queries), 4.2), sharey=True)
    axes = np.atleast_1d(axes)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for qi, (ax, q) in enumerate(zip(axes, queries)):
        for mi, m in enumerate(methods):
            for k, style in (("rl", "o-"), ("random", "s--")):
                pts = sorted((b, [r["best"][qi] for r in rs]) for (gm, b, gk), rs in groups.items()
                             if gm == m and gk == k)
                if not pts:
                    continue
                x = [b * 100 for b, _ in pts]
                y = [100 * np.nanmean(v) for _, v in pts]
                err = [100 * np.nanstd(v, ddof=1) if len(v) > 1 else 0 for _, v in pts]
                color = colors[mi % len(colors)]
                ax.errorbar(x, y, yerr=err, fmt=style, color=color,
                            label=f"{m}" + (" (random filters)" if k == "random" else ""),
                            capsize=3, markersize=4, alpha=0.9 if k == "rl" else 0.6)
                # hollow: the deployed model is above 12% (such a point does not count for the goal)
                weak = [(xi, yi) for xi, yi, (b, _) in zip(x, y, pts)
                        if np.mean([r["deployed"] for r in groups[(m, b, k)]]) > 0.12]
                if weak:
                    ax.plot(*zip(*weak), "o", markersize=7, markerfacecolor="white", color=color)
        fl = floors.get(0, next(iter(floors.values())))
        ax.axhline(100 * fl[qi], color="black", lw=1.5, label="floor (scratch, seed-0 victim)")
        ax.axhline(100 * fl[qi] + 5, color="black", lw=0.8, ls=":", label="floor + 5 (the goal)")
        ax.set_xscale("log")
        ticks = sorted({b * 100 for _, b, _ in groups})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("budget (% of the weights changed)")
        ax.set_title(f"{a.title} best attack with {q} queries".strip())
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("attacker's test accuracy (%)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(a.out + ".png.tmp.png", dpi=110)
    os.replace(a.out + ".png.tmp.png", a.out + ".png")
    print(f"wrote {a.out}.png and {a.out}.md")


if __name__ == "__main__":
    main()
