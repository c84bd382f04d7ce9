"""Q/DQ ONNX: the TRT >= 10.1 / TRT 11 INT8 artefact, from an FP32 ONNX and its activation ranges.

`quantize_qdq` writes per-channel symmetric int8 weights and per-tensor symmetric int8 activations with scale
amax/127 (qdq_format "tensorrt"); or, with qdq_format "onnxruntime", uint8 activations ([0, amax] for tensors
that were never negative in calibration, [-amax, amax] otherwise), the layout onnxruntime's x86 kernels fuse
completely. It is `onnxruntime.quantization.quantize_static(QuantFormat.QDQ)` fed OUR ranges through its
calibration cache (no second calibration by onnxruntime), so the Q/DQ scales and the TensorRT cache agree.

Output heads stay in float unless asked (`quantize_output_heads=True`): `output_head_nodes` finds, for every
graph output, the last weighted layer (Conv/ConvTranspose/Gemm/MatMul) on each path back from it, plus every
node after those (softmax, sigmoid, box decoding, NMS). Their outputs get no Q/DQ and no cache entry (TensorRT
then runs the layers producing them in float), and their weights stay float in the Q/DQ graph. Quantizing
them clips what the application reads: entropy calibration of a trained classifier's logits picked a range
of +-0.25 and every prediction became the same class.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import SpecError, TlkitError
from tlkit.export.ranges import Ranges, _activation_names, _as_model

QDQ_FORMATS = ("tensorrt", "onnxruntime")

# -- output heads ----------------------------------------------------------------------------------

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def output_head_nodes(onnx_model: Any) -> list[str]:
    """Names of the nodes of the output heads: walking back from each graph output, the first weighted node
    (Conv/ConvTranspose/Gemm/MatMul) met on every path, plus every node downstream of those. Graph order."""
    model = _as_model(onnx_model)
    return [model.graph.node[i].name for i in sorted(_head_indices(model))]


def _head_indices(model: Any) -> set[int]:
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    heads: set[int] = set()
    seen: set[int] = set()
    stack = [producer[o.name] for o in model.graph.output if o.name in producer]
    while stack:  # backwards from the outputs, stopping at the first weighted node of each path
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        if nodes[i].op_type in WEIGHTED_OPS:
            heads.add(i)
            continue
        stack += [producer[t] for t in nodes[i].input if t in producer]
    found, stack = set(heads), list(heads)
    while stack:  # forwards from the heads: everything after them
        i = stack.pop()
        for out in nodes[i].output:
            for j in consumers.get(out, []):
                if j not in found:
                    found.add(j)
                    stack.append(j)
    return found


def _head_tensors(model: Any) -> set[str]:
    """The tensors the output heads produce."""
    return {out for i in _head_indices(model) for out in model.graph.node[i].output}


def without_output_heads(ranges: dict[str, float], onnx_model: Any) -> Ranges:
    """`ranges` less the tensors the output heads produce (what the TensorRT cache gets by default)."""
    drop = _head_tensors(_as_model(onnx_model))
    return Ranges(
        {k: v for k, v in ranges.items() if k not in drop},
        [n for n in getattr(ranges, "nonnegative", ()) if n not in drop],
    )


def _name_nodes(model: Any) -> None:
    """Give unnamed nodes unique names (quantization excludes nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


def quantize_qdq(
    onnx_fp32: Any,
    ranges: dict[str, float],
    output: str | os.PathLike,
    *,
    reduce_range: bool = True,
    qdq_format: str = "tensorrt",
    quantize_output_heads: bool = False,
) -> Path:
    """Write a Q/DQ int8 ONNX of `onnx_fp32` (path or ModelProto) using `ranges` ({tensor: amax}).

    Weights: per-channel symmetric int8. Activations, `qdq_format` "tensorrt" (default): per-tensor
    symmetric int8, scale amax/127 (TensorRT accepts only zero points of 0). "onnxruntime": per-tensor
    uint8, [0, amax] for the tensors in `ranges.nonnegative` and [-amax, amax] for the rest: onnxruntime's
    x86 CPU kernels are u8 x s8, so with uint8 activations every Conv/Add/pool fuses into its QLinear op and
    ReLU6 folds into the quantization ([0, amax] clips at 0); with int8 activations onnxruntime leaves
    Clip, Add and some Conv nodes in float between DequantizeLinear/QuantizeLinear, which makes it slower
    than FP32 on CPU (benchmarks/acceptance/export.json, fine-tuned EfficientNet-Lite0 96 px, one thread,
    batch 1 CPU time vs FP32: "tensorrt" 0.80x, "onnxruntime" 1.75x; same top-1). TensorRT rejects the
    "onnxruntime" format.
    The graph is first pre-processed by onnxruntime (BatchNorm folded into Conv), so Q/DQ sits where
    TensorRT and onnxruntime fuse it.

    The output heads (`output_head_nodes`) stay float unless `quantize_output_heads`: no Q/DQ on their weights
    or outputs, so no range is needed for the tensors they produce.

    `reduce_range=True` (default) keeps the weights of GEMM-backed Conv/Gemm nodes to 7 bits: onnxruntime's
    int8 GEMM on x86 CPUs without VNNI adds u8*s8 products pairwise into int16 and saturates otherwise
    (measured: a 3-layer net's logits off by 65 % of their range, 0.5 % with it). Depthwise convs keep full
    8-bit weights: onnxruntime runs them with a separate int32 kernel that does not saturate, and their few
    weights per channel (9 or 25) lose too much at 7 bits (fine-tuned EfficientNet-Lite0 on
    sign-language-digits, entropy calibration: 97.8 % top-1 with every weight at 7 bits, 99.0 % with
    depthwise at 8 bits, FP32 99.5 %). TensorRT runs either; pass False for a TensorRT-only artefact with
    all weights at 8 bits.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tlkit.export.onnx_export import read_metadata_props, set_metadata

    if qdq_format not in QDQ_FORMATS:
        raise SpecError(f"qdq_format {qdq_format!r} is not one of {', '.join(QDQ_FORMATS)}")
    model = _as_model(onnx_fp32)
    meta = read_metadata_props(model)
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="tlkit-qdq-") as tmp:
        src, pre, cache = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "ranges.json")
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        _name_nodes(pre_model)
        onnx.save(pre_model, str(pre))
        excluded = [] if quantize_output_heads else output_head_nodes(pre_model)
        float_tensors = set() if quantize_output_heads else _head_tensors(pre_model)
        missing = [n for n in _activation_names(pre_model) if n not in ranges and n not in float_tensors]
        if missing:
            raise TlkitError(
                f"no calibration range for {len(missing)} tensor(s) of the model, e.g. {missing[0]!r}: "
                "were the ranges (or the calibration cache) made for another model?"
            )
        # full 8-bit weights for depthwise convs (see the docstring); TensorQuantOverrides is per initializer
        overrides = (
            {w: [{"axis": 0, "reduce_range": False}] for w in _depthwise_weights(pre_model)} if reduce_range else {}
        )  # "axis" keeps them per-channel (without it they become per-tensor)
        uint8 = qdq_format == "onnxruntime"
        nonneg = getattr(ranges, "nonnegative", set()) if uint8 else set()
        data = {
            n: (np.array(0.0 if n in nonneg else -v, np.float32), np.array(v, np.float32)) for n, v in ranges.items()
        }
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
        dst = Path(tmp, "qdq.onnx")
        quantize_static(
            str(pre),
            str(dst),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if uint8 else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            nodes_to_exclude=excluded,
            # Biases stay float: TensorRT accepts only 8-bit DequantizeLinear inputs, not int32 biases.
            extra_options={
                "ActivationSymmetric": not uint8,
                "WeightSymmetric": True,
                "QuantizeBias": False,
                "TensorQuantOverrides": overrides,
            },
        )
        qmodel = onnx.load(str(dst))
    if meta:
        set_metadata(
            qmodel,
            {**meta, "data_type": "int8", "qdq_format": qdq_format, "int8_output_heads": bool(quantize_output_heads)},
        )
    from tlkit.io import atomic_write_bytes

    atomic_write_bytes(output, qmodel.SerializeToString())
    return output


def _depthwise_weights(model: Any) -> list[str]:
    """Weight initializers of depthwise Conv nodes (one input and one output channel per group)."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = list(inits[node.input[1]].dims)
        if group > 1 and len(dims) >= 2 and dims[0] == group and dims[1] == 1:
            out.append(node.input[1])
    return out
