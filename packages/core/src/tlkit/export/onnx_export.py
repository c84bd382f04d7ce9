"""ONNX export of tlkit models (MXNet's `mx2onnx`), with stable names and embedded metadata.

What the exported file always has (mxnet-notes "ONNX export"):
- a dynamic batch dimension named "batch" (a fixed-shape export breaks YOLOv3 in onnxruntime);
  `static_batch_size > 0` pins it afterwards;
- input "input", outputs "output" (or meta["output_names"] for multi-output tasks);
- no initializers listed as graph inputs (they block onnxruntime's constant folding);
- opset as asked (MXNet emits opset 12 or 13 ops; higher opsets go through onnx's version converter)
  and the lowest IR version that opset needs, so older runtimes load it too;
- output shapes filled in from a probe run (Triton/DeepStream configs read them);
- the model's metadata as JSON under the metadata_props key "tlkit" (`read_onnx_metadata`);
- classifiers (DeepStream network type 1: the classification task) end in a Softmax: the output is class
  probabilities (metadata "output_activation": "softmax"), so DeepStream's classifier-threshold and Triton's
  classification extension mean probabilities, as TLT's `predictions/Softmax` output does.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tlkit import __version__
from tlkit.errors import ModelFileError, SpecError, TlkitError
from tlkit.export.preprocess import resolve_preprocessing
from tlkit.io import atomic_write_bytes
from tlkit.model_card import write_card_files

METADATA_KEY = "tlkit"
INPUT_NAME = "input"
DEFAULT_OPSET = 13
MXNET_OPSETS = (12, 13)  # opsets MXNet's converter emits natively
DATA_TYPES = ("fp32", "fp16", "int8")


class ExportError(TlkitError):
    """A model could not be exported (or the export does not load)."""


def _import_onnx():
    import onnx

    return onnx


def _load_source(model: Any, meta: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """(gluon block, meta) from a .tlk path or a block + meta."""
    if isinstance(model, (str, os.PathLike)):
        from tlkit.model_io import load_net

        net, file_meta = load_net(model)
        return net, {**file_meta, **(meta or {})}
    return model, dict(meta or {})


def _symbol_and_params(net: Any, input_shape: tuple[int, ...]) -> tuple[Any, dict[str, Any]]:
    import mxnet as mx

    net.hybridize()
    try:
        net(mx.nd.zeros((1, *input_shape)))
    except (mx.base.MXNetError, ValueError, AssertionError) as err:
        first = next((ln for ln in str(err).splitlines() if "Check failed" in ln), str(err).splitlines()[0])
        raise ExportError(
            f"the network does not run on input (1, {', '.join(map(str, input_shape))}): {first.strip()[:300]}"
        ) from None
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "net")
        net.export(prefix, epoch=0)
        sym, arg, aux = mx.model.load_checkpoint(prefix, 0)
    return sym, {**arg, **aux}


def is_classifier(meta: dict[str, Any]) -> bool:
    """A classifier in DeepStream's sense (network type 1): its export ends in a Softmax."""
    from tlkit.export.deploy import network_type

    return network_type(meta) == 1


def _rename(graph: Any, old: str, new: str) -> None:
    """Rename a value everywhere it appears in `graph` (node inputs/outputs, graph I/O, value_info)."""
    if old == new:
        return
    for node in graph.node:
        for i, n in enumerate(node.input):
            if n == old:
                node.input[i] = new
        for i, n in enumerate(node.output):
            if n == old:
                node.output[i] = new
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.name == old:
            vi.name = new


def _set_dim(dim: Any, value: int | str) -> None:
    if isinstance(value, str):
        dim.dim_param = value
    else:
        dim.dim_value = int(value)


def _convert(sym: Any, params: dict[str, Any], input_shape: tuple[int, ...], opset: int) -> Any:
    onnx = _import_onnx()
    # mx.onnx.export_model hides the converter's opset_version (it always stamps onnx's newest opset
    # over opset 12/13 ops); the converter itself is public enough and pinned with mxnet==1.9.1.
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph

    native = min(opset, MXNET_OPSETS[-1])
    try:
        graph = MXNetGraph().create_onnx_graph_proto(
            sym,
            params,
            [(1, *input_shape)],
            [onnx.TensorProto.FLOAT],
            opset_version=native,
            dynamic=True,
            dynamic_input_shapes=[(None, *input_shape)],
        )
    except (AttributeError, KeyError, NotImplementedError, ValueError) as err:
        raise ExportError(f"MXNet's ONNX converter cannot export this network: {err}") from None
    model = onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", native)], producer_name="tlkit", producer_version=__version__
    )
    if opset > native:
        from onnx import version_converter

        try:
            model = version_converter.convert_version(model, opset)
        except Exception as err:  # onnx raises plain RuntimeError/ConvertError here
            raise ExportError(f"cannot convert the exported opset {native} graph to opset {opset}: {err}") from None
    return model


def _ort_session(model_bytes: bytes):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def _fill_output_shapes(model: Any, input_shape: tuple[int, ...]) -> None:
    """Give graph outputs concrete dims from probe runs at batch 1 and 2 (dim 0 = "batch" where it follows)."""
    try:
        sess = _ort_session(model.SerializeToString())
        r1 = sess.run(None, {INPUT_NAME: np.zeros((1, *input_shape), np.float32)})
        r2 = sess.run(None, {INPUT_NAME: np.zeros((2, *input_shape), np.float32)})
    except Exception as err:  # onnxruntime's own exception types
        raise ExportError(f"the exported ONNX graph does not run in onnxruntime: {err}") from None
    for out, a, b in zip(model.graph.output, r1, r2):
        shape = out.type.tensor_type.shape
        del shape.dim[:]
        for i, (d1, d2) in enumerate(zip(a.shape, b.shape)):
            dim = shape.dim.add()
            if i == 0 and d1 == 1 and d2 == 2:
                _set_dim(dim, "batch")
            elif d1 == d2:
                _set_dim(dim, d1)
            else:
                _set_dim(dim, f"{out.name}_dim{i}")


def onnx_metadata(
    meta: dict[str, Any],
    *,
    output_names: list[str],
    input_shape: tuple[int, ...],
    batch: int | str,
    data_type: str,
    opset: int,
) -> dict[str, Any]:
    """The metadata dict embedded in the ONNX file (and returned by `read_onnx_metadata`)."""
    return {
        "format": "tlkit-onnx",
        "tlkit_version": __version__,
        "task": meta.get("task"),
        "arch": meta.get("arch"),
        "classes": list(meta.get("classes") or []),
        "input_name": INPUT_NAME,
        "output_names": output_names,
        "input_shape": [int(v) for v in input_shape],
        "input_layout": meta.get("input_layout", "NCHW"),
        "batch": batch,
        "data_type": data_type,
        "opset": opset,
        "preprocessing": resolve_preprocessing({**meta, "input_shape": list(input_shape)}),
        "postprocessing": meta.get("postprocessing") or {},
        "deepstream": meta.get("deepstream") or {},
        "source_model": meta.get("source_model"),
    }


def set_metadata(model: Any, metadata: dict[str, Any]) -> None:
    for prop in list(model.metadata_props):
        if prop.key == METADATA_KEY:
            model.metadata_props.remove(prop)
    entry = model.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(metadata, default=str)


def export_onnx(
    model_path_or_net: Any,
    output: str | os.PathLike,
    *,
    meta: dict[str, Any] | None = None,
    input_shape: tuple[int, ...] | list[int] | None = None,
    opset: int | None = None,
    static_batch_size: int = -1,
    data_type: str = "fp32",
    cal_batches: Any = None,
    calibration_method: str = "entropy",
    cal_cache_file: str | os.PathLike | None = None,
    qdq_format: str = "tensorrt",
    cal_json_file: str | os.PathLike | None = None,
    force_ptq: bool = False,
    quantize_output_heads: bool = False,
) -> Path:
    """Export a `.tlk` model (or a Gluon block + `meta`) to ONNX at `output`. Returns `output`.

    `input_shape` is (C, H, W) (default meta["input_shape"]). `data_type` "fp16" converts weights and
    compute to float16 with onnxruntime's converter, keeping float32 input/outputs; "int8" writes a Q/DQ
    graph calibrated on `cal_batches` (NCHW float32 arrays, already preprocessed), or on the ranges
    in an existing TensorRT `cal_cache_file` (imported when it exists and no batches are given; written
    when batches are given). `qdq_format`: "tensorrt" (symmetric int8 activations) or "onnxruntime"
    (uint8 activations, fast on x86 CPUs; see `tlkit.export.qdq.quantize_qdq`). The output heads stay
    float in the int8 graph and the cache unless `quantize_output_heads`.

    A QAT model (meta["qat"], `tlkit.qat`) exports its float graph (fake quantization stripped); as "int8" it
    takes its learned ranges (no calibration data; `cal_cache_file` / `cal_json_file` receive them), unless
    `force_ptq` asks for the calibration above instead.
    """
    onnx = _import_onnx()
    output = Path(output)
    if data_type not in DATA_TYPES:
        raise SpecError(f"data_type {data_type!r} is not one of {', '.join(DATA_TYPES)}")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if opset < MXNET_OPSETS[0]:
        raise SpecError(f"opset {opset} is too old: MXNet's ONNX exporter emits opset >= {MXNET_OPSETS[0]} ops")
    net, meta = _load_source(model_path_or_net, meta)
    qat_ranges = None
    if meta.get("qat"):
        from tlkit.qat import strip_qat

        net, qat_ranges = strip_qat(net)
    use_qat = data_type == "int8" and qat_ranges is not None and not force_ptq
    has_cache = bool(cal_cache_file and Path(cal_cache_file).is_file())
    if data_type == "int8" and not use_qat and cal_batches is None and not has_cache:
        raise SpecError(
            "int8 export needs calibration data: --cal_data_file (tensorfile), --cal_image_dir, "
            "or an existing --cal_cache_file to import"
        )
    shape = input_shape or meta.get("input_shape")
    if not shape or len(shape) != 3:
        raise SpecError(f"input_shape must be (C, H, W); got {shape!r} (pass input_shape= or meta['input_shape'])")
    shape = tuple(int(v) for v in shape)

    sym, params = _symbol_and_params(net, shape)
    softmax = is_classifier(meta) and meta.get("output_activation") != "softmax" and len(sym.list_outputs()) == 1
    if softmax:
        import mxnet as mx

        sym = mx.sym.softmax(sym, axis=-1, name="predictions")
    model = _convert(sym, params, shape, opset)
    raw_initializers(model)
    graph = model.graph

    # Initializers listed as inputs block constant folding; keep only the real input.
    init_names = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in init_names]
    if len(real_inputs) != 1:
        raise ExportError(f"expected one image input, the graph has {[i.name for i in real_inputs]}")
    keep = real_inputs[0]
    del graph.input[:]
    graph.input.append(keep)
    _rename(graph, keep.name, INPUT_NAME)
    dims = graph.input[0].type.tensor_type.shape.dim
    _set_dim(dims[0], "batch")

    names = list(meta.get("output_names") or [])
    n_out = len(graph.output)
    if not names:
        names = ["output"] if n_out == 1 else [f"output{i}" for i in range(n_out)]
    if len(names) != n_out:
        raise SpecError(f"meta['output_names'] lists {len(names)} names {names} but the network has {n_out} outputs")
    if len(set(names)) != len(names) or INPUT_NAME in names:
        raise SpecError(f"meta['output_names'] {names} must be distinct and not {INPUT_NAME!r}")
    for out, name in zip(list(graph.output), names):
        _rename(graph, out.name, name)
    _fill_output_shapes(model, shape)
    if meta.get("export_nms"):  # decoded boxes before NMS: NMS goes into the graph (tlkit.export.nms)
        from tlkit.export import nms

        nms_params = {**meta["export_nms"], "num_classes": len(meta.get("classes") or [])}
        model = nms.append_nms(model, nms_params, shape)
        graph, names = model.graph, list(nms.OUTPUTS)
        _fill_output_shapes(model, shape)
        meta = {
            **meta,
            "output_names": names,
            "deepstream": nms.deepstream_meta(
                nms_params, list(meta.get("classes") or []), meta["export_nms"].get("per_class_threshold") or {}
            ),
        }

    batch: int | str = "batch"
    if static_batch_size and static_batch_size > 0:
        batch = int(static_batch_size)
        for vi in list(graph.input) + list(graph.output):
            for dim in vi.type.tensor_type.shape.dim:
                if dim.dim_param == "batch":
                    _set_dim(dim, batch)

    model.ir_version = onnx.helper.find_min_ir_version_for(list(model.opset_import))
    if isinstance(model_path_or_net, (str, os.PathLike)):
        meta.setdefault("source_model", str(model_path_or_net))
    md = onnx_metadata(meta, output_names=names, input_shape=shape, batch=batch, data_type=data_type, opset=opset)
    if softmax or meta.get("output_activation"):
        md["output_activation"] = "softmax"
    md["output_shapes"] = [[d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] for out in graph.output]
    card = export_card(model_path_or_net, meta, data_type=data_type, opset=opset, batch=batch)
    md["card"] = card.to_dict()
    set_metadata(model, md)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ExportError(f"exported ONNX graph fails onnx.checker: {str(err).splitlines()[0]}") from None

    if data_type == "fp16":
        model = to_fp16(model)
    if use_qat:
        from tlkit.qat import qat_int8_onnx

        assert qat_ranges is not None  # use_qat: the net had QAT ranges
        return qat_int8_onnx(model, qat_ranges, output, cal_cache_file=cal_cache_file, cal_json_file=cal_json_file)
    if data_type == "int8":
        from tlkit.export.calibration import quantize_with_calibration

        output = quantize_with_calibration(
            model,
            output,
            cal_batches,
            method=calibration_method,
            cal_cache_file=cal_cache_file,
            qdq_format=qdq_format,
            quantize_output_heads=quantize_output_heads,
        )
    else:
        atomic_write_bytes(output, model.SerializeToString())
    write_card_files(output, card)
    return output


def export_card(source: Any, meta: dict[str, Any], **export: Any) -> Any:
    """The model card of an export: the source model's card (tlkit.model_card), with the .tlk it was exported
    from as the newest lineage entry, and the export settings."""
    from tlkit.model_card import ExportInfo, ModelCard

    card = ModelCard.from_meta(meta)
    if isinstance(source, (str, os.PathLike)):
        card = card.derived("exported_from", source, source)
    card.export = ExportInfo(format="onnx", **export)
    return card


def raw_initializers(model: Any) -> int:
    """Store initializers as raw bytes (same values). MXNet's exporter writes `float_data`, which onnxruntime's
    fp16 converter turns into float16 one Python number at a time (resnet18: 54 s; from raw bytes: < 1 s).
    Returns the count rewritten."""
    from onnx import numpy_helper

    n = 0
    for i, t in enumerate(model.graph.initializer):
        if len(t.float_data) or len(t.int32_data) or len(t.int64_data) or len(t.double_data):
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t), t.name))
            n += 1
    return n


def to_fp16(model: Any) -> Any:
    """Float16 weights and compute, float32 graph inputs/outputs (onnxruntime's float16 converter)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    raw_initializers(model)
    meta = read_metadata_props(model)
    model16 = convert_float_to_float16(model, keep_io_types=True)
    if meta:
        set_metadata(model16, {**meta, "data_type": "fp16"})
    return model16


def read_metadata_props(model: Any) -> dict[str, Any]:
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The tlkit metadata of an exported ONNX file ({} for an ONNX file tlkit did not write)."""
    onnx = _import_onnx()
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: ONNX file not found")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf DecodeError and friends
        raise ModelFileError(f"{path}: not a valid ONNX file: {err}") from None
    try:
        return read_metadata_props(model)
    except json.JSONDecodeError as err:
        raise ModelFileError(f"{path}: metadata_props['{METADATA_KEY}'] is not valid JSON: {err}") from None
