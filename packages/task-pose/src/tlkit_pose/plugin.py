"""Entry-point module of tlkit_pose: hook implementations only (no heavy imports).

Every callable is a "module:attr" string resolved on first use, so `tlkit --help` imports neither MXNet nor
OpenCV. prune is core's generic command (the heads are excluded through meta["prune_exclude"]); export is
core's, wrapped to add TLT's --sdk_compatible_model (int8 calibration from --cal_image_dir).
"""

from __future__ import annotations

from pathlib import Path

from tlkit import hookimpl
from tlkit.cli.options import EXPORT_OPTIONS, INFERENCE_OPTIONS, TRAIN_OPTIONS
from tlkit.commands import compress_command, export_command, prune_command
from tlkit.types import CommandSpec, DatasetFormatSpec, OptionSpec, Stage, TaskSpec

TASK = "pose"
_PKG = "tlkit_pose"

DATASET_CONVERT_OPTIONS = (
    OptionSpec(
        "dataset_spec",
        ("-d", "--dataset_spec"),
        Path,
        None,
        "TLT's BodyPoseNet dataset spec (coco_spec.json: root_directory_path, train_data, test_data): "
        "--mode picks the split",
    ),
    OptionSpec(
        "annotations",
        ("-a", "--annotations"),
        Path,
        None,
        "COCO person-keypoints json (default: -d's split, dataloader.train_annotations, or val_annotations "
        "with --mode test)",
    ),
    OptionSpec(
        "image_root",
        ("--image_root", "--image_root_path"),
        Path,
        None,
        "folder the json's file_name paths are relative to (default: the json's folder)",
    ),
    OptionSpec(
        "mode",
        ("--mode",),
        str,
        "train",
        "train or test: which dataloader annotations to use and the output file tag",
        choices=("train", "test"),
    ),
    OptionSpec(
        "num_partitions",
        ("-p", "--num_partitions"),
        int,
        1,
        "number of partitions (folds); images are dealt round-robin",
        min=1,
    ),
    OptionSpec("num_shards", ("-s", "--num_shards"), int, 1, "RecordIO shards per partition", min=1),
    OptionSpec(
        "generate_masks",
        ("--generate_masks",),
        bool,
        False,
        "store loss masks: crowd regions and people without keypoints masked out",
    ),
    OptionSpec(
        "check_files",
        ("--check_files",),
        bool,
        False,
        "accepted for old command lines: every image is now always decoded and its size checked against the json (skipped and reported if wrong)",
    ),
    OptionSpec(
        "strict", ("--strict",), bool, False, "fail on the first bad annotation instead of counting and skipping it"
    ),
    OptionSpec(
        "input_format",
        ("--input_format",),
        str,
        "coco_keypoints",
        "the registered pose dataset format that reads -a (`tlkit plugins` lists them)",
    ),
)
EVALUATE_OPTIONS = (
    OptionSpec(
        "predictions",
        ("--predictions",),
        Path,
        None,
        "COCO keypoint results json to score (a list of {image_id, keypoints, score}); or give -m MODEL",
    ),
    OptionSpec(
        "annotations",
        ("-a", "--annotations"),
        Path,
        None,
        "COCO person-keypoints ground truth (default: dataloader.val_annotations)",
    ),
    OptionSpec(
        "image_root",
        ("--image_root", "--image_root_path"),
        Path,
        None,
        "with -m: folder of the annotations' images (default: dataloader.val_images, else the json's folder)",
    ),
    OptionSpec("batch_size", ("-b", "--batch_size"), int, 8, "with -m: inference batch size", min=1),
)
INFER_OPTIONS = (
    *INFERENCE_OPTIONS,
    OptionSpec("input", ("--input",), Path, None, "the same as -i"),
    OptionSpec(
        "no_visualizations",
        ("--no_visualizations",),
        bool,
        False,
        "skip the skeleton overlays (images_annotated/); only detections.json",
    ),
)
POSE_EXPORT_OPTIONS = (
    *EXPORT_OPTIONS,
    OptionSpec(
        "sdk_compatible_model",
        ("--sdk_compatible_model",),
        bool,
        False,
        "bake an xU bilinear upsample of both outputs into the graph (DeepStream bodypose2d)",
    ),
    OptionSpec(
        "upsample_ratio", ("-u", "--upsample_ratio"), int, 4, "the upsample ratio of --sdk_compatible_model", min=1
    ),
)


@hookimpl
def tlkit_register_tasks():
    yield TaskSpec(
        name=TASK,
        summary="Bottom-up 2D body pose (BodyPoseNet/OpenPose-style): train, evaluate, infer, prune, export.",
        config_model=f"{_PKG}.config:PoseConfig",
        build_model=f"{_PKG}.model:build_from_meta",
        dataset_spec_model=f"{_PKG}.config:PoseDatasetSpec",
        train_job=f"{_PKG}.train:build_job",
        commands=(
            CommandSpec(
                "train",
                f"{_PKG}.train:run",
                "Train BodyPoseNet (or retrain a pruned graph); validates COCO keypoint AP.",
                TRAIN_OPTIONS,
                stage=Stage.TRAIN,
            ),
            CommandSpec(
                "dataset_convert",
                f"{_PKG}.dataset_convert:run",
                "COCO keypoints json -> sharded RecordIO (with loss masks, partitions, shards).",
                DATASET_CONVERT_OPTIONS,
                needs_spec=False,
                needs_results_dir=False,
                stage=Stage.DATASET_CONVERT,
                overrides_option="dataset_spec",
            ),
            CommandSpec(
                "evaluate",
                f"{_PKG}.evaluate:run",
                "COCO keypoint AP/AR of a model (.tlk/.onnx) or a results file, printed as TLT prints it; "
                "-r also writes them.",
                EVALUATE_OPTIONS,
                needs_spec=False,
                needs_results_dir=False,
                stage=Stage.EVALUATE,
            ),
            CommandSpec(
                "inference",
                f"{_PKG}.inference:run",
                "People in images, a folder or a video: skeleton overlays and COCO json.",
                INFER_OPTIONS,
                needs_spec=False,
                stage=Stage.INFERENCE,
            ),
            prune_command("Structured channel pruning (heads excluded); retrain with load_graph: true."),
            compress_command(),
            export_command(
                "Export to ONNX (fp32/fp16/int8 via --cal_image_dir; --sdk_compatible_model; DeepStream config).",
                run=f"{_PKG}.export:run",
                options=POSE_EXPORT_OPTIONS,
            ),
        ),
    )


@hookimpl
def tlkit_register_dataset_formats():
    yield DatasetFormatSpec(
        "coco_keypoints",
        TASK,
        f"{_PKG}.coco:read_coco_keypoints",
        "COCO person keypoints json (17 keypoints), label problems counted",
    )
