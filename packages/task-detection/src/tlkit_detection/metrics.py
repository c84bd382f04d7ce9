"""Detection metrics, each equal to the reference tool users compare with (differential tests in
tests/test_reference_tools.py, tests/test_kitti_devkit.py):

1. `evaluate_ap`: per-class AP in one of two conventions (`matching`):
   - "tlt": TLT DetectNet_v2's `evaluation/compute_metrics.py` (the default, as `tlkit detection evaluate`
     and validation during training report it);
   - "voc": the Pascal VOC devkit as its Python port `voc_eval.py` (py-faster-rcnn / Detectron) scores it.
   AP is SAMPLE (11-point) or INTEGRATE (TLT's own integration, or VOC2010's all-point area);
   `evaluation_box_config` is a hard filter on both ground truth and predictions.
2. `evaluate_kitti`: the official KITTI object devkit (`evaluate_object.cpp`) for 2D boxes: easy /
   moderate / hard (min height 40/25/25 px, max occlusion 0/1/2, max truncation 0.15/0.3/0.5),
   neighbouring classes (Van for Car, Person_sitting for Pedestrian) and too-hard boxes neither count
   nor penalise, DontCare regions absorb detections, AP on 41 recall-sampled thresholds: AP11 (every
   4th point, the original devkit) and AP40 (points 1..40, the 2019 devkit).
3. `evaluate_coco`: COCO mAP@[.5:.95], AP50, AP75 and small/medium/large AP through pycocotools.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from tlkit_detection.kitti import FrameArrays

# -- boxes --------------------------------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of (N, 4) and (M, 4) x1 y1 x2 y2 boxes; 0 where the union is empty."""
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def box_intersection_over_a(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) intersection / area(a): how much of each detection a DontCare region b covers."""
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(area_a[:, None] > 0, inter / area_a[:, None], 0.0)


# -- per-class AP (TLT DetectNet_v2 / Pascal VOC devkit) ---------------------------------------------------

MATCHING = ("tlt", "voc")


@dataclass(frozen=True)
class BoxFilter:
    """TLT evaluation_box_config: boxes outside these sizes are removed from GT and predictions."""

    minimum_height: float = 0.0
    maximum_height: float = 9999.0
    minimum_width: float = 0.0
    maximum_width: float = 9999.0

    def mask(self, boxes: np.ndarray) -> np.ndarray:
        w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        return (
            (h >= self.minimum_height)
            & (w >= self.minimum_width)
            & (h <= self.maximum_height)
            & (w <= self.maximum_width)
        )


@dataclass
class ClassAP:
    name: str
    ap: float  # 0..1
    num_gt: int
    num_pred: int
    precision: np.ndarray  # cumulative, predictions sorted by confidence
    recall: np.ndarray
    scores: np.ndarray
    iou_threshold: float


@dataclass
class APResult:
    classes: dict[str, ClassAP]
    mode: str
    matching: str = "tlt"

    @property
    def mean_ap(self) -> float:
        return float(np.mean([c.ap for c in self.classes.values()])) if self.classes else 0.0

    def to_dict(self) -> dict:
        return {
            "mean_average_precision": self.mean_ap * 100,
            "average_precision_mode": self.mode,
            "matching": self.matching,
            "average_precision": {k: c.ap * 100 for k, c in sorted(self.classes.items())},
            "num_ground_truth": {k: c.num_gt for k, c in sorted(self.classes.items())},
            "num_predictions": {k: c.num_pred for k, c in sorted(self.classes.items())},
        }


def average_precision(
    precision: np.ndarray, recall: np.ndarray, mode: str = "sample", num_recall_points: int = 11, matching: str = "tlt"
) -> float:
    """AP from cumulative precision/recall arrays (predictions sorted by confidence).

    sample: the largest precision at recall >= t, averaged over `num_recall_points` recall values t evenly
    spaced over [0, 1] (VOC2007's 11-point AP; TLT and the VOC devkit agree).
    integrate, matching "voc": the VOC2010+ area under the monotone precision envelope, from recall 0.
    integrate, matching "tlt": TLT's own integration (compute_metrics.py): over the distinct recall values
    r_0 < ... < r_n reached, sum of (r_{i+1} - r_i) x the largest precision at recall r_i..r_{n-1}; it
    starts at r_0, not 0, and never uses the precision at r_n (so a perfect detector of 2 objects scores 0.5).
    """
    precision, recall = np.asarray(precision, float), np.asarray(recall, float)
    mode = mode.lower()
    if mode == "sample":
        total = 0.0
        for t in np.linspace(0, 1, num_recall_points):
            p = precision[recall >= t]
            total += float(p.max()) if p.size else 0.0
        return total / num_recall_points
    if mode == "integrate" and matching == "voc":
        mrec = np.concatenate([[0.0], recall, [1.0]])
        mpre = np.concatenate([[0.0], precision, [0.0]])
        mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # monotone envelope
        steps = np.flatnonzero(mrec[1:] != mrec[:-1])
        return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    if mode == "integrate":
        if recall.size == 0:
            return 0.0
        levels, first = np.unique(recall, return_index=True)
        if levels.size < 2:
            return 0.0
        group_max = np.maximum.reduceat(precision, first)[:-1]  # precision at each recall level but the last
        height = np.maximum.accumulate(group_max[::-1])[::-1]
        return float(np.sum(height * np.diff(levels)))
    raise ValueError(f"average_precision_mode must be SAMPLE or INTEGRATE, got {mode!r}")


def flatten_frames(frames: Mapping[str, FrameArrays], keys: Sequence[str]) -> tuple[np.ndarray, ...]:
    """Concatenate frames `keys` (missing ones are empty): (frame index, types, boxes, scores, difficult)."""
    parts = [(i, frames[k]) for i, k in enumerate(keys) if k in frames and frames[k].types.size]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, object), np.zeros((0, 4)), np.zeros(0), np.zeros(0, bool)
    return (
        np.concatenate([np.full(f.types.size, i, np.int64) for i, f in parts]),
        np.concatenate([f.types for _, f in parts]),
        np.concatenate([f.boxes for _, f in parts]),
        np.concatenate([f.scores for _, f in parts]),
        np.concatenate([f.difficult_mask() for _, f in parts]),
    )


def _same_frame_pairs(pred_frame: np.ndarray, gt_frame: np.ndarray, n_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """All (prediction, GT) index pairs within the same frame; `gt_frame` must be sorted."""
    counts = np.bincount(gt_frame, minlength=n_frames)
    starts = np.cumsum(counts) - counts
    k = counts[pred_frame]
    pi = np.repeat(np.arange(pred_frame.size), k)
    offsets = np.arange(k.sum()) - np.repeat(np.cumsum(k) - k, k)
    return pi, np.repeat(starts[pred_frame], k) + offsets


def pixel_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (N, 4) boxes in the VOC devkit's pixel convention (a box spans x1..x2 inclusive, so
    widths and heights are x2 - x1 + 1), as TLT's compute_metrics (border_pixels "include") and voc_eval
    compute it; 0 where the union is not positive (degenerate boxes)."""
    iw = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]) + 1.0, 0.0)
    ih = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]) + 1.0, 0.0)
    inter = iw * ih
    union = (
        (a[:, 2] - a[:, 0] + 1.0) * (a[:, 3] - a[:, 1] + 1.0)
        + (b[:, 2] - b[:, 0] + 1.0) * (b[:, 3] - b[:, 1] + 1.0)
        - inter
    )
    return np.where((union > 0) & (inter > 0), inter / np.where(union > 0, union, 1.0), 0.0)


def evaluate_ap(
    ground_truth: Mapping[str, FrameArrays],
    predictions: Mapping[str, FrameArrays],
    classes: Sequence[str],
    iou_thresholds: Mapping[str, float] | float = 0.5,
    mode: str = "sample",  # "sample" or "integrate", any case (average_precision_mode's SAMPLE / INTEGRATE)
    num_recall_points: int = 11,
    box_filters: Mapping[str, BoxFilter] | BoxFilter | None = None,
    matching: Literal["tlt", "voc"] = "tlt",
) -> APResult:
    """Per-class AP over frames (`ground_truth` keys); frames without predictions have none.

    Both conventions take predictions by decreasing confidence (stable on ties) and give each the
    ground-truth box of its class in its frame with the highest IoU (pixel convention, `pixel_iou`; the
    first on ties); a box already taken by a more confident prediction makes it a false positive.
    matching "tlt" (TLT DetectNet_v2 compute_metrics.py): boxes rounded to whole pixels first (half to
    even), a match needs IoU >= the class threshold, every ground-truth box counts.
    matching "voc" (the VOC devkit, voc_eval.py): coordinates as given, a match needs IoU > the threshold,
    ground truth marked difficult neither counts nor penalises: a prediction whose best box is difficult
    is ignored. `box_filters` (evaluation_box_config) remove boxes from both sides first; TLT always
    filters (its default drops boxes of negative size), "voc" only when a filter is set.
    """
    if matching not in MATCHING:
        raise ValueError(f"matching must be one of {MATCHING}, got {matching!r}")
    keys = sorted(ground_truth)
    g_frame, g_type, g_box, _, g_difficult = flatten_frames(ground_truth, keys)
    p_frame, p_type, p_box, p_score, _ = flatten_frames(predictions, keys)
    # TLT filters the boxes as given, then rounds them
    g_match, p_match = (np.round(g_box), np.round(p_box)) if matching == "tlt" else (g_box, p_box)
    out = {}
    for cls in classes:
        thr = iou_thresholds if isinstance(iou_thresholds, (int, float)) else iou_thresholds.get(cls, 0.5)
        flt: BoxFilter | None = (
            box_filters.get(cls, BoxFilter()) if isinstance(box_filters, Mapping) else (box_filters or BoxFilter())
        )
        if matching == "voc" and flt == BoxFilter():
            flt = None  # the VOC devkit has no filter; TLT's default one drops boxes of negative size
        gsel = (
            np.flatnonzero((g_type == cls) & (flt is None or flt.mask(g_box))) if g_type.size else np.zeros(0, np.int64)
        )
        psel = (
            np.flatnonzero((p_type == cls) & (flt is None or flt.mask(p_box))) if p_type.size else np.zeros(0, np.int64)
        )
        gsel = gsel[np.argsort(g_frame[gsel], kind="stable")]
        neutral = g_difficult[gsel] if matching == "voc" else np.zeros(gsel.size, bool)
        num_gt = int(gsel.size - neutral.sum())
        order = psel[np.argsort(-p_score[psel], kind="stable")]  # by confidence, stable on ties
        scores = p_score[order]
        best_iou = np.full(order.size, -1.0)
        best_gt = np.full(order.size, -1, np.int64)
        if order.size and gsel.size:
            pi, gi = _same_frame_pairs(p_frame[order], g_frame[gsel], len(keys))
            iou = pixel_iou(p_match[order][pi], g_match[gsel][gi])
            # each prediction takes its highest-IoU GT box (the first one on ties)
            srt = np.lexsort((gi, -iou, pi))
            first = srt[np.r_[True, pi[srt][1:] != pi[srt][:-1]]]
            best_iou[pi[first]] = iou[first]
            best_gt[pi[first]] = gi[first]
        hit = best_iou >= thr if matching == "tlt" else best_iou > thr
        ignored = hit & neutral[np.maximum(best_gt, 0)] if gsel.size else np.zeros(order.size, bool)
        counted = np.flatnonzero(hit & ~ignored)
        # a GT box is a TP for the first (highest-confidence) prediction reaching it; later ones are duplicates
        tp = np.zeros(order.size, bool)
        _, first_hit = np.unique(best_gt[counted], return_index=True)
        tp[counted[first_hit]] = True
        ctp, cfp = np.cumsum(tp), np.cumsum(~tp & ~ignored)
        precision = np.where(ctp + cfp > 0, ctp / np.maximum(ctp + cfp, 1), 0.0)
        recall = ctp / num_gt if num_gt else np.zeros(ctp.size)
        ap = average_precision(precision, recall, mode, num_recall_points, matching) if num_gt else 0.0
        out[cls] = ClassAP(cls, ap, num_gt, int(order.size), precision, recall, scores, float(thr))
    return APResult(out, mode.upper(), matching)


# -- printing and plots ---------------------------------------------------------------------------------


def pretty_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A table like tabulate's "pretty" format (TLT prints its AP table with it): centred cells."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) + 2 for i in range(len(headers))]
    sep = "+" + "+".join("-" * w for w in widths) + "+"
    line = lambda r: "|" + "|".join(c.center(w) for c, w in zip(r, widths)) + "|"  # noqa: E731
    return "\n".join([sep, line(cells[0]), sep, *(line(r) for r in cells[1:]), sep])


def format_ap_table(result: APResult) -> str:
    """TLT's evaluation print: mean AP, then a class / AP (in %) table sorted by class."""
    rows = [(name, f"{c.ap * 100:.4f}") for name, c in sorted(result.classes.items())]
    return f"Mean average_precision (in %): {result.mean_ap * 100:0.4f}\n\n" + pretty_table(
        ("class name", "average precision (in %)"), rows
    )


def save_pr_curves(result: APResult, directory: str | Path) -> list[Path]:
    """One precision-recall PNG per class (matplotlib, Agg), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tlkit.io import atomic_write

    directory = Path(directory)
    paths = []
    for name, c in sorted(result.classes.items()):
        fig, ax = plt.subplots(figsize=(5, 4), dpi=100)
        if c.recall.size:
            ax.plot(c.recall, c.precision, drawstyle="steps-post")
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1.02),
            xlabel="recall",
            ylabel="precision",
            title=f"{name}: AP {c.ap * 100:.2f}% (IoU {c.iou_threshold:g}, {result.mode})",
        )
        ax.grid(alpha=0.3)
        path = directory / f"pr_curve_{_safe(name)}.png"
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png")
        plt.close(fig)
        paths.append(path)
    return paths


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


# -- KITTI devkit ------------------------------------------------------------------------------------------

DIFFICULTIES = ("easy", "moderate", "hard")
MIN_HEIGHT = (40.0, 25.0, 25.0)
MAX_OCCLUSION = (0, 1, 2)
MAX_TRUNCATION = (0.15, 0.3, 0.5)
N_SAMPLE_PTS = 41
KITTI_MIN_OVERLAP = {"car": 0.7, "pedestrian": 0.5, "cyclist": 0.5}
KITTI_NEIGHBOURS = {"car": ("van",), "pedestrian": ("person_sitting",)}


@dataclass
class KittiResult:
    # {class: {difficulty: {"AP11": %, "AP40": %, "num_gt": n}}}
    classes: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready: NaN (no ground truth at that difficulty) becomes None."""
        return {
            c: {
                d: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in m.items()}
                for d, m in by.items()
            }
            for c, by in self.classes.items()
        }

    def table(self) -> str:
        rows = []
        for name, by_diff in sorted(self.classes.items()):
            for metric in ("AP11", "AP40"):
                rows.append((name, metric, *(_pct(by_diff[d][metric]) for d in DIFFICULTIES)))
        return pretty_table(("class name", "metric", *DIFFICULTIES), rows)


def _pct(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.4f}"


def _kitti_thresholds(scores: np.ndarray, n_gt: int) -> np.ndarray:
    """devkit getThresholds: scores at which recall steps closest to 0, 1/40, ..., 1."""
    v = np.sort(scores)[::-1]
    out, current = [], 0.0
    for i in range(v.size):
        l_recall = (i + 1) / n_gt
        r_recall = (i + 2) / n_gt if i < v.size - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < v.size - 1:
            continue
        out.append(v[i])
        current += 1.0 / (N_SAMPLE_PTS - 1.0)
    return np.asarray(out)


CHUNK = 512  # frames evaluated together (padded to the chunk's largest box counts)


@dataclass
class _KittiChunk:
    """A chunk of frames, padded to G ground-truth and D detection slots per frame (class independent)."""

    iou: np.ndarray  # (F, G, D)
    dc_overlap: np.ndarray  # (F, D) largest share of each detection covered by a DontCare region
    gt_types: np.ndarray  # (F, G) lower-case; padding ""
    gt_height: np.ndarray
    gt_occ: np.ndarray
    gt_trunc: np.ndarray
    det_types: np.ndarray  # (F, D) lower-case; padding ""
    det_height: np.ndarray
    det_score: np.ndarray  # padding -inf

    def classes(self, cls: str, neighbours: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """gt codes (1 this class, 0 neighbour, -1 other/padding) and det codes (1, -1, -2 padding)."""
        gt = np.where(self.gt_types == cls, 1, np.where(np.isin(self.gt_types, neighbours), 0, -1))
        det = np.where(self.det_types == cls, 1, np.where(self.det_types == "", -2, -1))
        return gt, det


def _pad(arrays: list[np.ndarray], width: int, fill, dtype, trailing: tuple = ()) -> np.ndarray:
    out = np.full((len(arrays), max(width, 1), *trailing), fill, dtype=dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def _kitti_chunk(gts: list[FrameArrays], dets: list[FrameArrays]) -> _KittiChunk:
    low = lambda t: np.array([x.lower() for x in t], dtype=object)  # noqa: E731
    gtypes, dtypes = [low(g.types) for g in gts], [low(d.types) for d in dets]
    G = max((t.size for t in gtypes), default=0)
    D = max((t.size for t in dtypes), default=0)
    gbox = _pad([g.boxes for g in gts], G, 0.0, np.float64, (4,))
    dbox = _pad([d.boxes for d in dets], D, 0.0, np.float64, (4,))
    dc_overlap = np.zeros((len(gts), max(D, 1)))
    for i, (g, t) in enumerate(zip(gts, gtypes)):
        dc = g.boxes[t == "dontcare"] if t.size else np.zeros((0, 4))
        if dc.size and dets[i].boxes.size:
            dc_overlap[i, : len(dets[i].boxes)] = box_intersection_over_a(dets[i].boxes, dc).max(axis=1)
    return _KittiChunk(
        iou=_batched_iou(gbox, dbox),
        dc_overlap=dc_overlap,
        gt_types=_pad(gtypes, G, "", object),
        gt_height=gbox[..., 3] - gbox[..., 1],
        gt_occ=_pad([g.occluded for g in gts], G, 0, np.int64),
        gt_trunc=_pad([g.truncated for g in gts], G, 0.0, np.float64),
        det_types=_pad(dtypes, D, "", object),
        # the devkit: int32_t height = fabs(y1 - y2), so a flipped box is as tall as its mirror image
        det_height=np.trunc(np.abs(dbox[..., 3] - dbox[..., 1])),
        det_score=_pad([d.scores for d in dets], D, -np.inf, np.float64),
    )


def _batched_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(F, G, 4) x (F, D, 4) -> (F, G, D) IoU, 0 for empty unions (padding)."""
    iw = np.minimum(a[:, :, None, 2], b[:, None, :, 2]) - np.maximum(a[:, :, None, 0], b[:, None, :, 0])
    ih = np.minimum(a[:, :, None, 3], b[:, None, :, 3]) - np.maximum(a[:, :, None, 1], b[:, None, :, 1])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a[:, :, None] + area_b[:, None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _kitti_ignores(
    c: _KittiChunk, gt_class: np.ndarray, det_class: np.ndarray, d: int
) -> tuple[np.ndarray, np.ndarray]:
    """devkit cleanData: ignored_gt (0 count, 1 ignore, -1 other class) and ignored_det (same codes)."""
    hard = (c.gt_occ > MAX_OCCLUSION[d]) | (c.gt_trunc > MAX_TRUNCATION[d]) | (c.gt_height <= MIN_HEIGHT[d])
    ig_gt = np.where((gt_class == 1) & ~hard, 0, np.where((gt_class == 0) | ((gt_class == 1) & hard), 1, -1))
    ig_det = np.where(c.det_height < MIN_HEIGHT[d], 1, np.where(det_class == 1, 0, -1))
    ig_det = np.where(det_class == -2, -1, ig_det)  # padding
    return ig_gt, ig_det


def _kitti_tp_scores(c: _KittiChunk, ig_gt, ig_det, min_overlap: float) -> tuple[np.ndarray, int]:
    """devkit computeStatistics without FP: each GT (in file order) takes the best-scoring free detection;
    returns the scores of the counted TPs and the number of counted GT boxes."""
    F = ig_gt.shape[0]
    assigned = np.zeros(ig_det.shape, bool)
    rows = np.arange(F)
    scores = []
    for r in range(ig_gt.shape[1]):
        active = ig_gt[:, r] != -1
        cand = (ig_det != -1) & ~assigned & (c.iou[:, r, :] > min_overlap) & active[:, None]
        found = cand.any(axis=1)
        if not found.any():
            continue
        j = np.argmax(np.where(cand, c.det_score, -np.inf), axis=1)
        assigned[rows[found], j[found]] = True
        counted = found & (ig_gt[:, r] == 0) & (ig_det[rows, j] == 0)
        scores.append(c.det_score[rows[counted], j[counted]])
    return (np.concatenate(scores) if scores else np.zeros(0)), int(np.sum(ig_gt == 0))


def _kitti_pr_counts(c: _KittiChunk, ig_gt, ig_det, min_overlap: float, thresholds: np.ndarray):
    """devkit computeStatistics with FP, for every threshold at once: (tp, fp, fn) arrays of shape (T,)."""
    T = thresholds.size
    tp, fn = np.zeros(T, np.int64), np.zeros(T, np.int64)
    below = c.det_score[:, None, :] < thresholds[None, :, None]  # (F, T, D)
    assigned = np.zeros(below.shape, bool)
    det0, det1 = (ig_det == 0)[:, None, :], (ig_det == 1)[:, None, :]
    for r in range(ig_gt.shape[1]):
        counted_gt = ig_gt[:, r] == 0
        active = ig_gt[:, r] != -1
        if not active.any():
            continue
        ov = c.iou[:, r, :]
        base = ((ig_det != -1) & (ov > min_overlap) & active[:, None])[:, None, :]
        cand = base & ~assigned & ~below
        c0, c1 = cand & det0, cand & det1
        has0, has1 = c0.any(axis=2), c1.any(axis=2)
        # prefer the counted detection with the largest overlap; else the first ignored (too small) one
        j = np.where(has0, np.argmax(np.where(c0, ov[:, None, :], -np.inf), axis=2), np.argmax(c1, axis=2))
        found = has0 | has1  # (F, T)
        fn += (~found & counted_gt[:, None]).sum(axis=0)
        fi, ti = np.nonzero(found)
        jj = j[fi, ti]
        assigned[fi, ti, jj] = True
        hit_tp = counted_gt[fi] & (ig_det[fi, jj] == 0)
        tp += np.bincount(ti[hit_tp], minlength=T)
    # unassigned counted detections above the threshold are FPs, unless a DontCare region absorbs them
    in_dc = (c.dc_overlap > min_overlap)[:, None, :]
    fp = (~assigned & ~below & det0 & ~in_dc).sum(axis=(0, 2))
    return tp, fp, fn


def evaluate_kitti(
    ground_truth: Mapping[str, FrameArrays],
    predictions: Mapping[str, FrameArrays],
    classes: Sequence[str] = ("car", "pedestrian", "cyclist"),
    min_overlap: Mapping[str, float] | None = None,
    neighbours: Mapping[str, Sequence[str]] | None = None,
) -> KittiResult:
    """KITTI easy/moderate/hard AP11 and AP40 (%) per class; class names compare case-insensitively."""
    min_overlap = {**KITTI_MIN_OVERLAP, **{k.lower(): v for k, v in (min_overlap or {}).items()}}
    neighbours = {**KITTI_NEIGHBOURS, **{k.lower(): tuple(x.lower() for x in v) for k, v in (neighbours or {}).items()}}
    empty = FrameArrays(types=np.zeros(0, object), boxes=np.zeros((0, 4)), scores=np.zeros(0))
    keys = sorted(ground_truth, key=lambda k: predictions[k].types.size if k in predictions else 0)  # similar padding
    gts = [ground_truth[k] for k in keys]
    dets = [predictions.get(k, empty) for k in keys]
    chunks = [_kitti_chunk(gts[i : i + CHUNK], dets[i : i + CHUNK]) for i in range(0, len(keys), CHUNK)]
    result = KittiResult()
    for cls in classes:
        c = cls.lower()
        ov = min_overlap.get(c, 0.5)
        codes = [ch.classes(c, tuple(neighbours.get(c, ()))) for ch in chunks]
        result.classes[cls] = {}
        for d, diff in enumerate(DIFFICULTIES):
            ignores = [_kitti_ignores(ch, g, k, d) for ch, (g, k) in zip(chunks, codes)]
            scores, n_gt = [], 0
            for ch, (ig_gt, ig_det) in zip(chunks, ignores):
                sc, n = _kitti_tp_scores(ch, ig_gt, ig_det, ov)
                scores.append(sc)
                n_gt += n
            if n_gt == 0:
                result.classes[cls][diff] = {"AP11": float("nan"), "AP40": float("nan"), "num_gt": 0}
                continue
            thresholds = _kitti_thresholds(np.concatenate(scores), n_gt)[:N_SAMPLE_PTS]
            tp = np.zeros(thresholds.size, np.int64)
            fp, fn = tp.copy(), tp.copy()
            if thresholds.size:
                for ch, (ig_gt, ig_det) in zip(chunks, ignores):
                    a, b, e = _kitti_pr_counts(ch, ig_gt, ig_det, ov, thresholds)
                    tp += a
                    fp += b
                    fn += e
            precision = np.zeros(N_SAMPLE_PTS)
            if thresholds.size:
                precision[: thresholds.size] = tp / np.maximum(tp + fp, 1)
            precision = np.maximum.accumulate(precision[::-1])[::-1]
            result.classes[cls][diff] = {
                "AP11": float(precision[0::4].sum() / 11 * 100),
                "AP40": float(precision[1:].sum() / 40 * 100),
                "num_gt": n_gt,
            }
    return result


# -- COCO (pycocotools) ----------------------------------------------------------------------------------------

# COCOeval.stats[:6], in order
COCO_METRICS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def coco_xywh(boxes: np.ndarray) -> np.ndarray:
    """x1 y1 x2 y2 -> COCO's x y w h; a degenerate box gets zero width or height (it overlaps nothing)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack(
        [
            boxes[:, 0],
            boxes[:, 1],
            np.clip(boxes[:, 2] - boxes[:, 0], 0, None),
            np.clip(boxes[:, 3] - boxes[:, 1], 0, None),
        ],
        axis=1,
    )


def coco_ground_truth(ground_truth: Mapping[str, FrameArrays], keys: Sequence[str], classes: Sequence[str]) -> dict:
    """A COCO instances dict: image i + 1 is frame keys[i], category c + 1 is classes[c]; boxes of other
    classes (DontCare, ...) are left out; area = box width x height (there are no masks)."""
    cat = {c: i + 1 for i, c in enumerate(classes)}
    anns: list[dict] = []
    for i, k in enumerate(keys):
        f = ground_truth[k]
        for t, (x, y, w, h) in zip(f.types, coco_xywh(f.boxes)):
            if t in cat:
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i + 1,
                        "category_id": cat[t],
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
    return {
        "images": [{"id": i + 1, "file_name": k} for i, k in enumerate(keys)],
        "annotations": anns,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
    }


def coco_detections(
    predictions: Mapping[str, FrameArrays], image_ids: Mapping[str, int], classes: Sequence[str]
) -> list[dict]:
    """COCO results: [{image_id, category_id, bbox [x, y, w, h], score}] (category c + 1 is classes[c])."""
    cat = {c: i + 1 for i, c in enumerate(classes)}
    out = []
    for k, f in predictions.items():
        if k not in image_ids:
            continue
        for t, box, s in zip(f.types, coco_xywh(f.boxes), f.scores):
            if t in cat:
                out.append(
                    {
                        "image_id": image_ids[k],
                        "category_id": cat[t],
                        "bbox": [float(v) for v in box],
                        "score": float(s),
                    }
                )
    return out


@dataclass
class CocoResult:
    metrics: dict[str, float | None]  # COCO_METRICS in %; None where no ground truth falls in that size range
    per_class: dict[str, float | None]  # AP@[.5:.95] in %

    def to_dict(self) -> dict:
        return {**self.metrics, "per_class_AP": self.per_class}

    def table(self) -> str:
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        return pretty_table(COCO_METRICS, [[fmt(self.metrics[m]) for m in COCO_METRICS]])


def evaluate_coco(
    ground_truth: Mapping[str, FrameArrays], predictions: Mapping[str, FrameArrays], classes: Sequence[str]
) -> CocoResult:
    """COCO bbox AP through pycocotools' COCOeval (IoU .50:.05:.95, 101 recall points, at most 100
    detections per image, small / medium / large by ground-truth area < 32^2 / < 96^2 / above)."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keys = sorted(ground_truth)
    gt_dict = coco_ground_truth(ground_truth, keys, classes)
    dets = coco_detections(predictions, {k: i + 1 for i, k in enumerate(keys)}, classes)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:  # loadRes refuses an empty list: no detections score 0 everywhere
            dt.dataset = {"images": gt_dict["images"], "annotations": [], "categories": gt_dict["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    metrics = {m: (None if v < 0 else float(v) * 100) for m, v in zip(COCO_METRICS, ev.stats[:6])}
    # precision[T, R, K, A, M]: area "all", maxDets 100; -1 marks categories without ground truth
    precision = ev.eval["precision"][:, :, :, 0, -1]
    per_class = {}
    for k, c in enumerate(classes):
        p = precision[:, :, k]
        per_class[c] = float(p[p > -1].mean()) * 100 if (p > -1).any() else None
    return CocoResult(metrics, per_class)
