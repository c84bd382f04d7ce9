"""COCO person-keypoints files: reading with clear errors, label problems counted, and loss masks.

A file that is not a COCO keypoints json (unreadable, not JSON, no images/annotations lists, no person
category with COCO's 17 keypoints) is a DataError naming the file and what was expected. Problems in single
annotations are counted by kind and reported (`CocoKeypoints.problem_report()`); the annotation is skipped
or repaired as the kind says. With `strict=True` the first one is an error instead.

Masks follow TLT's `--generate_masks`: crowd regions and people with no labeled keypoints are masked out
of the loss (0), except where a labeled person overlaps a crowd region; everything else is 1.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError
from tlkit.io import read_json
from tlkit_pose.skeleton import COCO_KEYPOINTS, NUM_COCO

# Problem kinds -> what is done about them.
PROBLEMS = {
    "unknown_image": "annotation's image_id is not in images: skipped",
    "bad_keypoints": "keypoints is not a list of 51 numbers (17 x [x, y, v]): skipped",
    "bad_visibility": "a visibility flag is not 0, 1 or 2: skipped",
    "keypoint_outside_image": "a labeled keypoint lies outside the image: that keypoint set to unlabeled",
    "num_keypoints_mismatch": "num_keypoints differs from the labeled keypoints: recounted",
    "bad_bbox": "bbox missing or not [x, y, w, h] with w, h > 0: rebuilt from segmentation/keypoints, else skipped",
    "duplicate_annotation_id": "annotation id used twice: second one skipped",
    "not_person": "category_id is not the person category: ignored",
    "bad_image_entry": "image entry without integer id, file_name, width, height: skipped",
}


@dataclass
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int
    annotations: list[dict] = field(default_factory=list)  # cleaned person annotations

    def keypoints(self, include_crowd: bool = False) -> np.ndarray:
        """(P, 17, 3) float keypoints of the (non-crowd) people, in annotation order."""
        anns = [a for a in self.annotations if include_crowd or not a.get("iscrowd", 0)]
        if not anns:
            return np.zeros((0, NUM_COCO, 3))
        return np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(len(anns), NUM_COCO, 3)


@dataclass
class CocoKeypoints:
    path: Path
    images: dict[int, CocoImage]
    person_category_id: int
    problems: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # first occurrence of each problem kind
    raw_categories: list[dict] = field(default_factory=list)

    @property
    def num_people(self) -> int:
        return sum(len(i.annotations) for i in self.images.values())

    def problem_report(self) -> list[str]:
        """One line per problem kind: count, what was done, first example."""
        return [f"{n} x {PROBLEMS[k]} (first: {self.examples[k]})" for k, n in sorted(self.problems.items())]

    def image_path(self, image: CocoImage, root: str | Path | None = None) -> Path:
        return Path(root if root is not None else self.path.parent) / image.file_name


def load_coco_keypoints(path: str | Path, strict: bool = False) -> CocoKeypoints:
    """Read and check a COCO person-keypoints json (see the module doc for what is checked)."""
    path = Path(path)
    return parse_coco_keypoints(read_json(path, "COCO keypoints file"), path, strict)


def read_coco_keypoints(source: str | Path, options: dict) -> CocoKeypoints:
    """The registered `coco_keypoints` dataset format (DatasetFormatSpec.load): `source` is the json; `options`:
    `strict` (fail on the first label problem instead of counting it)."""
    return load_coco_keypoints(source, strict=bool(options.get("strict")))


def parse_coco_keypoints(data: Any, path: str | Path = "<annotations>", strict: bool = False) -> CocoKeypoints:
    """Check an already loaded COCO keypoints dict (see `load_coco_keypoints`); `path` names it in messages."""
    path = Path(path)
    if not isinstance(data, dict):
        raise DataError(
            f"{path}: expected a COCO json object with 'images' and 'annotations', got a {type(data).__name__}"
        )
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: '{key}' is missing or not a list; expected a COCO keypoints file")
    cat_id = _person_category(path, data.get("categories"))
    ds = CocoKeypoints(path, {}, cat_id, raw_categories=list(data.get("categories") or []))

    def problem(kind: str, where: str) -> None:
        if strict:
            raise DataError(f"{path}: {where}: {PROBLEMS[kind]}")
        ds.problems[kind] += 1
        ds.examples.setdefault(kind, where)

    for i, im in enumerate(data["images"]):
        ok = isinstance(im, dict) and all(
            isinstance(im.get(k), int) and not isinstance(im.get(k), bool) for k in ("id", "width", "height")
        )
        if not ok or not isinstance(im.get("file_name"), str) or im["width"] <= 0 or im["height"] <= 0:
            problem("bad_image_entry", f"images[{i}]")
            continue
        if im["id"] in ds.images:
            raise DataError(f"{path}: images[{i}]: image id {im['id']} appears twice")
        ds.images[im["id"]] = CocoImage(im["id"], im["file_name"], im["width"], im["height"])

    seen: set = set()
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id {ann.get('id')})" if isinstance(ann, dict) else f"annotations[{i}]"
        if not isinstance(ann, dict):
            problem("bad_keypoints", where)
            continue
        if ann.get("category_id", cat_id) != cat_id:
            problem("not_person", where)
            continue
        image = ds.images.get(ann["image_id"]) if "image_id" in ann else None
        if image is None:
            problem("unknown_image", where)
            continue
        if "id" in ann:
            if ann["id"] in seen:
                problem("duplicate_annotation_id", where)
                continue
            seen.add(ann["id"])
        clean = _clean_annotation(ann, image, where, problem)
        if clean is not None:
            image.annotations.append(clean)
    return ds


def _person_category(path: Path, cats: Any) -> int:
    if cats is None:
        return 1  # COCO's person id; results files for such sets use it too
    if not isinstance(cats, list):
        raise DataError(f"{path}: 'categories' must be a list")
    for c in cats:
        if isinstance(c, dict) and c.get("name") == "person":
            names = c.get("keypoints")
            if names is not None and list(names) != list(COCO_KEYPOINTS):
                raise DataError(
                    f"{path}: the person category's keypoints are {list(names)[:4]}... ({len(names)}); "
                    f"expected COCO's 17 in order: {', '.join(COCO_KEYPOINTS)}"
                )
            return int(c.get("id", 1))
    raise DataError(
        f"{path}: no category named 'person' in categories {[c.get('name') for c in cats if isinstance(c, dict)]}"
    )


def _clean_annotation(ann: dict, image: CocoImage, where: str, problem) -> dict | None:
    iscrowd = int(bool(ann.get("iscrowd", 0)))
    kps = ann.get("keypoints")
    if kps is None and iscrowd:
        kps = [0] * (3 * NUM_COCO)  # crowd regions often carry no keypoints
    if (
        not isinstance(kps, list)
        or len(kps) != 3 * NUM_COCO
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in kps)
    ):
        problem("bad_keypoints", where)
        return None
    k = np.array(kps, dtype=np.float64).reshape(NUM_COCO, 3)
    if not np.isin(k[:, 2], (0, 1, 2)).all():
        problem("bad_visibility", where)
        return None
    labeled = k[:, 2] > 0
    # COCO coordinates run from 0 to width/height inclusive (pixel edges)
    outside = labeled & ((k[:, 0] < 0) | (k[:, 1] < 0) | (k[:, 0] > image.width) | (k[:, 1] > image.height))
    if outside.any():
        problem("keypoint_outside_image", where)
        k[outside] = 0
        labeled &= ~outside
    n = int(labeled.sum())
    if ann.get("num_keypoints") is not None and ann.get("num_keypoints") != n and not outside.any():
        problem("num_keypoints_mismatch", where)
    bbox = ann.get("bbox")
    good_bbox = (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) for v in bbox)
        and bbox[2] > 0
        and bbox[3] > 0
    )
    if not good_bbox:
        problem("bad_bbox", where)
        bbox = _bbox_from(ann.get("segmentation"), k[labeled], image)
        if bbox is None:
            return None
    assert bbox is not None  # good_bbox: a list of 4 numbers
    area = ann.get("area")
    if not isinstance(area, (int, float)) or area <= 0:
        area = float(bbox[2] * bbox[3]) if bbox else 0.0
    return {
        "id": ann.get("id"),
        "image_id": image.id,
        "category_id": ann.get("category_id", 1),
        "iscrowd": iscrowd,
        "keypoints": k.reshape(-1).tolist(),
        "num_keypoints": n,
        "bbox": [float(v) for v in bbox],
        "area": float(area),
        "segmentation": ann.get("segmentation"),
    }


def _bbox_from(segmentation: Any, labeled: np.ndarray, image: CocoImage) -> list[float] | None:
    if segmentation:
        try:
            from pycocotools import mask as mask_utils

            return [float(v) for v in mask_utils.toBbox(_rle(segmentation, image.height, image.width))]
        except Exception:  # noqa: BLE001 - fall back to keypoints for a malformed segmentation
            pass
    if len(labeled):
        x0, y0 = labeled[:, :2].min(0)
        x1, y1 = labeled[:, :2].max(0)
        return [float(x0), float(y0), float(max(x1 - x0, 1)), float(max(y1 - y0, 1))]
    return None


def _rle(segmentation: Any, h: int, w: int) -> dict:
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))
    if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, h, w)
    if isinstance(segmentation, dict):
        seg = dict(segmentation)
        if isinstance(seg["counts"], str):
            seg["counts"] = seg["counts"].encode()
        return seg
    raise ValueError(f"unsupported segmentation {type(segmentation).__name__}")


def annotation_mask(ann: dict, h: int, w: int) -> np.ndarray:
    """Binary (h, w) uint8 region of an annotation: its segmentation, or its bbox when it has none."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if seg:
        try:
            return mask_utils.decode(_rle(seg, h, w)).astype(np.uint8)
        except Exception as err:  # noqa: BLE001
            raise DataError(f"annotation {ann.get('id')}: unreadable segmentation: {err}") from None
    out = np.zeros((h, w), np.uint8)
    if ann.get("bbox"):
        x, y, bw, bh = ann["bbox"]
        x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
        out[y0 : int(np.ceil(y + bh)), x0 : int(np.ceil(x + bw))] = 1
    return out


def loss_mask(image: CocoImage, min_keypoints: int = 1) -> np.ndarray:
    """TLT --generate_masks: (h, w) uint8, 0 over crowd regions (minus labeled people) and over people with
    fewer than `min_keypoints` labeled keypoints; 1 elsewhere."""
    h, w = image.height, image.width
    crowd = np.zeros((h, w), np.uint8)
    unlabeled = np.zeros((h, w), np.uint8)
    labeled = np.zeros((h, w), np.uint8)
    for ann in image.annotations:
        region = annotation_mask(ann, h, w)
        if ann["iscrowd"]:
            crowd |= region
        elif ann["num_keypoints"] < min_keypoints:
            unlabeled |= region
        else:
            labeled |= region
    masked = (crowd & (1 - labeled)) | unlabeled
    return (1 - masked).astype(np.uint8)


def to_coco_dict(ds: CocoKeypoints) -> dict:
    """The cleaned dataset as a COCO dict (what evaluation scores against)."""
    cats = ds.raw_categories or [{"id": ds.person_category_id, "name": "person", "keypoints": list(COCO_KEYPOINTS)}]
    return {
        "images": [
            {"id": i.id, "file_name": i.file_name, "width": i.width, "height": i.height} for i in ds.images.values()
        ],
        "annotations": [
            {k: v for k, v in a.items() if v is not None} for i in ds.images.values() for a in i.annotations
        ],
        "categories": cats,
    }
