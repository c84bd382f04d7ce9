"""dataset_convert: stratified split, and Pascal VOC to class folders (crop / dominant object)."""

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from tlkit.errors import DataError, TlkitError
from tlkit_classification.data import open_image_folder
from tlkit_classification.dataset_convert import parse_ratios, split_folder, voc_to_folders


def files(d: Path) -> set[str]:
    return {str(p.relative_to(d).parts[-2:]) for p in d.rglob("*.png")}


def test_stratified_split_is_reproducible_and_disjoint(shapes, tmp_path):
    counts = split_folder(shapes / "train", tmp_path / "a", (0.5, 0.25, 0.25), seed=3)
    assert counts["train"] == {"circle": 6, "square": 6, "triangle": 6}
    assert counts["val"] == counts["test"] == {"circle": 3, "square": 3, "triangle": 3}
    a = {s: files(tmp_path / "a" / s) for s in ("train", "val", "test")}
    assert not (a["train"] & a["val"]) and not (a["train"] & a["test"]) and not (a["val"] & a["test"])
    assert len(a["train"] | a["val"] | a["test"]) == 36
    split_folder(shapes / "train", tmp_path / "b", (0.5, 0.25, 0.25), seed=3)
    split_folder(shapes / "train", tmp_path / "c", (0.5, 0.25, 0.25), seed=4)
    assert files(tmp_path / "b" / "val") == a["val"]
    assert files(tmp_path / "c" / "val") != a["val"]


def test_small_classes_still_get_a_val_image(tmp_path):
    root = tmp_path / "src"
    for cls, n in (("big", 20), ("tiny", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{i}.png"), np.full((8, 8, 3), i, np.uint8))
    counts = split_folder(root, tmp_path / "out", parse_ratios("0.9,0.1"))
    assert counts["val"]["tiny"] == 1 and counts["train"]["tiny"] == 2 and counts["test"] == {"big": 0, "tiny": 0}
    assert counts["train"]["big"] == 18 and counts["val"]["big"] == 2


@pytest.mark.parametrize("bad", ["0.5,0.2", "a,b", "0.2,0.8,0.1,0.1", "0,0.5,0.5"])
def test_bad_ratios(bad):
    with pytest.raises(TlkitError, match="--ratios"):
        parse_ratios(bad)


def write_voc(root: Path) -> None:
    """Two 60x40 images: one with a big 'cat' and a small 'dog', one with a 'dog' and a zero-width box."""
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    objs = {
        "img1": [("cat", (1, 1, 40, 30), 0), ("dog", (45, 5, 58, 20), 0), ("dog", (45, 25, 58, 38), 1)],
        "img2": [("dog", (5, 5, 35, 35), 0), ("cat", (10, 10, 10, 30), 0)],
    }
    for name, boxes in objs.items():
        img = np.zeros((40, 60, 3), np.uint8)
        xml = [
            f"<annotation><filename>{name}.jpg</filename><size><width>60</width><height>40</height><depth>3</depth></size>"
        ]
        for cls, (x0, y0, x1, y1), diff in boxes:
            img[y0 - 1 : y1, x0 - 1 : x1] = (0, 0, 255) if cls == "cat" else (255, 0, 0)
            xml.append(
                f"<object><name>{cls}</name><difficult>{diff}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
                f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            )
        xml.append("</annotation>")
        cv2.imwrite(str(root / "JPEGImages" / f"{name}.jpg"), img)
        (root / "Annotations" / f"{name}.xml").write_text("".join(xml))
    (root / "ImageSets" / "Main" / "train.txt").write_text("img1\n")


def test_voc_crops_one_image_per_object(tmp_path):
    write_voc(tmp_path / "voc")
    res = voc_to_folders(tmp_path / "voc", tmp_path / "out", mode="crop")
    assert res["classes"] == {"cat": 1, "dog": 2}
    assert res["skipped"] == {"degenerate_box": 1, "difficult": 1}
    crop = cv2.imread(str(tmp_path / "out" / "cat" / "img1_000.jpg"))
    assert crop.shape[:2] == (30, 40)  # the 1-based inclusive box (1,1)-(40,30)
    assert crop[..., 2].mean() > 200  # red (BGR) cat pixels
    ds = open_image_folder(tmp_path / "out")
    assert ds.classes == ["cat", "dog"] and len(ds) == 3


def test_voc_dominant_object_labels_whole_images(tmp_path):
    write_voc(tmp_path / "voc")
    res = voc_to_folders(tmp_path / "voc", tmp_path / "out", mode="dominant")
    assert res["classes"] == {"cat": 1, "dog": 1}
    assert (tmp_path / "out" / "cat" / "img1.jpg").is_file() and (tmp_path / "out" / "dog" / "img2.jpg").is_file()
    only = voc_to_folders(tmp_path / "voc", tmp_path / "out2", mode="dominant", image_set="train")
    assert only["classes"] == {"cat": 1}


def test_voc_errors(tmp_path):
    with pytest.raises(DataError, match="no Annotations/ directory"):
        voc_to_folders(tmp_path, tmp_path / "out")
    write_voc(tmp_path / "voc")
    (tmp_path / "voc" / "Annotations" / "img2.xml").write_text("<annotation><object>")
    with pytest.raises(DataError, match=r"img2\.xml: not valid XML"):
        voc_to_folders(tmp_path / "voc", tmp_path / "out")
    with pytest.raises(DataError, match="image list 'val' not found"):
        voc_to_folders(tmp_path / "voc", tmp_path / "out", image_set="val")


def test_command_voc_then_split(tmp_path, make_ctx):
    write_voc(tmp_path / "voc")
    ctx = make_ctx(
        "dataset_convert",
        output=tmp_path / "out",
        mode="voc",
        input=tmp_path / "voc",
        voc_label="crop",
        ratios="0.5,0.5",
        seed=1,
    )
    assert ctx.options["mode"] == "voc"
    from tlkit_classification.dataset_convert import run

    assert run(ctx) == 0
    train = {p.name for p in (tmp_path / "out" / "train").rglob("*.jpg")}
    val = {p.name for p in (tmp_path / "out" / "val").rglob("*.jpg")}
    assert len(train) + len(val) == 3 and not (train & val) and not (tmp_path / "out" / "all").exists()


def test_bccd_voc_crops(tmp_path, shared):
    root = shared("bccd-voc")
    res = voc_to_folders(root, tmp_path / "out", mode="crop", image_set="test")
    assert set(res["classes"]) == {"Platelets", "RBC", "WBC"}
    assert res["classes"]["RBC"] > res["classes"]["WBC"]  # BCCD is dominated by red cells
    ds = open_image_folder(tmp_path / "out")
    assert len(ds) == sum(res["classes"].values()) and not ds.corrupt


def test_voc_folder_names_and_a_fixed_split_from_lists(tmp_path, make_ctx):
    """Real VOC sets name their folders otherwise and come with their own train/val lists."""
    from tlkit_classification.dataset_convert import run

    write_voc(tmp_path / "voc")
    (tmp_path / "voc" / "JPEGImages").rename(tmp_path / "voc" / "images")
    (tmp_path / "voc" / "Annotations").rename(tmp_path / "voc" / "xml")
    (tmp_path / "val_ids.txt").write_text("img2 1\n")  # an id file (VOC class lists carry a flag after the id)
    folders = r"\(set --annotation_dir_name; its folders: \['ImageSets', 'images', 'xml'\]\)"
    with pytest.raises(DataError, match=r"no Annotations/ directory " + folders):
        voc_to_folders(tmp_path / "voc", tmp_path / "out")
    ctx = make_ctx(
        "dataset_convert",
        output=tmp_path / "out",
        mode="voc",
        input=tmp_path / "voc",
        voc_label="dominant",
        image_dir_name="images",
        annotation_dir_name="xml",
        train_list="train",
        val_list=str(tmp_path / "val_ids.txt"),
    )  # an ImageSets/Main name, and a file
    assert run(ctx) == 0
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.jpg")) == [
        "train/cat/img1.jpg",
        "val/dog/img2.jpg",
    ]
    with pytest.raises(TlkitError, match="fix the split: drop --ratios"):
        run(
            make_ctx(
                "dataset_convert",
                output=tmp_path / "o2",
                mode="voc",
                input=tmp_path / "voc",
                ratios="0.5,0.5",
                image_dir_name="images",
                annotation_dir_name="xml",
                train_list="train",
            )
        )


def test_input_format_reads_with_a_registered_format_and_unknown_ones_are_refused(tmp_path, make_ctx):
    """dataset_convert --input_format NAME: the classification dataset format NAME (here a plugin's: a CSV of
    image,label) yields LabeledImages that become class folders, split by --ratios like VOC's."""
    from tlkit.testing.plugins import plugin, registered_plugin
    from tlkit.types import DatasetFormatSpec
    from tlkit_classification.dataset_convert import LabeledImage, run

    def read_csv(source, options):
        rows = [ln.split(",") for ln in source.read_text().split()]
        return iter([LabeledImage(label, name, source.parent / name) for name, label in rows]), Counter()

    csv_format = DatasetFormatSpec("labels_csv", "classification", read_csv)
    with registered_plugin(plugin(tlkit_register_dataset_formats=lambda: [csv_format]), "csv"):
        src = tmp_path / "flat"
        src.mkdir()
        lines = []
        for i in range(6):
            cv2.imwrite(str(src / f"{i}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
            lines.append(f"{i}.png,{'even' if i % 2 == 0 else 'odd'}")
        (src / "labels.csv").write_text("\n".join(lines))
        assert (
            run(
                make_ctx(
                    "dataset_convert",
                    output=tmp_path / "out",
                    input=src / "labels.csv",
                    input_format="labels_csv",
                    ratios="0.67,0.33,0",
                )
            )
            == 0
        )

        def images(d: Path) -> set[str]:
            return {"/".join(p.relative_to(d).parts) for p in d.rglob("*.png")}

        train, val = images(tmp_path / "out" / "train"), images(tmp_path / "out" / "val")
        assert train | val == {"even/0.png", "even/2.png", "even/4.png", "odd/1.png", "odd/3.png", "odd/5.png"}
        assert len(val) == 2 and not train & val and not (tmp_path / "out" / "all").exists()
        with pytest.raises(
            TlkitError,
            match=r"unknown classification dataset format 'csv'\. Installed classification "
            r"dataset formats: labels_csv, voc\.",
        ):
            run(make_ctx("dataset_convert", output=tmp_path / "o", input=src / "labels.csv", input_format="csv"))
