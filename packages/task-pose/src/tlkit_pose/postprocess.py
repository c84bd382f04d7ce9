"""Heatmaps + part affinity fields -> people, exactly as TLT BodyPoseNet's inferencer does it.

1. Peaks: drop the background channel, smooth each part map (Gaussian, sigma 3, 5x5, zero padding), keep
   the pixels equal to the 3x3 maximum of the smoothed map whose *raw* value exceeds `heatmap_threshold`.
   One change from TLT: of two equal neighbouring maxima (a plateau: a part exactly between two pixels)
   only the first is kept; TLT keeps both and then splits that person in two.
2. Limbs: for every (start, end) candidate pair, sample `line_integral_samples_num` points on the segment
   (rounded to pixels), score each by PAF . unit vector; samples above `paf_threshold` qualify; the limb
   score is the mean of qualified samples; keep pairs scoring > 0 with more than
   `line_integral_count_threshold * N` qualified samples.
3. Assignment: greedily accept the best-scoring pairs whose endpoints are both still free.
4. Grouping (TLT `connect_parts`): in limb order attach to the person holding an endpoint, merge two
   disjoint people, or start a new person (never from the last two, eye-ear, limbs); drop people with fewer
   than `num_parts_thresh` parts or mean score below `overall_score_thresh`. Person score = 1 - 1 / sum.

The maps given to `decode` are at image resolution (upsampled by the stride and cropped, see `upsample`
and `predict_multiscale`). Keypoints come out in the same pixel-index coordinates, as floats (TLT truncates
them to int when it writes COCO results, which costs OKS for no reason).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tlkit_pose.config import InferenceConfig
from tlkit_pose.skeleton import LIMBS, NUM_LIMBS, NUM_PARTS, parts_to_coco


@dataclass
class Person:
    """One detected person: `keypoints` (18, 3) = x, y, peak score (0, 0, 0 where missing)."""

    keypoints: np.ndarray
    score: float  # 1 - 1 / total, TLT's COCO score
    total: float  # sum of part and limb scores
    num_parts: int


def _params(params: InferenceConfig | None) -> InferenceConfig:
    return params if params is not None else InferenceConfig()


def _check_maps(heatmap: np.ndarray, paf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if heatmap.ndim != 3 or heatmap.shape[2] not in (NUM_PARTS, NUM_PARTS + 1):
        raise ValueError(
            f"heatmap must be (H, W, {NUM_PARTS + 1}) (or without background, {NUM_PARTS}), got {heatmap.shape}"
        )
    if paf.ndim != 3 or paf.shape[2] != 2 * NUM_LIMBS or paf.shape[:2] != heatmap.shape[:2]:
        raise ValueError(
            f"paf must be (H, W, {2 * NUM_LIMBS}) with the heatmap's H, W {heatmap.shape[:2]}, got {paf.shape}"
        )
    return heatmap, np.asarray(paf, dtype=np.float32)


def find_peaks(heatmap: np.ndarray, params: InferenceConfig | None = None) -> list[np.ndarray]:
    """Per part, an (n, 4) array of peaks: x, y, raw heatmap score, global peak id (ids count up part by part)."""
    import cv2

    p = _params(params)
    hm = heatmap[:, :, :NUM_PARTS]
    above_any = hm.max(axis=2) > p.heatmap_threshold
    rows, cols = np.flatnonzero(above_any.any(axis=1)), np.flatnonzero(above_any.any(axis=0))
    if not len(rows):
        return [np.zeros((0, 4)) for _ in range(NUM_PARTS)]
    # Work on the box around the above-threshold pixels only, grown by the smoothing and NMS radii: inside
    # it (away from its cut edges) the smoothed and pooled values equal the whole-image ones.
    m = p.heatmap_gaussian_kernel // 2 + p.nms_window // 2 + 1
    y0, y1 = max(rows[0] - m, 0), min(rows[-1] + m + 1, hm.shape[0])
    x0, x1 = max(cols[0] - m, 0), min(cols[-1] + m + 1, hm.shape[1])
    crop = np.ascontiguousarray(hm[y0:y1, x0:x1], dtype=np.float32)
    k = cv2.getGaussianKernel(p.heatmap_gaussian_kernel, p.heatmap_gaussian_sigma).astype(np.float32)
    smoothed = cv2.sepFilter2D(crop, -1, k, k, borderType=cv2.BORDER_CONSTANT)  # TF 'SAME' zero padding
    smoothed = smoothed.reshape(crop.shape)
    win = np.ones((p.nms_window, p.nms_window), np.uint8)
    pooled = cv2.dilate(smoothed, win, borderType=cv2.BORDER_REPLICATE).reshape(crop.shape)  # max-pool, 'SAME'
    # threshold first: few pixels pass it, so the maximum test runs on those only
    flat = np.flatnonzero(crop > p.heatmap_threshold)
    flat = flat[smoothed.reshape(-1)[flat] == pooled.reshape(-1)[flat]]
    ys, xs, js = np.unravel_index(flat, crop.shape)
    ys, xs, js = _break_ties(smoothed, ys, xs, js, p.nms_window // 2)
    ys, xs = ys + y0, xs + x0
    order = np.argsort(js, kind="stable")
    ys, xs, js = ys[order], xs[order], js[order]
    table = np.stack([xs, ys, crop[ys - y0, xs - x0, js], np.arange(len(js))], axis=1).astype(np.float64)
    bounds = np.searchsorted(js, np.arange(NUM_PARTS + 1))
    return [table[bounds[j] : bounds[j + 1]] for j in range(NUM_PARTS)]


def _break_ties(smoothed: np.ndarray, ys: np.ndarray, xs: np.ndarray, js: np.ndarray, r: int) -> tuple[np.ndarray, ...]:
    """On a plateau (two neighbouring pixels with the same maximum, e.g. a part exactly between two pixels)
    max-pool NMS keeps both, and the person is then split between two copies of the part. Keep only the
    first in raster order: a peak must be strictly greater than the window neighbours that precede it."""
    if not len(ys):
        return ys, xs, js
    h, w = smoothed.shape[:2]
    keep = np.ones(len(ys), bool)
    v = smoothed[ys, xs, js]
    for dy in range(-r, 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx >= 0:
                break
            ny, nx = ys + dy, xs + dx
            inside = (ny >= 0) & (nx >= 0) & (nx < w)
            tie = np.zeros(len(ys), bool)
            tie[inside] = smoothed[ny[inside], nx[inside], js[inside]] >= v[inside]
            keep &= ~tie
    return ys[keep], xs[keep], js[keep]


def score_limbs(
    start: np.ndarray, end: np.ndarray, paf_xy: np.ndarray, params: InferenceConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Line-integral scores (nA, nB) and qualified-sample counts (nA, nB) of all start x end candidate pairs."""
    p = _params(params)
    n = p.line_integral_samples_num
    a, b = start[:, None, :2], end[None, :, :2]
    vec = b - a  # (nA, nB, 2)
    t = np.arange(n, dtype=np.float64) / (n - 1)
    pts = np.rint(a[:, :, None, :] + vec[:, :, None, :] * t[None, None, :, None]).astype(np.int64)  # (nA, nB, n, 2)
    h, w = paf_xy.shape[:2]
    pts[..., 0].clip(0, w - 1, out=pts[..., 0])
    pts[..., 1].clip(0, h - 1, out=pts[..., 1])
    field = paf_xy[pts[..., 1], pts[..., 0]]  # (nA, nB, n, 2)
    unit = vec / (np.linalg.norm(vec, axis=-1, keepdims=True) + 1e-6)
    s = (field * unit[:, :, None, :]).sum(-1)  # (nA, nB, n)
    ok = s > p.paf_threshold
    count = ok.sum(-1)
    return (s * ok).sum(-1) / (count + 1e-6), count


def find_connections(
    peaks: list[np.ndarray], paf: np.ndarray, params: InferenceConfig | None = None
) -> list[np.ndarray]:
    """Per limb, an (m, 3) array of accepted connections: start peak id, end peak id, limb score."""
    p = _params(params)
    need = p.line_integral_count_threshold * p.line_integral_samples_num
    out = []
    for k, (ja, jb) in enumerate(LIMBS):
        ca, cb = peaks[ja], peaks[jb]
        if not len(ca) or not len(cb):
            out.append(np.zeros((0, 3)))
            continue
        score, count = score_limbs(ca, cb, paf[:, :, 2 * k : 2 * k + 2], p)
        ia, ib = np.nonzero((score > 0) & (count > need))
        s = score[ia, ib]
        order = np.argsort(-s, kind="stable")
        used_a, used_b, rows = set(), set(), []
        for i in order:  # greedy: best limbs first, each peak used once per limb type
            if ia[i] not in used_a and ib[i] not in used_b:
                used_a.add(ia[i])
                used_b.add(ib[i])
                rows.append((ca[ia[i], 3], cb[ib[i], 3], s[i]))
        out.append(np.array(rows, dtype=np.float64).reshape(-1, 3))
    return out


def group_people(
    connections: list[np.ndarray], peaks: list[np.ndarray], params: InferenceConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """TLT's connect_parts. Returns humans (N, 20) (18 peak ids or -1, total score, part count) and the peak table."""
    p = _params(params)
    table = np.concatenate([t for t in peaks]) if any(len(t) for t in peaks) else np.zeros((0, 4))
    humans = -np.ones((0, NUM_PARTS + 2))
    for k, conns in enumerate(connections):
        ja, jb = LIMBS[k]
        for ida, idb, s in conns:
            sharing = np.nonzero((humans[:, ja] == ida) | (humans[:, jb] == idb))[0]
            if len(sharing) == 1:
                h = humans[sharing[0]]
                if h[jb] != idb:
                    h[jb] = idb
                    h[-1] += 1
                    h[-2] += table[int(idb), 2] + s
            elif len(sharing) == 2:
                j1, j2 = sharing
                both = ((humans[j1, :-2] >= 0) & (humans[j2, :-2] >= 0)).any()
                if not both:  # disjoint: merge j2 into j1
                    humans[j1, :-2] += humans[j2, :-2] + 1
                    humans[j1, -2:] += humans[j2, -2:]
                    humans[j1, -2] += s
                    humans = np.delete(humans, j2, axis=0)
                else:
                    humans[j1, jb] = idb
                    humans[j1, -1] += 1
                    humans[j1, -2] += table[int(idb), 2] + s
            elif len(sharing) == 0 and k < NUM_LIMBS - 2:
                row = -np.ones(NUM_PARTS + 2)
                row[ja], row[jb] = ida, idb
                row[-1] = 2
                row[-2] = table[int(ida), 2] + table[int(idb), 2] + s
                humans = np.vstack([humans, row])
    keep = (humans[:, -1] >= p.num_parts_thresh) & (
        humans[:, -2] / np.maximum(humans[:, -1], 1) >= p.overall_score_thresh
    )
    return humans[keep], table


def decode(heatmap: np.ndarray, paf: np.ndarray, params: InferenceConfig | None = None) -> list[Person]:
    """Image-resolution heatmap (H, W, 19 or 18) and PAF (H, W, 38) -> people, best first."""
    p = _params(params)
    heatmap, paf = _check_maps(heatmap, paf)
    peaks = find_peaks(heatmap, p)
    humans, table = group_people(find_connections(peaks, paf, p), peaks, p)
    people = []
    for h in humans:
        kp = np.zeros((NUM_PARTS, 3))
        have = h[:NUM_PARTS] >= 0
        kp[have] = table[h[:NUM_PARTS][have].astype(int), :3]
        total = float(h[-2])
        people.append(Person(kp, 1.0 - 1.0 / total if total else 0.0, total, int(h[-1])))
    people.sort(key=lambda q: -q.score)
    return people


def to_coco_results(people: Sequence[Person], image_id: int, category_id: int = 1) -> list[dict]:
    """COCO keypoint results (the json list COCOeval loads): 18 parts remapped to COCO's 17 by name."""
    out = []
    for person in people:
        coco = parts_to_coco(person.keypoints)
        flat = []
        for x, y, s in coco:
            found = s > 0
            flat += [round(float(x), 2), round(float(y), 2), 1 if found else 0]
        out.append(
            {
                "image_id": int(image_id),
                "category_id": category_id,
                "keypoints": flat,
                "score": round(float(person.score), 6),
            }
        )
    return out


# -- resolution handling and multi-scale ---------------------------------------------------------------------


def upsample(maps: np.ndarray, factor: int, out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Network output (Ht, Wt, C) -> x`factor` with bicubic interpolation (TLT), cropped to `out_hw`
    (the un-padded input size)."""
    import cv2

    up = cv2.resize(
        np.ascontiguousarray(maps, dtype=np.float32), None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC
    )
    if up.ndim == 2:
        up = up[:, :, None]
    return up if out_hw is None else up[: out_hw[0], : out_hw[1]]


@dataclass
class ScaledInput:
    """One scale of a multi-scale run: the padded network input and how it maps back to the image."""

    image: np.ndarray  # (Hp, Wp, C), bottom/right padded to the stride
    factor: float  # scaled size / original size
    scaled_hw: tuple[int, int]  # size before padding


def multiscale_inputs(
    image: np.ndarray,
    scales: Sequence[float] = (1.0,),
    stride: int = 8,
    input_height: int | None = None,
    pad_value: int = 128,
) -> list[ScaledInput]:
    """Resize the image for each scale (scale 1 = `input_height` if given, else the image's own height) and
    pad it bottom/right to a multiple of the stride, as TLT's inferencer does."""
    import cv2

    h, w = image.shape[:2]
    base = (input_height / h) if input_height else 1.0
    out = []
    for s in scales:
        f = base * float(s)
        sh, sw = max(1, int(round(h * f))), max(1, int(round(w * f)))
        resized = image if (sh, sw) == (h, w) else cv2.resize(image, (sw, sh), interpolation=cv2.INTER_CUBIC)
        if resized.ndim == 2:
            resized = resized[:, :, None]
        ph, pw = math.ceil(sh / stride) * stride, math.ceil(sw / stride) * stride
        padded = np.full((ph, pw, resized.shape[2]), pad_value, dtype=resized.dtype)
        padded[:sh, :sw] = resized
        out.append(ScaledInput(padded, f, (sh, sw)))
    return out


def merge_multiscale(
    outputs: Sequence[tuple[np.ndarray, np.ndarray]],
    inputs: Sequence[ScaledInput],
    image_hw: tuple[int, int],
    stride: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Average per-scale network outputs at image resolution: upsample by the stride, crop the padding,
    resize to the image."""
    import cv2

    if len(outputs) != len(inputs) or not outputs:
        raise ValueError(f"got {len(outputs)} outputs for {len(inputs)} scaled inputs")
    h, w = image_hw
    acc_h = acc_p = None
    for (hm, paf), inp in zip(outputs, inputs):
        maps = []
        for m in (hm, paf):
            up = upsample(m, stride, inp.scaled_hw)
            if up.shape[:2] != (h, w):
                up = cv2.resize(up, (w, h), interpolation=cv2.INTER_CUBIC)
                up = up[:, :, None] if up.ndim == 2 else up
            maps.append(up)
        acc_h = maps[0] if acc_h is None else acc_h + maps[0]
        acc_p = maps[1] if acc_p is None else acc_p + maps[1]
    assert acc_h is not None and acc_p is not None  # outputs is not empty
    n = float(len(outputs))
    return acc_h / n, acc_p / n


def predict_multiscale(
    image: np.ndarray,
    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    params: InferenceConfig | None = None,
    stride: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Run `predict(padded_image) -> (heatmap, paf)` at stride resolution for every `params.scales` and
    return the averaged image-resolution maps, ready for `decode`."""
    p = _params(params)
    inputs = multiscale_inputs(image, p.scales, stride, p.input_height)
    return merge_multiscale([predict(i.image) for i in inputs], inputs, (image.shape[0], image.shape[1]), stride)
