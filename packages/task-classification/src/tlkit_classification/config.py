"""The classification spec (TLT makenet's spec, in YAML, with the dataset keys in their own section).

Every key carries a description: the default spec (`tlkit classification default_spec`) and the reference
docs are generated from these models. Importing this module does not import MXNet.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from tlkit.config import SpecModel, TaskConfig, TrainConfig
from tlkit.images import IMAGE_EXTENSIONS
from tlkit.spec_aliases import AliasTable
from tlkit_classification.tlt_spec import TLT_CLASSIFICATION


def parse_image_size(text: str) -> tuple[int, int, int]:
    """'3,224,224' -> (3, 224, 224); raises ValueError with what was expected."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        c, h, w = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected 'C,H,W' with 3 integers, e.g. '3,224,224', got {text!r}") from None
    if c not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {c} in {text!r}")
    if min(h, w) < 16:
        raise ValueError(f"height and width must be >= 16, got {text!r}")
    return c, h, w


class ModelConfig(SpecModel):
    """The network: a backbone (tlkit architecture) + global pooling + dropout + a dense classifier."""

    arch: str = Field(
        "efficientnet_lite0", description="backbone architecture (see `tlkit plugins`), e.g. resnet, efficientnet_lite0"
    )
    n_layers: int | None = Field(
        None,
        description="depth for families that have several (resnet 10/18/34/50, vgg 16/19); null = the family's default",
    )
    input_image_size: str = Field("3,224,224", description="network input 'C,H,W' (C is 3 or 1)")
    resize_interpolation_method: Literal["bilinear", "bicubic"] = Field(
        "bilinear", description="interpolation used to resize images to the input size"
    )
    retain_head: bool = Field(
        False, description="keep the pretrained ImageNet classifier head (1000 classes) instead of a new one"
    )
    use_batch_norm: bool = Field(
        True, description="batch normalization after convolutions (backbones that support both)"
    )
    use_pooling: bool = Field(True, description="max-pool after the stem instead of a strided convolution (resnet/vgg)")
    all_projections: bool = Field(
        False,
        description="1x1 projection shortcuts in every residual block (resnet): prunes more freely, but "
        "GluonCV ImageNet weights have no such layers (they start new)",
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout rate before the classifier")
    freeze_blocks: list[int] = Field(
        default_factory=list, description="backbone blocks (0 = stem) whose weights are not trained"
    )
    freeze_bn: bool = Field(False, description="keep batch-norm statistics and affine parameters fixed while training")
    batch_norm_momentum: float | None = Field(
        0.9,
        gt=0,
        lt=1,
        description="momentum of the batch-norm running statistics while training (TLT batch_norm_config.momentum); "
        "null = the backbone's own (EfficientNet: 0.99, which lags behind for many epochs on small datasets)",
    )

    @field_validator("input_image_size")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_image_size(v)
        return v

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return parse_image_size(self.input_image_size)


class DatasetConfig(SpecModel):
    """Image folders with one sub-folder per class (the folder name is the class name)."""

    train_dataset_path: str | None = Field(None, description="training images: <dir>/<class>/<image>")
    val_dataset_path: str | None = Field(None, description="validation images, same layout; null = no validation")
    test_dataset_path: str | None = Field(
        None,
        description="held-out test images, same layout (evaluate uses it if eval_config.eval_dataset_path is null)",
    )
    image_extensions: list[str] = Field(
        default_factory=lambda: list(IMAGE_EXTENSIONS),
        description="file endings counted as images (case-insensitive); other files are ignored",
    )
    skip_corrupt: bool = Field(
        True,
        description="skip (and report) images that cannot be decoded; false = fail on the first one (the --strict flag)",
    )
    cache_images: bool = Field(True, description="keep decoded images in memory when they fit in cache_limit_mb")
    cache_limit_mb: int = Field(1024, ge=0, description="memory budget for the decoded-image cache")

    @field_validator("image_extensions")
    @classmethod
    def _exts(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one image extension, e.g. ['.jpg', '.png']")
        return [e.lower() if e.startswith(".") else "." + e.lower() for e in v]


class ImageMean(SpecModel):
    """Per-channel mean in 0-255 pixel units, as R, G, B whatever the model's channel order (TLT image_mean)."""

    r: float = Field(123.68, description="red mean")
    g: float = Field(116.779, description="green mean")
    b: float = Field(103.939, description="blue mean")


class AugmentationConfig(SpecModel):
    """Training-time augmentation and input preprocessing (TLT train_config's augmentation keys)."""

    enable_random_crop: bool = Field(True, description="random-resized crop (aspect 3/4-4/3) for training")
    random_crop_min_scale: float = Field(
        0.3,
        gt=0,
        le=1,
        description="random crop: smallest crop area as a fraction of the image (larger keeps more context)",
    )
    enable_center_crop: bool = Field(True, description="validation: resize to size/0.875 then center-crop")
    enable_color_augmentation: bool = Field(
        False, description="random brightness, contrast and saturation for training"
    )
    disable_horizontal_flip: bool = Field(False, description="do not flip training images left-right")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="smooth one-hot targets by this amount")
    mixup_alpha: float = Field(0.0, ge=0, description="mixup Beta(alpha, alpha); 0 = off")
    preprocess_mode: Literal["auto", "caffe", "torch", "tf"] = Field(
        "auto",
        description="auto: what the backbone's pretrained weights expect; caffe: BGR minus image_mean; "
        "torch: /255 then ImageNet mean/std; tf: /127.5 - 1",
    )
    image_mean: ImageMean | None = Field(
        None, description="replace the mode's per-channel mean (0-255 pixel units; gray models use g)"
    )


class EvalConfig(SpecModel):
    """`evaluate`: which data and model, and what to report."""

    eval_dataset_path: str | None = Field(
        None, description="images to evaluate: <dir>/<class>/<image>; null = dataset_config test, then val path"
    )
    model_path: str | None = Field(None, description="model to evaluate (.tlk or .onnx); -m overrides it")
    top_k: int = Field(5, ge=1, description="report top-k accuracy (capped at the number of classes)")
    batch_size: int = Field(32, ge=1, description="evaluation batch size")
    n_workers: int = Field(2, ge=0, description="decoding threads")
    enable_center_crop: bool = Field(
        True, description="resize to size/0.875 then center-crop (as validation in training)"
    )


class ClassificationConfig(TaskConfig):
    """Spec of `tlkit classification ...` (TLT classification parity)."""

    tlt_aliases: ClassVar[AliasTable] = TLT_CLASSIFICATION  # TLT's own key names and places (tlt_spec.py)

    # the section lives in `model` and is spelled `model_config` in YAML (pydantic reserves that name)
    model: ModelConfig = Field(default_factory=ModelConfig, alias="model_config")
    dataset_config: DatasetConfig = Field(default_factory=DatasetConfig)
    augmentation_config: AugmentationConfig = Field(default_factory=AugmentationConfig)
    eval_config: EvalConfig = Field(default_factory=EvalConfig)
    train_config: TrainConfig = Field(default_factory=TrainConfig)
