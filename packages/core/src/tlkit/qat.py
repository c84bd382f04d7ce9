"""Quantization-aware training (TLT's `training_config.enable_qat`) and its INT8 export.

`prepare_qat(net)` rewrites a network's symbol graph (a Gluon network traced once, or a pruned graph) so
that every Convolution and FullyConnected computes on int8-quantized values, as TensorRT will run it:

- weights: per output channel, symmetric, scale = max|w_c| / 127, recomputed every step;
- activations (the data input of each conv/dense layer): per tensor, symmetric int8 [-128, 127],
  scale = amax / 127, with `amax` a parameter of the network (`<layer>.qat_in.amax`), initialised from
  the data (`calibrate_qat`: the mean over a few batches of the batch max |x|) and then learned;
- straight-through gradients: rounding passes the gradient unchanged (clipped values get none); amax
  gets LSQ's gradient (Esser et al. 2020: from rounding error inside the range, from clipping outside),
  scaled by 1/sqrt(127 * features) so it moves slowly beside the weights.

A tensor read by several layers is quantized once (one amax), which is also what a calibration cache
can express. The result is an ordinary "graph" model (a SymbolBlock built from standard MXNet operators):
it trains, checkpoints, resumes, validates and evaluates like a pruned graph, and `meta["qat"]` marks it.
Parameters keep their structural names (`backbone.features.0.weight`), so frozen layers still match.

Export (`qat_int8_onnx`): the fake-quantization is stripped (`strip_qat`) to the float graph, which is
exported to ONNX as usual; then each conv/dense input gets QuantizeLinear/DequantizeLinear with the
learned scale and each weight becomes per-channel int8 behind a DequantizeLinear, after BatchNorm is
folded into the convolutions (per-channel symmetric quantization commutes with that per-channel
scaling, so the int8 weights are exactly the ones trained). No calibration data is needed. The same
scales are written as a TensorRT calibration cache (`cal.bin`) and, on request, TAO's
`--cal_json_file` ({"tensor_scales": {tensor: amax}}).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError, SpecError, TlkitError

TAG = ".qat_"  # in the name of every node and parameter QAT adds
QUANTIZED_OPS = ("Convolution", "FullyConnected")
ACT_QMIN, ACT_QMAX = -128, 127  # int8, as ONNX QuantizeLinear saturates
W_QMAX = 127  # symmetric weights: [-127, 127]
AMAX_FLOOR = 1e-5
CALIBRATION_BATCHES = 8


@dataclass
class QatPoint:
    """One quantized activation: the tensor (graph entry name), its amax parameter and the layers reading it."""

    amax: str
    source: str
    consumers: list[str]
    features: int  # elements per sample: scales amax's gradient


# -- symbol graph JSON helpers ------------------------------------------------------------------------


class _Builder:
    """Rebuild a symbol-graph node list in topological order, emitting new nodes on the way."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []

    def add(self, op: str, name: str, inputs: list[list[int]], **attrs: Any) -> list[int]:
        node: dict[str, Any] = {"op": op, "name": name, "inputs": inputs}
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        return [len(self.nodes) - 1, 0, 0]

    def var(self, name: str, shape: tuple[int, ...]) -> list[int]:
        node = {"op": "null", "name": name, "inputs": [], "attrs": {"__shape__": str(tuple(shape))}}
        self.nodes.append(node)
        return [len(self.nodes) - 1, 0, 0]

    def graph(self, heads: list[list[int]], attrs: dict) -> dict:
        return {
            "nodes": self.nodes,
            "arg_nodes": [i for i, n in enumerate(self.nodes) if n["op"] == "null"],
            "heads": heads,
            "attrs": attrs,
        }


def _reachable(graph: dict) -> dict:
    """The graph without nodes the heads do not depend on (indices renumbered)."""
    nodes = graph["nodes"]
    keep, stack = set(), [h[0] for h in graph["heads"]]
    while stack:
        i = stack.pop()
        if i not in keep:
            keep.add(i)
            stack.extend(e[0] for e in nodes[i]["inputs"])
    remap, out = {}, _Builder()
    for i, node in enumerate(nodes):
        if i in keep:
            remap[i] = len(out.nodes)
            out.nodes.append({**node, "inputs": [[remap[e[0]], e[1], e[2]] for e in node["inputs"]]})
    return out.graph([[remap[h[0]], h[1], h[2]] for h in graph["heads"]], graph.get("attrs", {}))


def _entry_names(sym: Any) -> dict[tuple[int, int], str]:
    """(node index, output index) -> the internal output name MXNet uses for it."""
    graph = json.loads(sym.tojson())
    outputs = sym.get_internals().list_outputs()
    names: dict[tuple[int, int], str] = {}
    for i, node in enumerate(graph["nodes"]):
        if node["op"] == "null":
            names[(i, 0)] = node["name"]
            continue
        mine = [o for o in outputs if o == f"{node['name']}_output" or o.startswith(f"{node['name']}_output")]
        for k, o in enumerate(mine if len(mine) > 1 else mine[:1]):
            names[(i, k)] = o
    return names


def _per_sample_sizes(sym: Any, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Internal output name -> elements per sample, from shape inference at batch 1 ({} if it fails)."""
    internals = sym.get_internals()
    try:
        _, shapes, _ = internals.infer_shape_partial(data=(1, *input_shape))
    except Exception:  # noqa: BLE001 - MXNet raises plain MXNetError/ValueError: only a hint is lost
        return {}
    return {name: int(np.prod(s)) for name, s in zip(internals.list_outputs(), shapes or []) if s and all(s)}


def is_qat_graph(symbol_json: str) -> bool:
    return any(TAG in n["name"] for n in json.loads(symbol_json)["nodes"])


def _point_name(graph: dict, node: dict) -> str:
    """A stable name for a conv/dense layer: its weight parameter's name without 'weight'."""
    w = graph["nodes"][node["inputs"][1][0]] if len(node["inputs"]) > 1 else None
    if w is not None and w["op"] == "null":
        base = w["name"].removesuffix("weight").rstrip("._")
        if base:
            return base
    return node["name"]


# -- inserting and removing fake quantization -------------------------------------------------------


def insert_fake_quant(symbol_json: str, input_shape: tuple[int, ...]) -> tuple[str, list[QatPoint]]:
    """The QAT graph of a float graph (see the module doc) and its quantized activations."""
    import mxnet as mx

    sym = mx.sym.load_json(symbol_json)
    graph = json.loads(symbol_json)
    entry_names = _entry_names(sym)
    sizes = _per_sample_sizes(sym, input_shape)
    out = _Builder()
    remap: dict[int, int] = {}
    quantized: dict[tuple[int, int], list[int]] = {}  # source entry (old indices) -> fake-quant output entry
    points: dict[tuple[int, int], QatPoint] = {}
    for i, node in enumerate(graph["nodes"]):
        inputs = [[remap[e[0]], e[1], e[2]] for e in node["inputs"]]
        if node["op"] in QUANTIZED_OPS and len(inputs) >= 2:
            point = _point_name(graph, node)
            src = (node["inputs"][0][0], node["inputs"][0][1])
            if src not in quantized:
                name = entry_names.get(src, f"{point}_input")
                features = sizes.get(name, 0) or 4096  # shape unknown: a typical feature-map size
                quantized[src] = _fake_quant_activation(out, inputs[0], f"{point}.qat_in", features)
                points[src] = QatPoint(f"{point}.qat_in.amax", name, [], features)
            points[src].consumers.append(node["name"])
            inputs[0] = quantized[src]
            inputs[1] = _fake_quant_weight(out, inputs[1], f"{point}.qat_w")
        remap[i] = len(out.nodes)
        out.nodes.append({**node, "inputs": inputs})
    heads = [[remap[h[0]], h[1], h[2]] for h in graph["heads"]]
    if not points:
        raise TlkitError("enable_qat: the network has no Convolution or FullyConnected layer to quantize")
    return json.dumps(out.graph(heads, graph.get("attrs", {}))), list(points.values())


def _fake_quant_activation(b: _Builder, x: list[int], name: str, features: int) -> list[int]:
    """x -> s * round(clip(x / s, -128, 127)), s = amax / 127; STE for x, LSQ gradient for amax."""
    amax = b.var(f"{name}.amax", (1,))
    g = 1.0 / math.sqrt(W_QMAX * max(features, 1))
    # forward amax, backward g * grad: amax*g + BlockGrad(amax - amax*g)
    scaled = b.add("_mul_scalar", f"{name}.amax_g", [amax], scalar=g)
    rest = b.add("BlockGrad", f"{name}.amax_rest", [b.add("elemwise_sub", f"{name}.amax_sub", [amax, scaled])])
    amax_g = b.add("elemwise_add", f"{name}.amax_ste", [scaled, rest])
    clipped = b.add("clip", f"{name}.amax_clip", [amax_g], a_min=AMAX_FLOOR, a_max=1e6)
    scale = b.add("_div_scalar", f"{name}.scale", [clipped], scalar=float(W_QMAX))
    t = b.add("broadcast_div", f"{name}.div", [x, scale])
    c = b.add("clip", f"{name}.clip", [t], a_min=float(ACT_QMIN), a_max=float(ACT_QMAX))
    return _ste_round_and_scale(b, c, scale, name)


def _fake_quant_weight(b: _Builder, w: list[int], name: str) -> list[int]:
    """w -> per-output-channel s * round(w / s), s = max|w_c| / 127 (not differentiated); STE for w."""
    amax = b.add("max", f"{name}.amax", [b.add("abs", f"{name}.abs", [w])], axis=0, keepdims=True, exclude=True)
    scale = b.add(
        "_div_scalar", f"{name}.scale_raw", [b.add("BlockGrad", f"{name}.amax_const", [amax])], scalar=float(W_QMAX)
    )
    scale = b.add("_maximum_scalar", f"{name}.scale", [scale], scalar=1e-12)  # all-zero (pruned) channels
    t = b.add("broadcast_div", f"{name}.div", [w, scale])
    return _ste_round_and_scale(b, t, scale, name)


def _ste_round_and_scale(b: _Builder, c: list[int], scale: list[int], name: str) -> list[int]:
    """scale * (c + BlockGrad(round(c) - c)): rounds forward, passes the gradient straight through."""
    err = b.add("elemwise_sub", f"{name}.round_err", [b.add("round", f"{name}.round", [c]), c])
    q = b.add("elemwise_add", f"{name}.ste", [c, b.add("BlockGrad", f"{name}.round_const", [err])])
    return b.add("broadcast_mul", f"{name}.out", [q, scale])


def strip_fake_quant(symbol_json: str) -> tuple[str, dict[str, str]]:
    """(the float graph, {weight parameter name: amax parameter name}) of a QAT graph.

    Each input that reads a fake-quant output is rewired to the tensor that was quantized (followed back
    through the fake-quant nodes' first inputs); what then feeds nothing is dropped."""
    graph = json.loads(symbol_json)
    nodes = graph["nodes"]
    amax_of_weight: dict[str, str] = {}

    def source(e: list[int]) -> list[int]:
        while TAG in nodes[e[0]]["name"]:
            e = nodes[e[0]]["inputs"][0]
        return e

    for node in nodes:
        if TAG in node["name"] or not node["inputs"]:
            continue
        orig = list(node["inputs"])
        node["inputs"] = [source(e) for e in node["inputs"]]
        if node["op"] in QUANTIZED_OPS and len(orig) >= 2:
            data_q = nodes[orig[0][0]]["name"]
            weight = nodes[node["inputs"][1][0]]
            if data_q.endswith(".qat_in.out") and weight["op"] == "null":
                amax_of_weight[weight["name"]] = data_q.removesuffix(".out") + ".amax"
    return json.dumps(_reachable(graph)), amax_of_weight


# -- networks -----------------------------------------------------------------------------------------


def _structural_graph(net: Any, input_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    """(symbol JSON, {"arg:"/"aux:" name: array}) of a network, parameters under their structural names
    (`backbone.features.0.weight`, as the engine and frozen-layer prefixes name them) for Gluon networks."""
    from mxnet import gluon

    from tlkit.model_io import graph_of, symbol_params

    if isinstance(net, gluon.SymbolBlock):
        sym = net._cached_graph[1]
        return sym.tojson(), symbol_params(net, sym)
    symbol_json, params = graph_of(net, input_shape)
    rename = {p.name: structural for structural, p in net._collect_params_with_prefix().items()}
    graph = json.loads(symbol_json)
    for node in graph["nodes"]:
        if node["op"] == "null" and node["name"] in rename:
            node["name"] = rename[node["name"]]
    params = {k[:4] + rename.get(k[4:], k[4:]): v for k, v in params.items()}
    return json.dumps(graph), params


def prepare_qat(net: Any, input_shape: Iterable[int], ctx: Any = None) -> tuple[Any, list[QatPoint]]:
    """(the QAT network, its quantized activations) for a Gluon network or a graph (SymbolBlock).

    A graph that is already QAT is returned as it is (retraining a QAT model), with points []."""
    import mxnet as mx

    from tlkit.model_io import symbol_block

    shape = tuple(int(v) for v in input_shape)
    symbol_json, params = _structural_graph(net, shape)
    if is_qat_graph(symbol_json):
        return net, []
    qat_json, points = insert_fake_quant(symbol_json, shape)
    for p in points:
        params["arg:" + p.amax] = mx.nd.ones((1,))  # placeholder: calibrate_qat sets it from data
    return symbol_block(qat_json, params, ctx or mx.cpu()), points


def calibrate_qat(net: Any, points: list[QatPoint], batches: Iterable[Any], ctx: Any) -> dict[str, float]:
    """Set each amax to the mean over `batches` of the batch's max |x| (layers in inference mode, no
    fake quantization). `batches` yield input arrays (NCHW). Returns {amax name: value}."""
    import mxnet as mx
    from mxnet import gluon

    float_json, _ = strip_fake_quant(net._cached_graph[1].tojson())
    sym = mx.sym.load_json(float_json)
    internals = sym.get_internals()
    heads = [mx.sym.max(mx.sym.abs(internals[p.source])) for p in points]
    with warnings.catch_warnings():  # "Cannot decide type for ... data": the parameters carry the types
        warnings.simplefilter("ignore")
        calib = gluon.SymbolBlock(mx.sym.Group(heads), [mx.sym.var("data")], params=net.collect_params())
    sums, n = np.zeros(len(points)), 0
    for x in batches:
        outs = calib(x.as_in_context(ctx) if isinstance(x, mx.nd.NDArray) else mx.nd.array(x, ctx=ctx))
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        sums += np.array([float(o.asscalar()) for o in outs])
        n += 1
    if n == 0:
        raise TlkitError("enable_qat: no training batch to initialise the activation ranges from")
    values = {p.amax: max(float(s / n), AMAX_FLOOR * 10) for p, s in zip(points, sums)}
    params = net.collect_params()
    for name, v in values.items():
        params[name].set_data(mx.nd.array([v]))
    return values


def strip_qat(net: Any) -> tuple[Any, dict[str, float]]:
    """(the float network of a QAT graph, {weight parameter name: learned activation amax})."""
    import mxnet as mx

    from tlkit.model_io import symbol_block, symbol_params

    sym = net._cached_graph[1]
    float_json, amax_of_weight = strip_fake_quant(sym.tojson())
    params = symbol_params(net, sym)
    amax = {w: float(params["arg:" + a].asnumpy().reshape(-1)[0]) for w, a in amax_of_weight.items()}
    kept = {k: v for k, v in params.items() if TAG not in k}
    ctx = next(iter(net.collect_params().values())).list_ctx()[0]
    return symbol_block(float_json, kept, ctx or mx.cpu()), amax


def qat_meta(points: list[QatPoint]) -> dict[str, Any]:
    """What a QAT model file records under meta["qat"]."""
    return {
        "weights": "int8 symmetric, per output channel, scale max|w|/127",
        "activations": "int8 symmetric, per tensor, learned amax (scale amax/127)",
        "quantized_ops": list(QUANTIZED_OPS),
        "activations_quantized": len(points),
    }


# -- Q/DQ ONNX ------------------------------------------------------------------------------------------


def activation_ranges(model: Any, amax_of_weight: dict[str, float]) -> dict[str, float]:
    """{ONNX tensor: amax} for the data inputs of the Conv/Gemm/MatMul nodes whose weight was QAT-trained
    (the float ONNX keeps MXNet's parameter names for its initializers)."""
    ranges: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in amax_of_weight:
            amax = amax_of_weight[node.input[1]]
            if ranges.get(node.input[0], amax) != amax:
                raise ModelFileError(f"tensor {node.input[0]!r} has two learned ranges; the QAT graph is inconsistent")
            ranges[node.input[0]] = amax
    missing = set(amax_of_weight) - {n.input[1] for n in model.graph.node if len(n.input) > 1}
    if missing:
        raise ModelFileError(
            f"{len(missing)} QAT-trained layer(s) not found in the exported ONNX, e.g. {sorted(missing)[0]!r}"
        )
    return ranges


def _weight_axis(node: Any) -> int:
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm":
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return 0


def insert_qdq(model: Any, ranges: dict[str, float]) -> Any:
    """Q/DQ on every Conv/Gemm/MatMul data input named in `ranges` (int8, scale amax/127, zero point 0)
    and per-channel int8 weights behind DequantizeLinear. `model` should have BatchNorm folded already."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    done: dict[str, str] = {}  # activation -> its dequantized name
    new_nodes, new_inits, dropped = [], [], set()
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and node.input[0] in ranges:
            x = node.input[0]
            if x not in done:
                scale = np.float32(max(ranges[x], AMAX_FLOOR) / W_QMAX)
                new_inits += [
                    numpy_helper.from_array(np.array(scale, np.float32), f"{x}_scale"),
                    numpy_helper.from_array(np.array(0, np.int8), f"{x}_zero_point"),
                ]
                new_nodes += [
                    helper.make_node(
                        "QuantizeLinear",
                        [x, f"{x}_scale", f"{x}_zero_point"],
                        [f"{x}_quantized"],
                        name=f"{x}_QuantizeLinear",
                    ),
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{x}_quantized", f"{x}_scale", f"{x}_zero_point"],
                        [f"{x}_dequantized"],
                        name=f"{x}_DequantizeLinear",
                    ),
                ]
                done[x] = f"{x}_dequantized"
            node.input[0] = done[x]
            w = node.input[1]
            if w in inits:
                axis = _weight_axis(node)
                arr = numpy_helper.to_array(inits[w]).astype(np.float32)
                q, w_scale = quantize_weight(arr, axis)
                new_inits += [
                    numpy_helper.from_array(q, f"{w}_quantized"),
                    numpy_helper.from_array(w_scale, f"{w}_scale"),
                    numpy_helper.from_array(np.zeros(w_scale.shape, np.int8), f"{w}_zero_point"),
                ]
                new_nodes.append(
                    helper.make_node(
                        "DequantizeLinear",
                        [f"{w}_quantized", f"{w}_scale", f"{w}_zero_point"],
                        [f"{w}_dequantized"],
                        name=f"{w}_DequantizeLinear",
                        axis=axis,
                    )
                )
                node.input[1] = f"{w}_dequantized"
                uses[w] -= 1
                if uses[w] == 0:
                    dropped.add(w)
        new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    keep = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(keep + new_inits)
    onnx.checker.check_model(model)
    return model


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 values, float32 scales) of `w`, symmetric per channel along `axis`, scale max|w_c|/127
    (an all-zero channel gets scale 1)."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    amax = np.abs(w).max(axis=other) if other else np.abs(w)
    scale = np.where(amax > 0, amax / W_QMAX, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -W_QMAX, W_QMAX).astype(np.int8)
    return q, scale


def qat_int8_onnx(
    model: Any,
    amax_of_weight: dict[str, float],
    output: str | os.PathLike,
    *,
    cal_cache_file: str | os.PathLike | None = None,
    cal_json_file: str | os.PathLike | None = None,
    trt_version: str | int = "10.x",
) -> Path:
    """Write the Q/DQ ONNX of a float ONNX `model` (ModelProto) exported from a QAT model, with the learned
    ranges; also the TensorRT calibration cache and TAO's json of the same ranges when asked."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tlkit.export.onnx_export import read_metadata_props, set_metadata
    from tlkit.export.ranges import save_ranges_json
    from tlkit.export.trt_cache import write_trt_cache
    from tlkit.io import atomic_write_bytes

    if max(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) < 13:
        raise SpecError("int8 export of a QAT model needs --opset 13 or later (per-channel DequantizeLinear)")
    ranges = activation_ranges(model, amax_of_weight)
    meta = read_metadata_props(model)
    with tempfile.TemporaryDirectory(prefix="tlkit-qat-") as tmp:
        src, pre = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx")
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # folds BatchNorm into Conv
        qmodel = insert_qdq(onnx.load(str(pre)), ranges)
    if meta:
        set_metadata(qmodel, {**meta, "data_type": "int8", "qdq_format": "tensorrt", "quantization": "qat"})
    atomic_write_bytes(output, qmodel.SerializeToString())
    if cal_cache_file:
        write_trt_cache(ranges, cal_cache_file, trt_version)
    if cal_json_file:
        save_ranges_json(ranges, cal_json_file)
    return Path(output)
