"""Atomic writes: an interrupted write leaves the previous file intact and no stray temp file."""

from pathlib import Path

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


def test_read_rgb_names_bytes_without_printing_them(tmp_path):
    from tlkit.errors import DataError
    from tlkit.images import read_rgb

    assert read_rgb(_jpeg_bytes()).shape == (48, 64, 3)
    with pytest.raises(DataError) as err:
        read_rgb(b"hello")  # was "b'hello': ...": a whole file's bytes printed into the message
    assert str(err.value) == "5 bytes of image data: not an image (unknown format)"
    with pytest.raises(DataError, match=r"^rec 3: not an image"):
        read_rgb(b"hello", "rec 3")
    (tmp_path / "bad.jpg").write_bytes(b"hello")
    with pytest.raises(DataError, match=r"bad\.jpg: not an image"):
        read_rgb(tmp_path / "bad.jpg")


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


def test_resolve_inputs_file_folder_list_video(tmp_path):
    from tlkit.errors import DataError
    from tlkit.images import IMAGE_EXTENSIONS, resolve_inputs

    data = _jpeg_bytes()
    for rel in ("d/b.jpg", "d/a.PNG", "d/sub/a.png", "d/sub/deeper/c.webp", "d/notes.txt", "d/clip.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    d = tmp_path / "d"
    folder = resolve_inputs(d)
    # sorted by path, sub-folders included, endings matched case-insensitively; no .txt or video in a folder
    assert folder.images == (d / "a.PNG", d / "b.jpg", d / "sub/a.png", d / "sub/deeper/c.webp")
    assert folder.video is None and folder.source == d
    assert [folder.name(p) for p in folder.images] == ["a.PNG", "b.jpg", "sub/a.png", "sub/deeper/c.webp"]
    assert (
        resolve_inputs(d / "b.jpg").images == (d / "b.jpg",)
        and resolve_inputs(d / "b.jpg").name(d / "b.jpg") == "b.jpg"
    )
    assert resolve_inputs(d / "clip.mp4").video == d / "clip.mp4" and not resolve_inputs(d / "clip.mp4").images
    assert resolve_inputs(d, extensions=(".png",)).images == (d / "a.PNG", d / "sub/a.png")
    assert set(IMAGE_EXTENSIONS) >= {".jpg", ".jpeg", ".png", ".bmp"} and all(e == e.lower() for e in IMAGE_EXTENSIONS)
    # a list: one path a line, relative to the list's folder; blank lines and comments skipped; order kept
    lst = tmp_path / "list.txt"
    lst.write_text(f"# the test set\nd/sub/a.png\n\n  d/b.jpg  \n{d / 'missing.jpg'}\n")
    listed = resolve_inputs(lst)
    assert listed.images == (d / "sub/a.png", d / "b.jpg", d / "missing.jpg")  # a missing one is skipped when read
    assert listed.name(d / "sub/a.png") == "d/sub/a.png"
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "empty").mkdir()
    for source, error in [
        (
            tmp_path / "nope.jpg",
            r"nope\.jpg: no such file or folder \(expected an image, a folder of images, a \.txt list",
        ),
        (tmp_path / "empty", r"empty: no images found \(looked for \.bmp, \.jpeg, \.jpg"),
        (tmp_path / "empty.txt", r"empty\.txt: the list names no image"),
        (lst.with_suffix(".csv"), r"no such file or folder"),
    ]:
        with pytest.raises(DataError, match=error):
            resolve_inputs(source)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x\.csv: not an image, a folder of images, a \.txt list of images or a video"):
        resolve_inputs(tmp_path / "x.csv")
    with pytest.raises(DataError, match=r"clip\.mp4: not an image, a folder of images or a \.txt list of images \("):
        resolve_inputs(d / "clip.mp4", videos=False)


def test_inference_source_takes_exactly_one_flag():
    from tlkit.errors import TlkitError
    from tlkit.images import inference_source

    assert inference_source({"image": "a.jpg", "image_dir": None}, "x") == Path("a.jpg")
    assert inference_source({"image_dir": "d", "input": None}, "x", ("image", "image_dir", "input")) == Path("d")
    for given in ({}, {"image": "a.jpg", "image_dir": "d"}):
        with pytest.raises(
            TlkitError, match=r"^tlkit t inference: give exactly one of -i/--image, -d/--image_dir \(an"
        ):
            inference_source(given, "tlkit t inference")
    with pytest.raises(TlkitError, match=r"-i/--image, -d/--image_dir, --input \(.* or a \.txt list of images\)$"):
        inference_source({}, "x", ("image", "image_dir", "input"), videos=False)


def test_read_batches_skips_unreadable_images_in_order(tmp_path):
    from tlkit.errors import DataError
    from tlkit.images import SkippedImages, read_batches, read_bgr, read_rgb

    data = _jpeg_bytes()
    paths = [tmp_path / f"{i}.jpg" for i in range(7)]
    for i, p in enumerate(paths):
        p.write_bytes(data if i not in (1, 2, 5) else b"not an image" if i != 5 else data[:300])
    skipped = SkippedImages()
    batches = list(read_batches(paths, 3, read_bgr, skipped))  # read_bgr: None for a bad file
    assert [[(i, p.name) for i, p, _ in b] for b in batches] == [
        [(0, "0.jpg")],
        [(3, "3.jpg"), (4, "4.jpg")],
        [(6, "6.jpg")],
    ]
    assert all(img.shape == (48, 64, 3) for b in batches for _, _, img in b)
    assert [(p.name, why) for p, why in skipped.items][:2] == [
        ("1.jpg", "not an image (unknown format)"),
        ("2.jpg", "not an image (unknown format)"),
    ]
    assert skipped.items[2][0].name == "5.jpg" and "truncated" in skipped.items[2][1].lower()
    skipped.require_some(7)  # some were read: no error
    # read_rgb raises DataError("<path>: why"): the same skip, the reason without the path
    again = SkippedImages()
    assert sum(len(b) for b in read_batches(paths, 2, read_rgb, again)) == 4
    assert [why for _, why in again.items] == [why for _, why in skipped.items]
    with pytest.raises(DataError, match=r"1\.jpg: not an image \(unknown format\) \(--strict stops at the first"):
        list(read_batches(paths, 3, read_bgr, SkippedImages(strict=True)))
    none = SkippedImages()
    assert list(read_batches(paths[1:3], 4, read_bgr, none)) == []
    with pytest.raises(DataError, match=r"^imgs: none of the 2 image\(s\) could be read \(.*1\.jpg: not an image"):
        none.require_some(2, "imgs")


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
