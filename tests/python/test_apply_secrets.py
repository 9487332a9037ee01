#!/usr/bin/python3
"""Tests of tools/apply_secrets.py (numpy-only restoration from NNSplitter secrets), alone and
against the nnsplitter binary: secrets written by Python are restored by `nnsplitter restore`
(which also proves the Python fingerprint equals the C++ one), and secrets written by
`nnsplitter protect` are restored bit-exactly by apply_secrets.py.

Run with tests/python/run_all.py [BINARY], or:
    /usr/bin/python3 tests/python/test_apply_secrets.py [BINARY]
The binary comes from NNS_BINARY (run_all.py exports it) or the first argument; the tests that
need it are skipped when it is missing or lacks the subcommand.
"""
import json
import os
import struct
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tempdir_case  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(ROOT, "tools")
sys.path.insert(0, TOOLS)

import numpy as np  # noqa: E402

import apply_secrets as aps  # noqa: E402
from safetensors_np import load_file, save_file  # noqa: E402

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
TOOL = os.path.join(TOOLS, "apply_secrets.py")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "lenet5.safetensors")
LENET_META = {"arch": "lenet5", "in_channels": "1", "input_size": "28", "num_classes": "10",
              "width_mult": "1", "format": "nnsplitter-weights-1", "dataset": "synthetic"}


def binary():
    b = os.environ.get("NNS_BINARY", "")
    return b if b and os.path.isfile(b) and os.access(b, os.X_OK) else None


def has_command(cmd):
    b = binary()
    if not b:
        return False
    r = subprocess.run([b, cmd, "--help"], capture_output=True, text=True)
    return r.returncode == 0


def lenet_state():
    """The lenet5 state dict of the PyTorch fixture, in state-dict order."""
    t, _ = load_file(FIXTURE)
    order = ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
             "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"]
    return {k: np.ascontiguousarray(t["state." + k], dtype=np.float32) for k in order}


def obfuscate(state, per_tensor=40, seed=0):
    """Mimics NNSplitter: a few entries of a few filters pushed to clamp-like values."""
    rng = np.random.default_rng(seed)
    out = {k: v.copy() for k, v in state.items()}
    for k in ["conv1.weight", "conv2.weight", "fc1.weight", "fc3.weight"]:
        flat = out[k].reshape(-1)
        rows = out[k].shape[0]
        row = flat.size // rows
        filt = rng.choice(rows, size=min(2, rows), replace=False)
        cand = np.concatenate([np.arange(f * row, (f + 1) * row) for f in filt])
        idx = rng.choice(cand, size=min(per_tensor, cand.size), replace=False)
        flat[idx] = np.where(np.arange(idx.size) % 2, 0.24, -0.14).astype(np.float32)
        flat[idx[flat[idx] == state[k].reshape(-1)[idx]]] *= -1
    return out


def same_bits(a, b):
    return set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes()
        for k in a)


class TempDirCase(tempdir_case.TempDirCase):
    prefix = "nns-apply-secrets-"

    def tool(self, *args):
        return subprocess.run([PYTHON, TOOL, *args], capture_output=True, text=True)


class PythonOnly(TempDirCase):
    def setUp(self):
        super().setUp()
        self.orig = lenet_state()
        self.obf = obfuscate(self.orig)
        save_file(self.orig, self.path("orig.safetensors"), metadata=LENET_META)
        save_file(self.obf, self.path("obf.safetensors"), metadata=LENET_META)
        self.secrets, self.meta = aps.make_secrets(self.orig, self.obf, {"arch": "lenet5"})
        aps.save_secrets(self.path("sec.safetensors"), self.secrets, self.meta)

    def test_round_trip_bit_exact(self):
        self.assertEqual(sum(len(i) for i, _ in self.secrets.values()), 160)
        r = self.tool(self.path("obf.safetensors"), self.path("sec.safetensors"),
                      self.path("out.safetensors"), "--verify-fingerprint")
        self.assertEqual(r.returncode, 0, r.stderr)
        out, meta = load_file(self.path("out.safetensors"))
        self.assertTrue(same_bits(out, self.orig))
        self.assertEqual(meta, LENET_META)
        self.assertEqual(aps.fingerprint(out), self.meta["original_fingerprint"])
        # Tensor order of OBF kept (data order).
        self.assertEqual(aps._tensor_order(self.path("out.safetensors")), list(self.orig))

    def test_fingerprint_properties(self):
        fp = aps.fingerprint(self.orig)
        self.assertEqual(len(fp), 64)
        self.assertEqual(fp, aps.fingerprint(dict(reversed(list(self.orig.items())))))
        flipped = {k: v.copy() for k, v in self.orig.items()}
        flipped["fc2.weight"].reshape(-1).view(np.uint32)[5] ^= 1
        self.assertNotEqual(fp, aps.fingerprint(flipped))
        self.assertNotEqual(fp, aps.fingerprint(self.obf))

    def test_sealed_file_is_refused(self):
        with open(self.path("sealed"), "wb") as f:
            f.write(b"NNSSEAL1" + struct.pack("<Q", 2) + b"{}" + bytes(64))
        r = self.tool(self.path("obf.safetensors"), self.path("sealed"), self.path("out"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("sealed: use nnsplitter restore --key", r.stderr)
        self.assertFalse(os.path.exists(self.path("out")))

    def test_other_model_is_refused_with_verify(self):
        r = self.tool(self.path("orig.safetensors"), self.path("sec.safetensors"), self.path("out"),
                      "--verify-fingerprint")
        self.assertEqual(r.returncode, 1)
        self.assertIn("secrets belong to model", r.stderr)
        self.assertFalse(os.path.exists(self.path("out")))

    def test_tampered_secrets_restore_nothing(self):
        """Always verified (no flag needed): a changed original value, a flipped index bit,
        removed entries with counts fixed, a missing original_fingerprint, OUT over an input."""
        def tampered(edit, meta_edit=None):
            secrets = {k: (i.copy(), o.copy()) for k, (i, o) in self.secrets.items()}
            meta = dict(self.meta)
            edit(secrets)
            if meta_edit:
                meta_edit(meta)
            if "original_fingerprint" in meta:
                aps.save_secrets(self.path("bad"), secrets, meta)
            else:  # behind save_secrets' back, as an older protect wrote it
                tensors = {}
                for k, (i, o) in secrets.items():
                    tensors[k + ".index"], tensors[k + ".original"] = i, o
                save_file(tensors, self.path("bad"), metadata={**meta, "format": aps.SECRETS_FORMAT})
            return self.tool(self.path("obf.safetensors"), self.path("bad"), self.path("out"))

        key = next(iter(self.secrets))
        cases = {
            "changed original": lambda s: s[key][1].__setitem__(0, s[key][1][0] + 1),
            "flipped index bit": lambda s: s.__setitem__(key, (s[key][0] ^ (s[key][0] == s[key][0][0]), s[key][1])),
            "entries removed": lambda s: s.__setitem__(key, (s[key][0][:-3], s[key][1][:-3])),
            "all removed": lambda s: s.clear(),
        }
        for name, edit in cases.items():
            with self.subTest(name):
                r = tampered(edit)
                self.assertEqual(r.returncode, 1, r.stderr)
                self.assertTrue("restoring would give a model" in r.stderr
                                or "not sorted" in r.stderr or "duplicate" in r.stderr, r.stderr)
                self.assertFalse(os.path.exists(self.path("out")))
        r = tampered(lambda s: None, lambda m: m.pop("original_fingerprint"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no original_fingerprint", r.stderr)
        self.assertFalse(os.path.exists(self.path("out")))
        with open(self.path("obf.safetensors"), "rb") as f:
            before = f.read()
        r = self.tool(self.path("obf.safetensors"), self.path("sec.safetensors"),
                      os.path.join(self.dir, ".", "obf.safetensors"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("same file as OBF", r.stderr)
        with open(self.path("obf.safetensors"), "rb") as f:
            self.assertEqual(f.read(), before)

    def test_damaged_sealed_magic_is_named(self):
        with open(self.path("sealed"), "wb") as f:
            f.write(b"NNSSEAL2" + struct.pack("<Q", 2) + b"{}" + bytes(64))
        r = self.tool(self.path("obf.safetensors"), self.path("sealed"), self.path("out"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("looks like a sealed secrets file with a damaged header", r.stderr)
        self.assertFalse(os.path.exists(self.path("out")))

    def test_malformed_secrets_are_refused(self):
        fp = self.meta["fingerprint"]
        base = {"format": aps.SECRETS_FORMAT, "fingerprint": fp,
                "original_fingerprint": self.meta["original_fingerprint"]}
        cases = {
            "not sorted": {"conv1.weight.index": np.array([3, 2], np.int64),
                           "conv1.weight.original": np.array([1, 2], np.float32)},
            "duplicate index": {"conv1.weight.index": np.array([2, 2], np.int64),
                                "conv1.weight.original": np.array([1, 2], np.float32)},
            "lengths must match": {"conv1.weight.index": np.array([2, 3], np.int64),
                                   "conv1.weight.original": np.array([1], np.float32)},
            "has no matching": {"conv1.weight.index": np.array([2], np.int64)},
            "expected I64": {"conv1.weight.index": np.array([2], np.int32),
                             "conv1.weight.original": np.array([1], np.float32)},
            "expected F32": {"conv1.weight.index": np.array([2], np.int64),
                             "conv1.weight.original": np.array([1], np.float64)},
            "unexpected tensor": {"conv1.weight.index": np.array([2], np.int64),
                                  "conv1.weight.original": np.array([1], np.float32),
                                  "junk": np.array([1], np.float32)},
            "out of range": {"conv1.weight.index": np.array([150], np.int64),
                             "conv1.weight.original": np.array([1], np.float32)},
            "does not have": {"conv9.weight.index": np.array([1], np.int64),
                              "conv9.weight.original": np.array([1], np.float32)},
            "negative": {"conv1.weight.index": np.array([-1], np.int64),
                         "conv1.weight.original": np.array([1], np.float32)},
        }
        for needle, tensors in cases.items():
            with self.subTest(needle):
                save_file(tensors, self.path("bad"), metadata=base)
                r = self.tool(self.path("obf.safetensors"), self.path("bad"), self.path("out"))
                self.assertEqual(r.returncode, 1, r.stdout)
                self.assertIn(needle, r.stderr)
                self.assertFalse(os.path.exists(self.path("out")))
        save_file({}, self.path("nofmt"), metadata={"fingerprint": fp})
        r = self.tool(self.path("obf.safetensors"), self.path("nofmt"), self.path("out"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a secrets file", r.stderr)
        r = self.tool(self.path("obf.safetensors"), self.path("obf.safetensors"), self.path("out"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("weights file", r.stderr)
        r = self.tool(self.path("obf.safetensors"))
        self.assertEqual(r.returncode, 2)


class WithBinary(TempDirCase):
    def setUp(self):
        super().setUp()
        if not has_command("restore"):
            self.skipTest("no nnsplitter binary with 'restore' (set NNS_BINARY)")
        self.bin = binary()

    def run_bin(self, *args):
        return subprocess.run([self.bin, *args], capture_output=True, text=True)

    def test_python_secrets_restored_by_nnsplitter(self):
        orig = lenet_state()
        obf = obfuscate(orig, seed=3)
        save_file(obf, self.path("obf.safetensors"), metadata=LENET_META)
        secrets, meta = aps.make_secrets(orig, obf)
        aps.save_secrets(self.path("sec.safetensors"), secrets, meta)
        r = self.run_bin("restore", "--weights", self.path("obf.safetensors"), "--secrets",
                         self.path("sec.safetensors"), "--out", self.path("out.safetensors"),
                         "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        j = json.loads(r.stdout.strip().splitlines()[-1])
        # Same fingerprint encoding in Python and C++.
        self.assertEqual(j["obfuscated_fingerprint"], aps.fingerprint(obf))
        self.assertEqual(j["fingerprint"], aps.fingerprint(orig))
        self.assertEqual(j["restored_weights"], 160)
        out, _ = load_file(self.path("out.safetensors"))
        self.assertTrue(same_bits(out, orig))

    def test_nnsplitter_secrets_restored_by_python(self):
        if not has_command("protect") or not has_command("train"):
            self.skipTest("binary lacks 'train' or 'protect'")
        r = self.run_bin("train", "--model", "lenet5", "--dataset", "synthetic", "--epochs", "1",
                         "--out", self.path("w.safetensors"))
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.run_bin("protect", "--weights", self.path("w.safetensors"), "--dataset",
                         "synthetic", "--out", self.path("prot"), "--set", "splitter.val_size=500",
                         "--set", "controller.updates=1", "--set", "splitter.max_epochs=2")
        if r.returncode == 2:
            self.skipTest("protect configuration changed: " + r.stderr.strip()[-200:])
        self.assertEqual(r.returncode, 0, r.stderr)
        obf_path = os.path.join(self.path("prot"), "obfuscated.safetensors")
        sec_path = os.path.join(self.path("prot"), "secrets.safetensors")
        r = self.tool(obf_path, sec_path, self.path("out.safetensors"), "--verify-fingerprint")
        self.assertEqual(r.returncode, 0, r.stderr)
        out, _ = load_file(self.path("out.safetensors"))
        orig, _ = load_file(self.path("w.safetensors"))
        self.assertTrue(same_bits(out, orig))
        _, smeta = load_file(sec_path)
        self.assertEqual(aps.fingerprint(load_file(obf_path)[0]), smeta["fingerprint"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and os.path.isfile(sys.argv[1]):
        os.environ["NNS_BINARY"] = os.path.abspath(sys.argv.pop(1))
    unittest.main()
