#!/usr/bin/python3
"""PyTorch models that nnsplitter reads as ONNX (issue 17), and how they are exported.

Used by tools/make_onnx_fixtures.py (test fixtures) and tools/train_onnx_models.py (the
acceptance models trained on Fashion-MNIST). Use /usr/bin/python3 (Debian's python3-torch,
python3-torchvision, python3-onnx).

- CustomCNN: a small classification CNN outside the zoo that uses every op of the issue's list:
  Conv (no bias, bias, depthwise groups, dilation, non-square kernels, stride, asymmetric pads
  through F.pad), BatchNormalization, Relu, Clip (ReLU6), Sigmoid, HardSigmoid * Mul (hardswish
  at opset 13), Mul (a squeeze-excitation gate), Add, Concat, MaxPool (ceil_mode, pads),
  AveragePool (ceil_mode; pads with count_include_pad=False), Pad, GlobalAveragePool, ReduceMean
  over H and W, Flatten, Reshape and Transpose (a channel shuffle), Slice (chunk) and Split
  (torch.split), Gemm, MatMul, Dropout and Identity.
- torchvision's resnet18, mobilenet_v2, squeezenet1_1 and shufflenet_v2_x0_5, optionally with a
  first convolution for 1 input channel.

Two export forms (docs/bring-your-model.md):
- "folded": the model in eval mode, torch.onnx.export's defaults. The exporter folds every
  BatchNorm into the preceding convolution; those initializers are named onnx::Conv_NN.
- "bn": the model in training mode with training=TrainingMode.TRAINING and
  do_constant_folding=False: BatchNormalization (and Dropout) nodes are kept and the
  initializers carry the state_dict names (layer1.0.conv1.weight, bn1.running_mean, ...).
Both: opset 13, input "input" [batch, C, H, W] and output "logits" [batch, classes] with a
dynamic batch.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

OPSET = 13


class SqueezeExcite(nn.Module):
    def __init__(self, c, reduce=4):
        super().__init__()
        self.fc1 = nn.Conv2d(c, max(1, c // reduce), 1)
        self.fc2 = nn.Conv2d(max(1, c // reduce), c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)                      # ReduceMean over H, W
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))     # Sigmoid
        return x * s                                          # Mul, broadcast [N,C,1,1]


class CustomCNN(nn.Module):
    """28x28 (or larger) inputs; `width` sets the channels (16 for the acceptance model)."""

    def __init__(self, in_ch=1, classes=10, width=16):
        super().__init__()
        w = width
        self.stem = nn.Conv2d(in_ch, w, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(w)
        self.dw = nn.Conv2d(w, w, 3, padding=2, dilation=2, groups=w, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.pw = nn.Conv2d(w, 2 * w, 1)
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.se = SqueezeExcite(2 * w)
        self.b1 = nn.Conv2d(2 * w, w, (1, 3), padding=(0, 1), bias=False)
        self.bn_b1 = nn.BatchNorm2d(w)
        self.b2 = nn.Conv2d(2 * w, w, (3, 1), padding=(1, 0))
        self.mix = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn_mix = nn.BatchNorm2d(w)
        self.down = nn.Conv2d(2 * w, 2 * w, 3, stride=2)      # after F.pad (0, 1, 0, 1)
        self.avg = nn.AvgPool2d(2, 2, ceil_mode=True)
        self.smooth = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)
        self.head_a = nn.Conv2d(w, 2 * w, 1)
        self.fc1 = nn.Linear(2 * w + w, 4 * w)
        self.drop = nn.Dropout(0.2)
        self.proj = nn.Parameter(torch.empty(4 * w, classes))
        nn.init.normal_(self.proj, std=(1.0 / (4 * w)) ** 0.5)
        self.ident = nn.Identity()

    def forward(self, x):
        x = F.relu(self.bn0(self.stem(x)))                    # Conv, BN, Relu
        x = F.relu6(self.bn1(self.dw(x)))                     # depthwise dilated, Clip(0, 6)
        x = F.hardswish(self.pw(x))                           # HardSigmoid, Mul
        x = self.pool(x)                                      # MaxPool ceil_mode, pads: 15x15
        x = self.se(x)
        y = torch.cat([F.relu(self.bn_b1(self.b1(x))), torch.sigmoid(self.b2(x))], 1)  # Concat
        n, c, h, wd = y.shape
        y = y.view(n, 2, c // 2, h, wd).transpose(1, 2).reshape(n, c, h, wd)  # channel shuffle
        y1, y2 = y.chunk(2, dim=1)                            # Slice
        y2 = F.relu(self.bn_mix(self.mix(y2)) + y2)           # Add
        y = torch.cat([y1, y2], 1)
        y = F.pad(y, (0, 1, 0, 1))                            # Pad (asymmetric): 16x16
        y = F.relu(self.down(y))                              # 7x7
        y = self.smooth(self.avg(y))                          # AvgPool ceil_mode 4x4, pads
        a, b = torch.split(y, [self.head_a.in_channels, self.down.out_channels - self.head_a.in_channels], 1)  # Split
        a = self.ident(F.adaptive_avg_pool2d(self.head_a(a), 1))   # GlobalAveragePool
        a = torch.flatten(a, 1)                               # Flatten
        b = b.mean((2, 3))                                    # ReduceMean keepdims=0
        z = torch.cat([a, b], 1)
        z = self.drop(F.relu(self.fc1(z)))                    # Gemm, Dropout
        return torch.matmul(z, self.proj)                     # MatMul


def torchvision_model(name, in_ch=3, classes=10):
    import torchvision
    m = getattr(torchvision.models, name)(num_classes=classes)
    if in_ch != 3:
        if name == "resnet18":
            m.conv1 = nn.Conv2d(in_ch, 64, 7, 2, 3, bias=False)
        elif name == "mobilenet_v2":
            old = m.features[0][0]
            m.features[0][0] = nn.Conv2d(in_ch, old.out_channels, 3, 2, 1, bias=False)
        elif name == "squeezenet1_1":
            m.features[0] = nn.Conv2d(in_ch, 64, 3, 2)
        elif name == "shufflenet_v2_x0_5":
            m.conv1[0] = nn.Conv2d(in_ch, 24, 3, 2, 1, bias=False)
        else:
            raise ValueError(name)
    return m


def build(name, in_ch=1, classes=10, width=16):
    if name == "custom_cnn":
        return CustomCNN(in_ch, classes, width)
    return torchvision_model(name, in_ch, classes)


def randomize_bn(model, gen):
    """Non-trivial BatchNorm statistics and affine parameters (fixtures of untrained models:
    with running mean 0 and var 1 the eval-mode BN would be close to the identity, and the
    exporter would deduplicate the equal tensors)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)


def export(model, path, form, in_ch, size):
    """Writes `model` to `path` as ONNX in the given form ("folded" or "bn"); leaves the model in
    eval mode."""
    x = torch.zeros(2, in_ch, size, size)
    kw = dict(opset_version=OPSET, input_names=["input"], output_names=["logits"],
              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    if form == "folded":
        model.eval()
        torch.onnx.export(model, x, path, **kw)
    elif form == "bn":
        # The exporter traces a training-mode forward, which updates the BatchNorm statistics of
        # the model and of the file: put the model's own values back into both.
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        torch.onnx.export(model, x, path, training=torch.onnx.TrainingMode.TRAINING,
                          do_constant_folding=False, **kw)
        model.load_state_dict(saved)
        model.eval()
        import onnx
        import onnx.numpy_helper as nh
        m = onnx.load(path)
        for init in m.graph.initializer:
            if init.name in saved:
                init.CopyFrom(nh.from_array(saved[init.name].numpy(), init.name))
        onnx.save(m, path)
    else:
        raise ValueError(form)
