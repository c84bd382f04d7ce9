"""`tlkit <task> export -m MODEL.tlk -o OUT.onnx [--data_type int8 --cal_data_file cal.h5 ...]`.

Every task lists this command with `tlkit.cli.options.EXPORT_OPTIONS`::

    CommandSpec("export", run="tlkit.export.command:run", options=EXPORT_OPTIONS,
                needs_spec=False, needs_results_dir=False, stage=Stage.EXPORT)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tlkit.errors import SpecError, TlkitError


def export_with_options(model: Any, output: Path, options: dict[str, Any]) -> Path:
    """The ExporterSpec("onnx") callable: `model` is a .tlk path; `options` are EXPORT_OPTIONS values."""
    return _export(Path(model), Path(output), options)[0]


def _calibration_batches(model: Path, options: dict[str, Any]) -> list | None:
    from tlkit.export.calibration import batches_from_images, read_tensorfile

    n = int(options.get("batches") or 10)
    if options.get("cal_data_file"):
        batches = list(read_tensorfile(options["cal_data_file"], max_batches=n))
        if batches and isinstance(batches[0], dict):
            raise SpecError(
                f"{options['cal_data_file']}: holds dicts of arrays; export calibrates a single-input model"
            )
        return batches
    if options.get("cal_image_dir"):
        from tlkit.model_io import read_meta

        return batches_from_images(options["cal_image_dir"], read_meta(model), n, int(options.get("batch_size") or 16))
    return None


def _export(model: Path, output: Path, options: dict[str, Any]) -> tuple[Path, dict[str, Any]]:
    from tlkit.export.onnx_export import export_onnx

    data_type = options.get("data_type") or "fp32"
    extra: dict[str, Any] = {}
    cache = options.get("cal_cache_file")
    if data_type == "int8":
        from tlkit.model_io import read_meta

        force_ptq = bool(options.get("force_ptq"))
        qat = bool(read_meta(model).get("qat")) and not force_ptq  # learned ranges: no calibration data
        batches = None if qat else _calibration_batches(model, options)
        if (batches is not None or qat) and cache is None:
            cache = output.parent / "cal.bin"  # TLT's default name, next to the model
        extra = {"cal_batches": batches, "calibration_method": options.get("calibration_method") or "entropy",
                 "cal_cache_file": cache, "qdq_format": options.get("qdq_format") or "tensorrt",
                 "cal_json_file": options.get("cal_json_file"), "force_ptq": force_ptq}
    path = export_onnx(
        model,
        output,
        opset=options.get("opset"),
        static_batch_size=int(options.get("static_batch_size") or -1),
        data_type=data_type,
        **extra,
    )
    return path, {"cal_cache_file": cache if data_type == "int8" else None}


def run(ctx: Any) -> dict[str, Any]:
    """Export ctx.model to ONNX at ctx.output (default: MODEL with .onnx), plus the asked-for configs."""
    from tlkit.export.onnx_export import read_onnx_metadata

    if ctx.model is None:
        raise TlkitError(f"tlkit {ctx.task} export: -m/--model (a .tlk model file) is required")
    model = Path(ctx.model)
    if model.suffix.lower() == ".onnx":
        raise TlkitError(f"{model}: already ONNX; export takes a .tlk model file")
    from tlkit.model_io import read_meta

    model_task = read_meta(model).get("task")
    if model_task and ctx.task and model_task != ctx.task:
        raise TlkitError(f"{model}: a {model_task!r} model; export it with `tlkit {model_task} export`")
    output = Path(ctx.output) if ctx.output else (ctx.results_dir or model.parent) / (model.stem + ".onnx")
    if output.suffix.lower() != ".onnx":
        output = output.with_name(output.name + ".onnx")
    opts = dict(ctx.options)
    path, info = _export(model, output, opts)
    meta = read_onnx_metadata(path)
    outputs: dict[str, Any] = {"onnx": str(path), "data_type": meta.get("data_type")}
    batch = meta.get("batch")
    ctx.console.print(f"Exported {model} -> {path} ({meta.get('data_type')}, "
                      f"{'dynamic batch' if batch == 'batch' else f'batch {batch}'}, opset {meta.get('opset')})")
    if meta.get("quantization") == "qat":
        ctx.console.print("int8 from the learned ranges of quantization-aware training (no calibration)")
    if info.get("cal_cache_file"):
        outputs["cal_cache_file"] = str(info["cal_cache_file"])
        ctx.console.print(f"Calibration cache: {info['cal_cache_file']}")
    if opts.get("gen_ds_config"):
        from tlkit.export.deploy import write_deepstream_config

        cfg = write_deepstream_config(path, meta, path.parent, int8_calib_file=info.get("cal_cache_file"))
        outputs["deepstream_config"] = str(cfg)
        ctx.console.print(f"DeepStream config: {cfg}")
    if opts.get("gen_triton_repo"):
        from tlkit.export.deploy import write_triton_repo

        name = str(meta.get("arch") or path.stem).replace("/", "_")
        cfg = write_triton_repo(path, meta, Path(opts["gen_triton_repo"]), name)
        outputs["triton_config"] = str(cfg)
        ctx.console.print(f"Triton model repository: {cfg.parent}")
    return outputs
