"""Every registered backbone (plugins' included) builds, runs forward and backward, honours the Backbone
contract (out_channels, out_stride, freeze blocks), and the TLT options change the structure as documented."""

from __future__ import annotations

import math
import sys
import types

import mxnet as mx
import numpy as np
import pytest

from tlkit import hookimpl
from tlkit.backbones import Backbone, build_backbone
from tlkit.errors import SpecError, UnknownNameError
from tlkit.registry import get_registry

ARCHS = get_registry().backbone_names()
SIZE = 64


def _build(arch: str, **kw) -> Backbone:
    bb = build_backbone(arch, **kw)
    bb.initialize(mx.init.Xavier())
    return bb


def test_all_required_backbones_are_registered():
    required = {"resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "vgg16", "vgg19", "mobilenet_v1",
                "mobilenet_v2", "googlenet", "darknet19", "darknet53", "efficientnet_lite0",
                "efficientnet_lite1", "efficientnet_lite2"}
    assert required <= set(ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_backward_stride32(arch):
    bb = _build(arch)
    assert isinstance(bb, Backbone) and bb.out_stride == 32
    assert bb.default_preprocess in ("caffe", "torch", "tf")
    bb.hybridize()  # the symbol graph (export, pruning) must trace too
    x = mx.nd.random.uniform(-1, 1, (2, 3, SIZE, SIZE))
    with mx.autograd.record():
        y = bb(x)
        loss = (y * y).mean()
    loss.backward()
    assert y.shape == (2, bb.out_channels, SIZE // 32, SIZE // 32)
    assert np.isfinite(y.asnumpy()).all()
    params = bb._collect_params_with_prefix()
    first = next(p for n, p in params.items() if n.endswith("weight"))
    assert float(mx.nd.abs(first.grad()).sum().asscalar()) > 0, "no gradient reached the first layer"


@pytest.mark.parametrize("out_stride", [8, 16])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_reduced_stride(arch, out_stride):
    bb = _build(arch, out_stride=out_stride)
    y = bb(mx.nd.random.uniform(-1, 1, (1, 3, SIZE, SIZE)))
    side = math.ceil(SIZE / out_stride)
    assert bb.out_stride == out_stride
    assert y.shape == (1, bb.out_channels, side, side)
    assert np.isfinite(y.asnumpy()).all()


def test_reduced_stride_keeps_every_parameter():
    """Stride 8/16 only removes downsampling: same tensors, same shapes, so pretrained weights still apply."""
    shapes = {}
    for s in (32, 8):
        bb = _build("efficientnet_lite0", out_stride=s)
        bb(mx.nd.zeros((1, 3, SIZE, SIZE)))
        shapes[s] = {n: p.shape for n, p in bb._collect_params_with_prefix().items()}
    assert shapes[32] == shapes[8]


@pytest.mark.parametrize("arch", ARCHS)
def test_freeze_prefixes_match_real_parameters(arch):
    bb = _build(arch)
    bb(mx.nd.zeros((1, 3, SIZE, SIZE)))
    names = list(bb._collect_params_with_prefix())
    seen: set[str] = set()
    for b in range(len(bb.block_names)):
        prefixes = bb.freeze_prefixes([b])
        covered = {n for n in names if n.startswith(tuple(prefixes))}
        assert all(any(n.startswith(p) for n in names) for p in prefixes), prefixes
        assert not covered & seen, f"block {b} overlaps an earlier block"
        seen |= covered
    assert seen == set(names), "the freeze blocks must cover every parameter"
    if type(bb).freeze_prefixes is not Backbone.freeze_prefixes:
        return  # a plugin's own implementation: range checking is its business
    with pytest.raises(SpecError, match=rf"freeze_blocks: {len(bb.block_names)} is out of range for {arch}"):
        bb.freeze_prefixes([len(bb.block_names)])


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
    [("resnet18", "resnet18_v1", {}), ("vgg16", "vgg16_bn", {}), ("vgg16", "vgg16", {"use_batch_norm": False}),
     ("darknet53", "darknet53", {})],
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
def registry_with_plugin(monkeypatch):
    import tlkit.registry as registry_mod
    from tlkit.plugins import make_plugin_manager
    from tlkit.types import ArchitectureSpec

    plugin = types.ModuleType("tiny_plugin")

    @hookimpl
    def tlkit_register_architectures():
        return [ArchitectureSpec("tinynet", build=f"{__name__}:tinynet")]

    plugin.tlkit_register_architectures = tlkit_register_architectures
    pm, loaded = make_plugin_manager(entry_points=False)
    pm.register(plugin, name="tiny")
    monkeypatch.setattr(registry_mod, "_REGISTRY", registry_mod.Registry(pm, loaded))
    return registry_mod.get_registry()


def test_plugin_backbone_builds_through_build_backbone(registry_with_plugin):
    assert "tinynet" in registry_with_plugin.backbone_names()
    for s in (32, 16, 8):
        bb = _build("tinynet", out_stride=s)
        assert bb(mx.nd.zeros((1, 3, SIZE, SIZE))).shape == (1, 16, SIZE // s, SIZE // s)
    assert bb.freeze_prefixes([0, 1]) == ["stem.", "stage1."]


def test_unknown_backbone_option_is_a_spec_error():
    with pytest.raises(SpecError, match=r"resnet18: unknown backbone option 'use_polling' \(did you mean "
                                        r"'use_pooling'\?\); it accepts: out_stride, use_batch_norm"):
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

    code = ("import sys, tlkit.backbones, tlkit.backbones.catalog, tlkit.weights, tlkit._builtin; "
            "tlkit._builtin.tlkit_register_architectures(); "
            "assert 'mxnet' not in sys.modules and 'gluoncv' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True)
