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


# -- the I/O error boundary (issue 18) ---------------------------------------------------------------------


def test_disk_full_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from tlkit.errors import OutputError
    from tlkit.testing.faults import disk_full

    p = tmp_path / "model.bin"
    atomic_write_text(p, "good")
    with disk_full(monkeypatch, tmp_path):
        with pytest.raises(OutputError) as err:
            atomic_write_text(p, "new content")
    assert str(err.value) == f"{p}: cannot write: no space left on the device"
    assert p.read_text() == "good" and [x.name for x in tmp_path.iterdir()] == ["model.bin"]


@pytest.mark.parametrize("error, reason", [(13, "permission denied"), (30, "read-only file system")])
def test_unwritable_folder(tmp_path, monkeypatch, error, reason):
    from tlkit.errors import OutputError
    from tlkit.io import make_dir
    from tlkit.testing.faults import deny_writes

    ro = tmp_path / "ro"
    ro.mkdir()
    with deny_writes(monkeypatch, ro, error):
        with pytest.raises(OutputError, match=rf"^{ro / 'a.txt'}: cannot write: {reason}$"):
            atomic_write_text(ro / "a.txt", "x")
        with pytest.raises(OutputError, match=rf"^-r {ro / 'sub'}: cannot create the folder: {reason}$"):
            make_dir(ro / "sub", "-r")
    assert list(ro.iterdir()) == []


def test_a_file_where_a_folder_should_be(tmp_path):
    from tlkit.errors import OutputError
    from tlkit.io import make_dir

    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(OutputError, match=rf"^{f}: is a file, not a folder$"):
        make_dir(f)
    with pytest.raises(OutputError, match=rf"^{f / 'a' / 'b'}: cannot create the folder: {f} is a file, not a folder$"):
        make_dir(f / "a" / "b")
    with pytest.raises(OutputError, match=rf"^{f / 'x.txt'}: cannot write: {f} is a file, not a folder$"):
        atomic_write_text(f / "x.txt", "y")
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match=rf"^{tmp_path / 'd'}: cannot write: it is a folder, not a file$"):
        atomic_write_text(tmp_path / "d", "y")
    assert f.read_text() == "x"


def test_an_error_about_another_file_passes_through(tmp_path):
    """A read error inside the write block is the caller's, not a write error of this file."""
    p = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError):
        with atomic_write(p, "w") as fh:
            fh.write((tmp_path / "missing-input.txt").read_text())
    assert not p.exists()


def test_read_json_errors_name_the_file_and_line(tmp_path):
    from tlkit.errors import DataError
    from tlkit.io import read_json

    p = tmp_path / "a.json"
    with pytest.raises(DataError, match=rf"^{p}: classmap file not found \(run x\)$"):
        read_json(p, "classmap file", "run x")
    p.write_bytes(b'{\n "a": "\xff"}')
    with pytest.raises(DataError, match=rf"^{p}:2: not UTF-8 text \(byte 0xff\); expected a JSON manifest$"):
        read_json(p, "manifest")
    p.write_text('{\n "a": 1,\n}')
    with pytest.raises(DataError, match=rf"^{p}:3: not valid JSON: "):
        read_json(p)
    p.write_text('{"a": [1]}')
    assert read_json(p) == {"a": [1]}


def test_cli_turns_a_stray_oserror_into_one_line(tmp_path, capsys, monkeypatch):
    """The last boundary: an OSError no command caught is `error: <path>: <reason>`, not a traceback."""
    import tlkit.cli as cli

    def boom():
        raise PermissionError(13, "Permission denied", str(tmp_path / "x"))

    monkeypatch.setattr("tlkit.cli.app.build_app", boom)
    with pytest.raises(SystemExit) as e:
        cli.main(["plugins"])
    assert e.value.code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'x'}: permission denied\n"

    def bug():
        raise KeyError("oops")

    monkeypatch.setattr("tlkit.cli.app.build_app", bug)
    with pytest.raises(SystemExit) as e:
        cli.main(["plugins"])
    assert e.value.code == 70
    err = capsys.readouterr().err
    assert err.startswith("error: internal error KeyError: 'oops' (rerun with TLKIT_DEBUG=1") and err.count("\n") == 1


# -- images and RecordIO shards ------------------------------------------------------------------------------


def _jpeg_bytes() -> bytes:
    import cv2
    import numpy as np

    img = cv2.resize(np.random.RandomState(0).randint(0, 256, (4, 4, 3)).astype(np.uint8), (64, 48))
    return cv2.imencode(".jpg", img)[1].tobytes()


def test_image_problem_finds_truncated_files_even_when_pillow_is_lenient(tmp_path):
    from PIL import ImageFile

    from tlkit.images import image_problem, read_bgr

    data = _jpeg_bytes()
    assert image_problem(data) == ((64, 48), None)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) * 6 // 10])
    ImageFile.LOAD_TRUNCATED_IMAGES = True  # what importing GluonCV does, process-wide
    try:
        size, problem = image_problem(cut)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    assert size is None and problem.startswith("image file is truncated")
    assert read_bgr(cut) is None and read_bgr(tmp_path / "missing.jpg") is None
    assert image_problem(b"") == (None, "empty file")
    assert image_problem(b"hello") == (None, "not an image (unknown format)")


def test_skipped_images_reports_or_stops(tmp_path):
    from tlkit.errors import DataError
    from tlkit.images import SkippedImages

    s = SkippedImages()
    for i in range(5):
        s.add(tmp_path / f"{i}.jpg", "bad")
    assert len(s) == 5
    first = "; ".join(f"{tmp_path / f'{i}.jpg'} (bad)" for i in range(3))
    assert s.summary() == f"skipped 5 unreadable image(s): {first}; +2 more"
    with pytest.raises(DataError, match=r"a\.jpg: truncated \(--strict stops at the first"):
        SkippedImages(strict=True).add(tmp_path / "a.jpg", "truncated")


def test_record_shards_are_atomic_and_damage_is_named(tmp_path, monkeypatch):
    from tlkit.errors import DataError, OutputError
    from tlkit.recordfile import open_reader, read_record, record_writer
    from tlkit.testing.faults import deny_writes

    rec = tmp_path / "s.rec"
    with pytest.raises(RuntimeError):
        with record_writer(rec) as w:
            w.write_idx(0, b"x" * 100)
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []  # no half shard under any name
    with record_writer(rec) as w:
        for i in range(4):
            w.write_idx(i, bytes([i]) * 1000)
    r = open_reader(rec)
    assert read_record(r, 2, rec) == bytes([2]) * 1000
    r.close()
    rec.write_bytes(rec.read_bytes()[:2500])
    msg = rf"^{rec}: truncated \(2500 bytes, but record 3 starts at byte \d+ per s\.idx; 1 record\(s\) missing\)"
    with pytest.raises(DataError, match=msg):
        open_reader(rec)
    rec.with_suffix(".idx").write_text("0\t0\n1\t1016\n")
    r = open_reader(rec)
    with pytest.raises(DataError, match=rf"^{rec}: record 1 is damaged"):
        read_record(r, 1, rec)
    rec.with_suffix(".idx").write_text("garbage\n")
    with pytest.raises(DataError, match=r"s\.idx: not a RecordIO index"):
        open_reader(rec)
    ro = tmp_path / "ro"
    ro.mkdir()
    with deny_writes(monkeypatch, ro):
        with pytest.raises(OutputError, match=rf"^{ro / 'a.rec'}: cannot write: permission denied$"):
            with record_writer(ro / "a.rec"):
                pass
