"""DetectNet_v2 post-processing: raw heads -> boxes -> per-class clusters (TLT `postprocessor/cluster.py`).

Heads for one image: coverage (C, h, w) in [0, 1] and bbox (4C, h, w), per class L, T, R, B distances
from each cell's grid point divided by `scale` (see `tlkit_detection.rasterizer`). Per class:

1. keep cells with cov > coverage_threshold;
2. DBSCAN (scikit-learn, metric='precomputed') on 1 - IoU of the decoded boxes, eps=dbscan_eps,
   min_samples=max(int(dbscan_min_samples), 1), sample_weight=cov -- or greedy NMS;
3. a cluster's box is the cov-weighted mean of its boxes; its confidence is the sum of its covs
   (aggregate_cov, TLT's default; can exceed 1) or their mean (mean_cov);
4. drop noise, boxes with height <= minimum_bounding_box_height and confidences below the threshold;
5. sort by confidence, highest first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tlkit_detection.rasterizer import BBOX_OFFSET, BBOX_SCALE


@dataclass(frozen=True)
class ClusteringParams:
    coverage_threshold: float = 0.005
    clustering_algorithm: Literal["dbscan", "nms"] = "dbscan"
    dbscan_eps: float = 0.13
    dbscan_min_samples: float = 0.05
    dbscan_confidence_threshold: float = 0.1
    minimum_bounding_box_height: float = 20.0
    nms_iou_threshold: float = 0.2
    nms_confidence_threshold: float = 0.1
    confidence_model: Literal["aggregate_cov", "mean_cov"] = "aggregate_cov"


@dataclass
class Detection:
    class_name: str
    bbox: np.ndarray  # (4,) x1 y1 x2 y2, input pixels
    confidence: float
    cov: float  # mean coverage of the cluster
    num_raw_bboxes: int
    bbox_variance: float | None = None


def decode_bboxes(
    bbox: np.ndarray, input_size: tuple[int, int], scale: float = BBOX_SCALE, offset: float = BBOX_OFFSET
) -> np.ndarray:
    """(4C, h, w) head -> (C, 4, h, w) absolute x1 y1 x2 y2 in input pixels, clipped to the image."""
    bbox = np.asarray(bbox, dtype=np.float64)
    c4, out_h, out_w = bbox.shape
    if c4 % 4:
        raise ValueError(f"bbox head must have 4*C channels, got {c4}")
    in_w, in_h = input_size
    gx = np.arange(out_w) * (in_w / out_w) + offset
    gy = np.arange(out_h) * (in_h / out_h) + offset
    p = bbox.reshape(c4 // 4, 4, out_h, out_w) * scale
    left = np.clip(gx[None, None, :] - p[:, 0], 0, in_w)
    top = np.clip(gy[None, :, None] - p[:, 1], 0, in_h)
    right = np.clip(gx[None, None, :] + p[:, 2], left, in_w)
    bottom = np.clip(gy[None, :, None] + p[:, 3], top, in_h)
    return np.stack([left, top, right, bottom], axis=1)


def iou_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) boxes (continuous coordinates, no +1)."""
    b = a if b is None else b
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    # the small constant keeps degenerate pairs (both areas 0) at IoU 0 instead of NaN, as TLT does
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-5)


def cluster_class(
    boxes: np.ndarray, covs: np.ndarray, class_name: str, params: ClusteringParams = ClusteringParams()
) -> list[Detection]:
    """Cluster one class's candidate boxes (N, 4) with coverages (N,)."""
    keep = covs > params.coverage_threshold
    boxes, covs = boxes[keep], covs[keep]
    if covs.size == 0:
        return []
    if params.clustering_algorithm == "nms":
        dets = _nms(boxes, covs, class_name, params)
    elif params.clustering_algorithm == "dbscan":
        dets = _dbscan(boxes, covs, class_name, params)
    else:
        raise ValueError(f"unknown clustering_algorithm {params.clustering_algorithm!r}; expected dbscan or nms")
    return sorted(dets, key=lambda d: -d.confidence)


def _dbscan(boxes, covs, class_name, params) -> list[Detection]:
    from sklearn.cluster import DBSCAN

    db = DBSCAN(eps=params.dbscan_eps, min_samples=max(int(params.dbscan_min_samples), 1), metric="precomputed")
    labels = db.fit_predict(1.0 - iou_matrix(boxes), sample_weight=covs)
    out = []
    for label in np.unique(labels[labels >= 0]):
        members = labels == label
        w, b = covs[members], boxes[members]
        total = float(w.sum())
        w_norm = w / total
        mean_box = (b * w_norm[:, None]).sum(axis=0)
        area = max((mean_box[2] - mean_box[0]) * (mean_box[3] - mean_box[1]), 1e-3)
        variance = float(np.sqrt(np.mean((w_norm[:, None] * (b - mean_box) ** 2).sum(axis=0)) / area))
        mean_cov = total / w.size
        confidence = total if params.confidence_model == "aggregate_cov" else mean_cov
        if mean_box[3] - mean_box[1] <= params.minimum_bounding_box_height:
            continue
        if confidence < params.dbscan_confidence_threshold:
            continue
        out.append(Detection(class_name, mean_box, confidence, mean_cov, int(w.size), variance))
    return out


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS, best score first: a box is dropped when its IoU with a kept, better
    one exceeds `iou_threshold`."""
    iou = iou_matrix(boxes)
    suppressed = np.zeros(len(scores), bool)
    keep = []
    for i in np.argsort(-scores, kind="stable"):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
    return np.asarray(keep, np.int64)


def _nms(boxes, covs, class_name, params) -> list[Detection]:
    ok = (covs >= params.nms_confidence_threshold) & (boxes[:, 3] - boxes[:, 1] > params.minimum_bounding_box_height)
    boxes, covs = boxes[ok], covs[ok]
    return [
        Detection(class_name, boxes[i].copy(), float(covs[i]), float(covs[i]), 1)
        for i in greedy_nms(boxes, covs, params.nms_iou_threshold)
    ]


def cluster_outputs(
    cov: np.ndarray,
    bbox: np.ndarray,
    class_names: Sequence[str],
    input_size: tuple[int, int],
    params: ClusteringParams | Mapping[str, ClusteringParams] = ClusteringParams(),
    scale: float = BBOX_SCALE,
    offset: float = BBOX_OFFSET,
) -> list[Detection]:
    """One image's raw heads -> detections of every class, each class sorted by confidence."""
    cov = np.asarray(cov, dtype=np.float64)
    if cov.ndim != 3 or cov.shape[0] != len(class_names):
        raise ValueError(f"cov head must be (C={len(class_names)}, h, w), got {cov.shape}")
    if np.shape(bbox) != (4 * cov.shape[0],) + cov.shape[1:]:
        raise ValueError(f"bbox head must be (4C={4 * cov.shape[0]}, h, w), got {np.shape(bbox)}")
    abs_boxes = decode_bboxes(bbox, input_size, scale, offset)
    out: list[Detection] = []
    for c, name in enumerate(class_names):
        p = params.get(name, ClusteringParams()) if isinstance(params, Mapping) else params
        boxes = abs_boxes[c].reshape(4, -1).T
        out += cluster_class(boxes, cov[c].reshape(-1), name, p)
    return out
