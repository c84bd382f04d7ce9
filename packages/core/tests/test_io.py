"""Atomic writes: an interrupted write leaves the previous file intact and no stray temp file."""

import pytest

from tlkit.io import atomic_write, atomic_write_text


def test_atomic_write_replaces(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_interrupted_write_keeps_old_file(tmp_path):
    p = tmp_path / "model.bin"
    atomic_write_text(p, "good")
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as fh:
            fh.write("half of a new fi")
            raise RuntimeError("killed midway")
    assert p.read_text() == "good"
    assert [x.name for x in tmp_path.iterdir()] == ["model.bin"]


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    """Triton/DeepStream services run as another user: artefacts must be readable like any new file."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        p = tmp_path / "model.onnx"
        atomic_write_text(p, "x")
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        os.umask(0o077)
        atomic_write_text(p, "y")
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    finally:
        os.umask(old)
