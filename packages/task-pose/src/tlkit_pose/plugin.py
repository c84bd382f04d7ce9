"""Entry-point module of tlkit_pose: hook implementations only (no heavy imports).

Every callable is a "module:attr" string resolved on first use, so `tlkit --help` imports neither MXNet nor
OpenCV. Only commands that work without a model are registered this round: `dataset_convert` and
`evaluate --predictions` (training, inference, prune and export come with the BodyPoseNet model).
"""

from __future__ import annotations

from pathlib import Path

from tlkit import hookimpl
from tlkit.types import CommandSpec, DatasetFormatSpec, OptionSpec, Stage, TaskSpec

TASK = "pose"
_PKG = "tlkit_pose"

DATASET_CONVERT_OPTIONS = (
    OptionSpec("annotations", ("-a", "--annotations"), Path, None, "COCO person-keypoints json (default: dataloader.train_annotations, or val_annotations with --mode test)"),
    OptionSpec("image_root", ("--image_root", "--image_root_path"), Path, None, "folder the json's file_name paths are relative to (default: the json's folder)"),
    OptionSpec("mode", ("--mode",), str, "train", "train or test: which dataloader annotations to use and the output file tag", choices=("train", "test")),
    OptionSpec("num_partitions", ("-p", "--num_partitions"), int, 1, "number of partitions (folds); images are dealt round-robin"),
    OptionSpec("num_shards", ("-s", "--num_shards"), int, 1, "RecordIO shards per partition"),
    OptionSpec("generate_masks", ("--generate_masks",), bool, False, "store loss masks: crowd regions and people without keypoints masked out"),
    OptionSpec("check_files", ("--check_files",), bool, False, "decode every image and check its size against the json (skipped and reported if wrong)"),
    OptionSpec("strict", ("--strict",), bool, False, "fail on the first bad annotation instead of counting and skipping it"),
)
EVALUATE_OPTIONS = (
    OptionSpec("predictions", ("--predictions",), Path, None, "COCO keypoint results json to score (a list of {image_id, keypoints, score})", required=True),
    OptionSpec("annotations", ("-a", "--annotations"), Path, None, "COCO person-keypoints ground truth (default: dataloader.val_annotations)"),
)


@hookimpl
def tlkit_register_tasks():
    yield TaskSpec(
        name=TASK,
        summary="Bottom-up 2D body pose (BodyPoseNet/OpenPose-style): dataset conversion and COCO keypoint evaluation.",
        config_model=f"{_PKG}.config:PoseConfig",
        commands=(
            CommandSpec("dataset_convert", f"{_PKG}.dataset_convert:run", "COCO keypoints json -> sharded RecordIO (with loss masks, partitions, shards).", DATASET_CONVERT_OPTIONS, needs_spec=False, needs_results_dir=False, stage=Stage.DATASET_CONVERT),
            CommandSpec("evaluate", f"{_PKG}.evaluate:run", "COCO keypoint AP/AR of a results file (pycocotools COCOeval), printed as TLT prints it.", EVALUATE_OPTIONS, needs_spec=False, stage=Stage.EVALUATE),
        ),
    )


@hookimpl
def tlkit_register_dataset_formats():
    yield DatasetFormatSpec("coco_keypoints", TASK, f"{_PKG}.coco:load_coco_keypoints", "COCO person keypoints json (17 keypoints), label problems counted")
