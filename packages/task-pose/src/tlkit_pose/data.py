"""Training data: samples (COCO json + images, dataset_convert RecordIO, or in-memory synthetic images) ->
augmentation -> heatmap/PAF targets and loss masks at stride 8 -> batches.

Augmentation (TLT spatial_aug_params), one affine warp per sample, deterministic from (seed, epoch, index):
- person_centric: a random labeled person is centred and scaled so its keypoint height is
  `target_person_scale` of the input height (times a random zoom with probability `zoom_prob`);
  standard: the whole image fitted into the input;
- rotation in [-rotate_deg_max, rotate_deg_max], translation in [-translate_max, translate_max] pixels;
- left-right flip with probability `flip_lr_prob`: the image mirrored and left/right keypoints swapped
  (skeleton.flip_keypoints), so heatmaps and PAFs are rendered for the right parts.
Areas outside the source image are filled with grey (128) and count in the loss (no people there); the loss
mask (crowds, unlabeled people) is warped with the image.
"""

from __future__ import annotations

import functools
import glob
import math
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError, SpecError
from tlkit.images import read_bgr
from tlkit.recordfile import RERUN, open_reader
from tlkit.recordfile import read_record as read_record_bytes
from tlkit_pose.skeleton import coco_to_parts, flip_keypoints
from tlkit_pose.targets import mask_to_target, render_targets

PAD_VALUE = 128


@dataclass
class Sample:
    """One training image: `load()` -> BGR uint8 image; COCO keypoints (P, 17, 3) of its non-crowd people;
    `mask` () -> (H, W) uint8 loss mask (1 = use) or None."""

    image_id: int
    load: Callable[[], np.ndarray]
    keypoints: np.ndarray
    mask: Callable[[], np.ndarray | None]


def _imread(path: Path) -> np.ndarray:
    img = read_bgr(path)
    if img is None:
        raise DataError(f"{path}: image missing, truncated or not decodable")
    return img


def samples_from_coco(
    annotations: str | Path,
    image_root: str | Path | None = None,
    min_keypoints_for_mask: int = 1,
    strict: bool = False,
    warn: Callable[[str], object] | None = None,
) -> list[Sample]:
    """Samples of every image with at least one labeled non-crowd person (as dataset_convert keeps them).
    The annotations' problems (counted, skipped or repaired) are reported through `warn`."""
    from tlkit_pose.coco import load_coco_keypoints, loss_mask

    ds = load_coco_keypoints(annotations, strict=strict)
    for line in ds.problem_report():
        (warn or print)(f"{annotations}: label problem: {line}")
    out = []
    for _, im in sorted(ds.images.items()):
        people = [a for a in im.annotations if not a["iscrowd"] and a["num_keypoints"] > 0]
        if not people:
            continue
        path = ds.image_path(im, image_root)
        if not path.is_file():
            raise DataError(
                f"{annotations}: image {im.id} file {path} not found (set dataloader.train_images to the image folder)"
            )
        kps = np.array([a["keypoints"] for a in people], np.float64).reshape(-1, 17, 3)
        needs_mask = any(a["iscrowd"] or a["num_keypoints"] < min_keypoints_for_mask for a in im.annotations)
        mask = (lambda im=im: loss_mask(im, min_keypoints_for_mask)) if needs_mask else (lambda: None)
        out.append(Sample(im.id, functools.partial(_imread, path), kps, mask))
    if not out:
        raise DataError(f"{annotations}: no image has a labeled (non-crowd) person to train on")
    return out


def samples_from_records(patterns: str | list[str]) -> list[Sample]:
    """Samples from dataset_convert's .rec shards (globs or files); records are read on demand."""
    files = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        hits = sorted(glob.glob(pattern)) if any(ch in pattern for ch in "*?[") else [pattern]
        hits = [f for f in hits if f.endswith(".rec")]
        if not hits:
            raise DataError(
                f"dataloader.train_records {pattern!r}: no .rec files match "
                "(write them with tlkit pose dataset_convert)"
            )
        files += hits
    out = []
    for f in files:
        reader = open_reader(f)  # a missing index or a truncated shard is a DataError naming the file
        for key in reader.keys:
            rec = _parse(reader, key, f, decode_image=False)
            people = [i for i, (c, n) in enumerate(zip(rec["iscrowd"], rec["num_keypoints"])) if not c and n > 0]

            def load(reader=reader, key=key, f=f) -> np.ndarray:
                image = _parse(reader, key, f)["image"]
                if image is None:
                    raise DataError(f"{f}: record {key}: its image cannot be decoded; re-run dataset_convert")
                return image

            def mask(reader=reader, key=key, f=f) -> np.ndarray | None:
                return _parse(reader, key, f, decode_image=False)["mask"]

            out.append(Sample(int(rec["image_id"]), load, rec["keypoints"][people], mask))
    return out


def _parse(reader: Any, key: int, rec_file: str, decode_image: bool = True) -> dict[str, Any]:
    """One record of a dataset_convert shard, decoded; a damaged record is a DataError naming the file."""
    from tlkit_pose.dataset_convert import read_record

    data = read_record_bytes(reader, key, rec_file)
    try:
        return read_record(data, decode_image=decode_image)
    except (ValueError, KeyError, TypeError, struct.error) as err:  # cut or foreign payload
        why = f"{type(err).__name__}: {err}"
        raise DataError(f"{rec_file}: record {key} is not a tlkit pose record ({why}); {RERUN}") from None


def samples_from_memory(coco: dict, images: Sequence[np.ndarray], min_keypoints_for_mask: int = 1) -> list[Sample]:
    """Samples from `synthetic.synthetic_coco(...)` output (a COCO dict and its BGR images, in image order)."""
    from tlkit_pose.coco import loss_mask, parse_coco_keypoints

    ds = parse_coco_keypoints(coco)
    by_id = {im["id"]: img for im, img in zip(coco["images"], images)}
    out = []
    for _, im in sorted(ds.images.items()):
        people = [a for a in im.annotations if not a["iscrowd"] and a["num_keypoints"] > 0]
        if not people:
            continue
        kps = np.array([a["keypoints"] for a in people], np.float64).reshape(-1, 17, 3)

        def load(img: np.ndarray = by_id[im.id]) -> np.ndarray:
            return img

        out.append(Sample(im.id, load, kps, functools.partial(loss_mask, im, min_keypoints_for_mask)))
    return out


# -- augmentation ------------------------------------------------------------------------------------


def _person_box(kps: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and height of a person's labeled keypoints."""
    pts = kps[kps[:, 2] > 0, :2]
    lo, hi = pts.min(0), pts.max(0)
    return (lo + hi) / 2.0, float(max(hi[1] - lo[1], (hi[0] - lo[0]) * 0.5, 1.0))


def augment_params(
    sample: Sample,
    image_hw: tuple[int, int],
    out_hw: tuple[int, int],
    aug: Any,
    rng: np.random.Generator,
    train: bool = True,
) -> tuple[np.ndarray, bool]:
    """The 2x3 affine (source pixel -> network input pixel) and the flip decision for one sample."""
    h, w = image_hw
    oh, ow = out_hw
    if train and aug.spatial_augmentation_mode == "person_centric" and len(sample.keypoints):
        centre, ph = _person_box(sample.keypoints[int(rng.integers(len(sample.keypoints)))])
        # a person with one or two labeled parts has no height to speak of: at least a tenth of the image
        scale = aug.target_person_scale * oh / max(ph, 0.1 * h)
    else:
        centre, scale = np.array([(w - 1) / 2.0, (h - 1) / 2.0]), min(oh / h, ow / w)
    angle, shift, flip = 0.0, np.zeros(2), False
    if train:
        if aug.zoom_prob > 0 and rng.random() < aug.zoom_prob:
            scale *= rng.uniform(aug.zoom_ratio_min, aug.zoom_ratio_max)
        angle = rng.uniform(-aug.rotate_deg_max, aug.rotate_deg_max) if aug.rotate_deg_max > 0 else 0.0
        shift = np.array(
            [
                rng.uniform(-aug.translate_max_x, aug.translate_max_x),
                rng.uniform(-aug.translate_max_y, aug.translate_max_y),
            ]
        )
        flip = bool(rng.random() < aug.flip_lr_prob)
    a = math.radians(angle)
    rot = scale * np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    dst_centre = np.array([(ow - 1) / 2.0, (oh - 1) / 2.0]) + shift
    m = np.zeros((2, 3))
    m[:, :2] = rot
    m[:, 2] = dst_centre - rot @ centre
    return m, flip


def warp_sample(
    image: np.ndarray,
    keypoints: np.ndarray,
    mask: np.ndarray | None,
    m: np.ndarray,
    flip: bool,
    out_hw: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Apply the affine (and flip): image (oh, ow, 3), COCO keypoints (P, 17, 3), mask (oh, ow) float 0/1."""
    import cv2

    oh, ow = out_hw
    img = cv2.warpAffine(
        image, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3
    )
    if mask is not None:
        msk = cv2.warpAffine(
            mask.astype(np.float32),
            m,
            (ow, oh),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(1.0,),
        )
        msk = (msk >= 0.5).astype(np.float32)
    else:
        msk = np.ones((oh, ow), np.float32)
    kp = np.array(keypoints, np.float64, copy=True)
    if kp.size:
        xy = kp[..., :2] @ m[:, :2].T + m[:, 2]
        kp[..., :2] = np.where(kp[..., 2:3] > 0, xy, 0.0)
    if flip:
        img, msk = img[:, ::-1], msk[:, ::-1]
        kp = flip_keypoints(kp, ow, coco=True) if kp.size else kp
    return np.ascontiguousarray(img), kp, np.ascontiguousarray(msk)


def make_example(
    sample: Sample, cfg: Any, rng: np.random.Generator, train: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One network example: RGB image (H, W, 3) uint8, heatmaps (19, Ht, Wt), PAFs (38, Ht, Wt), mask (1, Ht, Wt)."""
    h, w, _ = cfg.dataloader.image_dims
    stride, lp = cfg.stride, cfg.label_processor_config
    image = sample.load()
    mask = sample.mask()
    m, flip = augment_params(sample, (image.shape[0], image.shape[1]), (h, w), cfg.augmentation_config, rng, train)
    img, kp, msk = warp_sample(image, sample.keypoints, mask, m, flip, (h, w))
    hm, paf = render_targets(
        coco_to_parts(kp) if kp.size else np.zeros((0, 18, 3)),
        (h, w),
        stride,
        lp.heatmap_gaussian_sigma,
        lp.paf_ortho_dist_thresh,
    )
    mt = mask_to_target(msk, stride)
    return img[:, :, ::-1], hm.transpose(2, 0, 1), paf.transpose(2, 0, 1), mt[None]


def batches(
    samples: Sequence[Sample],
    cfg: Any,
    pre: dict[str, Any],
    batch_size: int,
    epoch: int,
    seed: int,
    shuffle: bool = True,
    drop_last: bool = True,
    shard: Any = None,
) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """(data (N, 3, H, W) float32, [heatmap (N, 19, Ht, Wt), paf (N, 38, Ht, Wt), mask (N, 1, Ht, Wt)])
    batches for `epoch`; the same (seed, epoch) gives the same batches. `shard` (a tlkit.distributed.World):
    only this node's slice of each batch is made."""
    from tlkit_pose.model import normalize

    if not samples:
        raise DataError("no training samples")
    order = np.random.default_rng([seed, epoch]).permutation(len(samples)) if shuffle else np.arange(len(samples))
    n = len(order) // batch_size * batch_size if drop_last and len(order) >= batch_size else len(order)
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if shard is not None:
            idx = shard.shard(idx)
        ex = [make_example(samples[i], cfg, np.random.default_rng([seed, epoch, int(i)])) for i in idx]
        imgs, hms, pafs, masks = (np.stack(v) for v in zip(*ex))
        yield normalize(imgs, pre), [hms, pafs, masks]


def steps_per_epoch(n: int, batch_size: int, drop_last: bool = True) -> int:
    if n < 1:
        raise DataError("no training samples")
    return max(1, n // batch_size) if drop_last else math.ceil(n / batch_size)


def open_train_samples(cfg: Any, warn: Callable[[str], object] | None = None) -> list[Sample]:
    """Training samples from the spec: dataloader.train_records (RecordIO) or train_annotations (COCO json);
    label problems of the json are reported through `warn`."""
    dl = cfg.dataloader
    if dl.train_records:
        return samples_from_records(dl.train_records)
    if dl.train_annotations:
        return samples_from_coco(
            dl.train_annotations, dl.train_images, dl.min_keypoints_for_mask, strict=not dl.skip_bad_labels, warn=warn
        )
    raise SpecError(
        "dataloader: set train_annotations (COCO keypoints json) or train_records (dataset_convert .rec glob) to train"
    )
