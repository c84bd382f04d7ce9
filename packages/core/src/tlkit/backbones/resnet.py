"""ResNet v1 (10/18/34/50/101) in GluonCV's `resnet*_v1` layout, with TLT's options.

With the defaults (use_batch_norm, use_pooling, no all_projections) the structural parameter names are
exactly GluonCV's (`features.0.weight`, `features.4.0.body.0.weight`, ...), so a GluonCV ImageNet `.params`
file loads by name. resnet10 is GluonCV's design with one block per stage (TLT's resnet10).

- use_pooling=False: no stem max-pool; the first block of stage 1 downsamples instead (stride 2, projection).
- all_projections=True: a 1x1 projection shortcut in every block, not only where the shape changes.
- use_batch_norm=False: convs with biases, no BatchNorm.
"""

from __future__ import annotations

from functools import partial

from mxnet.gluon import HybridBlock, nn

from tlkit.backbones.base import Backbone, Identity

_SPECS = {  # n_layers -> (block type, blocks per stage)
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
}


def _conv(channels, kernel, stride, in_channels, use_bn):
    return nn.Conv2D(channels, kernel, stride, kernel // 2, use_bias=not use_bn, in_channels=in_channels)


class ResidualBlock(HybridBlock):
    """GluonCV BasicBlockV1 / BottleneckV1: `body` and optional `downsample` (projection) branches."""

    def __init__(self, kind, channels, stride, project, in_channels, use_bn=True, **kwargs):
        super().__init__(**kwargs)
        self.body = nn.HybridSequential(prefix="")
        if kind == "basic":
            plan = [(channels, 3, stride, in_channels, True), (channels, 3, 1, channels, False)]
        else:
            mid = channels // 4
            plan = [(mid, 1, stride, in_channels, True), (mid, 3, 1, mid, True), (channels, 1, 1, mid, False)]
        for ch, k, s, cin, relu in plan:
            self.body.add(_conv(ch, k, s, cin, use_bn))
            if use_bn:
                self.body.add(nn.BatchNorm(in_channels=ch))
            if relu:
                self.body.add(nn.Activation("relu"))
        self.downsample = None
        if project:
            self.downsample = nn.HybridSequential(prefix="")
            self.downsample.add(_conv(channels, 1, stride, in_channels, use_bn))
            if use_bn:
                self.downsample.add(nn.BatchNorm(in_channels=channels))

    def hybrid_forward(self, F, x):
        residual = self.downsample(x) if self.downsample is not None else x
        return F.Activation(self.body(x) + residual, act_type="relu")


def resnet(
    n_layers: int = 18,
    *,
    out_stride: int = 32,
    use_batch_norm: bool = True,
    use_pooling: bool = True,
    all_projections: bool = False,
) -> Backbone:
    kind, counts = _SPECS[n_layers]
    channels = [64, 64, 128, 256, 512] if kind == "basic" else [64, 256, 512, 1024, 2048]
    layers = [
        ("features.0", nn.Conv2D(64, 7, 2, 3, use_bias=not use_batch_norm, in_channels=3)),
        ("features.1", nn.BatchNorm(in_channels=64) if use_batch_norm else Identity()),
        ("features.2", nn.Activation("relu")),
        ("features.3", nn.MaxPool2D(3, 2, 1) if use_pooling else Identity()),
    ]
    blocks = [("stem", 4, 4 if use_pooling else 2)]
    for i, count in enumerate(counts):
        stride = 1 if i == 0 and use_pooling else 2
        stage = nn.HybridSequential(prefix="")
        cin = channels[i]
        for j in range(count):
            s = stride if j == 0 else 1
            project = all_projections or (j == 0 and (s != 1 or cin != channels[i + 1]))
            stage.add(ResidualBlock(kind, channels[i + 1], s, project, cin, use_batch_norm))
            cin = channels[i + 1]
        layers.append((f"features.{4 + i}", stage))
        blocks.append((f"block_{i + 1}", 1, stride))
    return Backbone(
        f"resnet{n_layers}", layers, blocks, channels[-1], out_stride=out_stride, default_preprocess="torch"
    )  # GluonCV ImageNet weights: torch mean/std


# partials keep the builder's signature visible (build_backbone checks options against it)
resnet10 = partial(resnet, 10)
resnet18 = partial(resnet, 18)
resnet34 = partial(resnet, 34)
resnet50 = partial(resnet, 50)
resnet101 = partial(resnet, 101)


# GluonCV resnet*_v1b (ResNetV1b: conv1/bn1/layerN.B.convJ) -> this layout. For basic blocks (ResNet-18/34)
# v1b and v1 are the same network; v1b bottlenecks stride in the 3x3 conv, v1 in the 1x1, so ResNet-50/101
# v1b weights do not fit (use resnet50_v1 / resnet101_v1).
_V1B_BODY = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}


def gluoncv_v1b_weight_map(name: str) -> str | None:
    """A GluonCV resnet*_v1b parameter name -> this backbone's name (None: the `fc` classifier)."""
    import re

    stem = {"conv1": "features.0", "bn1": "features.1"}
    head, _, rest = name.partition(".")
    if head in stem:
        return f"{stem[head]}.{rest}"
    m = re.fullmatch(r"layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.\d)\.(\w+)", name)
    if not m:
        return None
    layer, block, part, leaf = m.groups()
    where = part if part.startswith("downsample") else f"body.{_V1B_BODY[part]}"
    return f"features.{3 + int(layer)}.{block}.{where}.{leaf}"
