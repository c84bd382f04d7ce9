"""Entry-point module of tlkit_detection: hook implementations only (no heavy imports).

Every callable is a "module:attr" string resolved on first use, so `tlkit --help` never imports MXNet.
This round registers only the commands that fully work without a model: dataset_convert and evaluate
(--predictions/--labels). train/prune/export/inference arrive with the DetectNet_v2 model.
"""

from __future__ import annotations

from pathlib import Path

from tlkit import hookimpl
from tlkit.types import CommandSpec, DatasetFormatSpec, OptionSpec, Stage, TaskSpec

TASK = "detection"
_PKG = "tlkit_detection"

DATASET_CONVERT_OPTIONS = (
    OptionSpec(
        "dataset_export_spec", ("-d", "--dataset_export_spec"), Path, None,
        "YAML with kitti_config / voc_config / coco_config (TLT dataset_export_spec); default: -e's dataset_export_config",
    ),
    OptionSpec(
        "output_format", ("--output_format",), str, "recordio",
        "recordio: sharded .rec/.idx folds under the -o prefix; kitti: a KITTI folder at -o; coco: a COCO json at -o",
        choices=("recordio", "kitti", "coco"),
    ),
    OptionSpec("copy_images", ("--copy_images",), bool, False, "kitti output: copy images instead of symlinking them"),
)
EVALUATE_OPTIONS = (
    OptionSpec("predictions", ("--predictions", "--prediction_dir"), Path, None, "folder of KITTI prediction files (16th field = score)"),
    OptionSpec("labels", ("-l", "--labels", "--label_dir"), Path, None, "folder of KITTI ground-truth label files"),
    OptionSpec("kitti_difficulty", ("--kitti_difficulty",), bool, False, "also report KITTI easy/moderate/hard AP11/AP40"),
)


@hookimpl
def tlkit_register_tasks():
    yield TaskSpec(
        name=TASK,
        summary="2D object detection (TLT DetectNet_v2 parity): dataset conversion and evaluation of KITTI predictions.",
        config_model=f"{_PKG}.config:DetectionConfig",
        commands=(
            CommandSpec(
                "dataset_convert", f"{_PKG}.dataset_convert:run",
                "Convert KITTI / Pascal VOC / COCO to sharded RecordIO folds (or to KITTI / COCO), reporting label problems.",
                DATASET_CONVERT_OPTIONS, needs_spec=False, needs_results_dir=False, stage=Stage.DATASET_CONVERT,
            ),
            CommandSpec(
                "evaluate", f"{_PKG}.evaluate:run",
                "Score KITTI prediction files against KITTI labels: per-class AP (TLT) and optional KITTI difficulty AP.",
                EVALUATE_OPTIONS, needs_spec=False, needs_results_dir=False, stage=Stage.EVALUATE,
            ),
        ),
    )


@hookimpl
def tlkit_register_dataset_formats():
    yield DatasetFormatSpec("kitti", TASK, f"{_PKG}.convert:read_kitti", "KITTI images/ + labels/ text files")
    yield DatasetFormatSpec("voc", TASK, f"{_PKG}.convert:read_voc", "Pascal VOC Annotations/ + JPEGImages/")
    yield DatasetFormatSpec("coco", TASK, f"{_PKG}.convert:read_coco", "COCO detection json + image folder")
