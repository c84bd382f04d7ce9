"""Entry-point module of tlkit_classification: hook implementations only (no heavy imports).

Every callable is a "module:attr" string resolved on first use, so `tlkit --help` never imports MXNet.
"""

from __future__ import annotations

from pathlib import Path

from tlkit import hookimpl
from tlkit.cli.options import CALIBRATION_OPTIONS, INFERENCE_OPTIONS
from tlkit.cli.options import TRAIN_OPTIONS as COMMON_TRAIN_OPTIONS
from tlkit.commands import compress_command, export_command, prune_command
from tlkit.types import CommandSpec, DatasetFormatSpec, OptionSpec, Stage, TaskSpec

TASK = "classification"
_PKG = "tlkit_classification"

STRICT = OptionSpec("strict", ("--strict",), bool, False, "fail on the first unreadable image instead of skipping it")
CLASSMAP = OptionSpec(
    "classmap", ("-cm", "--classmap", "-c"), Path, None, "classmap.json ({class: index}) of the model"
)
TOP_K = OptionSpec("top_k", ("--top_k",), int, None, "report the top-k accuracy (default: eval_config.top_k)", min=1)

TRAIN_OPTIONS = (STRICT, CLASSMAP, *COMMON_TRAIN_OPTIONS)
EVALUATE_OPTIONS = (
    STRICT,
    CLASSMAP,
    TOP_K,
    OptionSpec("batch_size", ("-b", "--batch_size"), int, None, "batch size (default: eval_config.batch_size)", min=1),
)
INFER_OPTIONS = (
    *INFERENCE_OPTIONS,
    CLASSMAP,
    OptionSpec("top_k", ("--top_k",), int, 1, "report the k best classes", min=1),
)
DATASET_CONVERT_OPTIONS = (
    OptionSpec(
        "mode",
        ("--mode",),
        str,
        "split",
        "split: one class-folder set into train/val/test; voc: Pascal VOC to class folders",
        choices=("split", "voc"),
    ),
    OptionSpec(
        "input", ("-i", "--input"), Path, None, "the dataset to convert (class-folder dir, or VOC root)", required=True
    ),
    OptionSpec(
        "ratios",
        ("--ratios",),
        str,
        None,
        "train,val[,test] fractions, e.g. 0.7,0.2,0.1 (split mode default; optional for voc)",
    ),
    OptionSpec("seed", ("--seed",), int, 42, "random seed of the split"),
    OptionSpec("link", ("--link",), bool, False, "symlink images instead of copying them"),
    OptionSpec(
        "voc_label",
        ("--voc_label",),
        str,
        "crop",
        "voc: one crop per object, or each image labelled by its largest object",
        choices=("crop", "dominant"),
    ),
    OptionSpec(
        "image_set", ("--image_set",), str, None, "voc: only the ids in ImageSets/Main/<name>.txt (or in this id file)"
    ),
    OptionSpec("image_dir_name", ("--image_dir_name",), str, "JPEGImages", "voc: the image folder under the VOC root"),
    OptionSpec(
        "annotation_dir_name", ("--annotation_dir_name",), str, "Annotations", "voc: the XML folder under the VOC root"
    ),
    *(
        OptionSpec(
            f"{s}_list",
            (f"--{s}_list",),
            str,
            None,
            f"voc: a fixed split: the ids of {s}/ (an id file, or an ImageSets/Main name)",
        )
        for s in ("train", "val", "test")
    ),
    OptionSpec("min_size", ("--min_size",), int, 4, "voc crop: skip objects smaller than this (pixels)", min=0),
    OptionSpec("include_difficult", ("--include_difficult",), bool, False, "voc: also use objects marked difficult"),
    OptionSpec(
        "input_format",
        ("--input_format",),
        str,
        None,
        "read --input with this registered classification dataset format (`tlkit plugins` lists them) "
        "into class folders, like --mode voc",
    ),
)
DEMO_OPTIONS = (
    OptionSpec("data", ("--data",), Path, None, "a class-folder dataset to use instead of the generated one"),
    OptionSpec("epochs", ("--epochs",), int, None, "fine-tuning epochs (default: chosen for a ~3-5 minute run)"),
    OptionSpec("image_size", ("--image_size",), int, None, "network input size in pixels (default 96)"),
    OptionSpec("quick", ("--quick",), bool, False, "a smoke run: tiny data and one epoch per stage"),
)


@hookimpl
def tlkit_register_tasks():
    yield TaskSpec(
        name=TASK,
        summary="Image classification (TLT classification parity): train, evaluate, prune, export, infer.",
        config_model=f"{_PKG}.config:ClassificationConfig",
        build_model=f"{_PKG}.model:build_from_meta",
        train_job=f"{_PKG}.train:build_job",
        commands=(
            CommandSpec(
                "train",
                f"{_PKG}.train:run",
                "Train (or fine-tune, or retrain a pruned model).",
                TRAIN_OPTIONS,
                stage=Stage.TRAIN,
            ),
            CommandSpec(
                "evaluate",
                f"{_PKG}.evaluate:run",
                "Loss, top-k accuracy, per-class report and confusion matrix (.tlk or .onnx); -r also writes them.",
                EVALUATE_OPTIONS,
                needs_results_dir=False,
                stage=Stage.EVALUATE,
            ),
            CommandSpec(
                "inference",
                f"{_PKG}.inference:run",
                "Classify an image, a folder or a .txt list of images; writes result.csv.",
                INFER_OPTIONS,
                needs_spec=False,
                stage=Stage.INFERENCE,
            ),
            prune_command("Structured channel pruning (TLT magnet_prune flags)."),
            compress_command(),
            export_command("Export to ONNX (and int8/DeepStream/Triton artefacts)."),
            CommandSpec(
                "calibration_tensorfile",
                f"{_PKG}.calibration:run",
                "Dump preprocessed batches to a TLT HDF5 tensorfile for int8 calibration.",
                CALIBRATION_OPTIONS,
                needs_results_dir=False,
                stage=Stage.CALIBRATION,
            ),
            CommandSpec(
                "dataset_convert",
                f"{_PKG}.dataset_convert:run",
                "Split a class-folder set, or convert Pascal VOC to class folders.",
                DATASET_CONVERT_OPTIONS,
                needs_spec=False,
                needs_results_dir=False,
                stage=Stage.DATASET_CONVERT,
            ),
            CommandSpec(
                "demo",
                f"{_PKG}.demo:run",
                "The whole workflow on a generated dataset: fine-tune, evaluate, prune, retrain, export, infer.",
                DEMO_OPTIONS,
                needs_spec=False,
                stage=Stage.OTHER,
            ),
        ),
    )


@hookimpl
def tlkit_register_dataset_formats():
    # classification's own format, class folders, is what dataset_convert writes (and --mode split splits)
    yield DatasetFormatSpec(
        "voc",
        TASK,
        f"{_PKG}.dataset_convert:read_voc",
        "Pascal VOC, converted to class folders (crop or dominant object)",
    )
