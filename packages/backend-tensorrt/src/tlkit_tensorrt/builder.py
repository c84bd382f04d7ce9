"""ONNX -> TensorRT engine (the tao-converter equivalent), for TensorRT 8.6/10/11 and TensorRT-RTX.

    build_engine("model.onnx", "model.engine", data_type="fp16",
                 profiles=["input,1x3x224x224,8x3x224x224,16x3x224x224"])

Precision per TensorRT flavour (see api.py): weakly typed TensorRT (<= 10) sets builder flags;
strongly typed TensorRT (11, RTX) takes precision from the ONNX, so fp16 converts the ONNX to fp16
first and int8 needs a Q/DQ ONNX (`tlkit <task> export --data_type int8`). The engine file gets a JSON
header (engine_file.py) with the ONNX's tlkit metadata and how the engine was built.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tlkit.errors import ModelFileError, SpecError
from tlkit.export.engine_file import write_engine
from tlkit_tensorrt import __version__
from tlkit_tensorrt.api import TensorRTError, TrtApi, load_api

DATA_TYPES = ("fp32", "fp16", "int8")
DEFAULT_ENGINE = "saved.engine"  # tao-converter's -e default
DEFAULT_WORKSPACE = 1 << 30  # tao-converter's -w default
DEFAULT_MAX_BATCH = 16  # tao-converter's -m default
DEFAULT_CALIB_BATCH = 8  # tao-converter's -b default
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


# -- optimisation profiles ------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """`-p input,1x3x224x224,8x3x224x224,16x3x224x224`: one input's min/opt/max shapes."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def parse_dims(text: str, where: str = "") -> tuple[int, ...]:
    """'1x3x224x224' -> (1, 3, 224, 224); every dim a positive integer."""
    parts = text.strip().lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise SpecError(f"{where}{text!r} is not a shape: expected dims joined by 'x', e.g. 1x3x224x224") from None
    if any(d <= 0 for d in dims):
        raise SpecError(f"{where}{text!r}: every dim must be a positive integer")
    return dims


def parse_profile(text: str) -> Profile:
    """Parse one -p value: `<input_name>,<min_shape>,<opt_shape>,<max_shape>`."""
    where = f"-p {text!r}: "
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4 or not parts[0]:
        raise SpecError(
            f"{where}expected <input_name>,<min_shape>,<opt_shape>,<max_shape>, e.g. "
            "input,1x3x224x224,8x3x224x224,16x3x224x224"
        )
    name = parts[0]
    lo, opt, hi = (parse_dims(p, where) for p in parts[1:])
    if not len(lo) == len(opt) == len(hi):
        raise SpecError(f"{where}min/opt/max have different ranks ({len(lo)}, {len(opt)}, {len(hi)})")
    for i, (a, b, c) in enumerate(zip(lo, opt, hi)):
        if not a <= b <= c:
            raise SpecError(f"{where}dim {i} must satisfy min <= opt <= max, got {a}, {b}, {c}")
    return Profile(name, lo, opt, hi)


def parse_profiles(values: Iterable[str | Profile] | None) -> list[Profile]:
    profiles = [v if isinstance(v, Profile) else parse_profile(v) for v in (values or ())]
    names = [p.name for p in profiles]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise SpecError(f"-p given twice for input {dup[0]!r}; give one min,opt,max per input")
    return profiles


def resolve_profiles(inputs: list[tuple[str, tuple[int, ...]]], given: list[Profile], max_batch: int) -> list[Profile]:
    """One profile per dynamic input: the given ones, checked against the network; for an input whose
    only dynamic dim is the batch, 1..max_batch (opt = max_batch) when none is given."""
    by_name = {n: s for n, s in inputs}
    for p in given:
        if p.name not in by_name:
            raise SpecError(f"-p {p.name}: the network has no input {p.name!r} (its inputs: {', '.join(by_name)})")
        shape = by_name[p.name]
        if len(p.min) != len(shape):
            raise SpecError(
                f"-p {p.name}: shapes have {len(p.min)} dims, the input has {len(shape)} "
                f"({'x'.join(str(d) if d >= 0 else '?' for d in shape)})"
            )
        for i, d in enumerate(shape):
            if d >= 0 and not p.min[i] == p.opt[i] == p.max[i] == d:
                raise SpecError(
                    f"-p {p.name}: dim {i} of the input is fixed at {d}, the profile gives "
                    f"{p.min[i]}/{p.opt[i]}/{p.max[i]}"
                )
    out = list(given)
    named = {p.name for p in given}
    for name, shape in inputs:
        if name in named or all(d >= 0 for d in shape):
            continue
        if any(d < 0 for d in shape[1:]):
            raise SpecError(
                f"input {name!r} has dynamic dims beyond the batch "
                f"({'x'.join(str(d) if d >= 0 else '?' for d in shape)}): give -p {name},MIN,OPT,MAX"
            )
        rest = tuple(shape[1:])
        out.append(Profile(name, (1, *rest), (max_batch, *rest), (max_batch, *rest)))
    return out


# -- ONNX preparation -----------------------------------------------------------------------------
def _load_onnx(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise ModelFileError(f"{path}: ONNX file not found")
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf DecodeError and friends
        raise ModelFileError(
            f"{path}: not a valid ONNX file: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None


def is_qdq(model: Any) -> bool:
    return any(n.op_type in QDQ_OPS for n in model.graph.node)


def has_uint8_activations(model: Any) -> bool:
    """A QuantizeLinear with a uint8 zero point (onnxruntime's CPU layout, `export --qdq_format onnxruntime`)."""
    import onnx

    uint8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.UINT8}
    return any(n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in uint8 for n in model.graph.node)


def is_fp16(model: Any) -> bool:
    import onnx

    return any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)


def fold_int32_dequantize(model: Any) -> int:
    """Replace DequantizeLinear of int32 initializers (onnxruntime quantizes biases to int32) by float
    initializers: TensorRT accepts only 8-bit (and FP8/4-bit) DequantizeLinear inputs. Exact: the
    folded bias is the same (x - zero_point) * scale onnxruntime computes. Returns the count folded."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    keep, folded = [], 0
    for node in graph.node:
        src = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if src is None or src.data_type != onnx.TensorProto.INT32 or node.input[1] not in inits:
            keep.append(node)
            continue
        x = numpy_helper.to_array(src).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = np.zeros(())  # no zero point given: 0
        if len(node.input) > 2 and node.input[2]:
            zp = numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and x.ndim > 0:
            shape = [1] * x.ndim
            shape[axis % x.ndim] = -1
            scale = scale.reshape(shape)
            zp = zp.reshape(shape) if np.ndim(zp) else zp
        graph.initializer.append(numpy_helper.from_array(((x - zp) * scale).astype(np.float32), node.output[0]))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        kept_inits = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(kept_inits)
    return folded


def _choose_precision(
    api: TrtApi, model: Any, data_type: str, cal_cache: Path | None, notes: list[str]
) -> dict[str, Any]:
    """Check the precision request against the ONNX and the TensorRT flavour; say how to build it."""
    qdq, fp16 = is_qdq(model), is_fp16(model)
    if qdq and data_type != "int8":
        raise SpecError(
            f"-t {data_type}: the ONNX is a Q/DQ (int8) graph; build it with -t int8 or export the model "
            f"again with --data_type {data_type}"
        )
    if fp16 and data_type == "fp32":
        raise SpecError(
            "-t fp32: the ONNX holds fp16 weights; export the model with --data_type fp32, or build with -t fp16"
        )
    if qdq and has_uint8_activations(model):
        raise SpecError(
            "the ONNX quantizes activations to uint8 (export --qdq_format onnxruntime, for onnxruntime on "
            "CPU); TensorRT takes only int8 with zero point 0: export again with --qdq_format tensorrt"
        )
    plan: dict[str, Any] = {"qdq": qdq, "onnx_fp16": fp16, "convert_fp16": False, "calibration_cache": None}
    if data_type == "fp16" and api.strongly_typed_only and not fp16:
        plan["convert_fp16"] = True
        notes.append(f"{api.label} is strongly typed: converted the fp32 ONNX to fp16 (inputs/outputs stay fp32)")
    if data_type == "int8" and not qdq:
        if api.strongly_typed_only:
            why = (
                "calibration caches are not supported there (INT8 calibration was removed)"
                if cal_cache
                else "implicit INT8 calibration was removed"
            )
            raise TensorRTError(
                f"-t int8 on {api.label} needs a Q/DQ ONNX: {why}. Export one with `tlkit <task> export -m MODEL.tlk "
                "--data_type int8 --cal_cache_file CACHE` (imports an existing cache) or --cal_data_file/--cal_image_dir"
            )
        if cal_cache is None:
            raise SpecError(
                f"-t int8: the ONNX has no Q/DQ nodes, so {api.label} needs a calibration cache (-c cal.bin); "
                "or export a Q/DQ ONNX with `tlkit <task> export --data_type int8`"
            )
        if not cal_cache.is_file():
            raise ModelFileError(f"-c {cal_cache}: calibration cache not found")
        data = cal_cache.read_bytes()
        if not data.startswith(b"TRT-"):
            raise ModelFileError(
                f"-c {cal_cache}: not a TensorRT calibration cache (first line should be TRT-<version>-<algorithm>)"
            )
        plan["calibration_cache"] = data
    elif cal_cache is not None:
        notes.append(
            f"ignored -c {cal_cache}: "
            + ("the ONNX already holds Q/DQ scales" if qdq else f"-t {data_type} does not calibrate")
        )
    return plan


# -- logging ------------------------------------------------------------------------------------
def _make_logger(api: TrtApi, verbose: bool) -> Any:
    """An ILogger that keeps error messages (for the TensorRTError text), warnings (into the engine header,
    where a precision fallback would show) and the weights size the builder reports; prints only when verbose."""
    trt = api.trt

    class Collector(trt.ILogger):  # type: ignore[name-defined]  # TensorRT is loaded at run time (untyped)
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []
            self.weights_bytes: int | None = None

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.WARNING:
                self.warnings.append(msg.strip())
            m = WEIGHTS_MEMORY.search(msg)
            if m:
                self.weights_bytes = int(m.group(1))
            if verbose or severity in (trt.ILogger.INTERNAL_ERROR,):
                print(f"[TRT] [{getattr(severity, 'name', severity)}] {msg}", flush=True)

    return Collector()


# "Total Weights Memory: 4109576 bytes" (INFO, end of a build): int8 weights take ~1 byte each, fp16 2, fp32 4
WEIGHTS_MEMORY = re.compile(r"Total Weights Memory:\s*(\d+)\s*bytes")
# what TensorRT says when a layer cannot run in the requested precision
FALLBACK = re.compile(r"fall(?:s|ing)?[ -]?back|falling back|precision.*not (?:supported|honou?red)", re.IGNORECASE)


def _parser_error(err: Any) -> str:
    """'node NAME (OP): description' where this TensorRT tells the node (node_name: 8.6+)."""
    desc = err.desc().strip().splitlines()[0] if err.desc().strip() else "parse error"
    name = err.node_name() if hasattr(err, "node_name") else ""
    op = err.node_operator() if hasattr(err, "node_operator") else ""
    if name or op:
        return f"node {name or '?'} ({op or '?'}): {desc}"
    return f"node #{err.node()}: {desc}" if err.node() >= 0 else desc


def _first_error(messages: list[str]) -> str:
    """The most telling line: CPU-only TensorRT-RTX also logs 'CUDA driver version is insufficient', which
    is not the cause."""
    lines = [ln.strip() for m in messages for ln in m.splitlines() if ln.strip()]
    real = [ln for ln in lines if "cudaError" not in ln and "catchCudaError" not in ln]
    return (real or lines or ["no message"])[0]


# -- build ----------------------------------------------------------------------------------------
def _tensor_info(t: Any) -> dict[str, Any]:
    return {"name": t.name, "shape": [int(d) for d in t.shape], "dtype": getattr(t.dtype, "name", str(t.dtype))}


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike = DEFAULT_ENGINE,
    *,
    data_type: str = "fp32",
    profiles: Iterable[str | Profile] | None = None,
    cal_cache_file: str | os.PathLike | None = None,
    workspace: int = DEFAULT_WORKSPACE,
    max_batch: int = DEFAULT_MAX_BATCH,
    calib_batch: int = DEFAULT_CALIB_BATCH,
    strict_types: bool = False,
    module: str | None = None,
    verbose: bool = False,
) -> Path:
    """Build a TensorRT engine from `onnx_path` and write it (with its JSON header) to `engine_path`."""
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    _check_build_options(data_type, workspace, max_batch, calib_batch)
    given = parse_profiles(profiles)
    api = load_api(module)
    cal = Path(cal_cache_file) if cal_cache_file else None
    notes: list[str] = []
    model, meta, plan = _prepare_onnx(api, onnx_path, data_type, cal, notes)

    t0 = time.perf_counter()
    logger = _make_logger(api, verbose)
    builder, network = _parse_network(api, logger, model, onnx_path, plan["qdq"])
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    resolved = resolve_profiles([(t.name, tuple(int(d) for d in t.shape)) for t in inputs], given, int(max_batch))
    config, flags = _builder_config(
        api,
        builder,
        plan,
        resolved,
        data_type=data_type,
        workspace=workspace,
        calib_batch=calib_batch,
        strict_types=strict_types,
        notes=notes,
    )
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTError(f"{onnx_path}: {api.label} could not build the engine: {_first_error(logger.errors)}")
    seconds = time.perf_counter() - t0

    header = {
        "model": meta,
        "engine": {
            "tlkit_tensorrt_version": __version__,
            "trt": {"flavour": api.flavour, "module": api.module, "version": api.version},
            "precision": data_type,
            "strongly_typed": api.strongly_typed_only or bool(plan["qdq"] and api.major >= 10),
            "qdq": plan["qdq"],
            "builder_flags": flags,
            "profiles": [p.as_dict() for p in resolved],
            "inputs": [_tensor_info(t) for t in inputs],
            "outputs": [_tensor_info(t) for t in outputs],
            "workspace": int(workspace),
            "max_batch": int(max_batch),
            "calib_batch": int(calib_batch),
            "strict_types": bool(strict_types),
            "calibration_cache": str(cal) if plan["calibration_cache"] is not None else None,
            "source_onnx": str(onnx_path),
            "onnx_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            "build_seconds": round(seconds, 3),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "engine_bytes": int(serialized.nbytes),
            "weights_bytes": logger.weights_bytes,
            "warnings": logger.warnings,
            "fallbacks": [w for w in logger.warnings if FALLBACK.search(w)],
            "notes": notes,
        },
    }
    return write_engine(engine_path, header, serialized)


# -- the phases of build_engine ---------------------------------------------------------------------


def _check_build_options(data_type: str, workspace: int, max_batch: int, calib_batch: int) -> None:
    if data_type not in DATA_TYPES:
        raise SpecError(f"-t {data_type!r} is not one of {', '.join(DATA_TYPES)}")
    if int(workspace) <= 0:
        raise SpecError(f"-w {workspace}: the workspace must be a positive number of bytes")
    if int(max_batch) <= 0 or int(calib_batch) <= 0:
        raise SpecError(f"-m {max_batch} / -b {calib_batch}: batch sizes must be positive")


def _prepare_onnx(
    api: TrtApi, onnx_path: Path, data_type: str, cal: Path | None, notes: list[str]
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(the ONNX as TensorRT gets it, its tlkit metadata, the precision plan): FP16 weights converted and int32
    bias DequantizeLinear nodes folded where the plan needs it."""
    from tlkit.export.onnx_export import read_metadata_props

    model = _load_onnx(onnx_path)
    meta = read_metadata_props(model)
    plan = _choose_precision(api, model, data_type, cal, notes)
    if plan["convert_fp16"]:
        from tlkit.export.onnx_export import to_fp16

        model = to_fp16(model)
    folded = fold_int32_dequantize(model) if plan["qdq"] else 0
    if folded:
        notes.append(
            f"folded {folded} int32 bias DequantizeLinear node(s) into float constants (TensorRT has no int32 DQ)"
        )
    return model, meta, plan


def _parse_network(api: TrtApi, logger: Any, model: Any, onnx_path: Path, qdq: bool) -> tuple[Any, Any]:
    """(builder, network) with the ONNX parsed into the network; a parse failure is a TensorRTError."""
    trt = api.trt
    builder = trt.Builder(logger)
    network = builder.create_network(api.network_flags(qdq))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString(), str(onnx_path)):
        errs = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise TensorRTError(f"{onnx_path}: {api.label} cannot parse the ONNX: {_first_error(errs + logger.errors)}")
    return builder, network


def _builder_config(
    api: TrtApi,
    builder: Any,
    plan: dict[str, Any],
    resolved: list[Profile],
    *,
    data_type: str,
    workspace: int,
    calib_batch: int,
    strict_types: bool,
    notes: list[str],
) -> tuple[Any, list[str]]:
    """The builder config: workspace, the optimization profile, precision flags and the INT8 calibrator.
    Returns (config, the builder flags set)."""
    config = builder.create_builder_config()
    api.set_workspace(config, int(workspace))
    prof = None
    if resolved:
        prof = builder.create_optimization_profile()
        for p in resolved:
            prof.set_shape(p.name, p.min, p.opt, p.max)
        config.add_optimization_profile(prof)
    flags: list[str] = []
    if not api.strongly_typed_only:
        if data_type == "fp16" or (data_type == "int8" and not plan["qdq"]):
            flags.append(api.set_flag(config, "FP16") or "")  # int8 calibration: fp16 where int8 has no kernel
        if data_type == "int8" and (api.major < 10 or not plan["qdq"]):
            flags.append(api.set_flag(config, "INT8") or "")
        if plan["calibration_cache"] is not None:
            config.int8_calibrator = api.cache_calibrator(plan["calibration_cache"], int(calib_batch))
            if prof is not None and hasattr(config, "set_calibration_profile"):
                config.set_calibration_profile(prof)
        if strict_types:
            flags.append(api.set_flag(config, "OBEY_PRECISION_CONSTRAINTS", "STRICT_TYPES") or "")
    elif strict_types:
        notes.append(f"-s: {api.label} is strongly typed, precision constraints are always obeyed")
    return config, [f for f in flags if f]


def build_with_options(onnx_path: Any, output: Any, options: dict[str, Any]) -> Path:
    """The EngineBackendSpec.build callable: `options` uses build_engine's keyword names; a missing (or None) one
    takes build_engine's own default."""
    known = (
        "data_type",
        "profiles",
        "cal_cache_file",
        "workspace",
        "max_batch",
        "calib_batch",
        "strict_types",
        "module",
        "verbose",
    )
    return build_engine(onnx_path, output, **{k: options[k] for k in known if options.get(k) is not None})
