"""SSD and YOLOv3 on backbones of tlkit's registry rather than GluonCV's base networks: a toy backbone a third-party
plugin registers trains one tiny epoch, evaluates, reloads from its .tlk through the registry, prunes and exports
with NMS in the graph (onnxruntime scores what MXNet scores); core's own backbones build for both detectors with
features at strides 8/16/32; freeze_blocks and ImageNet weights reach the backbone inside each detector; names
that are neither a GluonCV preset nor registered, and backbones without a layer list, are refused clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from detection_synth import CLASSES, tiny_spec, write_synthetic_records
from rich.console import Console

from tlkit.errors import SpecError
from tlkit.testing import make_context
from tlkit.testing.plugins import architectures_plugin, registered_plugin
from tlkit.types import ArchitectureSpec

W, H = 128, 96  # network input (the synthetic frames' size; at 64x64 a pruned YOLOv3 fails in oneDNN backward)


def tinydet(*, out_stride: int = 32, use_batch_norm: bool = True):
    """A 5-block toy backbone in the layer-list form of `tlkit.backbones.Backbone`: strides 2, 4, 8, 16, 32."""
    from tlkit.backbones import Backbone
    from tlkit.backbones.base import conv_bn_act

    layers = [("stem", conv_bn_act(8, 3, 2, in_channels=3, use_batch_norm=use_batch_norm))]
    layers += [(f"stage{i}", conv_bn_act(16, 3, 2, in_channels=8 if i == 1 else 16)) for i in range(1, 5)]
    return Backbone("tinydet", layers, [(name, 1, 2) for name, _ in layers], 16, out_stride=out_stride)


def own_forward(*, out_stride: int = 32, **_kw):
    """A plugin Backbone subclass with its own forward (no layer list): nothing for a detector to tap."""
    from mxnet.gluon import nn

    from tlkit.backbones import Backbone

    class OwnForward(Backbone):
        def __init__(self):
            super().__init__("ownfwd", out_stride=out_stride)
            self.out_channels, self.block_names = 8, ["body"]
            self.body = nn.Conv2D(8, 3, 32, 1)

        def hybrid_forward(self, F, x):
            return self.body(x)

    return OwnForward()


def _plugin():
    return architectures_plugin(
        ArchitectureSpec("tinydet", build=tinydet, summary="toy backbone for the detection tests"),
        ArchitectureSpec("ownfwd", build=own_forward, summary="backbone with its own forward"),
    )


@pytest.fixture
def with_tinydet():
    with registered_plugin(_plugin(), "tinydet-plugin") as registry:
        yield registry


def _ctx(command, **kw):
    return make_context("detection", command, gpus=0, console=Console(width=120, highlight=False), **kw)


def _spec(manifest, detector, arch, **over):
    return tiny_spec(
        manifest,
        **{
            "model_config.detector": detector,
            "model_config.arch": arch,
            "train_config.pretrained_model_path": None,
            "augmentation_config.preprocessing": {"output_image_width": W, "output_image_height": H},
            "train_config.optimizer": {"type": "sgd", "momentum": 0.9},
            "train_config.lr_config": {"type": "constant", "learning_rate": 1e-3},
            **over,
        },
    )


@pytest.mark.parametrize("detector", ["ssd", "yolov3"])
def test_a_plugin_backbone_trains_evaluates_reloads_prunes_and_exports(with_tinydet, detector, tmp_path):
    import mxnet as mx

    from tlkit.export.command import run as export_run
    from tlkit.model_io import load_net, read_meta
    from tlkit.pruning.command import prune_model_file
    from tlkit_detection.evaluate import run as eval_run
    from tlkit_detection.train import run as train_run

    manifest = write_synthetic_records(tmp_path, n=8, val_split=25)
    cfg = _spec(manifest, detector, "tinydet", **{"model_config.freeze_blocks": [0]})
    out = train_run(_ctx("train", spec=cfg, results_dir=tmp_path / "t"))
    model = Path(out["model"])
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    meta = read_meta(model)
    assert meta["detector"] == detector and meta["arch"] == f"{detector}_tinydet"
    assert meta["build"]["backbone"] == "tinydet" and meta["input_shape"] == [3, H, W]
    assert meta["preprocessing"]["mode"] == "torch"  # the backbone's default_preprocess

    # reload: the .tlk rebuilds through the registry; the frozen stem kept its initial weights, the rest trained
    net, _ = load_net(model)
    params = net._collect_params_with_prefix()
    stem = "features.backbone.stem.0.weight" if detector == "ssd" else "stages.0.stem.0.weight"
    later = "features.backbone.stage4.0.weight" if detector == "ssd" else "stages.2.stage4.0.weight"
    assert stem in params and later in params
    from tlkit_detection.detectors import get

    built = get(detector).build_for_training(cfg, list(CLASSES), [mx.cpu()])  # the start, by the train seed
    assert built.frozen == (stem.removesuffix("0.weight"),)
    start = built.net._collect_params_with_prefix()
    np.testing.assert_array_equal(params[stem].data().asnumpy(), start[stem].data().asnumpy())
    assert not np.array_equal(params[later].data().asnumpy(), start[later].data().asnumpy())

    r_tlk = eval_run(_ctx("evaluate", spec=cfg, model=model, options={}))
    assert r_tlk.kpi["mean average precision"] == pytest.approx(out["mean average precision"] * 100, abs=1e-6)

    pruned = tmp_path / "pruned.tlk"
    report = prune_model_file(model, pruned, target_ratio=0.5, min_filters=8)
    assert report.params_after <= 0.5 * report.params_before
    assert read_meta(pruned)["prune_exclude"] == meta["prune_exclude"]  # the heads keep their channels
    retrain = cfg.model_copy(deep=True)  # the pruned graph retrains (load_graph), rebuilt through the registry
    retrain.train_config.pretrained_model_path, retrain.train_config.load_graph = str(pruned), True
    retrain.model.freeze_blocks = []
    rout = train_run(_ctx("train", spec=retrain, results_dir=tmp_path / "r"))
    assert np.isfinite(rout["loss"]) and rout["loss"] > 0 and read_meta(rout["model"])["kind"] == "graph"
    for path in (model, pruned):  # export with NMS in the graph; onnxruntime scores what MXNet scores
        onnx = tmp_path / f"{path.stem}.onnx"
        export_run(_ctx("export", model=path, output=onnx, options={}))
        r_mx = eval_run(_ctx("evaluate", spec=cfg, model=path, options={}))
        r_onnx = eval_run(_ctx("evaluate", spec=cfg, model=onnx, options={}))
        assert r_onnx.metrics["backend"] != "mxnet"
        assert r_onnx.metrics["num_predictions"] == r_mx.metrics["num_predictions"]
        assert r_onnx.kpi["mean average precision"] == pytest.approx(r_mx.kpi["mean average precision"], abs=1e-6)


@pytest.mark.parametrize(
    "detector,arch,n_layers,n_anchors",
    [
        ("ssd", "resnet", 34, 1160),  # strides 8..256: 16x12, 8x6, 4x3, 2x2, 1x1, 1x1 (4/6 anchors each)
        ("ssd", "mobilenet_v2", None, 1160),
        ("yolov3", "resnet", 18, 756),  # 3 anchors on 16x12 + 8x6 + 4x3
        ("yolov3", "mobilenet_v2", None, 756),
    ],
)
def test_core_backbones_build_for_both_detectors(detector, arch, n_layers, n_anchors, tmp_path):
    import mxnet as mx

    from tlkit_detection.detectors import get

    cfg = tiny_spec(
        tmp_path / "m.json",
        **{"model_config.detector": detector, "model_config.arch": arch, "model_config.n_layers": n_layers},
    )
    d = get(detector)
    meta = d.build_meta(cfg, ["cat", "dog"])
    name = f"{arch}{n_layers or ''}"
    assert meta["build"]["backbone"] == name and meta["arch"] == f"{detector}_{name}"
    net = d.build_net(meta["build"])
    from tlkit_detection.detectors.gluoncv import initialize

    initialize(net, [mx.cpu()])
    ids, scores, boxes = net(mx.nd.random.uniform(shape=(1, 3, 96, 128)))
    assert ids.shape == scores.shape == (1, 2 * n_anchors, 1) and boxes.shape == (1, 2 * n_anchors, 4)
    backbone, in_net = d.tlkit_backbone(net)
    assert backbone.arch == name
    own = net._collect_params_with_prefix()
    for p in backbone.freeze_prefixes(range(len(backbone.block_names))):
        assert any(n.startswith(in_net(p)) for n in own), f"{p} -> {in_net(p)} names no parameter of the net"


@pytest.mark.parametrize("detector", ["ssd", "yolov3"])
def test_imagenet_weights_and_freeze_blocks_reach_the_backbone(detector, tmp_path):
    """efficientnet_lite0's shipped ImageNet weights load into the backbone inside the detector (its stem
    equals the classifier's) and freeze_blocks freezes that backbone's blocks."""
    import mxnet as mx

    from tlkit.backbones import imagenet_classifier
    from tlkit_detection.detectors import get

    cfg = tiny_spec(
        tmp_path / "m.json",
        **{
            "model_config.detector": detector,
            "model_config.arch": "efficientnet_lite0",
            "train_config.pretrained_model_path": "imagenet",
            "model_config.freeze_blocks": [0, 1],
        },
    )
    built = get(detector).build_for_training(cfg, ["cat"], [mx.cpu()])
    where = "features.backbone." if detector == "ssd" else "stages.0."
    assert built.frozen == (where + "features.0.", where + "features.1.")
    assert built.meta["preprocessing"]["mode"] == "tf"
    clf, _ = imagenet_classifier("efficientnet_lite0")
    want = clf.backbone._collect_params_with_prefix()["features.0.0.conv.weight"].data().asnumpy()
    params = built.net._collect_params_with_prefix()
    np.testing.assert_array_equal(params[where + "features.0.0.conv.weight"].data().asnumpy(), want)
    if detector == "ssd":  # the layout SSD efficientnet_lite0 model files were saved with (they still load)
        assert params["features.extras.2.3.weight"].shape == (256, 128, 3, 3)
        assert params["class_predictors.0.predictor.weight"].shape == (4 * 2, 40, 3, 3)  # stride 8: 40 channels
        assert len(params) == 305


def test_unknown_and_untappable_backbones_are_refused(with_tinydet, tmp_path):
    from tlkit_detection.detectors import get

    for detector in ("ssd", "yolov3"):
        cfg = tiny_spec(tmp_path / "m.json", **{"model_config.detector": detector, "model_config.arch": "foonet"})
        with pytest.raises(
            SpecError,
            match=r"model_config.arch 'foonet' is not available for detector "
            rf"'{detector}': not one of GluonCV's .*nor a registered backbone "
            r"\(.*tinydet.*; see `tlkit plugins`\)",
        ):
            get(detector).build_meta(cfg, ["a"])
        cfg = tiny_spec(tmp_path / "m.json", **{"model_config.detector": detector, "model_config.arch": "ownfwd"})
        with pytest.raises(
            SpecError,
            match=r"model_config.arch 'ownfwd': (SSD|YOLOv3) needs the backbone's features "
            r"at strides 8, 16, 32, but ownfwd builds its own forward",
        ):
            get(detector).build_net(get(detector).build_meta(cfg, ["a"])["build"])


def test_gluoncv_classifier_weights_load_into_a_tlkit_backbone(tmp_path, gluoncv_classifier):
    """`pretrained_model_path: gluoncv://mobilenetv2_1.0` for YOLOv3 on tlkit's mobilenet_v2: GluonCV's classifier
    (from $MXNET_HOME/models, nothing downloaded) fills the backbone stages; another backbone's weights are refused
    before any download."""
    import mxnet as mx

    from tlkit.errors import ModelFileError
    from tlkit_detection.detectors import get

    base = gluoncv_classifier("mobilenetv2_1.0")
    over = {
        "model_config.detector": "yolov3",
        "model_config.arch": "mobilenet_v2",
        "train_config.pretrained_model_path": "gluoncv://mobilenetv2_1.0",
    }
    cfg = tiny_spec(tmp_path / "m.json", **over)
    built = get("yolov3").build_for_training(cfg, ["dog"], [mx.cpu()])
    want = base._collect_params_with_prefix()["features.0.weight"].data().asnumpy()
    got = built.net._collect_params_with_prefix()["stages.0.features.0.weight"].data().asnumpy()
    np.testing.assert_array_equal(got, want)
    cfg.train_config.pretrained_model_path = "gluoncv://resnet50_v1"
    with pytest.raises(
        ModelFileError,
        match=r"gluoncv://resnet50_v1 holds resnet50 ImageNet weights, the network's "
        r"backbone is mobilenet_v2; use gluoncv://mobilenetv2_1.0",
    ):
        get("yolov3").build_for_training(cfg, ["dog"], [mx.cpu()])
