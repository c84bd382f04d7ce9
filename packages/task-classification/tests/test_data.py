"""Data loading, preprocessing values, augmentation, targets, and bad-input errors."""

import json

import cv2
import numpy as np
import pytest

from tlkit.errors import DataError
from tlkit_classification.data import (
    Pipeline,
    batches,
    eval_transform,
    load_image,
    mixup,
    normalize,
    one_hot,
    open_image_folder,
    preprocessing_for,
    read_classmap,
    train_transform,
    write_classmap,
)

PIXEL = np.array([[[10, 20, 30]]], np.uint8)  # one RGB pixel


def test_caffe_is_bgr_minus_imagenet_mean():
    x = normalize(PIXEL[None], preprocessing_for("caffe"))
    assert x.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(x[0, :, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)


def test_caffe_image_mean_override_is_rgb_keys():
    pre = preprocessing_for("caffe", image_mean={"r": 1.0, "g": 2.0, "b": 3.0})
    np.testing.assert_allclose(normalize(PIXEL[None], pre)[0, :, 0, 0], [27, 18, 9], rtol=1e-6)


def test_torch_and_tf_modes():
    t = normalize(PIXEL[None], preprocessing_for("torch"))[0, :, 0, 0]
    np.testing.assert_allclose(
        t, (np.array([10, 20, 30]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225], rtol=1e-5
    )
    f = normalize(PIXEL[None], preprocessing_for("tf"))[0, :, 0, 0]
    np.testing.assert_allclose(f, np.array([10, 20, 30]) / 127.5 - 1, rtol=1e-6)


def test_auto_takes_the_backbone_default_else_caffe():
    assert preprocessing_for("auto", backbone_default="tf")["mode"] == "tf"
    assert preprocessing_for("auto")["mode"] == "caffe"
    assert preprocessing_for("torch", interpolation="bicubic")["resize_interpolation"] == "bicubic"


def bordered(h=64, w=64, border=2):
    img = np.zeros((h, w, 3), np.uint8)
    img[...] = (255, 0, 0)
    img[border:-border, border:-border] = (0, 255, 0)
    return img


def test_center_crop_drops_the_border_plain_resize_keeps_it():
    img = bordered()
    crop = eval_transform(img, (32, 32), center_crop=True)
    assert crop.shape == (32, 32, 3)
    assert crop[..., 0].max() < 60 and crop[..., 1].min() > 200  # no red left
    full = eval_transform(img, (32, 32), center_crop=False)
    assert full.shape == (32, 32, 3) and full[0, 0, 0] > 200  # corner is still red


def test_center_crop_keeps_aspect_for_wide_images():
    img = np.zeros((40, 120, 3), np.uint8)
    img[:, 50:70] = 255  # a bright band in the middle
    crop = eval_transform(img, (32, 32), center_crop=True)
    assert crop.shape == (32, 32, 3)
    assert crop[:, 16].mean() > 200 and crop[:, 0].mean() < 10


def test_train_transform_is_deterministic_per_generator():
    img = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    kw = dict(random_crop=True, hflip=True, color=True)
    a = train_transform(img, (32, 32), np.random.default_rng(5), **kw)
    b = train_transform(img, (32, 32), np.random.default_rng(5), **kw)
    c = train_transform(img, (32, 32), np.random.default_rng(6), **kw)
    assert a.shape == (32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_hflip_only_mirrors():
    img = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    seen = set()
    for s in range(12):
        out = train_transform(img, (32, 32), np.random.default_rng(s), random_crop=False, hflip=True, color=False)
        if np.array_equal(out, img):
            seen.add("same")
        elif np.array_equal(out, img[:, ::-1]):
            seen.add("mirrored")
        else:
            pytest.fail("hflip changed more than the orientation")
    assert seen == {"same", "mirrored"}


def test_one_hot_with_label_smoothing():
    y = one_hot(np.array([2, 0]), 4, smoothing=0.2)
    np.testing.assert_allclose(y[0], [0.05, 0.05, 0.85, 0.05])
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)


def test_mixup_blends_inputs_and_targets_alike():
    x = np.arange(4, dtype=np.float32)[:, None, None, None] * np.ones((4, 1, 2, 2), np.float32)
    y = one_hot(np.arange(4), 4)
    xm, ym = mixup(x, y, 0.4, np.random.default_rng(3))
    np.testing.assert_allclose(ym.sum(axis=1), 1.0, rtol=1e-6)
    # every mixed image is sum_j y_ij * x_j (x_j is the constant j)
    np.testing.assert_allclose(xm[:, 0, 0, 0], ym @ np.arange(4, dtype=np.float32), rtol=1e-5)


def test_open_image_folder_and_batches(shapes):
    ds = open_image_folder(shapes / "train")
    assert ds.classes == ["circle", "square", "triangle"] and len(ds) == 36
    assert list(np.bincount(ds.labels)) == [12, 12, 12]
    pre = preprocessing_for("caffe")
    pipe = Pipeline((3, 32, 32), pre, train=True, label_smoothing=0.1, color=True)
    one = list(batches(ds, pipe, 8, epoch=1, seed=7, shuffle=True, drop_last=True, workers=0))
    two = list(batches(ds, pipe, 8, epoch=1, seed=7, shuffle=True, drop_last=True, workers=2))
    other = list(batches(ds, pipe, 8, epoch=2, seed=7, shuffle=True, drop_last=True, workers=2))
    assert len(one) == 4 and one[0][0].shape == (8, 3, 32, 32) and one[0][1].shape == (8, 3)
    for (xa, ya), (xb, yb) in zip(one, two):  # thread timing never changes a batch
        assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert not np.array_equal(one[0][0], other[0][0])
    evalpipe = Pipeline((3, 32, 32), pre, train=False)
    labels = np.concatenate([y for _, y in batches(ds, evalpipe, 10)])
    assert np.array_equal(labels, ds.labels)  # unshuffled eval keeps dataset order, int labels


def test_corrupt_images_are_skipped_and_reported_or_fatal_in_strict_mode(shapes, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(shapes / "val", root)
    bad = root / "circle" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "square" / "notes.txt").write_text("not an image, ignored by extension")
    ds = open_image_folder(root)
    assert len(ds) == 12 and ds.corrupt == [bad]
    assert ds.ignored == [root / "square" / "notes.txt"]
    assert str(bad) in ds.problems() and "skipped 1 unreadable image" in ds.problems()
    with pytest.raises(DataError, match=r"broken\.jpg: not a readable image \(strict mode"):
        open_image_folder(root, strict=True)


def test_dataset_errors_are_one_line_and_specific(tmp_path):
    with pytest.raises(DataError, match=r"nope: directory not found"):
        open_image_folder(tmp_path / "nope", what="dataset_config.train_dataset_path")
    (tmp_path / "flat").mkdir()
    cv2.imwrite(str(tmp_path / "flat" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"no class folders; expected"):
        open_image_folder(tmp_path / "flat")
    root = tmp_path / "ds"
    (root / "cat").mkdir(parents=True)
    (root / "dog").mkdir()
    cv2.imwrite(str(root / "cat" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (root / "dog" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        open_image_folder(root)
    assert str(e.value).startswith(f"{root / 'dog'}: class folder has no images") and "\n" not in str(e.value)
    (root / "dog" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"dog: none of the class's images could be decoded"):
        open_image_folder(root)


def test_class_folder_outside_the_model_classes_is_an_error(shapes):
    with pytest.raises(DataError, match=r"class folder 'triangle' is not in the model's classes"):
        open_image_folder(shapes / "val", classes=["circle", "square"])
    ds = open_image_folder(shapes / "val", classes=["square", "circle", "triangle", "star"])
    assert ds.classes[0] == "square" and ds.labels.max() == 2  # order of the given classmap


def test_load_image_errors(tmp_path):
    txt = tmp_path / "a.jpg"
    txt.write_text("hello")
    with pytest.raises(DataError, match=r"a\.jpg: not an image OpenCV can decode"):
        load_image(txt)
    with pytest.raises(DataError, match="image file not found"):
        load_image(tmp_path / "missing.png")


def test_classmap_roundtrip_and_errors(tmp_path):
    p = write_classmap(tmp_path / "classmap.json", ["b", "a", "c"])
    assert json.loads(p.read_text()) == {"b": 0, "a": 1, "c": 2}
    assert read_classmap(p) == ["b", "a", "c"]
    p.write_text('{"a": 0, "b": 2}')
    with pytest.raises(DataError, match="without gaps"):
        read_classmap(p)
    p.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected"):
        read_classmap(p)
