#!/usr/bin/python3
"""Tests of the Python tools: tools/safetensors_np.py (numpy reader/writer),
tools/torch_to_safetensors.py and tools/safetensors_to_torch.py.

Run with tests/python/run_all.py, or: /usr/bin/python3 -m unittest tests/python/test_tools.py
"""
import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tempdir_case  # noqa: E402
from collections import OrderedDict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import numpy as np  # noqa: E402

from safetensors_np import SafetensorsError, load_file, save_file  # noqa: E402

try:
    import torch
    import torch.nn as nn
    HAVE_TORCH = True
except ImportError:  # pragma: no cover - Debian's python3-torch is expected
    HAVE_TORCH = False

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def raw_file(header, body):
    """safetensors bytes from a header (dict or raw JSON text) and a body (bytes or a length)."""
    h = header if isinstance(header, (bytes, str)) else json.dumps(header)
    h = h.encode("utf-8") if isinstance(h, str) else h
    if isinstance(body, int):
        body = bytes(i % 251 for i in range(body))
    return struct.pack("<Q", len(h)) + h + body


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


class TempDirCase(tempdir_case.TempDirCase):
    prefix = "nns-tools-"

    def write(self, name, data):
        p = self.path(name)
        with open(p, "wb") as f:
            f.write(data)
        return p


# --------------------------------------------------------------------------- numpy reader/writer

class NumpySafetensorsTest(TempDirCase):
    def test_round_trip_keeps_order_dtypes_and_metadata(self):
        t = OrderedDict()
        t["z.weight"] = np.arange(12, dtype=np.float32).reshape(3, 4) / 3
        t["bn.num_batches_tracked"] = np.array(5, dtype=np.int64)
        t["a.half"] = np.array([1.0, -0.0, 2 ** -24], dtype=np.float16)
        t["idx"] = np.array([7, -1], dtype=np.int32)
        t["pix"] = np.array([[0, 255]], dtype=np.uint8)
        p = self.path("rt.safetensors")
        save_file(t, p, metadata={"arch": "lenet5", "classes": 10})
        got, meta = load_file(p)
        self.assertEqual(list(got), list(t))
        self.assertEqual(meta, {"arch": "lenet5", "classes": "10"})
        for k in t:
            self.assertEqual(got[k].dtype, t[k].dtype, k)
            self.assertEqual(got[k].shape, t[k].shape, k)
            np.testing.assert_array_equal(got[k], t[k])
        with open(p, "rb") as f:
            data = f.read()
        (n,) = struct.unpack("<Q", data[:8])
        self.assertEqual((8 + n) % 8, 0)
        self.assertEqual(os.listdir(self.dir), ["rt.safetensors"])

    def test_bf16_is_read_as_float32(self):
        bits = np.array([0x3F80, 0xC049, 0x7F80], dtype="<u2").tobytes()
        p = self.write("bf.safetensors", raw_file({"b": entry("BF16", [3], 0, 6)}, bits))
        got, _ = load_file(p)
        self.assertEqual(got["b"].dtype, np.float32)
        self.assertEqual(list(got["b"][:2]), [1.0, -3.140625])
        self.assertTrue(np.isinf(got["b"][2]))

    def assertRejected(self, data, pattern):
        p = self.write("bad.safetensors", data)
        with self.assertRaisesRegex(SafetensorsError, pattern):
            load_file(p)

    def test_rejects_gap(self):
        h = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 24, 32)}
        self.assertRejected(raw_file(h, 32), r"tensor 'b' starts at 24, expected 8 \(gap or overlap\)")

    def test_rejects_overlap(self):
        h = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 4, 12)}
        self.assertRejected(raw_file(h, 12), r"tensor 'b' starts at 4, expected 8")

    def test_rejects_truncation(self):
        h = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 8, 16)}
        self.assertRejected(raw_file(h, 12), r"tensor 'b' offsets \[8, 16\] outside data of 12 bytes")

    def test_rejects_trailing_bytes(self):
        self.assertRejected(raw_file({"a": entry("F32", [2], 0, 8)}, 20), "12 trailing bytes after the last tensor")

    def test_rejects_size_shape_mismatch(self):
        h = {"fc.weight": entry("F32", [10, 84], 0, 400)}
        self.assertRejected(raw_file(h, 400), r"tensor 'fc.weight' has 400 bytes, shape \[10, 84\] F32 needs 3360")

    def test_rejects_bad_json(self):
        self.assertRejected(raw_file('{"a": ', 0), "header is not valid JSON")
        self.assertRejected(raw_file(b'{"\xff": 1}', 0), "header is not valid JSON")

    def test_rejects_header_bounds(self):
        self.assertRejected(struct.pack("<Q", 10 ** 12) + b" " * 16, "header length 1000000000000 exceeds file size 24")
        self.assertRejected(b"abc", "file too short")

    def test_rejects_unknown_dtype(self):
        self.assertRejected(raw_file({"a": entry("Q4", [2], 0, 2)}, 2), "tensor 'a' has unsupported dtype Q4")


# ---------------------------------------------------------------------------------- converter

if HAVE_TORCH:
    class TinyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 3, 3)
            self.bn = nn.BatchNorm2d(3)
            self.fc = nn.Linear(12, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.bn(self.conv(x)), 1))


def _tiny_state_dict():
    torch.manual_seed(0)
    m = TinyNet()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
        m.bn.num_batches_tracked.fill_(7)
    return m.state_dict()


def _run_tool(module_name, argv):
    """Runs tools/<module>.main(argv) in this process; returns (status, stdout, stderr)."""
    mod = __import__(module_name)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = mod.main(argv)
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def _run_script(script, *args):
    """Runs a tool as a program with /usr/bin/python3; returns the CompletedProcess."""
    return subprocess.run([PYTHON, os.path.join(TOOLS, script), *args],
                          capture_output=True, text=True, timeout=300)


@unittest.skipUnless(HAVE_TORCH, "torch not importable (install python3-torch)")
class TorchToSafetensorsTest(TempDirCase):
    def convert(self, obj, *extra, name="in.pt"):
        src = self.path(name)
        torch.save(obj, src)
        dst = self.path("out.safetensors")
        rc, out, err = _run_tool("torch_to_safetensors", [src, dst, *extra])
        return rc, out, err, dst

    def assert_matches(self, got, sd):
        self.assertEqual(list(got), list(sd))  # state_dict order kept
        for k, v in sd.items():
            want = v.detach().cpu().numpy()
            self.assertEqual(got[k].dtype, want.dtype, k)
            self.assertEqual(got[k].shape, want.shape, k)
            np.testing.assert_array_equal(got[k], want, err_msg=k)

    def test_state_dict_round_trip(self):
        sd = _tiny_state_dict()
        rc, out, err, dst = self.convert(sd, "--arch", "tinynet", "--dataset", "fashion_mnist",
                                         "--meta", "eps=0.5", "--meta", "note=a=b")
        self.assertEqual(rc, 0, err)
        self.assertIn("9 tensors", out)
        got, meta = load_file(dst)
        self.assert_matches(got, sd)
        nbt = got["bn.num_batches_tracked"]
        self.assertEqual(nbt.dtype, np.int64)
        self.assertEqual(nbt.shape, ())
        self.assertEqual(int(nbt), 7)
        self.assertEqual(meta["arch"], "tinynet")
        self.assertEqual(meta["dataset"], "fashion_mnist")
        self.assertEqual(meta["source"], "in.pt")
        self.assertEqual(meta["eps"], "0.5")
        self.assertEqual(meta["note"], "a=b")
        self.assertEqual(sorted(os.listdir(self.dir)), ["in.pt", "out.safetensors"])

    def test_meta_overrides_and_bad_meta(self):
        rc, _, err, dst = self.convert(_tiny_state_dict(), "--arch", "x", "--meta", "arch=y")
        self.assertEqual(rc, 0, err)
        self.assertEqual(load_file(dst)[1]["arch"], "y")
        rc, _, err, _ = self.convert(_tiny_state_dict(), "--meta", "novalue")
        self.assertEqual(rc, 2)
        self.assertIn("--meta 'novalue': expected key=value", err)

    def test_strips_data_parallel_prefix(self):
        sd = _tiny_state_dict()
        wrapped = OrderedDict(("module." + k, v) for k, v in sd.items())
        rc, _, err, dst = self.convert(wrapped)
        self.assertEqual(rc, 0, err)
        self.assertIn("stripped the 'module.' prefix", err)
        self.assert_matches(load_file(dst)[0], sd)

    def test_keeps_prefix_when_not_on_every_key(self):
        sd = OrderedDict([("module.a", torch.ones(2)), ("b", torch.zeros(1))])
        rc, _, err, dst = self.convert(sd)
        self.assertEqual(rc, 0, err)
        self.assertEqual(list(load_file(dst)[0]), ["module.a", "b"])

    def test_unwraps_checkpoint_dicts(self):
        sd = _tiny_state_dict()
        for key in ("state_dict", "model_state_dict", "model"):
            with self.subTest(key=key):
                ckpt = {"epoch": 3, key: sd, "arch": "tinynet"}
                rc, _, err, dst = self.convert(ckpt)
                self.assertEqual(rc, 0, err)
                self.assertIn(f"checkpoint['{key}']", err)
                self.assert_matches(load_file(dst)[0], sd)
        # A DataParallel state_dict inside a checkpoint.
        ckpt = {"state_dict": OrderedDict(("module." + k, v) for k, v in sd.items())}
        rc, _, err, dst = self.convert(ckpt)
        self.assertEqual(rc, 0, err)
        self.assert_matches(load_file(dst)[0], sd)

    def test_checkpoint_with_floats_needs_unsafe_load(self):
        # torch 1.13's weights_only loader refuses Python floats; --unsafe-load reads them.
        sd = _tiny_state_dict()
        src = self.path("ck.pt")
        torch.save({"state_dict": sd, "best_acc": 0.91}, src)
        dst = self.path("out.safetensors")
        rc, _, err = _run_tool("torch_to_safetensors", [src, dst])
        if rc == 0:  # a newer torch whose safe loader accepts floats
            self.assert_matches(load_file(dst)[0], sd)
        else:
            self.assertEqual(rc, 2)
            self.assertIn("--unsafe-load", err)
            self.assertFalse(os.path.exists(dst))
        rc, _, err = _run_tool("torch_to_safetensors", [src, dst, "--unsafe-load"])
        self.assertEqual(rc, 0, err)
        self.assert_matches(load_file(dst)[0], sd)

    def test_dtype_conversions(self):
        sd = OrderedDict()
        sd["f64"] = torch.tensor([1.5, -2.25], dtype=torch.float64)
        sd["f16"] = torch.tensor([0.5, 65504.0], dtype=torch.float16)
        sd["bf16"] = torch.tensor([1.0, -3.140625], dtype=torch.bfloat16)
        sd["i64"] = torch.tensor([2 ** 40, -1], dtype=torch.int64)
        sd["i32"] = torch.tensor([3], dtype=torch.int32)
        sd["u8"] = torch.tensor([255], dtype=torch.uint8)
        sd["f32_t"] = torch.arange(6, dtype=torch.float32).reshape(2, 3).t()  # non-contiguous
        rc, _, err, dst = self.convert(sd)
        self.assertEqual(rc, 0, err)
        for name in ("f64", "f16", "bf16"):
            self.assertIn(f"tensor '{name}'", err)
            self.assertIn("converted to F32", err)
        got, _ = load_file(dst)
        self.assertEqual(list(got), list(sd))
        self.assertEqual(got["f64"].dtype, np.float32)
        self.assertEqual(list(got["f64"]), [1.5, -2.25])
        self.assertEqual(list(got["f16"]), [0.5, 65504.0])
        self.assertEqual(got["bf16"].dtype, np.float32)
        self.assertEqual(list(got["bf16"]), [1.0, -3.140625])
        self.assertEqual(got["i64"].dtype, np.int64)
        self.assertEqual(list(got["i64"]), [2 ** 40, -1])
        self.assertEqual(got["i32"].dtype, np.int32)
        self.assertEqual(got["u8"].dtype, np.uint8)
        np.testing.assert_array_equal(got["f32_t"], np.array([[0, 3], [1, 4], [2, 5]], dtype=np.float32))

    def test_unsupported_dtype_is_an_error(self):
        rc, _, err, dst = self.convert(OrderedDict([("mask", torch.tensor([True, False]))]))
        self.assertEqual(rc, 2)
        self.assertIn("tensor 'mask' has dtype torch.bool", err)
        self.assertFalse(os.path.exists(dst))

    def test_not_a_state_dict(self):
        cases = [([1, 2, 3], "not a state_dict: the file holds a builtins.list"),
                 ({"epoch": 3, "lr": "0.1"}, "not a state_dict: the dict's entries 'epoch', 'lr' are not tensors"),
                 ({}, "not a state_dict: the file holds an empty dict"),
                 (torch.ones(3), "not a state_dict: the file holds a torch.Tensor")]
        for obj, msg in cases:
            with self.subTest(msg=msg):
                rc, _, err, dst = self.convert(obj)
                self.assertEqual(rc, 2, err)
                self.assertIn(msg, err)
                self.assertFalse(os.path.exists(dst))

    def test_program_exit_codes(self):
        # As a program: success, non-state-dict and missing file.
        sd = _tiny_state_dict()
        src = self.path("m.pt")
        torch.save(sd, src)
        dst = self.path("m.safetensors")
        p = _run_script("torch_to_safetensors.py", src, dst, "--arch", "tinynet")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assert_matches(load_file(dst)[0], sd)
        bad = self.path("list.pt")
        torch.save([1, 2], bad)
        p = _run_script("torch_to_safetensors.py", bad, self.path("x.safetensors"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a state_dict", p.stderr)
        p = _run_script("torch_to_safetensors.py", self.path("missing.pt"), self.path("x.safetensors"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("missing.pt: file not found", p.stderr)
        junk = self.write("junk.pt", b"this is not a checkpoint")
        p = _run_script("torch_to_safetensors.py", junk, self.path("x.safetensors"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("junk.pt: ", p.stderr)
        p = _run_script("torch_to_safetensors.py", src, self.path("no/such/dir/x.safetensors"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("does not exist", p.stderr)
        self.assertFalse(os.path.exists(self.path("x.safetensors")))


@unittest.skipUnless(HAVE_TORCH, "torch not importable (install python3-torch)")
class SafetensorsToTorchTest(TempDirCase):
    def test_round_trip_through_both_converters(self):
        sd = _tiny_state_dict()
        src = self.path("m.pt")
        torch.save(sd, src)
        st = self.path("m.safetensors")
        rc, _, err = _run_tool("torch_to_safetensors", [src, st, "--arch", "tinynet"])
        self.assertEqual(rc, 0, err)
        back = self.path("back.pt")
        rc, out, err = _run_tool("safetensors_to_torch", [st, back])
        self.assertEqual(rc, 0, err)
        self.assertIn("# arch = tinynet", out)
        got = torch.load(back)
        self.assertEqual(list(got), list(sd))
        for k, v in sd.items():
            self.assertEqual(got[k].dtype, v.dtype, k)
            self.assertEqual(got[k].shape, v.shape, k)
            self.assertTrue(torch.equal(got[k], v), k)
        self.assertEqual(got["bn.num_batches_tracked"].dtype, torch.int64)
        m = TinyNet()
        m.load_state_dict(got, strict=True)
        self.assertEqual(sorted(os.listdir(self.dir)), ["back.pt", "m.pt", "m.safetensors"])

    def test_numpy_written_file(self):
        t = OrderedDict([("w", np.arange(6, dtype=np.float32).reshape(2, 3)),
                         ("n", np.array(9, dtype=np.int64)),
                         ("h", np.array([0.5], dtype=np.float16))])
        st = self.path("np.safetensors")
        save_file(t, st)
        back = self.path("np.pt")
        p = _run_script("safetensors_to_torch.py", st, back)
        self.assertEqual(p.returncode, 0, p.stderr)
        got = torch.load(back)
        self.assertEqual(list(got), ["w", "n", "h"])
        self.assertEqual(got["n"].dtype, torch.int64)
        self.assertEqual(got["n"].shape, torch.Size([]))
        self.assertEqual(int(got["n"]), 9)
        self.assertEqual(got["h"].dtype, torch.float16)
        self.assertTrue(torch.equal(got["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3)))

    def test_errors(self):
        rc, _, err = _run_tool("safetensors_to_torch", [self.path("missing.safetensors"), self.path("o.pt")])
        self.assertEqual(rc, 2)
        self.assertIn("missing.safetensors: file not found", err)
        h = {"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 24, 32)}
        bad = self.write("gap.safetensors", raw_file(h, 32))
        p = _run_script("safetensors_to_torch.py", bad, self.path("o.pt"))
        self.assertEqual(p.returncode, 2)
        self.assertIn("gap.safetensors: tensor 'b' starts at 24", p.stderr)
        self.assertFalse(os.path.exists(self.path("o.pt")))


if __name__ == "__main__":
    unittest.main()
