"""Backbones shared by every task: `build_backbone(arch, ...)` -> `Backbone`.

    from tlkit.backbones import build_backbone
    bb = build_backbone("resnet", n_layers=18, out_stride=16)   # TLT's arch + n_layers
    bb.initialize(); feats = bb(x)                              # (N, bb.out_channels, H/16, W/16)

Names resolve through the registry (`tlkit_register_architectures`), so plugin backbones build the same
way. This package's `__init__` and `catalog` do not import MXNet (they are on the CLI help path); the
`Backbone` class and the builders live in modules that do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tlkit.backbones.base import Backbone, ImageNetClassifier

__all__ = ["Backbone", "ImageNetClassifier", "arch_name", "build_backbone", "imagenet_classifier"]


def __getattr__(name: str) -> Any:  # lazy: `from tlkit.backbones import Backbone` imports MXNet only then
    if name in ("Backbone", "ImageNetClassifier"):
        from tlkit.backbones import base

        return getattr(base, name)
    raise AttributeError(f"module 'tlkit.backbones' has no attribute {name!r}")


def arch_name(arch: str, n_layers: int | None = None, task: str | None = None) -> str:
    """The registered name for TLT's (arch, n_layers): `arch` itself if registered, else f"{arch}{n_layers}"."""
    from tlkit.errors import UnknownNameError
    from tlkit.registry import get_registry

    reg = get_registry()
    names = reg.backbone_names(task)
    if arch in names:
        return arch
    if n_layers is not None and f"{arch}{n_layers}" in names:
        return f"{arch}{n_layers}"
    # "resnet" + 19 -> report 'resnet19'; a full name such as "resnet19" is reported as written
    wanted = arch if n_layers is None or arch[-1:].isdigit() else f"{arch}{n_layers}"
    raise UnknownNameError("architecture", wanted, names)


def build_backbone(
    arch: str,
    *,
    n_layers: int | None = None,
    out_stride: int = 32,
    use_batch_norm: bool = True,
    use_pooling: bool = True,
    all_projections: bool = False,
    input_size: tuple[int, int] | list[int] | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build a registered backbone (uninitialised); out_stride must be 8, 16 or 32.

    The TLT options go to the builder when its signature has them and are ignored where the architecture
    has no use for them (all_projections for VGG, use_pooling for MobileNet, ...). So does `input_size`
    (H, W): the input the network will see, for architectures whose padding depends on it (EfficientNet's
    TF "same" padding on odd sides); None = any size (sides multiples of 32 for those). Extra `kwargs` are
    architecture-specific options; one the builder does not accept is a SpecError, not silently dropped.
    """
    import inspect

    from tlkit.errors import SpecError, did_you_mean
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    spec = get_registry().architecture(arch_name(arch, n_layers))
    builder = resolve(spec.build)
    params = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key in kwargs:
        if not takes_any and key not in params:
            raise SpecError(
                f"{spec.name}: unknown backbone option {key!r}{did_you_mean(key, params)}; "
                f"it accepts: {', '.join(params) or '(none)'}"
            )
    standard: dict[str, Any] = dict(
        out_stride=out_stride,
        use_batch_norm=use_batch_norm,
        use_pooling=use_pooling,
        all_projections=all_projections,
    )
    if input_size is not None:
        standard["input_size"] = tuple(int(v) for v in input_size)
    return builder(**{k: v for k, v in standard.items() if takes_any or k in params}, **kwargs)


def imagenet_classifier(arch: str = "efficientnet_lite0", input_size: tuple[int, int] | None = None):
    """A full ImageNet classifier (backbone + global pool + dense 1000) with the shipped ImageNet weights
    loaded, in inference mode, and the matching `preprocess(images) -> NCHW float32 NDArray`.

    `input_size` (H, W): default the resolution the weights were trained at (224 for Lite0, 240 Lite1,
    260 Lite2). `images`: HxWx3 uint8 RGB arrays (or one array), resized and center-cropped to it.
    Returns (net, preprocess).
    """
    from tlkit.backbones.base import ImageNetClassifier
    from tlkit.backbones.catalog import HEAD_WEIGHT_MAPS, IMAGENET_INPUT
    from tlkit.backbones.preprocess import make_preprocess
    from tlkit.errors import ModelFileError
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    spec = get_registry().architecture(arch)
    if "imagenet" not in spec.pretrained or spec.name not in HEAD_WEIGHT_MAPS:
        raise ModelFileError(f"{arch}: no ImageNet classifier weights are available offline")
    from tlkit.weights import load_pretrained

    h, w = input_size or IMAGENET_INPUT.get(spec.name, (224, 224))
    size = (h, w)
    backbone = build_backbone(spec.name, input_size=size)
    net = ImageNetClassifier(backbone, classes=1000)
    bb_map = resolve(spec.weight_map) if spec.weight_map else (lambda n: n)
    head_map = resolve(HEAD_WEIGHT_MAPS[spec.name])

    def full_map(name: str) -> str | None:
        b = bb_map(name)
        if b is not None:
            return f"backbone.{b}"
        h = head_map(name)
        return f"output.{h}" if h is not None else None

    report = load_pretrained(net, "imagenet", weight_map=full_map, arch=spec.name)
    if report.new:
        raise ModelFileError(f"{arch}: ImageNet weights left {len(report.new)} tensors unset, e.g. {report.new[0]}")
    return net, make_preprocess(backbone.default_preprocess, size=size)
