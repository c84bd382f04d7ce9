"""DetectNet_v2 data: converted records -> resized frames -> augmentation -> rasterized targets -> batches.

Frames are read once (RecordReader) and kept in memory already resized to the network input (TLT
enable_auto_resize: no aspect kept), with their original size so predictions map back to it.
Augmentation of a frame depends only on (seed, epoch, frame index), so a run is reproducible and a
resumed one sees the same data; batches can be built by a thread pool (OpenCV releases the GIL).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError, SpecError
from tlkit_detection.kitti import FrameArrays
from tlkit_detection.rasterizer import rasterize

IGNORED_CLASSES = ("dontcare",)


@dataclass
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB, at the network input size
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2 in network-input pixels
    classes: np.ndarray  # (N,) int64 into Dataset.classes
    frame_id: str
    orig_size: tuple[int, int]  # (width, height) of the source image
    orig_boxes: np.ndarray  # (N, 4) float64 in source pixels
    truncated: np.ndarray
    occluded: np.ndarray

    def ground_truth(self, classes: Sequence[str]) -> FrameArrays:
        """This frame's objects in source pixels (for metrics)."""
        names = np.array([classes[c] for c in self.classes], dtype=object)
        return FrameArrays(
            names,
            self.orig_boxes.astype(np.float64),
            self.truncated.astype(np.float64),
            self.occluded.astype(np.int64),
            np.ones(len(names)),
        )


@dataclass
class Dataset:
    frames: list[Frame]
    classes: list[str]
    input_size: tuple[int, int]  # (width, height)
    # per-frame training sampling weight (its data source's source_weight); None = every frame once per epoch
    sample_weights: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frames)


def resize_frame(image: np.ndarray, boxes: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to `size` (width, height); boxes scale with it."""
    import cv2

    h0, w0 = image.shape[:2]
    w, h = size
    if (w0, h0) != (w, h):
        image = cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_LINEAR)
    scale = np.array([w / w0, h / h0, w / w0, h / h0], np.float32)
    return image, (np.asarray(boxes, np.float32).reshape(-1, 4) * scale).astype(np.float32)


def _source_reader(records_path: str, folds: Sequence[int] | None, mapping: dict[str, str], what: str):
    from tlkit_detection.records import RecordReader

    if not records_path:
        raise SpecError(f"{what}.records_path is empty: set it to the manifest written by dataset_convert")
    return RecordReader(records_path, folds=folds, target_class_mapping=mapping or None)


def open_readers(cfg: Any, split: str) -> list:
    """RecordReaders of the training or validation split of dataset_config.

    Training: every fold of every data source except validation_fold (all folds when a separate
    validation_data_source is given). Validation: validation_data_source, else validation_fold of each source.
    """
    dc = cfg.dataset_config
    mapping = dict(dc.target_class_mapping)
    if not dc.data_sources:
        raise SpecError("dataset_config.data_sources is empty: list at least one {records_path: <manifest.json>}")
    readers = []
    if split == "validation" and dc.validation_data_source is not None:
        return [
            _source_reader(
                dc.validation_data_source.records_path, None, mapping, "dataset_config.validation_data_source"
            )
        ]
    for i, src in enumerate(dc.data_sources):
        what = f"dataset_config.data_sources[{i}]"
        probe = _source_reader(src.records_path, None, mapping, what)
        n_folds = int(probe.manifest["num_partitions"])
        vf = dc.validation_fold if dc.validation_data_source is None else None
        if vf is not None and vf >= n_folds:
            raise SpecError(f"dataset_config.validation_fold {vf}: {src.records_path} has folds 0..{n_folds - 1}")
        if split == "validation":
            if vf is None:
                continue
            folds = [vf]
        else:
            folds = [f for f in range(n_folds) if f != vf]
            if not folds:
                raise SpecError(
                    f"{src.records_path} has only fold {vf}, which is the validation fold: nothing left to train on"
                )
        readers.append(_source_reader(src.records_path, folds, mapping, what))
    return readers


def class_list(readers: Sequence[Any]) -> list[str]:
    """The training classes: the readers' (target) classes without DontCare; every source must agree."""
    first = None
    for r in readers:
        names = [c for c in r.classes if c.lower() not in IGNORED_CLASSES]
        if first is None:
            first = names
        elif names != first:
            raise DataError(
                f"data sources disagree on classes: {first} vs {names}; set dataset_config.target_class_mapping"
            )
    if not first:
        raise DataError("the dataset has no object classes (after target_class_mapping)")
    return first


def dropped_by_mapping(cfg: Any) -> dict[str, int]:
    """Source classes that dataset_config.target_class_mapping maps to nothing, with their object counts (from
    the manifests): TLT drops their objects, which the user should hear about."""
    from tlkit_detection.records import load_manifest

    dc = cfg.dataset_config
    mapped = {k.lower() for k in dc.target_class_mapping}
    if not mapped:
        return {}
    sources = [*dc.data_sources, *([dc.validation_data_source] if dc.validation_data_source is not None else [])]
    out: dict[str, int] = {}
    for src in sources:
        manifest, _ = load_manifest(src.records_path)
        for c, n in (manifest.get("object_counts") or {}).items():
            if c.lower() not in mapped and c.lower() not in IGNORED_CLASSES:
                out[c] = out.get(c, 0) + int(n)
    return out


def load_frames(
    readers: Sequence[Any],
    classes: Sequence[str],
    input_size: tuple[int, int],
    source_weights: Sequence[float] | None = None,
) -> Dataset:
    """Read every frame, resized to `input_size` (width, height), classes re-indexed into `classes`.

    `source_weights` (one per reader): each frame's sampling weight, kept only when the weights differ."""
    frames: list[Frame] = []
    weights: list[float] = []
    for k, r in enumerate(readers):
        n_before = len(frames)
        remap = np.array([classes.index(c) if c in classes else -1 for c in r.classes] + [-1], np.int64)
        for s in r:
            cls = remap[s.classes] if len(s.classes) else np.zeros(0, np.int64)
            keep = cls >= 0
            h0, w0 = s.image.shape[:2]
            img, boxes = resize_frame(s.image, s.boxes[keep], input_size)
            n = int(keep.sum())
            trunc = s.truncated[keep] if s.truncated is not None else np.zeros(n, np.float32)
            occl = s.occluded[keep] if s.occluded is not None else np.zeros(n, np.int64)
            frames.append(
                Frame(img, boxes, cls[keep], s.frame_id, (w0, h0), s.boxes[keep].astype(np.float64), trunc, occl)
            )
        if source_weights is not None:
            weights += [float(source_weights[k])] * (len(frames) - n_before)
    if weights and sum(weights) <= 0:
        raise SpecError("dataset_config.data_sources: every source with frames has source_weight 0")
    sample_weights = np.asarray(weights, np.float64) if weights and len(set(weights)) > 1 else None
    return Dataset(frames, list(classes), input_size, sample_weights)


# -- augmentation ------------------------------------------------------------------------------------------


def frame_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed % 2**32, epoch, index])


def augment(
    image: np.ndarray,
    boxes: np.ndarray,
    classes: np.ndarray,
    aug: Any,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spatial (flip, zoom, translate) and colour (hue, saturation, contrast) augmentation of one frame
    at the network input size. Boxes are transformed, clipped, and dropped when smaller than
    preprocessing.min_bbox_width/height."""
    import cv2

    h, w = image.shape[:2]
    sp, col, pre = aug.spatial_augmentation, aug.color_augmentation, aug.preprocessing
    boxes = boxes.astype(np.float32).copy()
    if rng.random() < sp.hflip_probability:
        image = image[:, ::-1]
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    zoom = rng.uniform(sp.zoom_min, sp.zoom_max) if sp.zoom_max > sp.zoom_min else sp.zoom_min
    tx = rng.uniform(-sp.translate_max_x, sp.translate_max_x) if sp.translate_max_x > 0 else 0.0
    ty = rng.uniform(-sp.translate_max_y, sp.translate_max_y) if sp.translate_max_y > 0 else 0.0
    if zoom != 1.0 or tx or ty:
        # zoom about the image centre, then shift: x' = z (x - W/2) + W/2 + tx
        m = np.array([[zoom, 0, (1 - zoom) * w / 2 + tx], [0, zoom, (1 - zoom) * h / 2 + ty]], np.float32)
        image = cv2.warpAffine(
            np.ascontiguousarray(image),
            m,
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
        boxes = boxes * zoom + np.array([m[0, 2], m[1, 2], m[0, 2], m[1, 2]], np.float32)
    if len(boxes):
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= max(pre.min_bbox_width, 1e-3)) & (
            (boxes[:, 3] - boxes[:, 1]) >= max(pre.min_bbox_height, 1e-3)
        )
        boxes, classes = boxes[keep], classes[keep]
    if col.hue_rotation_max > 0 or col.saturation_shift_max > 0:
        hsv = cv2.cvtColor(np.ascontiguousarray(image).astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)
        if col.hue_rotation_max > 0:
            hsv[..., 0] = (hsv[..., 0] + rng.uniform(-col.hue_rotation_max, col.hue_rotation_max)) % 360.0
        if col.saturation_shift_max > 0:
            hsv[..., 1] = np.clip(
                hsv[..., 1] * (1 + rng.uniform(-col.saturation_shift_max, col.saturation_shift_max)), 0, 1
            )
        image = np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0, 0, 255)
    if col.contrast_scale_max > 0:
        c = 1 + rng.uniform(-col.contrast_scale_max, col.contrast_scale_max)
        image = np.clip((np.asarray(image, np.float32) - col.contrast_center) * c + col.contrast_center, 0, 255)
    return np.ascontiguousarray(image), boxes, classes


# -- batches -------------------------------------------------------------------------------------------------


class TargetMaker:
    """Frame -> (normalized CHW input, cov, bbox, cov_norm) for the DetectNet_v2 cost."""

    def __init__(self, cfg: Any, classes: Sequence[str], preprocessing: dict[str, Any], input_size: tuple[int, int]):
        from tlkit.export.preprocess import resolve_preprocessing

        self.pre = resolve_preprocessing(
            {"preprocessing": preprocessing, "input_shape": [3, input_size[1], input_size[0]]}
        )
        self.classes = list(classes)
        self.input_size = input_size
        from tlkit_detection.model import output_grid

        h, w = output_grid((input_size[1], input_size[0]))
        self.output_size = (w, h)
        self.raster = cfg.bbox_rasterizer_config.params(self.classes)
        self.deadzone = cfg.bbox_rasterizer_config.deadzone_radius

    def normalize(self, image: np.ndarray) -> np.ndarray:
        from tlkit.export.preprocess import normalize_with

        return normalize_with(np.asarray(image, np.float32), self.pre).transpose(2, 0, 1)

    def targets(self, boxes: np.ndarray, classes: np.ndarray):
        return rasterize(
            boxes, classes, len(self.classes), self.input_size, self.output_size, self.raster, self.deadzone
        )


def epoch_order(ds: Dataset, epoch: int, seed: int, frames: Sequence[int] | None = None) -> np.ndarray:
    """The frames of a training epoch (of `frames`, default all), shuffled with (seed, epoch): a permutation,
    or, when the data sources have different source_weight, as many frames drawn with replacement with
    probabilities proportional to their source's weight (TLT's user-defined source sampling)."""
    rng = np.random.default_rng([seed % 2**32, epoch, 7])
    idx = np.arange(len(ds)) if frames is None else np.asarray(frames, np.int64)
    if ds.sample_weights is not None:
        w = ds.sample_weights[idx]
        if w.sum() <= 0:
            raise SpecError("dataset_config.data_sources: every training frame used has source_weight 0")
        return idx[rng.choice(len(idx), size=len(idx), p=w / w.sum())]
    return idx[rng.permutation(len(idx))]


def batches(
    ds: Dataset,
    maker: TargetMaker,
    batch_size: int,
    *,
    aug: Any = None,
    epoch: int = 0,
    seed: int = 0,
    shuffle: bool = False,
    drop_last: bool = False,
    workers: int = 1,
    with_targets: bool = True,
    shard: Any = None,
) -> Iterator[tuple[np.ndarray, Any]]:
    """(x (B,3,H,W) float32, (cov, bbox, cov_norm)) batches; `aug=None` turns augmentation off.

    Without targets, yields (x, indices of the frames). `shard` (a tlkit.distributed.World): only this
    node's slice of each batch is made."""
    order = epoch_order(ds, epoch, seed) if shuffle else np.arange(len(ds))

    def one(i: int):
        f = ds.frames[i]
        img, boxes, cls = f.image, f.boxes, f.classes
        if aug is not None:
            img, boxes, cls = augment(img, boxes, cls, aug, frame_rng(seed, epoch, int(i)))
        x = maker.normalize(img)
        if not with_targets:
            return x, None
        t = maker.targets(boxes, cls)
        return x, (t.cov, t.bbox, t.cov_norm)

    n = len(order)
    stops = range(0, n - batch_size + 1 if drop_last else n, batch_size)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None
    try:
        for start in stops:
            idx = order[start : start + batch_size]
            if shard is not None:
                idx = shard.shard(idx)
            items = list(pool.map(one, idx)) if pool is not None else [one(i) for i in idx]
            x = np.stack([it[0] for it in items])
            if not with_targets:
                yield x, idx
                continue
            yield x, tuple(np.stack([it[1][k] for it in items]) for k in range(3))
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def dataset_for(cfg: Any, split: str, classes: Sequence[str] | None = None) -> Dataset:
    """The training or validation Dataset of a spec (frames resized to the network input)."""
    from tlkit_detection.model import input_shape_of

    readers = open_readers(cfg, split)
    if not readers:
        raise SpecError("no validation data: set dataset_config.validation_fold or validation_data_source")
    names = list(classes) if classes is not None else class_list(readers)
    _, h, w = input_shape_of(cfg)
    # training readers are one per data source, in order; validation is never re-weighted
    weights = [src.source_weight for src in cfg.dataset_config.data_sources] if split == "training" else None
    ds = load_frames(readers, names, (w, h), weights)
    if not ds.frames:
        what = [str(Path(r.root)) for r in readers]
        raise DataError(f"the {split} split of {what} has no frames")
    if not any(len(f.classes) for f in ds.frames):
        raise DataError(
            f"the {split} split has no objects of classes {names} (check dataset_config.target_class_mapping)"
        )
    return ds
