"""The detection spec (`tlkit detection ... -e spec.yaml`), in TLT DetectNet_v2's section names.

Per-class settings follow one pattern: a `default` block used for every class, and an optional
`per_class` mapping {class: block} for the classes that differ (a per-class block starts from the
built-in defaults, not from `default`).
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, ValidationInfo, field_validator

from tlkit.config import SpecModel, TaskConfig


# -- datasets ----------------------------------------------------------------------------------------------


class DataSource(SpecModel):
    """One converted dataset: the .json manifest written by dataset_convert (next to its .rec/.idx shards)."""

    records_path: str = Field("", description="manifest written by dataset_convert (<output>.json)")
    image_directory_path: str = Field("", description="image folder of the source dataset (for inference overlays)")
    source_weight: float = Field(1.0, ge=0, description="sampling weight of this source")


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
    validation_data_source: Optional[DataSource] = Field(None, description="a separate validation set instead of a fold")


class PartitionConfig(SpecModel):
    """How converted frames are split into folds and shards (TLT's KITTI converter semantics)."""

    partition_mode: Literal["random", "sequence"] = Field(
        "random",
        description="random: fold 0 = val_split % of the shuffled frames (validation), fold 1 = the rest; "
        "sequence: whole sequences dealt round-robin into num_partitions folds",
    )
    num_partitions: int = Field(2, ge=1, description="number of folds (must be 2 in random mode)")
    val_split: float = Field(14.0, ge=0, le=100, description="random mode: percentage of frames in the validation fold")
    num_shards: int = Field(10, ge=1, description="RecordIO shards per fold")
    kitti_sequence_to_frames_file: Optional[str] = Field(
        None, description="sequence mode: JSON {sequence: [frame ids]}; without it every frame is its own sequence"
    )
    seed: int = Field(42, description="shuffling seed (TLT uses 42)")

    @field_validator("num_partitions")
    @classmethod
    def _random_has_two_folds(cls, v: int, info: ValidationInfo) -> int:
        if info.data.get("partition_mode") == "random" and v != 2:
            raise ValueError("partition_mode 'random' makes exactly 2 folds (validation, training): set num_partitions: 2")
        return v


class KittiSourceConfig(PartitionConfig):
    """A KITTI folder: <root>/<image_dir_name>/<id>.<ext> with <root>/<label_dir_name>/<id>.txt."""

    root_directory_path: str = Field(..., description="dataset root folder")
    image_dir_name: str = Field("images", description="image folder, relative to the root")
    label_dir_name: str = Field("labels", description="KITTI label folder, relative to the root")
    image_extension: str = Field("png", description="extension of the images to convert (png, jpg)")


class VocSourceConfig(PartitionConfig):
    """A Pascal VOC folder (Annotations/, JPEGImages/, ImageSets/Main/)."""

    root_directory_path: str = Field(..., description="VOC root folder")
    image_set: Optional[str] = Field(None, description="only the ids in ImageSets/Main/<image_set>.txt; null = all")
    include_difficult: bool = Field(True, description="keep objects marked difficult")


class CocoSourceConfig(PartitionConfig):
    """A COCO detection json with its image folder."""

    annotation_file: str = Field(..., description="COCO instances json")
    image_directory_path: str = Field(..., description="folder holding the json's file_name entries")


class DatasetExportConfig(SpecModel):
    """dataset_convert input (`-d`): exactly one source, plus optional class filter."""

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
    dbscan_min_samples: float = Field(0.05, ge=0, description="DBSCAN min total coverage of a core cell (as int, at least 1, like TLT)")
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
        "SAMPLE", description="SAMPLE: 11-point interpolated (VOC07); INTEGRATE: area under the PR envelope"
    )
    num_recall_points: int = Field(11, ge=2, description="SAMPLE mode: recall points")
    evaluation_box_config: EvaluationBoxConfig = Field(default_factory=EvaluationBoxConfig)
    per_class_box_config: dict[str, EvaluationBoxConfig] = Field(default_factory=dict, description="class -> box filter")
    kitti_difficulty: bool = Field(False, description="also report KITTI easy/moderate/hard AP11 and AP40")
    validation_period_during_training: int = Field(10, ge=1, description="validate every N epochs while training")
    first_validation_epoch: int = Field(1, ge=1, description="first epoch to validate after")


class DetectionConfig(TaskConfig):
    """Experiment spec of `tlkit detection`."""

    dataset_config: DatasetConfig = Field(default_factory=DatasetConfig)
    dataset_export_config: DatasetExportConfig = Field(default_factory=DatasetExportConfig)
    postprocessing_config: PostprocessingConfig = Field(default_factory=PostprocessingConfig)
    evaluation_config: EvaluationConfig = Field(default_factory=EvaluationConfig)
    bbox_rasterizer_config: BboxRasterizerConfig = Field(default_factory=BboxRasterizerConfig)
