"""`tlkit pose dataset_convert`: COCO json -> sharded RecordIO with masks, read back exactly."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tlkit.errors import DataError, TlkitError
from tlkit.testing import make_context
from tlkit.testing.plugins import run_tlkit
from tlkit_pose.coco import load_coco_keypoints, loss_mask
from tlkit_pose.dataset_convert import convert, read_record, run


def _records(files):
    from mxnet import recordio

    out = []
    for f in files:
        r = recordio.MXIndexedRecordIO(str(Path(f).with_suffix(".idx")), f, "r")
        out += [read_record(r.read_idx(i)) for i in r.keys]
        r.close()
    return out


def test_round_trip_with_masks_partitions_and_shards(tmp_path, synthetic_set):
    ds = load_coco_keypoints(synthetic_set)
    m = convert(ds, tmp_path / "out" / "pose", mode="train", num_partitions=2, num_shards=2, generate_masks=True)
    usable = [im for im in ds.images.values() if any(not a["iscrowd"] and a["num_keypoints"] for a in im.annotations)]
    assert len(m["files"]) == 4 and m["num_records"] == len(usable) == sum(m["records_per_file"])
    assert Path(m["files"][3]).name == "pose-train-fold-001-of-002-shard-00001-of-00002.rec"
    assert all(Path(f).with_suffix(".idx").is_file() for f in m["files"])
    assert json.loads((tmp_path / "out" / "pose-train.json").read_text())["num_records"] == m["num_records"]
    recs = _records(m["files"][:2])  # fold 0: every other image in id order
    assert sorted(r["image_id"] for r in recs) == sorted(im.id for im in usable)[0::2]
    for r in recs:
        im = ds.images[r["image_id"]]
        assert r["record_label"] == im.id
        np.testing.assert_array_equal(
            r["keypoints"], np.array([a["keypoints"] for a in im.annotations]).reshape(-1, 17, 3)
        )
        np.testing.assert_array_equal(r["image"], cv2.imread(str(ds.image_path(im))))
        np.testing.assert_array_equal(r["mask"], loss_mask(im))
        assert r["iscrowd"] == [a["iscrowd"] for a in im.annotations]
    assert any((r["mask"] == 0).any() for r in _records(m["files"]))  # crowds/unlabeled people were masked


def test_missing_images_are_reported_and_all_missing_is_an_error(tmp_path, synthetic_set):
    ds = load_coco_keypoints(synthetic_set)
    first = sorted(ds.images.values(), key=lambda i: i.id)[0]
    img_dir = tmp_path / "imgs" / "images"
    img_dir.mkdir(parents=True)
    for im in ds.images.values():
        if im.id != first.id:
            (img_dir / Path(im.file_name).name).write_bytes(ds.image_path(im).read_bytes())
    m = convert(ds, tmp_path / "o" / "p", image_root=tmp_path / "imgs")
    assert m["skipped_images"] == {"missing": [str(tmp_path / "imgs" / first.file_name)]}
    with pytest.raises(DataError, match="none of the .* images could be used .*check --image_root"):
        convert(ds, tmp_path / "o2" / "p", image_root=tmp_path / "nowhere")


def test_wrong_sizes_are_skipped_and_reported(tmp_path, synthetic_set):
    data = json.loads(synthetic_set.read_text())
    data["images"][0]["width"] += 1  # the json now disagrees with the PNG
    bad = synthetic_set.parent / "wrong_size.json"
    bad.write_text(json.dumps(data))
    m = convert(load_coco_keypoints(bad), tmp_path / "p")
    assert (
        len(m["skipped_images"]["size_mismatch"]) == 1
        and "json says 321x256" in m["skipped_images"]["size_mismatch"][0]
    )


def test_run_needs_annotations_and_cli_works(tmp_path, synthetic_set):
    with pytest.raises(TlkitError, match="give -a/--annotations"):
        run(make_context("pose", "dataset_convert", results_dir=tmp_path, options={"mode": "train"}))
    r = run_tlkit(
        [
            "pose",
            "dataset_convert",
            "-a",
            str(synthetic_set),
            "-o",
            str(tmp_path / "cli" / "coco"),
            "-s",
            "3",
            "--generate_masks",
        ]
    )
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "cli").glob("coco-train-fold-000-of-001-shard-*-of-00003.rec"))) == 3
    assert "Wrote" in r.stdout


def test_dataset_convert_reads_through_the_registered_dataset_format(tmp_path, synthetic_set):
    """The -a file is read by the pose dataset format --input_format names (coco_keypoints by default); an
    unknown name is refused with the installed pose formats."""
    from tlkit.testing.plugins import plugin, registered_plugin
    from tlkit.types import DatasetFormatSpec

    seen = []

    def spy(source, options):
        seen.append((source, options))
        return load_coco_keypoints(source)

    spy_format = DatasetFormatSpec("spy_keypoints", "pose", spy)
    with registered_plugin(plugin(tlkit_register_dataset_formats=lambda: [spy_format]), "spy"):

        def convert_with(fmt, out):
            return run(
                make_context(
                    "pose",
                    "dataset_convert",
                    output=tmp_path / out / "p",
                    options={"annotations": synthetic_set, "input_format": fmt, "strict": False},
                )
            )

        default = convert_with("coco_keypoints", "default")
        assert convert_with("spy_keypoints", "spy")["num_records"] == default["num_records"] > 0
        assert seen == [(Path(synthetic_set), {"strict": False})]
        with pytest.raises(
            TlkitError,
            match=r"unknown pose dataset format 'coco'\. Installed pose dataset formats: "
            r"coco_keypoints, spy_keypoints\.",
        ):
            convert_with("coco", "x")
