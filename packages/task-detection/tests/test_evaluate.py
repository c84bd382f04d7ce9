"""`tlkit detection evaluate --predictions DIR --labels DIR`: scores prediction files with no model."""

import json

import pytest

from tlkit.config import load_spec
from tlkit.errors import DataError, TlkitError
from tlkit.testing import make_context
from tlkit.testing.plugins import run_tlkit
from tlkit_detection.config import DetectionConfig
from tlkit_detection.evaluate import run

GT = {
    "000001": [
        "Car 0 0 0 0 0 100 100 0 0 0 0 0 0 0",
        "car 0 0 0 200 0 300 100 0 0 0 0 0 0 0",
        "DontCare -1 -1 0 400 0 450 50 0 0 0 0 0 0 0",
    ],
    "000002": ["Pedestrian 0 0 0 10 10 40 90 0 0 0 0 0 0 0"],
}
PRED = {
    # p 0.9 TP, 0.8 FP, 0.7 TP, 0.6 duplicate -> car AP (11-point) = (6 + 5 * 2/3) / 11
    "000001": [
        "Car 0 0 0 0 0 100 100 0 0 0 0 0 0 0 0.9",
        "Car 0 0 0 600 0 700 100 0 0 0 0 0 0 0 0.8",
        "Car 0 0 0 200 0 300 100 0 0 0 0 0 0 0 0.7",
        "Car 0 0 0 0 0 100 100 0 0 0 0 0 0 0 0.6",
    ],
    "000002": ["Pedestrian 0 0 0 10 10 40 90 0 0 0 0 0 0 0 0.5"],
    "000003": ["Car 0 0 0 0 0 10 10 0 0 0 0 0 0 0 0.5"],
}


def write_dirs(tmp_path):
    for name, files in (("labels", GT), ("preds", PRED)):
        d = tmp_path / name
        d.mkdir()
        for k, lines in files.items():
            (d / f"{k}.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "preds", tmp_path / "labels"


def ctx(tmp_path, spec=None, **kw):
    preds, labels = (
        write_dirs(tmp_path) if not (tmp_path / "labels").exists() else (tmp_path / "preds", tmp_path / "labels")
    )
    options = {"predictions": preds, "labels": labels, "kitti_difficulty": kw.pop("kitti", False)}
    return make_context("detection", "evaluate", spec=spec, options=options, **kw)


def test_scores_and_writes_results(tmp_path):
    c = ctx(tmp_path, results_dir=tmp_path / "r")
    with c.console.capture() as cap:
        res = run(c)
    out, text = res.metrics, cap.get()
    car = (6 + 5 * 2 / 3) / 11 * 100
    assert out["average_precision"] == pytest.approx({"car": car, "pedestrian": 100.0})
    assert out["mean_average_precision"] == pytest.approx((car + 100) / 2)
    assert f"Mean average_precision (in %): {(car + 100) / 2:0.4f}" in text
    assert "1 prediction files have no label file and are ignored" in text
    saved = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    assert saved["num_ground_truth"] == {"car": 2, "pedestrian": 1}
    assert sorted(p.name for p in (tmp_path / "r").glob("*.png")) == ["pr_curve_car.png", "pr_curve_pedestrian.png"]
    status = json.loads((tmp_path / "r" / "status.json").read_text().splitlines()[-1])
    assert status["status"] == "SUCCESS" and status["kpi"]["mean average precision"] == pytest.approx((car + 100) / 2)
    assert status["categorical"]["average_precision"]["pedestrian"] == pytest.approx(100)
    assert res.kpi == status["kpi"] and saved == out  # evaluate's one result shape
    written = ("evaluation.json", "pr_curve_car.png", "pr_curve_pedestrian.png")
    assert res.artifacts == {n: str(tmp_path / "r" / n) for n in written}


def test_spec_thresholds_mapping_and_kitti(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "dataset_config:\n  target_class_mapping: {car: vehicle, pedestrian: person}\n"
        "evaluation_config:\n  minimum_detection_ground_truth_overlap: {vehicle: 0.7}\n  average_precision_mode: INTEGRATE\n"
    )
    spec = load_spec(spec_file, DetectionConfig)
    out = run(ctx(tmp_path, spec=spec, kitti=True)).metrics
    assert list(out["average_precision"]) == ["vehicle"]  # only the classes given thresholds
    # TLT's INTEGRATE: recall levels 0.5 and 1, one step of 0.5 at precision 1
    assert out["average_precision"]["vehicle"] == pytest.approx(50.0)
    assert out["average_precision_mode"] == "INTEGRATE"
    # KITTI runs on the raw label types: 'vehicle' matches nothing there
    assert out["kitti"]["vehicle"]["easy"]["num_gt"] == 0


def test_kitti_difficulty_on_raw_classes(tmp_path):
    out = run(ctx(tmp_path, spec=DetectionConfig(), kitti=True)).metrics
    assert out["kitti"]["car"]["easy"]["num_gt"] == 2 and out["kitti"]["pedestrian"]["moderate"]["num_gt"] == 1


def test_model_evaluation_needs_a_spec(tmp_path):
    with pytest.raises(TlkitError, match="give the experiment spec with -e"):
        run(ctx(tmp_path, model=tmp_path / "m.tlk"))
    with pytest.raises(TlkitError, match="give --predictions DIR and --labels DIR"):
        run(make_context("detection", "evaluate"))


def test_prediction_files_from_other_tools_are_scored_with_their_problems_reported(tmp_path):
    c = ctx(tmp_path, kitti=True)
    (tmp_path / "preds" / "000002.txt").write_text(
        "Pedestrian 0 0 0 10 10 40 90 0 0 0 0 0 0 0 0.5 0.25 extra\n"  # extra fields: the first 16 count
        "Pedestrian 0 0 0 10 10 40 90 0 0 0 0 0 0 0\n"  # no score: skipped
        "Car 0 0 0 50 90 10 10 0 0 0 0 0 0 0 0.99\n"  # degenerate: scored, overlaps nothing (a car FP)
        "Car 0 0 0 -5 -3 10 10 0 0 0 0 0 0 0 0.1\n"  # reaches outside the image: scored as given
        "Car 0 0 0 1 2 x 4 0 0 0 0 0 0 0 0.3\n"  # not a number: skipped
        "Car 0 0 0 1 2 3\n"  # too short: skipped
        "Car 0 0 0 1 2 inf 4 0 0 0 0 0 0 0 0.3\n"  # not finite: skipped
    )
    with c.console.capture() as cap:
        out = run(c).metrics
    text = " ".join(cap.get().split())
    problems = out["prediction_files"]["problems"]
    assert problems == {
        "too_few_fields": 1,
        "no_score": 1,
        "extra_fields": 1,
        "not_a_number": 1,
        "not_finite": 1,
        "degenerate_box": 1,
        "negative_coordinates": 1,
    }
    assert out["prediction_files"]["examples"]["degenerate_box"] == [f"{tmp_path / 'preds' / '000002.txt'}:3"]
    # the KITTI devkit scores the degenerate car (80 px tall as |y2 - y1|) as a false positive above every TP:
    # 2 GT -> thresholds 0.9 and 0.7, precision 1/2 and 2/4 (1 and 2/3 if it were ignored); AP11 = p[0] / 11
    assert out["kitti"]["car"]["easy"]["num_gt"] == 2 and out["kitti"]["car"]["easy"]["AP11"] == pytest.approx(50 / 11)
    assert "1 degenerate boxes, x2 < x1 or y2 < y1 (kept: they match nothing), e.g. " in text and "000002.txt:3" in text
    assert out["average_precision"]["pedestrian"] == pytest.approx(100.0)
    # TLT's default evaluation_box_config (sizes >= 0) drops the degenerate car; the one outside the image is
    # a false positive ranked last, after recall 1: AP unchanged
    assert out["num_predictions"]["car"] == 5 and out["average_precision"]["car"] == pytest.approx(
        (6 + 5 * 2 / 3) / 11 * 100
    )
    # under the VOC devkit's rules nothing is filtered: the degenerate car is a false positive ranked first
    voc = run(ctx(tmp_path, spec=DetectionConfig.model_validate({"evaluation_config": {"matching": "voc"}}))).metrics
    assert voc["num_predictions"]["car"] == 6 and voc["average_precision"]["car"] == pytest.approx(
        (1 / 2 * 6 + 2 / 4 * 5) / 11 * 100
    )


def test_prediction_files_without_any_usable_detection_are_an_error(tmp_path):
    c = ctx(tmp_path)
    for p in (tmp_path / "preds").glob("*.txt"):  # label files (15 fields) given as predictions
        p.write_text("Car 0 0 0 0 0 100 100 0 0 0 0 0 0 0\n")
    with pytest.raises(
        DataError, match=r"no usable detection in 3 prediction file\(s\): 3 lines with 15 fields, no score"
    ):
        run(c)


def test_matching_convention_and_coco_metrics(tmp_path):
    spec = DetectionConfig.model_validate(
        {"evaluation_config": {"matching": "voc", "average_precision_mode": "INTEGRATE"}}
    )
    out = run(ctx(tmp_path, spec=spec)).metrics
    assert out["matching"] == "voc" and out["average_precision_mode"] == "INTEGRATE"
    assert out["average_precision"]["car"] == pytest.approx((0.5 + 0.5 * 2 / 3) * 100)  # VOC2010 all-point
    coco = out["coco"]
    assert set(coco) == {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "per_class_AP"}
    # boxes equal to the ground truth (IoU 1 at every threshold), ranked TP FP TP FP for car: COCO's 101-point
    # interpolated precision is 1 up to recall 0.5 (51 points) and 2/3 above (50 points)
    car = (51 + 50 * 2 / 3) / 101 * 100
    assert coco["per_class_AP"] == pytest.approx({"car": car, "pedestrian": 100.0})
    assert coco["AP"] == pytest.approx((car + 100) / 2) and coco["AP50"] == coco["AP75"] == pytest.approx(coco["AP"])
    assert coco["AP_small"] is None  # no ground truth below 32x32 px
    off = DetectionConfig.model_validate({"evaluation_config": {"coco_metrics": False}})
    off = run(ctx(tmp_path, spec=off)).metrics
    assert "coco" not in off


def test_cli_evaluate(tmp_path):
    preds, labels = write_dirs(tmp_path)
    r = run_tlkit(["detection", "evaluate", "--predictions", str(preds), "-l", str(labels), "-r", str(tmp_path / "r")])
    assert r.returncode == 0, r.stderr
    assert "| class name | average precision (in %) |" in r.stdout and "|    car     |" in r.stdout
    assert (tmp_path / "r" / "evaluation.json").is_file()
    r = run_tlkit(["detection", "evaluate", "-m", "x.tlk"])  # the CLI's default spec names no data
    assert r.returncode != 0 and "give the experiment spec with -e" in r.stderr
    r = run_tlkit(["detection", "evaluate", "-m", "x.tlk", "dataset_config.validation_fold=0"])
    assert r.returncode != 0 and "x.tlk: model file not found" in r.stdout + r.stderr
