#!/usr/bin/python3
"""Tests of tools/plot_results.py: a synthetic run file and synthetic sweep summaries, written
with h5py exactly as docs/results-format.md lays them out, are plotted; every expected PNG
must exist, be a PNG and not be trivially small; missing or incomplete files exit with 2.

Run with tests/python/run_all.py, or: /usr/bin/python3 -m unittest tests/python/test_plot_results.py
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
TOOL = os.path.join(ROOT, "tools", "plot_results.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
sys.path.insert(0, os.path.join(ROOT, "tools"))

import numpy as np  # noqa: E402

try:
    import h5py
    HAVE_DEPS = importlib.util.find_spec("matplotlib") is not None
except ImportError:  # pragma: no cover - Debian's python3-h5py/python3-matplotlib are expected
    HAVE_DEPS = False

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_PNG_BYTES = 10_000  # a figure with axes, labels and data is well above this


def ds(f, path, data, units, dtype=None):
    d = f.create_dataset(path, data=np.asarray(data, dtype=dtype))
    d.attrs["units"] = units
    return d


def strs(f, path, values, units="string"):
    d = f.create_dataset(path, data=np.array(values, dtype=object), dtype=h5py.string_dtype("utf-8"))
    d.attrs["units"] = units
    return d


def write_run_file(path, attacks=True):
    """A complete run file: every group and dataset of docs/results-format.md."""
    rng = np.random.default_rng(0)
    layers = ["conv1", "layer1.0.conv1", "layer2.0.conv1", "fc"]
    L, E, U, K, P, B, k = len(layers), 40, 8, 5, 3, 60, 2
    lo, hi = -0.12, 0.12
    with h5py.File(path, "w") as f:
        a = f.attrs
        a["format"] = "nnsplitter-run-1"
        a["version"] = "0.1.0"
        a["git_commit"] = "unknown"
        a["host"] = "test-host"
        a["device"] = "cpu"
        a["threads"] = np.int64(2)
        a["seed"] = np.int64(1)
        a["start_time"] = "2024-01-01T00:00:00Z"
        a["end_time"] = "2024-01-01T00:10:00Z"
        a["config"] = "name: synthetic\nseed: 1\n"
        a["run_name"] = "synthetic"
        a["sweep_index"] = np.int64(-1)

        v = f.create_group("victim")
        for name in ("arch", "dataset", "source"):
            v.attrs[name] = {"arch": "resnet20", "dataset": "cifar10", "source": "trained"}[name]
        v.attrs["parameters"] = np.int64(272474)
        ds(f, "victim/train_loss", np.linspace(2.0, 0.3, 10), "1")
        ds(f, "victim/train_accuracy", np.linspace(0.3, 0.95, 10), "fraction")
        ds(f, "victim/test_accuracy", np.linspace(0.3, 0.91, 10), "fraction")

        ds(f, "accuracy/original", 0.91, "fraction")
        ds(f, "accuracy/obfuscated", 0.10, "fraction")
        ds(f, "accuracy/restored", 0.91, "fraction")
        ds(f, "accuracy/restored_bit_exact", 1, "1", np.int64)

        eligible = np.array([432, 2304, 4608, 640], dtype=np.int64)
        obf = np.array([10, 40, 30, 5], dtype=np.int64)
        strs(f, "weights/layer_names", layers)
        ds(f, "weights/eligible_per_layer", eligible, "count")
        ds(f, "weights/obfuscated_per_layer", obf, "count")
        ds(f, "weights/obfuscated_total", obf.sum(), "count", np.int64)
        ds(f, "weights/total", 272474, "count", np.int64)
        ds(f, "weights/eligible_total", eligible.sum(), "count", np.int64)
        ds(f, "weights/obfuscated_fraction", obf.sum() / 272474, "fraction")
        ds(f, "secrets/bytes", 2048, "bytes", np.int64)

        s = f.create_group("search")
        s.attrs["c"] = 0.05
        s.attrs["eps"] = 0.01
        s.attrs["clamp_lo"] = lo
        s.attrs["clamp_hi"] = hi
        acc = np.clip(0.9 - np.linspace(0, 0.8, E) + rng.normal(0, 0.05, E), 0, 1)
        s.attrs["best_episode"] = np.int64(np.argmin(acc))
        s.attrs["policy"] = "lstm"
        ds(f, "search/trajectory/episode", np.arange(E), "count", np.int64)
        ds(f, "search/trajectory/update", np.arange(E) // (E // U), "count", np.int64)
        ds(f, "search/trajectory/accuracy", acc, "fraction")
        ds(f, "search/trajectory/reward", -acc, "1")
        ds(f, "search/trajectory/weights", rng.integers(50, 100, E), "count", np.int64)
        ds(f, "search/trajectory/seconds", rng.uniform(1, 2, E), "seconds")
        ds(f, "search/trajectory/filters", rng.integers(0, 16, (E, L, k)), "count", np.int64)
        ds(f, "search/updates/update", np.arange(U), "1", np.int64)
        ds(f, "search/updates/loss", rng.normal(0, 1, U), "1")
        ds(f, "search/updates/mean_reward", np.linspace(-0.8, -0.2, U), "1")

        w = rng.normal(0, 0.04, 8000)
        masked_before = rng.normal(0, 0.04, 85)
        masked_after = np.where(rng.random(85) < 0.5, lo, hi)
        after = np.concatenate([w[:-85], masked_after])
        edges = np.linspace(min(w.min(), lo), max(w.max(), hi), B + 1)
        ds(f, "stealth/at_bounds_fraction", 1.0, "fraction")
        ds(f, "stealth/at_bounds_per_layer", np.ones(L), "fraction")
        ds(f, "stealth/ks_distance", 0.004, "1")
        ds(f, "stealth/ks_per_layer", rng.uniform(0, 0.01, L), "1")
        ds(f, "stealth/histogram/edges", edges, "weight")
        ds(f, "stealth/histogram/original", np.histogram(w, edges)[0], "count", np.int64)
        ds(f, "stealth/histogram/obfuscated", np.histogram(after, edges)[0], "count", np.int64)
        ds(f, "stealth/histogram/masked_original", np.histogram(masked_before, edges)[0], "count", np.int64)
        ds(f, "stealth/histogram/masked_obfuscated", np.histogram(masked_after, edges)[0], "count", np.int64)

        if attacks:
            ds(f, "attacks/norm_clip/k", [1.0, 1.5, 2.0, 3.0, 4.0][:K], "1")
            ds(f, "attacks/norm_clip/accuracy", [0.35, 0.3, 0.2, 0.12, 0.1][:K], "fraction")
            g = ds(f, "attacks/norm_clip/global_accuracy", 0.11, "fraction")
            g.attrs["lo"] = -0.1
            g.attrs["hi"] = 0.1
            ds(f, "attacks/finetune/fractions", [0.01, 0.05, 0.1][:P], "fraction")
            ft = np.array([[0.1, 0.4, 0.5, 0.55], [0.1, 0.6, 0.7, 0.75], [0.1, 0.7, 0.8, 0.85]])
            ds(f, "attacks/finetune/accuracy", ft, "fraction")
            ds(f, "attacks/finetune/scratch_accuracy", ft * 0.6, "fraction")
            br = f.create_group("attacks/boundary_reset")
            br.attrs["delta"] = 1e-4
            br.attrs["mode"] = "zero"
            ds(f, "attacks/boundary_reset/detected", 120, "count", np.int64)
            ds(f, "attacks/boundary_reset/true_positives", 80, "count", np.int64)
            ds(f, "attacks/boundary_reset/obfuscated", 85, "count", np.int64)
            ds(f, "attacks/boundary_reset/accuracy_reset", 0.6, "fraction")
            ds(f, "attacks/boundary_reset/accuracy_finetuned", [0.6, 0.8, 0.85, 0.87], "fraction")

        for name, sec in (("total", 600.0), ("victim", 100.0), ("search", 400.0), ("attacks", 100.0)):
            ds(f, f"times/{name}", sec, "seconds")


def write_summary(path, keys, missing="", headline=()):
    """A sweep summary over `keys` (dotted key -> list of values, Cartesian product); with
    `headline` (query budgets), the attack columns best@Q, floor@Q and gap@Q too."""
    grids = np.meshgrid(*[np.arange(len(v)) for v in keys.values()], indexing="ij")
    combos = np.stack([g.reshape(-1) for g in grids], axis=1)
    n = combos.shape[0]
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "nnsplitter-summary-1"
        f.attrs["runs"] = np.int64(n)
        f.attrs["missing"] = missing  # comma-separated indexes, as `nnsplitter collect` writes
        ds(f, "runs/index", np.arange(n), "count", np.int64)
        strs(f, "runs/run_name", [f"sweep/run_{i:04d}" for i in range(n)])
        for j, (key, values) in enumerate(keys.items()):
            strs(f, f"runs/sweep/{key}", [str(values[c]) for c in combos[:, j]])
        ds(f, "runs/original_accuracy", np.full(n, 0.91), "fraction")
        ds(f, "runs/obfuscated_accuracy", rng.uniform(0.09, 0.3, n), "fraction")
        ds(f, "runs/restored_accuracy", np.full(n, 0.91), "fraction")
        ds(f, "runs/obfuscated_weights", rng.integers(50, 500, n), "count", np.int64)
        ds(f, "runs/obfuscated_fraction", rng.uniform(1e-4, 2e-3, n), "fraction")
        ds(f, "runs/at_bounds_fraction", rng.uniform(0.9, 1.0, n), "fraction")
        ds(f, "runs/ks_distance", rng.uniform(0, 0.01, n), "1")
        ds(f, "runs/seconds", rng.uniform(100, 200, n), "seconds")
        for q in headline:
            best, floor = rng.uniform(0.6, 0.9, n), np.full(n, 0.5 + q / 4000)
            ds(f, f"runs/attacks/best@{q}", best, "fraction")
            ds(f, f"runs/attacks/floor@{q}", floor, "fraction")
            ds(f, f"runs/attacks/gap@{q}", best - floor, "fraction")


def run_tool(*args):
    return subprocess.run([PYTHON, TOOL, *args], capture_output=True, text=True, timeout=300)


@unittest.skipUnless(HAVE_DEPS, "needs python3-h5py and python3-matplotlib")
class PlotResultsTest(tempdir_case.TempDirCase):
    prefix = "nns-plot-"

    def assert_pngs(self, proc, expected_paths):
        self.assertEqual(proc.returncode, 0, proc.stderr)
        printed = [line for line in proc.stdout.splitlines() if line.strip()]
        self.assertEqual(sorted(printed), sorted(expected_paths))
        for p in expected_paths:
            self.assertTrue(os.path.isfile(p), p)
            with open(p, "rb") as fh:
                data = fh.read()
            self.assertEqual(data[:8], PNG_MAGIC, p)
            self.assertGreater(len(data), MIN_PNG_BYTES, p)

    def test_run_file_beside_the_input(self):
        run = self.path("run.h5")
        write_run_file(run)
        names = ["reward", "accuracy", "weights_hist", "attack_norm_clip", "attack_finetune",
                 "attack_boundary_reset"]
        self.assert_pngs(run_tool(run), [self.path(f"run_{n}.png") for n in names])

    def test_run_file_without_attacks_into_out_dir(self):
        run = self.path("run_0003.h5")
        write_run_file(run, attacks=False)
        out = self.path("figs/nested")
        proc = run_tool(run, "--out", out)
        self.assert_pngs(proc, [os.path.join(out, f"run_0003_{n}.png")
                                for n in ("reward", "accuracy", "weights_hist")])
        self.assertFalse(any(n.startswith("run_0003_attack") for n in os.listdir(out)))

    def test_summary_two_keys_and_seeds_gives_heat_maps(self):
        summary = self.path("summary.h5")
        write_summary(summary, {"splitter.c": [0.01, 0.05, 0.1], "splitter.eps": [0.001, 0.01],
                                "seed": [1, 2]})
        expected = [self.path(f"summary_heatmap_splitter.c__splitter.eps_{m}.png")
                    for m in ("obfuscated_accuracy", "obfuscated_fraction")]
        self.assert_pngs(run_tool(summary), expected)

    def test_summary_one_key_gives_a_line_plot(self):
        summary = self.path("summary.h5")
        write_summary(summary, {"model.arch": ["lenet5", "resnet20", "vgg11_bn"], "seed": [1, 2, 3]})
        self.assert_pngs(run_tool(summary), [self.path("summary_sweep_model.arch.png")])

    def test_curve_summary_gives_the_curve_rl_vs_random_and_the_table(self):
        summary = self.path("summary.h5")
        keys = {"controller.kind": ["rl", "random"], "seed": [0, 1],
                "splitter.budget": [0.001, 0.01], "splitter.method": ["nnsplitter", "spread"]}
        write_summary(summary, keys, headline=(100, 300))
        heat = [self.path(f"summary_heatmap_{a}__{b}_{m}.png")
                for a, b in (("controller.kind", "splitter.budget"),
                             ("controller.kind", "splitter.method"),
                             ("splitter.budget", "splitter.method"))
                for m in ("obfuscated_accuracy", "obfuscated_fraction")]
        self.assert_pngs(run_tool(summary), heat + [self.path("summary_curve.png"),
                                                    self.path("summary_rl_vs_random.png")])
        table = run_tool(summary, "--markdown")
        self.assertEqual(table.returncode, 0, table.stderr)
        rows = [line for line in table.stdout.splitlines() if line.startswith("| ")]
        self.assertEqual(len(rows), 1 + 2 * 2 * 2)  # header + method x policy x budget
        self.assertIn("best@300 %", rows[0])
        self.assertIn("| spread | rl | 1% | 2 |", table.stdout)  # two seeds per point
        plain = self.path("plain.h5")
        write_summary(plain, {"splitter.k": [1, 2]})
        self.assertEqual(run_tool(plain, "--markdown").returncode, 1)

    def test_summary_with_missing_runs(self):
        summary = self.path("summary.h5")
        write_summary(summary, {"splitter.k": [1, 2, 4]}, missing="3,5")
        self.assert_pngs(run_tool(summary), [self.path("summary_sweep_splitter.k.png")])

    def test_missing_runs_attribute_forms(self):
        import plot_results
        cases = [("", []), ("7", [7]), ("3,5", [3, 5]), (np.array([2, 4], dtype=np.int64), [2, 4]),
                 (np.array([], dtype=np.int64), [])]
        for i, (value, expected) in enumerate(cases):
            p = self.path(f"m{i}.h5")
            with h5py.File(p, "w") as f:
                f.attrs["missing"] = value
            with h5py.File(p, "r") as f:
                self.assertEqual(plot_results.missing_runs(f), expected, repr(value))
                self.assertEqual(plot_results.missing_note(f),
                                 "" if not expected else
                                 f", {len(expected)} run{'s' if len(expected) > 1 else ''} missing")

    def test_missing_file_exits_2(self):
        proc = run_tool(self.path("nope.h5"))
        self.assertEqual(proc.returncode, 2)
        self.assertIn("nope.h5", proc.stderr)
        self.assertIn("no such file", proc.stderr)

    def test_incomplete_files_exit_2(self):
        tmp = self.path("run.h5.tmp")
        write_run_file(tmp)
        proc = run_tool(tmp)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("incomplete", proc.stderr)

        truncated = self.path("cut.h5")
        write_run_file(truncated)
        with open(truncated, "rb") as fh:
            data = fh.read()
        with open(truncated, "wb") as fh:
            fh.write(data[: len(data) // 2])
        proc = run_tool(truncated)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("cut.h5", proc.stderr)

        no_format = self.path("plain.h5")
        with h5py.File(no_format, "w") as f:
            f["x"] = 1.0
        proc = run_tool(no_format)
        self.assertEqual(proc.returncode, 2)
        self.assertIn("format", proc.stderr)
        self.assertEqual([n for n in os.listdir(self.dir) if n.endswith(".png")], [])

    def test_malformed_run_file_exits_1(self):
        run = self.path("bad.h5")
        write_run_file(run, attacks=False)
        with h5py.File(run, "a") as f:
            del f["stealth/histogram/edges"]
            ds(f, "stealth/histogram/edges", np.linspace(0, 1, 5), "weight")  # wrong bin count
        proc = run_tool(run)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("stealth/histogram", proc.stderr)


if __name__ == "__main__":
    unittest.main()
