#!/usr/bin/python3
"""Tests of tools/plot_curve.py: synthetic curve sweeps (runs.tsv and run files holding the
datasets docs/results-format.md defines) give the table's means, standard deviations and gaps
computed by hand here, the first sweep named wins a cell both hold, a PNG is written, and a
folder without runs.tsv or a run file without a headline exits with 2 naming it.

Run with tests/python/run_all.py, or: /usr/bin/python3 -m unittest tests/python/test_plot_curve.py
"""
import importlib.util
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tempdir_case  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOL = os.path.join(ROOT, "tools", "plot_curve.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

import numpy as np  # noqa: E402

try:
    import h5py
    HAVE_DEPS = importlib.util.find_spec("matplotlib") is not None
except ImportError:  # pragma: no cover
    HAVE_DEPS = False

Q = [100, 300, 1000]


def write_run(path, best, floor, deployed=0.1, weights=300, column="knockoff.bn_affine"):
    with h5py.File(path, "w") as f:
        h = f.create_group("attacks/headline")
        h["budgets"] = np.array(Q, dtype=np.int64)
        h["best_attack"] = np.array(best, dtype=float)
        h["best_attack_column"] = np.array([f"{column}@{q}" for q in Q], dtype=object)
        h["floor"] = np.array(floor, dtype=float)
        f["accuracy/obfuscated"] = deployed
        f["accuracy/original"] = 0.93
        f["accuracy/restored_bit_exact"] = np.int64(1)
        f["weights/obfuscated_total"] = np.int64(weights)
        f["times/total"] = 60.0


def write_sweep(folder, rows):
    """rows: (index, seed, kind, budget, method, best, floor, deployed)."""
    os.makedirs(folder)
    with open(os.path.join(folder, "runs.tsv"), "w") as fh:
        fh.write("index\tseed\tcontroller.kind\tsplitter.budget\tsplitter.method\n")
        for i, seed, kind, budget, method, *_ in rows:
            fh.write(f"{i}\t{seed}\t{kind}\t{budget}\t{method}\n")
    for i, seed, kind, budget, method, best, floor, deployed in rows:
        if best is not None:  # None: listed but not finished
            write_run(os.path.join(folder, f"run_{i:04d}.h5"), best, floor, deployed)


@unittest.skipUnless(HAVE_DEPS, "needs python3-h5py and python3-matplotlib")
class PlotCurve(tempdir_case.TempDirCase):
    def run_tool(self, *args):
        return subprocess.run([PYTHON, TOOL, *args], capture_output=True, text=True)

    def test_table_means_gaps_and_precedence(self):
        f0, f1 = [0.5, 0.7, 0.8], [0.6, 0.72, 0.78]
        screen = self.path("screen")
        write_sweep(screen, [
            (0, 0, "rl", 0.001, "nnsplitter", [0.9, 0.91, 0.92], f0, 0.10),
            (1, 1, "rl", 0.001, "nnsplitter", [0.88, 0.95, 0.90], f1, 0.12),
            (2, 0, "random", 0.001, "nnsplitter", [0.8, 0.85, 0.9], f0, 0.30),
            (3, 0, "rl", 0.03, "swap", [0.1, 0.2, 0.3], f0, 0.10),
            (4, 1, "rl", 0.03, "swap", None, f1, 0.10),
        ])
        full = self.path("full")
        write_sweep(full, [(7, 0, "rl", 0.03, "swap", [0.74, 0.75, 0.76], f0, 0.10)])
        out = self.path("figs/curve")
        r = self.run_tool("--title", "T", "--out", out, full, screen)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(out + ".md") as fh:
            table = fh.read()
        rows = {tuple(c.strip() for c in line.split("|")[1:5]): [c.strip() for c in line.split("|")[1:-1]]
                for line in table.splitlines() if line.startswith("| ") and "---" not in line}
        nn = rows[("nnsplitter", "rl", "0.1%", "0,1")]
        # best@300 over the two seeds: 91 and 95 -> 93.0 ± 2.8 (sample sd)
        self.assertEqual(nn[7], f"{100 * np.mean([0.91, 0.95]):.1f} ± {100 * np.std([0.91, 0.95], ddof=1):.1f}")
        gaps = [0.91 - 0.7, 0.95 - 0.72]  # each against its own victim's floor
        self.assertEqual(nn[9], f"{100 * np.mean(gaps):.1f} ± {100 * np.std(gaps, ddof=1):.1f}")
        self.assertEqual(nn[5], "11.0 ± 1.4")
        # the cell both sweeps hold comes from the first folder named (the full attacker)
        sw = rows[("swap", "rl", "3%", "0")]
        self.assertEqual(sw[7], "75.0")
        self.assertEqual(sw[9], "5.0")
        self.assertEqual(sw[-1], "full")
        self.assertIn(("nnsplitter", "random", "0.1%", "0"), rows)
        self.assertIn("floor (scratch), victim seed 1", table)
        with open(out + ".png", "rb") as fh:
            self.assertEqual(fh.read(8), b"\x89PNG\r\n\x1a\n")
        self.assertGreater(os.path.getsize(out + ".png"), 10_000)

    def test_bad_inputs_exit_2_naming_them(self):
        r = self.run_tool("--out", self.path("x"), self.dir)
        self.assertEqual(r.returncode, 2)
        self.assertIn("no runs.tsv", r.stderr)
        bad = self.path("bad")
        write_sweep(bad, [(0, 0, "rl", 0.001, "nnsplitter", None, None, 0.1)])
        with h5py.File(os.path.join(bad, "run_0000.h5"), "w") as f:
            f["accuracy/obfuscated"] = 0.1  # no attacks/headline
        r = self.run_tool("--out", self.path("y"), bad)
        self.assertEqual(r.returncode, 2)
        self.assertIn("run_0000.h5", r.stderr)
        self.assertFalse(os.path.exists(self.path("y.md")))


if __name__ == "__main__":
    unittest.main()
