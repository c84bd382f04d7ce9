"""Entry-point module of tlkit_detection: hook implementations only (no heavy imports).

Every callable is a "module:attr" string resolved on first use, so `tlkit --help` never imports MXNet.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tlkit import hookimpl
from tlkit.cli.options import CALIBRATION_OPTIONS, CASCADE_OPTIONS, INFERENCE_OPTIONS, TRAIN_OPTIONS
from tlkit.commands import compress_command, export_command, prune_command
from tlkit.types import CommandSpec, DatasetFormatSpec, OptionSpec, Stage, TaskSpec

TASK = "detection"
_PKG = "tlkit_detection"

DATASET_CONVERT_OPTIONS = (
    OptionSpec(
        "dataset_export_spec",
        ("-d", "--dataset_export_spec"),
        Path,
        None,
        "YAML with kitti_config / voc_config / coco_config (TLT dataset_export_spec); default: -e's dataset_export_config",
    ),
    OptionSpec(
        "output_format",
        ("--output_format",),
        str,
        "recordio",
        "recordio: sharded .rec/.idx folds under the -o prefix; kitti: a KITTI folder at -o; coco: a COCO json at -o",
        choices=("recordio", "kitti", "coco"),
    ),
    OptionSpec("copy_images", ("--copy_images",), bool, False, "kitti output: copy images instead of symlinking them"),
    OptionSpec(
        "input_format",
        ("--input_format",),
        str,
        None,
        "convert -i with this registered dataset format (`tlkit plugins` lists them) instead of a -d spec",
    ),
    OptionSpec("input", ("-i", "--input"), Path, None, "--input_format: the dataset (folder or file) to read"),
)
# the batch size defaults to the spec's inference_config.batch_size (TLT's inferencer_config.batch_size)
INFER_OPTIONS = (
    *(
        dataclasses.replace(o, default=None, help="images per forward pass (default: inference_config.batch_size)")
        if o.name == "batch_size"
        else o
        for o in INFERENCE_OPTIONS
    ),
    *CASCADE_OPTIONS,
)
EVALUATE_OPTIONS = (
    OptionSpec(
        "predictions",
        ("--predictions", "--prediction_dir"),
        Path,
        None,
        "folder of KITTI prediction files (16th field = score)",
    ),
    OptionSpec("labels", ("-l", "--labels", "--label_dir"), Path, None, "folder of KITTI ground-truth label files"),
    OptionSpec(
        "kitti_difficulty", ("--kitti_difficulty",), bool, False, "also report KITTI easy/moderate/hard AP11/AP40"
    ),
    OptionSpec(
        "use_training_set",
        ("--use_training_set",),
        bool,
        False,
        "-m: evaluate on the training split instead of validation",
    ),
    OptionSpec(
        "batch_size",
        ("-b", "--batch_size"),
        int,
        None,
        "-m: batch size (default: train_config.batch_size_per_gpu)",
        min=1,
    ),
)


@hookimpl
def tlkit_register_tasks():
    yield TaskSpec(
        name=TASK,
        summary="2D object detection (TLT DetectNet_v2 parity): convert, train, evaluate, infer, prune, export.",
        config_model=f"{_PKG}.config:DetectionConfig",
        build_model=f"{_PKG}.detectors:build_from_meta",  # by the model file's detector
        dataset_spec_model=f"{_PKG}.config:DatasetExportConfig",
        train_job=f"{_PKG}.train:build_job",
        commands=(
            CommandSpec(
                "train",
                f"{_PKG}.train:run",
                "Train DetectNet_v2 (or retrain a pruned graph with load_graph: true).",
                TRAIN_OPTIONS,
                stage=Stage.TRAIN,
            ),
            CommandSpec(
                "dataset_convert",
                f"{_PKG}.dataset_convert:run",
                "Convert KITTI / Pascal VOC / COCO to sharded RecordIO folds (or to KITTI / COCO), reporting label problems.",
                DATASET_CONVERT_OPTIONS,
                needs_spec=False,
                needs_results_dir=False,
                stage=Stage.DATASET_CONVERT,
                overrides_option="dataset_export_spec",
            ),
            CommandSpec(
                "evaluate",
                f"{_PKG}.evaluate:run",
                "Score a model (-m .tlk/.onnx on the validation split) or KITTI prediction files: TLT AP, PR curves, KITTI difficulty.",
                EVALUATE_OPTIONS,
                needs_spec=False,
                needs_results_dir=False,
                stage=Stage.EVALUATE,
            ),
            CommandSpec(
                "inference",
                f"{_PKG}.inference:run",
                "Detect objects in an image, a folder, a .txt list of images or a video: annotated images/video + KITTI labels; --secondary CLASSIFIER runs the detector -> classifier cascade.",
                INFER_OPTIONS,
                needs_spec=False,
                stage=Stage.INFERENCE,
            ),
            prune_command("Structured channel pruning (TLT magnet_prune flags); the heads keep their size."),
            compress_command(),
            export_command("Export to ONNX (output_cov, output_bbox) and int8/DeepStream/Triton artefacts."),
            CommandSpec(
                "calibration_tensorfile",
                f"{_PKG}.calibration:run",
                "Dump preprocessed training batches to a TLT HDF5 tensorfile for int8 calibration.",
                CALIBRATION_OPTIONS,
                needs_results_dir=False,
                stage=Stage.CALIBRATION,
            ),
        ),
    )


@hookimpl
def tlkit_register_dataset_formats():
    yield DatasetFormatSpec("kitti", TASK, f"{_PKG}.convert:load_kitti", "KITTI images/ + labels/ text files")
    yield DatasetFormatSpec("voc", TASK, f"{_PKG}.convert:load_voc", "Pascal VOC Annotations/ + JPEGImages/")
    yield DatasetFormatSpec("coco", TASK, f"{_PKG}.convert:load_coco", "COCO detection json + image folder")
