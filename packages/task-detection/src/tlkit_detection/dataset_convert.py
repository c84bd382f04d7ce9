"""`tlkit detection dataset_convert -d export_spec.yaml -o OUT`: KITTI / VOC / COCO -> sharded RecordIO
(default), or to KITTI label folders (`--output_format kitti`) or a COCO json (`--output_format coco`).

The `-d` file holds the dataset_export_config section (kitti_config / voc_config / coco_config, classes),
either at its top level or under `dataset_export_config:` of a full experiment spec, in YAML or as TLT's
protobuf-text dataset export spec (`kitti_config { ... }`). Relative paths in it are relative to the file's
folder (TLT's kitti_sequence_to_frames_file: to the dataset root, as TLT reads it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.config import load_spec, read_spec_source, read_spec_text
from tlkit.errors import SpecError, TlkitError
from tlkit.images import IMAGE_EXTENSIONS
from tlkit.io import atomic_write_text
from tlkit_detection.config import (
    CocoSourceConfig,
    DatasetExportConfig,
    DetectionConfig,
    KittiSourceConfig,
    PartitionConfig,
    VocSourceConfig,
)
from tlkit_detection.convert import ConvertReport, Sample, write_coco, write_kitti

TASK = "detection"

if TYPE_CHECKING:
    from tlkit.context import CommandContext

OUTPUT_FORMATS = ("recordio", "kitti", "coco")


def load_export_config(
    path: Path | None, overrides: list[str] | None = None, spec: Any = None
) -> tuple[DatasetExportConfig, Path]:
    """The export config from `-d` (or, without it, the -e spec's dataset_export_config) and its base folder."""
    if path is None:
        if spec is not None and isinstance(spec, DetectionConfig) and spec.dataset_export_config.source() is not None:
            return spec.dataset_export_config, Path.cwd()
        raise SpecError("tlkit detection dataset_convert: -d/--dataset_export_spec is required")
    read_spec_text(path, "dataset export spec")  # missing, a folder or not UTF-8: said so, naming the -d file
    try:
        top = read_spec_source(path, DetectionConfig).tree
    except SpecError:
        top = {}  # load_spec reports the error with its line
    if "dataset_export_config" in top:
        cfg = load_spec(path, DetectionConfig, overrides).dataset_export_config
    else:
        cfg = load_spec(path, DatasetExportConfig, overrides)
    return cfg, path.parent


def dataset_format(name: str) -> Any:
    """The `load(source, options) -> (samples, report)` of the registered detection dataset format `name`."""
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    return resolve(get_registry().dataset_format(TASK, name).load)


def read_source(
    cfg: DatasetExportConfig, base: Path
) -> tuple[list[Sample], ConvertReport, str | None, Any, list | None]:
    """(samples, report, image extension, the source config with absolute list paths, folds): `folds` (frame
    ids per fold) when the source fixes them (a list of COCO files: one fold per file, as TLT), else None.
    The spec's section names the dataset format that reads it (kitti_config: `kitti`, ...)."""
    src = cfg.source()
    if src is None:
        raise SpecError("dataset export spec: give exactly one of kitti_config, voc_config, coco_config")
    classes = cfg.classes or None
    rel = lambda p: Path(p) if Path(p).is_absolute() else base / p  # noqa: E731
    # list and sequence files are relative to the spec's folder, like every path in it
    src = src.model_copy(
        update={
            k: str(rel(v))
            for k in ("kitti_sequence_to_frames_file", "val_list", "train_list")
            if (v := getattr(src, k))
        }
    )
    options = {**src.model_dump(), "classes": classes}
    if isinstance(src, KittiSourceConfig):
        ext = src.image_extension or infer_extension(rel(src.root_directory_path) / src.image_dir_name)
        samples, report = dataset_format("kitti")(rel(src.root_directory_path), {**options, "image_extension": ext})
        return samples, report, ext, src, None
    if isinstance(src, VocSourceConfig):
        samples, report = dataset_format("voc")(rel(src.root_directory_path), options)
        return samples, report, None, src, None
    assert isinstance(src, CocoSourceConfig)
    files, dirs = src.annotation_file, src.image_directory_path
    load_coco = dataset_format("coco")
    if not isinstance(files, list):
        samples, report = load_coco(rel(files), {**options, "image_directory_path": rel(dirs)})
        return samples, report, None, src, None
    samples, report, folds = [], ConvertReport(), []
    for f, d in zip(files, dirs if isinstance(dirs, list) else [dirs] * len(files)):
        part, rep = load_coco(rel(f), {**options, "image_directory_path": rel(d)})
        samples += part
        folds.append([s.frame_id for s in part])
        report.merge(rep)
    return samples, report, None, src, folds


def read_input(
    name: str, source: Path | None, spec: Path | None
) -> tuple[list[Sample], ConvertReport, None, PartitionConfig, None]:
    """`--input_format NAME -i SOURCE`: read SOURCE with the registered dataset format NAME (any plugin's); RecordIO
    output is split as PartitionConfig's defaults say (random: 14% validation fold, 10 shards per fold)."""
    if source is None:
        raise TlkitError(f"--input_format {name}: -i/--input (the dataset to read) is required")
    if spec is not None:
        raise TlkitError(f"--input_format {name} reads -i {source}; drop -d {spec} (a spec names its own source)")
    samples, report = dataset_format(name)(Path(source), {"classes": None})
    return samples, report, None, PartitionConfig(), None


def infer_extension(image_dir: Path) -> str | None:
    """The image extension an image folder holds (None when it holds several kinds: all are converted)."""
    if not image_dir.is_dir():
        return None  # read_kitti reports the missing folder
    found = {p.suffix.lower() for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    return found.pop().lstrip(".") if len(found) == 1 else None


def run(ctx: CommandContext) -> dict:
    fmt = ctx.option("output_format")
    if fmt not in OUTPUT_FORMATS:
        raise TlkitError(f"--output_format: {fmt!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    if ctx.output is None:
        raise TlkitError("tlkit detection dataset_convert: -o/--output is required (records prefix, folder or .json)")
    if ctx.option("input_format"):
        samples, report, ext, src, folds = read_input(
            ctx.option("input_format"), ctx.option("input"), ctx.option("dataset_export_spec")
        )
    else:
        if ctx.option("input") is not None:
            raise TlkitError(
                f"-i {ctx.option('input')}: give --input_format NAME to say how to read it "
                "(the -d spec names its own source)"
            )
        cfg, base = load_export_config(ctx.option("dataset_export_spec"), ctx.overrides, ctx.spec)
        samples, report, ext, src, folds = read_source(cfg, base)
    ctx.console.print(f"Read {report.summary()}", markup=False, soft_wrap=True)
    out = Path(ctx.output)
    if fmt == "recordio":
        from tlkit_detection.records import write_records

        manifest = write_records(samples, out, src, report, ext, folds=folds)
        per_fold = ", ".join(f"fold {i}: {n}" for i, n in enumerate(manifest["frames_per_fold"]))
        ctx.console.print(f"Wrote {len(manifest['shards'])} RecordIO shards ({per_fold} frames) and {out}.json")
        if manifest["frames_in_no_fold"]:
            ctx.console.print(
                f"[yellow]{manifest['frames_in_no_fold']} frames are in neither train_list nor val_list "
                f"and were not written[/]"
            )
        return {"manifest": f"{out}.json", "report": report.to_dict()}
    if fmt == "kitti":
        write_kitti(samples, out, link_images=not ctx.option("copy_images"))
        atomic_write_text(out / "convert_report.json", json.dumps(report.to_dict(), indent=1))
        ctx.console.print(f"Wrote KITTI labels to {out / 'labels'} and images to {out / 'images'}")
        return {"output": str(out), "report": report.to_dict()}
    write_coco(samples, out, cfg.classes or None)
    atomic_write_text(out.with_suffix(".report.json"), json.dumps(report.to_dict(), indent=1))
    ctx.console.print(f"Wrote COCO json {out}")
    return {"output": str(out), "report": report.to_dict()}
