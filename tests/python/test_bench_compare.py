#!/usr/bin/python3
"""Tests of the comparison tool's arithmetic and of its PyTorch baseline (no timing):
tools/bench_compare.py (pair ratios, parity, usage errors) and tools/splitter_torch.py
(auto eps against brute force, the REINFORCE sign, the masked Adam step touching only masked
weights). The end-to-end run is tests/python/bench_compare_e2e.py (ctest bench_compare_tiny).

Run with tests/python/run_all.py, or: /usr/bin/python3 -m unittest tests/python/test_bench_compare.py
"""
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_compare as bc  # noqa: E402

try:
    import torch
    import splitter_torch as st
except ImportError:  # pragma: no cover
    torch = None


def run(workload, side, pair, **values):
    return {"workload": workload, "side": side, "pair": pair, "max_rss_mib": values.pop("rss", 100.0), **values}


class PairRatios(unittest.TestCase):
    def test_median_of_pair_ratios_not_ratio_of_medians(self):
        ours, theirs = [100.0, 200.0, 150.0], [50.0, 100.0, 300.0]   # ratios 2, 2, 0.5
        runs = []
        for i, (o, t) in enumerate(zip(ours, theirs), 1):
            runs.append(run("m/throughput", "nnsplitter", i, training_images_per_second=o))
            runs.append(run("m/throughput", "pytorch", i, training_images_per_second=t))
        row = next(r for r in bc.summarise(runs) if r["key"] == "training_images_per_second")
        self.assertEqual(row["nnsplitter"], 150.0)
        self.assertEqual(row["pytorch"], 100.0)
        self.assertAlmostEqual(row["ratio"], 2.0)          # the ratio of medians would be 1.5
        self.assertEqual(row["ratio_range"], [0.5, 2.0])
        self.assertEqual(row["pairs"], 3)

    def test_cpu_time_ratio_is_pytorch_over_ours(self):
        runs = []
        for i, (o, t) in enumerate([(1.0, 2.0), (2.0, 2.0), (1.0, 4.0)], 1):   # ratios 2, 1, 4
            runs.append(run("m/throughput", "nnsplitter", i, inference_images_per_second=1.0,
                            inference_cpu_seconds_per_batch=o))
            runs.append(run("m/throughput", "pytorch", i, inference_images_per_second=1.0,
                            inference_cpu_seconds_per_batch=t))
        row = next(r for r in bc.summarise(runs) if r["key"] == "inference_images_per_second")
        self.assertAlmostEqual(row["cpu_ratio"], 2.0)
        self.assertIn("| 2.00 |", bc.markdown({
            "machine": {"cpu": "x", "cores": 2, "isa": ""}, "threads": 2, "batch": 1, "pairs": 3, "date": "d",
            "loadavg_before": [0], "loadavg_after": [0], "summary": [row], "parity": [], "command": "c",
            "versions": {"nnsplitter": {"commit": "c", "blas": [], "OPENBLAS_CORETYPE": None},
                         "torch": {"torch": "1", "onednn": "o", "cpu_capability": "AVX2", "libraries": [],
                                   "blas_info": "generic"}}}).splitlines()[-3] + " ")

    def test_times_and_memory_are_inverted(self):
        runs = []
        for i, (o, t, ro, rt) in enumerate([(10.0, 30.0, 100, 400), (20.0, 30.0, 200, 400)], 1):
            runs.append(run("m/search", "nnsplitter", i, search_seconds=o, wall_seconds=o + 1, rss=ro))
            runs.append(run("m/search", "pytorch", i, search_seconds=t, wall_seconds=t + 1, rss=rt))
        rows = {r["workload"]: r for r in bc.summarise(runs)}
        search = rows["m fixed search, s (ratio: PyTorch/ours)"]
        self.assertAlmostEqual(search["ratio"], (3.0 + 1.5) / 2)   # > 1: we are faster
        mem = next(r for r in rows.values() if r["key"] == "max_rss_mib")
        self.assertAlmostEqual(mem["ratio"], (4.0 + 2.0) / 2)

    def test_unpaired_run_is_left_out(self):
        runs = [run("m/search", "nnsplitter", 1, search_seconds=10.0, wall_seconds=11.0),
                run("m/search", "pytorch", 1, search_seconds=20.0, wall_seconds=21.0),
                run("m/search", "nnsplitter", 2, search_seconds=99.0, wall_seconds=99.0)]
        row = bc.summarise(runs)[0]
        self.assertEqual(row["pairs"], 1)
        self.assertEqual(row["nnsplitter"], 10.0)


class Parity(unittest.TestCase):
    def pair(self, lo, lt, mo=7, mt=7):
        return [run("m/throughput", "nnsplitter", 1, obfuscation_losses=lo, obfuscation_masked_weights=mo),
                run("m/throughput", "pytorch", 1, obfuscation_losses=lt, obfuscation_masked_weights=mt)]

    def test_same_trajectory_passes(self):
        p = bc.parity(self.pair([2.3, 2.5, 2.9], [2.3, 2.5000001, 2.9]))
        self.assertTrue(p[0]["ok"])
        self.assertEqual(p[0]["steps"], 3)

    def test_diverging_trajectory_fails(self):
        self.assertFalse(bc.parity(self.pair([2.3, 2.5, 2.9], [2.3, 2.5, 2.95]))[0]["ok"])

    def test_different_masks_fail(self):
        self.assertFalse(bc.parity(self.pair([2.3], [2.3], 7, 8))[0]["ok"])

    def test_empty_trace_fails(self):
        self.assertFalse(bc.parity(self.pair([], []))[0]["ok"])

    def with_layouts(self, lo, nchw, cl):
        runs = self.pair(lo, nchw)
        runs[1]["layouts"] = {"nchw": {"obfuscation_losses": nchw}, "channels_last": {"obfuscation_losses": cl}}
        return runs

    def test_chaotic_tail_where_pytorch_disagrees_with_itself_is_reported_not_checked(self):
        # PyTorch's two layouts agree on steps 1-4 and part at step 5 (rel 1e-3 > 1e-5).
        nchw = [2.3, 2.5, 2.9, 3.1, 3.5, 4.0]
        cl = [2.3, 2.5, 2.9, 3.1, 3.5035, 4.1]
        ours = [2.3, 2.5, 2.9, 3.1000001, 3.52, 4.3]   # off by 6e-3 and 7e-2 from step 5
        p = bc.parity(self.with_layouts(ours, nchw, cl))[0]
        self.assertTrue(p["ok"])
        self.assertEqual(p["checked_steps"], 4)
        self.assertGreater(p["max_rel_diff_all_steps"], bc.PARITY_RTOL)

    def test_divergence_while_pytorch_agrees_with_itself_fails(self):
        nchw = [2.3, 2.5, 2.9, 3.1, 3.5]
        p = bc.parity(self.with_layouts([2.3, 2.5, 2.9, 3.2, 3.5], nchw, list(nchw)))[0]
        self.assertFalse(p["ok"])
        self.assertEqual(p["checked_steps"], 5)

    def test_first_steps_are_always_checked(self):
        nchw = [2.3, 2.5, 2.9]
        cl = [2.3, 2.6, 3.0]   # PyTorch disagrees with itself from step 2
        p = bc.parity(self.with_layouts([2.3, 2.5, 2.95], nchw, cl))[0]
        self.assertEqual(p["checked_steps"], bc.PARITY_MIN_STEPS)
        self.assertFalse(p["ok"])


class Usage(unittest.TestCase):
    def cli(self, *args):
        return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench_compare.py")] + list(args),
                              capture_output=True, text=True)

    def test_bad_arguments_exit_2(self):
        for args in (["--pairs", "0"], ["--models", "vgg99"], ["--search", "nosuchmodel"]):
            p = self.cli(*args)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn("error", p.stderr)

    def test_missing_json_exits_1(self):
        p = self.cli("--from", "/nonexistent/compare.json")
        self.assertEqual(p.returncode, 1)
        self.assertIn("/nonexistent/compare.json", p.stderr)


@unittest.skipIf(torch is None, "needs Debian's python3-torch")
class Baseline(unittest.TestCase):
    def layers(self):
        g = torch.Generator().manual_seed(3)
        return [("a", torch.randn(6, 3, 3, 3, generator=g) * 0.1), ("b", torch.randn(4, 20, generator=g) * 0.1)]

    def test_auto_eps_is_the_smallest_reaching_the_target(self):
        import numpy as np
        layers, c, target = self.layers(), 0.01, 3.0

        def expected(eps):
            return sum(min(1, p.shape[0]) / p.shape[0] * int((np.abs(p.numpy().reshape(-1) - np.float32(c)) < eps).sum())
                       for _, p in layers) / len(layers)

        eps = np.float32(st.auto_eps(layers, c, 1, target))
        self.assertGreaterEqual(expected(eps), target)
        self.assertLess(expected(np.nextafter(eps, np.float32(0))), target)

    def test_obfuscation_moves_only_masked_weights_within_clamp(self):
        torch.manual_seed(0)
        model = st.torch_models.build("lenet5", 1, 10, 28)
        layers = st.eligible(model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        c, lo, hi = st.stats(layers)
        masks = st.masks_for(layers, [[0]] * len(layers), c, (hi - lo) * 0.05)
        obf = st.Obfuscator(model, layers, lo, hi, lr=0.05)
        obf.start(masks)
        x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
        losses = [obf.step(x, y) for _ in range(5)]
        self.assertGreater(losses[-1], losses[0])           # the cross-entropy is maximised
        names = {n for n, _ in layers}
        for (name, p), m in zip(layers, masks):
            moved = p.detach() != before[name]
            self.assertTrue(bool(moved[m == 0].logical_not().all()), name)
            self.assertTrue(bool(moved.any()), name)
            self.assertGreaterEqual(p.min().item(), lo)
            self.assertLessEqual(p.max().item(), hi)
        for k, v in model.state_dict().items():
            if k not in names:
                self.assertTrue(torch.equal(v, before[k]), k)   # BN, biases: untouched (eval mode)

    def test_reinforce_concentrates_on_the_best_filter(self):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(0)
        ctrl = st.Controller([5, 3], hidden=16, token_size=8)
        opt = torch.optim.Adam(ctrl.parameters(), lr=0.05)
        for _ in range(40):
            eps = [ctrl.sample(gen) for _ in range(5)]
            rewards = [1.0 if d[0] == 2 else 0.0 for _, d in eps]
            opt.zero_grad()
            ctrl.loss(eps, rewards).backward()
            opt.step()
        tokens = torch.randint(0, ctrl.max_token + 1, (64, 2), generator=gen)
        with torch.no_grad():
            p = ctrl.log_probs(tokens)[0].exp()[:, 2].mean().item()
        self.assertGreater(p, 0.8)   # the authors' sign would drive it towards 0


if __name__ == "__main__":
    unittest.main()
