"""`tlkit <task> export -m MODEL.tlk -o OUT.onnx [--data_type int8 --cal_data_file cal.h5 ...]`.

Every task lists this command with `tlkit.cli.options.EXPORT_OPTIONS`::

    CommandSpec("export", run="tlkit.export.command:run", options=EXPORT_OPTIONS,
                needs_spec=False, needs_results_dir=False, stage=Stage.EXPORT)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.cli.options import EXPORT_OPTIONS, with_defaults
from tlkit.errors import SpecError, TlkitError

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def export_with_options(model: Any, output: Path, options: dict[str, Any]) -> Path:
    """The ExporterSpec("onnx") callable: `model` is a .tlk path; `options` are EXPORT_OPTIONS values (a missing
    one takes its OptionSpec default)."""
    return _export(Path(model), Path(output), with_defaults(EXPORT_OPTIONS, options))[0]


def _calibration_batches(model: Path, options: dict[str, Any]) -> list | None:
    from tlkit.export.calibration import batches_from_images
    from tlkit.export.tensorfile import read_tensorfile

    n = int(options["batches"])
    if options.get("cal_data_file"):
        batches = list(read_tensorfile(options["cal_data_file"], max_batches=n))
        if batches and isinstance(batches[0], dict):
            raise SpecError(
                f"{options['cal_data_file']}: holds dicts of arrays; export calibrates a single-input model"
            )
        return batches
    if options.get("cal_image_dir"):
        from tlkit.model_io import read_meta

        return batches_from_images(options["cal_image_dir"], read_meta(model), n, int(options["batch_size"]))
    return None


def _export(model: Path, output: Path, options: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    """`options`: every EXPORT_OPTIONS value (with_defaults)."""
    from tlkit.export.onnx_export import export_onnx

    data_type = options["data_type"]
    extra: dict[str, Any] = {}
    cache = options.get("cal_cache_file")
    if data_type == "int8":
        from tlkit.model_io import read_meta

        force_ptq = bool(options["force_ptq"])
        qat = bool(read_meta(model).get("qat")) and not force_ptq  # learned ranges: no calibration data
        batches = None if qat else _calibration_batches(model, options)
        if (batches is not None or qat) and cache is None:
            cache = output.parent / "cal.bin"  # TLT's default name, next to the model
        extra = {
            "cal_batches": batches,
            "calibration_method": options["calibration_method"],
            "cal_cache_file": cache,
            "qdq_format": options["qdq_format"],
            "cal_json_file": options["cal_json_file"],
            "force_ptq": force_ptq,
            "quantize_output_heads": bool(options.get("quantize_output_heads")),
        }
    path = export_onnx(
        model,
        output,
        opset=options.get("opset"),
        static_batch_size=int(options["static_batch_size"]),
        data_type=data_type,
        **extra,
    )
    return path, {"cal_cache_file": cache if data_type == "int8" else None}


DEFAULT_FORMAT = "onnx"
_ONNX_ONLY = ("gen_ds_config", "gen_triton_repo")  # deployment configs describe an ONNX model


def exporter_for(name: str | None, task: str | None) -> tuple[Any, Any]:
    """(ExporterSpec, its export callable) of the registered exporter `name` (None: `onnx`), after checking it
    exports `task`'s models; an unknown name is an error naming the installed exporters."""
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    spec = get_registry().exporter(name or DEFAULT_FORMAT)
    if spec.tasks is not None and task is not None and task not in spec.tasks:
        raise TlkitError(
            f"--format {spec.name}: exports {', '.join(sorted(spec.tasks))} models, not {task!r} ones "
            f"(from {spec.distribution})"
        )
    return spec, resolve(spec.export)


def run(ctx: CommandContext) -> dict[str, Any]:
    """Export ctx.model with the exporter --format names (default onnx) to ctx.output (default: MODEL with the
    exporter's suffix), plus, for ONNX, the asked-for deployment configs."""
    if ctx.model is None:
        raise TlkitError(f"tlkit {ctx.task} export: -m/--model (a .tlk model file) is required")
    model = Path(ctx.model)
    if model.suffix.lower() == ".onnx":
        raise TlkitError(f"{model}: already ONNX; export takes a .tlk model file")
    from tlkit.model_io import read_meta

    model_task = read_meta(model).get("task")
    if model_task and ctx.task and model_task != ctx.task:
        raise TlkitError(f"{model}: a {model_task!r} model; export it with `tlkit {model_task} export`")
    opts = with_defaults(EXPORT_OPTIONS, ctx.options)
    spec, export = exporter_for(opts["format"], model_task or ctx.task)
    output = Path(ctx.output) if ctx.output else (ctx.results_dir or model.parent) / (model.stem + spec.suffix)
    if spec.suffix and output.suffix.lower() != spec.suffix:
        output = output.with_name(output.name + spec.suffix)
    asked = [f"--{name}" for name in _ONNX_ONLY if opts.get(name)]
    if asked and spec.suffix != ".onnx":
        raise TlkitError(
            f"{' and '.join(asked)}: deployment configs describe an ONNX model; --format {spec.name} "
            f"writes {spec.suffix or 'another format'}"
        )
    if export is export_with_options:  # core's ONNX exporter: it also reports the int8 calibration cache it wrote
        path, info = _export(model, output, opts)
    else:
        path, info = Path(export(model, output, opts)), {}
    if path.suffix.lower() != ".onnx":
        ctx.console.print(f"Exported {model} -> {path} ({spec.name})")
        return {"output": str(path), "format": spec.name}
    return _onnx_outputs(ctx, model, path, info, opts)


def _onnx_outputs(
    ctx: CommandContext, model: Path, path: Path, info: dict[str, Any], opts: dict[str, Any]
) -> dict[str, Any]:
    """Report an exported ONNX file and write the deployment configs the flags ask for."""
    from tlkit.export.onnx_export import read_onnx_metadata

    meta = read_onnx_metadata(path)
    outputs: dict[str, Any] = {"onnx": str(path), "data_type": meta.get("data_type")}
    batch = meta.get("batch")
    ctx.console.print(
        f"Exported {model} -> {path} ({meta.get('data_type')}, "
        f"{'dynamic batch' if batch == 'batch' else f'batch {batch}'}, opset {meta.get('opset')})"
    )
    if meta.get("quantization") == "qat":
        ctx.console.print("int8 from the learned ranges of quantization-aware training (no calibration)")
    if info.get("cal_cache_file"):
        outputs["cal_cache_file"] = str(info["cal_cache_file"])
        ctx.console.print(f"Calibration cache: {info['cal_cache_file']}")
    if opts.get("gen_ds_config"):
        from tlkit.export.deploy import write_deepstream_config

        cfg = write_deepstream_config(
            path, meta, path.parent, int8_calib_file=info.get("cal_cache_file"), **deepstream_options(opts)
        )
        outputs["deepstream_config"] = str(cfg)
        ctx.console.print(f"DeepStream config: {cfg}")
    if opts.get("gen_triton_repo"):
        from tlkit.export.deploy import write_triton_repo

        name = str(meta.get("arch") or path.stem).replace("/", "_")
        source = path
        if opts["triton_platform"] == "tensorrt_plan":
            source = build_engine_for(path, meta, opts)
            outputs["engine"] = str(source)
            ctx.console.print(f"TensorRT engine: {source}")
        cfg = write_triton_repo(source, meta, Path(opts["gen_triton_repo"]), name)
        outputs["triton_config"] = str(cfg)
        ctx.console.print(f"Triton model repository: {cfg.parent}")
    return outputs


def deepstream_options(opts: dict[str, Any]) -> dict[str, Any]:
    """write_deepstream_config keywords from the export/deploy flags (--ds_secondary and friends)."""
    from tlkit.export.deploy import SecondaryGie, parse_class_ids

    opts = with_defaults(EXPORT_OPTIONS, opts)
    kw: dict[str, Any] = {"classifier_threshold": float(opts["classifier_threshold"])}
    gie_id = opts["gie_unique_id"]  # None: 1 for a primary GIE, 2 for a secondary one
    if opts["ds_secondary"]:
        kw["secondary"] = SecondaryGie(
            operate_on_gie_id=int(opts["operate_on_gie_id"]),
            operate_on_class_ids=parse_class_ids(opts["operate_on_class_ids"]),
            gie_unique_id=2 if gie_id is None else int(gie_id),
            input_object_min_width=int(opts["input_object_min_width"]),
            input_object_min_height=int(opts["input_object_min_height"]),
            classifier_async_mode=bool(int(opts["classifier_async_mode"])),
        )
    elif gie_id is not None:
        kw["gie_unique_id"] = int(gie_id)
    return kw


def build_engine_for(onnx_path: Path, meta: dict[str, Any], opts: dict[str, Any]) -> Path:
    """A TensorRT engine beside the ONNX, built by the installed engine backend that builds (tlkit-tensorrt)."""
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    builders = [b for b in get_registry().engine_backends().values() if getattr(b, "build", None)]
    if not builders:
        raise TlkitError(
            "--triton_platform tensorrt_plan needs an engine backend that builds TensorRT engines: "
            "pip install tlkit-tensorrt (with TensorRT or TensorRT-RTX)"
        )
    why = resolve(builders[0].available)()
    engine = onnx_path.with_suffix(".engine")
    data_type = meta.get("data_type") or "fp32"
    try:
        return resolve(builders[0].build)(onnx_path, engine, {"data_type": data_type})
    except TlkitError:
        raise
    except Exception as err:  # the builder's own failure, with the backend's reason when it has one
        raise TlkitError(
            f"building a TensorRT engine from {onnx_path} failed: {err}" + (f" ({why})" if why else "")
        ) from None
