"""`evaluate_ap` equals the reference implementations users compare with, run on the same randomized
frames: the Pascal VOC devkit's `voc_eval.py` (matching "voc") and TLT DetectNet_v2's own
`compute_metrics.py` (matching "tlt"), both copied under tests/data/reference_tools (see its README).

The frames have several classes, crowded and overlapping boxes, duplicates, wrong-class and random
false positives, integer boxes (so IoUs hit the thresholds exactly, where >= and > differ), VOC
"difficult" objects and empty frames. Scores are distinct: both references sort with numpy's unstable
quicksort, so their order among equal scores is not defined.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tlkit_detection.kitti import make_frame
from tlkit_detection.metrics import BoxFilter, evaluate_ap

REFERENCE = Path(__file__).parent / "data" / "reference_tools"
CLASSES = ("car", "person", "dog")
# (W, s): a box W pixels wide and the same box shifted by s pixels have IoU (W - s) / (W + s)
EXACT_IOU = [np.array(p) for p in ((11, 9), (13, 7), (3, 1), (17, 3))]  # 0.1, 0.3, 0.5, 0.7


def load_reference(name: str):
    spec = importlib.util.spec_from_file_location(f"reference_{name}", REFERENCE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def random_set(rng: np.random.Generator, n_frames: int, difficult: bool = True):
    """{frame: (gt [(class, int box, difficult)], dets [(class, box, score)])} with distinct float32 scores."""
    frames = {}
    for i in range(n_frames):
        gt = []
        for _ in range(0 if rng.random() < 0.08 else rng.integers(1, 9)):
            w, h = rng.integers(4, 160, 2)
            x, y = rng.integers(0, 500), rng.integers(0, 375)
            gt.append(
                (
                    str(rng.choice(CLASSES)),
                    [int(x), int(y), int(x + w), int(y + h)],
                    bool(difficult and rng.random() < 0.15),
                )
            )
        dets = []
        if rng.random() < 0.3:  # a prediction at exactly IoU 0.1, 0.3, 0.5 or 0.7
            w_pix, shift = (int(v) for v in EXACT_IOU[int(rng.integers(len(EXACT_IOU)))] * int(rng.integers(1, 5)))
            x, y, h, c = (
                int(rng.integers(0, 400)),
                int(rng.integers(0, 300)),
                int(rng.integers(5, 80)),
                str(rng.choice(CLASSES)),
            )
            gt.append((c, [x, y, x + w_pix - 1, y + h], False))
            dets.append([c, np.array([x + shift, y, x + w_pix - 1 + shift, y + h], float)])
        for c, box, _ in gt:
            for _ in range(int(rng.choice(4, p=[0.2, 0.5, 0.2, 0.1]))):
                b = np.array(box, float)
                size = np.array([b[2] - b[0] + 1, b[3] - b[1] + 1] * 2)
                if rng.random() < 0.3:  # integer shifts: IoUs that are simple fractions
                    b = b + rng.integers(-6, 7, 4)
                else:
                    b = b + rng.normal(0, rng.choice([0.05, 0.15, 0.35]), 4) * size
                dets.append([c if rng.random() < 0.85 else str(rng.choice(CLASSES)), b])
        for _ in range(rng.integers(0, 4)):
            x, y, w, h = rng.uniform(0, 500), rng.uniform(0, 375), rng.uniform(3, 150), rng.uniform(3, 150)
            dets.append([str(rng.choice(CLASSES)), np.array([x, y, x + w, y + h])])
        frames[f"{i:05d}"] = (gt, dets)
    n = sum(len(d) for _, d in frames.values())
    scores = np.unique(rng.uniform(0, 1, 3 * n + 10).astype(np.float32))
    scores = rng.permutation(scores)[:n]
    assert scores.size == n
    k = 0
    for _, dets in frames.values():
        for d in dets:
            d.append(float(scores[k]))
            k += 1
    return frames


def tlkit_frames(frames):
    gt = {
        k: make_frame([c for c, *_ in g], [b for _, b, _ in g], difficult=[d for *_, d in g])
        for k, (g, _) in frames.items()
    }
    pr = {
        k: make_frame([c for c, *_ in d], [b for _, b, _ in d], scores=[s for *_, s in d])
        for k, (_, d) in frames.items()
    }
    return gt, pr


# -- Pascal VOC devkit (voc_eval.py) ------------------------------------------------------------------------------


def write_voc(frames, root: Path) -> tuple[str, str, Path]:
    """Annotations/<id>.xml, an image set file and one detection file per class, as voc_eval reads them."""
    (root / "Annotations").mkdir(parents=True)
    for k, (gt, _) in frames.items():
        objs = "".join(
            f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{int(d)}</difficult>"
            f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
            for c, b, d in gt
        )
        (root / "Annotations" / f"{k}.xml").write_text(f"<annotation><filename>{k}.jpg</filename>{objs}</annotation>")
    imageset = root / "test.txt"
    imageset.write_text("".join(f"{k}\n" for k in frames))
    for c in CLASSES:
        lines = [
            f"{k} {s!r} {b[0]!r} {b[1]!r} {b[2]!r} {b[3]!r}\n"
            for k, (_, dets) in frames.items()
            for t, b, s in dets
            if t == c
        ]
        (root / f"det_{c}.txt").write_text("".join(lines))
    return str(root / "det_{}.txt"), str(root / "Annotations" / "{}.xml"), imageset


@pytest.fixture(scope="module")
def voc_case(tmp_path_factory):
    frames = random_set(np.random.default_rng(7), 400)
    root = tmp_path_factory.mktemp("voc")
    return frames, write_voc(frames, root), root


@pytest.mark.parametrize("iou", [0.1, 0.3, 0.5, 0.7])
@pytest.mark.parametrize("mode, use_07_metric", [("sample", True), ("integrate", False)])
def test_voc_matching_equals_voc_eval(voc_case, iou, mode, use_07_metric):
    voc_eval = load_reference("voc_eval").voc_eval
    frames, (detpath, annopath, imageset), root = voc_case
    gt, pr = tlkit_frames(frames)
    ours = evaluate_ap(gt, pr, CLASSES, iou, mode=mode, matching="voc")
    for c in CLASSES:
        rec, prec, ap = voc_eval(
            detpath, annopath, str(imageset), c, str(root / "cache"), ovthresh=iou, use_07_metric=use_07_metric
        )
        got = ours.classes[c]
        assert got.num_gt == sum(1 for g, _ in frames.values() for t, _, d in g if t == c and not d)
        assert got.recall == pytest.approx(rec, abs=1e-12) and got.precision == pytest.approx(prec, abs=1e-12)
        assert got.ap == pytest.approx(ap, abs=1e-12), (c, iou, mode)


def test_difficult_objects_are_neutral_only_under_voc():
    # one difficult box, detected by the most confident prediction: VOC ignores it; TLT counts it as a TP
    gt = {"a": make_frame(["car", "car"], [[0, 0, 99, 99], [200, 0, 299, 99]], difficult=[True, False])}
    pr = {"a": make_frame(["car", "car"], [[0, 0, 99, 99], [200, 0, 299, 99]], scores=[0.9, 0.8])}
    voc = evaluate_ap(gt, pr, ["car"], matching="voc").classes["car"]
    tlt = evaluate_ap(gt, pr, ["car"], matching="tlt").classes["car"]
    assert (voc.num_gt, voc.ap, voc.precision.tolist()) == (1, 1.0, [0.0, 1.0])
    assert (tlt.num_gt, tlt.ap) == (2, 1.0)


# -- TLT DetectNet_v2 (compute_metrics.py) --------------------------------------------------------------------


def tlt_metrics(frames, iou: dict[str, float], mode: int, box_configs: dict[str, BoxFilter]):
    """TLT's ComputeMetrics, called as TLT's evaluator calls it (num_recall_points 11, no neutral boxes)."""
    compute_metrics = load_reference("tlt_compute_metrics")
    keys = sorted(frames)
    dets = OrderedDict(
        (c, [[SimpleNamespace(bbox=list(b), confidence=s) for t, b, s in frames[k][1] if t == c] for k in keys])
        for c in CLASSES
    )
    gts = [[SimpleNamespace(bbox=list(b), class_name=t) for t, b, _ in frames[k][0]] for k in keys]
    config = SimpleNamespace(
        minimum_detection_ground_truth_overlap=iou, average_precision_mode=mode, evaluation_box_configs=box_configs
    )
    return compute_metrics.ComputeMetrics(dets, gts, 960, 544, list(CLASSES), config)(
        num_recall_points=11, ignore_neutral_boxes=False
    )


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mode", ["sample", "integrate"])
def test_tlt_matching_equals_tlt_compute_metrics(seed, mode):
    pytest.importorskip("tqdm")  # compute_metrics.py imports it
    frames = random_set(np.random.default_rng(seed), 300, difficult=False)
    iou = {"car": 0.7, "person": 0.5, "dog": 0.3}
    filters = {
        "car": BoxFilter(),
        "person": BoxFilter(minimum_height=20, maximum_width=120),
        "dog": BoxFilter(minimum_width=10.5),
    }
    ref = tlt_metrics(frames, iou, {"sample": 0, "integrate": 1}[mode], filters)
    gt, pr = tlkit_frames(frames)
    ours = evaluate_ap(gt, pr, CLASSES, iou, mode=mode, box_filters=filters, matching="tlt")
    for c in CLASSES:
        assert ours.classes[c].ap == pytest.approx(ref["average_precisions"][c], abs=1e-12), (c, mode)
    assert ours.mean_ap == pytest.approx(ref["mAP"], abs=1e-12)


# -- COCO (pycocotools) ------------------------------------------------------------------------------------------


def pycocotools_stats(frames, root: Path) -> np.ndarray:
    """COCOeval.stats from json files written here, straight from the frames, as a user would run it."""
    import json

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keys = sorted(frames)
    images = [{"id": 100 + i, "file_name": f"{k}.jpg", "width": 640, "height": 480} for i, k in enumerate(keys)]
    cats = [{"id": 7 * (i + 1), "name": c} for i, c in enumerate(CLASSES)]  # any ids: COCO only needs them consistent
    cat_id = {c["name"]: c["id"] for c in cats}
    anns, dets = [], []
    for i, k in enumerate(keys):
        gt, pred = frames[k]
        for c, (x1, y1, x2, y2), _ in gt:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 100 + i,
                    "category_id": cat_id[c],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
        for c, (x1, y1, x2, y2), s in pred:
            dets.append(
                {
                    "image_id": 100 + i,
                    "category_id": cat_id[c],
                    "bbox": [x1, y1, max(x2 - x1, 0), max(y2 - y1, 0)],
                    "score": s,
                }
            )
    (root / "gt.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (root / "dt.json").write_text(json.dumps(dets))
    gt = COCO(str(root / "gt.json"))
    ev = COCOeval(gt, gt.loadRes(str(root / "dt.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats


def test_coco_metrics_equal_pycocotools(tmp_path):
    from tlkit_detection.metrics import COCO_METRICS, evaluate_coco

    frames = random_set(np.random.default_rng(3), 250)
    for k in list(frames)[:3]:  # a few objects large enough for COCO's "large" (> 96^2 px)
        frames[k][0].append(("dog", [10, 10, 300, 250], False))
    stats = pycocotools_stats(frames, tmp_path)
    gt, pr = tlkit_frames(frames)
    ours = evaluate_coco(gt, pr, CLASSES)
    assert [ours.metrics[m] for m in COCO_METRICS] == pytest.approx(list(stats[:6] * 100), abs=1e-9)
    assert all(v is not None and 0 < v < 100 for v in ours.per_class.values())
    assert np.mean(list(ours.per_class.values())) == pytest.approx(ours.metrics["AP"], abs=1e-9)
    # no detections at all: 0 everywhere, not an error
    none = evaluate_coco(gt, {}, CLASSES)
    assert none.metrics["AP"] == 0.0 and none.per_class["car"] == 0.0
