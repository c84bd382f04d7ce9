"""The classification network: a tlkit backbone + global average pooling + dropout + a dense classifier.

`build_from_meta(meta)` rebuilds it from a model file's meta (tlkit.model_io.load_net calls it);
`build_for_training(cfg, classes)` builds, initialises and loads pretrained weights for `train`.
"""

from __future__ import annotations

from typing import Any

from tlkit.errors import ModelFileError, SpecError
from tlkit.transfer import (  # noqa: F401 - count_params/set_bn_momentum are part of this module's API
    BuiltModel,
    ModelBuilder,
    count_params,
    describe_load,
    load_task_pretrained,
    set_bn_momentum,
)
from tlkit.transfer import build_for_training as build_network

TASK = "classification"
HEAD_PREFIX = "cls_"
HEAD_NODE = HEAD_PREFIX + "output"  # the classifier Dense in the symbol graph ("cls_output_fwd")


def _classification_net_class():
    from mxnet.gluon import nn

    class ClassificationNet(nn.HybridBlock):
        """backbone -> global average pool -> flatten -> dropout -> dense (logits)."""

        def __init__(
            self, backbone: Any, n_classes: int, dropout: float = 0.0, prefix: str = HEAD_PREFIX, **kwargs: Any
        ):
            # A fixed prefix: the head's graph node name is the same in every process, so the model file
            # can tell the pruner which layer must keep its size (meta["prune_exclude"]).
            super().__init__(prefix=prefix, **kwargs)
            with self.name_scope():
                self.backbone = backbone
                self.pool = nn.GlobalAvgPool2D()
                self.flatten = nn.Flatten()
                self.dropout = nn.Dropout(dropout) if dropout > 0 else None
                self.output = nn.Dense(n_classes, prefix="output_")

        def hybrid_forward(self, F: Any, x: Any) -> Any:
            f = self.backbone(x)
            if isinstance(f, (list, tuple)):  # backbones with several taps: the deepest one
                f = f[-1]
            f = self.flatten(self.pool(f))
            if self.dropout is not None:
                f = self.dropout(f)
            return self.output(f)

    return ClassificationNet


def build_net(build: dict[str, Any]) -> Any:
    """An uninitialised network from the `build` record of a model file's meta."""
    from tlkit.backbones import build_backbone, imagenet_classifier

    arch = build["arch"]
    # (H, W): EfficientNet pads odd sides as TensorFlow only when it knows them (absent in older files)
    input_size = build.get("input_size")
    if build.get("retain_head"):
        net, _ = imagenet_classifier(arch, input_size=input_size)
        return net
    kwargs: dict[str, Any] = {
        "use_batch_norm": build.get("use_batch_norm", True),
        "use_pooling": build.get("use_pooling", True),
        "all_projections": build.get("all_projections", False),
        "input_size": input_size,
    }
    if build.get("n_layers") is not None:
        kwargs["n_layers"] = build["n_layers"]
    backbone = build_backbone(arch, out_stride=32, **kwargs)
    return _classification_net_class()(backbone, int(build["n_classes"]), float(build.get("dropout") or 0.0))


def build_from_meta(meta: dict[str, Any]) -> Any:
    """TaskSpec.build_model: rebuild the (uninitialised) network a gluon model file was saved from."""
    build = meta.get("build")
    if not isinstance(build, dict) or "arch" not in build or "n_classes" not in build:
        raise ModelFileError("classification model file: meta.json lacks build.arch / build.n_classes")
    return build_net(build)


def build_meta(cfg: Any, classes: list[str], preprocessing: dict[str, Any]) -> dict[str, Any]:
    m = cfg.model
    return {
        "task": TASK,
        "arch": m.arch,
        "classes": list(classes),
        "input_shape": list(m.input_shape),
        "input_layout": "NCHW",
        # center_crop rides along in the preprocessing record, so exported models carry it too
        "preprocessing": {**preprocessing, "center_crop": bool(cfg.augmentation_config.enable_center_crop)},
        "output": "logits",
        "prune_exclude": [HEAD_NODE],  # the class count is fixed
        "build": {
            "arch": m.arch,
            "n_layers": m.n_layers,
            "n_classes": len(classes),
            "use_batch_norm": m.use_batch_norm,
            "use_pooling": m.use_pooling,
            "all_projections": m.all_projections,
            "dropout": m.dropout,
            "retain_head": m.retain_head,
            "input_size": list(m.input_shape[1:]),
        },
    }


def _preprocessing(cfg: Any, backbone_default: Any) -> dict[str, Any]:
    from tlkit_classification.data import preprocessing_for

    aug, m = cfg.augmentation_config, cfg.model
    mean = aug.image_mean.model_dump() if aug.image_mean is not None else None
    return preprocessing_for(
        aug.preprocess_mode,
        image_mean=mean,
        backbone_default=backbone_default,
        channels=m.input_shape[0],
        interpolation=m.resize_interpolation_method,
    )


class ClassificationBuilder(ModelBuilder):
    """The classifier's part of `tlkit.transfer.build_for_training`."""

    task = TASK

    def build(self) -> tuple[Any, dict[str, Any]]:
        cfg, classes, m = self.cfg, self.classes or [], self.cfg.model
        if m.retain_head and len(classes) != 1000:
            raise SpecError(
                f"model_config.retain_head: true keeps the 1000-class ImageNet head, but the dataset has "
                f"{len(classes)} classes"
            )
        net = build_net(build_meta(cfg, classes, {})["build"])
        pre = _preprocessing(cfg, getattr(getattr(net, "backbone", None), "default_preprocess", None))
        return net, build_meta(cfg, classes, pre)

    def load_pretrained(self, net: Any, meta: dict[str, Any], uri: str, console: Any) -> Any:
        from tlkit.backbones import arch_name

        m = self.cfg.model
        report = load_task_pretrained(net, uri, arch=arch_name(m.arch, m.n_layers, TASK), console=None)
        if m.retain_head:  # the head already holds ImageNet's weights (imagenet_classifier), it is not new
            report.new = [n for n in report.new if not n.startswith("output.")]
        if console is not None:
            console.print(describe_load(report))
            if m.retain_head:
                console.print("  classifier head: ImageNet's 1000 classes (model_config.retain_head)")
        return report


def build_for_training(cfg: Any, classes: list[str], ctx: list[Any], console: Any = None) -> BuiltModel:
    """The network `train` starts from (`tlkit.transfer.build_for_training`): with `train_config.load_graph: true`
    the pruned graph of pretrained_model_path (its classes must match the dataset's); otherwise backbone + head
    from model_config with pretrained_model_path (a path or a named set such as "imagenet") loaded by a filtered
    load (tensors whose shape differs, e.g. another class count's head, stay new) and reported."""
    return build_network(ClassificationBuilder(cfg, classes), ctx, console)
