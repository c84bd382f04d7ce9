"""`tlkit deploy deepstream --primary DET.onnx --secondary CLS.onnx -o DIR`: a complete deepstream-app config
for a detector -> classifier cascade (tlkit.export.deepstream_app)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

deploy_app = typer.Typer(no_args_is_help=True, add_completion=False)


@deploy_app.command("deepstream")
def deepstream(
    primary: Path = typer.Option(..., "--primary", help="Exported detector (.onnx): the primary GIE."),
    secondary: Path = typer.Option(
        ..., "--secondary", help="Exported classifier (.onnx): the secondary GIE on its objects."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Folder to write the configs and labels to."),
    source_uri: str = typer.Option(
        "file:///opt/nvidia/deepstream/deepstream/samples/streams/sample_720p.mp4",
        "--source_uri",
        help="deepstream-app [source0] uri (file://, rtsp://).",
    ),
    operate_on_class_ids: Optional[str] = typer.Option(
        None, "--operate_on_class_ids", help="Detector class ids to classify, e.g. '0;2' (default: all)."
    ),
    classifier_threshold: float = typer.Option(
        0.5, "--classifier_threshold", help="Attach a label at this probability or above."
    ),
    input_object_min_width: int = typer.Option(16, "--input_object_min_width", help="Skip narrower objects (px)."),
    input_object_min_height: int = typer.Option(16, "--input_object_min_height", help="Skip shorter objects (px)."),
    batch_size: int = typer.Option(1, "--batch_size", help="Streams batched together (primary batch size)."),
    width: int = typer.Option(1280, "--width", help="Streammux width."),
    height: int = typer.Option(720, "--height", help="Streammux height."),
    no_tracker: bool = typer.Option(False, "--no_tracker", help="No tracker (the classifier then runs synchronously)."),
    sink: str = typer.Option("file", "--sink", help="file (annotated mp4), fake or display."),
) -> None:
    """Write deepstream_app_config.txt + both nvinfer configs for a detector -> classifier cascade."""
    from tlkit.export.deepstream_app import write_deepstream_app
    from tlkit.export.deploy import SecondaryGie, parse_class_ids

    sgie = SecondaryGie(
        operate_on_class_ids=parse_class_ids(operate_on_class_ids),
        input_object_min_width=input_object_min_width,
        input_object_min_height=input_object_min_height,
    )
    paths = write_deepstream_app(
        primary,
        secondary,
        output,
        source_uri=source_uri,
        secondary_gie=sgie,
        classifier_threshold=classifier_threshold,
        batch_size=batch_size,
        width=width,
        height=height,
        tracker=not no_tracker,
        sink=sink,
    )
    for role, path in paths.items():
        typer.echo(f"{role}: {path}")
    typer.echo(paths["app"].read_text().splitlines()[2])  # the primary's line: complete, or what to build first
