"""The synthetic people generator: deterministic, exact and self-consistent COCO annotations."""

import json

import cv2
import numpy as np

from tlkit_pose.coco import load_coco_keypoints
from tlkit_pose.synthetic import generate_dataset, synthetic_coco


def test_same_seed_same_data_other_seed_other_data():
    a, ia = synthetic_coco(3, seed=11, size=(96, 128))
    b, ib = synthetic_coco(3, seed=11, size=(96, 128))
    c, ic = synthetic_coco(3, seed=12, size=(96, 128))
    assert a == b and all((x == y).all() for x, y in zip(ia, ib))
    assert a["annotations"] != c["annotations"] and not (ia[0] == ic[0]).all()


def test_annotations_are_exact_and_consistent():
    coco, images = synthetic_coco(6, seed=2, size=(160, 200), people=(2, 4), crowd_prob=1.0, unlabeled_prob=0.3)
    from pycocotools import mask as mask_utils

    by_image = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
        rle = dict(a["segmentation"], counts=a["segmentation"]["counts"].encode())
        m = mask_utils.decode(rle)
        assert m.shape == (160, 200) and m.sum() == a["area"] > 0
        ys, xs = np.nonzero(m)
        assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        k = np.array(a["keypoints"]).reshape(17, 3)
        assert a["num_keypoints"] == (k[:, 2] > 0).sum()
        if a["num_keypoints"]:
            assert (k[:, 0] >= 0).all() and (k[:, 0] <= 199).all() and (k[:, 1] >= 0).all() and (k[:, 1] <= 159).all()
            assert m[int(round(k[0, 1])), int(round(k[0, 0]))] == 1  # the nose is on the drawn head
    assert all(sum(a["iscrowd"] for a in anns) == 1 for anns in by_image.values())  # crowd_prob=1
    assert any(a["num_keypoints"] == 0 and not a["iscrowd"] for a in coco["annotations"])
    assert all(img.shape == (160, 200, 3) and img.dtype == np.uint8 and img.std() > 5 for img in images)


def test_generated_dataset_reads_clean(tmp_path):
    path = generate_dataset(tmp_path, n_images=3, seed=4, size=(96, 96), people=(1, 2))
    ds = load_coco_keypoints(path)
    assert ds.problems == {} and len(ds.images) == 3
    for im in ds.images.values():
        img = cv2.imread(str(ds.image_path(im)))
        assert img.shape == (96, 96, 3)
    data = json.loads(path.read_text())
    assert data["categories"][0]["name"] == "person" and len(data["categories"][0]["keypoints"]) == 17
