"""`tlkit tensorrt convert|bench|info`: a typer sub-app added through `tlkit_register_commands`.

A sub-app rather than a task because tao-converter's flags (-e engine, -m max batch, -k key, ...) clash
with the common task flags (-e spec, -m model). Only typer here; the work is imported per command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="TensorRT engines: build from ONNX (tao-converter flags), benchmark, inspect.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("convert")
def convert(
    input_file: Path = typer.Argument(..., help="ONNX file (from `tlkit <task> export`)."),
    data_type: str = typer.Option("fp32", "-t", "--data_type", help="Engine precision: fp32, fp16 or int8."),
    profiles: Optional[list[str]] = typer.Option(
        None,
        "-p",
        "--profile",
        help="Optimisation profile <input>,<min>,<opt>,<max>, e.g. input,1x3x224x224,8x3x224x224,16x3x224x224 "
        "(repeat per input). Default for a dynamic batch: 1, max batch, max batch.",
    ),
    cal_cache_file: Optional[Path] = typer.Option(
        None, "-c", "--cal_cache_file", help="INT8 calibration cache, for an ONNX without Q/DQ (TensorRT <= 10)."
    ),
    workspace: int = typer.Option(1 << 30, "-w", "--max_workspace_size", help="Builder workspace in bytes."),
    engine_file: Path = typer.Option(Path("saved.engine"), "-e", "--engine_file", help="Output engine."),
    max_batch: int = typer.Option(16, "-m", "--max_batch_size", help="Largest batch of the default profile."),
    calib_batch: int = typer.Option(8, "-b", "--batch_size", help="Calibration batch size (with -c)."),
    strict_types: bool = typer.Option(False, "-s", "--strict_type_constraints", help="Obey precision constraints."),
    key: Optional[str] = typer.Option(None, "-k", "--key", help="Accepted for tao-converter compatibility (unused)."),
    plan: Optional[Path] = typer.Option(None, "--plan", help="Also write the bare engine here (Triton's model.plan)."),
    module: Optional[str] = typer.Option(None, "--trt_module", help="TensorRT module to use (default: first found)."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Print TensorRT's log."),
    as_json: bool = typer.Option(False, "--json", help="Print the engine header as JSON."),
) -> None:
    """Build a TensorRT engine from an ONNX file (the tao-converter equivalent)."""
    from tlkit.export.engine_file import read_engine_metadata, write_plan
    from tlkit_tensorrt.builder import build_engine

    path = build_engine(
        input_file,
        engine_file,
        data_type=data_type,
        profiles=profiles,
        cal_cache_file=cal_cache_file,
        workspace=workspace,
        max_batch=max_batch,
        calib_batch=calib_batch,
        strict_types=strict_types,
        module=module,
        verbose=verbose,
    )
    header = read_engine_metadata(path)
    if plan is not None:
        write_plan(path, plan)
    if as_json:
        typer.echo(json.dumps(header, indent=2))
        return
    eng = header["engine"]
    profs = (
        ", ".join(
            f"{p['name']} {'/'.join('x'.join(map(str, p[k])) for k in ('min', 'opt', 'max'))}" for p in eng["profiles"]
        )
        or "static shapes"
    )
    typer.echo(
        f"Built {path} ({eng['trt']['flavour']} {eng['trt']['version']}, {eng['precision']}, {profs}) "
        f"in {eng['build_seconds']:.2f} s, {eng['engine_bytes']} bytes"
    )
    for note in eng["notes"]:
        typer.echo(f"note: {note}")
    if plan is not None:
        typer.echo(f"Bare plan: {plan}")


@app.command("bench")
def bench_cmd(
    engine: Path = typer.Option(..., "-e", "--engine", help="Engine (.engine/.plan), or any model load_runner takes."),
    batch: int = typer.Option(1, "-b", "--batch", help="Batch size."),
    iterations: int = typer.Option(100, "-n", "--iterations", help="Timed iterations."),
    warmup: int = typer.Option(10, "--warmup", help="Untimed iterations first."),
    shape: Optional[str] = typer.Option(None, "--shape", help="CxHxW when the model's input size is not fixed."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Engine backend (default: by file suffix)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the results as JSON here."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
) -> None:
    """Throughput and latency percentiles (p50/p90/p95/p99) of an engine, like trtexec."""
    from tlkit.io import atomic_write_text
    from tlkit_tensorrt.bench import bench, format_report
    from tlkit_tensorrt.builder import parse_dims

    chw = parse_dims(shape, "--shape ") if shape else None
    result = bench(engine, backend=backend, batch=batch, iterations=iterations, warmup=warmup, shape=chw)
    if output is not None:
        atomic_write_text(output, json.dumps(result, indent=2))
    typer.echo(json.dumps(result, indent=2) if as_json else format_report(result))


@app.command("info")
def info_cmd(
    engine: Path = typer.Argument(..., help="A tlkit engine file."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole header as JSON."),
) -> None:
    """Show what an engine file holds: model metadata, TensorRT version, precision, profiles."""
    from tlkit.export.engine_file import read_engine_metadata

    header = read_engine_metadata(engine)
    if as_json:
        typer.echo(json.dumps(header, indent=2))
        return
    model, eng = header.get("model") or {}, header["engine"]
    typer.echo(
        f"{engine}: {eng['trt']['flavour']} {eng['trt']['version']}, {eng['precision']}, "
        f"{eng['engine_bytes']} bytes, built {eng['built_at']} from {eng['source_onnx']}"
    )
    typer.echo(
        f"model: task {model.get('task')}, arch {model.get('arch')}, classes {len(model.get('classes') or [])}, "
        f"input {model.get('input_shape')}"
    )
    for t in eng["inputs"] + eng["outputs"]:
        kind = "input " if t in eng["inputs"] else "output"
        typer.echo(f"  {kind} {t['name']}: {'x'.join(str(d) if d >= 0 else '?' for d in t['shape'])} {t['dtype']}")
    for p in eng["profiles"]:
        typer.echo(f"  profile {p['name']}: min {p['min']} opt {p['opt']} max {p['max']}")
