"""Synthetic people for tests, benchmarks and the demo: stick figures with exact COCO keypoints.

Each person is drawn from a randomly posed 2D skeleton (arm and leg angles, lean, scale, a little head
turn): thick limb lines, a filled torso and a head disc in the person's colour, on a random background
(gradient, shapes, noise). Several people per image are placed without overlapping boxes. The COCO json
carries the exact keypoints (all visible, v = 2), the drawn figure as an RLE segmentation, its area and box.
Optionally some figures are left unannotated (num_keypoints 0) and crowd regions (iscrowd 1) hold groups of
small figures, to exercise the loss masks. Everything is deterministic by `seed`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tlkit.io import atomic_write_text
from tlkit_pose.skeleton import COCO_KEYPOINTS, COCO_SKELETON

_K = {n: i for i, n in enumerate(COCO_KEYPOINTS)}
# COCO limbs drawn as lines (the face is drawn as a disc instead).
_DRAW_LIMBS = [
    ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"), ("right_shoulder", "right_elbow"),
    ("right_elbow", "right_wrist"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
]  # fmt: skip


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    """Rotate a direction by `deg` (image coordinates, y down)."""
    a = math.radians(deg)
    return np.array([v[0] * math.cos(a) - v[1] * math.sin(a), v[0] * math.sin(a) + v[1] * math.cos(a)])


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """(17, 2) keypoints of a person 1.0 tall, feet near y = 1, centred at x = 0 (facing the camera, so the
    person's right side is on the image's left)."""
    down = np.array([0.0, 1.0])
    p = np.zeros((17, 2))
    neck = np.array([0.0, 0.2])
    sh_w, hip_w = rng.uniform(0.09, 0.13), rng.uniform(0.06, 0.09)
    lean = rng.uniform(-8, 8)
    torso = _rot(down, lean) * rng.uniform(0.28, 0.33)
    p[_K["right_shoulder"]], p[_K["left_shoulder"]] = neck + [-sh_w, 0.01], neck + [sh_w, 0.01]
    pelvis = neck + torso
    p[_K["right_hip"]], p[_K["left_hip"]] = pelvis + [-hip_w, 0], pelvis + [hip_w, 0]
    for side, sgn in (("right", -1), ("left", 1)):
        upper = _rot(down, sgn * rng.uniform(-20, 150)) * rng.uniform(0.15, 0.18)
        fore = _rot(upper / np.linalg.norm(upper), sgn * rng.uniform(-30, 120)) * rng.uniform(0.13, 0.16)
        p[_K[f"{side}_elbow"]] = p[_K[f"{side}_shoulder"]] + upper
        p[_K[f"{side}_wrist"]] = p[_K[f"{side}_elbow"]] + fore
        thigh = _rot(down, sgn * rng.uniform(-10, 35)) * rng.uniform(0.22, 0.25)
        shin = _rot(thigh / np.linalg.norm(thigh), -sgn * rng.uniform(0, 40)) * rng.uniform(0.22, 0.25)
        p[_K[f"{side}_knee"]] = p[_K[f"{side}_hip"]] + thigh
        p[_K[f"{side}_ankle"]] = p[_K[f"{side}_knee"]] + shin
    turn = rng.uniform(-0.02, 0.02)  # head turned a little
    head = neck + _rot(-down, lean) * 0.1
    p[_K["nose"]] = head + [turn, 0.01]
    p[_K["right_eye"]], p[_K["left_eye"]] = head + [-0.025 + turn, -0.015], head + [0.025 + turn, -0.015]
    p[_K["right_ear"]], p[_K["left_ear"]] = head + [-0.05 + turn / 2, -0.005], head + [0.05 + turn / 2, -0.005]
    return p


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    import cv2

    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w if rng.random() < 0.5 else h)[:, None]
    ramp = (c0 * (1 - t) + c1 * t).astype(np.uint8)
    img = np.broadcast_to(ramp[None], (h, w, 3)) if len(t) == w else np.broadcast_to(ramp[:, None], (h, w, 3))
    img = np.ascontiguousarray(img)
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(5, w // 3)), y + int(rng.integers(5, h // 3))), color, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(3, max(4, min(h, w) // 6))), color, -1)
    noise = rng.normal(0, rng.uniform(2, 12), (h, w, 3))
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _draw_person(img: np.ndarray, kp: np.ndarray, height: float, color: tuple[int, ...]) -> np.ndarray:
    """Draw a figure into `img`; returns its (h, w) uint8 mask."""
    import cv2

    mask = np.zeros(img.shape[:2], np.uint8)
    thick = max(2, int(round(height * 0.045)))
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px

    def pt(name: str) -> tuple[int, int]:
        x, y = kp[_K[name]]
        return int(round(x * 16)), int(round(y * 16))

    torso = np.array([pt("right_shoulder"), pt("left_shoulder"), pt("left_hip"), pt("right_hip")], np.int32)
    neck = ((np.array(pt("left_shoulder")) + pt("right_shoulder")) // 2).tolist()
    for canvas, c in ((img, color), (mask, (1,))):
        cv2.fillConvexPoly(canvas, torso, c, cv2.LINE_AA if canvas is img else 8, shift)
        for a, b in _DRAW_LIMBS:
            cv2.line(canvas, pt(a), pt(b), c, thick, cv2.LINE_AA if canvas is img else 8, shift)
        cv2.line(canvas, tuple(neck), pt("nose"), c, thick, 8, shift)
        cv2.circle(canvas, pt("nose"), int(round(height * 0.065 * 16)), c, -1, 8, shift)
    dark = tuple(int(v * 0.3) for v in color)
    for name in ("left_eye", "right_eye"):
        cv2.circle(img, pt(name), int(max(1.0, height * 0.01) * 16), dark, -1, cv2.LINE_AA, shift)
    return mask


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def make_image(
    rng: np.random.Generator,
    height: int = 256,
    width: int = 256,
    people: tuple[int, int] = (1, 4),
    person_height: tuple[float, float] = (0.45, 0.9),
    unlabeled_prob: float = 0.0,
    crowd_prob: float = 0.0,
) -> tuple[np.ndarray, list[dict]]:
    """One image (H, W, 3) uint8 and its annotations (COCO dicts without ids).

    `people`: inclusive range of people; `person_height`: figure height as a fraction of the image height.
    """
    import cv2

    img = _background(rng, height, width)
    anns: list[dict] = []
    boxes: list[tuple[float, float, float, float]] = []
    n = int(rng.integers(people[0], people[1] + 1))
    for _ in range(n):
        for _try in range(30):  # place without overlapping an earlier box
            ph = rng.uniform(*person_height) * height
            kp = random_pose(rng) * ph
            x0, y0 = kp.min(0) - ph * 0.08
            x1, y1 = kp.max(0) + ph * 0.08
            if x1 - x0 >= width or y1 - y0 >= height:
                continue
            ox = rng.uniform(-x0, width - x1)
            oy = rng.uniform(-y0, height - y1)
            box = (x0 + ox, y0 + oy, x1 + ox, y1 + oy)
            if all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in boxes):
                break
        else:
            continue
        boxes.append(box)
        kp = kp + [ox, oy]
        color = tuple(int(v) for v in rng.integers(20, 236, 3))
        mask = _draw_person(img, kp, ph, color)
        labeled = rng.random() >= unlabeled_prob
        kps = np.zeros((17, 3))
        if labeled:
            kps[:, :2], kps[:, 2] = kp, 2
        anns.append(_annotation(kps, mask, iscrowd=0))
    if rng.random() < crowd_prob:
        cw, ch = int(width * rng.uniform(0.2, 0.35)), int(height * rng.uniform(0.12, 0.2))
        cx, cy = int(rng.integers(0, width - cw)), int(rng.integers(0, height - ch))
        region = np.zeros((height, width), np.uint8)
        region[cy : cy + ch, cx : cx + cw] = 1
        for j in range(int(rng.integers(3, 7))):  # a row of small overlapping figures
            kp = random_pose(rng) * ch * 0.9 + [cx + (j + 0.5) * cw / 6, cy + ch * 0.05]
            _draw_person(img, kp, ch * 0.9, tuple(int(v) for v in rng.integers(20, 236, 3)))
        anns.append(_annotation(np.zeros((17, 3)), region, iscrowd=1))
    cv2.GaussianBlur(img, (3, 3), 0, dst=img)  # soften the drawing a little
    return img, anns


def _annotation(kps: np.ndarray, mask: np.ndarray, iscrowd: int) -> dict:
    ys, xs = np.nonzero(mask)
    bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {
        "category_id": 1,
        "iscrowd": iscrowd,
        "keypoints": [round(float(v), 3) if i % 3 < 2 else int(v) for i, v in enumerate(kps.reshape(-1))],
        "num_keypoints": int((kps[:, 2] > 0).sum()),
        "bbox": bbox,
        "area": float(mask.sum()),
        "segmentation": _rle(mask),
    }


def person_category() -> dict:
    return {
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(COCO_KEYPOINTS),
        "skeleton": [list(s) for s in COCO_SKELETON],
    }


def synthetic_coco(
    n_images: int = 8, seed: int = 0, size: tuple[int, int] = (256, 256), **kw
) -> tuple[dict, list[np.ndarray]]:
    """In memory: a COCO keypoints dict and the images (BGR uint8), image i named `{i:06d}.png`."""
    rng = np.random.default_rng(seed)
    coco: dict = {
        "info": {"description": f"tlkit synthetic people, seed {seed}"},
        "images": [],
        "annotations": [],
        "categories": [person_category()],
    }
    images = []
    for i in range(n_images):
        img, anns = make_image(rng, size[0], size[1], **kw)
        images.append(img)
        coco["images"].append({"id": i + 1, "file_name": f"{i:06d}.png", "height": size[0], "width": size[1]})
        for a in anns:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1, **a})
    return coco, images


def generate_dataset(
    out_dir: str | Path,
    n_images: int = 8,
    seed: int = 0,
    size: tuple[int, int] = (256, 256),
    name: str = "annotations.json",
    **kw,
) -> Path:
    """Write `out_dir/images/*.png` and `out_dir/<name>` (file_name paths relative to the json's folder)."""
    import cv2

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    coco, images = synthetic_coco(n_images, seed, size, **kw)
    for im, img in zip(coco["images"], images):
        im["file_name"] = f"images/{im['file_name']}"
        ok, buf = cv2.imencode(".png", img)
        (out / im["file_name"]).write_bytes(buf.tobytes())
    path = out / name
    atomic_write_text(path, json.dumps(coco))
    return path
