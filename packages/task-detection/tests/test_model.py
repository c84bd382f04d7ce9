"""DetectNet_v2 network: head shapes for every backbone, names, rebuild from a model file's meta."""

import numpy as np
import pytest

from tlkit.errors import ModelFileError, SpecError

BACKBONES = [
    ("resnet", 10),
    ("resnet", 18),
    ("resnet", 34),
    ("resnet", 50),
    ("vgg", 16),
    ("googlenet", None),
    ("mobilenet_v1", None),
    ("mobilenet_v2", None),
    ("efficientnet_lite0", None),
]


@pytest.mark.parametrize("arch,n_layers", BACKBONES, ids=[f"{a}{n or ''}" for a, n in BACKBONES])
def test_heads_are_stride_16_with_c_and_4c_channels(arch, n_layers):
    import mxnet as mx

    from tlkit_detection.model import build_net

    net = build_net({"arch": arch, "n_layers": n_layers, "n_classes": 3})
    net.initialize()
    cov, bbox = net(mx.nd.zeros((2, 3, 64, 96)))
    assert cov.shape == (2, 3, 4, 6) and bbox.shape == (2, 12, 4, 6)
    c = cov.asnumpy()
    assert np.all((c > 0) & (c < 1))  # sigmoid


def test_output_grid_is_ceil_of_input_over_16():
    from tlkit_detection.model import output_grid

    assert output_grid((544, 960)) == (34, 60)
    assert output_grid((100, 50)) == (7, 4)


def test_meta_names_heads_for_pruning_export_and_deepstream(tmp_path):
    import mxnet as mx
    from detection_synth import tiny_spec

    from tlkit.model_io import graph_of, load_net, save_net
    from tlkit_detection.model import BBOX_NODE, COV_NODE, build_for_training

    cfg = tiny_spec(tmp_path / "none.json", **{"postprocessing_config.default.clustering_algorithm": "nms"})
    built = build_for_training(cfg, ["blue", "red"], [mx.cpu()])
    meta = built.meta
    assert meta["output_names"] == ["output_cov", "output_bbox"]
    assert meta["input_shape"] == [3, 96, 128] and meta["arch"] == "resnet10"
    assert meta["deepstream"]["network_type"] == 0 and meta["deepstream"]["properties"]["cluster-mode"] == 2
    sym, _ = graph_of(built.net, tuple(meta["input_shape"]))
    names = {n["name"] for n in __import__("json").loads(sym)["nodes"]}
    assert f"{COV_NODE}_fwd" in names and f"{BBOX_NODE}_fwd" in names
    assert meta["prune_exclude"] == [COV_NODE, BBOX_NODE]
    # coverage starts near 0.01 everywhere (bias = logit(0.01))
    cov, _ = built.net(mx.nd.zeros((1, 3, 96, 128)))
    assert 0.0 < float(cov.mean().asscalar()) < 0.2
    path = save_net(tmp_path / "m.tlk", built.net, meta)
    net2, meta2 = load_net(path)  # rebuilt through TaskSpec.build_model
    x = mx.nd.array(np.random.default_rng(0).normal(size=(1, 3, 96, 128)).astype("float32"))
    for a, b in zip(built.net(x), net2(x)):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-6)
    assert meta2["classes"] == ["blue", "red"]


def test_dbscan_spec_gives_deepstream_cluster_mode_1(tmp_path):
    from detection_synth import tiny_spec

    from tlkit_detection.model import deepstream_meta

    cfg = tiny_spec(tmp_path / "none.json")
    ds = deepstream_meta(cfg, ["blue", "red"])
    assert ds["properties"]["cluster-mode"] == 1
    assert ds["class_attrs_all"]["eps"] == pytest.approx(0.13)


def test_bad_meta_and_spec_errors(tmp_path):
    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.model import build_from_meta, build_net

    with pytest.raises(ModelFileError, match="lacks build.arch"):
        build_from_meta({"build": {"n_classes": 2}})
    with pytest.raises(SpecError, match="n_layers is required"):
        build_net({"arch": "resnet", "n_layers": None, "n_classes": 2})
    with pytest.raises(Exception, match="resnet19"):
        build_net({"arch": "resnet", "n_layers": 19, "n_classes": 2})
    with pytest.raises(Exception, match="multiple of 16"):
        DetectionConfig.model_validate({"augmentation_config": {"preprocessing": {"output_image_width": 100}}})


def test_bn_momentum_is_set_on_gluon_nets_and_pruned_graphs():
    import json

    import mxnet as mx
    from mxnet import gluon

    from tlkit.model_io import graph_of, symbol_block
    from tlkit_detection.model import build_net, set_bn_momentum

    net = build_net({"arch": "resnet", "n_layers": 10, "n_classes": 2})
    net.initialize()
    net(mx.nd.zeros((1, 3, 32, 32)))
    bns = []
    net.apply(lambda b: bns.append(b) if isinstance(b, gluon.nn.BatchNorm) else None)
    assert set_bn_momentum(net, 0.7) == len(bns) > 0
    assert {b._kwargs["momentum"] for b in bns} == {0.7}
    sym, params = graph_of(net, (3, 32, 32))
    sb = symbol_block(sym, params)
    assert set_bn_momentum(sb, 0.8) == len(bns)
    nodes = json.loads(sb._cached_graph[1].tojson())["nodes"]
    assert {n["attrs"]["momentum"] for n in nodes if n["op"] == "BatchNorm"} == {"0.8"}


def test_gluoncv_store_weights_start_the_detectnet_backbone(tmp_path, monkeypatch):
    import mxnet as mx
    from detection_synth import tiny_spec

    from tlkit.testing.pretrained import place_gluoncv_file
    from tlkit_detection.model import build_for_training

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    ref = place_gluoncv_file("resnet18_v1b")
    cfg = tiny_spec(
        tmp_path / "none.json",
        **{"model_config.n_layers": 18, "train_config.pretrained_model_path": "gluoncv://resnet18_v1b"},
    )
    built = build_for_training(cfg, ["blue", "red"], [mx.cpu()])
    first_conv = built.net.backbone._children["features.0"].weight.data().asnumpy()
    np.testing.assert_array_equal(first_conv, ref.conv1.weight.data().asnumpy())
