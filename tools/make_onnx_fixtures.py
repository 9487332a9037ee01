#!/usr/bin/python3
"""Fixtures of the ONNX reader (issue 17): models exported by Debian's torch and torchvision,
with PyTorch's outputs to compare with, and malformed or unsupported files.

    /usr/bin/python3 tools/make_onnx_fixtures.py                 # tests/fixtures/onnx (committed)
    /usr/bin/python3 tools/make_onnx_fixtures.py --big DIR       # torchvision models (test time)

Committed (small): custom_cnn_folded.onnx and custom_cnn_bn.onnx (tools/onnx_models.py's
CustomCNN, width 4, 1x28x28, 10 classes, random BatchNorm statistics; the two export forms) and
custom_cnn.ref.safetensors:
  input [4, 1, 28, 28]; logits (eval mode);
  train.labels, train.logits, train.loss: training mode (batch statistics, dropout off),
      mean cross-entropy;
  grad.NAME: the gradient of that loss w.r.t. every parameter, NAME the initializer name of the
      "bn" form (the state_dict names; "proj", a MatMul weight, transposed to [out, in] as the
      reader holds it);
  after.NAME: the BatchNorm running statistics after that training-mode forward.
Plus tiny_valid.onnx (Conv, GlobalAveragePool, Flatten, Gemm on 1x8x8) and bad_*.onnx: one
unsupported or malformed model each (the name says which); all of them seed the fuzz corpus.

--big DIR writes, for torchvision resnet18, mobilenet_v2, squeezenet1_1 and shufflenet_v2_x0_5
(3x32x32, 10 classes, random BatchNorm statistics): NAME_folded.onnx, NAME.ref.safetensors
(input [2, 3, 32, 32], logits); resnet18 and mobilenet_v2 also as NAME_bn.onnx (BatchNorm kept,
state_dict names). And zoo_resnet18.onnx, zoo_resnet18_bn.onnx: our zoo's CIFAR resnet18
(tools/torch_models.py) in both forms, for the speed comparison with the zoo model (bench). A
few seconds per model.
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import onnx_models  # noqa: E402
from safetensors_np import save_file  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def np32(t):
    return t.detach().cpu().contiguous().numpy().astype(np.float32)


def custom_cnn(out):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    m = onnx_models.build("custom_cnn", 1, 10, 4)
    onnx_models.randomize_bn(m, gen)
    onnx_models.export(m, os.path.join(out, "custom_cnn_folded.onnx"), "folded", 1, 28)
    onnx_models.export(m, os.path.join(out, "custom_cnn_bn.onnx"), "bn", 1, 28)
    x = torch.randn(4, 1, 28, 28, generator=gen)
    ref = {"input": np32(x)}
    m.eval()
    with torch.no_grad():
        ref["logits"] = np32(m(x))
    # Training mode, dropout off: batch statistics, gradients of the mean cross-entropy.
    m.train()
    for mod in m.modules():
        if isinstance(mod, nn.Dropout):
            mod.eval()
    labels = torch.tensor([3, 1, 7, 0])
    m.zero_grad()
    logits = m(x)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    ref["train.labels"] = labels.numpy().astype(np.int64)
    ref["train.logits"] = np32(logits)
    ref["train.loss"] = np.array([float(loss)], dtype=np.float32)
    for name, p in m.named_parameters():
        g = p.grad
        if name == "proj":
            g = g.t()
        ref["grad." + name] = np32(g)
    for name, b in m.named_buffers():
        if "running" in name:
            ref["after." + name] = np32(b)
    save_file(ref, os.path.join(out, "custom_cnn.ref.safetensors"), {"source": "tools/make_onnx_fixtures.py"})


class Extras(nn.Module):
    """Normalisation inside the model (Sub, Div by initializers), Squeeze/Unsqueeze of values,
    Tanh, a general Clip; the fixture adds a node nothing reads (dropped at import)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.25]).view(1, 1, 1, 1))
        self.register_buffer("std", torch.tensor([0.5]).view(1, 1, 1, 1))
        self.conv = nn.Conv2d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6, 10)

    def forward(self, x):
        x = (x - self.mean) / self.std
        x = torch.clamp(torch.tanh(self.conv(x)), -0.5, 0.75)
        x = F.adaptive_avg_pool2d(x, 1).squeeze(-1).squeeze(-1)   # [N, 6]
        x = x.unsqueeze(1).unsqueeze(-1)                           # [N, 1, 6, 1]
        return self.fc(torch.flatten(x, 1))


def extras(out):
    import onnx
    from onnx import helper
    torch.manual_seed(3)
    m = Extras().eval()
    path = os.path.join(out, "extras.onnx")
    onnx_models.export(m, path, "folded", 1, 8)
    model = onnx.load(path)
    conv_out = [n for n in model.graph.node if n.op_type == "Conv"][0].output[0]
    model.graph.node.append(helper.make_node("Relu", [conv_out], ["unused"], name="dead_relu"))
    onnx.save(model, path)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        save_file({"input": np32(x), "logits": np32(m(x))}, os.path.join(out, "extras.ref.safetensors"))


def bad_models(out):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def save(name, graph, opset=13, **kw):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                                  producer_name="make_onnx_fixtures", **kw)
        model.ir_version = 7
        onnx.save(model, os.path.join(out, name))

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv.weight")
    fc = numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "fc.weight")
    head = [helper.make_node("Conv", ["input", "conv.weight"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
            helper.make_node("Flatten", ["p"], ["f"], name="flat"),
            helper.make_node("Gemm", ["f", "fc.weight"], ["logits"], name="fc", transB=1)]

    def graph(nodes, inits=(w, fc), inputs=(x,), outputs=(y,)):
        return helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))

    # A valid tiny model (the seed the others vary).
    save("tiny_valid.onnx", graph(head))
    # Unsupported op between the convolution and the pool.
    save("bad_unsupported_op.onnx", graph([
        helper.make_node("Conv", ["input", "conv.weight"], ["c0"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("LRN", ["c0"], ["c"], name="my_lrn", size=3)] + head[1:]))
    # Unsupported op in another domain.
    g = graph([helper.make_node("Conv", ["input", "conv.weight"], ["c0"], name="conv", pads=[1, 1, 1, 1]),
               helper.make_node("FusedThing", ["c0"], ["c"], name="custom_op", domain="com.example")] + head[1:])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    model.ir_version = 7
    onnx.save(model, os.path.join(out, "bad_domain.onnx"))
    # A softmax at the end (not a logits output).
    soft = head[:-1] + [helper.make_node("Gemm", ["f", "fc.weight"], ["z"], name="fc", transB=1),
                        helper.make_node("Softmax", ["z"], ["logits"], name="softmax", axis=1)]
    save("bad_softmax.onnx", graph(soft))
    # Pad in reflect mode.
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads")
    save("bad_pad_reflect.onnx", graph([helper.make_node("Pad", ["input", "pads"], ["pd"], name="reflect_pad", mode="reflect"),
                                        helper.make_node("Conv", ["pd", "conv.weight"], ["c"], name="conv")] + head[1:],
                                       inits=(w, fc, pads)))
    # A 3-d convolution weight.
    w3 = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3, 3)).astype(np.float32), "conv.weight")
    save("bad_conv3d.onnx", graph(head, inits=(w3, fc)))
    # Height and width not fixed.
    xd = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, "h", "w"])
    save("bad_dynamic_size.onnx", graph(head, inputs=(xd,)))
    # Two inputs.
    x2 = helper.make_tensor_value_info("other", TensorProto.FLOAT, ["batch", 1, 8, 8])
    save("bad_two_inputs.onnx", graph(head, inputs=(x, x2)))
    # Output not [N, classes].
    y4 = helper.make_tensor_value_info("c", TensorProto.FLOAT, ["batch", 4, 8, 8])
    save("bad_output_4d.onnx", graph(head[:1], inits=(w,), outputs=(y4,)))
    # The weight does not fit the input channels (malformed).
    wbad = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "conv.weight")
    save("bad_weight_shape.onnx", graph(head, inits=(wbad, fc)))
    # A weight stored in an external file.
    wext = onnx.TensorProto()
    wext.CopyFrom(w)
    wext.ClearField("raw_data")
    wext.data_location = TensorProto.EXTERNAL
    e = wext.external_data.add()
    e.key, e.value = "location", "weights.bin"
    save("bad_external_data.onnx", graph(head, inits=(wext, fc)))
    # FLOAT16 weights.
    w16 = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float16), "conv.weight")
    save("bad_float16.onnx", graph(head, inits=(w16, fc)))
    # A node reading a value nobody writes.
    save("bad_undefined_input.onnx", graph([helper.make_node("Relu", ["nowhere"], ["r"], name="lost_relu")] + head))
    # A reshape that folds the batch into the features (a fixed-batch export).
    shape = numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "shape")
    save("bad_reshape_batch.onnx", graph(head[:2] + [helper.make_node("Reshape", ["p", "shape"], ["f"], name="fixed_reshape"),
                                                     head[3]], inits=(w, fc, shape)))
    # Two convolutions sharing one weight.
    save("bad_shared_weight.onnx", graph([
        helper.make_node("Conv", ["input", "conv.weight"], ["c0"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"], name="relu"),
        helper.make_node("Conv", ["r0", "conv2.weight"], ["c1"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "conv2.weight"], ["c"], name="conv3", pads=[1, 1, 1, 1])] + head[1:],
        inits=(w, fc, numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "conv2.weight"))))
    # Opset too old.
    save("bad_opset.onnx", graph(head), opset=3)
    # No nodes.
    save("bad_no_nodes.onnx", graph([]))
    # A NaN in a weight.
    wn = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    wn[0, 0, 1, 1] = np.nan
    save("bad_nan_weight.onnx", graph(head, inits=(numpy_helper.from_array(wn, "conv.weight"), fc)))
    # Truncated and garbage bytes.
    valid = open(os.path.join(out, "tiny_valid.onnx"), "rb").read()
    open(os.path.join(out, "bad_truncated.onnx"), "wb").write(valid[: len(valid) // 2])
    open(os.path.join(out, "bad_garbage.onnx"), "wb").write(b"\x08" + bytes(rng.integers(0, 256, 200, dtype=np.uint8)))
    open(os.path.join(out, "bad_empty.onnx"), "wb").write(b"")


def big(out):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    for name in ["resnet18", "mobilenet_v2", "squeezenet1_1", "shufflenet_v2_x0_5"]:
        m = onnx_models.torchvision_model(name, 3, 10)
        onnx_models.randomize_bn(m, gen)
        m.eval()
        onnx_models.export(m, os.path.join(out, name + "_folded.onnx"), "folded", 3, 32)
        if name in ("resnet18", "mobilenet_v2"):
            onnx_models.export(m, os.path.join(out, name + "_bn.onnx"), "bn", 3, 32)
        with torch.no_grad():
            logits = m(x)
        save_file({"input": np32(x), "logits": np32(logits)}, os.path.join(out, name + ".ref.safetensors"))
    # The zoo's CIFAR resnet18 in PyTorch, exported: the same network as `--model resnet18`.
    import torch_models
    m = torch_models.build("resnet18", 3, 10, 32, 1.0)
    m.eval()
    onnx_models.export(m, os.path.join(out, "zoo_resnet18.onnx"), "folded", 3, 32)
    onnx_models.export(m, os.path.join(out, "zoo_resnet18_bn.onnx"), "bn", 3, 32)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "onnx"))
    ap.add_argument("--big", metavar="DIR", help="write the torchvision fixtures to DIR instead")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    if a.big:
        os.makedirs(a.big, exist_ok=True)
        big(a.big)
        return 0
    os.makedirs(a.out, exist_ok=True)
    custom_cnn(a.out)
    extras(a.out)
    bad_models(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
