"""Shared helpers: tiny datasets written by the tests themselves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # detection_synth: the tests' synthetic dataset

SHARED_DATA = Path(__file__).resolve().parents[3] / ".." / "shared" / "data"


def _write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def shared_data() -> Path:
    root = SHARED_DATA.resolve()
    if not root.is_dir():
        pytest.skip(f"{root} is absent (real datasets live in ../shared/data next to the project)")
    return root


@pytest.fixture
def write_image():
    """write_image(path, width, height, seed=0): a random RGB image file (format from the suffix)."""
    return _write_image
