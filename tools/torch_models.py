#!/usr/bin/python3
"""PyTorch reference definitions of the nnsplitter model zoo (SPEC.md §3, MODELS.md).

Every module is named so that its state_dict keys are exactly the keys our C++ engine reads and
writes; a model exported by nnsplitter loads here with load_state_dict(strict=True).

    import torch_models
    model = torch_models.build("resnet20", in_channels=1, num_classes=10, input_size=28)
    torch_models.eligible_layers(model, "spatial")   # NNSplitter-eligible weight names

    /usr/bin/python3 tools/torch_models.py --counts  # parameter count table

Initialisation is PyTorch's default everywhere (no torchvision-style kaiming re-init), as in
MODELS.md. Use /usr/bin/python3 (Debian's python3-torch).
"""
import argparse
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

ARCHS = ("lenet5", "resnet20", "resnet18", "resnet34",
         "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "mobilenet_v2")


# ----------------------------------------------------------------------------------- lenet5
class LeNet5(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, input_size=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        s = ((input_size // 2) - 4) // 2          # 28 -> 5, 32 -> 6
        self.flat_size = 16 * s * s
        self.fc1 = nn.Linear(self.flat_size, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


# ----------------------------------------------------------------------------------- resnets
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """torchvision-style ResNet of BasicBlocks.

    maxpool=True: the huyvnphan/PyTorch_CIFAR10 resnet18/34 (3x3 stride-1 stem, 3x3/2 max-pool
    kept); maxpool=False: the CIFAR ResNet-20 of He et al. (no max-pool, 3 stages)."""

    def __init__(self, blocks, widths, in_channels, num_classes, maxpool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if maxpool else None
        in_planes = widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            stride = 1 if i == 0 else 2
            layers = []
            for b in range(n):
                layers.append(BasicBlock(in_planes, w, stride if b == 0 else 1))
                in_planes = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


# ----------------------------------------------------------------------------------- vgg
VGG_CFGS = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13_bn": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                 512, 512, 512, "M"],
    "vgg19_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg, in_channels, num_classes, width_mult=1.0):
        super().__init__()
        layers = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                w = _scaled(v, width_mult)
                layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        hidden = _scaled(4096, width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(c, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(),
            nn.Linear(hidden, num_classes))

    def forward(self, x):
        x = torch.flatten(self.avgpool(self.features(x)), 1)
        return self.classifier(x)


# ----------------------------------------------------------------------------------- mobilenet_v2
def _make_divisible(v, divisor=8, min_value=None):
    """torchvision's rounding of channel counts to a multiple of divisor."""
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNReLU6(nn.Sequential):
    """torchvision Conv2dNormActivation: [0] conv (no bias), [1] BN, [2] ReLU6."""

    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1):
        padding = (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(cin, cout, kernel_size, stride, padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(inp, hidden, kernel_size=1))
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),   # depthwise
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),                # pointwise-linear
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


MOBILENET_V2_CIFAR_SETTING = [
    # t, c, n, s
    [1, 16, 1, 1],
    [6, 24, 2, 1],   # stride 1 for CIFAR (2 in ImageNet's)
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


class MobileNetV2(nn.Module):
    def __init__(self, in_channels=3, num_classes=10, width_mult=1.0, round_nearest=8, dropout=0.2):
        super().__init__()
        input_channel = _make_divisible(32 * width_mult, round_nearest)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult), round_nearest)
        features = [ConvBNReLU6(in_channels, input_channel, stride=1)]   # CIFAR: stride 1
        for t, c, n, s in MOBILENET_V2_CIFAR_SETTING:
            out = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                features.append(InvertedResidual(input_channel, out, s if i == 0 else 1, t))
                input_channel = out
        features.append(ConvBNReLU6(input_channel, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = x.mean([2, 3])
        return self.classifier(x)


# ----------------------------------------------------------------------------------- factory
def _scaled(c, width_mult):
    """A width scaled by width_mult: int(c * width_mult), at least 1 (as core/models/zoo.cpp)."""
    return max(1, int(c * width_mult))


def build(arch, in_channels, num_classes, input_size=28, width_mult=1.0):
    """Returns the zoo model `arch` (PyTorch default initialisation).

    input_size is the spatial size the model is fed (28 or 32; VGG needs 32, i.e. 28x28
    datasets are zero-padded to 32x32 by the caller). width_mult scales every width
    (max(1, int(c*width_mult)); mobilenet_v2 uses torchvision's _make_divisible semantics); lenet5
    ignores it."""
    if arch == "lenet5":
        return LeNet5(in_channels, num_classes, input_size)
    if arch == "resnet20":
        w = [_scaled(c, width_mult) for c in (16, 32, 64)]
        return ResNet([3, 3, 3], w, in_channels, num_classes, maxpool=False)
    if arch in ("resnet18", "resnet34"):
        w = [_scaled(c, width_mult) for c in (64, 128, 256, 512)]
        blocks = [2, 2, 2, 2] if arch == "resnet18" else [3, 4, 6, 3]
        return ResNet(blocks, w, in_channels, num_classes, maxpool=True)
    if arch in VGG_CFGS:
        return VGG(VGG_CFGS[arch], in_channels, num_classes, width_mult)
    if arch == "mobilenet_v2":
        return MobileNetV2(in_channels, num_classes, width_mult)
    raise ValueError(f"unknown arch '{arch}' (known: {', '.join(ARCHS)})")


def eligible_layers(model, rule="spatial"):
    """Names of the NNSplitter-eligible weights, in state_dict order.

    "spatial": parameters with ndim >= 2 and shape[-1] > 1 (conv weights with kernel width > 1
    and Linear weights); "all": every parameter with ndim >= 2."""
    if rule not in ("spatial", "all"):
        raise ValueError(f"unknown eligibility rule '{rule}' (spatial|all)")
    out = []
    for name, p in model.named_parameters():
        if p.dim() >= 2 and (rule == "all" or p.shape[-1] > 1):
            out.append(name)
    return out


def count_params(model):
    return sum(p.numel() for p in model.parameters())


# The configurations used by the zoo (dataset channels, input size) for the --counts table.
COUNT_CONFIGS = [
    ("lenet5", 1, 28), ("resnet20", 1, 28),
    ("resnet18", 3, 32), ("resnet34", 3, 32),
    ("vgg11_bn", 3, 32), ("vgg13_bn", 3, 32), ("vgg16_bn", 3, 32), ("vgg19_bn", 3, 32),
    ("mobilenet_v2", 3, 32),
]


def _counts(width_mult, num_classes):
    print(f"{'arch':<14}{'in_ch':>6}{'input':>7}{'params':>13}{'eligible':>13}{'layers':>8}{'state keys':>12}")
    for arch, cin, size in COUNT_CONFIGS:
        m = build(arch, cin, num_classes, size, width_mult)
        names = eligible_layers(m, "spatial")
        params = dict(m.named_parameters())
        elig = sum(params[n].numel() for n in names)
        print(f"{arch:<14}{cin:>6}{size:>7}{count_params(m):>13,}{elig:>13,}{len(names):>8}{len(m.state_dict()):>12}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--counts", action="store_true", help="print the parameter count table")
    ap.add_argument("--keys", metavar="ARCH", help="print ARCH's state_dict keys and shapes")
    ap.add_argument("--in-channels", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--width-mult", type=float, default=1.0)
    a = ap.parse_args(argv)
    if a.keys:
        default_cin = 1 if a.keys in ("lenet5", "resnet20") else 3
        default_size = 28 if a.keys in ("lenet5", "resnet20") else 32
        m = build(a.keys, a.in_channels or default_cin, a.classes, a.input_size or default_size, a.width_mult)
        elig = set(eligible_layers(m, "spatial"))
        for k, v in m.state_dict().items():
            print(f"{k}\t{list(v.shape)}\t{str(v.dtype).replace('torch.', '')}\t{'eligible' if k in elig else ''}")
        print(f"# {len(m.state_dict())} entries, {count_params(m):,} parameters")
        return 0
    if a.counts:
        _counts(a.width_mult, a.classes)
        return 0
    ap.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
