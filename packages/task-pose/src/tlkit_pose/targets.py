"""Ground-truth heatmaps and part affinity fields (PAFs) at the network's output stride, as TLT renders them.

Coordinates are pixel-index coordinates of the network input (x = 0 is the centre of the first column).
Output cell (gy, gx) stands for the input point (gx * stride + (stride - 1) / 2, gy * stride + ...), which is
exactly where `cv2.resize(..., fx=stride, fy=stride)` puts it back when the inferencer upsamples.

- Heatmaps (TLT `heatmap_gaussian_sigma`, input pixels): one Gaussian per labeled part, people combined by
  maximum, values below 0.001 zeroed; the last channel is the background, 1 - max over parts.
- PAFs (TLT `paf_ortho_dist_thresh`, in units of the stride): the limb's unit vector on every cell whose
  orthogonal distance to the limb is at most `thresh * stride` pixels and which lies along the limb (its
  projection within the segment extended by that distance at both ends, as TLT's bounding-box window does).
  Where limbs of several people overlap the vectors are averaged (TLT overwrites, so the last person wins).
  TLT's `paf_gaussian_sigma` is not used by TLT's label processor either (its code marks it TODO).

Labeled means visibility > 0: visible and occluded parts both get targets (TLT does the same).
"""

from __future__ import annotations

import math

import numpy as np

from tlkit_pose.skeleton import LIMBS, NUM_LIMBS, NUM_PARTS

HEATMAP_FLOOR = 0.001  # TLT LabelProcessor.HEATMAP_THRESHOLD


def target_shape(image_hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """Output grid of an input of `image_hw` (rounded up: the inferencer pads bottom/right to the stride)."""
    return math.ceil(image_hw[0] / stride), math.ceil(image_hw[1] / stride)


def _grid(n: int, stride: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) * stride + (stride - 1) / 2.0


def render_heatmaps(parts: np.ndarray, image_hw: tuple[int, int], stride: int = 8, sigma: float = 7.0) -> np.ndarray:
    """(P, 18, 3) parts -> (Ht, Wt, 19) float32 heatmaps; the last channel is the background."""
    parts = _check_parts(parts)
    ht, wt = target_shape(image_hw, stride)
    out = np.zeros((ht, wt, NUM_PARTS + 1), dtype=np.float32)
    if len(parts):
        k = 1.0 / (2.0 * sigma * sigma)
        xy = parts[..., :2].astype(np.float32)
        gx = np.exp(-((_grid(wt, stride)[None, None, :] - xy[..., 0:1]) ** 2) * k)  # (P, 18, Wt)
        gy = np.exp(-((_grid(ht, stride)[None, None, :] - xy[..., 1:2]) ** 2) * k)  # (P, 18, Ht)
        gy = gy * (parts[..., 2:3] > 0)  # unlabeled parts contribute nothing
        blobs = (gy[..., :, None] * gx[..., None, :]).max(axis=0)  # (18, Ht, Wt): overlapping people by max
        blobs[blobs < HEATMAP_FLOOR] = 0.0
        out[..., :NUM_PARTS] = blobs.transpose(1, 2, 0)
    out[..., NUM_PARTS] = np.clip(1.0 - out[..., :NUM_PARTS].max(axis=2), 0.0, 1.0)
    return out


def render_pafs(
    parts: np.ndarray, image_hw: tuple[int, int], stride: int = 8, ortho_dist_thresh: float = 1.0
) -> np.ndarray:
    """(P, 18, 3) parts -> (Ht, Wt, 38) float32 PAFs: limb k in channels 2k (x) and 2k + 1 (y)."""
    parts = _check_parts(parts)
    ht, wt = target_shape(image_hw, stride)
    out = np.zeros((ht, wt, NUM_LIMBS, 2), dtype=np.float32)
    if len(parts):
        a_idx, b_idx = np.array(LIMBS).T
        a = parts[:, a_idx, :2].astype(np.float32)  # (P, L, 2)
        vec = parts[:, b_idx, :2].astype(np.float32) - a
        length = np.linalg.norm(vec, axis=-1)  # (P, L)
        valid = (parts[:, a_idx, 2] > 0) & (parts[:, b_idx, 2] > 0) & (length > 0)
        unit = np.where(valid[..., None], vec / np.maximum(length, 1e-9)[..., None], 0.0).astype(np.float32)
        thresh = np.float32(ortho_dist_thresh * stride)
        gx = _grid(wt, stride)[None, None, None, :] - a[..., 0, None, None]  # (P, L, 1, Wt)
        gy = _grid(ht, stride)[None, None, :, None] - a[..., 1, None, None]  # (P, L, Ht, 1)
        ux, uy = unit[..., 0, None, None], unit[..., 1, None, None]
        along = gx * ux + gy * uy  # (P, L, Ht, Wt)
        on = np.abs(gx * uy - gy * ux) <= thresh
        on &= along >= -thresh
        on &= along <= (length + thresh)[..., None, None]
        on &= valid[..., None, None]
        count = on.sum(axis=0, dtype=np.float32)  # (L, Ht, Wt)
        onf = on.astype(np.float32)
        denom = np.maximum(count, 1.0)
        out[..., 0] = ((onf * ux).sum(axis=0) / denom).transpose(1, 2, 0)
        out[..., 1] = ((onf * uy).sum(axis=0) / denom).transpose(1, 2, 0)
    return np.ascontiguousarray(out.reshape(ht, wt, 2 * NUM_LIMBS), dtype=np.float32)


def render_targets(
    parts: np.ndarray,
    image_hw: tuple[int, int],
    stride: int = 8,
    heatmap_sigma: float = 7.0,
    paf_ortho_dist_thresh: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (Ht, Wt, 19) and PAFs (Ht, Wt, 38) for the people `parts` (P, 18, 3) of one input image."""
    return (
        render_heatmaps(parts, image_hw, stride, heatmap_sigma),
        render_pafs(parts, image_hw, stride, paf_ortho_dist_thresh),
    )


def mask_to_target(mask: np.ndarray, stride: int) -> np.ndarray:
    """A full-resolution loss mask (1 = use, 0 = ignore) -> the output grid (area average, then >= 0.5)."""
    import cv2

    ht, wt = target_shape((mask.shape[0], mask.shape[1]), stride)
    padded = np.ones((ht * stride, wt * stride), dtype=np.float32)
    padded[: mask.shape[0], : mask.shape[1]] = mask > 0
    return (cv2.resize(padded, (wt, ht), interpolation=cv2.INTER_AREA) >= 0.5).astype(np.float32)


def _check_parts(parts: np.ndarray) -> np.ndarray:
    parts = np.asarray(parts, dtype=np.float64)
    if parts.ndim == 2:
        parts = parts[None]
    if parts.size == 0:
        return np.zeros((0, NUM_PARTS, 3))
    if parts.shape[1:] != (NUM_PARTS, 3):
        raise ValueError(
            f"expected parts of shape (P, {NUM_PARTS}, 3), got {parts.shape}; convert COCO keypoints with skeleton.coco_to_parts"
        )
    return parts
