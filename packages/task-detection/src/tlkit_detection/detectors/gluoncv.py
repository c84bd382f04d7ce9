"""GluonCV detectors (`model_config.detector: ssd | yolov3`): what SSD and YOLOv3 share. `ssd.py` and
`yolov3.py` add the network, the training targets and losses, and where their training outputs sit in a graph;
another GluonCV detector (Faster R-CNN, CenterNet) is one more such module.

The network is GluonCV's own block, built for the user's classes and the spec's input size (anchor sizes scale
with the input's shorter side from GluonCV's presets), never downloading. `model_config.arch` is one of the
detector's GluonCV presets (`archs`: GluonCV's base networks, `pretrained_base=False`; ImageNet weights
(`pretrained_model_path: imagenet`) come from a local file, `$MXNET_HOME/models/<base>-<hash>.params`, GluonCV's
own cache layout, which `gluoncv://<base>` fills through tlkit's model store pull), or else any backbone of
tlkit's registry (core's and plugins' `tlkit.backbones`, e.g. resnet34, efficientnet_lite0): the detector then
takes that backbone's features at strides 8, 16 and 32 (`backbone_taps`) with the detector's `tlkit_arch`
preset, loads its named weight sets (`imagenet`) or `gluoncv://` classifier weights into the backbone, and
`model_config.freeze_blocks` freezes its blocks.
`train_config.pretrained_model_path` may name a GluonCV detector `.params` (e.g. a VOC or COCO model, also as
`gluoncv://ssd_512_resnet50_v1_voc`) or a tlkit detector `.tlk`: it loads by structural name except the class
heads and anchors, then the class heads are reset for the user's classes, reusing the rows of classes whose
names match (GluonCV's `reset_class(reuse_weights=...)`). A pruned detector (`prune`, a graph file) retrains
with `train_config.load_graph: true` (see `RetrainableGraph`).

Inference output of `.tlk` files: GluonCV's decoding WITHOUT its NMS: `ids (B, M, 1)` (class id, -1 = below
0.01), `scores (B, M, 1)`, `bboxes (B, M, 4)` x1 y1 x2 y2 in network-input pixels, M = classes x anchors. NMS
runs in `postprocess_gluoncv` (numpy) with the spec's thresholds. ONNX exports carry the NMS in the graph
(meta["export_nms"], see tlkit.export.nms: the TF Object Detection API outputs DeepStream's stock parser
reads); `postprocess_nms_outputs` turns those into the same detections.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from tlkit.errors import ModelFileError, SpecError
from tlkit_detection.detectors.base import Detector

OUTPUT_NAMES = ["ids", "scores", "bboxes"]
PREFIX = "gcv_"  # a fixed block prefix: the same graph node names in every process (meta["prune_exclude"])


@dataclass(frozen=True)
class GluonCVArch:
    """One backbone of a GluonCV detector: GluonCV's preset values, at `base_size`."""

    backbone: str  # the model_config.arch (+ n_layers) that selects it
    base: str  # GluonCV base network name (ImageNet weights file name)
    base_size: int
    sizes: tuple[float, ...] = ()  # SSD anchor sizes at base_size
    steps: tuple[int, ...] = ()
    features: Any = None  # SSD: base network output names
    filters: tuple[int, ...] | None = None
    preprocess: str = "torch"  # a tlkit backbone's own default_preprocess instead (`preprocess_mode`)
    min_input: int = 32
    tlkit: bool = False  # a backbone of tlkit's registry (`base` is its name), not a GluonCV base network


def backbone_key(arch: str, n_layers: int | None) -> str:
    """model_config (arch, n_layers) -> the backbone name used above (resnet + 50 -> resnet50)."""
    if arch in ("resnet", "vgg", "darknet") and n_layers is not None:
        return f"{arch}{n_layers}"
    return arch


TAP_STRIDES = (8, 16, 32)  # where a detector on a tlkit backbone takes its features


def backbone_taps(backbone: Any, label: str) -> list[int]:
    """Indices in `backbone`'s layer list of the last layer at each stride of TAP_STRIDES (found by shape
    inference on a 256 px input, no weights needed); SpecError naming model_config.arch when the backbone
    cannot give them (a Backbone subclass with its own forward has no layer list to tap)."""
    import mxnet as mx

    arch = backbone.arch
    if not backbone._layer_names:
        raise SpecError(
            f"model_config.arch {arch!r}: {label} needs the backbone's features at strides "
            f"{', '.join(map(str, TAP_STRIDES))}, but {arch} builds its own forward (a Backbone without "
            "`layers`); register it in the layer-list form of tlkit.backbones.Backbone"
        )
    x, outs = mx.sym.var("data"), []
    for name in backbone._layer_names:
        x = backbone._children[name](x)
        outs.append(x)
    _, shapes, _ = mx.sym.Group(outs).infer_shape_partial(data=(1, 3, 256, 256))
    last = {256 // s[2]: i for i, s in enumerate(shapes) if s and s[2]}
    missing = [s for s in TAP_STRIDES if s not in last]
    if missing:
        raise SpecError(
            f"model_config.arch {arch!r}: {label} needs the backbone's features at strides "
            f"{', '.join(map(str, TAP_STRIDES))}; no layer of {arch} is at stride "
            f"{', '.join(map(str, missing))} (its layers reach strides {sorted(last)})"
        )
    return [last[s] for s in TAP_STRIDES]


def scaled(values: Any, scale: float) -> list[float]:
    return [round(float(v) * scale, 3) for v in values]


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


def initialize(net: Any, ctx: list[Any]) -> None:
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


def _known_classes(path: Any, n: int) -> list[str]:
    from gluoncv.data import COCODetection, VOCDetection

    name = str(path).lower()
    for key, known in (("voc", VOCDetection.CLASSES), ("coco", COCODetection.CLASSES)):
        if key in name and len(known) == n:
            return list(known)
    return [f"pretrained_class_{i}" for i in range(n)]  # names unknown: nothing is reused


# -- retraining a pruned graph ---------------------------------------------------------------------------------


@functools.cache  # one class (the hooks' base is imported on first use only)
def _builder_class() -> type:
    from tlkit.transfer import ModelBuilder, describe_load

    class GluonCVBuilder(ModelBuilder):
        """A GluonCV detector's part of `tlkit.transfer.build_for_training`: GluonCV's ImageNet bases load while
        the network is built; freeze_blocks and named pretrained sets apply to tlkit backbones (`a.tlkit`)."""

        task = "detection"
        classes: list[str]  # a detector is always built for its classes

        def __init__(self, detector: GluonCVDetector, cfg: Any, classes: list[str]):
            super().__init__(cfg, classes)
            self.detector = detector

        def build(self) -> tuple[Any, dict[str, Any]]:
            d, m, uri = self.detector, self.cfg.model, str(self.cfg.train_config.pretrained_model_path or "")
            meta = d.build_meta(self.cfg, self.classes)
            self.arch = a = d.arch(m.arch, m.n_layers)
            self.imagenet = uri == "imagenet" or d._is_store_base(uri, a)
            self.tag = _pretrained_base_tag(a.base, self.imagenet) if self.imagenet and not a.tlkit else False
            net = d.build_net(meta["build"], pretrained_base=self.tag)
            meta["prune_exclude"] = d.head_names(net)
            return net, meta

        def initialize(self, net: Any, meta: dict[str, Any], ctx: list[Any]) -> None:
            import mxnet as mx

            initialize(net, ctx)
            with mx.autograd.train_mode():  # materialise deferred shapes (predictors) before loading
                net(mx.nd.zeros((1, *meta["input_shape"]), ctx=ctx[0]))

        def load_pretrained(self, net: Any, meta: dict[str, Any], uri: str, console: Any) -> Any:
            a, report = self.arch, None
            if self.imagenet and a.tlkit:  # the registry's named set (imagenet) or a gluoncv:// classifier
                from tlkit.weights import load_pretrained

                report = load_pretrained(self.detector.tlkit_backbone(net)[0], uri, arch=a.base)
                if console is not None:
                    console.print(describe_load(report))
                if not report.loaded:
                    raise ModelFileError(
                        f"train_config.pretrained_model_path {uri}: no tensor matched backbone {a.base}"
                    )
            elif self.imagenet:
                if console is not None:
                    console.print(f"pretrained weights: ImageNet {a.base} (gluoncv tag {self.tag})")
            else:
                report = self.detector.load_detector_weights(
                    net, uri, self.classes, list(self.cfg.model.pretrained_classes), console
                )
            return report

        def backbone(self, net: Any) -> Any:
            if not self.arch.tlkit:  # GluonCV bases are one traced graph without blocks
                return None
            backbone, self.in_net = self.detector.tlkit_backbone(net)
            return backbone

        def frozen_prefix(self, prefix: str) -> str:
            return self.in_net(prefix)

        def no_blocks_hint(self) -> str:
            gluoncv = ", ".join(x.backbone for x in self.detector.archs)
            return f" (GluonCV's {gluoncv} are one traced graph; tlkit backbones have blocks)"

        def load_graph(self, ctx: list[Any], console: Any) -> Any:
            from tlkit_detection.model import load_detector_graph

            return load_detector_graph(self.cfg, self.classes, ctx, console)

        def finish_graph(self, built: Any, ctx: list[Any]) -> Any:
            return self.detector.retrainable_graph(built, self.cfg, self.classes, ctx)

    return GluonCVBuilder


@functools.cache  # one class (MXNet imported on first use only)
def _retrainable_graph_class():
    import mxnet as mx
    from mxnet import autograd, gluon

    class RetrainableGraph(gluon.SymbolBlock):
        """A pruned GluonCV detector graph that trains. Outside training it is the saved inference graph
        (ids, scores, bboxes: what `.tlk` files and exports give, and what the engine saves); in training
        mode it gives what the detector's training forward gives (`training_outputs`), taken from inside the same graph and
        sharing its parameters, so the detector's loss and target makers work unchanged."""

        def __init__(self, graph: Any, meta: dict[str, Any], ctx: list[Any]):
            inputs, sym = graph._cached_graph
            super().__init__(sym, inputs, params=graph.collect_params())
            from tlkit_detection.detectors import get

            detector = cast(GluonCVDetector, get(meta["detector"]))  # only GluonCV detectors save such graphs
            heads = list(meta.get("prune_exclude") or [])
            outs = detector.training_outputs(sym, heads)
            if not outs:
                raise ModelFileError(
                    f"the {meta['detector']} graph does not have GluonCV's layout around its "
                    f"heads {heads}: cannot find its training outputs"
                )
            train = gluon.SymbolBlock(mx.sym.Group(outs), inputs, params=self.collect_params())
            self.__dict__["_train"] = train  # not a child block: it shares this block's parameters
            detector.prepare_retraining(self, meta, ctx)

        def forward(self, x: Any, *args: Any) -> Any:
            if autograd.is_training() and not args:
                return self._train(x)
            return super().forward(x, *args)

        def hybridize(self, active: bool = True, **kwargs: Any) -> None:
            super().hybridize(active, **kwargs)
            self._train.hybridize(active, **kwargs)

    return RetrainableGraph


# -- post-processing -----------------------------------------------------------------------------------------


def postprocess_gluoncv(
    ids: Any,
    scores: Any,
    bboxes: Any,
    classes: list[str],
    input_size: tuple[int, int],
    params: dict[str, dict[str, float]],
    orig_sizes: list[tuple[int, int]],
) -> list[list[Any]]:
    """(B, M, 1) ids, (B, M, 1) scores, (B, M, 4) boxes in input pixels -> per image Detections in source
    pixels: per class confidence threshold, top_k, NMS, minimum height; at most max_detections per image."""
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
            sel = np.flatnonzero(
                (cid == k)
                & (sc >= p["confidence_threshold"])
                & (bx[:, 3] - bx[:, 1] > p["minimum_bounding_box_height"])
            )
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


def postprocess_nms_outputs(
    num: Any,
    boxes: Any,
    scores: Any,
    class_ids: Any,
    classes: list[str],
    input_size: tuple[int, int],
    params: dict[str, dict[str, float]],
    orig_sizes: list[tuple[int, int]],
) -> list[list[Any]]:
    """The outputs of an export with NMS in the graph (tlkit.export.nms: count, normalized y1 x1 y2 x2, score,
    class) -> per image Detections in source pixels, each class's confidence threshold and minimum height
    applied (the graph used the lowest of them), at most max_detections per image."""
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


def target_batches(ds: Any, targets: Any, order: Any, batch_size: int, drop_last: bool, shard: Any = None):
    """`targets(image, boxes, classes)` of the frames in `order`, a list per batch (only this node's slice
    of it with `shard`, a tlkit.distributed.World)."""
    n = len(order)
    for start in range(0, n - batch_size + 1 if drop_last else n, batch_size):
        idx = order[start : start + batch_size]
        yield [
            targets(ds.frames[i].image, ds.frames[i].boxes, ds.frames[i].classes)
            for i in (idx if shard is None else shard.shard(idx))
        ]


class GluonCVDetector(Detector):
    """A GluonCV detector. Subclasses set `name`, `archs`, `tlkit_arch`, `gluoncv_name` and `label`, and implement
    `network`, `tlkit_backbone`, `head_names`, `file_class_count`, `training_outputs` and `training`."""

    title = "GluonCV"
    output_names = tuple(OUTPUT_NAMES)
    retrace_to_validate = True  # SSD's training branch returns raw predictions: trace inference to validate
    archs: tuple[GluonCVArch, ...] = ()  # GluonCV's presets, by model_config.arch (+ n_layers)
    tlkit_arch: GluonCVArch | None = None  # the preset for every other (registered tlkit) backbone
    gluoncv_name = ""  # GluonCV's model-zoo prefix (ssd, yolo3), for error messages
    label = ""  # how errors name it (SSD, YOLOv3)
    class_head = ""  # parameter name of the first class head in a detector weight file

    # -- what a GluonCV detector module implements -----------------------------------------------------------

    def network(self, a: GluonCVArch, classes: list[str], scale: float, pretrained_base: str | bool, root: str) -> Any:
        """GluonCV's block for `a` and the user's classes, its anchors scaled by `scale`."""
        raise NotImplementedError

    def tlkit_backbone(self, net: Any) -> tuple[Any, Callable[[str], str]]:
        """The tlkit Backbone inside `net` (built on a `tlkit_arch`), and how a parameter-name prefix of the
        backbone reads in `net` (freeze_blocks)."""
        raise NotImplementedError

    def head_names(self, net: Any) -> list[str]:
        """Graph names of the class/box prediction convolutions (their channel counts are fixed)."""
        raise NotImplementedError

    def file_class_count(self, net: Any, n_classes: int, head: Any) -> int:
        """The class count of a weight file whose `class_head` tensor is `head` (net built for n_classes)."""
        raise NotImplementedError

    def training_outputs(self, sym: Any, heads: list[str]) -> list[Any]:
        """The outputs the training forward gives (what the loss takes), found in the inference graph `sym`
        around the prediction convolutions `heads`; [] when the graph does not have GluonCV's layout."""
        raise NotImplementedError

    def prepare_retraining(self, graph: Any, meta: dict[str, Any], ctx: list[Any]) -> None:
        """Called once on a RetrainableGraph (a pruned graph about to train): attach what training needs."""

    # -- architectures ---------------------------------------------------------------------------------------

    def arch(self, arch: str, n_layers: int | None) -> GluonCVArch:
        """The preset of model_config (arch, n_layers): GluonCV's own for its base networks, else `tlkit_arch`
        for a backbone of tlkit's registry (its preprocessing the backbone's own)."""
        import dataclasses

        from tlkit.backbones import arch_name
        from tlkit.errors import UnknownNameError

        key = backbone_key(arch, n_layers)
        found = next((a for a in self.archs if a.backbone == key), None)
        if found is not None:
            return found
        try:
            name = arch_name(arch, n_layers, task="detection")
        except UnknownNameError as e:
            raise SpecError(
                f"model_config.arch {key!r} is not available for detector {self.name!r}: not one of GluonCV's "
                f"{', '.join(a.backbone for a in self.archs)} (resnet/vgg/darknet with model_config.n_layers, e.g. "
                f"arch: resnet, n_layers: 50), nor a registered backbone ({', '.join(e.known)}; see `tlkit plugins`)"
            ) from None
        if self.tlkit_arch is None:
            raise SpecError(
                f"model_config.arch {name!r}: {self.name} takes only GluonCV's "
                f"{', '.join(a.backbone for a in self.archs)}"
            )
        return dataclasses.replace(self.tlkit_arch, backbone=name, base=name, tlkit=True)

    def preprocess_mode(self, cfg: Any) -> str:
        a = self.arch(cfg.model.arch, cfg.model.n_layers)
        if a.tlkit:  # what the backbone's pretrained weights expect
            from tlkit.backbones import build_backbone

            return build_backbone(a.base).default_preprocess
        return a.preprocess

    # -- building --------------------------------------------------------------------------------------------

    def build_net(self, build: dict[str, Any], pretrained_base: str | bool = False) -> Any:
        """The uninitialised GluonCV detector of a model file's `build` record (NMS off: see module doc)."""
        import warnings

        from tlkit.weights import mxnet_model_dir

        a = self.arch(build["backbone"], None)
        w, h = build["input_size"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = self.network(
                a, list(build["classes"]), min(w, h) / a.base_size, pretrained_base, str(mxnet_model_dir())
            )
        net.set_nms(nms_thresh=0, nms_topk=-1, post_nms=-1)  # decoded boxes before NMS (module doc)
        return net

    def build_from_meta(self, meta: dict[str, Any]) -> Any:
        build = meta.get("build") or {}
        for key in ("detector", "backbone", "classes", "input_size"):
            if key not in build:
                raise ModelFileError(f"GluonCV detector model file: meta.json build has no {key!r}")
        return self.build_net(build)

    def build_meta(self, cfg: Any, classes: list[str]) -> dict[str, Any]:
        """A GluonCV detector's model-file meta (see model.build_meta for DetectNet_v2's)."""
        from tlkit_detection.model import input_shape_of

        m = cfg.model
        a = self.arch(m.arch, m.n_layers)
        c, h, w = input_shape_of(cfg)
        if min(w, h) < a.min_input:
            raise SpecError(
                f"{self.name} {a.backbone} needs an input of at least {a.min_input} px on each side "
                f"(its last layers are unpadded convolutions); the spec asks for {w}x{h}"
            )
        mode = m.preprocess_mode if m.preprocess_mode != "auto" else self.preprocess_mode(cfg)
        post = self.postprocessing_record(cfg, classes)
        return {
            "task": "detection",
            "detector": self.name,
            "arch": f"{self.name}_{a.backbone}",
            "classes": list(classes),
            "input_shape": [c, h, w],
            "input_layout": "NCHW",
            "preprocessing": {"mode": mode, "resize_interpolation": "bilinear"},
            **self.export_outputs(post),
            "postprocessing": post,
            "deepstream": self.deploy_config(cfg, classes),
            "build": {"detector": self.name, "backbone": a.backbone, "classes": list(classes), "input_size": [w, h]},
        }

    def postprocessing_record(self, cfg: Any, classes: list[str]) -> dict[str, dict[str, float]]:
        return {n: nms_params(cfg.postprocessing_config.for_class(n)) for n in classes}

    def build_for_training(self, cfg: Any, classes: list[str], ctx: list[Any], console: Any = None) -> Any:
        """The GluonCV detector `train` starts from (`tlkit.transfer.build_for_training`; see the module doc for the
        pretrained weights)."""
        from tlkit.transfer import build_for_training

        return build_for_training(_builder_class()(self, cfg, classes), ctx, console)

    def retrainable_graph(self, built: Any, cfg: Any, classes: list[str], ctx: list[Any]) -> Any:
        """`load_graph: true`: the loaded pruned detector graph, with this spec's NMS settings, ready to train."""
        built.meta["postprocessing"] = self.postprocessing_record(cfg, classes)
        built.meta["export_nms"] = export_nms_record(built.meta["postprocessing"])
        built.net = _retrainable_graph_class()(built.net, built.meta, ctx)
        return built

    # -- pretrained weights ----------------------------------------------------------------------------------

    def _is_store_base(self, uri: str, a: GluonCVArch) -> bool:
        """True for `gluoncv://<a.base>` (the ImageNet base network: pulled into $MXNET_HOME/models like
        GluonCV's `pretrained_base`), and for a tlkit backbone any GluonCV classifier (whose weights must fit
        it); another GluonCV classifier is refused, detectors load as detector files."""
        if not uri.startswith("gluoncv://"):
            return False
        from tlkit.hub import gluoncv_store
        from tlkit.weights import resolve_weights

        name = uri[len("gluoncv://") :]
        if a.tlkit and gluoncv_store.kind(name) == "classification":
            from tlkit.weights import gluoncv_weight_map

            gluoncv_weight_map(name, a.base)  # another backbone's weights: refused before any download
            resolve_weights(uri)
            return True
        if name == a.base:
            resolve_weights(uri)
            return True
        if gluoncv_store.kind(name) == "classification":
            raise SpecError(
                f"train_config.pretrained_model_path {uri}: {self.name} on {a.backbone} starts from its base network "
                f"gluoncv://{a.base} or from a detector (gluoncv://{self.gluoncv_name}_..., a .params or .tlk)"
            )
        return False

    def load_detector_weights(
        self, net: Any, uri: str, classes: list[str], file_classes: list[str], console: Any = None
    ) -> Any:
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
        if self.class_head not in arrays:
            raise ModelFileError(f"{path}: not a GluonCV {self.label} detector file (no {self.class_head})")
        n_file = self.file_class_count(net, len(classes), arrays[self.class_head])
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

    # -- distillation ----------------------------------------------------------------------------------------

    def load_teacher(self, path: Any, ctx: list[Any]) -> Any:
        """A distillation teacher: the detector of model file `path` (gluon or pruned graph) as a block giving
        what the training forward gives (raw class / box predictions before decoding and NMS), taken from its
        inference graph, so it runs in inference mode (batch-norm on running statistics)."""
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
        outs = self.training_outputs(sym, list(meta.get("prune_exclude") or []))
        if not outs:
            raise ModelFileError(
                f"{path}: the {meta.get('detector')} graph does not have GluonCV's layout around its heads"
            )
        teacher = gluon.SymbolBlock(mx.sym.Group(outs), inputs, params=block.collect_params())
        if len(ctx) > 1:
            teacher.collect_params().reset_ctx(ctx)
        return teacher

    # -- inference, export, deployment -----------------------------------------------------------------------

    def postprocessing(self, meta: dict[str, Any], spec: Any = None) -> dict[str, Any]:
        return params_from(meta, spec)

    def decode(
        self,
        outputs: Sequence[np.ndarray],
        classes: Sequence[str],
        input_size: tuple[int, int],
        params: Mapping[str, Any],
        orig_sizes: Sequence[tuple[int, int]],
    ) -> list[list[Any]]:
        if len(outputs) == 4:  # an export with NMS in the graph
            num, boxes, scores, class_ids = outputs
            return postprocess_nms_outputs(
                num, boxes, scores, class_ids, list(classes), input_size, dict(params), list(orig_sizes)
            )
        ids, scores, bboxes = outputs
        return postprocess_gluoncv(ids, scores, bboxes, list(classes), input_size, dict(params), list(orig_sizes))

    def reads_outputs(self, names: Sequence[str]) -> bool:
        from tlkit.export.nms import OUTPUTS as NMS_OUTPUTS

        return list(names) in (OUTPUT_NAMES, list(NMS_OUTPUTS))

    def select_outputs(self, path: Any, outs: Sequence[Any], names: Sequence[str]) -> tuple[np.ndarray, ...]:
        from tlkit.export.nms import OUTPUTS as NMS_OUTPUTS

        by_name = dict(zip(names, outs))
        for wanted in (OUTPUT_NAMES, NMS_OUTPUTS):
            if len(outs) == len(wanted) and all(n in by_name for n in wanted):
                return tuple(np.asarray(by_name[n]) for n in wanted)
        if len(outs) != 3:
            raise ModelFileError(
                f"{path}: expected the outputs {OUTPUT_NAMES} (or {NMS_OUTPUTS} with NMS in the "
                f"graph), the model gave {len(outs)}"
            )
        return tuple(np.asarray(o) for o in outs)

    def export_outputs(self, postprocessing: dict[str, Any]) -> dict[str, Any]:
        return {"output_names": list(OUTPUT_NAMES), "export_nms": export_nms_record(postprocessing)}

    def deploy_config(self, cfg: Any, classes: list[str]) -> dict[str, Any]:
        # the .tlk's own outputs (boxes before NMS) have no nvinfer parser; exports replace this (export_nms)
        return {"network_type": 100, "properties": {"output-tensor-meta": 1}}
