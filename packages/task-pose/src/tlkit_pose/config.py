"""The pose spec (TLT BodyPoseNet's experiment and inference specs, in one YAML file).

Every key has a description: `tlkit pose default_spec` and the reference docs are generated from these
models. Importing this module imports neither MXNet nor OpenCV.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Optional

from pydantic import Field, field_validator, model_validator

from tlkit.config import SpecModel, TaskConfig, TrainConfig
from tlkit.spec_aliases import AliasTable
from tlkit_pose.tlt_spec import TLT_BODYPOSENET, TLT_POSE_DATASET


class NormalizationConfig(SpecModel):
    """Input normalization, TLT's normalization_params: pixel / image_scale - image_offset (per RGB channel)."""

    image_scale: list[float] = Field(
        default_factory=lambda: [256.0, 256.0, 256.0], description="divide each RGB channel by this"
    )
    image_offset: list[float] = Field(
        default_factory=lambda: [0.5, 0.5, 0.5],
        description="then subtract this (DeepStream: offsets 128 and net-scale-factor 1/256)",
    )

    @field_validator("image_scale", "image_offset")
    @classmethod
    def _three(cls, v: list[float]) -> list[float]:
        if len(v) != 3:
            raise ValueError(f"expected 3 values (R, G, B), got {len(v)}")
        return v


class DataloaderConfig(SpecModel):
    """Where the data is: COCO keypoints json files and image folders, or the RecordIO shards of dataset_convert."""

    train_annotations: Optional[str] = Field(None, description="COCO person-keypoints json for training")
    train_images: Optional[str] = Field(
        None, description="folder holding the training images' file_name paths; null = the json's folder"
    )
    val_annotations: Optional[str] = Field(None, description="COCO person-keypoints json for validation and evaluate")
    val_images: Optional[str] = Field(None, description="folder of the validation images; null = the json's folder")
    train_records: Optional[str | list[str]] = Field(
        None,
        description="glob (or list of globs) of training .rec shards written by dataset_convert (used instead of "
        "train_annotations)",
    )
    image_dims: list[int] = Field(
        default_factory=lambda: [256, 256, 3],
        description="network input [height, width, channels], multiples of the stride",
    )
    normalization_params: NormalizationConfig = Field(default_factory=NormalizationConfig)
    skip_bad_labels: bool = Field(
        True, description="count, report and skip bad annotations; false = fail on the first one"
    )
    min_keypoints_for_mask: int = Field(
        1, ge=1, description="people with fewer labeled keypoints are masked out of the loss (TLT: none labeled)"
    )

    @field_validator("image_dims")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if len(v) != 3 or v[2] not in (1, 3) or min(v[:2]) < 16:
            raise ValueError(
                f"expected [height, width, channels] with height, width >= 16 and 1 or 3 channels, got {v}"
            )
        return v


class PoseTopologyConfig(SpecModel):
    """The body topology and output grid (TLT pose_config)."""

    pose_config_path: Literal["bpnet_18joints"] = Field(
        "bpnet_18joints", description="topology: 18 parts (COCO 17 + neck), 19 limbs, 38 PAF channels"
    )
    target_shape: list[int] = Field(
        default_factory=lambda: [32, 32],
        description="output grid [height, width]; image_dims / target_shape is the model stride (8)",
    )

    @field_validator("target_shape")
    @classmethod
    def _shape(cls, v: list[int]) -> list[int]:
        if len(v) != 2 or min(v) < 1:
            raise ValueError(f"expected [height, width] of positive integers, got {v}")
        return v


class AugmentationConfig(SpecModel):
    """Training augmentation (TLT spatial_aug_params). Read by `train` (the training command comes with the model)."""

    spatial_augmentation_mode: Literal["person_centric", "standard"] = Field(
        "person_centric",
        description="person_centric: crops centred on one annotated person at target_person_scale; standard: whole image",
    )
    flip_lr_prob: float = Field(
        0.5, ge=0, le=1, description="probability of a left-right flip (left/right parts and limbs are swapped)"
    )
    rotate_deg_max: float = Field(
        40.0, ge=0, le=180, description="random rotation in [-rotate_deg_max, rotate_deg_max] degrees"
    )
    zoom_prob: float = Field(0.0, ge=0, le=1, description="probability of a random zoom")
    zoom_ratio_min: float = Field(0.5, gt=0, description="smallest zoom factor")
    zoom_ratio_max: float = Field(1.1, gt=0, description="largest zoom factor")
    translate_max_x: float = Field(40.0, ge=0, description="random shift in [-x, x] input pixels")
    translate_max_y: float = Field(40.0, ge=0, description="random shift in [-y, y] input pixels")
    target_person_scale: float = Field(
        0.6, gt=0, le=1, description="person_centric: height of the centred person / input height"
    )

    @model_validator(mode="after")
    def _zoom(self) -> AugmentationConfig:
        if self.zoom_ratio_min > self.zoom_ratio_max:
            raise ValueError(f"zoom_ratio_min {self.zoom_ratio_min} > zoom_ratio_max {self.zoom_ratio_max}")
        return self


class LabelProcessorConfig(SpecModel):
    """How ground truth becomes heatmaps and part affinity fields (TLT label_processor_config)."""

    heatmap_gaussian_sigma: float = Field(
        7.0, gt=0, description="Gaussian sigma of each part's heatmap blob, in input pixels"
    )
    paf_ortho_dist_thresh: float = Field(
        1.0, gt=0, description="PAF half-width: cells within this many strides of the limb get its unit vector"
    )
    paf_gaussian_sigma: float = Field(
        0.03,
        gt=0,
        description="TLT key kept so TLT specs load; TLT's label processor does not use it (binary PAF band), nor does tlkit",
    )


class InferenceConfig(SpecModel):
    """Post-processing of heatmaps and PAFs into people (TLT infer spec; the defaults are TLT's)."""

    heatmap_threshold: float = Field(0.1, ge=0, description="keep heatmap peaks above this value")
    paf_threshold: float = Field(
        0.05, ge=0, description="a PAF sample counts when its dot product with the limb direction exceeds this"
    )
    heatmap_gaussian_sigma: float = Field(
        3.0, gt=0, description="sigma of the smoothing applied before peak NMS (upsampled pixels)"
    )
    heatmap_gaussian_kernel: int = Field(5, ge=1, description="size of that smoothing kernel (odd)")
    nms_window: int = Field(3, ge=1, description="peaks are maxima of the smoothed heatmap in this window (odd)")
    line_integral_samples_num: int = Field(10, ge=2, description="points sampled along each candidate limb")
    line_integral_count_threshold: float = Field(
        0.8, ge=0, le=1, description="a limb needs more than this fraction of samples above paf_threshold"
    )
    num_parts_thresh: int = Field(4, ge=1, description="drop people with fewer parts")
    overall_score_thresh: float = Field(
        0.4, ge=0, description="drop people whose summed part and limb score per part is lower"
    )
    scales: list[float] = Field(
        default_factory=lambda: [1.0],
        description="multi-scale inference: input scales whose upsampled outputs are averaged (e.g. [0.5, 1.0, 1.5, 2.0])",
    )
    input_height: Optional[int] = Field(
        None, ge=16, description="scale 1.0 resizes the image to this height; null = the image's own height"
    )
    output_upsampling_factor: int = Field(
        8, ge=1, description="outputs are upsampled by this (the model stride) before peak finding"
    )

    @field_validator("heatmap_gaussian_kernel", "nms_window")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd, got {v}")
        return v

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: list[float]) -> list[float]:
        if not v or min(v) <= 0:
            raise ValueError(f"expected a non-empty list of positive scales, got {v}")
        return v


class ModelConfig(SpecModel):
    """The BodyPoseNet network (TLT BpNetLiteModel): a backbone at stride 8, an initial stage and refinement stages."""

    arch: str = Field(
        "vgg19",
        description="backbone (TLT: vgg19, resnet18, mobilenet_v2; or any registered one, see `tlkit plugins`); "
        "run at the model stride (8)",
    )
    backbone_blocks: Optional[int] = Field(
        None,
        ge=1,
        description="keep only the first N freeze-able backbone blocks (0 = stem); null = all. "
        "vgg19 5 = through conv4_4, 512 channels (TLT stops at conv4_2); resnet18 3 = through layer2, 128 channels",
    )
    use_batch_norm: bool = Field(
        True, description="batch norm in the backbone (vgg19 only; the other backbones keep their own)"
    )
    stages: int = Field(
        3, ge=2, le=7, description="total stages: the initial one plus stages - 1 refinement stages (TLT: 2..7)"
    )
    stage_channels: int = Field(128, ge=8, description="width of the stage convolutions (TLT lite model: 128)")
    stage_convs: int = Field(3, ge=1, description="3x3 convolutions per stage before its 1x1 layers")
    use_stagewise_lr_multipliers: bool = Field(
        True, description="refinement stages learn refinement_lr_mult times faster (TLT)"
    )
    refinement_lr_mult: float = Field(
        4.0, gt=0, description="learning-rate multiplier of the refinement stages' parameters"
    )
    freeze_blocks: list[int] = Field(
        default_factory=list, description="backbone blocks (0 = stem) whose weights are not trained"
    )
    freeze_bn: bool = Field(False, description="batch norm layers use their running statistics and are not trained")

    @field_validator("arch")
    @classmethod
    def _registered(cls, v: str) -> str:
        from tlkit.backbones import arch_name
        from tlkit.errors import UnknownNameError

        try:
            return arch_name(v, task="pose")
        except UnknownNameError as err:
            raise ValueError(str(err)) from None


class PoseConfig(TaskConfig):
    """Spec of `tlkit pose ...` (TLT BodyPoseNet parity)."""

    tlt_aliases: ClassVar[AliasTable] = TLT_BODYPOSENET  # TLT's training and inference spec keys (tlt_spec.py)

    dataloader: DataloaderConfig = Field(default_factory=DataloaderConfig)
    pose_config: PoseTopologyConfig = Field(default_factory=PoseTopologyConfig)
    augmentation_config: AugmentationConfig = Field(default_factory=AugmentationConfig)
    label_processor_config: LabelProcessorConfig = Field(default_factory=LabelProcessorConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train_config: TrainConfig = Field(default_factory=TrainConfig)

    @model_validator(mode="after")
    def _stride(self) -> PoseConfig:
        (h, w, _), (th, tw) = self.dataloader.image_dims, self.pose_config.target_shape
        if h % th or w % tw or h // th != w // tw:
            raise ValueError(
                f"dataloader.image_dims {h}x{w} must be the same whole multiple of pose_config.target_shape {th}x{tw} "
                f"in both directions (e.g. 256x256 and 32x32: stride 8)"
            )
        return self

    @property
    def stride(self) -> int:
        return self.dataloader.image_dims[0] // self.pose_config.target_shape[0]


# -- the dataset spec of `dataset_convert -d` -------------------------------------------------------------------


class CocoSplitSpec(SpecModel):
    """One split of a COCO person-keypoints set, relative to the dataset spec's root_directory_path."""

    images_root_dir_path: str = Field("", description="folder of the images the json's file_name entries name")
    annotation_root_dir_path: str = Field(
        ..., description="the COCO person-keypoints json (a file, despite TLT's key name)"
    )


class PoseDatasetSpec(SpecModel):
    """`tlkit pose dataset_convert -d SPEC`: TLT BodyPoseNet's dataset spec (coco_spec.json); --mode train reads
    train_data, --mode test reads test_data."""

    tlt_aliases: ClassVar[AliasTable] = TLT_POSE_DATASET  # TLT keys tlkit does not use (tlt_spec.py)

    root_directory_path: str = Field("", description="dataset root; relative to the spec file's folder")
    train_data: Optional[CocoSplitSpec] = Field(None, description="the training split (--mode train)")
    test_data: Optional[CocoSplitSpec] = Field(None, description="the test / validation split (--mode test)")
