"""The detection spec (`tlkit detection ... -e spec.yaml`), in TLT DetectNet_v2's section names.

Per-class settings follow one pattern: a `default` block used for every class, and an optional
`per_class` mapping {class: block} for the classes that differ (a per-class block starts from the
built-in defaults, not from `default`).
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, ValidationInfo, field_validator, model_validator

from tlkit.config import SpecModel, TaskConfig, TrainConfig
from tlkit.spec_aliases import AliasTable
from tlkit_detection.tlt_spec import TLT_DATASET_EXPORT, TLT_DETECTNET_V2

# -- datasets ----------------------------------------------------------------------------------------------


class DataSource(SpecModel):
    """One converted dataset: the .json manifest written by dataset_convert (next to its .rec/.idx shards)."""

    records_path: str = Field("", description="manifest written by dataset_convert (<output>.json)")
    image_directory_path: str = Field("", description="image folder of the source dataset (for inference overlays)")
    source_weight: float = Field(
        1.0,
        ge=0,
        description="training sampling weight of this source's frames relative to other sources' (when the "
        "weights differ, an epoch draws as many frames as there are, with replacement, in these proportions)",
    )


class DatasetConfig(SpecModel):
    """Training/validation data (dataset_config)."""

    data_sources: list[DataSource] = Field(default_factory=list, description="converted datasets to train on")
    image_extension: str = Field("png", description="extension of the source images (png, jpg)")
    target_class_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="source class -> target class, applied when reading; unmapped classes are dropped "
        "(empty = keep every class as is)",
    )
    validation_fold: Optional[int] = Field(0, ge=0, description="fold of the converted data used for validation")
    validation_data_source: Optional[DataSource] = Field(
        None, description="a separate validation set instead of a fold"
    )


class PartitionConfig(SpecModel):
    """How converted frames are split into folds and shards (TLT's KITTI converter semantics)."""

    partition_mode: Literal["random", "sequence", "list"] = Field(
        "random",
        description="random: fold 0 = val_split % of the shuffled frames (validation), fold 1 = the rest; "
        "sequence: whole sequences dealt round-robin into num_partitions folds; "
        "list: fold 0 = the frames in val_list (validation), fold 1 = those in train_list",
    )
    num_partitions: int = Field(2, ge=1, description="number of folds (must be 2 in random and list modes)")
    val_split: float = Field(14.0, ge=0, le=100, description="random mode: percentage of frames in the validation fold")
    num_shards: int = Field(
        10, ge=1, description="RecordIO shards per fold (at most one per frame; empty folds write none)"
    )
    kitti_sequence_to_frames_file: Optional[str] = Field(
        None, description="sequence mode: JSON {sequence: [frame ids]}; without it every frame is its own sequence"
    )
    val_list: Optional[str] = Field(
        None,
        description="list mode: text file of the validation frame ids, one per line (e.g. VOC ImageSets/Main/val.txt)",
    )
    train_list: Optional[str] = Field(
        None, description="list mode: text file of the training frame ids; null = every frame not in val_list"
    )
    seed: int = Field(42, description="shuffling seed (TLT uses 42)")

    @field_validator("num_partitions")
    @classmethod
    def _random_has_two_folds(cls, v: int, info: ValidationInfo) -> int:
        mode = info.data.get("partition_mode")
        if mode in ("random", "list") and v != 2:
            raise ValueError(
                f"partition_mode {mode!r} makes exactly 2 folds (validation, training): set num_partitions: 2"
            )
        return v

    @model_validator(mode="after")
    def _lists_given(self):
        if self.partition_mode == "list" and not self.val_list:
            raise ValueError("partition_mode 'list' needs val_list (and optionally train_list)")
        return self


class KittiSourceConfig(PartitionConfig):
    """A KITTI folder: <root>/<image_dir_name>/<id>.<ext> with <root>/<label_dir_name>/<id>.txt."""

    root_directory_path: str = Field(..., description="dataset root folder")
    image_dir_name: str = Field("images", description="image folder, relative to the root")
    label_dir_name: str = Field("labels", description="KITTI label folder, relative to the root")
    image_extension: Optional[str] = Field(
        None, description="extension of the images to convert (png, jpg); null = the one the image folder holds"
    )


class VocSourceConfig(PartitionConfig):
    """A Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/), folder names configurable."""

    root_directory_path: str = Field(..., description="VOC root folder")
    image_dir_name: str = Field("JPEGImages", description="image folder, relative to the root")
    annotation_dir_name: str = Field("Annotations", description="VOC XML folder, relative to the root")
    image_set: Optional[str] = Field(None, description="only the ids in ImageSets/Main/<image_set>.txt; null = all")
    include_difficult: bool = Field(True, description="keep objects marked difficult")


class CocoSourceConfig(PartitionConfig):
    """COCO detection json(s) with their image folder(s)."""

    annotation_file: str | list[str] = Field(
        ..., description="COCO instances json; a list of files makes one fold per file (TLT's coco_config)"
    )
    image_directory_path: str | list[str] = Field(
        ..., description="folder holding the json's file_name entries (a list: one per annotation file)"
    )

    @model_validator(mode="after")
    def _paired(self):
        files, dirs = self.annotation_file, self.image_directory_path
        if isinstance(files, list) or isinstance(dirs, list):
            nf = len(files) if isinstance(files, list) else 1
            nd = len(dirs) if isinstance(dirs, list) else 1
            if nf != nd or nf == 0:
                raise ValueError(f"{nf} annotation files but {nd} image folders: give one image folder per file")
        return self


class DatasetExportConfig(SpecModel):
    """dataset_convert input (`-d`): exactly one source, plus optional class filter."""

    tlt_aliases: ClassVar[AliasTable] = TLT_DATASET_EXPORT  # TLT's kitti_config / coco_config specs (tlt_spec.py)

    kitti_config: Optional[KittiSourceConfig] = Field(None, description="convert a KITTI folder")
    voc_config: Optional[VocSourceConfig] = Field(None, description="convert a Pascal VOC folder")
    coco_config: Optional[CocoSourceConfig] = Field(None, description="convert a COCO json")
    classes: list[str] = Field(
        default_factory=list, description="keep only these classes (others are reported and dropped); empty = all"
    )

    def source(self) -> KittiSourceConfig | VocSourceConfig | CocoSourceConfig | None:
        given = [s for s in (self.kitti_config, self.voc_config, self.coco_config) if s is not None]
        return given[0] if len(given) == 1 else None


# -- model outputs -------------------------------------------------------------------------------------------


class ClusteringConfig(SpecModel):
    """How raw coverage/bbox outputs become boxes for one class (TLT clustering_config)."""

    coverage_threshold: float = Field(0.005, ge=0, le=1, description="ignore grid cells with coverage at or below this")
    clustering_algorithm: Literal["dbscan", "nms"] = Field("dbscan", description="dbscan or nms")
    dbscan_eps: float = Field(0.13, gt=0, le=1, description="DBSCAN radius in 1 - IoU")
    dbscan_min_samples: float = Field(
        0.05, ge=0, description="DBSCAN min total coverage of a core cell (as int, at least 1, like TLT)"
    )
    dbscan_confidence_threshold: float = Field(0.1, ge=0, description="drop clusters with a lower confidence")
    minimum_bounding_box_height: float = Field(20.0, ge=0, description="drop boxes this tall or less (pixels)")
    nms_iou_threshold: float = Field(0.2, ge=0, le=1, description="nms: suppress boxes overlapping more than this")
    nms_confidence_threshold: float = Field(0.1, ge=0, le=1, description="nms: drop cells with lower coverage")
    confidence_model: Literal["aggregate_cov", "mean_cov"] = Field(
        "aggregate_cov", description="dbscan confidence: sum of the cluster's coverage (TLT default) or its mean"
    )


class PostprocessingConfig(SpecModel):
    """Clustering of network outputs (postprocessing_config)."""

    default: ClusteringConfig = Field(default_factory=ClusteringConfig)
    per_class: dict[str, ClusteringConfig] = Field(default_factory=dict, description="class -> clustering settings")

    def for_class(self, name: str) -> ClusteringConfig:
        return self.per_class.get(name, self.default)

    def params(self, class_names: list[str]) -> dict:
        """{class: tlkit_detection.clustering.ClusteringParams} for `cluster_outputs`."""
        from tlkit_detection.clustering import ClusteringParams

        return {c: ClusteringParams(**self.for_class(c).model_dump()) for c in class_names}


class RasterizerClassConfig(SpecModel):
    """Coverage ellipse of one class, relative to its box."""

    cov_center_x: float = Field(0.5, ge=0, le=1, description="ellipse centre, fraction of the box width")
    cov_center_y: float = Field(0.5, ge=0, le=1, description="ellipse centre, fraction of the box height")
    cov_radius_x: float = Field(0.4, gt=0, le=1, description="ellipse x radius, fraction of the half width")
    cov_radius_y: float = Field(0.4, gt=0, le=1, description="ellipse y radius, fraction of the half height")
    bbox_min_radius: float = Field(1.0, ge=0, description="minimum ellipse radius in output cells")


class BboxRasterizerConfig(SpecModel):
    """Ground-truth rasterization for DetectNet_v2 training (bbox_rasterizer_config)."""

    deadzone_radius: float = Field(0.67, ge=0, le=1, description="deadzone between coverage ellipse (0) and box (1)")
    default: RasterizerClassConfig = Field(default_factory=RasterizerClassConfig)
    per_class: dict[str, RasterizerClassConfig] = Field(default_factory=dict, description="class -> ellipse settings")

    def for_class(self, name: str) -> RasterizerClassConfig:
        return self.per_class.get(name, self.default)

    def params(self, class_names: list[str]) -> list:
        """[tlkit_detection.rasterizer.ClassRasterParams] in class-id order, for `rasterize`."""
        from tlkit_detection.rasterizer import ClassRasterParams

        return [ClassRasterParams(**self.for_class(c).model_dump()) for c in class_names]


# -- model, augmentation, cost -------------------------------------------------------------------------------


class ModelConfig(SpecModel):
    """DetectNet_v2: a backbone at stride 16 + a 1x1 coverage head (C, sigmoid) and a 1x1 bbox head (4C)."""

    detector: str = Field(
        "detectnet_v2",
        description="the detector: detectnet_v2, or GluonCV's ssd (GluonCV's arch mobilenet_v1, resnet 18/50, vgg 16) "
        "or yolov3 (GluonCV's darknet 53, mobilenet_v1), both also on any registered backbone (e.g. "
        "efficientnet_lite0, resnet 34; `tlkit plugins`); see the README's GluonCV section; detectors of other "
        "packages by their name (tlkit_detection.detectors)",
    )
    arch: str = Field(
        "resnet",
        description="backbone: resnet (10/18/34/50), vgg16, googlenet, mobilenet_v1, mobilenet_v2, efficientnet_lite0, "
        "or another registered one (`tlkit plugins`)",
    )
    n_layers: Optional[int] = Field(
        18, description="depth for families with several (resnet 10/18/34/50, vgg 16); ignored by the others"
    )
    use_batch_norm: bool = Field(
        True, description="batch normalization after convolutions (backbones that support both)"
    )
    use_pooling: bool = Field(
        False, description="max-pool after the stem instead of a strided convolution (TLT DetectNet_v2 default: false)"
    )
    all_projections: bool = Field(
        True, description="1x1 projection shortcuts in every residual block (resnet), which prunes better"
    )
    freeze_blocks: list[int] = Field(
        default_factory=list, description="backbone blocks (0 = stem) whose weights are not trained"
    )
    freeze_bn: bool = Field(False, description="keep batch-norm statistics and affine parameters fixed while training")
    dropout_rate: float = Field(0.0, ge=0, lt=1, description="dropout on the backbone features before the heads")
    batch_norm_momentum: Optional[float] = Field(
        0.9,
        gt=0,
        lt=1,
        description="momentum of the batch-norm running statistics while training (TLT: 0.9); null = the "
        "backbone's own (EfficientNet: 0.99, whose statistics lag far behind on small datasets and after pruning)",
    )
    preprocess_mode: Literal["auto", "caffe", "torch", "tf"] = Field(
        "auto", description="input normalization; auto: what the backbone's pretrained weights expect"
    )
    pretrained_classes: list[str] = Field(
        default_factory=list,
        description="ssd/yolov3: class names of a GluonCV detector file in train_config.pretrained_model_path, "
        "in its order; heads of matching classes are reused (default: VOC/COCO names when the file name says so)",
    )

    @field_validator("detector")
    @classmethod
    def _registered_detector(cls, v: str) -> str:
        from tlkit.errors import did_you_mean
        from tlkit_detection.detectors import names

        known = names()
        if v not in known:
            listed = ", ".join(repr(n) for n in known[:-1]) + f" or {known[-1]!r}" if len(known) > 1 else repr(known[0])
            raise ValueError(f"Input should be {listed}{did_you_mean(v, known)}")
        return v


class PreprocessingConfig(SpecModel):
    """Network input: every image is resized (no aspect kept, TLT enable_auto_resize) to this size."""

    output_image_width: int = Field(960, ge=16, description="network input width (a multiple of 16)")
    output_image_height: int = Field(544, ge=16, description="network input height (a multiple of 16)")
    output_image_channel: Literal[3] = Field(3, description="3 (RGB)")
    min_bbox_width: float = Field(
        1.0, ge=0, description="drop training boxes narrower than this after augmentation (pixels)"
    )
    min_bbox_height: float = Field(
        1.0, ge=0, description="drop training boxes lower than this after augmentation (pixels)"
    )

    @field_validator("output_image_width", "output_image_height")
    @classmethod
    def _multiple_of_16(cls, v: int) -> int:
        if v % 16:
            raise ValueError(f"must be a multiple of 16 (the DetectNet_v2 output stride), got {v}")
        return v


class SpatialAugmentation(SpecModel):
    """Random geometry per training image (TLT spatial_augmentation)."""

    hflip_probability: float = Field(0.5, ge=0, le=1, description="probability of a left-right flip")
    zoom_min: float = Field(1.0, gt=0, description="smallest zoom factor (< 1 zooms out)")
    zoom_max: float = Field(1.0, gt=0, description="largest zoom factor (> 1 zooms in)")
    translate_max_x: float = Field(0.0, ge=0, description="largest horizontal shift (pixels of the network input)")
    translate_max_y: float = Field(0.0, ge=0, description="largest vertical shift (pixels of the network input)")

    @model_validator(mode="after")
    def _zoom_order(self):
        if self.zoom_min > self.zoom_max:
            raise ValueError(f"zoom_min {self.zoom_min} is larger than zoom_max {self.zoom_max}")
        return self


class ColorAugmentation(SpecModel):
    """Random colour per training image (TLT color_augmentation)."""

    hue_rotation_max: float = Field(0.0, ge=0, le=180, description="largest hue rotation (degrees)")
    saturation_shift_max: float = Field(0.0, ge=0, le=1, description="largest saturation change (fraction)")
    contrast_scale_max: float = Field(0.0, ge=0, le=1, description="largest contrast change (fraction)")
    contrast_center: float = Field(127.5, ge=0, le=255, description="pixel value contrast scales around")


class AugmentationConfig(SpecModel):
    """Input size and training augmentation (augmentation_config); off for validation and evaluation."""

    preprocessing: PreprocessingConfig = Field(default_factory=PreprocessingConfig)
    spatial_augmentation: SpatialAugmentation = Field(default_factory=SpatialAugmentation)
    color_augmentation: ColorAugmentation = Field(default_factory=ColorAugmentation)


class CostClassConfig(SpecModel):
    """Cost of one target class (cost_function_config.target_classes)."""

    class_weight: float = Field(1.0, ge=0, description="weight of this class in the total cost")
    coverage_foreground_weight: float = Field(
        0.05, ge=0, le=1, description="BCE weight of coverage cells with target > 0.5 (background cells get 1 - this)"
    )
    cov_weight: float = Field(1.0, ge=0, description="initial weight of the coverage objective")
    bbox_weight: float = Field(10.0, ge=0, description="initial weight of the bbox objective")


class CostFunctionConfig(SpecModel):
    """The DetectNet_v2 cost (cost_function_config)."""

    default: CostClassConfig = Field(default_factory=CostClassConfig)
    per_class: dict[str, CostClassConfig] = Field(default_factory=dict, description="class -> cost settings")
    enable_autoweighting: bool = Field(
        False, description="re-weight the objectives each epoch: weight ∝ initial weight / mean cost (TLT)"
    )
    min_objective_weight: float = Field(1e-4, ge=0, description="auto-weighting: lower clamp of an objective weight")
    max_objective_weight: float = Field(
        0.9999, gt=0, le=1, description="auto-weighting: upper clamp of an objective weight"
    )

    def for_class(self, name: str) -> CostClassConfig:
        return self.per_class.get(name, self.default)


# -- evaluation ----------------------------------------------------------------------------------------------


class EvaluationBoxConfig(SpecModel):
    """Boxes outside these sizes are removed from ground truth AND predictions (TLT semantics)."""

    minimum_height: float = Field(0.0, ge=0, description="pixels")
    maximum_height: float = Field(9999.0, gt=0, description="pixels")
    minimum_width: float = Field(0.0, ge=0, description="pixels")
    maximum_width: float = Field(9999.0, gt=0, description="pixels")


class EvaluationConfig(SpecModel):
    """How predictions are scored (evaluation_config)."""

    minimum_detection_ground_truth_overlap: dict[str, float] = Field(
        default_factory=dict,
        description="class -> IoU needed for a match (e.g. car: 0.7, pedestrian: 0.5); also the classes to evaluate "
        "(empty = every class in the labels)",
    )
    default_overlap: float = Field(0.5, gt=0, le=1, description="IoU for classes not listed above")
    average_precision_mode: Literal["SAMPLE", "INTEGRATE"] = Field(
        "SAMPLE",
        description="SAMPLE: the best precision at recall >= t, averaged over num_recall_points values of t "
        "(11: VOC2007's AP, the same in TLT and the VOC devkit); INTEGRATE: area under the precision-recall "
        "curve as `matching` computes it (tlt: TLT's own sum over the recall levels reached, from the first one; "
        "voc: the VOC2010+ all-point area from recall 0)",
    )
    matching: Literal["tlt", "voc"] = Field(
        "tlt",
        description="how predictions match ground truth (both: by decreasing confidence, each takes the box of "
        "its class with the highest IoU, in pixels counted inclusively (x2 - x1 + 1); a box already taken makes "
        "it a false positive). tlt: TLT DetectNet_v2 (boxes rounded to whole pixels, IoU >= the threshold, every "
        "box counts); voc: the Pascal VOC devkit, voc_eval.py (coordinates as given, IoU > the threshold, "
        "difficult boxes neither count nor penalise)",
    )
    num_recall_points: int = Field(11, ge=2, description="SAMPLE mode: recall points")
    evaluation_box_config: EvaluationBoxConfig = Field(default_factory=EvaluationBoxConfig)
    per_class_box_config: dict[str, EvaluationBoxConfig] = Field(
        default_factory=dict, description="class -> box filter"
    )
    kitti_difficulty: bool = Field(False, description="also report KITTI easy/moderate/hard AP11 and AP40")
    coco_metrics: bool = Field(
        True, description="evaluate also reports COCO mAP@[.5:.95], AP50, AP75 and small/medium/large AP (pycocotools)"
    )
    validation_period_during_training: int = Field(
        10, ge=1, description="validate every N epochs while training (when set: else train_config.validation_period)"
    )
    first_validation_epoch: int = Field(
        1, ge=1, description="when set: validate after epochs first, first + period, ... (TLT), and after the last"
    )

    def training_validation(self, tc: TrainConfig) -> tuple[TrainConfig, int | None]:
        """(train_config with TLT's validation period when the spec sets it, the first validation epoch when the
        spec sets it) for the training engine."""
        if "validation_period_during_training" in self.model_fields_set:
            tc = tc.model_copy(update={"validation_period": self.validation_period_during_training})
        return tc, self.first_validation_epoch if "first_validation_epoch" in self.model_fields_set else None


class InferenceConfig(SpecModel):
    """`inference` options (TLT bbox_handler_config)."""

    confidence_threshold: float = Field(
        0.0,
        ge=0,
        description="draw and write only boxes with at least this confidence (post-processing and the mAP "
        "evaluation are not affected; DBSCAN aggregate_cov confidences can exceed 1)",
    )
    kitti_dump: bool = Field(True, description="write KITTI label files (with confidences) under <results>/labels")
    coco_dump: bool = Field(
        False,
        description="write <results>/detections_coco.json, COCO results (image_id, category_id, bbox x y w h, score)",
    )
    csv_dump: bool = Field(
        False, description="write <results>/detections.csv: image, class, confidence, x1, y1, x2, y2 (pixels)"
    )
    disable_overlay: bool = Field(False, description="do not write annotated images")
    overlay_linewidth: int = Field(2, ge=1, description="box line width in annotated images")
    batch_size: int = Field(4, ge=1, description="images per forward pass")


class DetectionConfig(TaskConfig):
    """Experiment spec of `tlkit detection`."""

    tlt_aliases: ClassVar[AliasTable] = TLT_DETECTNET_V2  # TLT's own key names and places (tlt_spec.py)

    # the section lives in `model` and is spelled `model_config` in YAML (pydantic reserves that name)
    model: ModelConfig = Field(default_factory=ModelConfig, alias="model_config")
    augmentation_config: AugmentationConfig = Field(default_factory=AugmentationConfig)
    cost_function_config: CostFunctionConfig = Field(default_factory=CostFunctionConfig)
    inference_config: InferenceConfig = Field(default_factory=InferenceConfig)

    dataset_config: DatasetConfig = Field(default_factory=DatasetConfig)
    dataset_export_config: DatasetExportConfig = Field(default_factory=DatasetExportConfig)
    postprocessing_config: PostprocessingConfig = Field(default_factory=PostprocessingConfig)
    evaluation_config: EvaluationConfig = Field(default_factory=EvaluationConfig)
    bbox_rasterizer_config: BboxRasterizerConfig = Field(default_factory=BboxRasterizerConfig)

    def named_classes(self) -> dict[str, list[str]]:
        """Key path -> the class names the spec gives settings for there (checked against the training classes:
        a misspelt name would silently leave its class on the defaults)."""
        ev = self.evaluation_config
        return {
            "cost_function_config.per_class": list(self.cost_function_config.per_class),
            "postprocessing_config.per_class": list(self.postprocessing_config.per_class),
            "bbox_rasterizer_config.per_class": list(self.bbox_rasterizer_config.per_class),
            "evaluation_config.per_class_box_config": list(ev.per_class_box_config),
            "evaluation_config.minimum_detection_ground_truth_overlap": list(ev.minimum_detection_ground_truth_overlap),
        }
