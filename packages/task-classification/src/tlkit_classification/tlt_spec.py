"""TLT/TAO classification (makenet, classification_tf1) spec keys -> tlkit's classification spec.

From TLT's `makenet/proto/*.proto`: `model_config`, `train_config` (which holds the dataset paths and the
augmentation keys tlkit keeps in `dataset_config` / `augmentation_config`), `eval_config`. The semantics of
the schedules follow TLT's callbacks (`nvidia_tao_tf1/cv/common/utils.py`): `step` decays continuously every
`step_size` percent of training, `cosine.soft_start` and `soft_anneal` are fractions of training.
"""

from __future__ import annotations

from typing import Any

from tlkit.spec_aliases import DROP, Alias, AliasTable, Resolution, lower, regularizer_type, unsupported

DEFAULT_EPOCHS = 10  # tlkit's train_config.n_epochs default, when the TLT spec does not say


def _epochs(res: Resolution) -> float:
    return float(res.lookup("train_config.n_epochs", DEFAULT_EPOCHS) or DEFAULT_EPOCHS)


def step_percent_to_epochs(value: Any, res: Resolution) -> float:
    """TLT `step.step_size` is a percentage of training: 10 % of 80 epochs = 8 epochs."""
    return float(value) / 100.0 * _epochs(res)


def soft_start_to_warmup_epochs(value: Any, res: Resolution) -> float:
    """TLT `cosine.soft_start` is the fraction of training spent warming up."""
    return float(value) * _epochs(res)


def image_mean(value: Any, res: Resolution) -> dict:
    """TLT's image_mean map {r, g, b} (or {l} for 1-channel models) -> tlkit's {r, g, b} (gray models use g)."""
    if not isinstance(value, dict):
        raise ValueError(f"expected key/value entries (r, g, b or l), got {value!r}")
    out = {("g" if k == "l" else k): v for k, v in value.items()}
    unknown = sorted(set(out) - {"r", "g", "b"})
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; expected r, g, b (or l)")
    return out


def reg_scope(value: Any, res: Resolution) -> Any:
    """tlkit regularizes the kernels of convolution and dense layers, TLT's usual `Conv2D,Dense`."""
    layers = {p.strip().lower() for p in str(value).split(",") if p.strip()}
    if layers - {"conv2d", "dense"}:
        res.warn("train_config.reg_config.scope", f"{value!r}: tlkit regularizes Conv2D and Dense kernels only", value)
    elif layers != {"conv2d", "dense"}:
        res.warn("train_config.reg_config.scope", f"{value!r}: tlkit regularizes both Conv2D and Dense kernels", value)
    return DROP


_LR_IGNORED = "the rate comes from lr_config (TLT's schedule overwrites it too)"
_KERAS_DECAY = "Keras time-based decay on top of the schedule"

ALIASES = [
    # model_config
    Alias("model_config.resize_interpolation_method", ".resize_interpolation_method", lower),
    Alias("model_config.batch_norm_config", "model_config"),
    Alias("model_config.batch_norm_config.momentum", ".batch_norm_momentum"),
    unsupported("model_config.batch_norm_config.epsilon", "tlkit keeps each backbone's epsilon (1e-5)", (1e-5, 1e-05)),
    unsupported("model_config.use_bias", "tlkit's backbones decide their convolution biases", (False,)),
    unsupported(
        "model_config.activation",
        "tlkit's backbones keep their own activation",
        ({"activation_type": "relu"}, {"activation_type": ""}),
    ),
    unsupported("model_config.byom_model", "bring-your-own-model .tltb files", ("",)),
    # train_config: data and augmentation live in their own sections in tlkit
    Alias("train_config.train_dataset_path", "dataset_config.train_dataset_path"),
    Alias("train_config.val_dataset_path", "dataset_config.val_dataset_path"),
    *(
        Alias(f"train_config.{k}", f"augmentation_config.{k}")
        for k in (
            "enable_random_crop",
            "enable_center_crop",
            "enable_color_augmentation",
            "label_smoothing",
            "preprocess_mode",
            "mixup_alpha",
            "disable_horizontal_flip",
        )
    ),
    Alias("train_config.image_mean", "augmentation_config.image_mean", image_mean),
    unsupported("train_config.model_parallelism", "tlkit trains data-parallel only", ([],)),
    unsupported(
        "train_config.visualizer",
        "tlkit writes events/ (TensorBoard) and training_curves.png itself",
        ({}, {"enabled": False}),
    ),
    # optimizer { sgd | adam | rmsprop { ... } }, or TLT 2.0's optimizer: "sgd"
    Alias("train_config.optimizer", "train_config.optimizer.type", lower, when=str),
    Alias("train_config.optimizer.sgd", "train_config.optimizer", also={".type": "sgd"}),
    Alias("train_config.optimizer.adam", "train_config.optimizer", also={".type": "adam"}),
    Alias("train_config.optimizer.adam.beta_1", ".beta1"),
    Alias("train_config.optimizer.adam.beta_2", ".beta2"),
    Alias("train_config.optimizer.rmsprop", "train_config.optimizer", also={".type": "rmsprop"}),
    *(unsupported(f"train_config.optimizer.{o}.lr", _LR_IGNORED, warn=False) for o in ("sgd", "adam", "rmsprop")),
    *(unsupported(f"train_config.optimizer.{o}.decay", _KERAS_DECAY, (0, 0.0)) for o in ("sgd", "adam", "rmsprop")),
    # reg_config { type scope weight_decay }
    Alias("train_config.reg_config.type", ".type", regularizer_type),
    Alias("train_config.reg_config.scope", ".scope", reg_scope, note="tlkit regularizes Conv2D and Dense kernels"),
    # lr_config { step | soft_anneal | cosine { ... } }
    Alias(
        "train_config.lr_config.step",
        "train_config.lr_config",
        also={".type": "exponential"},
        note="TLT's step decays continuously: tlkit's exponential schedule",
    ),
    Alias(
        "train_config.lr_config.step.step_size",
        ".step_size",
        step_percent_to_epochs,
        note="percent of training -> epochs",
    ),
    Alias(
        "train_config.lr_config.soft_anneal",
        "train_config.lr_config",
        also={".type": "soft_anneal", ".min_learning_rate": 3e-4},
        note="TLT's soft start begins at 3e-4",
    ),
    Alias("train_config.lr_config.cosine", "train_config.lr_config", also={".type": "cosine"}),
    Alias(
        "train_config.lr_config.cosine.soft_start",
        ".warmup_epochs",
        soft_start_to_warmup_epochs,
        note="fraction of training -> epochs",
    ),
]

TLT_CLASSIFICATION = AliasTable(
    ALIASES,
    repeated=[
        "model_config.freeze_blocks",
        "train_config.model_parallelism",
        "train_config.lr_config.soft_anneal.annealing_points",
    ],
    maps=["train_config.image_mean", "model_config.activation.activation_parameters"],
    tlt_defaults={
        "model_config.arch": ("resnet", "TLT builds a ResNet when arch is empty"),
        "model_config.n_layers": (18, "TLT's depth when n_layers is 0"),
        "model_config.use_batch_norm": (False, "proto default"),
        "model_config.use_pooling": (False, "proto default"),
        "augmentation_config.enable_random_crop": (False, "proto default"),
        "augmentation_config.enable_center_crop": (False, "proto default"),
        "eval_config.enable_center_crop": (False, "proto default"),
    },
)
