"""`tlkit detection train` for GluonCV detectors (`model_config.detector: ssd | yolov3`).

The same engine as DetectNet_v2 (tlkit.training: checkpoints, resume, progress, curves, status.json) over
the same records (frames resized to the network input, `data.dataset_for`). Per training frame the steps of
GluonCV's `SSDDefaultTrainTransform` (see `SSDTargets`) make the input and the anchor targets
(`SSDTargetGenerator`, IoU 0.5); the cost is GluonCV's `SSDMultiBoxLoss`
(softmax cross-entropy with 3:1 hard negative mining + smooth L1, normalised by the positive anchors).
YOLOv3: GluonCV's `YOLO3DefaultTrainTransform` with its prefetched targets, then in the loss its dynamic
target merge and `YOLOV3Loss` (frames without objects are left out of its training batches).
Augmentation uses Python's and numpy's RNGs, which the engine reseeds every epoch, so runs repeat.
Validation scores the validation fold with the metrics of `evaluate` (TLT AP, `evaluation_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tlkit.errors import SpecError

from tlkit_detection.data import epoch_order


class SSDLoss:
    """(outputs (cls_preds, box_preds, anchors), (cls_targets, box_targets)) -> per-sample loss (B,).

    GluonCV's loss is already normalised by the positives of the batch; times B, so that the engine's
    division by the batch size gives GluonCV's own gradient scale."""

    def __init__(self) -> None:
        from gluoncv.loss import SSDMultiBoxLoss

        self.mbox = SSDMultiBoxLoss()

    def __call__(self, outputs: Any, label: Any) -> Any:
        cls_preds, box_preds = outputs[0], outputs[1]
        cls_t, box_t = label
        sum_loss, _, _ = self.mbox(cls_preds, box_preds, cls_t, box_t)
        return sum_loss[0] * cls_preds.shape[0]


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


def ssd_distill_loss(outputs: Any, teacher: Any, temperature: float) -> Any:
    """SSD distillation, per sample: KL of the temperature-softened class scores of every anchor (x T^2, mean
    over anchors) + smooth-L1 between box predictions, weighted by the teacher's foreground probability."""
    import mxnet as mx
    from tlkit.training.distill import soft_label_kl

    cls_s, box_s = outputs[0], outputs[1]
    cls_t, box_t = teacher[0], teacher[1]
    n = cls_s.shape[1]
    kl = soft_label_kl(cls_s.reshape((-3, 0)), cls_t.reshape((-3, 0)), temperature).reshape((-1, n)).mean(axis=1)
    fg = 1.0 - mx.nd.softmax(cls_t, axis=-1).slice_axis(axis=-1, begin=0, end=1)  # (B, N, 1): not background
    box = (mx.nd.smooth_l1(box_s - box_t, scalar=1.0) * fg).sum(axis=2).mean(axis=1)
    return kl + box


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
            w, h, net, mean=[m / 255.0 for m in pre["mean"]], std=[s / 255.0 for s in pre["std"]])

    def __call__(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray):
        import mxnet as mx

        label = np.hstack([boxes.astype(np.float32), classes.reshape(-1, 1).astype(np.float32)])
        img, *targets, gt = self.transform(mx.nd.array(image, dtype="uint8"), label)
        return (img.asnumpy(), gt.asnumpy(), *[t.asnumpy() for t in targets])


def _target_batches(ds: Any, targets: Any, order: Any, batch_size: int, drop_last: bool, shard: Any = None):
    """`targets(image, boxes, classes)` of the frames in `order`, a list per batch (only this node's slice
    of it with `shard`, a tlkit.distributed.World)."""
    n = len(order)
    for start in range(0, n - batch_size + 1 if drop_last else n, batch_size):
        idx = order[start : start + batch_size]
        yield [targets(ds.frames[i].image, ds.frames[i].boxes, ds.frames[i].classes)
               for i in (idx if shard is None else shard.shard(idx))]


def yolo_batches(ds: Any, targets: YOLOv3Targets, batch_size: int, *, epoch: int, seed: int, drop_last: bool,
                 shard: Any = None):
    """Shuffled batches (data.epoch_order: source_weight applies) of the frames with objects:
    (x, (gt_boxes padded with -1, 5 target arrays))."""
    with_objects = [i for i in range(len(ds)) if len(ds.frames[i].boxes)]
    for items in _target_batches(ds, targets, epoch_order(ds, epoch, seed, with_objects), batch_size, drop_last, shard):
        n_gt = max(len(it[1]) for it in items)
        gt = np.full((len(items), n_gt, 4), -1, np.float32)
        for k, it in enumerate(items):
            gt[k, : len(it[1])] = it[1]
        yield np.stack([it[0] for it in items]), (gt, *[np.stack([it[j] for it in items]) for j in range(2, 7)])


class SSDTargets:
    """Frame -> (normalised CHW input, cls_targets (N,), box_targets (N, 4)): the steps of GluonCV's
    SSDDefaultTrainTransform with GluonCV's own functions (colour distortion, random expand, SSD's
    constrained random crop, resize with a random interpolation, flip) and its SSDTargetGenerator.

    augmentation_config.spatial_augmentation sets the two knobs a dataset most often needs changed: the
    random expand (zoom out) goes up to 1 / zoom_min (GluonCV: 4, i.e. zoom_min 0.25; off at the default
    1.0, as objects of a fixed scale such as cells only shrink out of reach of the anchors) and the flip
    probability is hflip_probability (GluonCV: 0.5)."""

    def __init__(self, net: Any, meta: dict[str, Any], ctx: Any, aug: Any):
        import mxnet as mx
        from gluoncv.model_zoo.ssd.target import SSDTargetGenerator
        from tlkit.export.preprocess import resolve_preprocessing

        pre = resolve_preprocessing(meta)
        if pre["channel_order"] != "RGB":
            raise SpecError(f"{meta['arch']}: training needs RGB input (model_config.preprocess_mode torch or tf)")
        _, self.h, self.w = meta["input_shape"]
        with mx.autograd.train_mode():
            _, _, anchors = net(mx.nd.zeros((1, 3, self.h, self.w), ctx=ctx))
        self.anchors = anchors.as_in_context(mx.cpu())
        self.n_anchors = int(anchors.shape[1])
        self.pre = pre
        sp = aug.spatial_augmentation
        self.max_expand = 1.0 / sp.zoom_min if sp.zoom_min < 1 else 1.0
        self.flip = sp.hflip_probability
        self.generator = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2), negative_mining_ratio=-1)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, classes: np.ndarray):
        import mxnet as mx
        from gluoncv.data.transforms import bbox as tbbox
        from gluoncv.data.transforms import experimental
        from gluoncv.data.transforms import image as timage
        from tlkit.export.preprocess import normalize_with

        if not len(boxes):  # nothing to crop around or match: the plain frame, all anchors background
            x = normalize_with(np.asarray(image, np.float32), self.pre).transpose(2, 0, 1)
            return x, np.zeros(self.n_anchors, np.float32), np.zeros((self.n_anchors, 4), np.float32)
        label = np.hstack([boxes.astype(np.float32), classes.reshape(-1, 1).astype(np.float32)])
        img = experimental.image.random_color_distort(mx.nd.array(image, dtype="uint8"))
        if self.max_expand > 1 and np.random.uniform(0, 1) > 0.5:
            img, expand = timage.random_expand(img, max_ratio=self.max_expand, fill=list(self.pre["mean"]))
            label = tbbox.translate(label, x_offset=expand[0], y_offset=expand[1])
        h, w, _ = img.shape
        label, crop = experimental.bbox.random_crop_with_constraints(label, (w, h))
        img = mx.image.fixed_crop(img, *crop)
        h, w, _ = img.shape
        img = timage.imresize(img, self.w, self.h, interp=np.random.randint(0, 5))
        label = tbbox.resize(label, (w, h), (self.w, self.h))
        if np.random.uniform(0, 1) < self.flip:
            img = mx.nd.flip(img, axis=1)
            label = tbbox.flip(label, (self.w, self.h), flip_x=True)
        x = normalize_with(img.asnumpy().astype(np.float32), self.pre).transpose(2, 0, 1)
        cls_t, box_t, _ = self.generator(self.anchors, None, mx.nd.array(label[None, :, :4]),
                                         mx.nd.array(label[None, :, 4:5]))
        return x, cls_t[0].asnumpy(), box_t[0].asnumpy()


def ssd_batches(ds: Any, targets: SSDTargets, batch_size: int, *, epoch: int, seed: int, drop_last: bool,
                shard: Any = None):
    """Shuffled training batches (data.epoch_order: source_weight applies):
    (x (B,3,H,W), (cls_targets (B,N), box_targets (B,N,4)))."""
    for items in _target_batches(ds, targets, epoch_order(ds, epoch, seed), batch_size, drop_last, shard):
        yield np.stack([it[0] for it in items]), (np.stack([it[1] for it in items]), np.stack([it[2] for it in items]))


def build_job(cfg: Any, results_dir: Path, console: Any, ctx_list: list[Any]) -> Any:
    """The TrainJob of a GluonCV detector (`tlkit_detection.train.build_job` dispatches here)."""
    from tlkit.config import resolved_spec_text
    from tlkit.training import TrainJob

    from tlkit.distributed import world

    from tlkit_detection.data import TargetMaker, steps_per_epoch
    from tlkit_detection.gluoncv_models import build_for_training, net_detector, params_from, teacher_training_graph
    from tlkit_detection.model import count_params
    from tlkit_detection.train import card_datasets, evaluate_dataset, training_datasets

    tc, ev = cfg.train_config, cfg.evaluation_config
    train_ds, val_ds = training_datasets(cfg, Path(results_dir), console)
    classes = train_ds.classes
    built = build_for_training(cfg, classes, ctx_list, console)
    meta = built.meta
    console.print(f"model: GluonCV {meta['arch']}, {count_params(built.net):,} parameters, input {tuple(meta['input_shape'])}")
    node = world()  # multi-node training: batches are global, each node decodes and trains its slice
    bs = tc.batch_size_per_gpu * len(ctx_list) * node.size
    yolo = meta["detector"] == "yolov3"
    n_train = sum(1 for f in train_ds.frames if len(f.boxes)) if yolo else len(train_ds)
    drop_last = n_train >= 2 * bs or node.distributed
    if yolo:
        # a retrained pruned graph hands GluonCV's target makers an unpruned reference network
        targets = YOLOv3Targets(getattr(built.net, "reference", built.net), meta)
        loss, make = YOLOv3Loss(built.net), yolo_batches
    else:
        targets, loss, make = SSDTargets(built.net, meta, ctx_list[0], cfg.augmentation_config), SSDLoss(), ssd_batches

    def train_data(epoch: int):
        return make(train_ds, targets, bs, epoch=epoch, seed=tc.random_seed, drop_last=drop_last, shard=node)

    validate = None
    if val_ds is not None:
        maker = TargetMaker(cfg, classes, meta["preprocessing"], val_ds.input_size)
        params = params_from(meta, cfg)

        def validate(net: Any, ctx: list[Any]) -> dict[str, float]:
            # a hybridized net keeps the graph of the mode it was traced in (SSD's training branch returns
            # raw predictions): trace the inference graph here and the training one again afterwards
            net._clear_cached_op()
            try:
                r = evaluate_dataset(net_detector(net, meta, ctx[0], params), val_ds, maker, cfg, bs)["result"]
            finally:
                net._clear_cached_op()
            return {"mean average precision": float(r.mean_ap), **{f"AP {c}": float(r.classes[c].ap) for c in classes}}

    _, first_validation = ev.training_validation(tc)  # TLT's first_validation_epoch, when the spec sets it
    return TrainJob(
        net=built.net,
        train_data=train_data,
        steps_per_epoch=steps_per_epoch(n_train, bs, drop_last),
        loss=loss,
        meta=meta,
        validate=validate,
        kpi="mean average precision" if validate is not None else None,
        frozen=built.frozen,
        freeze_bn=cfg.model.freeze_bn,
        distill_loss=yolo_distill_loss if yolo else ssd_distill_loss,
        load_teacher=lambda path, ctx: teacher_training_graph(path, ctx),
        datasets=card_datasets(cfg, train_ds, val_ds),
        first_validation_epoch=first_validation,
        run_files={"experiment_spec.yaml": resolved_spec_text(cfg)},  # written once the engine accepts the dir
        sharded=True,
    )
