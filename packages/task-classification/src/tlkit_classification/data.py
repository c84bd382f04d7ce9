"""Folder-per-class datasets, TLT preprocessing, augmentation, mixup and label smoothing.

Images are decoded with OpenCV (RGB, HWC uint8) in a thread pool; every random choice is drawn from a
generator seeded with (seed, epoch, index), so an epoch's batches are the same whatever the thread timing.
Unreadable images are found once, when the dataset is opened: they are skipped and reported (the first
few paths), or, with `strict=True` (`--strict`), the first one is a DataError.

The module is numpy/OpenCV only; `batches(..., as_nd=True)` converts to MXNet NDArrays at the end.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError
from tlkit.images import IMAGE_EXTENSIONS
from tlkit.io import atomic_write_text, read_json

CROP_FRACTION = 0.875  # center crop: resize to size / 0.875, keep the middle (TLT/Keras convention)


# -- preprocessing (one definition shared with export and the engine runners: tlkit.export.preprocess) --


def preprocessing_for(
    mode: str,
    *,
    image_mean: dict | None = None,
    backbone_default: Any = None,
    channels: int = 3,
    interpolation: str = "bilinear",
) -> dict:
    """The resolved normalisation a model expects, stored as meta["preprocessing"] of its model file.

    `mode="auto"` uses the backbone's own default (`Backbone.default_preprocess`: a mode name or a
    resolved dict), else caffe (TLT's default). `image_mean` ({r, g, b}, 0-255) replaces the mode's mean.
    """
    from tlkit.export.preprocess import preprocessing_params

    if mode == "auto":
        if isinstance(backbone_default, dict) and "channel_order" in backbone_default:
            return {**backbone_default, "resize_interpolation": interpolation}
        mode = backbone_default if isinstance(backbone_default, str) else "caffe"
        if isinstance(backbone_default, dict):  # {"mode": ..., "mean": ..., "std": ...}
            return preprocessing_params(
                backbone_default.get("mode", "caffe"),
                backbone_default.get("mean"),
                backbone_default.get("std"),
                channels,
                interpolation,
            )
    mean = None
    if image_mean:
        mean = [image_mean["r"], image_mean["g"], image_mean["b"]] if channels == 3 else [image_mean["g"]]
    return preprocessing_params(mode, mean=mean, channels=channels, resize_interpolation=interpolation)


def normalize(images: np.ndarray, pre: dict) -> np.ndarray:
    """(N, H, W, C) RGB pixels (0-255) -> (N, C, H, W) float32 as the model expects."""
    from tlkit.export.preprocess import normalize_with

    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    return np.ascontiguousarray(normalize_with(x, pre).transpose(0, 3, 1, 2))


# -- decoding and geometric transforms ----------------------------------------------------------------

_INTERP = {"bilinear": 1, "bicubic": 2}  # cv2.INTER_LINEAR, cv2.INTER_CUBIC


def read_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray | None:
    """Decode an image file to RGB (or gray, HxWx1) uint8; None if it cannot be decoded."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # handles non-ASCII paths, unlike cv2.imread
    except OSError:
        return None
    if data.size == 0:
        return None
    img = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR)
    if img is None:
        return None
    if channels == 1:
        return img[:, :, None]
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_image(path: str | os.PathLike, channels: int = 3) -> np.ndarray:
    """read_image, but a clear DataError for a missing file or a file that is not an image."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: image file not found")
    img = read_image(p, channels)
    if img is None:
        raise DataError(f"{p}: not an image OpenCV can decode (expected JPEG, PNG, BMP, ...)")
    return img


def _resize(img: np.ndarray, w: int, h: int, interp: str) -> np.ndarray:
    import cv2

    out = cv2.resize(img, (w, h), interpolation=_INTERP.get(interp, 1))
    return out[:, :, None] if out.ndim == 2 else out


def eval_transform(img: np.ndarray, size: tuple[int, int], center_crop: bool, interp: str = "bilinear") -> np.ndarray:
    """Deterministic: resize to (H, W), or resize the short side to size/0.875 and center-crop."""
    h, w = size
    if not center_crop:
        return _resize(img, w, h, interp)
    ih, iw = img.shape[:2]
    scale = max(h, w) / CROP_FRACTION / min(ih, iw)
    rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
    img = _resize(img, rw, rh, interp)
    top, left = (rh - h) // 2, (rw - w) // 2
    return img[top : top + h, left : left + w]


def train_transform(
    img: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    *,
    random_crop: bool,
    hflip: bool,
    color: bool,
    interp: str = "bilinear",
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Random-resized crop (Inception style), horizontal flip and color jitter."""
    h, w = size
    ih, iw = img.shape[:2]
    if random_crop:
        for _ in range(10):
            area = ih * iw * rng.uniform(*scale)
            ar = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
            cw, ch = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if 0 < cw <= iw and 0 < ch <= ih:
                top, left = int(rng.integers(0, ih - ch + 1)), int(rng.integers(0, iw - cw + 1))
                img = img[top : top + ch, left : left + cw]
                break
    img = _resize(img, w, h, interp)
    if hflip and rng.random() < 0.5:
        img = img[:, ::-1]
    if color:
        img = color_jitter(img, rng)
    return img


def color_jitter(img: np.ndarray, rng: np.random.Generator, strength: float = 0.3) -> np.ndarray:
    """Random brightness, contrast and (for RGB) saturation, each by a factor in [1-s, 1+s]."""
    x = img.astype(np.float32)
    x *= rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    if x.shape[-1] == 3:
        gray = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = (x - gray[..., None]) * rng.uniform(1 - strength, 1 + strength) + gray[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)


# -- targets -------------------------------------------------------------------------------------------


def one_hot(labels: np.ndarray, n_classes: int, smoothing: float = 0.0) -> np.ndarray:
    """(N,) int -> (N, C) float32, smoothed as (1 - s) * onehot + s / C."""
    out = np.zeros((len(labels), n_classes), np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    if smoothing:
        out = out * (1.0 - smoothing) + smoothing / n_classes
    return out


def mixup(x: np.ndarray, y: np.ndarray, alpha: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Blend each sample with a random partner: lam*x + (1-lam)*x[perm], same for soft targets."""
    lam = float(rng.beta(alpha, alpha))
    perm = rng.permutation(len(x))
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


# -- datasets ------------------------------------------------------------------------------------------


@dataclass
class ImageFolder:
    """`root/<class>/<image>` with the class list fixed (sorted folder names, or a given classmap)."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]  # readable images only
    corrupt: list[Path] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # files that are not images by extension
    channels: int = 3
    _cache: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        return np.array([lab for _, lab in self.samples], np.int64)

    def image(self, i: int) -> np.ndarray:
        if self._cache is not None:
            return self._cache[i]
        img = read_image(self.samples[i][0], self.channels)
        if img is None:  # changed on disk since it was opened
            raise DataError(f"{self.samples[i][0]}: image became unreadable during the run")
        return img

    def problems(self, n: int = 3) -> str:
        """'' or one line naming the skipped images (first `n`)."""
        if not self.corrupt:
            return ""
        first = ", ".join(str(p) for p in self.corrupt[:n])
        more = f" (+{len(self.corrupt) - n} more)" if len(self.corrupt) > n else ""
        return f"{self.root}: skipped {len(self.corrupt)} unreadable image(s): {first}{more}"


def list_classes(root: Path) -> list[str]:
    return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))


def open_image_folder(
    root: str | os.PathLike | None,
    *,
    classes: Sequence[str] | None = None,
    extensions: Sequence[str] = IMAGE_EXTENSIONS,
    strict: bool = False,
    channels: int = 3,
    cache: bool = True,
    cache_limit_mb: int = 1024,
    max_side: int | None = None,
    workers: int = 2,
    what: str = "dataset",
) -> ImageFolder:
    """Scan and decode-check a folder-per-class dataset.

    `classes` fixes the class order (the training classmap); a folder that is not in it is an error, a
    class with no folder here is allowed (an eval split may lack a rare class). `max_side` shrinks cached
    images whose short side is far above what the network needs (memory, speed).
    """
    if root is None:
        raise DataError(f"{what}: no dataset path given in the spec")
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{what} {root}: directory not found")
    found = list_classes(root)
    if not found:
        raise DataError(f"{root}: no class folders; expected {root}/<class_name>/<image files>")
    if classes is None:
        classes = found
    else:
        unknown = [c for c in found if c not in classes]
        if unknown:
            raise DataError(f"{root}: class folder {unknown[0]!r} is not in the model's classes ({', '.join(classes)})")
    exts = {e.lower() for e in extensions}
    files: list[tuple[Path, int]] = []
    ignored: list[Path] = []
    for idx, name in enumerate(classes):
        d = root / name
        if not d.is_dir():
            continue
        n_before = len(files)
        for p in sorted(d.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                (files.append((p, idx)) if p.suffix.lower() in exts else ignored.append(p))
        if len(files) == n_before:
            raise DataError(f"{d}: class folder has no images (looked for {', '.join(sorted(exts))})")

    def decode(item: tuple[Path, int]) -> np.ndarray | None:
        img = read_image(item[0], channels)
        if img is not None and max_side:
            short = min(img.shape[:2])
            if short > max_side:
                s = max_side / short
                img = _resize(img, round(img.shape[1] * s), round(img.shape[0] * s), "bilinear")
        return img

    samples, corrupt = [], []
    cached: list[np.ndarray] = []
    budget, used = cache_limit_mb * 2**20, 0
    keep = cache
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for item, img in zip(files, pool.map(decode, files)):
            if img is None:
                if strict:
                    raise DataError(f"{item[0]}: not a readable image (strict mode; drop --strict to skip such files)")
                corrupt.append(item[0])
                continue
            samples.append(item)
            if keep:
                used += img.nbytes
                if used > budget:
                    keep, cached = False, []  # does not fit: decode on the fly instead
                else:
                    cached.append(img)
    counts = np.bincount([lab for _, lab in samples], minlength=len(classes))
    present = {lab for _, lab in files}
    for idx in present:
        if counts[idx] == 0:
            raise DataError(f"{root / classes[idx]}: none of the class's images could be decoded")
    return ImageFolder(root, list(classes), samples, corrupt, ignored, channels, cached if keep else None)


# -- batches -------------------------------------------------------------------------------------------


@dataclass
class Pipeline:
    """How images become network inputs, for training or for evaluation."""

    input_shape: tuple[int, int, int]  # C, H, W
    preprocessing: dict
    interp: str = "bilinear"
    train: bool = False
    random_crop: bool = True
    crop_min_scale: float = 0.3
    center_crop: bool = True
    hflip: bool = True
    color: bool = False
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        return self.input_shape[1], self.input_shape[2]

    def transform(self, img: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        if self.train:
            assert rng is not None
            return train_transform(
                img,
                self.size,
                rng,
                random_crop=self.random_crop,
                hflip=self.hflip,
                color=self.color,
                interp=self.interp,
                scale=(self.crop_min_scale, 1.0),
            )
        return eval_transform(img, self.size, self.center_crop, self.interp)

    def preprocess(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Transformed HWC uint8 images -> a normalized NCHW float32 batch."""
        return normalize(np.stack(list(images)), self.preprocessing)


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)


def batches(
    ds: ImageFolder,
    pipe: Pipeline,
    batch_size: int,
    *,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
    workers: int = 2,
    as_nd: bool = False,
    shard: Any = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield (data NCHW float32, labels) batches; training pipelines give (N, C) soft targets.

    Deterministic given (seed, epoch): the order and each sample's augmentation come from generators
    seeded with them, not from the thread pool's timing. Batches are prepared `workers` ahead.
    `shard` (a tlkit.distributed.World): only this node's slice of each batch is made.
    """
    n = len(ds)
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    steps = steps_per_epoch(n, batch_size, drop_last)
    chunks = [order[i * batch_size : (i + 1) * batch_size] for i in range(steps)]
    n_classes = len(ds.classes)

    def make(step: int) -> tuple[np.ndarray, np.ndarray]:
        idx = chunks[step] if shard is None else shard.shard(chunks[step])
        imgs = [
            pipe.transform(ds.image(int(i)), np.random.default_rng([seed, epoch, int(i)]) if pipe.train else None)
            for i in idx
        ]
        x = pipe.preprocess(imgs)
        labels = ds.labels[idx]
        if not pipe.train:
            return x, labels
        y = one_hot(labels, n_classes, pipe.label_smoothing)
        if pipe.mixup_alpha > 0:
            x, y = mixup(x, y, pipe.mixup_alpha, np.random.default_rng([seed, epoch, step, 7]))
        return x.astype(np.float32), y.astype(np.float32)

    def convert(b: tuple[np.ndarray, np.ndarray]) -> tuple[Any, Any]:
        if not as_nd:
            return b
        import mxnet as mx

        return mx.nd.array(b[0], dtype="float32"), mx.nd.array(b[1], dtype=b[1].dtype)

    if workers <= 0:
        for s in range(steps):
            yield convert(make(s))
        return
    ahead = workers + 1
    with ThreadPoolExecutor(workers) as pool:
        futures = {s: pool.submit(make, s) for s in range(min(steps, ahead))}
        for s in range(steps):
            if s + ahead < steps:
                futures[s + ahead] = pool.submit(make, s + ahead)
            yield convert(futures.pop(s).result())


# -- classmap ------------------------------------------------------------------------------------------


def classmap_text(classes: Sequence[str]) -> str:
    """TLT's classmap.json: {class_name: index}."""
    return json.dumps({c: i for i, c in enumerate(classes)}, indent=2) + "\n"


def write_classmap(path: str | os.PathLike, classes: Sequence[str]) -> Path:
    path = Path(path)
    atomic_write_text(path, classmap_text(classes))
    return path


def read_classmap(path: str | os.PathLike) -> list[str]:
    """classmap.json ({name: index}) -> class names in index order; DataError if malformed."""
    path = Path(path)
    mapping = read_json(path, "classmap file")
    if not isinstance(mapping, dict) or not all(isinstance(v, int) for v in mapping.values()):
        raise DataError(f'{path}: expected {{"class_name": index, ...}}')
    if sorted(mapping.values()) != list(range(len(mapping))):
        raise DataError(f"{path}: class indices must be 0..{len(mapping) - 1} without gaps")
    return [name for name, _ in sorted(mapping.items(), key=lambda kv: kv[1])]
