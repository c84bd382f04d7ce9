"""COCO keypoints reading: clear errors for broken files, counted label problems, TLT loss masks."""

import json

import numpy as np
import pytest

from tlkit.errors import DataError
from tlkit_pose.coco import CocoImage, load_coco_keypoints, loss_mask
from tlkit_pose.skeleton import COCO_KEYPOINTS
from tlkit_pose.synthetic import person_category


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def _kps(n_labeled=17, x0=10.0):
    k = []
    for i in range(17):
        k += [x0 + i, 20.0 + i, 2 if i < n_labeled else 0] if i < n_labeled else [0, 0, 0]
    return k


def _base():
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "keypoints": _kps(),
                "num_keypoints": 17,
                "bbox": [5, 5, 50, 60],
                "area": 900,
            }
        ],
        "categories": [person_category()],
    }


def test_clean_file_reads_without_problems(tmp_path):
    ds = load_coco_keypoints(write_json(tmp_path / "a.json", _base()))
    assert ds.num_people == 1 and ds.problems == {} and ds.problem_report() == []
    im = ds.images[1]
    assert im.keypoints().shape == (1, 17, 3) and im.keypoints()[0, 3].tolist() == [13, 23, 2]
    assert ds.image_path(im) == tmp_path / "a.jpg"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "COCO keypoints file not found"),
        ('{"images": [1,\n  oops]}', r"a.json:2: not valid JSON"),
        ("[1, 2]", "expected a COCO json object"),
        ('{"images": []}', "'annotations' is missing or not a list"),
        (
            json.dumps({"images": [], "annotations": [], "categories": [{"id": 3, "name": "car"}]}),
            "no category named 'person'",
        ),
        (
            json.dumps(
                {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b"]}]}
            ),
            "expected COCO's 17 in order: nose, left_eye",
        ),
        (
            json.dumps({"images": [{"id": 1, "file_name": "a", "width": 1, "height": 1}] * 2, "annotations": []}),
            r"images\[1\]: image id 1 appears twice",
        ),
    ],
)
def test_broken_files_are_data_errors_naming_file_and_reason(tmp_path, content, message):
    p = tmp_path / "a.json"
    if content is not None:
        p.write_text(content)
    with pytest.raises(DataError, match=message):
        load_coco_keypoints(p)


def test_label_problems_are_counted_repaired_or_skipped(tmp_path):
    d = _base()
    anns = d["annotations"]
    anns.append({**anns[0], "id": 2, "image_id": 99})  # unknown image
    anns.append({**anns[0], "id": 3, "keypoints": _kps()[:50]})  # 50 numbers
    anns.append({**anns[0], "id": 4, "keypoints": _kps()[:-1] + [7]})  # visibility 7
    far = _kps()
    far[0] = 500  # nose x outside the 100 px image
    anns.append({**anns[0], "id": 5, "keypoints": far})
    anns.append({**anns[0], "id": 6, "num_keypoints": 3})  # wrong count
    anns.append({**anns[0], "id": 7, "bbox": [1, 2, 0, 5]})  # empty box
    anns.append({**anns[0], "id": 1})  # duplicate id
    anns.append({**anns[0], "id": 8, "category_id": 5})  # not a person
    ds = load_coco_keypoints(write_json(tmp_path / "a.json", d))
    assert dict(ds.problems) == {
        "unknown_image": 1, "bad_keypoints": 1, "bad_visibility": 1, "keypoint_outside_image": 1,
        "num_keypoints_mismatch": 1, "bad_bbox": 1, "duplicate_annotation_id": 1, "not_person": 1,
    }  # fmt: skip
    kept = {a["id"]: a for a in ds.images[1].annotations}
    assert sorted(kept) == [1, 5, 6, 7]
    assert kept[5]["keypoints"][:3] == [0, 0, 0] and kept[5]["num_keypoints"] == 16  # outside -> unlabeled
    assert kept[6]["num_keypoints"] == 17  # recounted
    assert kept[7]["bbox"] == [10.0, 20.0, 16.0, 16.0]  # rebuilt from the keypoints
    report = "\n".join(ds.problem_report())
    assert "1 x annotation's image_id is not in images: skipped (first: annotations[1] (id 2))" in report
    with pytest.raises(DataError, match=r"a.json: annotations\[1\] \(id 2\): annotation's image_id is not in images"):
        load_coco_keypoints(tmp_path / "a.json", strict=True)


def _mask_image():
    im = CocoImage(1, "a.jpg", 40, 30)
    person = {"iscrowd": 0, "num_keypoints": 5, "segmentation": [[0, 0, 20, 0, 20, 30, 0, 30]], "bbox": [0, 0, 20, 30]}
    crowd = {
        "iscrowd": 1,
        "num_keypoints": 0,
        "segmentation": None,
        "bbox": [10, 0, 20, 10],
    }  # no segmentation: its box
    unlabeled = {
        "iscrowd": 0,
        "num_keypoints": 0,
        "segmentation": [[30, 20, 40, 20, 40, 30, 30, 30]],
        "bbox": [30, 20, 10, 10],
    }
    im.annotations = [person, crowd, unlabeled]
    return im


def test_loss_mask_tlt_semantics():
    m = loss_mask(_mask_image())
    assert m.shape == (30, 40) and m.dtype == np.uint8
    assert m[5, 15] == 1  # crowd overlapping a labeled person stays usable
    assert m[5, 25] == 0  # crowd elsewhere is masked
    assert m[25, 35] == 0  # a person without keypoints is masked
    assert m[25, 5] == 1 and m[15, 25] == 1  # the labeled person and the background are used
    assert (m == 0).sum() == 10 * 10 + 10 * 10  # crowd minus the person (x 20..30, y 0..10) + the unlabeled box


def test_min_keypoints_for_mask():
    im = _mask_image()
    assert loss_mask(im, min_keypoints=6)[25, 5] == 0  # the 5-keypoint person is now "unlabeled"


def test_real_coco_sample_reads_clean(coco_mini):
    ds = load_coco_keypoints(coco_mini)
    assert len(ds.images) == 4 and ds.num_people == 14 and ds.problems == {}
    masks = [loss_mask(im) for im in ds.images.values()]
    assert all(m.shape == (im.height, im.width) for m, im in zip(masks, ds.images.values()))
    assert any((m == 0).any() for m in masks)  # the sample has people without keypoints
    assert list(COCO_KEYPOINTS) == ds.raw_categories[0]["keypoints"]
