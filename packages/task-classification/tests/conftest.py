import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tiny_recipe: the tests' small training recipe

SHARED_DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _shared(name: str) -> Path:
    p = SHARED_DATA / name
    if not p.is_dir():
        pytest.skip(f"{p} not present (real datasets live in ../shared/data beside the repo)")
    return p


@pytest.fixture
def shared():
    """shared(name): a dataset under ../shared/data, or skip the test when this checkout has none."""
    return _shared


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """Generated 3-class shapes: train (12/class) and val (4/class), 32 px."""
    from tlkit_classification.demo_data import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(root / "train", 12, 32, seed=0)
    make_shapes_dataset(root / "val", 4, 32, seed=1)
    return root


def _make_ctx(command, spec=None, results_dir=None, model=None, output=None, **options):
    from rich.console import Console

    from tlkit.testing import make_context

    return make_context(
        "classification",
        command,
        spec=spec,
        results_dir=results_dir,
        model=model,
        output=output,
        options=options,
        console=Console(width=120, highlight=False),
    )


def _spec_for(root, *overrides):
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig

    base = [
        "model_config.input_image_size=3,32,32",
        f"dataset_config.train_dataset_path={root / 'train'}",
        f"dataset_config.val_dataset_path={root / 'val'}",
        "train_config.batch_size_per_gpu=8",
        "train_config.n_workers=1",
        "train_config.n_epochs=1",
    ]
    return load_spec(None, ClassificationConfig, base + list(overrides))


@pytest.fixture
def make_ctx():
    """make_ctx(command, spec=None, results_dir=None, model=None, output=None, **options) -> CommandContext, as the
    CLI builds it (tlkit.testing.make_context: option defaults, the default spec when spec is None)."""
    return _make_ctx


@pytest.fixture
def spec_for():
    """spec_for(root, *overrides): a tiny 32 px spec on root/train and root/val."""
    return _spec_for
