"""TLT/TAO BodyPoseNet spec keys -> tlkit's pose spec.

BodyPoseNet's specs are YAML with `__class_name__` markers (TLT's `bpnet/experiment_specs`):

- the training spec (`BpNetTrainer`: `dataloader` with `pose_config`, `image_config`, `dataset_config`,
  `normalization_params`, `augmentation_config.spatial_aug_params`, `label_processor_config`; `model`
  (`BpNetLiteModel`), `optimizer` (`WeightedMomentumOptimizer` with a soft-start annealing schedule));
- the inference spec of `evaluate`/`inference` (`input_shape`, `heatmap_threshold`, `paf_threshold`,
  `multi_scale_inference`, `scales`, ...), whose keys go to tlkit's `inference` section;
- the dataset spec of `dataset_convert -d` (`coco_spec.json`: `root_directory_path`, `train_data`,
  `test_data`), tlkit's `PoseDatasetSpec`.

The training spec's `dataset_config` names TFRecords (`train_records_folder_path` + `train_records_path`) and
the dataset spec json: the records become globs of the shards `tlkit pose dataset_convert` writes with the
same `-o` prefix, and the dataset spec's COCO jsons become the train/val annotations (validation reads them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tlkit.spec_aliases import (
    DROP,
    Alias,
    AliasTable,
    Resolution,
    regularizer_type,
    soft_start_annealing_aliases,
    unsupported,
)

TOPOLOGY = "bpnet_18joints"
HEAT_CHANNELS, PAF_CHANNELS = 19, 38  # 18 parts + background, 19 limbs x 2
_CLASS_MARKER = "TLT's class marker"
_ARCH = {"vgg": "vgg19", "vgg19": "vgg19", "resnet": "resnet18", "resnet18": "resnet18", "mobilenet_v2": "mobilenet_v2"}


def pose_config_path(value: Any, res: Resolution) -> str:
    """TLT names the topology json (…/bpnet_18joints.json); tlkit knows that topology by name."""
    stem = Path(str(value)).stem
    if stem != TOPOLOGY:
        raise ValueError(f"{value!r}: tlkit has the {TOPOLOGY} topology only")
    return TOPOLOGY


def image_dims(value: Any, res: Resolution) -> list[int]:
    """{height, width, channels} -> [height, width, channels]."""
    if isinstance(value, list):
        return value
    return [int(value["height"]), int(value["width"]), int(value.get("channels", 3))]


def _records_globs(folder: Any, names: Any) -> list[str]:
    """TLT's record names (train-fold-000-of-001) -> globs of the shards tlkit's dataset_convert writes with
    -o <folder>/<prefix> (<prefix>-<mode>-fold-000-of-001-shard-00000-of-00001.rec)."""
    out = []
    for name in names if isinstance(names, list) else [names]:
        prefix, sep, fold = str(name).partition("-fold-")
        out.append(
            f"{str(folder).rstrip('/')}/{prefix}*{sep}{fold}*.rec" if sep else f"{str(folder).rstrip('/')}/{name}*.rec"
        )
    return out


def dataset_config(value: Any, res: Resolution) -> Any:
    """BodyPoseNet's dataset_config -> tlkit's dataloader keys (see the module doc)."""
    out: dict[str, Any] = {}
    if value.get("train_records_path"):
        out["train_records"] = _records_globs(value.get("train_records_folder_path", ""), value["train_records_path"])
    coco = (value.get("dataset_specs") or {}).get("coco")
    spec = res.path(coco) if coco else None
    if spec is not None:
        try:
            data = json.loads(spec.read_text())
        except (OSError, json.JSONDecodeError) as err:
            res.warn(
                "dataloader.dataset_config.dataset_specs.coco",
                f"cannot read {spec} ({type(err).__name__}): set dataloader.train_annotations / val_annotations",
                coco,
            )
        else:
            root = Path(str(data.get("root_directory_path", "")))
            root = root if root.is_absolute() else spec.parent / root  # as dataset_convert -d reads it
            for split, (ann_key, img_key) in (
                ("train_data", ("train_annotations", "train_images")),
                ("test_data", ("val_annotations", "val_images")),
            ):
                part = data.get(split) or {}
                if part.get("annotation_root_dir_path"):
                    out[ann_key] = os.path.normpath(root / part["annotation_root_dir_path"])
                if part.get("images_root_dir_path"):
                    out[img_key] = os.path.normpath(root / part["images_root_dir_path"])
    unknown = sorted(
        set(value)
        - {
            "root_data_path",
            "train_records_folder_path",
            "train_records_path",
            "val_records_folder_path",
            "val_records_path",
            "dataset_specs",
        }
    )
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}")
    return out or DROP


def backbone(value: Any, res: Resolution) -> Any:
    """backbone_attributes {architecture: vgg, mtype: default, use_bias} -> tlkit's model.arch."""
    arch = str(value.get("architecture", "vgg")).lower()
    if arch not in _ARCH:
        raise ValueError(
            f"architecture {arch!r}: tlkit's BodyPoseNet backbones are vgg (vgg19), resnet18, mobilenet_v2"
        )
    return _ARCH[arch]


def channels(expected: int):
    def check(value: Any, res: Resolution) -> Any:
        if int(value) != expected:
            raise ValueError(f"{value}: the {TOPOLOGY} topology has {expected}")
        return DROP

    return check


def symmetric(max_key: str):
    """TLT's *_min keys: tlkit's ranges are [-max, max]."""

    def check(value: Any, res: Resolution) -> Any:
        top = res.sibling(max_key)
        if top is not None and float(value) != -float(top):
            res.warn(res.key, f"{value}: tlkit uses [-{max_key}, {max_key}] = [{-float(top)}, {top}]", value)
        return DROP

    return check


def finetuning(value: Any, res: Resolution) -> Any:
    if (value or {}).get("is_finetune_exp"):
        res.warn(res.key, "tlkit resumes from the checkpoints in -r by itself (re-run train)", value)
    return DROP


def upsampling(value: Any, res: Resolution) -> int:
    """[8, 8] -> 8 (tlkit upsamples both directions alike)."""
    vals = value if isinstance(value, list) else [value]
    if len(set(vals)) != 1:
        raise ValueError(f"{value}: tlkit upsamples both directions by one factor")
    return int(vals[0])


def input_shape(value: Any, res: Resolution) -> int:
    """TLT's inference input_shape [height, width] -> tlkit's inference.input_height (aspect ratio kept)."""
    return int(value[0] if isinstance(value, list) else value)


def scales(value: Any, res: Resolution) -> list:
    """TLT uses `scales` only with multi_scale_inference: True."""
    return list(value) if res.lookup("multi_scale_inference", False) else [1.0]


_AUG = "dataloader.augmentation_config"
_MARKERS = [
    "",
    "dataloader.",
    "dataloader.pose_config.",
    f"{_AUG}.",
    "model.",
    "optimizer.",
    "optimizer.learning_rate_schedule.",
    "loss.",
]

ALIASES = [
    *(unsupported(f"{p}__class_name__", _CLASS_MARKER, warn=False) for p in _MARKERS),
    # BpNetTrainer
    unsupported("checkpoint_dir", "tlkit writes into -r/--results_dir", warn=False),
    *(
        unsupported(k, "logging frequency", warn=False)
        for k in ("log_every_n_secs", "summary_every_n_steps", "infrequent_summary_every_n_steps")
    ),
    Alias("checkpoint_n_epoch", "train_config.checkpoint_interval"),
    Alias("num_epoch", "train_config.n_epochs"),
    Alias("validation_every_n_epoch", "train_config.validation_period"),
    Alias("max_ckpt_to_keep", "train_config.max_checkpoints_to_keep"),
    Alias("random_seed", "train_config.random_seed"),
    Alias("pretrained_weights", "train_config.pretrained_model_path"),
    Alias("load_graph", "train_config.load_graph"),
    Alias("finetuning_config", ".finetuning_config", finetuning, note="tlkit resumes from -r by itself"),
    Alias("use_stagewise_lr_multipliers", "model.use_stagewise_lr_multipliers"),
    unsupported("inference_spec", "give the inference spec with -e to evaluate / inference", warn=False),
    # dataloader
    Alias("dataloader.batch_size", "train_config.batch_size_per_gpu"),
    Alias("dataloader.pose_config", "pose_config"),
    Alias("dataloader.pose_config.pose_config_path", ".pose_config_path", pose_config_path),
    Alias("dataloader.image_config", "dataloader"),
    Alias("dataloader.image_config.image_dims", ".image_dims", image_dims),
    unsupported("dataloader.image_config.image_encoding", "tlkit decodes any image format", warn=False),
    Alias("dataloader.dataset_config", "dataloader", dataset_config, note="records -> tlkit dataset_convert shards"),
    *(
        unsupported(f"dataloader.normalization_params.{k}", "tlkit's loss masks are 0/1", warn=False)
        for k in ("mask_scale", "mask_offset")
    ),
    Alias(_AUG, "augmentation_config"),
    Alias(f"{_AUG}.spatial_aug_params", "augmentation_config"),
    unsupported(f"{_AUG}.spatial_aug_params.flip_tb_prob", "", (0, 0.0)),
    *(
        Alias(
            f"{_AUG}.spatial_aug_params.{k}_min{a}",
            f".{k}_min{a}",
            symmetric(f"{k}_max{a}"),
            note="tlkit's ranges are [-max, max]",
        )
        for k, a in (("rotate_deg", ""), ("translate", "_x"), ("translate", "_y"))
    ),
    unsupported(f"{_AUG}.spatial_aug_params.use_translate_ratio", "translations are in pixels", (False,)),
    *(
        unsupported(f"{_AUG}.spatial_aug_params.{k}", "used with use_translate_ratio only", warn=False)
        for k in ("translate_ratio_max", "translate_ratio_min")
    ),
    unsupported(f"{_AUG}.identity_spatial_aug_params", "", (None,)),
    Alias("dataloader.label_processor_config", "label_processor_config"),
    unsupported("dataloader.shuffle_buffer_size", "tlkit shuffles the whole set every epoch", warn=False),
    # model (BpNetLiteModel)
    Alias("model.backbone_attributes", ".arch", backbone, note="vgg = vgg19"),
    Alias("model.heat_channels", ".heat_channels", channels(HEAT_CHANNELS), note=f"fixed by the {TOPOLOGY} topology"),
    Alias("model.paf_channels", ".paf_channels", channels(PAF_CHANNELS), note=f"fixed by the {TOPOLOGY} topology"),
    unsupported("model.use_self_attention", "", (False,)),
    unsupported("model.data_format", "MXNet runs channels-first", warn=False),
    unsupported("model.use_bias", "the stage convolutions have biases", (True,)),
    Alias("model.regularization_type", "train_config.reg_config.type", regularizer_type),
    Alias("model.kernel_regularization_factor", "train_config.reg_config.weight_decay"),
    unsupported("model.bias_regularization_factor", "tlkit regularizes kernels only", (0, 0.0)),
    unsupported("model.kernel_initializer", "tlkit initializes new layers itself", warn=False),
    # optimizer (WeightedMomentumOptimizer: momentum SGD)
    Alias("optimizer", "train_config.optimizer", also={".type": "sgd"}),
    Alias("optimizer.use_nesterov", ".nesterov"),
    unsupported(
        "optimizer.grad_weights_dict", "per-layer gradient weights (tlkit: use_stagewise_lr_multipliers)", (None, {})
    ),
    unsupported("optimizer.weight_default_value", "", (1, 1.0)),
    *soft_start_annealing_aliases("optimizer.learning_rate_schedule"),
    unsupported("optimizer.learning_rate_schedule.last_step", "the schedule spans train_config.n_epochs", (None,)),
    unsupported("loss", "tlkit's BodyPoseNet loss (L2 on heatmaps and PAFs)", warn=False),
    # the inference spec (evaluate / inference -e)
    unsupported("model_path", "give the model with -m", warn=False),
    unsupported("train_spec", "the model file carries what inference needs", warn=False),
    Alias("input_shape", "inference.input_height", input_shape, note="height; tlkit keeps the aspect ratio"),
    unsupported(
        "keep_aspect_ratio_mode",
        "tlkit adjusts the network input to the image's aspect ratio",
        ("adjust_network_input",),
    ),
    unsupported("output_stage_to_use", "tlkit uses the last stage", (None,)),
    Alias("output_upsampling_factor", "inference.output_upsampling_factor", upsampling),
    Alias("heatmap_threshold", "inference.heatmap_threshold"),
    Alias("paf_threshold", "inference.paf_threshold"),
    unsupported("multi_scale_inference", "tlkit's scales say it", warn=False),
    Alias("scales", "inference.scales", scales, note="[1.0] unless multi_scale_inference"),
]


def _is_tlt_layout(tree: dict) -> bool:
    return "__class_name__" in tree or "heatmap_threshold" in tree


TLT_BODYPOSENET = AliasTable(ALIASES, is_tlt_layout=_is_tlt_layout)

# the dataset spec of `dataset_convert -d` (TLT's coco_spec.json)
TLT_POSE_DATASET = AliasTable(
    [
        unsupported("dataset", "tlkit reads COCO", ("coco",)),
        *(
            unsupported(f"{s}.mask_root_dir_path", "tlkit makes the loss masks itself (--generate_masks)", warn=False)
            for s in ("train_data", "test_data")
        ),
        unsupported(
            "duplicate_data_with_each_person_as_center",
            "tlkit stores each image once; augmentation centres a random person",
            warn=False,
        ),
        unsupported("categories", "tlkit reads COCO's 17 person keypoints", warn=False),
        unsupported("visibility_flags", "COCO's 0/1/2 visibility flags", warn=False),
        unsupported(
            "data_filtering_params",
            "tlkit keeps every person with labeled keypoints (dataloader.min_keypoints_for_mask masks the loss)",
        ),
    ]
)
