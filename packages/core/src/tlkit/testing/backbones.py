"""Conformance check for backbones: core's own architectures and a third-party package's run the same one.

    from tlkit.testing.backbones import check_backbone

    def test_mynet():
        check_backbone("mynet")   # a registered name, or a factory taking build_backbone's keywords

A plugin's tests can register its architectures in-process, without installing the distribution:

    from tlkit.testing.plugins import registered_plugin

    with registered_plugin(my_pkg.plugin):
        check_backbone("mynet")
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from tlkit.backbones import Backbone

# the output strides the tasks build on: classification, SSD and YOLOv3 (32), DetectNet_v2 (16), BodyPoseNet (8)
TASK_STRIDES = (32, 16, 8)


def build(name_or_factory: str | Callable[..., Any], **kw: Any) -> Backbone:
    """An uninitialised backbone: `build_backbone(name, **kw)`, or `factory(**kw)`."""
    from tlkit.backbones import build_backbone

    if isinstance(name_or_factory, str):
        return build_backbone(name_or_factory, **kw)
    return name_or_factory(**kw)


def check_backbone(
    name_or_factory: str | Callable[..., Any],
    *,
    size: int = 64,
    strides: Sequence[int] = TASK_STRIDES,
    prune: bool = True,
    export: bool = True,
    seed: int = 0,
) -> Backbone:
    """Assert that a backbone honours the `tlkit.backbones.Backbone` contract the tasks rely on:

    - it is a `Backbone` with `out_channels`, `out_stride`, `block_names` and a known `default_preprocess`;
    - hybridized (the symbol graph that export and pruning trace), forward gives (N, out_channels, size/32,
      size/32) finite features, and backward reaches the first layer's weights;
    - at every stride in `strides` the features are (N, out_channels, ceil(size/stride), ...) with the same
      parameters (names and shapes) as at stride 32, so pretrained weights load at any stride;
    - `freeze_prefixes` of each block names real parameters, the blocks do not overlap and together cover every
      parameter, and `freeze` stops the gradient of exactly the frozen block;
    - `prune`: a classifier on it (global pool + dense) prunes with the structured pruner, and the pruned graph
      computes what the original does with the removed channels zeroed (`tlkit.testing.pruning`);
    - `export`: that classifier exports to ONNX and onnxruntime matches MXNet (`tlkit.testing.export`).

    `size`: the input side (a multiple of 32). Returns the stride-32 backbone, initialised.
    """
    import mxnet as mx

    from tlkit.backbones import Backbone
    from tlkit.backbones.base import PREPROCESS_MODES

    label = name_or_factory if isinstance(name_or_factory, str) else getattr(name_or_factory, "__name__", "factory")
    assert size % 32 == 0, f"size must be a multiple of 32, got {size}"
    mx.random.seed(seed)
    bb = build(name_or_factory, out_stride=32)
    assert isinstance(bb, Backbone), f"{label}: the builder returned {type(bb).__name__}, not a tlkit Backbone"
    assert bb.out_stride == 32, f"{label}: out_stride {bb.out_stride}, asked for 32"
    assert bb.out_channels > 0, f"{label}: out_channels must be set (got {bb.out_channels})"
    assert bb.block_names, f"{label}: block_names is empty (freeze_blocks indexes them; block 0 = the stem)"
    assert bb.default_preprocess in PREPROCESS_MODES, f"{label}: default_preprocess {bb.default_preprocess!r}"
    bb.initialize(mx.init.Xavier())
    bb.hybridize()
    x = mx.nd.array(np.random.default_rng(seed).uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    with mx.autograd.record():
        y = bb(x)
        loss = (y * y).mean()
    loss.backward()
    assert y.shape == (2, bb.out_channels, size // 32, size // 32), (
        f"{label}: stride-32 features {y.shape}, expected {(2, bb.out_channels, size // 32, size // 32)}"
    )
    assert np.isfinite(y.asnumpy()).all(), f"{label}: non-finite features"
    params = bb._collect_params_with_prefix()
    first = next(n for n in params if n.endswith("weight"))
    assert float(mx.nd.abs(params[first].grad()).sum().asscalar()) > 0, f"{label}: no gradient reached {first}"
    shapes = {n: p.shape for n, p in params.items()}

    for stride in strides:
        if stride != 32:
            _check_stride(name_or_factory, label, stride, size, shapes)
    _check_freeze_blocks(bb, label, x)
    if prune or export:
        _check_prune_and_export(bb, label, size, seed, prune=prune, export=export)
    return bb


def _check_stride(name_or_factory: Any, label: str, stride: int, size: int, shapes: dict[str, Any]) -> None:
    import mxnet as mx

    bb = build(name_or_factory, out_stride=stride)
    assert bb.out_stride == stride, f"{label}: out_stride {bb.out_stride}, asked for {stride}"
    bb.initialize(mx.init.Xavier())
    y = bb(mx.nd.random.uniform(-1, 1, (1, 3, size, size)))
    side = math.ceil(size / stride)
    assert y.shape == (1, bb.out_channels, side, side), (
        f"{label}: stride-{stride} features {y.shape}, expected {(1, bb.out_channels, side, side)}"
    )
    assert np.isfinite(y.asnumpy()).all(), f"{label}: non-finite features at stride {stride}"
    got = {n: p.shape for n, p in bb._collect_params_with_prefix().items()}
    assert got == shapes, (
        f"{label}: stride {stride} changes the parameters (only the resolution may change, so weights load at "
        f"any stride): {sorted(set(got) ^ set(shapes)) or 'same names, other shapes'}"
    )


def _check_freeze_blocks(bb: Backbone, label: str, x: Any) -> None:
    import mxnet as mx

    params = bb._collect_params_with_prefix()
    seen: set[str] = set()
    for b in range(len(bb.block_names)):
        prefixes = bb.freeze_prefixes([b])
        for p in prefixes:
            assert any(n.startswith(p) for n in params), (
                f"{label}: freeze prefix {p!r} (block {b}) matches no parameter"
            )
        covered = {n for n in params if n.startswith(tuple(prefixes))}
        assert not covered & seen, f"{label}: block {b} ({bb.block_names[b]}) overlaps an earlier block"
        seen |= covered
    assert seen == set(params), f"{label}: no freeze block covers {sorted(set(params) - seen)[:5]}"

    frozen = set(bb.freeze([0]))
    try:
        with mx.autograd.record():
            loss = bb(x).sum()
        loss.backward()
        stem = {n for n in params if n.startswith(tuple(bb.freeze_prefixes([0])))}
        assert frozen == stem, f"{label}: freeze([0]) froze {sorted(frozen ^ stem)[:5]} wrongly"
        trained = [n for n, p in params.items() if p.grad_req != "null" and n.endswith("weight")]
        assert trained, f"{label}: freezing the stem left nothing to train"
        assert any(float(mx.nd.abs(params[n].grad()).sum().asscalar()) > 0 for n in trained), (
            f"{label}: no gradient reaches the unfrozen blocks"
        )
    finally:
        for n in frozen:
            params[n].grad_req = "write"


def _check_prune_and_export(bb: Backbone, label: str, size: int, seed: int, *, prune: bool, export: bool) -> None:
    import mxnet as mx

    from tlkit.backbones.base import ImageNetClassifier

    net = ImageNetClassifier(bb, classes=4)
    net.output.initialize(mx.init.Xavier())
    shape = (3, size, size)
    if prune:
        from tlkit.model_io import symbol_block
        from tlkit.testing.pruning import assert_prune_equivalent

        result = assert_prune_equivalent(net, shape, threshold=0.5, granularity=1, min_filters=1, seed=seed)
        net = symbol_block(result.symbol_json, result.params)  # what a user exports: the pruned model
    if export:
        from tlkit.testing.export import assert_onnx_matches

        meta = {
            "task": "classification",
            "arch": label,
            "classes": [f"c{i}" for i in range(4)],
            "input_shape": list(shape),
            "preprocessing": {"mode": bb.default_preprocess},
        }
        assert_onnx_matches(net, shape, meta=meta, batch_sizes=(1, 2), seed=seed)
