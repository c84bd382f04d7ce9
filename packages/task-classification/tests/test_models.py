"""The classification head on every registered backbone: forward + backward at a tiny input, rebuild from
meta, and the pruning equivalence check on the classification network."""

import numpy as np
import pytest

from tlkit.registry import get_registry

ARCHS = get_registry().backbone_names("classification")
SIZE = 32


def tiny_build(arch, n_classes=3):
    return {"arch": arch, "n_classes": n_classes, "dropout": 0.1}


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_every_architecture(arch):
    import mxnet as mx
    from mxnet import autograd

    from tlkit_classification.model import build_from_meta

    net = build_from_meta({"build": tiny_build(arch)})
    net.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(-1, 1, (2, 3, SIZE, SIZE))
    with autograd.record():
        out = net(x)
        loss = mx.nd.softmax_cross_entropy(out, mx.nd.array([0, 2]))
    loss.backward()
    assert out.shape == (2, 3)
    grads = {n: p.grad() for n, p in net._collect_params_with_prefix().items() if p.grad_req != "null"}
    assert float(grads["output.weight"].abs().sum().asscalar()) > 0
    first_conv = next(n for n in grads if n.startswith("backbone.") and n.endswith("weight"))
    assert np.isfinite(grads[first_conv].asnumpy()).all()


def test_head_has_a_fixed_graph_name_for_the_pruner():

    from tlkit.model_io import graph_of
    from tlkit_classification.model import HEAD_NODE, build_from_meta

    net = build_from_meta({"build": tiny_build("resnet10")})
    net.initialize()
    sym, _ = graph_of(net, (3, SIZE, SIZE))
    assert f'"{HEAD_NODE}_fwd"' in sym


def test_bad_meta_is_a_model_file_error():
    from tlkit.errors import ModelFileError
    from tlkit_classification.model import build_from_meta

    with pytest.raises(ModelFileError, match="lacks build.arch"):
        build_from_meta({"build": {"arch": "resnet18"}})


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_pruned_classification_net_equals_masked_original(arch):
    from tlkit.testing.pruning import assert_prune_equivalent
    from tlkit_classification.model import HEAD_NODE, build_from_meta

    net = build_from_meta({"build": tiny_build(arch)})
    net.initialize()
    result = assert_prune_equivalent(net, (3, SIZE, SIZE), threshold=0.3, excluded_layers=[HEAD_NODE])
    assert result.report.params_after < result.report.params_before


@pytest.mark.parametrize("as_graph", [False, True])
def test_batch_norm_momentum_applies_to_gluon_and_graph_models(as_graph):
    """model_config.batch_norm_momentum: one training step moves the running statistics by (1 - momentum)."""
    import mxnet as mx

    from tlkit.model_io import graph_of, symbol_block
    from tlkit.transfer import set_bn_momentum
    from tlkit_classification.model import build_from_meta

    x = mx.nd.random.uniform(0, 5, (4, 3, SIZE, SIZE))

    def first_running_var(momentum):
        mx.random.seed(0)
        net = build_from_meta({"build": tiny_build("resnet10")})
        net.initialize(mx.init.Xavier())
        if as_graph:
            net = symbol_block(*graph_of(net, (3, SIZE, SIZE)))
        assert set_bn_momentum(net, momentum) > 0
        with mx.autograd.record():
            net(x)
        name = next(n for n in net.collect_params() if n.endswith("running_var"))  # the stem's BN
        return net.collect_params()[name].data().asnumpy()

    # running_var starts at 1: new = m * 1 + (1 - m) * batch_var, so (1 - new) scales with (1 - m)
    slow, fast = first_running_var(0.9), first_running_var(0.5)
    np.testing.assert_allclose(1 - fast, (1 - slow) * 5, rtol=1e-3)


def test_pretrained_mxnet_params_load_into_the_backbone(tmp_path):
    """A GluonCV .params file loads by structural name into the backbone; the new head is reported new."""
    import mxnet as mx
    from gluoncv.model_zoo import get_model
    from rich.console import Console

    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig
    from tlkit_classification.model import build_for_training

    src = get_model("resnet18_v1", pretrained=False)
    src.initialize(mx.init.Xavier())
    src(mx.nd.zeros((1, 3, SIZE, SIZE)))
    src.save_parameters(str(tmp_path / "r18.params"))
    cfg = load_spec(
        None,
        ClassificationConfig,
        [
            "model_config.arch=resnet18",
            f"model_config.input_image_size=3,{SIZE},{SIZE}",
            f"train_config.pretrained_model_path={tmp_path / 'r18.params'}",
        ],
    )
    built = build_for_training(cfg, ["a", "b"], [mx.cpu()], Console(quiet=True))
    assert built.load_report.new == ["output.weight", "output.bias"]
    assert len(built.load_report.loaded) == 100  # every backbone tensor of resnet18_v1
    own = built.net._collect_params_with_prefix()
    np.testing.assert_array_equal(
        own["backbone.features.0.weight"].data().asnumpy(), src.features[0].weight.data().asnumpy()
    )


def test_retain_head_keeps_the_imagenet_classifier():
    """retain_head: true with the ImageNet weights gives the 1000-class ImageNet model itself (espresso stays espresso)."""
    import mxnet as mx
    import numpy as np
    import skimage.data

    from tlkit.backbones import imagenet_classifier
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig
    from tlkit_classification.model import build_for_training

    cfg = load_spec(
        None,
        ClassificationConfig,
        [
            "model_config.retain_head=true",
            "model_config.input_image_size=3,224,224",
            "train_config.pretrained_model_path=imagenet",
        ],
    )
    built = build_for_training(cfg, [f"c{i}" for i in range(1000)], [mx.cpu()])
    ref, preprocess = imagenet_classifier("efficientnet_lite0")
    x = preprocess([skimage.data.coffee()])
    got = built.net(x).asnumpy()
    np.testing.assert_allclose(got, ref(x).asnumpy(), rtol=1e-5, atol=1e-5)
    assert int(got.argmax()) == 967  # ImageNet "espresso"
    assert built.meta["build"]["retain_head"] is True
    assert built.load_report.new == []  # the retained head is reported as ImageNet's, not as new


def test_gluoncv_store_weights_start_the_backbone(tmp_path, monkeypatch, shapes, spec_for):
    """pretrained_model_path: gluoncv://resnet18_v1b (a file in $MXNET_HOME/models, nothing downloaded)."""
    import mxnet as mx

    from tlkit.testing.pretrained import place_gluoncv_file
    from tlkit_classification.model import build_for_training

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    ref = place_gluoncv_file("resnet18_v1b")
    cfg = spec_for(shapes, "model_config.arch=resnet18", "train_config.pretrained_model_path=gluoncv://resnet18_v1b")
    built = build_for_training(cfg, ["a", "b"], [mx.cpu()])
    assert len(built.load_report.loaded) == 100 and built.load_report.new == ["output.weight", "output.bias"]
    first_conv = built.net.backbone._children["features.0"].weight.data().asnumpy()
    np.testing.assert_array_equal(first_conv, ref.conv1.weight.data().asnumpy())
