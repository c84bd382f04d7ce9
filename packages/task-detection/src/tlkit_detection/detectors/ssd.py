"""GluonCV's SSD (`model_config.detector: ssd`): the network (GluonCV's `SSD` block on its base networks, or on a
backbone of tlkit's registry: its features at strides 8, 16, 32 + three extra stride-2 layers), GluonCV's
`SSDDefaultTrainTransform` steps with its `SSDTargetGenerator` (see `SSDTargets`) and its `SSDMultiBoxLoss`
(softmax cross-entropy with 3:1 hard negative mining + smooth L1, normalised by the positive anchors).
Augmentation uses Python's and numpy's RNGs, which the engine reseeds every epoch, so runs repeat. Shared GluonCV
parts (meta, weights, pruned graphs, NMS): `detectors.gluoncv`.
"""

from __future__ import annotations

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
    scaled,
    target_batches,
)

_RATIOS = [[1, 2, 0.5]] + [[1, 2, 0.5, 3, 1.0 / 3]] * 3 + [[1, 2, 0.5]] * 2
_SIZES_512 = (51.2, 102.4, 189.4, 276.4, 363.52, 450.6, 492)
_STEPS_512 = (16, 32, 64, 128, 256, 512)


class SSD(GluonCVDetector):
    name = "ssd"
    gluoncv_name = "ssd"
    label = "SSD"
    class_head = "class_predictors.0.predictor.weight"
    archs = (
        GluonCVArch(
            "mobilenet_v1",
            "mobilenet1.0",
            512,
            _SIZES_512,
            _STEPS_512,
            ("relu22_fwd", "relu26_fwd"),
            (512, 512, 256, 256),
        ),
        GluonCVArch(
            "resnet18",
            "resnet18_v1",
            512,
            _SIZES_512,
            _STEPS_512,
            ("stage3_activation1", "stage4_activation1"),
            (512, 512, 256, 256),
        ),
        GluonCVArch(
            "resnet50",
            "resnet50_v1",
            512,
            _SIZES_512,
            _STEPS_512,
            ("stage3_activation5", "stage4_activation2"),
            (512, 512, 256, 256),
        ),
        GluonCVArch(
            "vgg16",
            "vgg16_atrous",
            300,
            (21, 45, 99, 153, 207, 261, 315),
            (8, 16, 32, 64, 100, 300),
            "vgg16_atrous_300",
            None,
            min_input=264,
        ),
    )
    # any backbone of tlkit's registry (e.g. efficientnet_lite0, whose ImageNet weights ship offline): SSD heads
    # at strides 8..256; anchors from 5 % to 90 % of the input (small objects need the stride-8 map)
    tlkit_arch = GluonCVArch(
        "", "", 320, (16, 48, 96, 144, 192, 240, 288), (8, 16, 32, 64, 128, 256), None, (512, 256, 256)
    )

    def network(self, a: GluonCVArch, classes: list[str], scale: float, pretrained_base: str | bool, root: str) -> Any:
        from gluoncv.model_zoo.ssd.ssd import get_ssd

        sizes = scaled(a.sizes, scale)
        if a.tlkit:
            tlkit_features = _tlkit_backbone_features(a.base, a.filters or (), self.label)
            return get_ssd(
                None,
                a.base_size,
                tlkit_features,
                None,
                sizes,
                _RATIOS,
                list(a.steps),
                classes,
                "",
                pretrained=False,
                pretrained_base=False,
                root=root,
                prefix=PREFIX,
            )
        if a.features == "vgg16_atrous_300":
            from gluoncv.model_zoo.ssd.vgg_atrous import vgg16_atrous_300 as features
        else:
            features = list(a.features)
        return get_ssd(
            a.base,
            a.base_size,
            features,
            list(a.filters) if a.filters else None,
            sizes,
            _RATIOS,
            list(a.steps),
            classes,
            "",
            pretrained=False,
            pretrained_base=pretrained_base,
            root=root,
            prefix=PREFIX,
        )

    def tlkit_backbone(self, net: Any) -> tuple[Any, Any]:
        return net.features.backbone, lambda prefix: "features.backbone." + prefix

    def head_names(self, net: Any) -> list[str]:
        return [p.predictor.name for p in list(net.class_predictors) + list(net.box_predictors)]

    def file_class_count(self, net: Any, n_classes: int, head: Any) -> int:
        # anchors x (classes + background) channels
        n_anchor = net.class_predictors[0].predictor.weight.shape[0] // (n_classes + 1)
        return head.shape[0] // n_anchor - 1

    def training_outputs(self, sym: Any, heads: list[str]) -> list[Any]:
        return _ssd_training_outputs(sym, heads)

    def training(self, cfg: Any, built: Any, train_ds: Any, ctx: list[Any], console: Any) -> Training:
        targets = SSDTargets(built.net, built.meta, ctx[0], cfg.augmentation_config)

        def make_batches(batch_size: int, **kw: Any):
            return ssd_batches(train_ds, targets, batch_size, **kw)

        return Training(
            loss=SSDLoss(),
            batches=make_batches,
            n_frames=len(train_ds),
            distill_loss=ssd_distill_loss,
            load_teacher=self.load_teacher,
        )


def _tlkit_backbone_features(arch: str, filters: tuple[int, ...], label: str):
    """A features factory for gluoncv's SSD: a tlkit backbone's outputs at strides 8, 16, 32 (`backbone_taps`)
    + extra stride-2 layers (1x1 reduce, 3x3 stride 2, BN, ReLU), as GluonCV's FeatureExpander appends them."""
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
                    seq.add(
                        nn.Conv2D(f // 2, 1, use_bias=False),
                        nn.BatchNorm(),
                        nn.Activation("relu"),
                        nn.Conv2D(f, 3, 2, 1, use_bias=False),
                        nn.BatchNorm(),
                        nn.Activation("relu"),
                    )
                    self.extras.add(seq)
            self._taps = set(backbone_taps(self.backbone, label))

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
    kind = {h: "cls" for h in heads[: len(heads) // 2]} | {h: "box" for h in heads[len(heads) // 2 :]}
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
        cls_t, box_t, _ = self.generator(
            self.anchors, None, mx.nd.array(label[None, :, :4]), mx.nd.array(label[None, :, 4:5])
        )
        return x, cls_t[0].asnumpy(), box_t[0].asnumpy()


def ssd_batches(
    ds: Any, targets: SSDTargets, batch_size: int, *, epoch: int, seed: int, drop_last: bool, shard: Any = None
):
    """Shuffled training batches (data.epoch_order: source_weight applies):
    (x (B,3,H,W), (cls_targets (B,N), box_targets (B,N,4)))."""
    for items in target_batches(ds, targets, epoch_order(ds, epoch, seed), batch_size, drop_last, shard):
        yield np.stack([it[0] for it in items]), (np.stack([it[1] for it in items]), np.stack([it[2] for it in items]))
