"""Sharded RecordIO: partitioning (TLT semantics), writing, reading with a target class mapping, and the
dataset_convert command."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tlkit.errors import DataError, SpecError
from tlkit.testing import make_context
from tlkit.testing.plugins import run_tlkit
from tlkit_detection.config import PartitionConfig
from tlkit_detection.dataset_convert import run as convert_run
from tlkit_detection.records import RecordReader, partition_frames

OBJECTS = ["Car", "Van", "Pedestrian", "Cyclist", "DontCare"]


def make_kitti(root: Path, write_image, n: int = 6) -> Path:
    """n 32x24 PNGs; frame i has object types OBJECTS[i % 5] and OBJECTS[(i + 1) % 5]."""
    (root / "labels").mkdir(parents=True)
    for i in range(n):
        write_image(root / "images" / f"{i:06d}.png", 32, 24, seed=i)
        lines = [f"{OBJECTS[(i + k) % 5]} 0.{k} {k} 0 {1 + i} 2 {20 + k} {22 - k} 0 0 0 0 0 0 0" for k in range(2)]
        (root / "labels" / f"{i:06d}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_random_partition_is_tlt_like():
    frames = [f"{i:04d}" for i in range(50)]
    val, train = partition_frames(frames, PartitionConfig(val_split=20, seed=3))
    assert len(val) == 10 and len(train) == 40
    assert sorted(val + train) == frames
    assert partition_frames(frames, PartitionConfig(val_split=20, seed=3)) == [val, train]
    assert partition_frames(frames, PartitionConfig(val_split=20, seed=4))[0] != val
    assert partition_frames(frames, PartitionConfig(val_split=0))[0] == []


def test_sequence_partition_keeps_sequences_together(tmp_path):
    frames = [f"s{s}_{i}" for s in range(5) for i in range(3)]
    seq_file = tmp_path / "seq.json"
    seq_file.write_text(json.dumps({f"s{s}": [f"s{s}_{i}" for i in range(3)] for s in range(5)}))
    folds = partition_frames(
        frames,
        PartitionConfig(partition_mode="sequence", num_partitions=2, kitti_sequence_to_frames_file=str(seq_file)),
    )
    assert sorted(len(f) for f in folds) == [6, 9]
    for fold in folds:
        assert {f.split("_")[0] for f in fold}.isdisjoint(
            {f.split("_")[0] for other in folds if other is not fold for f in other}
        )
    seq_file.write_text(json.dumps({"s0": ["s0_0"]}))
    with pytest.raises(DataError, match="14 frames belong to no sequence"):
        partition_frames(
            frames, PartitionConfig(partition_mode="sequence", kitti_sequence_to_frames_file=str(seq_file))
        )
    single = partition_frames(frames, PartitionConfig(partition_mode="sequence", num_partitions=3))
    assert [len(f) for f in single] == [5, 5, 5]


def _ctx(tmp_path, **options):
    out = options.pop("output")
    return make_context("detection", "dataset_convert", output=out, options=options)


def test_convert_write_and_read_back(tmp_path, write_image):
    root = make_kitti(tmp_path / "data", write_image)
    spec = tmp_path / "export.yaml"
    spec.write_text(
        "kitti_config:\n  root_directory_path: data\n  image_extension: png\n  val_split: 34\n  num_shards: 2\n"
    )
    out = tmp_path / "rec" / "train"
    result = convert_run(_ctx(tmp_path, output=out, dataset_export_spec=spec))
    manifest = json.loads(Path(result["manifest"]).read_text())
    assert manifest["frames_per_fold"] == [2, 4] and manifest["classes"] == sorted(OBJECTS)
    names = sorted(p.name for p in out.parent.iterdir())
    assert (
        "train-fold-000-of-002-shard-00000-of-00002.rec" in names
        and "train-fold-001-of-002-shard-00001-of-00002.idx" in names
    )
    assert len([n for n in names if n.endswith(".rec")]) == 4 and "train.json" in names

    reader = RecordReader(out, folds=[1])
    samples = list(reader)
    assert len(samples) == len(reader) == 4 and [s.frame_id for s in samples] == reader.frame_ids
    for s in samples:
        i = int(s.frame_id)
        np.testing.assert_array_equal(
            s.image, np.asarray(Image.open(root / "images" / f"{s.frame_id}.png").convert("RGB"))
        )
        assert [reader.classes[c] for c in s.classes] == [OBJECTS[i % 5], OBJECTS[(i + 1) % 5]]
        np.testing.assert_allclose(s.boxes, [[1 + i, 2, 20, 22], [1 + i, 2, 21, 21]], atol=1e-4)

    mapped = RecordReader(
        f"{out}.json", target_class_mapping={"car": "vehicle", "VAN": "vehicle", "Pedestrian": "person"}
    )
    assert mapped.classes == ["person", "vehicle"] and len(mapped) == 6
    seen = {}
    for s in mapped:
        i = int(s.frame_id)
        want = [
            {"Car": "vehicle", "Van": "vehicle", "Pedestrian": "person"}.get(OBJECTS[(i + k) % 5]) for k in range(2)
        ]
        assert [mapped.classes[c] for c in s.classes] == [w for w in want if w]
        assert len(s.boxes) == len(s.classes)
        seen[s.frame_id] = len(s.classes)
    assert sum(seen.values()) == 8  # 12 objects: 3 Car, 3 Van, 2 Pedestrian kept; 2 Cyclist, 2 DontCare dropped
    with pytest.raises(DataError, match=r"fold\(s\) \[2\] do not exist"):
        RecordReader(out, folds=[2])


def test_convert_other_formats_and_errors(tmp_path, write_image):
    make_kitti(tmp_path / "data", write_image)
    spec = tmp_path / "export.yaml"
    spec.write_text("dataset_export_config:\n  classes: [Car, Van]\n  kitti_config:\n    root_directory_path: data\n")
    res = convert_run(_ctx(tmp_path, output=tmp_path / "k2", dataset_export_spec=spec, output_format="kitti"))
    assert res["report"]["problems"]["unknown_class"] == 4  # Pedestrian x2, Cyclist x2 (DontCare regions are kept)
    assert sorted(p.name for p in (tmp_path / "k2" / "labels").iterdir())[0] == "000000.txt"
    res = convert_run(_ctx(tmp_path, output=tmp_path / "c.json", dataset_export_spec=spec, output_format="coco"))
    assert [c["name"] for c in json.loads((tmp_path / "c.json").read_text())["categories"]] == ["Car", "Van"]

    bad = tmp_path / "bad.yaml"
    bad.write_text("kitti_config:\n  root_directory_path: data\n  partition_mode: random\n  num_partitions: 3\n")
    with pytest.raises(
        SpecError,
        match=r"bad.yaml:4: kitti_config.num_partitions: Value error, partition_mode 'random' makes exactly 2 folds",
    ):
        convert_run(_ctx(tmp_path, output=tmp_path / "x", dataset_export_spec=bad))
    bad.write_text("kitti_config:\n  root_directory_path: data\n  val_splt: 3\n")
    with pytest.raises(
        SpecError, match=r"bad.yaml:3: kitti_config.val_splt: unknown key \(did you mean 'val_split'\?\)"
    ):
        convert_run(_ctx(tmp_path, output=tmp_path / "x", dataset_export_spec=bad))
    bad.write_text("classes: []\n")
    with pytest.raises(SpecError, match="give exactly one of kitti_config, voc_config, coco_config"):
        convert_run(_ctx(tmp_path, output=tmp_path / "x", dataset_export_spec=bad))


def test_bccd_converts_to_records(tmp_path, shared_data):
    spec = tmp_path / "bccd.yaml"
    spec.write_text(
        f"voc_config:\n  root_directory_path: {shared_data / 'bccd-voc'}\n  image_set: val\n  num_shards: 1\n"
    )
    res = convert_run(_ctx(tmp_path, output=tmp_path / "bccd", dataset_export_spec=spec))
    assert res["report"]["problems"]["zero_size_box"] == 1  # BloodImage_00338 is in the val split
    reader = RecordReader(tmp_path / "bccd", folds=[0])
    first = next(iter(reader))
    assert first.image.shape == (480, 640, 3) and first.boxes.shape[1] == 4


def test_cli_dataset_convert(tmp_path, write_image):
    make_kitti(tmp_path / "data", write_image, n=3)
    (tmp_path / "export.yaml").write_text("kitti_config:\n  root_directory_path: data\n  num_shards: 1\n")
    r = run_tlkit(["detection", "dataset_convert", "-d", "export.yaml", "-o", "out/ds"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    # 14 % of 3 frames is none: the empty validation fold writes no (0-byte) shard files
    assert "3 images, 6 objects kept" in r.stdout
    assert "Wrote 1 RecordIO shards (fold 0: 0, fold 1: 3 frames)" in r.stdout
    assert (tmp_path / "out" / "ds-fold-001-of-002-shard-00000-of-00001.rec").is_file()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if "fold-000" in p.name) == []
    r = run_tlkit(["detection", "dataset_convert", "-d", "missing.yaml", "-o", "x"], cwd=tmp_path)
    assert r.returncode != 0 and "missing.yaml: dataset export spec not found" in r.stderr + r.stdout
    assert "Traceback" not in r.stderr


def test_records_read_with_mxnet_image_det_iter(tmp_path, write_image):
    """The label layout is im2rec's detection layout: mx.io.ImageDetRecordIter reads the shards."""
    import mxnet as mx

    make_kitti(tmp_path / "data", write_image, n=2)
    spec = tmp_path / "export.yaml"
    spec.write_text("kitti_config:\n  root_directory_path: data\n  val_split: 0\n  num_shards: 1\n")
    convert_run(_ctx(tmp_path, output=tmp_path / "ds", dataset_export_spec=spec))
    name = str(tmp_path / "ds-fold-001-of-002-shard-00000-of-00001")
    it = mx.io.ImageDetRecordIter(
        path_imgrec=name + ".rec", path_imgidx=name + ".idx", batch_size=2, data_shape=(3, 24, 32)
    )
    batch = next(iter(it))
    assert batch.data[0].shape == (2, 3, 24, 32)
    label = batch.label[0][0].asnumpy()
    # the iterator prepends its own header; our two 7-wide object rows end the label
    objects = label[-2 * 7 :].reshape(2, 7)
    manifest = json.loads((tmp_path / "ds.json").read_text())
    i = int(manifest["shards"][-1]["frames"][0])
    assert [manifest["classes"][int(c)] for c in objects[:, 0]] == [OBJECTS[i % 5], OBJECTS[(i + 1) % 5]]
    np.testing.assert_allclose(objects[0, 1:5], [(1 + i) / 32, 2 / 24, 20 / 32, 22 / 24], rtol=1e-6)
    assert objects[1, 5:] == pytest.approx([0.1, 1.0])  # truncated, occluded of the second object


def test_convert_falls_back_to_the_experiment_spec(tmp_path, write_image):
    from tlkit_detection.config import DetectionConfig

    root = make_kitti(tmp_path / "data", write_image, n=3)
    spec = DetectionConfig.model_validate(
        {"dataset_export_config": {"kitti_config": {"root_directory_path": str(root), "num_shards": 1}}}
    )
    ctx = make_context("detection", "dataset_convert", spec=spec, output=tmp_path / "ds")
    assert json.loads(Path(convert_run(ctx)["manifest"]).read_text())["frames_per_fold"] == [0, 3]
    with pytest.raises(SpecError, match="-d/--dataset_export_spec is required"):
        convert_run(make_context("detection", "dataset_convert", spec=DetectionConfig(), output=tmp_path / "x"))
