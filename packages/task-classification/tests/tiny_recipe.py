"""The tests' tiny classification recipe (resnet10 from scratch, 32 px, 2 epochs) and command contexts."""

from rich.console import Console

from tlkit.config import load_spec
from tlkit.testing import make_context
from tlkit_classification.config import ClassificationConfig


def ctx(command, spec=None, **kw):
    """The command's context as the CLI builds it (option defaults, the default spec for spec=None)."""
    return make_context("classification", command, spec=spec, console=Console(width=120, quiet=True), **kw)


def spec(root, *extra):
    return load_spec(
        None,
        ClassificationConfig,
        [
            "model_config.arch=resnet",
            "model_config.n_layers=10",
            "model_config.input_image_size=3,32,32",
            f"dataset_config.train_dataset_path={root / 'train'}",
            f"dataset_config.val_dataset_path={root / 'val'}",
            "train_config.batch_size_per_gpu=8",
            "train_config.n_workers=1",
            "train_config.n_epochs=2",
            "train_config.lr_config.type=constant",
            "train_config.lr_config.learning_rate=0.01",
            *extra,
        ],
    )
