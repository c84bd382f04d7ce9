"""GluonCV SSD and YOLOv3 detectors in `tlkit detection` (`model_config.detector: ssd | yolov3`).

The network is GluonCV's own `SSD` / `YOLOV3` block, built for the user's classes and the spec's input
size (anchor sizes scale with the input's shorter side from GluonCV's 512 / 416 presets), never
downloading: base networks get `pretrained_base=False`; ImageNet weights (`pretrained_model_path: imagenet`)
come from a local file (`$MXNET_HOME/models/<base>-<hash>.params`, GluonCV's own cache layout, which
`gluoncv://<base>` fills through tlkit's model store pull, or core's offline backbone weights for
`efficientnet_lite0`). `train_config.pretrained_model_path` may name a GluonCV detector `.params`
(e.g. a VOC or COCO model, also as `gluoncv://ssd_512_resnet50_v1_voc`) or a tlkit detector `.tlk`: it loads
by structural name except the class
heads and anchors, then the class heads are reset for the user's classes, reusing the rows of classes
whose names match (GluonCV's `reset_class(reuse_weights=...)`). A pruned detector (`prune`, a graph
file) retrains with `train_config.load_graph: true` (see `RetrainableGraph`).

Inference output of `.tlk` files: GluonCV's decoding WITHOUT its NMS: `ids (B, M, 1)` (class id, -1 = below
0.01), `scores (B, M, 1)`, `bboxes (B, M, 4)` x1 y1 x2 y2 in network-input pixels, M = classes x anchors. NMS
runs in `postprocess_gluoncv` (numpy) with the spec's thresholds. ONNX exports carry the NMS in the graph
(meta["export_nms"], see tlkit.export.nms: the TF Object Detection API outputs DeepStream's stock parser
reads); `postprocess_nms_outputs` turns those into the same detections.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

from tlkit.errors import ModelFileError, SpecError

from tlkit_detection.predict import Detector

DETECTORS = ("detectnet_v2", "ssd", "yolov3")
GLUONCV_DETECTORS = ("ssd", "yolov3")
OUTPUT_NAMES = ["ids", "scores", "bboxes"]
PREFIX = "gcv_"  # a fixed block prefix: the same graph node names in every process (meta["prune_exclude"])
_SSD_RATIOS = [[1, 2, 0.5]] + [[1, 2, 0.5, 3, 1.0 / 3]] * 3 + [[1, 2, 0.5]] * 2
_YOLO_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


@dataclass(frozen=True)
class GluonCVArch:
    """One supported (detector, backbone): GluonCV's preset values, at `base_size`."""

    detector: str
    backbone: str  # the model_config.arch (+ n_layers) that selects it
    base: str  # GluonCV base network name (ImageNet weights file name)
    base_size: int
    sizes: tuple[float, ...] = ()  # SSD anchor sizes at base_size
    steps: tuple[int, ...] = ()
    features: Any = None  # SSD: base network output names
    filters: tuple[int, ...] | None = None
    preprocess: str = "torch"
    min_input: int = 32


ARCHS: dict[tuple[str, str], GluonCVArch] = {
    a.detector + ":" + a.backbone: a
    for a in (
        GluonCVArch("ssd", "mobilenet_v1", "mobilenet1.0", 512, (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492),
                    (16, 32, 64, 128, 256, 512), ("relu22_fwd", "relu26_fwd"), (512, 512, 256, 256)),
        GluonCVArch("ssd", "resnet18", "resnet18_v1", 512, (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492),
                    (16, 32, 64, 128, 256, 512), ("stage3_activation1", "stage4_activation1"), (512, 512, 256, 256)),
        GluonCVArch("ssd", "resnet50", "resnet50_v1", 512, (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492),
                    (16, 32, 64, 128, 256, 512), ("stage3_activation5", "stage4_activation2"), (512, 512, 256, 256)),
        GluonCVArch("ssd", "vgg16", "vgg16_atrous", 300, (21, 45, 99, 153, 207, 261, 315),
                    (8, 16, 32, 64, 100, 300), "vgg16_atrous_300", None, min_input=264),
        # tlkit's EfficientNet-Lite0 (ImageNet weights ship offline) with SSD heads at strides 8..256;
        # anchors from 5 % to 90 % of the input (small objects need the stride-8 map)
        GluonCVArch("ssd", "efficientnet_lite0", "efficientnet_lite0", 320, (16, 48, 96, 144, 192, 240, 288),
                    (8, 16, 32, 64, 128, 256), None, (512, 256, 256), preprocess="tf"),
        GluonCVArch("yolov3", "darknet53", "darknet53", 416),
        GluonCVArch("yolov3", "mobilenet_v1", "mobilenet1.0", 416),
    )
}


def backbone_key(arch: str, n_layers: int | None) -> str:
    """model_config (arch, n_layers) -> the backbone name used above (resnet + 50 -> resnet50)."""
    if arch in ("resnet", "vgg", "darknet") and n_layers is not None:
        return f"{arch}{n_layers}"
    return arch


def arch_for(detector: str, arch: str, n_layers: int | None) -> GluonCVArch:
    key = backbone_key(arch, n_layers)
    found = ARCHS.get(f"{detector}:{key}")
    if found is None:
        choices = ", ".join(a.backbone for a in ARCHS.values() if a.detector == detector)
        raise SpecError(
            f"model_config.arch {key!r} is not available for detector {detector!r}; choose one of: {choices} "
            "(resnet/vgg/darknet with model_config.n_layers, e.g. arch: resnet, n_layers: 50)"
        )
    return found


def _scaled(values: Any, scale: float) -> list[float]:
    return [round(float(v) * scale, 3) for v in values]


# -- networks ----------------------------------------------------------------------------------------------


def _tlkit_backbone_features(arch: str, filters: tuple[int, ...]):
    """A features factory for gluoncv's SSD: tlkit backbone outputs at strides 8, 16, 32 + extra stride-2
    layers (1x1 reduce, 3x3 stride 2, BN, ReLU), as GluonCV's FeatureExpander appends them."""
    import mxnet as mx
    from mxnet.gluon import nn
    from tlkit.backbones import build_backbone

    class BackboneFeatures(nn.HybridBlock):
        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            with self.name_scope():
                self.backbone = build_backbone(arch, out_stride=32)
                self.extras = nn.HybridSequential()
                for f in filters:
                    seq = nn.HybridSequential()
                    seq.add(nn.Conv2D(f // 2, 1, use_bias=False), nn.BatchNorm(), nn.Activation("relu"),
                            nn.Conv2D(f, 3, 2, 1, use_bias=False), nn.BatchNorm(), nn.Activation("relu"))
                    self.extras.add(seq)
            # the last layer at each of strides 8, 16, 32: found by shape inference on a 256 px input
            x, outs = mx.sym.var("data"), []
            for name in self.backbone._layer_names:
                x = self.backbone._children[name](x)
                outs.append(x)
            _, shapes, _ = mx.sym.Group(outs).infer_shape_partial(data=(1, 3, 256, 256))
            last = {256 // s[2]: i for i, s in enumerate(shapes)}
            missing = [s for s in (8, 16, 32) if s not in last]
            if missing:
                raise SpecError(f"{arch}: no layer at stride {missing[0]}, cannot feed SSD")
            self._taps = {last[8], last[16], last[32]}

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            outs = []
            for i, name in enumerate(self.backbone._layer_names):
                x = self.backbone._children[name](x)
                if i in self._taps:
                    outs.append(x)
            for e in self.extras:
                x = e(x)
                outs.append(x)
            return outs

    def factory(**_ignored: Any):  # SSD calls features(pretrained=..., ctx=..., root=...)
        return BackboneFeatures()

    return factory


def _pretrained_base_tag(base: str, use: bool) -> str | bool:
    """GluonCV's `pretrained_base`: False, or the hash tag of a LOCAL ImageNet file (never a download)."""
    if not use:
        return False
    from tlkit.weights import mxnet_model_dir

    found = sorted(mxnet_model_dir().glob(f"{base}-*.params"))
    if not found:
        raise ModelFileError(
            f"ImageNet weights of {base} not found: expected {mxnet_model_dir()}/{base}-<hash>.params "
            "(GluonCV's cache layout; tlkit never downloads them); or set train_config.pretrained_model_path "
            "to a detector file or leave it empty to train from scratch"
        )
    return found[0].stem.rsplit("-", 1)[1]


def build_net(build: dict[str, Any], pretrained_base: str | bool = False) -> Any:
    """The uninitialised GluonCV detector of a model file's `build` record (NMS off: see module doc)."""
    import warnings

    from gluoncv.model_zoo.ssd.ssd import get_ssd
    from tlkit.weights import mxnet_model_dir

    a = arch_for(build["detector"], build["backbone"], None)
    classes = list(build["classes"])
    w, h = build["input_size"]
    scale = min(w, h) / a.base_size
    root = str(mxnet_model_dir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if a.detector == "ssd":
            if a.backbone == "efficientnet_lite0":
                net = get_ssd(None, a.base_size, _tlkit_backbone_features(a.base, a.filters), None,
                              _scaled(a.sizes, scale), _SSD_RATIOS, list(a.steps), classes, "", pretrained=False,
                              pretrained_base=False, root=root, prefix=PREFIX)
            else:
                if a.features == "vgg16_atrous_300":
                    from gluoncv.model_zoo.ssd.vgg_atrous import vgg16_atrous_300 as features
                else:
                    features = list(a.features)
                net = get_ssd(a.base, a.base_size, features, list(a.filters) if a.filters else None,
                              _scaled(a.sizes, scale), _SSD_RATIOS, list(a.steps), classes, "", pretrained=False,
                              pretrained_base=pretrained_base, root=root, prefix=PREFIX)
        else:
            net = _yolov3(a, classes, scale, pretrained_base, root)
    net.set_nms(nms_thresh=0, nms_topk=-1, post_nms=-1)  # decoded boxes before NMS (module doc)
    return net


@functools.cache  # one class (MXNet/GluonCV imported on first use only)
def _yolo_class():
    from gluoncv.model_zoo.yolo.yolo3 import YOLOV3, _upsample
    from mxnet import autograd

    class TrainableYOLOV3(YOLOV3):
        """GluonCV's YOLOV3 whose recorded training forward takes only the images and returns the raw
        predictions (box_preds, objectness, centers, scales, class_pred), so the engine's
        `loss(net(x), label)` works; `YOLOv3Loss` makes GluonCV's dynamic targets and loss from them.
        Every other call (inference, non-recording training, with targets) is GluonCV's own."""

        def hybrid_forward(self, F: Any, x: Any, *args: Any) -> Any:
            if args or not (autograd.is_training() and autograd.is_recording()):
                return super().hybrid_forward(F, x, *args)
            routes, dets, parts = [], [], [[], [], [], []]
            for stage in self.stages:
                x = stage(x)
                routes.append(x)
            for i, block, output in zip(range(len(routes)), self.yolo_blocks, self.yolo_outputs):
                x, tip = block(x)
                det, centers, scales, objness, class_pred, _, _ = output(tip)
                dets.append(det)
                for lst, v in zip(parts, (objness, centers, scales, class_pred)):
                    lst.append(v.reshape((0, -3, -1)))
                if i >= len(routes) - 1:
                    break
                x = self.transitions[i](x)
                upsample = _upsample(x, stride=2)
                route_now = routes[::-1][i + 1]
                x = F.concat(F.slice_like(upsample, route_now * 0, axes=(2, 3)), route_now, dim=1)
            return (F.concat(*dets, dim=1), *[F.concat(*p, dim=1) for p in parts])

    return TrainableYOLOV3


def _yolov3(a: GluonCVArch, classes: list[str], scale: float, pretrained_base: str | bool, root: str) -> Any:
    anchors = [_scaled(x, scale) for x in _YOLO_ANCHORS]
    if a.backbone == "darknet53":
        from gluoncv.model_zoo.yolo.darknet import darknet53

        base = darknet53(pretrained=pretrained_base, root=root)
        stages = [base.features[:15], base.features[15:24], base.features[24:]]
    else:
        from gluoncv.model_zoo.mobilenet import get_mobilenet

        base = get_mobilenet(multiplier=1, pretrained=pretrained_base, root=root)
        stages = [base.features[:33], base.features[33:69], base.features[69:-2]]
    return _yolo_class()(stages, [512, 256, 128], anchors, [8, 16, 32], classes=classes, prefix=PREFIX)


def build_meta(cfg: Any, classes: list[str]) -> dict[str, Any]:
    """A GluonCV detector's model-file meta (see model.build_meta for DetectNet_v2's)."""
    from tlkit_detection.model import input_shape_of

    m = cfg.model
    a = arch_for(m.detector, m.arch, m.n_layers)
    c, h, w = input_shape_of(cfg)
    if min(w, h) < a.min_input:
        raise SpecError(f"{a.detector} {a.backbone} needs an input of at least {a.min_input} px on each side "
                        f"(its last layers are unpadded convolutions); the spec asks for {w}x{h}")
    mode = m.preprocess_mode if m.preprocess_mode != "auto" else a.preprocess
    pp = cfg.postprocessing_config
    return {
        "task": "detection",
        "detector": a.detector,
        "arch": f"{a.detector}_{a.backbone}",
        "classes": list(classes),
        "input_shape": [c, h, w],
        "input_layout": "NCHW",
        "preprocessing": {"mode": mode, "resize_interpolation": "bilinear"},
        "output_names": list(OUTPUT_NAMES),
        "postprocessing": {n: nms_params(pp.for_class(n)) for n in classes},
        "export_nms": export_nms_record({n: nms_params(pp.for_class(n)) for n in classes}),
        # the .tlk's own outputs (boxes before NMS) have no nvinfer parser; exports replace this (export_nms)
        "deepstream": {"network_type": 100, "properties": {"output-tensor-meta": 1}},
        "build": {"detector": a.detector, "backbone": a.backbone, "classes": list(classes), "input_size": [w, h]},
    }


def export_nms_record(postprocessing: dict[str, dict[str, float]]) -> dict[str, Any]:
    """meta["export_nms"]: the NMS an ONNX export puts in its graph (tlkit.export.nms), from the per-class
    post-processing. The graph has one IoU and one score threshold: the lowest confidence threshold of all
    classes (each class's own is applied after, by `postprocess_nms_outputs` and DeepStream's class-attrs),
    and the first class's IoU (a note says so when the classes differ)."""
    first = next(iter(postprocessing.values()))
    return {
        "iou_threshold": float(first["nms_iou_threshold"]),
        "score_threshold": float(min(p["confidence_threshold"] for p in postprocessing.values())),
        "top_k": int(first["top_k"]),
        "keep_top_k": int(max(p["max_detections"] for p in postprocessing.values())),
        "min_height": float(min(p["minimum_bounding_box_height"] for p in postprocessing.values())),
        "per_class_threshold": {c: float(p["confidence_threshold"]) for c, p in postprocessing.items()},
        "per_class_iou_differs": len({p["nms_iou_threshold"] for p in postprocessing.values()}) > 1,
    }


def nms_params(c: Any) -> dict[str, float]:
    """Per-class NMS of a GluonCV detector from a ClusteringConfig. DetectNet_v2's defaults (IoU 0.2,
    confidence 0.1) would cut SSD's recall, so fields the spec does not set take GluonCV's (0.45, 0.01)."""
    given = c.model_fields_set
    return {
        "nms_iou_threshold": c.nms_iou_threshold if "nms_iou_threshold" in given else 0.45,
        "confidence_threshold": c.nms_confidence_threshold if "nms_confidence_threshold" in given else 0.01,
        "minimum_bounding_box_height": c.minimum_bounding_box_height if "minimum_bounding_box_height" in given else 0.0,
        "top_k": 400,
        "max_detections": 100,
    }


def head_names(net: Any) -> list[str]:
    """Graph names of the class/box prediction convolutions (their channel counts are fixed)."""
    if hasattr(net, "class_predictors"):
        return [p.predictor.name for p in list(net.class_predictors) + list(net.box_predictors)]
    return [o.prediction.name for o in net.yolo_outputs]


def build_from_meta(meta: dict[str, Any]) -> Any:
    build = meta.get("build") or {}
    for key in ("detector", "backbone", "classes", "input_size"):
        if key not in build:
            raise ModelFileError(f"GluonCV detector model file: meta.json build has no {key!r}")
    return build_net(build)


def _initialize(net: Any, ctx: list[Any]) -> None:
    """Per-parameter init (a plain Xavier initialize fails on SSD's expander BatchNorm): BN gamma/var 1,
    beta/mean/bias 0, kernels Xavier; parameters with their own initializer (anchors) keep it."""
    import mxnet as mx

    for name, p in net.collect_params().items():
        if p._data is not None or p._deferred_init:
            continue
        if name.endswith(("gamma", "running_var", "moving_var")):
            init = mx.init.One()
        elif name.endswith(("beta", "running_mean", "moving_mean", "bias")):
            init = mx.init.Zero()
        else:
            init = mx.init.Xavier(magnitude=2.0)
        p.initialize(init=None if p.init is not None else init, default_init=init, ctx=ctx)


def build_for_training(cfg: Any, classes: list[str], ctx: list[Any], console: Any = None) -> Any:
    """The GluonCV detector `train` starts from (`tlkit.transfer.build_for_training`; see the module doc for the
    pretrained weights)."""
    from tlkit.transfer import build_for_training as build_network

    return build_network(_builder_class()(cfg, classes), ctx, console)


def _builder_class() -> type:
    from tlkit.transfer import ModelBuilder, describe_load

    class GluonCVBuilder(ModelBuilder):
        """SSD / YOLOv3's part of `tlkit.transfer.build_for_training`: GluonCV's ImageNet bases load while the
        network is built; the backbone (freeze_blocks) is a tlkit Backbone only for efficientnet_lite0."""

        task = "detection"
        backbone_path = "features.backbone"

        def build(self) -> tuple[Any, dict[str, Any]]:
            m, uri = self.cfg.model, str(self.cfg.train_config.pretrained_model_path or "")
            meta = build_meta(self.cfg, self.classes)
            self.arch = a = arch_for(m.detector, m.arch, m.n_layers)
            self.imagenet = uri == "imagenet" or _is_store_base(uri, a)
            tag = _pretrained_base_tag(a.base, self.imagenet) if self.imagenet and a.backbone != "efficientnet_lite0" else False
            net = build_net(meta["build"], pretrained_base=tag)
            meta["prune_exclude"] = head_names(net)
            self.tag = tag
            return net, meta

        def initialize(self, net: Any, meta: dict[str, Any], ctx: list[Any]) -> None:
            import mxnet as mx

            _initialize(net, ctx)
            with mx.autograd.train_mode():  # materialise deferred shapes (predictors) before loading
                net(mx.nd.zeros((1, *meta["input_shape"]), ctx=ctx[0]))

        def load_pretrained(self, net: Any, meta: dict[str, Any], uri: str, console: Any) -> Any:
            a, report = self.arch, None
            if self.imagenet and a.backbone == "efficientnet_lite0":
                from tlkit.weights import load_pretrained

                report = load_pretrained(net.features.backbone, "imagenet", arch=a.base)
                if console is not None:
                    console.print(describe_load(report))
            elif self.imagenet:
                if console is not None:
                    console.print(f"pretrained weights: ImageNet {a.base} (gluoncv tag {self.tag})")
            else:
                report = load_detector_weights(net, uri, self.classes, list(self.cfg.model.pretrained_classes), console)
            return report

        def load_graph(self, ctx: list[Any], console: Any) -> Any:
            from tlkit_detection.model import load_detector_graph

            return load_detector_graph(self.cfg, self.classes, ctx, console)

        def finish_graph(self, built: Any, ctx: list[Any]) -> Any:
            return retrainable_graph(built, self.cfg, self.classes, ctx)

    return GluonCVBuilder


def _is_store_base(uri: str, a: GluonCVArch) -> bool:
    """True for `gluoncv://<a.base>` (the ImageNet base network: pulled into $MXNET_HOME/models like
    GluonCV's `pretrained_base`); another GluonCV classifier is refused, detectors load as detector files."""
    if not uri.startswith("gluoncv://"):
        return False
    from tlkit.hub import gluoncv_store
    from tlkit.weights import resolve_weights

    name = uri[len("gluoncv://") :]
    if name == a.base:
        resolve_weights(uri)
        return True
    if gluoncv_store.kind(name) == "classification":
        raise SpecError(
            f"train_config.pretrained_model_path {uri}: {a.detector} on {a.backbone} starts from its base network "
            f"gluoncv://{a.base} or from a detector (gluoncv://{a.detector.replace('yolov3', 'yolo3')}_..., "
            "a .params or .tlk)"
        )
    return False


def load_detector_weights(net: Any, uri: str, classes: list[str], file_classes: list[str], console: Any = None) -> Any:
    """Load a GluonCV / tlkit detector file into `net` (built for `classes`), resetting the class heads.

    The file's class count comes from its first class head; its class names from `file_classes`
    (model_config.pretrained_classes), a tlkit file's meta, or "voc"/"coco" in the file name. Rows of the
    classes present in both are reused (gluoncv reset_class); the others start fresh."""
    import mxnet as mx
    from tlkit.model_io import is_model_file, read_meta
    from tlkit.transfer import describe_load
    from tlkit.weights import load_pretrained, load_weight_file, resolve_weights

    path = resolve_weights(uri)
    arrays = load_weight_file(path)
    ssd = hasattr(net, "class_predictors")
    # SSD: anchors x (classes + background) channels; YOLOv3: anchors x (4 box + 1 objectness + classes)
    head = "class_predictors.0.predictor.weight" if ssd else "yolo_outputs.0.prediction.weight"
    if head not in arrays:
        raise ModelFileError(f"{path}: not a GluonCV {'SSD' if ssd else 'YOLOv3'} detector file (no {head})")
    if ssd:
        n_anchor = net.class_predictors[0].predictor.weight.shape[0] // (len(classes) + 1)
        n_file = arrays[head].shape[0] // n_anchor - 1
    else:
        n_file = arrays[head].shape[0] // net.yolo_outputs[0]._num_anchors - 5
    names = list(file_classes) or _known_classes(path, n_file)
    if is_model_file(path) and not file_classes:
        names = list(read_meta(path).get("classes") or names)
    if len(names) != n_file:
        raise SpecError(f"model_config.pretrained_classes lists {len(names)} classes, {path} has {n_file}")
    net.reset_class(names)  # the file's head shapes, so every tensor loads
    report = load_pretrained(net, path, weight_map=lambda n: None if "anchor" in n else n)
    if console is not None:
        console.print(describe_load(report))
    if not report.loaded:
        raise ModelFileError(f"{path}: no tensor matched the network; is it weights for this architecture?")
    reuse = {c: c for c in classes if c in names}
    net.reset_class(list(classes), reuse_weights=reuse or None)
    ctx = next(iter(net.collect_params().values())).list_ctx()
    for p in net.collect_params().values():  # the new heads: deferred until the next forward
        if p._data is None and not p._deferred_init:
            p.initialize(mx.init.Xavier(magnitude=2.0) if p.name.endswith("weight") else mx.init.Zero(), ctx=ctx)
    if console is not None:
        console.print(f"class heads reset for {classes}; reused from {path.name}: {sorted(reuse) or 'none'}")
    return report


def _known_classes(path: Any, n: int) -> list[str]:
    from gluoncv.data import COCODetection, VOCDetection

    name = str(path).lower()
    for key, known in (("voc", VOCDetection.CLASSES), ("coco", COCODetection.CLASSES)):
        if key in name and len(known) == n:
            return list(known)
    return [f"pretrained_class_{i}" for i in range(n)]  # names unknown: nothing is reused


# -- retraining a pruned graph ---------------------------------------------------------------------------------


def retrainable_graph(built: Any, cfg: Any, classes: list[str], ctx: list[Any]) -> Any:
    """`load_graph: true`: the loaded pruned detector graph, with this spec's NMS settings, ready to train."""
    built.meta["postprocessing"] = {n: nms_params(cfg.postprocessing_config.for_class(n)) for n in classes}
    built.meta["export_nms"] = export_nms_record(built.meta["postprocessing"])
    built.net = _retrainable_graph_class()(built.net, built.meta, ctx)
    return built


def _consumers(nodes: list[dict]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for j, *_ in n["inputs"]:
            out.setdefault(j, []).append(i)
    return out


def _first_inputs(nodes: list[dict], i: int, steps: int) -> list[int]:
    """Node i and the nodes reached by following first inputs, `steps` at most."""
    path = [i]
    while len(path) <= steps and nodes[path[-1]]["inputs"]:
        path.append(nodes[path[-1]]["inputs"][0][0])
    return path


def _ssd_training_outputs(sym: Any, heads: list[str]) -> list[Any]:
    """(cls_preds, box_preds, anchors) of GluonCV's SSD training forward, found in its inference graph: the
    Reshapes of the Concats of the flattened class / box predictor maps and of the anchor generators."""
    import json

    nodes = json.loads(sym.tojson())["nodes"]
    kind = {h: "cls" for h in heads[: len(heads) // 2]} | {h: "box" for h in heads[len(heads) // 2:]}
    found: dict[str, int] = {}
    for i, n in enumerate(nodes):
        if n["op"] != "Reshape" or nodes[n["inputs"][0][0]]["op"] != "Concat":
            continue
        path = [nodes[j] for j in _first_inputs(nodes, i, 8)]
        # Reshape <- Concat <- Flatten <- transpose <- predictor conv
        head = path[4]["name"].removesuffix("_fwd") if len(path) > 4 and path[4]["op"] == "Convolution" else ""
        if head in kind:
            found.setdefault(kind[head], i)
        elif any(q["op"] == "null" and "anchor" in q["name"] for q in path):
            found.setdefault("anchors", i)
    if len(found) != 3:
        return []
    internals = sym.get_internals()
    return [internals[nodes[found[k]]["name"] + "_output"] for k in ("cls", "box", "anchors")]


def _yolo_training_outputs(sym: Any, heads: list[str]) -> list[Any]:
    """TrainableYOLOV3's training outputs (box predictions, objectness, centers, scales, class predictions)
    from its inference graph: per YOLOOutputV3, the slices of its reshaped prediction and the corner boxes
    it tiles per class."""
    import json

    import mxnet as mx

    nodes = json.loads(sym.tojson())["nodes"]
    users = _consumers(nodes)
    internals = sym.get_internals()

    def out(i: int) -> Any:
        return internals[nodes[i]["name"] + "_output"]

    dets, parts = [], [[], [], [], []]  # objness, centers, scales, class_pred
    for head in heads:
        # conv -> Reshape -> transpose -> Reshape (0, -1, anchors, 5 + classes): the prediction GluonCV slices
        pred = next((i for i, n in enumerate(nodes) if n["name"] == head + "_fwd"), None)
        for op in ("Reshape", "transpose", "Reshape"):
            pred = next((u for u in users.get(pred, []) if nodes[u]["op"] == op), None)
        if pred is None:
            return []
        slices = {nodes[i]["attrs"]["begin"]: i for i in users.get(pred, []) if nodes[i]["op"] == "slice_axis"}
        tiles = [i for i, n in enumerate(nodes) if n["op"] == "tile" and n["name"].startswith(head.rsplit("conv", 1)[0])]
        if set(slices) != {"0", "2", "4", "5"} or len(tiles) != 1:
            return []
        dets.append(mx.sym.reshape(out(nodes[tiles[0]]["inputs"][0][0]), shape=(0, -1, 4)))
        for lst, begin in zip(parts, ("4", "0", "2", "5")):
            lst.append(mx.sym.reshape(out(slices[begin]), shape=(0, -3, -1)))
    return [mx.sym.concat(*dets, dim=1), *[mx.sym.concat(*p, dim=1) for p in parts]]


def teacher_training_graph(path: Any, ctx: list[Any]) -> Any:
    """A distillation teacher: the detector of model file `path` (gluon or pruned graph) as a block giving
    what GluonCV's SSD / TrainableYOLOV3 give in training (raw class / box predictions before decoding and
    NMS), taken from its inference graph, so it runs in inference mode (batch-norm on running statistics)."""
    import mxnet as mx
    from mxnet import gluon
    from tlkit.model_io import graph_of, load_model, load_net, symbol_block

    mf = load_model(path)
    meta = mf.meta
    if mf.kind == "graph":
        symbol_json, params = mf.symbol_json or "", mf.params
    else:
        net, _ = load_net(path, ctx[0])
        symbol_json, params = graph_of(net, tuple(meta["input_shape"]))
    block = symbol_block(symbol_json, params, ctx[0])
    inputs, sym = block._cached_graph
    heads = list(meta.get("prune_exclude") or [])
    outs = (_yolo_training_outputs if meta.get("detector") == "yolov3" else _ssd_training_outputs)(sym, heads)
    if not outs:
        raise ModelFileError(f"{path}: the {meta.get('detector')} graph does not have GluonCV's layout around its heads")
    teacher = gluon.SymbolBlock(mx.sym.Group(outs), inputs, params=block.collect_params())
    if len(ctx) > 1:
        teacher.collect_params().reset_ctx(ctx)
    return teacher


@functools.cache  # one class (MXNet imported on first use only)
def _retrainable_graph_class():
    import mxnet as mx
    from mxnet import autograd, gluon

    class RetrainableGraph(gluon.SymbolBlock):
        """A pruned GluonCV detector graph that trains. Outside training it is the saved inference graph
        (ids, scores, bboxes: what `.tlk` files and exports give, and what the engine saves); in training
        mode it gives what GluonCV's SSD / TrainableYOLOV3 give there, taken from inside the same graph and
        sharing its parameters, so SSDLoss / YOLOv3Loss and the target makers work unchanged."""

        def __init__(self, graph: Any, meta: dict[str, Any], ctx: list[Any]):
            inputs, sym = graph._cached_graph
            super().__init__(sym, inputs, params=graph.collect_params())
            heads = list(meta.get("prune_exclude") or [])
            yolo = meta["detector"] == "yolov3"
            outs = (_yolo_training_outputs if yolo else _ssd_training_outputs)(sym, heads)
            if not outs:
                raise ModelFileError(f"the {meta['detector']} graph does not have GluonCV's layout around its "
                                     f"heads {heads}: cannot find its training outputs")
            train = gluon.SymbolBlock(mx.sym.Group(outs), inputs, params=self.collect_params())
            self.__dict__["_train"] = train  # not a child block: it shares this block's parameters
            if yolo:  # GluonCV's YOLOv3 target makers: anchors, offsets and map sizes do not change with pruning
                ref = build_from_meta(meta)
                _initialize(ref, ctx)
                self.__dict__.update(reference=ref, _target_generator=ref._target_generator, _loss=ref._loss)

        def forward(self, x: Any, *args: Any) -> Any:
            if autograd.is_training() and not args:
                return self._train(x)
            return super().forward(x, *args)

        def hybridize(self, active: bool = True, **kwargs: Any) -> None:
            super().hybridize(active, **kwargs)
            self._train.hybridize(active, **kwargs)

    return RetrainableGraph


# -- post-processing -----------------------------------------------------------------------------------------


def postprocess_gluoncv(ids: Any, scores: Any, bboxes: Any, classes: list[str], input_size: tuple[int, int],
                        params: dict[str, dict[str, float]], orig_sizes: list[tuple[int, int]]) -> list[list[Any]]:
    """(B, M, 1) ids, (B, M, 1) scores, (B, M, 4) boxes in input pixels -> per image Detections in source
    pixels: per class confidence threshold, top_k, NMS, minimum height; at most max_detections per image."""
    import numpy as np

    from tlkit_detection.clustering import Detection, greedy_nms

    w_in, h_in = input_size
    out = []
    for b, (w0, h0) in enumerate(orig_sizes):
        cid = np.asarray(ids[b]).reshape(-1).astype(np.int64)
        sc = np.asarray(scores[b]).reshape(-1).astype(np.float64)
        bx = np.asarray(bboxes[b]).reshape(-1, 4).astype(np.float64)
        bx[:, [0, 2]] = bx[:, [0, 2]].clip(0, w_in)
        bx[:, [1, 3]] = bx[:, [1, 3]].clip(0, h_in)
        dets = []
        for k, name in enumerate(classes):
            p = params[name]
            sel = np.flatnonzero((cid == k) & (sc >= p["confidence_threshold"])
                                 & (bx[:, 3] - bx[:, 1] > p["minimum_bounding_box_height"]))
            if not sel.size:
                continue
            sel = sel[np.argsort(-sc[sel], kind="stable")[: int(p["top_k"])]]
            for i in sel[greedy_nms(bx[sel], sc[sel], p["nms_iou_threshold"])]:
                dets.append(Detection(name, bx[i], float(sc[i]), float(sc[i]), 1))
        dets.sort(key=lambda d: -d.confidence)
        limit = int(max(params[c]["max_detections"] for c in classes)) if classes else 0
        s = np.array([w0 / w_in, h0 / h_in, w0 / w_in, h0 / h_in])
        for d in dets[:limit]:
            d.bbox = np.asarray(d.bbox, np.float64) * s
        out.append(dets[:limit])
    return out


def postprocess_nms_outputs(num: Any, boxes: Any, scores: Any, class_ids: Any, classes: list[str],
                            input_size: tuple[int, int], params: dict[str, dict[str, float]],
                            orig_sizes: list[tuple[int, int]]) -> list[list[Any]]:
    """The outputs of an export with NMS in the graph (tlkit.export.nms: count, normalized y1 x1 y2 x2, score,
    class) -> per image Detections in source pixels, each class's confidence threshold and minimum height
    applied (the graph used the lowest of them), at most max_detections per image."""
    import numpy as np

    from tlkit_detection.clustering import Detection

    w_in, h_in = input_size
    out = []
    for b, (w0, h0) in enumerate(orig_sizes):
        n = int(np.asarray(num[b]).reshape(-1)[0])
        dets = []
        for yx, sc, k in zip(np.asarray(boxes[b])[:n], np.asarray(scores[b])[:n], np.asarray(class_ids[b])[:n]):
            k = int(k)
            if not 0 <= k < len(classes):
                continue
            p = params[classes[k]]
            y1, x1, y2, x2 = (float(v) for v in yx)
            box = np.array([x1 * w_in, y1 * h_in, x2 * w_in, y2 * h_in])
            if sc < p["confidence_threshold"] or box[3] - box[1] <= p["minimum_bounding_box_height"]:
                continue
            dets.append(Detection(classes[k], box, float(sc), float(sc), 1))
        limit = int(max(params[c]["max_detections"] for c in classes)) if classes else 0
        s = np.array([w0 / w_in, h0 / h_in, w0 / w_in, h0 / h_in])
        for d in dets[:limit]:
            d.bbox = d.bbox * s
        out.append(dets[:limit])
    return out


def params_from(meta: dict[str, Any], spec: Any = None) -> dict[str, dict[str, float]]:
    """Per-class NMS settings: the spec's postprocessing_config when it sets one, else the model's own meta."""
    from tlkit_detection.predict import spec_postprocessing

    classes = list(meta["classes"])
    if spec_postprocessing(spec) is not None:
        return {c: nms_params(spec.postprocessing_config.for_class(c)) for c in classes}
    saved = meta.get("postprocessing") or {}
    from tlkit_detection.config import ClusteringConfig

    return {c: saved.get(c) or nms_params(ClusteringConfig()) for c in classes}


# -- runners ---------------------------------------------------------------------------------------------------


class GluonCVDetector(Detector):
    """A Detector whose `heads` give (ids, scores, bboxes) before NMS, or the four outputs of an export with NMS
    in the graph; `params` are per-class NMS settings."""

    def run_batch(self, x: Any, orig_sizes: Any) -> list[list[Any]]:
        t = time.perf_counter()
        outs = self.heads(x)
        self.times.append((time.perf_counter() - t) / max(len(x), 1))
        if len(outs) == 4:
            return postprocess_nms_outputs(*outs, self.classes, self.input_size, self.params, orig_sizes)
        return postprocess_gluoncv(*outs, self.classes, self.input_size, self.params, orig_sizes)


def net_detector(net: Any, meta: dict[str, Any], ctx: Any, params: dict[str, dict[str, float]]) -> Any:
    """A Detector over an in-memory GluonCV network (validation during training)."""

    def heads(x: Any):
        import mxnet as mx

        return tuple(o.asnumpy() for o in net(mx.nd.array(x, ctx=ctx)))

    return GluonCVDetector(None, "mxnet", meta, heads, params)


def runner_detector(path: Any, eng: Any, meta: dict[str, Any], spec: Any, backend: str) -> Any:
    """A Detector over a loaded runner (.tlk in MXNet, .onnx in onnxruntime) of a GluonCV detector."""
    import numpy as np

    from tlkit.export.nms import OUTPUTS as NMS_OUTPUTS

    def heads(x: Any):
        outs = eng.run(np.ascontiguousarray(x, dtype=np.float32))
        by_name = dict(zip(list(getattr(eng, "output_names", None) or OUTPUT_NAMES), outs))
        for names in (OUTPUT_NAMES, NMS_OUTPUTS):
            if len(outs) == len(names) and all(n in by_name for n in names):
                return tuple(np.asarray(by_name[n]) for n in names)
        if len(outs) != 3:
            raise ModelFileError(f"{path}: expected the outputs {OUTPUT_NAMES} (or {NMS_OUTPUTS} with NMS in the "
                                 f"graph), the model gave {len(outs)}")
        return tuple(np.asarray(o) for o in outs)

    return GluonCVDetector(path, backend, meta, heads, params_from(meta, spec))


def build_any_from_meta(meta: dict[str, Any]) -> Any:
    """TaskSpec.build_model of the detection task: a GluonCV detector or DetectNet_v2, by meta["detector"]."""
    if meta.get("detector") in GLUONCV_DETECTORS:
        return build_from_meta(meta)
    from tlkit_detection.model import build_from_meta as build_detectnet

    return build_detectnet(meta)
