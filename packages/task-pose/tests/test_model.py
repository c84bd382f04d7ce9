"""BodyPoseNet: output shapes per backbone and stage count, all-stage training outputs, stage-wise LR
multipliers, fixed head names, rebuild from meta, the masked L2 loss, and spec errors."""

from __future__ import annotations

import numpy as np
import pytest

from tlkit.errors import DataError, SpecError


@pytest.mark.parametrize(
    "arch,blocks", [("vgg19", None), ("resnet18", None), ("mobilenet_v2", None), ("vgg19", 4), ("resnet18", 3)]
)
@pytest.mark.parametrize("stages", [2, 3])
def test_output_shapes(arch, blocks, stages):
    import mxnet as mx

    from tlkit_pose.model import build_net, set_all_stages

    net = build_net({"arch": arch, "backbone_blocks": blocks, "stages": stages, "stage_channels": 8, "stage_convs": 1})
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(-0.5, 0.5, (2, 3, 32, 48))
    hm, paf = net(x)
    assert hm.shape == (2, 19, 4, 6) and paf.shape == (2, 38, 4, 6)
    set_all_stages(net, True)
    outs = net(x)
    assert len(outs) == 2 * stages
    assert all(o.shape[1] == (19 if i % 2 == 0 else 38) for i, o in enumerate(outs))
    np.testing.assert_allclose(outs[-2].asnumpy(), hm.asnumpy(), rtol=1e-5, atol=1e-6)  # last stage = inference output


def test_truncation_that_loses_the_stride_is_an_error():
    from tlkit_pose.model import build_net

    with pytest.raises(SpecError, match="stride 4"):
        build_net({"arch": "resnet18", "backbone_blocks": 1, "stages": 2})
    with pytest.raises(SpecError, match="has 6 blocks"):
        build_net({"arch": "vgg19", "backbone_blocks": 9, "stages": 2})


def test_stagewise_lr_multipliers_and_head_names():
    import mxnet as mx

    from tlkit.model_io import graph_of
    from tlkit_pose.model import apply_lr_multipliers, build_net, head_nodes

    net = build_net({"arch": "resnet18", "backbone_blocks": 3, "stages": 3, "stage_channels": 8})
    net.initialize(mx.init.Xavier())
    assert apply_lr_multipliers(net, 4.0) > 0
    named = net._collect_params_with_prefix()
    assert named["stage1.heatmap.weight"].lr_mult == 1.0
    assert named["stage2.heatmap.weight"].lr_mult == 4.0 and named["stage3.body.0.weight"].lr_mult == 4.0
    assert named["backbone.features.0.weight"].lr_mult == 1.0
    sym, _ = graph_of(net, (3, 32, 32))
    import json

    nodes = {n["name"] for n in json.loads(sym)["nodes"]}
    assert set(head_nodes(3)) <= nodes


def test_build_meta_and_rebuild(tmp_path):
    import mxnet as mx

    from tlkit.model_io import load_net, save_net
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.model import build_meta, build_net

    cfg = PoseConfig.model_validate(
        {
            "dataloader": {"image_dims": [48, 64, 3]},
            "pose_config": {"target_shape": [6, 8]},
            "model": {"arch": "mobilenet_v2", "backbone_blocks": 3, "stages": 2, "stage_channels": 8},
        }
    )
    meta = build_meta(cfg)
    assert meta["input_shape"] == [3, 48, 64] and meta["output_names"] == ["heatmap_out", "paf_out"]
    assert meta["preprocessing"]["mean"] == [128.0] * 3 and meta["preprocessing"]["std"] == [256.0] * 3
    assert meta["deepstream"]["network_type"] == 100
    net = build_net(meta["build"])
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(shape=(1, 3, 48, 64))
    ref = net(x)[0].asnumpy()
    path = save_net(tmp_path / "m.tlk", net, meta)
    net2, meta2 = load_net(path)
    np.testing.assert_allclose(net2(x)[0].asnumpy(), ref, rtol=1e-5, atol=1e-6)
    assert meta2["build"]["stages"] == 2


def test_spec_errors():
    from pydantic import ValidationError

    from tlkit_pose.config import PoseConfig
    from tlkit_pose.model import build_meta

    with pytest.raises(ValidationError, match="stages"):
        PoseConfig.model_validate({"model": {"stages": 8}})
    with pytest.raises(ValidationError, match="arch"):
        PoseConfig.model_validate({"model": {"arch": "resnet50x"}})
    cfg = PoseConfig.model_validate(
        {"dataloader": {"image_dims": [64, 64, 1]}, "pose_config": {"target_shape": [8, 8]}}
    )
    with pytest.raises(SpecError, match="3 channels"):
        build_meta(cfg)
    cfg = PoseConfig.model_validate(
        {"dataloader": {"image_dims": [64, 64, 3]}, "pose_config": {"target_shape": [16, 16]}}
    )
    with pytest.raises(SpecError, match="stride 4"):
        build_meta(cfg)


# -- loss --------------------------------------------------------------------------------------------


def _maps(rng, n=2, h=4, w=5):
    return [rng.normal(size=(n, c, h, w)).astype(np.float32) for c in (19, 38)]


def test_loss_is_masked_l2_over_all_stages():
    import mxnet as mx

    from tlkit_pose.train import pose_loss

    rng = np.random.default_rng(0)
    hm_t, paf_t = _maps(rng)
    mask = np.ones((2, 1, 4, 5), np.float32)
    mask[0, 0, :2] = 0  # sample 0: top two rows ignored
    s1, s2 = _maps(rng), _maps(rng)
    label = (mx.nd.array(hm_t), mx.nd.array(paf_t), mx.nd.array(mask))
    got = pose_loss([mx.nd.array(a) for a in (*s1, *s2)], label).asnumpy()
    want = sum(((o - t) ** 2 * mask).sum(axis=(1, 2, 3)) for o, t in zip((*s1, *s2), (hm_t, paf_t, hm_t, paf_t))) / 20
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_loss_ignores_errors_under_the_mask():
    import mxnet as mx

    from tlkit_pose.train import pose_loss

    rng = np.random.default_rng(1)
    hm_t, paf_t = _maps(rng)
    mask = np.ones((2, 1, 4, 5), np.float32)
    mask[:, :, 1, 2] = 0
    hm, paf = hm_t.copy(), paf_t.copy()
    hm[:, :, 1, 2] += 100.0  # wrong only where masked
    paf[:, :, 1, 2] -= 50.0
    label = (mx.nd.array(hm_t), mx.nd.array(paf_t), mx.nd.array(mask))
    np.testing.assert_allclose(pose_loss((mx.nd.array(hm), mx.nd.array(paf)), label).asnumpy(), 0.0, atol=1e-6)
    mask[:, :, 1, 2] = 1
    label = (mx.nd.array(hm_t), mx.nd.array(paf_t), mx.nd.array(mask))
    assert (pose_loss((mx.nd.array(hm), mx.nd.array(paf)), label).asnumpy() > 100).all()
    with pytest.raises(DataError, match="pairs"):
        pose_loss([mx.nd.array(hm)], label)
    with pytest.raises(DataError, match="pairs of outputs, got 0 outputs"):
        pose_loss([], label)


def test_gluoncv_store_weights_start_the_pose_backbone(tmp_path, monkeypatch):
    import mxnet as mx

    from tlkit.testing.pretrained import place_gluoncv_file
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.model import build_for_training

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    ref = place_gluoncv_file("resnet18_v1b")
    cfg = PoseConfig.model_validate(
        {
            "dataloader": {"image_dims": [48, 64, 3]},
            "pose_config": {"target_shape": [6, 8]},
            "model": {"arch": "resnet18", "stages": 2, "stage_channels": 8},
            "train_config": {"pretrained_model_path": "gluoncv://resnet18_v1b"},
        }
    )
    built = build_for_training(cfg, [mx.cpu()])
    first_conv = built.net.backbone._children["features.0"].weight.data().asnumpy()
    np.testing.assert_array_equal(first_conv, ref.conv1.weight.data().asnumpy())
