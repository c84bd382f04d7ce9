"""KITTI AP11/AP40 equal the official devkit's, compiled from its C++ source (tests/data/reference_tools/kitti_devkit), on
thousands of randomized frames with occlusion, truncation, DontCare regions, neighbour classes (Van,
Person_sitting), other classes, score ties, boxes at the height limits, degenerate and out-of-image
boxes, and empty frames. Both sides read the same label and prediction files."""

from __future__ import annotations

import math
from pathlib import Path

import kitti_devkit
import numpy as np
import pytest

from tlkit_detection.kitti import read_label_dir, read_prediction_dir, to_arrays
from tlkit_detection.metrics import DIFFICULTIES, evaluate_kitti

CLASSES = ("Car", "Pedestrian", "Cyclist")
W, H = 1242, 375
GT_TYPES = ["Car", "Van", "Pedestrian", "Person_sitting", "Cyclist", "DontCare", "Truck", "Misc", "Tram"]
GT_P = [0.34, 0.08, 0.15, 0.04, 0.1, 0.12, 0.07, 0.05, 0.05]
SWAPS = {
    "Car": "Van",
    "Van": "Car",
    "Pedestrian": "Person_sitting",
    "Person_sitting": "Pedestrian",
    "Cyclist": "Pedestrian",
}
LIMIT_HEIGHTS = [24.99, 25.0, 25.01, 39.99, 40.0, 40.01, 40.99, 41.0]


@pytest.fixture(scope="session")
def devkit(tmp_path_factory) -> Path:
    """The devkit's evaluate_object, built with g++ (the test skips without a compiler)."""
    exe = kitti_devkit.build(tmp_path_factory.mktemp("kitti_devkit"))
    if exe is None:
        pytest.skip("g++ is not installed: cannot build the KITTI devkit")
    return exe


def _box(rng, height=None):
    h = (
        height
        if height is not None
        else float(rng.choice([rng.uniform(12, 140), rng.choice(LIMIT_HEIGHTS)], p=[0.85, 0.15]))
    )
    w = h * rng.uniform(0.4, 2.5)
    x1, y1 = rng.uniform(-30, W - 20), rng.uniform(-10, H - 20)
    return [x1, y1, x1 + w, y1 + h]


def random_frames(rng: np.random.Generator, n: int, tie_scores: bool) -> list[tuple[list, list]]:
    """[(gt lines, detection lines)] of KITTI text, at KITTI's image size."""
    frames = []
    for _ in range(n):
        gt, dets = [], []
        for _ in range(0 if rng.random() < 0.05 else rng.integers(1, 13)):
            t = str(rng.choice(GT_TYPES, p=GT_P))
            box = _box(rng)
            if t == "DontCare":
                gt.append((t, -1.0, -1, box))
                continue
            occ = int(rng.choice(4, p=[0.5, 0.25, 0.15, 0.1]))
            trunc = float(rng.choice([0, 0, 0, 0.1, 0.15, 0.2, 0.3, 0.31, 0.45, 0.5, 0.6, 0.9]))
            gt.append((t, trunc, occ, box))
        no_dets = rng.random() < 0.05
        for t, _, _, box in [] if no_dets else gt:
            if rng.random() > (0.35 if t == "DontCare" else 0.8):
                continue
            for _ in range(1 + int(rng.random() < 0.15)):  # sometimes a duplicate
                size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
                b = np.array(box) + rng.normal(0, rng.choice([0.02, 0.08, 0.2]), 4) * size
                cls = t if t != "DontCare" else str(rng.choice(CLASSES))
                if rng.random() < 0.2:
                    cls = SWAPS.get(cls, str(rng.choice(CLASSES)))
                dets.append([cls, b])
        for _ in range(0 if no_dets else rng.integers(0, 5)):  # false positives, some tiny
            dets.append(
                [
                    str(rng.choice(CLASSES + ("Van",))),
                    np.array(_box(rng, float(rng.uniform(5, 30)) if rng.random() < 0.3 else None)),
                ]
            )
        for d in dets:
            r = rng.random()
            if r < 0.04:  # degenerate: flipped in x and/or y
                b = d[1]
                d[1] = b[[2, 1, 0, 3]] if r < 0.015 else (b[[0, 3, 2, 1]] if r < 0.03 else b[[2, 3, 0, 1]])
            elif r < 0.08:  # out of the image
                d[1] = (
                    d[1] + np.array([-1, 0, -1, 0]) * (d[1][0] + rng.uniform(1, 40))
                    if r < 0.06
                    else d[1] + [W - d[1][0] - 5, 0, W - d[1][0] - 5, 0]
                )
        scores = np.round(rng.uniform(0, 1, len(dets)), 1 if tie_scores else 6)
        frames.append((gt, [(t, b, float(s)) for (t, b), s in zip(dets, scores)]))
    return frames


def write_frames(frames, labels: Path, results: Path) -> None:
    labels.mkdir()
    results.mkdir()
    for i, (gt, dets) in enumerate(frames):
        (labels / f"{i:06d}.txt").write_text(
            "".join(
                f"{t} {trunc:.2f} {occ} -10 {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} 1.5 1.6 3.9 1.0 1.5 20.0 0.1\n"
                for t, trunc, occ, b in gt
            )
        )
        (results / f"{i:06d}.txt").write_text(
            "".join(
                f"{t} -1 -1 -10 {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} -1 -1 -1 -1000 -1000 -1000 -10 {s:.6f}\n"
                for t, b, s in dets
            )
        )


@pytest.mark.parametrize(
    "seed, n_frames, tie_scores", [(0, 600, False), (1, 600, True), (2, 400, False), (3, 40, True), (4, 1200, False)]
)
def test_ap11_ap40_equal_the_devkit(devkit, tmp_path, seed, n_frames, tie_scores):
    frames = random_frames(np.random.default_rng(seed), n_frames, tie_scores)
    labels, results = tmp_path / "label_2", tmp_path / "data"
    write_frames(frames, labels, results)
    reference = kitti_devkit.run(devkit, labels, results, n_frames, tmp_path / "out")

    gt = {k: to_arrays(v) for k, v in read_label_dir(labels).items()}
    preds, report = read_prediction_dir(results)
    assert report.detections == sum(len(d) for _, d in frames)
    assert report.counts["degenerate_box"] > 0 and report.counts["negative_coordinates"] > 0
    ours = evaluate_kitti(gt, {k: to_arrays(v) for k, v in preds.items()}, CLASSES)
    assert set(reference) == {c.lower() for c in CLASSES}, "the random set must give every class a detection"
    for cls in CLASSES:
        for d, diff in enumerate(DIFFICULTIES):
            got = ours.classes[cls][diff]
            assert got["num_gt"] > 0 or n_frames < 100, (cls, diff)
            for metric in ("AP11", "AP40"):
                want = reference[cls.lower()][metric][d]
                if got["num_gt"] == 0:  # the devkit divides by zero GT: no recall thresholds, AP 0
                    assert want == 0 and math.isnan(got[metric])
                    continue
                assert got[metric] == pytest.approx(want, abs=1e-6), (cls, diff, metric)
