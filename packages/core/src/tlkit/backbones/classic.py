"""VGG 16/19, MobileNet v1/v2, GoogLeNet and DarkNet 19/53 backbones.

VGG and DarkNet are built here in GluonCV's layouts (GluonCV has no darknet19; building them here gives
TLT's use_batch_norm option); MobileNet v1/v2 and GoogLeNet take GluonCV's model-zoo layers as they are.
Structural parameter names equal GluonCV's (`vgg16_bn`, `darknet53`, `mobilenet1.0`, `mobilenetv2_1.0`,
`googlenet`), so GluonCV `.params` files load by name (vgg with use_batch_norm=False: `vgg16`).
"""

from __future__ import annotations

from functools import partial

from mxnet.gluon import HybridBlock, nn

from tlkit.backbones.base import Backbone, conv_bn_act, gluoncv_model

# -- VGG -------------------------------------------------------------------------------------------------

_VGG = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
_VGG_FILTERS = (64, 128, 256, 512, 512)


def vgg(n_layers: int = 16, *, out_stride: int = 32, use_batch_norm: bool = True) -> Backbone:
    """GluonCV's VGG conv layers (the fc6/fc7 dense layers are left out: the head is the task's business).
    Freeze blocks as TLT numbers them: 1..5 = conv blocks 1..5; block 0 ("stem") is empty."""
    layers: list[tuple[str, HybridBlock]] = []
    blocks = [("stem", 0, 1)]
    cin = 3
    for b, (count, ch) in enumerate(zip(_VGG[n_layers], _VGG_FILTERS)):
        start = len(layers)
        for _ in range(count):
            layers.append((f"features.{len(layers)}", nn.Conv2D(ch, 3, padding=1, in_channels=cin)))
            if use_batch_norm:
                layers.append((f"features.{len(layers)}", nn.BatchNorm(in_channels=ch)))
            layers.append((f"features.{len(layers)}", nn.Activation("relu")))
            cin = ch
        layers.append((f"features.{len(layers)}", nn.MaxPool2D(strides=2)))
        blocks.append((f"block_{b + 1}", len(layers) - start, 2))
    return Backbone(f"vgg{n_layers}", layers, blocks, 512, out_stride=out_stride, default_preprocess="torch")


vgg16 = partial(vgg, 16)
vgg19 = partial(vgg, 19)


# -- DarkNet -----------------------------------------------------------------------------------------------


class DarknetResidual(HybridBlock):
    """GluonCV DarknetBasicBlockV3: 1x1 halving conv, 3x3 conv, identity shortcut."""

    def __init__(self, channels: int, use_bn: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.body = nn.HybridSequential(prefix="")
        self.body.add(conv_bn_act(channels // 2, 1, in_channels=channels, use_batch_norm=use_bn, act="leaky"))
        self.body.add(conv_bn_act(channels, 3, in_channels=channels // 2, use_batch_norm=use_bn, act="leaky"))

    def hybrid_forward(self, F, x):
        return x + self.body(x)


def darknet53(*, out_stride: int = 32, use_batch_norm: bool = True) -> Backbone:
    """YOLOv3's DarkNet-53. Blocks: 0 stem conv, 1..5 = the five downsampling stages."""
    layers: list[tuple[str, HybridBlock]] = [
        ("features.0", conv_bn_act(32, 3, in_channels=3, use_batch_norm=use_batch_norm, act="leaky"))
    ]
    blocks = [("stem", 1, 1)]
    cin = 32
    for b, (count, ch) in enumerate(zip((1, 2, 8, 8, 4), (64, 128, 256, 512, 1024))):
        layers.append(
            (
                f"features.{len(layers)}",
                conv_bn_act(ch, 3, 2, in_channels=cin, use_batch_norm=use_batch_norm, act="leaky"),
            )
        )
        for _ in range(count):
            layers.append((f"features.{len(layers)}", DarknetResidual(ch, use_batch_norm)))
        blocks.append((f"block_{b + 1}", count + 1, 2))
        cin = ch
    return Backbone("darknet53", layers, blocks, 1024, out_stride=out_stride, default_preprocess="torch")


# YOLOv2's DarkNet-19: (channels, kernel) per conv; each group but the last ends with a 2x2 max-pool.
_DARKNET19 = (
    ((32, 3),),
    ((64, 3),),
    ((128, 3), (64, 1), (128, 3)),
    ((256, 3), (128, 1), (256, 3)),
    ((512, 3), (256, 1), (512, 3), (256, 1), (512, 3)),
    ((1024, 3), (512, 1), (1024, 3), (512, 1), (1024, 3)),
)


def darknet19(*, out_stride: int = 32, use_batch_norm: bool = True) -> Backbone:
    """DarkNet-19 (conv + BN + leaky ReLU 0.1). Blocks: 0 stem (conv 32 + pool), 1..5 the later groups."""
    layers: list[tuple[str, HybridBlock]] = []
    blocks = []
    cin = 3
    for g, group in enumerate(_DARKNET19):
        start = len(layers)
        for ch, k in group:
            layers.append(
                (
                    f"features.{len(layers)}",
                    conv_bn_act(ch, k, in_channels=cin, use_batch_norm=use_batch_norm, act="leaky"),
                )
            )
            cin = ch
        last = g == len(_DARKNET19) - 1
        if not last:
            layers.append((f"features.{len(layers)}", nn.MaxPool2D(2, 2)))
        blocks.append(("stem" if g == 0 else f"block_{g}", len(layers) - start, 1 if last else 2))
    return Backbone("darknet19", layers, blocks, 1024, out_stride=out_stride, default_preprocess="torch")


# -- GluonCV model-zoo networks -------------------------------------------------------------------------


def _features(net: HybridBlock, n: int) -> list[tuple[str, HybridBlock]]:
    return [(f"features.{i}", net.features[i]) for i in range(n)]


def mobilenet_v1(*, out_stride: int = 32) -> Backbone:
    """GluonCV mobilenet1.0. Blocks: stem (conv + first depthwise unit), then one per downsampling."""
    net = gluoncv_model("mobilenet1.0")
    # 3 stem layers, then 13 depthwise-separable units of 6 layers; units 1, 3, 5, 11 downsample.
    blocks = [("stem", 9, 2), ("block_1", 12, 2), ("block_2", 12, 2), ("block_3", 36, 2), ("block_4", 12, 2)]
    return Backbone("mobilenet_v1", _features(net, 81), blocks, 1024, out_stride=out_stride, default_preprocess="torch")


def mobilenet_v2(*, out_stride: int = 32) -> Backbone:
    """GluonCV mobilenetv2_1.0 up to its 1280-channel conv. Blocks split at the downsampling bottlenecks."""
    net = gluoncv_model("mobilenetv2_1.0")
    blocks = [("stem", 4, 2), ("block_1", 2, 2), ("block_2", 3, 2), ("block_3", 7, 2), ("block_4", 7, 2)]
    return Backbone("mobilenet_v2", _features(net, 23), blocks, 1280, out_stride=out_stride, default_preprocess="torch")


def googlenet(*, out_stride: int = 32) -> Backbone:
    """GluonCV googlenet (Inception v1 with BN). Blocks: 0 stem, then one per inception module
    (1 = 3a, 2 = 3b, 3 = max-pool + 4a, ..., 7 = 4e, 8 = max-pool + 5a, 9 = 5b), as TLT numbers 0..7."""
    net = gluoncv_model("googlenet")
    names = [
        "conv1",
        "maxpool1",
        "conv2",
        "conv3",
        "maxpool2",
        "inception3a",
        "inception3b",
        "maxpool3",
        "inception4a",
        "inception4b",
        "inception4c",
        "inception4d",
        "inception4e",
        "maxpool4",
        "inception5a",
        "inception5b",
    ]
    layers = [(n, net._children[n]) for n in names]
    blocks = [
        ("stem", 5, 8),
        ("inception_3a", 1, 1),
        ("inception_3b", 1, 1),
        ("inception_4a", 2, 2),
        ("inception_4b", 1, 1),
        ("inception_4c", 1, 1),
        ("inception_4d", 1, 1),
        ("inception_4e", 1, 1),
        ("inception_5a", 2, 2),
        ("inception_5b", 1, 1),
    ]
    return Backbone("googlenet", layers, blocks, 1024, out_stride=out_stride, default_preprocess="torch")
