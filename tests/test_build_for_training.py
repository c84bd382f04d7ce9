"""Every task's `build_for_training` is `tlkit.transfer.build_for_training` with the task's hooks: the same
freeze_blocks check (against the backbone's blocks, naming the task's spec key), the same freezing and the same
batch-norm momentum, for classification, DetectNet_v2, GluonCV SSD and pose."""

from __future__ import annotations

import pytest

pytest.importorskip("tlkit_classification")
pytest.importorskip("tlkit_detection")
pytest.importorskip("tlkit_pose")


def classification(model):
    from tlkit_classification.config import ClassificationConfig
    from tlkit_classification.model import build_for_training

    cfg = ClassificationConfig.model_validate(
        {
            "model_config": {"arch": "resnet", "n_layers": 10, "input_image_size": "3,32,32", **model},
            "train_config": {"pretrained_model_path": None},
        }
    )
    return cfg, lambda ctx: build_for_training(cfg, ["a", "b"], ctx)


def detectnet(model):
    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.model import build_for_training

    cfg = DetectionConfig.model_validate(
        {
            "model_config": {"arch": "resnet", "n_layers": 10, **model},
            "train_config": {"pretrained_model_path": None},
            "augmentation_config": {"preprocessing": {"output_image_width": 64, "output_image_height": 48}},
        }
    )
    return cfg, lambda ctx: build_for_training(cfg, ["car"], ctx)


def ssd(model):
    from tlkit_detection import detectors
    from tlkit_detection.config import DetectionConfig

    cfg = DetectionConfig.model_validate(
        {
            "model_config": {"detector": "ssd", "arch": "mobilenet_v1", **model},
            "train_config": {"pretrained_model_path": None},
            "augmentation_config": {"preprocessing": {"output_image_width": 128, "output_image_height": 96}},
        }
    )
    return cfg, lambda ctx: detectors.get("ssd").build_for_training(cfg, ["car"], ctx)


def pose(model):
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.model import build_for_training

    cfg = PoseConfig.model_validate(
        {
            "dataloader": {"image_dims": [48, 64, 3]},
            "pose_config": {"target_shape": [6, 8]},
            "model": {"arch": "resnet18", "stages": 2, "stage_channels": 8, **model},
            "train_config": {"pretrained_model_path": None},
        }
    )
    return cfg, lambda ctx: build_for_training(cfg, ctx)


# (task, spec key of the model section)
WITH_BLOCKS = [(classification, "model_config"), (detectnet, "model_config"), (pose, "model")]


@pytest.mark.parametrize("task,key", WITH_BLOCKS, ids=lambda v: getattr(v, "__name__", v))
def test_a_block_the_backbone_lacks_is_refused_naming_the_key(task, key):
    import mxnet as mx

    from tlkit.errors import SpecError

    _, build = task({"freeze_blocks": [0, 42]})
    with pytest.raises(
        SpecError,
        match=rf"^{key}\.freeze_blocks: block 42 is out of range for \S+, whose backbone "
        rf"has blocks 0\.\.\d+ \(0 \w+, 1 \w+",
    ):
        build([mx.cpu()])


def test_a_detector_without_backbone_blocks_refuses_freeze_blocks():
    import mxnet as mx

    from tlkit.errors import SpecError

    _, build = ssd({"freeze_blocks": [1]})
    with pytest.raises(SpecError, match=r"^model_config\.freeze_blocks: \S*ssd\S* has no freeze-able backbone blocks"):
        build([mx.cpu()])


@pytest.mark.parametrize("task,key", WITH_BLOCKS, ids=lambda v: getattr(v, "__name__", v))
def test_freeze_blocks_freeze_the_backbone_blocks_named(task, key):
    import mxnet as mx

    _, build = task({"freeze_blocks": [0, 1]})
    built = build([mx.cpu()])
    backbone = built.net.backbone
    want = tuple("backbone." + p for p in backbone.freeze_prefixes([0, 1]))
    assert built.frozen == want and want
    names = built.net._collect_params_with_prefix()
    assert any(n.startswith(want) for n in names) and any(not n.startswith(want) for n in names)


@pytest.mark.parametrize("task", [classification, detectnet, ssd], ids=lambda v: v.__name__)
def test_batch_norm_momentum_is_set_on_every_batch_norm(task):
    import json

    import mxnet as mx
    from mxnet.gluon import SymbolBlock, nn

    _, build = task({"batch_norm_momentum": 0.7})
    net = build([mx.cpu()]).net
    momenta: list = []

    def collect(block):
        if isinstance(block, nn.BatchNorm):
            momenta.append(block._kwargs["momentum"])
        elif isinstance(block, SymbolBlock):  # GluonCV's SSD feature extractor: BatchNorms inside its graph
            graph = json.loads(block._cached_graph[1].tojson())
            momenta.extend(
                float(n.get("attrs", {}).get("momentum", 0.9)) for n in graph["nodes"] if n["op"] == "BatchNorm"
            )

    net.apply(collect)
    assert momenta and set(momenta) == {0.7}
