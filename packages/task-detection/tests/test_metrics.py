"""AP against hand-computed cases: TLT's per-class AP and the KITTI devkit rules."""

import math

import numpy as np
import pytest

from tlkit_detection.kitti import make_frame
from tlkit_detection.metrics import (
    BoxFilter,
    average_precision,
    box_iou,
    evaluate_ap,
    evaluate_kitti,
    format_ap_table,
    pretty_table,
    save_pr_curves,
)

G1, G2 = [0, 0, 100, 100], [200, 0, 300, 100]


def test_box_iou():
    assert box_iou(np.array([G1]), np.array([[50, 0, 150, 100]]))[0, 0] == pytest.approx(50 * 100 / (2 * 10000 - 5000))
    assert box_iou(np.array([[5, 5, 5, 5]]), np.array([[5, 5, 5, 5]]))[0, 0] == 0.0


def _three_preds():
    # p1 0.9 exact on g1 (TP), p2 0.8 on nothing (FP), p3 0.7 exact on g2 (TP), p4 0.6 duplicate on g1 (FP)
    gt = {"a": make_frame(["car", "car"], [G1, G2])}
    pr = {"a": make_frame(["car"] * 4, [G1, [400, 0, 500, 100], G2, G1], scores=[0.9, 0.8, 0.7, 0.6])}
    return gt, pr


def test_sample_and_integrate_ap_by_hand():
    gt, pr = _three_preds()
    r = evaluate_ap(gt, pr, ["car"], 0.5, mode="sample")
    c = r.classes["car"]
    assert c.num_gt == 2 and c.num_pred == 4
    assert c.precision == pytest.approx([1, 1 / 2, 2 / 3, 2 / 4])
    assert c.recall == pytest.approx([0.5, 0.5, 1, 1])
    # 11-point: recall >= 0..0.5 (6 points) -> max precision 1; recall >= 0.6..1.0 (5 points) -> 2/3
    assert c.ap == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)
    # VOC2010 all-point area from recall 0: 0.5 * 1 + 0.5 * 2/3
    voc = evaluate_ap(gt, pr, ["car"], 0.5, mode="integrate", matching="voc")
    assert voc.classes["car"].ap == pytest.approx(0.5 + 0.5 * 2 / 3) and voc.matching == "voc"
    # TLT's integration: recall levels 0.5 and 1; only the step 0.5 -> 1, at the best precision at recall 0.5
    assert evaluate_ap(gt, pr, ["car"], 0.5, mode="integrate").classes["car"].ap == pytest.approx(0.5)
    assert r.mean_ap == c.ap


def test_per_class_iou_thresholds():
    gt = {"a": make_frame(["car", "ped"], [G1, G2])}
    shifted = [[25, 0, 125, 100], [225, 0, 325, 100]]  # IoU 75/125 = 0.6 with each
    pr = {"a": make_frame(["car", "ped"], shifted, scores=[0.9, 0.9])}
    r = evaluate_ap(gt, pr, ["car", "ped"], {"car": 0.7, "ped": 0.5})
    assert r.classes["car"].ap == 0.0 and r.classes["ped"].ap == pytest.approx(1.0)
    assert r.mean_ap == pytest.approx(0.5)


def test_box_filter_is_a_hard_filter_on_both_sides():
    small = [0, 0, 10, 10]
    gt = {"a": make_frame(["car", "car"], [G1, small])}
    # missing the small GT costs recall without the filter; with it, both the GT and a small FP disappear
    pr = {"a": make_frame(["car", "car"], [G1, [300, 300, 310, 310]], scores=[0.9, 0.95])}
    plain = evaluate_ap(gt, pr, ["car"]).classes["car"]
    assert plain.num_gt == 2 and plain.ap < 1
    filtered = evaluate_ap(gt, pr, ["car"], box_filters={"car": BoxFilter(minimum_height=20)}).classes["car"]
    assert filtered.num_gt == 1 and filtered.num_pred == 1 and filtered.ap == pytest.approx(1.0)


def test_frames_without_predictions_and_classes_without_gt():
    gt = {"a": make_frame(["car"], [G1]), "b": make_frame(["car"], [G2])}
    pr = {"a": make_frame(["car", "bus"], [G1, G2], scores=[0.9, 0.5])}
    r = evaluate_ap(gt, pr, ["car", "bus"])
    assert r.classes["car"].recall[-1] == 0.5
    assert r.classes["bus"].num_gt == 0 and r.classes["bus"].ap == 0.0


def test_average_precision_helpers():
    assert average_precision([], [], "sample") == 0.0
    assert average_precision([1.0], [1.0], "integrate", matching="voc") == 1.0
    # TLT's integration of a perfect detector of 2 objects: it starts at recall 1/2
    assert average_precision([1.0, 1.0], [0.5, 1.0], "integrate") == 0.5
    assert average_precision([], [], "integrate") == 0.0
    with pytest.raises(ValueError, match="SAMPLE or INTEGRATE"):
        average_precision([1.0], [1.0], "voc")
    with pytest.raises(ValueError, match="matching must be one of"):
        evaluate_ap({}, {}, ["car"], matching="coco")


def test_tlt_rounds_boxes_and_counts_pixels():
    # 10.4 -> 10 and 10.6 -> 11: in whole pixels the prediction covers 10..20 of the ground truth's 10..20
    gt = {"a": make_frame(["car"], [[10, 10, 20, 20]])}
    pr = {"a": make_frame(["car"], [[10.4, 10.4, 20.4, 20.4]], scores=[0.9])}
    assert evaluate_ap(gt, pr, ["car"], 1.0).classes["car"].ap == 1.0
    # continuous (voc): IoU (10.6 * 10.6 + ...) < 1, so it misses at threshold 0.99
    assert evaluate_ap(gt, pr, ["car"], 0.99, matching="voc").classes["car"].ap == 0.0
    # 1-pixel boxes overlap themselves fully in the pixel convention (their continuous area is 0)
    one = {"a": make_frame(["car"], [[5, 5, 5, 5]])}
    assert evaluate_ap(one, {"a": make_frame(["car"], [[5, 5, 5, 5]], scores=[1.0])}, ["car"]).classes["car"].ap == 1.0


def test_tlt_table_format():
    gt, pr = _three_preds()
    text = format_ap_table(evaluate_ap(gt, pr, ["car"]))
    assert text.splitlines()[0] == f"Mean average_precision (in %): {(6 + 10 / 3) / 11 * 100:0.4f}"
    assert "| class name | average precision (in %) |" in text
    assert "|    car     |         84.8485          |" in text
    assert pretty_table(("a", "bb"), [("x", "y")]).splitlines()[0] == "+---+----+"


def test_pr_curve_pngs(tmp_path):
    gt, pr = _three_preds()
    paths = save_pr_curves(evaluate_ap(gt, pr, ["car"]), tmp_path)
    assert [p.name for p in paths] == ["pr_curve_car.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- KITTI devkit ----------------------------------------------------------------------------------------

N = 123  # many GT boxes, so the devkit's 41 recall-sampled thresholds all exist
CAR = [10, 10, 110, 80]  # height 70: counts in every difficulty


def _kitti_set(extra_gt=None, extra_pred=None):
    gt = {f"{i:06d}": make_frame(["Car"], [CAR]) for i in range(N)}
    pr = {k: make_frame(["Car"], [CAR], scores=[0.5 + i / 1000]) for i, k in enumerate(gt)}
    if extra_gt:
        types, boxes, occ, trunc = extra_gt
        gt["000000"] = make_frame(["Car", *types], [CAR, *boxes], occluded=[0, *occ], truncated=[0, *trunc])
    if extra_pred:
        types, boxes, scores = extra_pred
        pr["000000"] = make_frame(["Car", *types], [CAR, *boxes], scores=[0.5, *scores])
    return gt, pr


def _ap(gt, pr, diff="moderate", metric="AP40"):
    return evaluate_kitti(gt, pr, ["Car"]).classes["Car"][diff][metric]


def test_kitti_perfect_and_one_false_positive():
    gt, pr = _kitti_set()
    r = evaluate_kitti(gt, pr, ["Car"]).classes["Car"]
    assert all(r[d][m] == pytest.approx(100) for d in r for m in ("AP11", "AP40"))
    assert r["easy"]["num_gt"] == N
    # one FP scoring above everything: precision at every threshold k/(k+1), envelope = N/(N+1)
    gt, pr = _kitti_set(extra_pred=(["Car"], [[300, 10, 400, 80]], [0.99]))
    assert _ap(gt, pr, "easy", "AP11") == pytest.approx(100 * N / (N + 1))
    assert _ap(gt, pr, "hard", "AP40") == pytest.approx(100 * N / (N + 1))


def test_kitti_neighbour_class_and_other_class():
    box = [[300, 10, 400, 80]]
    # a car detection on a Van is neither TP nor FP
    gt, pr = _kitti_set(extra_gt=(["Van"], box, [0], [0]), extra_pred=(["Car"], box, [0.99]))
    assert _ap(gt, pr) == pytest.approx(100)
    # on a Truck it is a false positive
    gt, pr = _kitti_set(extra_gt=(["Truck"], box, [0], [0]), extra_pred=(["Car"], box, [0.99]))
    assert _ap(gt, pr) == pytest.approx(100 * N / (N + 1))


def test_kitti_frames_without_detections_count_as_misses():
    gt, pr = _kitti_set()
    del pr["000000"]
    pr["000001"] = make_frame([], [])
    # two of 123 GT missed; precision stays 1, and the devkit's 41 thresholds still reach recall 121/123
    r = evaluate_kitti(gt, pr, ["Car"]).classes["Car"]["moderate"]
    assert r["num_gt"] == N and r["AP40"] == pytest.approx(100)
    gt = {"a": make_frame(["Car"], [CAR])}
    assert evaluate_kitti(gt, {}, ["Car"]).classes["Car"]["easy"]["AP11"] == 0.0


def test_kitti_dontcare_absorbs_detections():
    box = [[300, 10, 400, 80]]
    gt, pr = _kitti_set(extra_gt=(["DontCare"], [[290, 0, 420, 90]], [-1], [-1]), extra_pred=(["Car"], box, [0.99]))
    assert _ap(gt, pr) == pytest.approx(100)


def test_kitti_difficulty_levels():
    # every frame also has an undetected car 30 px tall with occlusion 1: too small for easy (40 px),
    # counted in moderate and hard, where recall stops at 0.5 -> precision 1 at recall positions 0..20 only:
    # AP40 = 20/40, AP11 = 6/11 (positions 0, 4, ..., 20)
    gt = {f"{i:06d}": make_frame(["Car", "Car"], [CAR, [300, 10, 400, 40]], occluded=[0, 1]) for i in range(N)}
    pr = {k: make_frame(["Car"], [CAR], scores=[0.5 + i / 1000]) for i, k in enumerate(gt)}
    r = evaluate_kitti(gt, pr, ["Car"]).classes["Car"]
    assert r["easy"]["num_gt"] == N and r["easy"]["AP40"] == pytest.approx(100)
    assert r["moderate"]["num_gt"] == 2 * N and r["hard"]["num_gt"] == 2 * N
    assert r["moderate"]["AP40"] == pytest.approx(50) and r["hard"]["AP11"] == pytest.approx(600 / 11)
    # truncation 0.4: only hard (max 0.15 / 0.3 / 0.5)
    gt, pr = _kitti_set(extra_gt=(["Car"], [[300, 10, 400, 80]], [0], [0.4]))
    r = evaluate_kitti(gt, pr, ["Car"]).classes["Car"]
    assert (r["easy"]["num_gt"], r["moderate"]["num_gt"], r["hard"]["num_gt"]) == (N, N, N + 1)


def test_kitti_small_detections_are_ignored():
    # an unmatched detection 20 px tall: below every min height -> not a false positive
    gt, pr = _kitti_set(extra_pred=(["Car"], [[300, 10, 400, 30]], [0.99]))
    assert _ap(gt, pr, "hard") == pytest.approx(100)
    # 30 px tall: ignored for easy (40) but a false positive for moderate (25)
    gt, pr = _kitti_set(extra_pred=(["Car"], [[300, 10, 400, 40]], [0.99]))
    assert _ap(gt, pr, "easy") == pytest.approx(100)
    assert _ap(gt, pr, "moderate") == pytest.approx(100 * N / (N + 1))


def test_kitti_single_gt_follows_the_devkit_sampling():
    # one GT, one exact detection: the devkit puts its only threshold at recall position 0, so AP11 sees it
    # once (1/11) and AP40 (positions 1..40) not at all
    gt = {"a": make_frame(["Car"], [CAR])}
    pr = {"a": make_frame(["Car"], [CAR], scores=[0.9])}
    r = evaluate_kitti(gt, pr, ["Car"]).classes["Car"]["easy"]
    assert r["AP11"] == pytest.approx(100 / 11) and r["AP40"] == 0.0
    none = evaluate_kitti(gt, pr, ["Pedestrian"]).classes["Pedestrian"]["easy"]
    assert none["num_gt"] == 0 and math.isnan(none["AP40"])
