"""The DetectNet_v2 network: a tlkit backbone at stride 16 + two 1x1 convolution heads.

- coverage head: C channels, sigmoid -> ONNX output "output_cov" (N, C, H/16, W/16)
- bbox head: 4C channels (per class L, T, R, B distances / 35), linear -> "output_bbox" (N, 4C, H/16, W/16)

`build_from_meta(meta)` rebuilds it from a model file's meta (TaskSpec.build_model);
`build_for_training(cfg, classes, ctx)` builds, initialises and loads pretrained weights for `train`.
"""

from __future__ import annotations

import math
from typing import Any

from tlkit.errors import ModelFileError, SpecError
from tlkit.transfer import (  # noqa: F401 - count_params/set_bn_momentum are part of this module's API
    BuiltModel,
    ModelBuilder,
    count_params,
    load_graph_for_retraining,
    load_task_pretrained,
    set_bn_momentum,
)
from tlkit.transfer import build_for_training as build_network

TASK = "detection"
STRIDE = 16
NET_PREFIX = "dnv2_"
# Fixed head names: the same graph node names in every process, so the model file can tell the pruner
# which layers must keep their size (meta["prune_exclude"]).
COV_NODE = NET_PREFIX + "output_cov"
BBOX_NODE = NET_PREFIX + "output_bbox"
OUTPUT_NAMES = ["output_cov", "output_bbox"]
ARCHS = ("resnet", "vgg", "googlenet", "mobilenet_v1", "mobilenet_v2", "efficientnet_lite0")


def _detectnet_class():
    from mxnet.gluon import nn

    class DetectNetV2(nn.HybridBlock):
        """backbone (stride 16) -> [dropout] -> (sigmoid(conv1x1 C), conv1x1 4C)."""

        def __init__(self, backbone: Any, n_classes: int, dropout: float = 0.0, **kwargs: Any):
            super().__init__(prefix=NET_PREFIX, **kwargs)
            with self.name_scope():
                self.backbone = backbone
                self.dropout = nn.Dropout(dropout) if dropout > 0 else None
                self.output_cov = nn.Conv2D(n_classes, 1, prefix="output_cov_")
                self.output_bbox = nn.Conv2D(4 * n_classes, 1, prefix="output_bbox_")

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            f = self.backbone(x)
            if isinstance(f, (list, tuple)):
                f = f[-1]
            if self.dropout is not None:
                f = self.dropout(f)
            return F.sigmoid(self.output_cov(f)), self.output_bbox(f)

    return DetectNetV2


def output_grid(input_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of the heads for an (H, W) input: ceil(input / 16), as TLT."""
    return math.ceil(input_hw[0] / STRIDE), math.ceil(input_hw[1] / STRIDE)


def build_net(build: dict[str, Any]) -> Any:
    """An uninitialised network from the `build` record of a model file's meta."""
    from tlkit.backbones import build_backbone

    arch = build["arch"]
    kwargs: dict[str, Any] = {
        "use_batch_norm": build.get("use_batch_norm", True),
        "use_pooling": build.get("use_pooling", False),
        "all_projections": build.get("all_projections", True),
    }
    n_layers = build.get("n_layers")
    if arch in ("resnet", "vgg") and n_layers is not None:
        kwargs["n_layers"] = n_layers
    elif arch in ("resnet", "vgg"):
        raise SpecError(f"model_config.n_layers is required for arch {arch!r}")
    backbone = build_backbone(arch, out_stride=STRIDE, **kwargs)
    return _detectnet_class()(backbone, int(build["n_classes"]), float(build.get("dropout") or 0.0))


def build_from_meta(meta: dict[str, Any]) -> Any:
    """TaskSpec.build_model: rebuild the (uninitialised) network a gluon model file was saved from."""
    build = meta.get("build")
    if not isinstance(build, dict) or "arch" not in build or "n_classes" not in build:
        raise ModelFileError("detection model file: meta.json lacks build.arch / build.n_classes")
    return build_net(build)


def input_shape_of(cfg: Any) -> tuple[int, int, int]:
    p = cfg.augmentation_config.preprocessing
    return (p.output_image_channel, p.output_image_height, p.output_image_width)


def backbone_preprocess(arch: str, n_layers: int | None) -> str:
    """The preprocessing convention of the backbone's pretrained weights (builds no weights)."""
    from tlkit.backbones import build_backbone

    kw: dict[str, Any] = {"n_layers": n_layers} if arch in ("resnet", "vgg") else {}
    return getattr(build_backbone(arch, out_stride=STRIDE, **kw), "default_preprocess", "torch")


def build_meta(cfg: Any, classes: list[str], preprocess_mode: str) -> dict[str, Any]:
    """Everything a detection model file says about itself (export, DeepStream and runners read it)."""
    m = cfg.model
    c, h, w = input_shape_of(cfg)
    pp = cfg.postprocessing_config
    return {
        "task": TASK,
        "arch": m.arch if m.arch not in ("resnet", "vgg") else f"{m.arch}{m.n_layers}",
        "classes": list(classes),
        "input_shape": [c, h, w],
        "input_layout": "NCHW",
        "preprocessing": {"mode": preprocess_mode, "resize_interpolation": "bilinear"},
        "output_names": list(OUTPUT_NAMES),
        "stride": STRIDE,
        "bbox_norm": [35.0, 35.0],
        "bbox_offset": 0.5,
        "postprocessing": {name: pp.for_class(name).model_dump() for name in classes},
        "prune_exclude": [COV_NODE, BBOX_NODE],  # the heads' channel counts are fixed by the classes
        "deepstream": deepstream_meta(cfg, classes),
        "build": {
            "arch": m.arch,
            "n_layers": m.n_layers,
            "n_classes": len(classes),
            "use_batch_norm": m.use_batch_norm,
            "use_pooling": m.use_pooling,
            "all_projections": m.all_projections,
            "dropout": m.dropout_rate,
        },
    }


def deepstream_meta(cfg: Any, classes: list[str]) -> dict[str, Any]:
    """meta["deepstream"]: nvinfer detector settings following postprocessing_config (core writes the file)."""
    pp = cfg.postprocessing_config
    default = pp.default
    dbscan = default.clustering_algorithm == "dbscan"

    def attrs(c: Any) -> dict[str, Any]:
        if c.clustering_algorithm == "dbscan":
            return {
                "pre-cluster-threshold": c.coverage_threshold,
                "eps": c.dbscan_eps,
                "minBoxes": max(int(c.dbscan_min_samples), 1),
                "dbscan-min-score": c.dbscan_confidence_threshold,
                "detected-min-h": int(c.minimum_bounding_box_height),
            }
        return {
            "pre-cluster-threshold": c.nms_confidence_threshold,
            "nms-iou-threshold": c.nms_iou_threshold,
            "topk": 200,
            "detected-min-h": int(c.minimum_bounding_box_height),
        }

    return {
        "network_type": 0,
        "properties": {"cluster-mode": 1 if dbscan else 2},
        "class_attrs_all": attrs(default),
        "class_attrs": {str(i): attrs(pp.per_class[n]) for i, n in enumerate(classes) if n in pp.per_class},
    }


class DetectNetBuilder(ModelBuilder):
    """DetectNet_v2's part of `tlkit.transfer.build_for_training`."""

    task = TASK

    def build(self) -> tuple[Any, dict[str, Any]]:
        m = self.cfg.model
        mode = m.preprocess_mode if m.preprocess_mode != "auto" else backbone_preprocess(m.arch, m.n_layers)
        meta = build_meta(self.cfg, self.classes or [], mode)
        return build_net(meta["build"]), meta

    def initialize(self, net: Any, meta: dict[str, Any], ctx: list[Any]) -> None:
        import mxnet as mx

        super().initialize(net, meta, ctx)
        # coverage starts low everywhere (most cells are background): bias = logit(0.01), a stable start
        net.output_cov.bias.set_data(mx.nd.full(net.output_cov.bias.shape, -4.6, ctx=ctx[0]))

    def load_graph(self, ctx: list[Any], console: Any) -> BuiltModel:
        built = load_detector_graph(self.cfg, self.classes or [], ctx, console)
        # the clustering and DeepStream settings come from this spec, not from the pruned file
        built.meta["postprocessing"] = {
            n: self.cfg.postprocessing_config.for_class(n).model_dump() for n in self.classes or []
        }
        built.meta["deepstream"] = deepstream_meta(self.cfg, self.classes or [])
        return built


def build_for_training(cfg: Any, classes: list[str], ctx: list[Any], console: Any = None) -> BuiltModel:
    """The network `train` starts from (`tlkit.transfer.build_for_training`): with `train_config.load_graph: true`
    the pruned graph of pretrained_model_path (its classes must match); otherwise pretrained_model_path (a path or
    a named set such as "imagenet") loaded with a filtered load: a tlkit detection model by structural name,
    anything else into the backbone through the architecture's weight map."""
    return build_network(DetectNetBuilder(cfg, classes), ctx, console)


def load_detector_graph(cfg: Any, classes: list[str], ctx: list[Any], console: Any) -> BuiltModel:
    """`load_graph: true`: the (pruned) graph of pretrained_model_path, checked against the spec's detector."""
    built = load_graph_for_retraining(
        cfg.train_config.pretrained_model_path,
        task=TASK,
        ctx=ctx,
        classes=classes,
        input_shape=list(input_shape_of(cfg)),
        console=console,
    )
    found = built.meta.get("detector", "detectnet_v2")
    if found != cfg.model.detector:
        raise SpecError(
            f"train_config.load_graph: {cfg.train_config.pretrained_model_path} is a {found} graph, "
            f"the spec's model_config.detector is {cfg.model.detector!r}"
        )
    return built
