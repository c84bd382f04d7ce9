"""The demo's own dataset: texture patches cut from real photographs that ship inside scikit-image (no
download, no network).

Six classes, one photo each: brick, grass, gravel, moon (lunar surface), galaxy (Hubble deep field) and
tissue (an immunohistochemistry stain); four are gray, two color. Each image is a random crop (random size,
position, flip, small rotation, brightness/contrast) resized to `size` px. Each photo is cut into a 4x4
grid whose cells are dealt to the splits (10 train, 3 val, 3 test; a different deal per photo), and every
crop lies inside one cell of its split, so the held-out sets show parts of each surface the model never
saw: the task is to recognise the texture, not to memorise pixels.

Also `make_shapes_dataset`: tiny synthetic shapes for fast tests.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tlkit.io import atomic_write_bytes

PHOTOS = {
    "brick": "brick",
    "grass": "grass",
    "gravel": "gravel",
    "moon": "moon",
    "galaxy": "hubble_deep_field",
    "tissue": "immunohistochemistry",
}
GRID = 4
CELLS_PER_SPLIT = {"train": 10, "val": 3, "test": 3}  # of the GRID x GRID cells


def _photo(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    atomic_write_bytes(path, buf.tobytes())


def _patch(img: np.ndarray, cell: tuple[int, int, int, int], size: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    x0, y0, x1, y1 = cell
    side = max(16, int(rng.uniform(0.55, 1.0) * min(x1 - x0, y1 - y0)))
    left = int(rng.integers(x0, max(x0 + 1, x1 - side + 1)))
    top = int(rng.integers(y0, max(y0 + 1, y1 - side + 1)))
    crop = img[top : top + side, left : left + side]
    angle = rng.uniform(-15, 15)
    m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0 + abs(angle) / 60)  # zoom hides the corners
    crop = cv2.warpAffine(crop, m, (side, side), borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = cv2.resize(np.ascontiguousarray(crop), (size, size), interpolation=cv2.INTER_AREA)
    x = crop.astype(np.float32) * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)
    return np.clip(x, 0, 255).astype(np.uint8)


def make_photo_dataset(
    out: str | os.PathLike,
    counts: dict[str, int] | None = None,
    size: int = 96,
    seed: int = 0,
    classes: list[str] | None = None,
) -> dict[str, Path]:
    """Write `<out>/{train,val,test}/<class>/*.png`; returns the split directories."""
    counts = counts or {"train": 60, "val": 20, "test": 20}
    out = Path(out)
    names = classes or list(PHOTOS)
    for ci, cls in enumerate(names):
        img = _photo(PHOTOS[cls])
        h, w = img.shape[:2]
        n = GRID
        grid = [(w * c // n, h * r // n, w * (c + 1) // n, h * (r + 1) // n) for r in range(n) for c in range(n)]
        deal = np.random.default_rng([seed, ci]).permutation(n * n)
        start = 0
        for si, split in enumerate(CELLS_PER_SPLIT):
            cells = [grid[i] for i in deal[start : start + CELLS_PER_SPLIT[split]]]
            start += CELLS_PER_SPLIT[split]
            rng = np.random.default_rng([seed, ci, si])
            for k in range(counts.get(split, 0)):
                cell = cells[int(rng.integers(len(cells)))]
                _write_png(out / split / cls / f"{cls}_{k:04d}.png", _patch(img, cell, size, rng))
    return {s: out / s for s in counts}


def make_shapes_dataset(
    out: str | os.PathLike,
    n_per_class: int = 10,
    size: int = 32,
    seed: int = 0,
    classes: tuple[str, ...] = ("circle", "square", "triangle"),
) -> Path:
    """Tiny synthetic set `<out>/<shape>/*.png`: one colored shape on a noisy background per image."""
    import cv2

    out = Path(out)
    rng = np.random.default_rng(seed)
    for cls in classes:
        for k in range(n_per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            color = tuple(int(c) for c in rng.integers(120, 256, 3))
            c = size // 2 + int(rng.integers(-size // 8, size // 8 + 1))
            r = int(size * rng.uniform(0.22, 0.35))
            if cls == "circle":
                cv2.circle(img, (c, c), r, color, -1)
            elif cls == "square":
                cv2.rectangle(img, (c - r, c - r), (c + r, c + r), color, -1)
            elif cls == "triangle":
                pts = np.array([[c, c - r], [c - r, c + r], [c + r, c + r]], np.int32)
                cv2.fillPoly(img, [pts], color)
            else:  # a cross
                cv2.line(img, (c - r, c - r), (c + r, c + r), color, max(2, size // 10))
                cv2.line(img, (c - r, c + r), (c + r, c - r), color, max(2, size // 10))
            _write_png(out / cls / f"{cls}_{k:03d}.png", img)
    return out
