"""VOC / COCO / KITTI conversion on a tiny dataset the test writes, and on the real BCCD set."""

import json

import pytest

from tlkit.errors import DataError
from tlkit_detection.convert import read_coco, read_kitti, read_voc, write_coco, write_kitti
from tlkit_detection.kitti import read_label

VOC_XML = """<annotation><filename>{name}.jpg</filename><size><width>64</width><height>48</height></size>
{objects}</annotation>"""
VOC_OBJ = "<object><name>{cls}</name><truncated>{trunc}</truncated><difficult>0</difficult><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"


def make_voc(root, write_image):
    """4 annotated images + 1 without annotation + 1 unreadable; one box clipped, one zero-size, one unknown class."""
    ann, img = root / "Annotations", root / "JPEGImages"
    ann.mkdir(parents=True)
    objects = {
        "a": [("cat", 0, 1, 2, 30, 40), ("dog", 1, 10, 10, 70, 47)],  # dog reaches x=70 > 64: clipped
        "b": [("cat", 0, 5, 5, 5, 20)],  # zero width: dropped
        "c": [("bird", 0, 1, 1, 10, 10), ("dog", 0, 0, 0, 64, 48)],  # bird: unknown when classes=[cat, dog]
        "d": [],
    }
    for i, (name, objs) in enumerate(objects.items()):
        write_image(img / f"{name}.jpg", 64, 48, seed=i)
        body = "".join(VOC_OBJ.format(cls=c, trunc=t, x1=x1, y1=y1, x2=x2, y2=y2) for c, t, x1, y1, x2, y2 in objs)
        (ann / f"{name}.xml").write_text(VOC_XML.format(name=name, objects=body))
    write_image(img / "e.jpg", 64, 48)  # no annotation
    (img / "f.jpg").write_bytes(b"not an image")
    (ann / "f.xml").write_text(VOC_XML.format(name="f", objects=""))
    return root


def test_voc_reports_every_problem_kind(tmp_path, write_image):
    samples, report = read_voc(make_voc(tmp_path / "voc", write_image), classes=["cat", "dog"])
    assert [s.frame_id for s in samples] == ["a", "b", "c", "d"]
    assert dict(report.counts) == {
        "missing_label": 1,
        "unreadable_image": 1,
        "box_clipped": 1,
        "zero_size_box": 1,
        "unknown_class": 1,
    }
    assert report.unknown_classes == {"bird": 1}
    a = samples[0]
    assert (a.width, a.height) == (64, 48)
    assert [(o.type, o.bbox, o.truncated) for o in a.objects] == [
        ("cat", (1, 2, 30, 40), 0.0),
        ("dog", (10, 10, 64, 47), 1.0),
    ]
    assert samples[1].objects == []
    assert report.objects == 3 and report.images == 4
    text = report.summary()
    assert "1 zero-size boxes (dropped); e.g." in text and "b.xml object 1 (cat 5,5,5,20)" in text
    assert "unknown classes (dropped) (bird: 1)" in text
    assert "e.jpg" in report.examples["missing_label"][0]


def test_voc_errors_name_the_file(tmp_path, write_image):
    root = make_voc(tmp_path / "voc", write_image)
    (root / "Annotations" / "a.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"a.xml:1: not valid XML"):
        read_voc(root)
    (root / "Annotations" / "a.xml").write_text(
        VOC_XML.format(name="a", objects="<object><name>cat</name><bndbox><xmin>1</xmin></bndbox></object>")
    )
    with pytest.raises(DataError, match=r"a.xml: object 1 \(cat\): bndbox needs numeric"):
        read_voc(root)
    with pytest.raises(DataError, match="not a Pascal VOC folder"):
        read_voc(tmp_path)
    with pytest.raises(DataError, match="image set not found"):
        read_voc(root, image_set="train")


def test_kitti_round_trip_and_coco_round_trip(tmp_path, write_image):
    samples, _ = read_voc(make_voc(tmp_path / "voc", write_image))
    out = write_kitti(samples, tmp_path / "kitti")
    assert (out / "images" / "a.jpg").is_symlink()
    assert [o.type for o in read_label(out / "labels" / "a.txt")] == ["cat", "dog"]
    back, report = read_kitti(out, image_extension="jpg")
    assert report.problems == 0 and [s.frame_id for s in back] == ["a", "b", "c", "d"]
    assert [(o.type, o.bbox) for o in back[2].objects] == [(o.type, o.bbox) for o in samples[2].objects]

    coco = write_coco(back, tmp_path / "coco.json")
    data = json.loads(coco.read_text())
    assert [c["name"] for c in data["categories"]] == ["bird", "cat", "dog"]
    assert data["annotations"][1]["bbox"] == [10.0, 10.0, 54.0, 37.0]
    again, report = read_coco(coco, out / "images")
    assert report.problems == 0
    assert [[(o.type, o.bbox) for o in s.objects] for s in again] == [
        [(o.type, o.bbox) for o in s.objects] for s in back
    ]


def test_kitti_missing_files_are_reported(tmp_path, write_image):
    root = tmp_path / "k"
    write_image(root / "images" / "000001.png", 32, 32)
    write_image(root / "images" / "000002.png", 32, 32)
    (root / "labels").mkdir()
    (root / "labels" / "000001.txt").write_text("Car 0 0 0 -5 1 40 20 0 0 0 0 0 0 0\n")
    (root / "labels" / "000009.txt").write_text("")
    samples, report = read_kitti(root, image_extension="png")
    assert [s.frame_id for s in samples] == ["000001"]
    assert samples[0].objects[0].bbox == (0.0, 1.0, 32.0, 20.0)
    assert dict(report.counts) == {"missing_label": 1, "missing_image": 1, "box_clipped": 1}
    with pytest.raises(DataError, match="no images with extension .jpg"):
        read_kitti(root, image_extension="jpg")


def test_coco_crowd_becomes_dontcare_and_errors(tmp_path, write_image):
    write_image(tmp_path / "img" / "x.png", 40, 30)
    data = {
        "images": [{"id": 1, "file_name": "x.png", "width": 40, "height": 30}, {"id": 2, "file_name": "gone.png"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [20, 2, 10, 10], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "person"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    samples, report = read_coco(tmp_path / "a.json", tmp_path / "img")
    assert [(o.type, o.bbox) for o in samples[0].objects] == [("person", (1, 2, 11, 12)), ("DontCare", (20, 2, 30, 12))]
    assert dict(report.counts) == {"missing_image": 1}
    data["annotations"][0]["category_id"] = 7
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"a.json annotation id 1: category_id 7 is not in 'categories'"):
        read_coco(tmp_path / "a.json", tmp_path / "img")
    (tmp_path / "b.json").write_text("{\n  oops")
    with pytest.raises(DataError, match=r"b.json:2: not valid JSON"):
        read_coco(tmp_path / "b.json", tmp_path / "img")


def test_bccd_zero_size_boxes_are_reported(shared_data):
    root = shared_data / "bccd-voc"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    samples, report = read_voc(root)
    assert report.images == 364
    assert report.counts["zero_size_box"] == 2
    assert {e.split("/")[-1].split(" ")[0] for e in report.examples["zero_size_box"]} == {
        "BloodImage_00338.xml",
        "BloodImage_00343.xml",
    }
    per_class = {}
    for s in samples:
        for o in s.objects:
            per_class[o.type] = per_class.get(o.type, 0) + 1
    assert per_class == {"RBC": 4155 - 2, "WBC": 372, "Platelets": 361}


def test_dataset_convert_reads_through_registered_dataset_formats(tmp_path, write_image):
    """The -d spec's voc_config is read by the registered `voc` format; --input_format NAME -i SOURCE by any
    registered detection format (here a stand-in plugin's), with clear errors for the flags that do not fit."""
    from tlkit.errors import TlkitError
    from tlkit.testing import make_context
    from tlkit.testing.plugins import plugin, registered_plugin
    from tlkit.types import DatasetFormatSpec
    from tlkit_detection.dataset_convert import run

    calls = []

    def spy(source, options):
        calls.append((source, options))
        return read_voc(source, classes=options["classes"])

    spy_format = DatasetFormatSpec("spy_voc", "detection", spy)
    make_voc(tmp_path / "voc", write_image)

    def convert(out, **options):
        return run(
            make_context(
                "detection", "dataset_convert", output=tmp_path / out, options={"output_format": "kitti", **options}
            )
        )

    spec = tmp_path / "export.yaml"
    spec.write_text(f"voc_config:\n  root_directory_path: {tmp_path / 'voc'}\n")
    with registered_plugin(plugin(tlkit_register_dataset_formats=lambda: [spy_format]), "spy"):
        builtin = convert("builtin", dataset_export_spec=spec)
        plugged = convert("plugged", input_format="spy_voc", input=tmp_path / "voc")
        with pytest.raises(TlkitError, match=r"unknown detection dataset format 'spy'; did you mean 'spy_voc'\?"):
            convert("x", input_format="spy", input=tmp_path / "voc")
    assert calls == [(tmp_path / "voc", {"classes": None})]
    assert plugged["report"] == builtin["report"] and builtin["report"]["images"] == 4
    assert read_label(tmp_path / "plugged" / "labels" / "a.txt") == read_label(
        tmp_path / "builtin" / "labels" / "a.txt"
    )
    with pytest.raises(TlkitError, match="--input_format spy_voc: -i/--input .* is required"):
        convert("x", input_format="spy_voc")
    with pytest.raises(TlkitError, match="drop -d"):
        convert("x", input_format="spy_voc", input=tmp_path / "voc", dataset_export_spec=spec)
    with pytest.raises(TlkitError, match="give --input_format NAME"):
        convert("x", input=tmp_path / "voc", dataset_export_spec=spec)
