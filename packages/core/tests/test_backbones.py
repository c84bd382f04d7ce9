"""Every registered backbone (plugins' included) builds, runs forward and backward, honours the Backbone
contract (out_channels, out_stride, freeze blocks), and the TLT options change the structure as documented."""

from __future__ import annotations

import sys
import types

import mxnet as mx
import pytest

from tlkit import hookimpl
from tlkit.backbones import Backbone, build_backbone
from tlkit.errors import SpecError, UnknownNameError
from tlkit.registry import get_registry
from tlkit.testing.backbones import check_backbone
from tlkit.testing.plugins import registered_plugin

ARCHS = get_registry().backbone_names()
SIZE = 64


def _build(arch: str, **kw) -> Backbone:
    bb = build_backbone(arch, **kw)
    bb.initialize(mx.init.Xavier())
    return bb


def test_all_required_backbones_are_registered():
    required = {
        "resnet10",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "vgg16",
        "vgg19",
        "mobilenet_v1",
        "mobilenet_v2",
        "googlenet",
        "darknet19",
        "darknet53",
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
    }
    assert required <= set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_backbone_contract(arch):
    """The check a third-party architecture package runs too: forward/backward, strides 32/16/8 with the same
    parameters, freeze blocks, pruning equivalence and ONNX export (tlkit.testing.backbones)."""
    check_backbone(arch)


def test_freeze_prefixes_out_of_range_is_a_spec_error():
    bb = build_backbone("resnet18")
    with pytest.raises(SpecError, match=r"freeze_blocks: 5 is out of range for resnet18 \(0..4: stem, "):
        bb.freeze_prefixes([5])


def test_tlt_arch_and_n_layers_resolve():
    bb = build_backbone("resnet", n_layers=18)
    assert bb.arch == "resnet18" and bb.out_channels == 512
    assert build_backbone("vgg", n_layers=19).arch == "vgg19"
    assert build_backbone("darknet", n_layers=53).arch == "darknet53"


def test_unknown_arch_suggests_names():
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'resnt18'; did you mean 'resnet18'"):
        build_backbone("resnt18")
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'resnet19'.*did you mean.*'resnet18'"):
        build_backbone("resnet", n_layers=19)
    with pytest.raises(UnknownNameError, match=r"unknown architecture 'resnet19'; did you mean 'resnet18'"):
        build_backbone("resnet19", n_layers=18)  # a full name with TLT's default n_layers beside it


def test_bad_out_stride_is_a_spec_error():
    with pytest.raises(SpecError, match="resnet18: out_stride must be 8, 16 or 32, got 4"):
        build_backbone("resnet18", out_stride=4)


def _param_names(bb: Backbone) -> list[str]:
    bb.initialize()
    bb(mx.nd.zeros((1, 3, SIZE, SIZE)))
    return list(bb._collect_params_with_prefix())


def test_resnet_use_pooling_false_downsamples_in_the_first_block():
    pooled, strided = build_backbone("resnet18"), build_backbone("resnet18", use_pooling=False)
    assert type(pooled._children["features.3"]).__name__ == "MaxPool2D"
    assert type(strided._children["features.3"]).__name__ == "Identity"
    names = _param_names(strided)
    assert "features.4.0.downsample.0.weight" in names  # stage 1 now changes resolution: a projection
    assert "features.4.0.downsample.0.weight" not in _param_names(pooled)
    assert strided(mx.nd.zeros((1, 3, SIZE, SIZE))).shape == (1, 512, 2, 2)


def test_resnet_all_projections_adds_a_shortcut_conv_to_every_block():
    names = _param_names(build_backbone("resnet34", all_projections=True))
    n_blocks = 3 + 4 + 6 + 3
    assert sum(n.endswith("downsample.0.weight") for n in names) == n_blocks
    assert sum(n.endswith("downsample.0.weight") for n in _param_names(build_backbone("resnet34"))) == 3


@pytest.mark.parametrize("arch", ["resnet18", "vgg16", "darknet19"])
def test_use_batch_norm_false_gives_biased_convs_without_bn(arch):
    names = _param_names(build_backbone(arch, use_batch_norm=False))
    assert not any(n.endswith("gamma") for n in names)
    assert any(n.endswith("bias") for n in names)


@pytest.mark.parametrize(
    "arch,gluoncv_name,kw",
    [
        ("resnet18", "resnet18_v1", {}),
        ("vgg16", "vgg16_bn", {}),
        ("vgg16", "vgg16", {"use_batch_norm": False}),
        ("darknet53", "darknet53", {}),
    ],
)
def test_parameter_names_match_gluoncv(arch, gluoncv_name, kw):
    """Our own builds mirror GluonCV's layouts, so GluonCV .params files load by name."""
    from gluoncv import model_zoo

    ours = build_backbone(arch, **kw)
    ref = model_zoo.get_model(gluoncv_name, pretrained=False)
    for net in (ours, ref):
        net.initialize()
        net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    ref_shapes = {n: p.shape for n, p in ref._collect_params_with_prefix().items()}
    our_shapes = {n: p.shape for n, p in ours._collect_params_with_prefix().items()}
    assert our_shapes == {n: s for n, s in ref_shapes.items() if n in our_shapes}
    missing = {n for n in ref_shapes if n.startswith("features.") and n not in our_shapes}
    if arch.startswith("vgg"):  # GluonCV keeps fc6/fc7 in `features`; they are head layers here
        missing = {n for n in missing if int(n.split(".")[1]) < len(ours._layer_names)}
    assert not missing


# -- a third-party backbone goes through the same registry and the same checks ---------------------------


def tinynet(*, out_stride=32, use_batch_norm=True, **_):
    from tlkit.backbones.base import conv_bn_act

    layers = [("stem", conv_bn_act(8, 3, 2, in_channels=3, use_batch_norm=use_batch_norm))]
    blocks = [("stem", 1, 2)]
    for i in range(4):
        layers.append((f"stage{i + 1}", conv_bn_act(16, 3, 2, in_channels=8 if i == 0 else 16)))
        blocks.append((f"stage{i + 1}", 1, 2))
    return Backbone("tinynet", layers, blocks, 16, out_stride=out_stride, default_preprocess="torch")


@pytest.fixture
def registry_with_plugin():
    from tlkit.types import ArchitectureSpec

    plugin = types.ModuleType("tiny_plugin")

    @hookimpl
    def tlkit_register_architectures():
        return [ArchitectureSpec("tinynet", build=f"{__name__}:tinynet")]

    plugin.tlkit_register_architectures = tlkit_register_architectures
    with registered_plugin(plugin, "tiny") as registry:
        yield registry


def test_plugin_backbone_builds_and_passes_the_backbone_check(registry_with_plugin):
    assert "tinynet" in registry_with_plugin.backbone_names()
    bb = check_backbone("tinynet")
    assert bb.out_channels == 16 and bb.freeze_prefixes([0, 1]) == ["stem.", "stage1."]


def test_backbone_check_catches_broken_backbones():
    def wrong_channels(**kw):
        bb = tinynet(**kw)
        bb.out_channels = 32
        return bb

    with pytest.raises(AssertionError, match=r"stride-32 features \(2, 16, 2, 2\), expected \(2, 32, 2, 2\)"):
        check_backbone(wrong_channels, prune=False, export=False)

    def drops_blocks(out_stride=32, **_):  # fewer layers at stride 16: weights trained at 32 would not load
        from tlkit.backbones.base import conv_bn_act

        n = {32: 4, 16: 3, 8: 2}[out_stride]
        layers = [("stem", conv_bn_act(8, 3, 2, in_channels=3))]
        layers += [(f"stage{i + 1}", conv_bn_act(16, 3, 2, in_channels=8 if i == 0 else 16)) for i in range(n)]
        return Backbone("short", layers, [(name, 1, 2) for name, _ in layers], 16, out_stride=out_stride)

    with pytest.raises(AssertionError, match=r"stride 16 changes the parameters .*stage4"):
        check_backbone(drops_blocks, prune=False, export=False)


def test_unknown_backbone_option_is_a_spec_error():
    with pytest.raises(
        SpecError,
        match=r"resnet18: unknown backbone option 'use_polling' \(did you mean "
        r"'use_pooling'\?\); it accepts: out_stride, use_batch_norm",
    ):
        build_backbone("resnet18", use_polling=False)
    build_backbone("mobilenet_v2", use_pooling=False, all_projections=True)  # TLT options it has no use for


def test_freeze_stops_gradients_of_the_chosen_blocks():
    bb = _build("resnet10")
    frozen = bb.freeze([0, 1])
    assert frozen and all(n.startswith(("features.0.", "features.1.", "features.4.")) for n in frozen)
    x = mx.nd.random.uniform(shape=(1, 3, SIZE, SIZE))
    with mx.autograd.record():
        loss = bb(x).sum()
    loss.backward()
    params = bb._collect_params_with_prefix()
    assert params["features.0.weight"].grad_req == "null"
    assert float(mx.nd.abs(params["features.5.0.body.0.weight"].grad()).sum().asscalar()) > 0


def test_catalog_and_weights_modules_do_not_import_mxnet():
    """They are on the CLI's help path (`tlkit --help`, `tlkit plugins`)."""
    import subprocess

    code = (
        "import sys, tlkit.backbones, tlkit.backbones.catalog, tlkit.weights, tlkit._builtin; "
        "tlkit._builtin.tlkit_register_architectures(); "
        "assert 'mxnet' not in sys.modules and 'gluoncv' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
