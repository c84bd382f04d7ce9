"""BodyPoseNet on a backbone a third-party plugin registers (not one of pose's TLT backbones): the spec accepts the
name, a tiny model trains on it, and the model file rebuilds through the registry."""

from __future__ import annotations

import numpy as np
import pytest
from rich.console import Console

from tlkit.testing.plugins import architectures_plugin, registered_plugin
from tlkit.types import ArchitectureSpec

S = 64


def tinypose(*, out_stride: int = 32, use_batch_norm: bool = True):
    """A 5-block toy backbone in the layer-list form of `tlkit.backbones.Backbone` (stride 2 per block)."""
    from tlkit.backbones import Backbone
    from tlkit.backbones.base import conv_bn_act

    layers = [("stem", conv_bn_act(8, 3, 2, in_channels=3, use_batch_norm=use_batch_norm))]
    layers += [(f"stage{i}", conv_bn_act(16, 3, 2, in_channels=8 if i == 1 else 16)) for i in range(1, 5)]
    blocks = [(name, 1, 2) for name, _ in layers]
    return Backbone("tinypose", layers, blocks, 16, out_stride=out_stride)


def _plugin():
    return architectures_plugin(ArchitectureSpec("tinypose", build=tinypose, summary="toy backbone for the pose tests"))


@pytest.fixture
def with_tinypose():
    with registered_plugin(_plugin(), "tinypose-plugin") as registry:
        yield registry


def test_unregistered_arch_is_a_spec_error_naming_the_choices():
    from pydantic import ValidationError

    from tlkit_pose.config import PoseConfig

    with pytest.raises(ValidationError, match=r"model.arch\n.*unknown architecture 'tinypose'.*vgg19"):
        PoseConfig.model_validate({"model": {"arch": "tinypose"}})


def test_pose_trains_on_a_registered_backbone(with_tinypose, tmp_path):
    import mxnet as mx

    from tlkit.model_io import load_net
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.synthetic import generate_dataset
    from tlkit_pose.train import train_model

    assert "tinypose" in with_tinypose.backbone_names("pose")
    train = generate_dataset(tmp_path / "train", n_images=4, seed=3, size=(S, S), people=(1, 2))
    val = generate_dataset(tmp_path / "val", n_images=2, seed=4, size=(S, S), people=(1, 2))
    cfg = PoseConfig.model_validate(
        {
            "dataloader": {"train_annotations": str(train), "val_annotations": str(val), "image_dims": [S, S, 3]},
            "pose_config": {"target_shape": [S // 8, S // 8]},
            "model": {"arch": "tinypose", "stages": 2, "stage_channels": 8, "stage_convs": 1, "freeze_blocks": [0]},
            "train_config": {
                "batch_size_per_gpu": 4,
                "n_epochs": 1,
                "optimizer": {"type": "adam"},
                "lr_config": {"type": "constant", "learning_rate": 1e-3},
                "max_checkpoints_to_keep": 1,
            },
        }
    )
    res = train_model(cfg, tmp_path / "out", Console(quiet=True), [mx.cpu()])
    assert res.epochs_run == 1 and np.isfinite(res.history[-1]["loss"])

    net, meta = load_net(res.model_path)
    assert meta["arch"] == meta["build"]["arch"] == "tinypose"
    assert type(net.backbone).__name__ == "Backbone" and net.backbone.arch == "tinypose"
    params = net._collect_params_with_prefix()
    assert "backbone.stage4.0.weight" in params  # every block kept: stride-1 past the model stride (8)
    hm, paf = net(mx.nd.random.uniform(shape=(1, 3, S, S)))
    assert hm.shape == (1, 19, S // 8, S // 8) and paf.shape == (1, 38, S // 8, S // 8)
