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


@pytest.fixture
def gluoncv_classifier(tmp_path, monkeypatch):
    """`publish(name)`: a randomly initialised GluonCV classifier `name` saved where GluonCV's store looks
    ($MXNET_HOME/models/<name>-<sha1[:8]>.params, its sha1 published for the test), offline; returns the net."""
    import mxnet as mx
    from gluoncv import model_zoo

    from tlkit.hub import gluoncv_store
    from tlkit.io import file_digest

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setenv("TLKIT_OFFLINE", "1")

    def publish(name: str):
        base = model_zoo.get_model(name, pretrained=False)
        base.initialize(mx.init.Xavier())
        base(mx.nd.zeros((1, 3, 64, 64)))
        tmp = tmp_path / "models" / f"{name}.tmp"
        tmp.parent.mkdir(exist_ok=True)
        base.save_parameters(str(tmp))
        # GluonCV checks the file against the hash in its name: publish this file's sha1
        monkeypatch.setitem(gluoncv_store.sha1_table(), name, file_digest(tmp, "sha1"))
        tmp.rename(gluoncv_store.local_path(name))
        return base

    return publish
