"""TLT/TAO DetectNet_v2 spec keys -> tlkit's detection spec.

Two specs, from TLT's `detectnet_v2/proto/*.proto`:

- the experiment spec (`experiment.proto`: `training_config`, `model_config`, `dataset_config`,
  `augmentation_config`, `postprocessing_config`, `evaluation_config`, `cost_function_config`,
  `bbox_rasterizer_config`), read by `train`, `evaluate`, `inference`, `calibration_tensorfile`;
- the inference spec of `inference -e` (`inference.proto`: `inferencer_config`, `bbox_handler_config`);
- the dataset export spec of `dataset_convert -d` (`dataset_export_config.proto`: `kitti_config` or
  `coco_config`, `image_directory_path`, `sample_modifier_config`, `target_class_mapping`).

Per-class messages become tlkit's `per_class` blocks: TLT's `target_class_config` maps, and the
`cost_function_config.target_classes` list with its cov/bbox `objectives`.
"""

from __future__ import annotations

from typing import Any

from tlkit.spec_aliases import (
    DROP,
    Alias,
    AliasTable,
    Resolution,
    TltMap,
    lower,
    regularizer_type,
    soft_start_annealing_aliases,
    unsupported,
)

BBOX_SCALE, BBOX_OFFSET = 35.0, 0.5  # tlkit_detection.rasterizer's fixed bbox encoding (TLT's defaults)


def contrast_center(value: Any, res: Resolution) -> Any:
    """TLT augments images scaled to [0, 1] (contrast_center 0.5); tlkit augments 0-255 pixels."""
    return float(value) * 255.0 if res.tlt_format else value


def objective_set(value: Any, res: Resolution) -> Any:
    """tlkit encodes boxes with TLT's default bbox objective (scale 35, offset 0.5); other values are warned."""
    bbox = (value or {}).get("bbox") or {}
    scale, offset = float(bbox.get("scale", BBOX_SCALE)), float(bbox.get("offset", BBOX_OFFSET))
    if (scale, offset) != (BBOX_SCALE, BBOX_OFFSET):
        res.warn(
            "model_config.objective_set.bbox",
            f"scale {scale:g}, offset {offset:g}: tlkit always uses scale {BBOX_SCALE:g}, offset {BBOX_OFFSET:g}",
            bbox,
        )
    return DROP


def cost_target_classes(value: Any, res: Resolution) -> dict:
    """TLT's [{name, class_weight, coverage_foreground_weight, objectives [{name cov|bbox, initial_weight,
    weight_target}]}] -> tlkit's {class: {class_weight, coverage_foreground_weight, cov_weight, bbox_weight}}."""
    autoweighting = bool(res.lookup("cost_function_config.enable_autoweighting", False))
    out: dict[str, dict] = {}
    for tc in value if isinstance(value, list) else [value]:
        name = tc.get("name")
        if not name:
            raise ValueError("every target_classes entry needs a name")
        block = {k: tc[k] for k in ("class_weight", "coverage_foreground_weight") if k in tc}
        initial, target = {}, {}
        for obj in tc.get("objectives", []):
            kind = obj.get("name")
            if kind not in ("cov", "bbox"):
                raise ValueError(f"{name}: unknown objective {kind!r}; DetectNet_v2 has cov and bbox")
            if "initial_weight" in obj:
                block[f"{kind}_weight"] = initial[kind] = float(obj["initial_weight"])
            if "weight_target" in obj:
                target[kind] = float(obj["weight_target"])
        # TLT's auto-weighting aims at the (normalised) weight_target; tlkit's aims at the initial weights
        if autoweighting and target and _normalised(target) != _normalised(initial):
            res.warn(
                f"cost_function_config.target_classes[{name}].objectives.weight_target",
                f"{target}: tlkit's auto-weighting keeps the initial_weight ratio {initial}",
                target,
            )
        unknown = sorted(set(tc) - {"name", "class_weight", "coverage_foreground_weight", "objectives"})
        if unknown:
            raise ValueError(f"{name}: unknown key(s) {unknown}")
        out[str(name)] = block
    return out


def _normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {k: round(v / total, 6) for k, v in weights.items()} if total > 0 else weights


def shards(value: Any, res: Resolution) -> int:
    """TLT's num_shards 0 writes one file per fold: one shard."""
    return max(1, int(value))


def coco_files(value: Any, res: Resolution) -> dict:
    """TLT's coco_config {root_directory_path, img_dir_names[], annotation_files[], num_partitions, num_shards[]}
    (one fold per annotation file) -> tlkit's coco_config with lists of files and folders (the same folds)."""
    if "annotation_files" not in value and "img_dir_names" not in value:
        return value  # tlkit's own coco_config
    root = str(value.get("root_directory_path", ""))
    join = lambda p: p if p.startswith("/") or not root else f"{root.rstrip('/')}/{p}"  # noqa: E731
    anns, imgs = list(value.get("annotation_files") or []), list(value.get("img_dir_names") or [])
    out: dict[str, Any] = {"annotation_file": [join(a) for a in anns], "image_directory_path": [join(d) for d in imgs]}
    n_shards = value.get("num_shards")
    n_shards = [int(n) for n in (n_shards if isinstance(n_shards, list) else [n_shards] if n_shards else [])]
    if n_shards:
        out["num_shards"] = max(1, max(n_shards))
        if len(set(n_shards)) > 1:
            res.warn(
                "coco_config.num_shards",
                f"{n_shards}: tlkit writes up to {out['num_shards']} shards in every fold",
                n_shards,
            )
    unknown = sorted(
        set(value) - {"root_directory_path", "annotation_files", "img_dir_names", "num_partitions", "num_shards"}
    )
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}")
    return out


def sequence_file(value: Any, res: Resolution) -> Any:
    """TLT reads kitti_sequence_to_frames_file from the dataset root; tlkit from the spec's folder."""
    root = res.sibling("root_directory_path")
    if res.tlt_format and value and root and not str(value).startswith("/"):
        return f"{str(root).rstrip('/')}/{value}"
    return value


def classwise_handlers(value: Any, res: Resolution) -> dict:
    """The inference spec's classwise_bbox_handler_config map {class | "default": {clustering_config,
    confidence_model, output_map, bbox_color}} -> postprocessing_config {default, per_class}."""
    out: dict[str, Any] = {}
    for name, handler in value.items():
        block = dict(handler.get("clustering_config") or {})
        if "clustering_algorithm" in block:
            block["clustering_algorithm"] = str(block["clustering_algorithm"]).lower()
        if "confidence_model" in handler:
            block["confidence_model"] = handler["confidence_model"]
        for key in sorted(set(handler) - {"clustering_config", "confidence_model"}):
            res.unused(
                f"{res.key}.{name}.{key}",
                "tlkit names boxes by the model's classes and colours them itself",
                handler[key],
            )
        if name == "default":
            out["default"] = block
        else:
            out.setdefault("per_class", {})[name] = block
    return out


def export_aliases(prefix: str = "") -> list[Alias]:
    """The dataset export spec's keys, at the top of a `-d` file or under `dataset_export_config`."""
    p = prefix
    return [
        Alias(f"{p}kitti_config.num_shards", ".num_shards", shards),
        Alias(
            f"{p}kitti_config.kitti_sequence_to_frames_file",
            ".kitti_sequence_to_frames_file",
            sequence_file,
            note="relative to the dataset root, as TLT reads it",
        ),
        unsupported(f"{p}kitti_config.point_clouds_dir", "lidar data", ("",)),
        unsupported(f"{p}kitti_config.calibrations_dir", "lidar calibration", ("",)),
        Alias(f"{p}coco_config", ".coco_config", coco_files, note="one fold per annotation file"),
        unsupported(f"{p}image_directory_path", "tlkit's manifest records each image's path", warn=False),
        unsupported(
            f"{p}sample_modifier_config", "class-balancing sample duplication; use dataset_config source_weight", ({},)
        ),
        unsupported(
            f"{p}target_class_mapping", "map classes at training time with dataset_config.target_class_mapping", ({},)
        ),
    ]


def _dataset_source(prefix: str) -> list[Alias]:
    return [
        Alias(
            f"{prefix}.tfrecords_path",
            ".records_path",
            note="tlkit reads the manifest dataset_convert writes (a glob of its shards works too)",
        )
    ]


_CLUSTERING = "postprocessing_config.target_class_config.*.clustering_config"

ALIASES = [
    Alias("random_seed", "train_config.random_seed"),
    # dataset_config
    *_dataset_source("dataset_config.data_sources"),
    *_dataset_source("dataset_config.validation_data_source"),
    unsupported("dataset_config.dataloader_mode", "TLT's loader implementation", warn=False),
    unsupported(
        "dataset_config.sampling_mode", "tlkit samples by source_weight (TLT's USER_DEFINED)", ("USER_DEFINED",)
    ),
    # augmentation_config
    unsupported(
        "augmentation_config.preprocessing.enable_auto_resize",
        "tlkit always resizes images to output_image_width x output_image_height",
        warn=False,
    ),
    *(
        unsupported(f"augmentation_config.preprocessing.{k}", "input cropping/scaling before the resize", (0, 0.0))
        for k in (
            "output_image_min",
            "output_image_max",
            "crop_left",
            "crop_top",
            "crop_right",
            "crop_bottom",
            "scale_width",
            "scale_height",
        )
    ),
    *(
        unsupported(f"augmentation_config.spatial_augmentation.{k}", "", (0, 0.0))
        for k in ("vflip_probability", "rotate_rad_max", "rotate_probability")
    ),
    unsupported("augmentation_config.color_augmentation.color_shift_stddev", "", (0, 0.0)),
    Alias(
        "augmentation_config.color_augmentation.contrast_center",
        ".contrast_center",
        contrast_center,
        note="TLT's [0, 1] images -> 0-255 pixels",
    ),
    # model_config
    Alias("model_config.pretrained_model_file", "train_config.pretrained_model_path"),
    Alias("model_config.load_graph", "train_config.load_graph"),
    Alias("model_config.num_layers", ".n_layers"),
    unsupported("model_config.freeze_pretrained_layers", "freeze backbone blocks with freeze_blocks", (False,)),
    unsupported("model_config.allow_loaded_model_modification", "", warn=False),
    unsupported(
        "model_config.activation",
        "tlkit's backbones keep their own activation",
        ({"activation_type": "relu"}, {"activation_type": ""}),
    ),
    Alias("model_config.objective_set", ".objective_set", objective_set, note="tlkit's bbox encoding is TLT's default"),
    unsupported(
        "model_config.training_precision",
        "mixed precision is train --use_amp",
        ({"backend_floatx": "FLOAT32"}, {"backend_floatx": "INVALID"}),
    ),
    # training_config
    Alias("training_config", "train_config"),
    Alias("training_config.num_epochs", ".n_epochs"),
    Alias("training_config.learning_rate", "train_config.lr_config"),
    *soft_start_annealing_aliases("training_config.learning_rate.soft_start_annealing_schedule"),
    unsupported(
        "training_config.learning_rate.early_stopping_annealing_schedule",
        "use soft_start_annealing_schedule and train_config.early_stopping",
    ),
    Alias("training_config.regularizer", "train_config.reg_config"),
    Alias("training_config.regularizer.type", ".type", regularizer_type),
    Alias("training_config.regularizer.weight", ".weight_decay"),
    Alias("training_config.optimizer.adam", "train_config.optimizer", also={".type": "adam"}),
    unsupported(
        "training_config.cost_scaling",
        "static FP16 loss scaling; train --use_amp scales dynamically",
        ({}, {"enabled": False}),
        warn=False,
    ),
    Alias("training_config.enable_qat", ".enable_qat"),  # quantization-aware training (tlkit.qat)
    unsupported(
        "training_config.visualizer",
        "tlkit writes events/ (TensorBoard) and training_curves.png itself",
        ({}, {"enabled": False}),
    ),
    # postprocessing_config { target_class_config { key: class value { clustering_config {...} } } }
    Alias("postprocessing_config.target_class_config", "postprocessing_config.per_class", when=TltMap),
    Alias(_CLUSTERING, "postprocessing_config.per_class.*"),
    Alias(f"{_CLUSTERING}.clustering_algorithm", ".clustering_algorithm", lower),
    unsupported(f"{_CLUSTERING}.neighborhood_size", "", (0,)),
    unsupported("postprocessing_config.target_class_config.*.confidence_config", "MLP confidence models", ({},)),
    # evaluation_config
    Alias("evaluation_config.evaluation_box_config", "evaluation_config.per_class_box_config", when=TltMap),
    unsupported("evaluation_config.early_stopping_patience_steps", "use train_config.early_stopping", (0,)),
    # cost_function_config { target_classes [...] }
    Alias("cost_function_config.target_classes", "cost_function_config.per_class", cost_target_classes),
    # bbox_rasterizer_config { target_class_config { key: class value {...} } }
    Alias("bbox_rasterizer_config.target_class_config", "bbox_rasterizer_config.per_class", when=TltMap),
    unsupported("loss_mask_label_filter", "loss masking by label filters", ({},)),
    # the inference spec (inference -e): inferencer_config and bbox_handler_config
    Alias("inferencer_config", "inference_config"),
    *(
        unsupported(f"inferencer_config.{k}", "the model file carries its classes and input size", warn=False)
        for k in ("target_classes", "image_width", "image_height", "image_channels", "stride")
    ),
    unsupported("inferencer_config.gpu_index", "use --gpus / --gpu_index", warn=False),
    unsupported("inferencer_config.tlt_config", "give the model with -m", warn=False),
    unsupported(
        "inferencer_config.tensorrt_config",
        "give the .onnx or .engine with -m (tlkit-tensorrt builds engines)",
        warn=False,
    ),
    Alias("bbox_handler_config", "inference_config"),
    Alias(
        "bbox_handler_config.classwise_bbox_handler_config", "postprocessing_config", classwise_handlers, when=TltMap
    ),
    unsupported("bbox_handler_config.postproc_classes", "tlkit post-processes every class of the model", warn=False),
    # the experiment spec's (repeated) dataset_export_config
    Alias("dataset_export_config", "dataset_export_config", single=True),
    *export_aliases("dataset_export_config."),
]

_MAPS = [
    "dataset_config.target_class_mapping",
    "postprocessing_config.target_class_config",
    "evaluation_config.minimum_detection_ground_truth_overlap",
    "evaluation_config.evaluation_box_config",
    "bbox_rasterizer_config.target_class_config",
    "model_config.activation.activation_parameters",
    "training_config.visualizer.target_class_config",
    "bbox_handler_config.classwise_bbox_handler_config",
]
_REPEATED = [
    "dataset_config.data_sources",
    "model_config.freeze_blocks",
    "cost_function_config.target_classes",
    "cost_function_config.target_classes.objectives",
    "dataset_export_config",
    "training_config.visualizer.clearml_config.tags",
    "training_config.visualizer.wandb_config.tags",
    "loss_mask_label_filter.objective_label_filter_configs",
    "inferencer_config.target_classes",
    "bbox_handler_config.postproc_classes",
]


def _is_tlt_layout(tree: dict) -> bool:
    return "training_config" in tree


TLT_DETECTNET_V2 = AliasTable(
    ALIASES,
    repeated=_REPEATED
    + [
        f"dataset_export_config.{k}"
        for k in ("coco_config.img_dir_names", "coco_config.annotation_files", "coco_config.num_shards")
    ],
    maps=_MAPS + ["dataset_export_config.target_class_mapping"],
    tlt_defaults={
        "model_config.use_batch_norm": (False, "proto default"),
        "model_config.all_projections": (False, "proto default"),
    },
    defaults_if=lambda tree: "model_config" in tree,  # not for an inference spec: the model file has its layers
    is_tlt_layout=_is_tlt_layout,
)

TLT_DATASET_EXPORT = AliasTable(
    export_aliases(),
    repeated=[
        "coco_config.img_dir_names",
        "coco_config.annotation_files",
        "coco_config.num_shards",
        "sample_modifier_config.filter_samples_containing_only",
        "sample_modifier_config.dominant_target_classes",
    ],
    maps=[
        "target_class_mapping",
        "sample_modifier_config.minimum_target_class_imbalance",
        "sample_modifier_config.source_to_target_class_mapping",
    ],
)
