"""A reusable correctness check for pruning, for the core's tests and every task package's tests.

    from tlkit.testing.pruning import assert_prune_equivalent
    result = assert_prune_equivalent(net, (3, 64, 64), threshold=0.5)

The property: the pruned model computes exactly what the original model computes when the removed
channels are zeroed where they are consumed (the input-channel entries of the Convolution /
FullyConnected / Deconvolution weights that read them). That pins down every slice the pruner makes: a
wrong filter, BatchNorm, Concat offset or Flatten expansion changes the pruned model's output.
"""

from __future__ import annotations

import json
from typing import Any, cast

import numpy as np


def randomize_params(symbol_json: str, params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Copy of `params` with non-uniform filter norms, so a threshold actually removes filters.

    Conv/FC/Deconv weights are scaled per output filter by U(0.05, 1); BatchNorm gets gamma U(0.5, 1.5),
    beta/mean N(0, 0.2), var U(0.5, 1.5). Other tensors are left as they are.
    """
    import mxnet as mx

    rng = np.random.default_rng(seed)
    g = json.loads(symbol_json)
    nodes = g["nodes"]

    def key(entry) -> str | None:
        name = nodes[entry[0]]["name"]
        for p in ("arg:", "aux:"):
            if p + name in params:
                return p + name
        return None

    out = dict(params)
    for node in nodes:
        ins = [key(e) for e in node["inputs"]]
        if node["op"] in ("Convolution", "FullyConnected", "Deconvolution") and len(ins) > 1 and ins[1]:
            w = params[ins[1]].asnumpy()
            axis = 1 if node["op"] == "Deconvolution" else 0
            shape = [1] * w.ndim
            shape[axis] = w.shape[axis]
            w = w * rng.uniform(0.05, 1.0, size=shape).astype(w.dtype)
            if not np.any(w):  # e.g. zero-initialised: give it values
                w = rng.normal(0, 0.1, size=w.shape).astype(w.dtype) * rng.uniform(0.05, 1.0, size=shape)
            out[ins[1]] = mx.nd.array(w, dtype=w.dtype)
        elif node["op"] == "BatchNorm" and len(ins) == 5 and all(ins[1:]):
            gamma, beta, mean, var = cast("list[str]", ins[1:])  # all set: checked above
            c = params[gamma].shape[0]
            out[gamma] = mx.nd.array(rng.uniform(0.5, 1.5, c))
            out[beta] = mx.nd.array(rng.normal(0, 0.2, c))
            out[mean] = mx.nd.array(rng.normal(0, 0.2, c))
            out[var] = mx.nd.array(rng.uniform(0.5, 1.5, c))
    return out


def masked_params(params: dict[str, Any], input_masks: dict[str, tuple[int, np.ndarray, int]]) -> dict[str, Any]:
    """The original params with every removed input channel's weights set to zero."""
    import mxnet as mx

    out = dict(params)
    for key, (axis, kept, _size) in input_masks.items():
        w = params[key].asnumpy().copy()
        drop = np.setdiff1d(np.arange(w.shape[axis]), kept)
        index: list[slice | np.ndarray] = [slice(None)] * w.ndim
        index[axis] = drop
        w[tuple(index)] = 0
        out[key] = mx.nd.array(w, dtype=w.dtype)
    return out


def _internal_block(symbol_json: str, params: dict[str, Any], nodes: list[str]) -> Any:
    """A SymbolBlock whose outputs are the given internal nodes' outputs (e.g. a detector's pre-NMS heads)."""
    import os
    import tempfile

    import mxnet as mx

    internals = mx.sym.load_json(symbol_json).get_internals()
    names = set(internals.list_outputs())
    outs = []
    for n in nodes:
        name = n if n in names else f"{n}_output"
        assert name in names, f"compare_nodes: no node {n!r} in the graph"
        outs.append(internals[name])
    net = mx.gluon.SymbolBlock(mx.sym.Group(outs), [mx.sym.var("data")])
    with tempfile.TemporaryDirectory() as tmp:
        mx.nd.save(os.path.join(tmp, "p"), params)
        net.collect_params().load(os.path.join(tmp, "p"), ignore_extra=True)
    return net


def _outputs(net: Any, x: Any) -> list[np.ndarray]:
    y = net(x)
    ys = y if isinstance(y, (list, tuple)) else [y]
    flat: list[Any] = []
    for v in ys:
        flat.extend(v if isinstance(v, (list, tuple)) else [v])
    return [v.asnumpy() for v in flat]


def assert_prune_equivalent(
    net: Any,
    input_shape: tuple[int, ...],
    *,
    randomize: bool = True,
    seed: int = 0,
    batch: int = 2,
    rtol: float = 1e-4,
    expect_pruned: bool = True,
    compare_nodes: list[str] | None = None,
    **opts: Any,
):
    """Prune `net` (a Gluon HybridBlock, initialised) with `opts` (`prune_graph` keywords) and assert that
    the pruned graph equals the masked original on a random batch. Returns the `PruneResult`.

    `rtol` is relative to the largest output magnitude. `expect_pruned` also asserts that parameters
    were removed (so the check is not vacuous). `compare_nodes` compares these internal nodes' outputs
    instead of the network outputs (detectors: the head convolutions before NMS, whose ties on random
    weights make post-NMS outputs unstable).
    """
    import mxnet as mx

    from tlkit.model_io import graph_of, symbol_block
    from tlkit.pruning.graph import prune_graph

    symbol_json, params = graph_of(net, tuple(input_shape))
    if randomize:
        params = randomize_params(symbol_json, params, seed)
    result = prune_graph(symbol_json, params, input_shape=input_shape, **opts)
    report = result.report
    if expect_pruned:
        assert report.params_after < report.params_before, (
            f"nothing was pruned with {opts} (ratio {report.ratio}); the check would be vacuous"
        )
    x = mx.nd.array(np.random.default_rng(seed + 1).normal(0, 1, size=(batch, *input_shape)).astype("float32"))
    masked = masked_params(params, result.input_masks)
    if compare_nodes:
        ref = _outputs(_internal_block(symbol_json, masked, list(compare_nodes)), x)
        got = _outputs(_internal_block(result.symbol_json, result.params, list(compare_nodes)), x)
    else:
        ref = _outputs(symbol_block(symbol_json, masked), x)
        got = _outputs(symbol_block(result.symbol_json, result.params), x)
    assert len(ref) == len(got), f"pruned model has {len(got)} outputs, original {len(ref)}"
    for i, (a, b) in enumerate(zip(ref, got)):
        assert a.shape == b.shape, f"output {i}: pruned shape {b.shape} != original {a.shape}"
        scale = max(float(np.abs(a).max()), 1e-12)
        err = float(np.abs(a - b).max()) / scale
        assert err <= rtol, f"output {i}: pruned differs from masked original by {err:.3g} (relative), rtol {rtol}"
    return result
