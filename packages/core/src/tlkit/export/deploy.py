"""Complete deployment configs from an exported model and its metadata: DeepStream nvinfer and Triton.

Core knows no task: what differs per task comes from ``meta["deepstream"]``, a dict the task fills
(and that export embeds in the ONNX metadata)::

    {"network_type": 0,                      # 0 detector, 1 classifier, 2 segmentation, 100 other
     "properties": {"cluster-mode": 2, "parse-bbox-func-name": "...", "custom-lib-path": "..."},
     "class_attrs_all": {"pre-cluster-threshold": 0.3, "nms-iou-threshold": 0.5, "topk": 100},
     "class_attrs": {"0": {"pre-cluster-threshold": 0.4}}}

Without "network_type" it follows the task name (classification 1, detection 0, else 100).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.errors import ModelFileError, SpecError
from tlkit.export.preprocess import resolve_preprocessing, to_deepstream
from tlkit.io import atomic_write_bytes, atomic_write_text

NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
TASK_NETWORK_TYPES = {"classification": 1, "detection": 0, "segmentation": 2}


def network_type(meta: dict[str, Any]) -> int:
    """nvinfer's network-type of a model: meta["deepstream"]["network_type"], else by task (classification 1,
    detection 0, segmentation 2, anything else 100)."""
    ds = meta.get("deepstream") or {}
    return int(ds.get("network_type", TASK_NETWORK_TYPES.get(meta.get("task") or "", 100)))


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, (list, tuple)):
        return ";".join(_fmt(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _meta_for(model_path: Path, meta: dict[str, Any] | None) -> dict[str, Any]:
    if meta is not None:
        return meta
    if model_path.suffix.lower() == ".onnx":
        from tlkit.export.onnx_export import read_onnx_metadata

        return read_onnx_metadata(model_path)
    raise SpecError(f"{model_path}: pass meta= (only .onnx files carry their own metadata)")


def _labels(meta: dict[str, Any]) -> list[str]:
    return [str(c) for c in meta.get("classes") or []]


def write_labels(meta: dict[str, Any], path: Path, *, deepstream_classifier: bool = False) -> Path | None:
    """labels.txt: one class per line (DeepStream classifiers want them ';'-separated on one line)."""
    labels = _labels(meta)
    if not labels:
        return None
    text = ";".join(labels) + "\n" if deepstream_classifier else "\n".join(labels) + "\n"
    atomic_write_text(path, text)
    return path


@dataclass(frozen=True)
class SecondaryGie:
    """nvinfer in secondary mode (process-mode 2): classify the objects of the detector `operate_on_gie_id`.

    Objects smaller than `input_object_min_width` x `input_object_min_height` pixels are not classified;
    `classifier_async_mode` attaches results on later frames by tracker id (needs a tracker upstream)."""

    operate_on_gie_id: int = 1
    operate_on_class_ids: tuple[int, ...] = ()  # () = every class of that detector
    gie_unique_id: int = 2
    input_object_min_width: int = 16
    input_object_min_height: int = 16
    classifier_async_mode: bool = True


def parse_class_ids(text: Any) -> tuple[int, ...]:
    """'0;2' (or '0,2') -> (0, 2); None or '' -> () (every class)."""
    items = str(text or "").replace(",", ";").split(";")
    try:
        return tuple(int(v) for v in items if v.strip())
    except ValueError:
        raise SpecError(f"--operate_on_class_ids {text!r}: expected class ids like '0;2'") from None


SCALING_FILTERS = {"nearest": 0, "bilinear": 1, "bicubic": 2, "area": 1}  # NvBufSurfTransform_Inter (2 = GPU-Cubic)
STOCK_PARSER_LIB = "/opt/nvidia/deepstream/deepstream/lib/libnvds_infercustomparser.so"


def write_deepstream_config(
    onnx_path: str | os.PathLike,
    meta: dict[str, Any] | None,
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 1,
    data_type: str | None = None,
    int8_calib_file: str | os.PathLike | None = None,
    gpu_id: int = 0,
    config_name: str = "nvinfer_config.txt",
    secondary: SecondaryGie | None = None,
    gie_unique_id: int = 1,
    classifier_threshold: float = 0.5,
    labels_name: str = "labels.txt",
) -> Path:
    """Write a complete nvinfer config (+ labels file) to `out_dir`; returns the config path.

    Paths inside it are relative to `out_dir` (DeepStream resolves them against the config file).
    `data_type` defaults to the one recorded in the ONNX metadata. `int8_calib_file` (a TensorRT
    cache) is written for the implicit-int8 route (an fp32 ONNX with data_type="int8", TRT <= 10);
    a Q/DQ ONNX needs none. `secondary` makes it a secondary GIE (classifiers only). A classifier's
    `classifier_threshold` is a probability (classifier exports end in a Softmax).
    The first line says whether the config runs as written or what must be done first (a custom parser
    library to build).
    """
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir)
    meta = _meta_for(onnx_path, meta)
    if "input_shape" not in meta:
        raise SpecError(f"{onnx_path}: metadata has no input_shape; cannot write infer-dims")
    data_type = data_type or meta.get("data_type", "fp32")
    if data_type not in NETWORK_MODES:
        raise SpecError(f"data_type {data_type!r} is not one of {', '.join(NETWORK_MODES)}")
    ds = dict(meta.get("deepstream") or {})
    net_type = network_type(meta)
    if secondary is not None and net_type != 1:
        raise SpecError(
            f"{onnx_path}: a secondary GIE here classifies detected objects; this model has "
            f"network-type {net_type}, not 1 (classifier)"
        )
    resolved = resolve_preprocessing(meta)
    pre = to_deepstream(resolved)
    out_dir.mkdir(parents=True, exist_ok=True)

    def rel(p: Path) -> str:
        try:
            return os.path.relpath(p.resolve(), out_dir.resolve())
        except ValueError:  # another drive (Windows)
            return str(p.resolve())

    c, h, w = (int(v) for v in meta["input_shape"])
    outputs = meta.get("output_names") or ["output"]
    classes = _labels(meta)
    prop: dict[str, Any] = {
        "gpu-id": gpu_id,
        "net-scale-factor": pre["net-scale-factor"],
        "offsets": pre["offsets"],
        "model-color-format": pre["model-color-format"],
        "onnx-file": rel(onnx_path),
        "model-engine-file": f"{onnx_path.name}_b{batch_size}_gpu{gpu_id}_{data_type}.engine",
        "infer-dims": [c, h, w],
        "batch-size": batch_size,
        "network-mode": NETWORK_MODES[data_type],
        "network-type": net_type,
        "num-detected-classes": len(classes),
        "output-blob-names": list(outputs),
        "process-mode": 1 if secondary is None else 2,
        "gie-unique-id": gie_unique_id if secondary is None else secondary.gie_unique_id,
        "maintain-aspect-ratio": 0,
        # the resize tlkit trains and runs with (cv2 bilinear by default)
        "scaling-filter": SCALING_FILTERS[resolved.get("resize_interpolation", "bilinear")],
    }
    explicit_int8 = meta.get("data_type") == "int8"  # a Q/DQ ONNX carries its own scales
    if data_type == "int8" and int8_calib_file and not explicit_int8:
        prop["int8-calib-file"] = rel(Path(int8_calib_file))
    labels = write_labels(meta, out_dir / labels_name, deepstream_classifier=net_type == 1)  # None: no classes
    if labels is not None:
        prop["labelfile-path"] = rel(labels)
    if net_type == 1:
        prop["classifier-threshold"] = classifier_threshold
    if secondary is not None:
        prop["operate-on-gie-id"] = secondary.operate_on_gie_id
        if secondary.operate_on_class_ids:
            prop["operate-on-class-ids"] = [int(i) for i in secondary.operate_on_class_ids]
        prop["input-object-min-width"] = secondary.input_object_min_width
        prop["input-object-min-height"] = secondary.input_object_min_height
        prop["classifier-async-mode"] = secondary.classifier_async_mode
    if net_type == 0:
        prop["cluster-mode"] = 2  # NMS; tasks override through meta["deepstream"]["properties"]
    if net_type == 100:
        prop["output-tensor-meta"] = 1
    prop.update(ds.get("properties") or {})

    todo = _custom_parser_todo(prop)
    if todo:
        lines = [f"# DeepStream nvinfer config written by tlkit. NOT complete as written: {todo}"]
    elif net_type == 100:
        lines = [
            "# DeepStream nvinfer config written by tlkit. Runs as written; nvinfer only attaches the raw "
            "output tensors (network-type 100, output-tensor-meta): the application parses them."
        ]
    else:
        lines = [
            "# DeepStream nvinfer config written by tlkit (complete: runs as written; the parser is DeepStream's own)."
        ]
    lines += [f"# {note}" for note in ds.get("notes") or []]
    if not pre["exact"]:
        lines.append(
            f"# net-scale-factor approximates per-channel std {resolved['std']} by their mean "
            f"(nvinfer has one scale; worst relative error {pre['max_rel_error']:.2%})."
        )
    if resolved.get("center_crop"):
        lines.append(
            "# The model was validated with a center crop (resize to size/0.875, keep the middle); nvinfer "
            "scales the whole frame or object to the input instead. Train with enable_center_crop: false "
            "for identical preprocessing."
        )
    if explicit_int8:
        lines.append("# Q/DQ ONNX: TensorRT takes int8 scales from the graph (explicit quantization): no calib file.")
    if secondary is not None:
        lines.append(
            f"# Secondary GIE: classifies the objects of GIE {secondary.operate_on_gie_id} (the whole "
            "detector box, scaled to the input; nvinfer cannot widen it by a margin)."
        )
    lines.append("[property]")
    lines += [f"{k}={_fmt(v)}" for k, v in prop.items()]
    if net_type == 0:
        attrs_all = {"pre-cluster-threshold": 0.2, "nms-iou-threshold": 0.5, "topk": 200}
        attrs_all.update(ds.get("class_attrs_all") or {})
        lines += ["", "[class-attrs-all]"] + [f"{k}={_fmt(v)}" for k, v in attrs_all.items()]
        for cid, attrs in sorted((ds.get("class_attrs") or {}).items(), key=lambda kv: int(kv[0])):
            lines += ["", f"[class-attrs-{int(cid)}]"] + [f"{k}={_fmt(v)}" for k, v in attrs.items()]
    path = out_dir / config_name
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _custom_parser_todo(prop: dict[str, Any]) -> str:
    """What must be done before a config with a custom parser runs ('' when nothing: DeepStream's stock lib)."""
    lib = prop.get("custom-lib-path")
    if not lib or str(lib) == STOCK_PARSER_LIB:
        return ""
    return (
        f"{prop.get('parse-bbox-func-name', 'its parser')} lives in {lib}, which DeepStream does not ship: "
        "build or install that library first."
    )


# -- Triton ----------------------------------------------------------------------------------------

TRITON_TYPES = {
    "fp32": "TYPE_FP32",
    "fp16": "TYPE_FP16",
    "int8": "TYPE_INT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
}
_ONNX_ELEM_TO_TRITON = {
    1: "TYPE_FP32",
    10: "TYPE_FP16",
    3: "TYPE_INT8",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    2: "TYPE_UINT8",
}


def _onnx_io(onnx_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """[{name, data_type, dims}] for the graph inputs (initializers excluded) and outputs."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as err:
        raise ModelFileError(f"{onnx_path}: not a valid ONNX file: {err}") from None
    inits = {t.name for t in model.graph.initializer}

    def desc(vi: Any) -> dict[str, Any]:
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else d.dim_param or -1 for d in tt.shape.dim]
        return {"name": vi.name, "data_type": _ONNX_ELEM_TO_TRITON.get(tt.elem_type, "TYPE_FP32"), "dims": dims}

    return ([desc(v) for v in model.graph.input if v.name not in inits], [desc(v) for v in model.graph.output])


def _io_from_meta(meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if "input_shape" not in meta or "output_shapes" not in meta:
        raise SpecError(
            "a TensorRT plan needs meta with input_shape, output_names and output_shapes "
            "(the metadata of the ONNX it was built from)"
        )
    batch = meta.get("batch", "batch")
    ins = [{"name": meta.get("input_name", "input"), "data_type": "TYPE_FP32", "dims": [batch, *meta["input_shape"]]}]
    outs = [
        {"name": n, "data_type": "TYPE_FP32", "dims": list(s)}
        for n, s in zip(meta.get("output_names") or ["output"], meta["output_shapes"])
    ]
    return ins, outs


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_triton_repo(
    onnx_or_plan: str | os.PathLike,
    meta: dict[str, Any] | None,
    repo_dir: str | os.PathLike,
    name: str,
    *,
    max_batch_size: int = 16,
    instance_count: int = 1,
    instance_kind: str = "KIND_GPU",
    preferred_batch_sizes: tuple[int, ...] | None = None,
    max_queue_delay_microseconds: int = 100,
    version: int = 1,
) -> Path:
    """Write `repo_dir/name/config.pbtxt` and `repo_dir/name/<version>/model.onnx|model.plan`.

    A dynamic-batch model gets `max_batch_size` and dims without the batch dim plus dynamic batching;
    a static-batch one gets max_batch_size 0 and its full dims. Returns the config path.
    """
    src = Path(onnx_or_plan)
    if not src.is_file():
        raise ModelFileError(f"{src}: model file not found")
    suffix = src.suffix.lower()
    if suffix == ".onnx":
        platform, fname = "onnxruntime_onnx", "model.onnx"
        meta = _meta_for(src, meta)
        inputs, outputs = _onnx_io(src)
    elif suffix in (".plan", ".engine", ".trt"):
        from tlkit.export.engine_file import read_engine

        platform, fname = "tensorrt_plan", "model.plan"
        header, plan_bytes = read_engine(src, raw=True)  # Triton wants the bare plan, without tlkit's header
        meta = meta or header.get("model")
        if not meta:
            raise SpecError(f"{src}: a bare TensorRT plan carries no tlkit metadata; pass meta= from its ONNX")
        inputs, outputs = _io_from_meta(meta)
    else:
        raise ModelFileError(f"{src}: Triton repos take .onnx or TensorRT .plan/.engine files")
    if not name or "/" in name:
        raise SpecError(f"Triton model name {name!r} must be a non-empty single path component")

    dynamic = bool(inputs) and not isinstance(inputs[0]["dims"][0], int)
    mbs = max_batch_size if dynamic else 0

    def dims(d: list[Any]) -> list[int]:
        d = d[1:] if dynamic else d
        return [v if isinstance(v, int) and v > 0 else -1 for v in d]

    classes = _labels(meta)
    is_classifier = meta.get("task") == "classification" and len(outputs) == 1
    lines = [f"name: {_q(name)}", f"platform: {_q(platform)}", f"max_batch_size: {mbs}"]
    for key, items in (("input", inputs), ("output", outputs)):
        lines.append(f"{key} [")
        blocks = []
        for io in items:
            body = [f"    name: {_q(io['name'])}", f"    data_type: {io['data_type']}"]
            if key == "input" and len(io["dims"]) == 4 and meta.get("input_layout", "NCHW") == "NCHW":
                body.append("    format: FORMAT_NCHW")
            body.append(f"    dims: [ {', '.join(str(v) for v in dims(io['dims']))} ]")
            if key == "output" and is_classifier and classes:
                body.append(f"    label_filename: {_q('labels.txt')}")
            blocks.append("  {\n" + "\n".join(body) + "\n  }")
        lines.append(",\n".join(blocks))
        lines.append("]")
    if dynamic:
        pref = preferred_batch_sizes or tuple(b for b in (1, 4, 8, 16, 32) if b <= mbs)
        lines.append("dynamic_batching {")
        lines.append(f"  preferred_batch_size: [ {', '.join(str(b) for b in pref)} ]")
        lines.append(f"  max_queue_delay_microseconds: {max_queue_delay_microseconds}")
        lines.append("}")
    lines.append(f"instance_group [\n  {{\n    count: {instance_count}\n    kind: {instance_kind}\n  }}\n]")

    model_dir = Path(repo_dir) / name
    (model_dir / str(version)).mkdir(parents=True, exist_ok=True)
    target = model_dir / str(version) / fname
    if platform == "tensorrt_plan":
        atomic_write_bytes(target, plan_bytes)
    else:
        tmp = target.with_name(f".{fname}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    if classes and is_classifier:
        write_labels(meta, model_dir / "labels.txt")
    cfg = model_dir / "config.pbtxt"
    atomic_write_text(cfg, "\n".join(lines) + "\n")
    return cfg


__all__ = ["SecondaryGie", "network_type", "write_deepstream_config", "write_triton_repo", "write_labels"]
