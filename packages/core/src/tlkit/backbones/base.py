"""The `Backbone` block every architecture builder returns, and the helpers builders share.

A backbone is a flat, ordered list of layers registered under structural names (GluonCV's own names, e.g.
``features.4``, where the architecture comes from GluonCV, so GluonCV `.params` files load by name), split
into freeze-able blocks: block 0 is the stem, blocks 1.. are the stages (TLT `freeze_blocks` indexes).

Output stride: each block declares how much it downsamples. For `out_stride` 8 or 16 every block that would
go past it keeps its layers but has its downsampling set to stride 1 (convs: stride 1 with the same
padding; max/avg pools: stride 1 with "same" padding, or a 1x1 identity pool for 2x2 pools). So
`out_channels` and all pretrained weights are the same at every stride; only the resolution changes, as
TLT's DetectNet_v2 ResNet does for its stride-16 feature map.
"""

from __future__ import annotations

from collections.abc import Sequence

from mxnet.gluon import HybridBlock, nn

from tlkit.errors import SpecError

PREPROCESS_MODES = ("caffe", "torch", "tf")


class Backbone(HybridBlock):
    """A feature extractor: `hybrid_forward(F, x)` returns the feature map at `self.out_stride`.

    Attributes: `arch`, `out_channels`, `out_stride` (8, 16 or 32), `block_names` (freeze-able blocks in
    order; 0 = stem), `default_preprocess` ("caffe" | "torch" | "tf"); method `freeze_prefixes(blocks)`.

    Two ways to make one: give `layers` and `blocks` (the built-ins do; forward, strides and freeze
    prefixes are then handled here), or subclass, call `super().__init__()` without them, set the
    attributes and override `hybrid_forward` and `freeze_prefixes` (a plugin's own network).
    """

    def __init__(
        self,
        arch: str | None = None,
        layers: Sequence[tuple[str, HybridBlock]] | None = None,
        blocks: Sequence[tuple[str, int, int]] | None = None,
        out_channels: int = 0,
        *,
        out_stride: int = 32,
        default_preprocess: str = "torch",
        **kwargs,
    ):
        """`layers`: (structural name, block) in forward order. `blocks`: (name, n_layers, downsampling
        factor) covering `layers` in order; block 0 is the stem."""
        super().__init__(**kwargs)
        self.arch = arch or type(self).__name__.lower()
        if out_stride not in (8, 16, 32):
            raise SpecError(f"{self.arch}: out_stride must be 8, 16 or 32, got {out_stride}")
        if default_preprocess not in PREPROCESS_MODES:
            raise ValueError(f"{self.arch}: default_preprocess must be one of {PREPROCESS_MODES}")
        self.out_channels = int(out_channels)
        self.out_stride = int(out_stride)
        self.default_preprocess = default_preprocess
        self.block_names: list[str] = []
        self._layer_names: list[str] = []
        self._block_spans: list[tuple[int, int]] = []
        if layers is None:
            return  # a subclass builds its own layers
        blocks = blocks or [("stem", len(layers), out_stride)]
        if sum(n for _, n, _ in blocks) != len(layers):
            raise ValueError(f"{arch}: blocks cover {sum(n for _, n, _ in blocks)} layers, there are {len(layers)}")
        self.block_names = [name for name, _, _ in blocks]
        stride, start = 1, 0
        for _name, n, factor in blocks:
            span = layers[start : start + n]
            if stride * factor > out_stride:
                for _, layer in span:
                    remove_downsampling(layer)
            else:
                stride *= factor
            self._block_spans.append((start, start + n))
            start += n
        if stride != out_stride:
            raise ValueError(f"{arch}: reaches stride {stride}, not {out_stride}")
        for name, layer in layers:
            self.register_child(layer, name)
            self._layer_names.append(name)

    def hybrid_forward(self, F, x):
        for name in self._layer_names:
            x = self._children[name](x)
        return x

    def freeze_prefixes(self, blocks: Sequence[int]) -> list[str]:
        """Structural parameter-name prefixes (as `_collect_params_with_prefix()` names them, relative to
        this block) of the layers in the given freeze-able blocks. A block without parameters gives none."""
        out: list[str] = []
        for b in blocks:
            if not 0 <= int(b) < len(self.block_names):
                raise SpecError(
                    f"freeze_blocks: {b} is out of range for {self.arch} "
                    f"(0..{len(self.block_names) - 1}: {', '.join(self.block_names)})"
                )
            lo, hi = self._block_spans[int(b)]
            for name in self._layer_names[lo:hi]:
                if self._children[name]._collect_params_with_prefix():
                    out.append(name + ".")
        return out

    def freeze(self, blocks: Sequence[int]) -> list[str]:
        """Stop gradients to the parameters of the given blocks (grad_req "null"); returns their names."""
        prefixes = tuple(self.freeze_prefixes(blocks))
        frozen = []
        for name, param in self._collect_params_with_prefix().items():
            if prefixes and name.startswith(prefixes):
                param.grad_req = "null"
                frozen.append(name)
        return frozen

    def __repr__(self) -> str:
        return f"Backbone({self.arch}, out_channels={self.out_channels}, out_stride={self.out_stride})"


class Identity(HybridBlock):
    """A parameter-free placeholder, so later layers keep their (GluonCV) index names."""

    def hybrid_forward(self, F, x):
        return x


class ReLU6(HybridBlock):
    def hybrid_forward(self, F, x):
        return F.clip(x, 0.0, 6.0)


def remove_downsampling(block: HybridBlock) -> None:
    """Set every stride-2 conv/pool inside `block` to stride 1 keeping the spatial size (see module doc)."""
    if hasattr(block, "set_stride"):
        block.set_stride(1)
        return
    if isinstance(block, nn.conv_layers._Conv) and max(block._kwargs["stride"]) > 1:
        block._kwargs["stride"] = (1,) * len(block._kwargs["stride"])
    elif isinstance(block, nn.conv_layers._Pooling) and not block._kwargs.get("global_pool"):
        if max(block._kwargs["stride"]) > 1:
            kernel = block._kwargs["kernel"]
            block._kwargs["stride"] = (1,) * len(kernel)
            if all(k % 2 for k in kernel):
                block._kwargs["pad"] = tuple((k - 1) // 2 for k in kernel)
            else:
                block._kwargs["kernel"] = (1,) * len(kernel)
                block._kwargs["pad"] = (0,) * len(kernel)
    for child in block._children.values():
        remove_downsampling(child)


def conv_bn_act(
    channels: int,
    kernel: int,
    stride: int = 1,
    *,
    in_channels: int = 0,
    use_batch_norm: bool = True,
    act: str | None = "relu",
    bn_eps: float = 1e-5,
    groups: int = 1,
) -> nn.HybridSequential:
    """conv (+BN) (+activation) as one HybridSequential: ``.0`` conv, ``.1`` BN, ``.2`` activation.
    Without BN the conv carries a bias (TLT use_batch_norm=False)."""
    seq = nn.HybridSequential(prefix="")
    seq.add(
        nn.Conv2D(
            channels, kernel, stride, kernel // 2, groups=groups, use_bias=not use_batch_norm, in_channels=in_channels
        )
    )
    if use_batch_norm:
        seq.add(nn.BatchNorm(epsilon=bn_eps, in_channels=channels))
    if act == "leaky":
        seq.add(nn.LeakyReLU(0.1))
    elif act == "relu6":
        seq.add(ReLU6())
    elif act:
        seq.add(nn.Activation(act))
    return seq


def gluoncv_model(name: str, **kwargs) -> HybridBlock:
    """An uninitialised GluonCV model-zoo network (no download: pretrained=False)."""
    from gluoncv import model_zoo

    return model_zoo.get_model(name, pretrained=False, **kwargs)


class ImageNetClassifier(HybridBlock):
    """backbone -> global average pool -> (dropout) -> dense: a whole ImageNet-style classifier."""

    def __init__(self, backbone: Backbone, classes: int = 1000, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.pool = nn.GlobalAvgPool2D()
        self.dropout = nn.Dropout(dropout) if dropout else Identity()
        self.output = nn.Dense(classes, in_units=backbone.out_channels)

    def hybrid_forward(self, F, x):
        return self.output(self.dropout(F.flatten(self.pool(self.backbone(x)))))
