"""GluonCV's YOLOv3 (`model_config.detector: yolov3`): GluonCV's `YOLOV3` block (its training forward made to
return the raw predictions, `TrainableYOLOV3`) on GluonCV's darknet53 / mobilenet1.0 or on the stride 8, 16 and 32
stages of a backbone of tlkit's registry (`BackboneStage`), `YOLO3DefaultTrainTransform` with its prefetched
targets, then in the loss its dynamic target merge and `YOLOV3Loss` (frames without objects are left out of its
training batches). Shared GluonCV parts (meta, weights, pruned graphs, NMS): `detectors.gluoncv`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tlkit.errors import SpecError
from tlkit_detection.data import epoch_order
from tlkit_detection.detectors.base import Training
from tlkit_detection.detectors.gluoncv import (
    PREFIX,
    GluonCVArch,
    GluonCVDetector,
    backbone_taps,
    initialize,
    scaled,
    target_batches,
)

_ANCHORS = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]


class YOLOv3(GluonCVDetector):
    name = "yolov3"
    gluoncv_name = "yolo3"
    label = "YOLOv3"
    class_head = "yolo_outputs.0.prediction.weight"
    archs = (GluonCVArch("darknet53", "darknet53", 416), GluonCVArch("mobilenet_v1", "mobilenet1.0", 416))
    tlkit_arch = GluonCVArch("", "", 416)  # any backbone of tlkit's registry, GluonCV's anchors at 416 px

    def network(self, a: GluonCVArch, classes: list[str], scale: float, pretrained_base: str | bool, root: str) -> Any:
        return _yolov3(a, classes, scale, pretrained_base, root)

    def tlkit_backbone(self, net: Any) -> tuple[Any, Any]:
        stage_of = {name: k for k, stage in enumerate(net.stages) for name in stage.layer_names}
        return net.stages[0].backbone, lambda prefix: f"stages.{stage_of[prefix.removesuffix('.')]}.{prefix}"

    def head_names(self, net: Any) -> list[str]:
        return [o.prediction.name for o in net.yolo_outputs]

    def file_class_count(self, net: Any, n_classes: int, head: Any) -> int:
        # anchors x (4 box + 1 objectness + classes) channels
        return head.shape[0] // net.yolo_outputs[0]._num_anchors - 5

    def training_outputs(self, sym: Any, heads: list[str]) -> list[Any]:
        return _yolo_training_outputs(sym, heads)

    def prepare_retraining(self, graph: Any, meta: dict[str, Any], ctx: list[Any]) -> None:
        # GluonCV's YOLOv3 target makers: anchors, offsets and map sizes do not change with pruning
        ref = self.build_from_meta(meta)
        initialize(ref, ctx)
        graph.__dict__.update(reference=ref, _target_generator=ref._target_generator, _loss=ref._loss)

    def training(self, cfg: Any, built: Any, train_ds: Any, ctx: list[Any], console: Any) -> Training:
        # a retrained pruned graph hands GluonCV's target makers an unpruned reference network
        targets = YOLOv3Targets(getattr(built.net, "reference", built.net), built.meta)

        def make_batches(batch_size: int, **kw: Any):
            return yolo_batches(train_ds, targets, batch_size, **kw)

        return Training(
            loss=YOLOv3Loss(built.net),
            batches=make_batches,
            n_frames=sum(1 for f in train_ds.frames if len(f.boxes)),
            distill_loss=yolo_distill_loss,
            load_teacher=self.load_teacher,
        )


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
            routes, dets = [], []
            parts: list[list[Any]] = [[], [], [], []]
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
    anchors = [scaled(x, scale) for x in _ANCHORS]
    if a.tlkit:
        stages = _tlkit_stages(a.base)
    elif a.backbone == "darknet53":
        from gluoncv.model_zoo.yolo.darknet import darknet53

        base = darknet53(pretrained=pretrained_base, root=root)
        stages = [base.features[:15], base.features[15:24], base.features[24:]]
    else:
        from gluoncv.model_zoo.mobilenet import get_mobilenet

        base = get_mobilenet(multiplier=1, pretrained=pretrained_base, root=root)
        stages = [base.features[:33], base.features[33:69], base.features[69:-2]]
    return _yolo_class()(stages, [512, 256, 128], anchors, [8, 16, 32], classes=classes, prefix=PREFIX)


def _tlkit_stages(arch: str) -> list[Any]:
    """The three stages YOLOv3 routes from: a tlkit backbone's layers up to its last layer at stride 8, 16, 32."""
    from tlkit.backbones import build_backbone

    backbone = build_backbone(arch, out_stride=32)
    t8, t16, t32 = backbone_taps(backbone, YOLOv3.label)
    names = backbone._layer_names
    return [_stage_class()(backbone, names[lo:hi]) for lo, hi in ((0, t8 + 1), (t8 + 1, t16 + 1), (t16 + 1, t32 + 1))]


@functools.cache  # one class (MXNet imported on first use only)
def _stage_class():
    from mxnet.gluon import HybridBlock

    class BackboneStage(HybridBlock):
        """Consecutive layers of a tlkit Backbone, under their structural names (stages.K.<layer name>.*); the
        Backbone itself is kept outside the block tree (`backbone`), so its weight loaders and freeze_prefixes
        work on the same parameters."""

        def __init__(self, backbone: Any, layer_names: list[str]):
            super().__init__()
            self.__dict__["backbone"] = backbone  # not a child: its parameters belong to the stages
            self.layer_names = list(layer_names)
            for name in self.layer_names:
                self.register_child(backbone._children[name], name)

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            for name in self.layer_names:
                x = self._children[name](x)
            return x

    return BackboneStage


def _consumers(nodes: list[dict]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, n in enumerate(nodes):
        for j, *_ in n["inputs"]:
            out.setdefault(j, []).append(i)
    return out


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

    dets = []
    parts: list[list[Any]] = [[], [], [], []]  # objness, centers, scales, class_pred
    for head in heads:
        # conv -> Reshape -> transpose -> Reshape (0, -1, anchors, 5 + classes): the prediction GluonCV slices
        pred = next((i for i, n in enumerate(nodes) if n["name"] == head + "_fwd"), None)
        for op in ("Reshape", "transpose", "Reshape"):
            if pred is None:
                break
            pred = next((u for u in users.get(pred, []) if nodes[u]["op"] == op), None)
        if pred is None:
            return []
        slices = {nodes[i]["attrs"]["begin"]: i for i in users.get(pred, []) if nodes[i]["op"] == "slice_axis"}
        tiles = [
            i for i, n in enumerate(nodes) if n["op"] == "tile" and n["name"].startswith(head.rsplit("conv", 1)[0])
        ]
        if set(slices) != {"0", "2", "4", "5"} or len(tiles) != 1:
            return []
        dets.append(mx.sym.reshape(out(nodes[tiles[0]]["inputs"][0][0]), shape=(0, -1, 4)))
        for lst, begin in zip(parts, ("4", "0", "2", "5")):
            lst.append(mx.sym.reshape(out(slices[begin]), shape=(0, -3, -1)))
    return [mx.sym.concat(*dets, dim=1), *[mx.sym.concat(*p, dim=1) for p in parts]]


class YOLOv3Loss:
    """(raw predictions of TrainableYOLOV3, prefetched targets) -> per-sample loss (B,): GluonCV's dynamic
    target merge (ignores predictions overlapping a ground truth) and YOLOV3Loss (objectness, centre,
    scale, class), summed. Per sample, as GluonCV's trainer.step(batch_size) expects."""

    def __init__(self, net: Any):
        self.net = net

    def __call__(self, outputs: Any, label: Any) -> Any:
        box_preds, objness, centers, scales, class_pred = outputs
        targets = self.net._target_generator(box_preds, *label)
        obj, ctr, scl, cls = self.net._loss(objness, centers, scales, class_pred, *targets)
        return obj + ctr + scl + cls


def yolo_distill_loss(outputs: Any, teacher: Any, temperature: float) -> Any:
    """YOLOv3 distillation, per sample (mean over the predictions): objectness and class logits against the
    teacher's temperature-softened sigmoid (binary cross-entropy, x T^2), centres and scales by L2; class,
    centre and scale terms weighted by the teacher's objectness."""
    import mxnet as mx

    t = float(temperature)

    def bce(logit: Any, target_logit: Any) -> Any:
        p = mx.nd.sigmoid(target_logit / t)
        z = logit / t
        return (mx.nd.relu(z) - z * p + mx.nd.log1p(mx.nd.exp(-mx.nd.abs(z)))) * (t * t)

    _, obj_s, ctr_s, scl_s, cls_s = outputs
    _, obj_t, ctr_t, scl_t, cls_t = teacher
    w = mx.nd.sigmoid(obj_t)  # (B, N, 1)
    terms = [bce(obj_s, obj_t), bce(cls_s, cls_t) * w, mx.nd.square(ctr_s - ctr_t) * w, mx.nd.square(scl_s - scl_t) * w]
    return mx.nd.add_n(*[x.reshape((0, -1)).sum(axis=1) / x.shape[1] for x in terms])


class YOLOv3Targets:
    """Frame -> (normalised CHW input, (gt_boxes, objectness, centers, scales, weights, class targets)) with
    GluonCV's YOLO3DefaultTrainTransform (its augmentation and prefetched targets)."""

    def __init__(self, net: Any, meta: dict[str, Any]):
        from gluoncv.data.transforms.presets.yolo import YOLO3DefaultTrainTransform

        from tlkit.export.preprocess import resolve_preprocessing

        pre = resolve_preprocessing(meta)
        if pre["channel_order"] != "RGB":
            raise SpecError(f"{meta['arch']}: training needs RGB input (model_config.preprocess_mode torch or tf)")
        _, h, w = meta["input_shape"]
        self.transform = YOLO3DefaultTrainTransform(
            w, h, net, mean=[m / 255.0 for m in pre["mean"]], std=[s / 255.0 for s in pre["std"]]
        )

    def __call__(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray):
        import mxnet as mx

        label = np.hstack([boxes.astype(np.float32), classes.reshape(-1, 1).astype(np.float32)])
        img, *targets, gt = self.transform(mx.nd.array(image, dtype="uint8"), label)
        return (img.asnumpy(), gt.asnumpy(), *[t.asnumpy() for t in targets])


def yolo_batches(
    ds: Any, targets: YOLOv3Targets, batch_size: int, *, epoch: int, seed: int, drop_last: bool, shard: Any = None
):
    """Shuffled batches (data.epoch_order: source_weight applies) of the frames with objects:
    (x, (gt_boxes padded with -1, 5 target arrays))."""
    with_objects = [i for i in range(len(ds)) if len(ds.frames[i].boxes)]
    for items in target_batches(ds, targets, epoch_order(ds, epoch, seed, with_objects), batch_size, drop_last, shard):
        n_gt = max(len(it[1]) for it in items)
        gt = np.full((len(items), n_gt, 4), -1, np.float32)
        for k, it in enumerate(items):
            gt[k, : len(it[1])] = it[1]
        yield np.stack([it[0] for it in items]), (gt, *[np.stack([it[j] for it in items]) for j in range(2, 7)])
