"""The vectorized KITTI evaluation equals a line-by-line port of the devkit's evaluate_object.cpp
(cleanData / computeStatistics / getThresholds / eval_class) on random frames."""

import numpy as np
import pytest

from tlkit_detection.kitti import make_frame
from tlkit_detection.metrics import evaluate_kitti

MIN_HEIGHT, MAX_OCC, MAX_TRUNC = (40, 25, 25), (0, 1, 2), (0.15, 0.3, 0.5)
NO_DETECTION = -10000000.0


def overlap(a, b, criterion=-1):
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if criterion == -1:
        return inter / (area_a + area_b - inter)
    return inter / area_a  # criterion 0: share of a (the detection)


def clean_data(gt, det, cls, diff):
    neighbour = {"car": "van", "pedestrian": "person_sitting"}.get(cls)
    ig_gt, dc, ig_det, n_gt = [], [], [], 0
    for t, box, occ, trunc in gt:
        t = t.lower()
        valid = 1 if t == cls else (0 if t == neighbour else -1)
        ignore = occ > MAX_OCC[diff] or trunc > MAX_TRUNC[diff] or (box[3] - box[1]) <= MIN_HEIGHT[diff]
        if valid == 1 and not ignore:
            ig_gt.append(0)
            n_gt += 1
        elif valid == 0 or (ignore and valid == 1):
            ig_gt.append(1)
        else:
            ig_gt.append(-1)
        if t == "dontcare":
            dc.append(box)
    for t, box, score in det:
        valid = 1 if t.lower() == cls else -1
        ig_det.append(1 if (box[3] - box[1]) < MIN_HEIGHT[diff] else (0 if valid == 1 else -1))
    return ig_gt, dc, ig_det, n_gt


def compute_statistics(gt, det, dc, ig_gt, ig_det, compute_fp, min_ov, thresh=0.0):
    tp = fp = fn = 0
    v = []
    assigned = [False] * len(det)
    below = [compute_fp and d[2] < thresh for d in det]
    for i, g in enumerate(gt):
        if ig_gt[i] == -1:
            continue
        det_idx, valid, max_iou, assigned_ignored = -1, NO_DETECTION, 0.0, False
        for j, d in enumerate(det):
            if ig_det[j] == -1 or assigned[j] or below[j]:
                continue
            ov = overlap(d[1], g[1])
            if not compute_fp and ov > min_ov and d[2] > valid:
                det_idx, valid = j, d[2]
            elif compute_fp and ov > min_ov and (ov > max_iou or assigned_ignored) and ig_det[j] == 0:
                max_iou, det_idx, valid, assigned_ignored = ov, j, 1, False
            elif compute_fp and ov > min_ov and valid == NO_DETECTION and ig_det[j] == 1:
                det_idx, valid, assigned_ignored = j, 1, True
        if valid == NO_DETECTION and ig_gt[i] == 0:
            fn += 1
        elif valid != NO_DETECTION and (ig_gt[i] == 1 or ig_det[det_idx] == 1):
            assigned[det_idx] = True
        elif valid != NO_DETECTION:
            tp += 1
            v.append(det[det_idx][2])
            assigned[det_idx] = True
    if compute_fp:
        fp = sum(1 for j in range(len(det)) if not (assigned[j] or ig_det[j] in (-1, 1) or below[j]))
        nstuff = 0
        for box in dc:
            for j, d in enumerate(det):
                if assigned[j] or ig_det[j] in (-1, 1) or below[j]:
                    continue
                if overlap(d[1], box, 0) > min_ov:
                    assigned[j] = True
                    nstuff += 1
        fp -= nstuff
    return tp, fp, fn, v


def get_thresholds(v, n_gt):
    v = sorted(v, reverse=True)
    t, current = [], 0.0
    for i in range(len(v)):
        l_recall = (i + 1) / n_gt
        r_recall = (i + 2) / n_gt if i < len(v) - 1 else l_recall
        if (r_recall - current) < (current - l_recall) and i < len(v) - 1:
            continue
        t.append(v[i])
        current += 1.0 / 40.0
    return t


def devkit_ap(frames, cls, diff, min_ov):
    cleaned = [clean_data(g, d, cls, diff) for g, d in frames]
    v, n_gt = [], 0
    for (g, d), (ig_gt, dc, ig_det, n) in zip(frames, cleaned):
        v += compute_statistics(g, d, dc, ig_gt, ig_det, False, min_ov)[3]
        n_gt += n
    thresholds = get_thresholds(v, n_gt)
    precision = [0.0] * 41
    for k, t in enumerate(thresholds):
        tp = fp = 0
        for (g, d), (ig_gt, dc, ig_det, _) in zip(frames, cleaned):
            a, b, _, _ = compute_statistics(g, d, dc, ig_gt, ig_det, True, min_ov, t)
            tp, fp = tp + a, fp + b
        precision[k] = tp / (tp + fp) if tp + fp else 0.0
    for k in range(41):
        precision[k] = max(precision[k:])
    return sum(precision[0::4]) / 11 * 100, sum(precision[1:]) / 40 * 100


def random_frames(rng, n, noisy=True):
    types = ["Car", "Van", "Pedestrian", "Person_sitting", "Cyclist", "DontCare", "Truck"]
    frames = []
    for _ in range(n):
        gt = []
        for _ in range(rng.integers(0, 7)):
            x, y, w, h = rng.uniform(0, 300), rng.uniform(0, 100), rng.uniform(10, 120), rng.uniform(10, 90)
            gt.append((str(rng.choice(types)), (x, y, x + w, y + h), int(rng.choice(3, p=[0.6, 0.25, 0.15])), float(rng.choice([0, 0, 0.1, 0.2, 0.4, 0.8]))))
        det = []
        for t, box, _, _ in gt:
            if t != "DontCare" and rng.random() < 0.7:
                j = rng.normal(0, 4, 4)
                det.append((str(rng.choice([t, "Car"])) if noisy else t, tuple(np.array(box) + (j if noisy else j / 8)), float(rng.random())))
        for _ in range(rng.integers(0, 3)):
            x, y, h = rng.uniform(0, 300), rng.uniform(0, 100), rng.uniform(10, 80)
            det.append((str(rng.choice(types[:5])), (x, y, x + h, y + h), float(rng.random())))
        det = [(t, (b[0], b[1], max(b[2], b[0] + 1), max(b[3], b[1] + 1)), s) for t, b, s in det]
        frames.append((gt, det))
    return frames


@pytest.mark.parametrize("seed, noisy", [(0, True), (1, True), (2, False)])
def test_matches_devkit_port(seed, noisy):
    frames = random_frames(np.random.default_rng(seed), 80, noisy)
    gt = {f"{i:04d}": make_frame([t for t, *_ in g], [b for _, b, *_ in g], [o for *_, o, _ in g], [tr for *_, tr in g]) for i, (g, _) in enumerate(frames)}
    pr = {f"{i:04d}": make_frame([t for t, *_ in d], [b for _, b, _ in d], scores=[s for *_, s in d]) for i, (_, d) in enumerate(frames)}
    ours = evaluate_kitti(gt, pr, ["Car", "Pedestrian", "Cyclist"])
    for cls, ov in (("car", 0.7), ("pedestrian", 0.5), ("cyclist", 0.5)):
        for d, diff in enumerate(("easy", "moderate", "hard")):
            ap11, ap40 = devkit_ap(frames, cls, d, ov)
            got = ours.classes[cls.capitalize()][diff]
            assert got["num_gt"] > 0, (cls, diff)  # the random set must exercise every level
            assert (got["AP11"], got["AP40"]) == pytest.approx((ap11, ap40), abs=1e-9), (cls, diff)
