"""`tlkit detection evaluate --predictions DIR --labels DIR`: scores prediction files with no model."""

import json

import pytest

from tlkit.config import load_spec
from tlkit.context import CommandContext
from tlkit.errors import DataError, TlkitError
from tlkit.testing.plugins import run_tlkit
from tlkit_detection.config import DetectionConfig
from tlkit_detection.evaluate import run

GT = {
    "000001": ["Car 0 0 0 0 0 100 100 0 0 0 0 0 0 0", "car 0 0 0 200 0 300 100 0 0 0 0 0 0 0", "DontCare -1 -1 0 400 0 450 50 0 0 0 0 0 0 0"],
    "000002": ["Pedestrian 0 0 0 10 10 40 90 0 0 0 0 0 0 0"],
}
PRED = {
    # p 0.9 TP, 0.8 FP, 0.7 TP, 0.6 duplicate -> car AP (11-point) = (6 + 5 * 2/3) / 11
    "000001": ["Car 0 0 0 0 0 100 100 0 0 0 0 0 0 0 0.9", "Car 0 0 0 600 0 700 100 0 0 0 0 0 0 0 0.8",
               "Car 0 0 0 200 0 300 100 0 0 0 0 0 0 0 0.7", "Car 0 0 0 0 0 100 100 0 0 0 0 0 0 0 0.6"],
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
    preds, labels = write_dirs(tmp_path) if not (tmp_path / "labels").exists() else (tmp_path / "preds", tmp_path / "labels")
    options = {"predictions": preds, "labels": labels, "kitti_difficulty": kw.pop("kitti", False)}
    return CommandContext(task="detection", command="evaluate", spec=spec, options=options, **kw)


def test_scores_and_writes_results(tmp_path):
    c = ctx(tmp_path, results_dir=tmp_path / "r")
    with c.console.capture() as cap:
        out = run(c)
    text = cap.get()
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


def test_spec_thresholds_mapping_and_kitti(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "dataset_config:\n  target_class_mapping: {car: vehicle, pedestrian: person}\n"
        "evaluation_config:\n  minimum_detection_ground_truth_overlap: {vehicle: 0.7}\n  average_precision_mode: INTEGRATE\n"
    )
    spec = load_spec(spec_file, DetectionConfig)
    out = run(ctx(tmp_path, spec=spec, kitti=True))
    assert list(out["average_precision"]) == ["vehicle"]  # only the classes given thresholds
    assert out["average_precision"]["vehicle"] == pytest.approx((0.5 + 0.5 * 2 / 3) * 100)
    assert out["average_precision_mode"] == "INTEGRATE"
    # KITTI runs on the raw label types: 'vehicle' matches nothing there
    assert out["kitti"]["vehicle"]["easy"]["num_gt"] == 0


def test_kitti_difficulty_on_raw_classes(tmp_path):
    out = run(ctx(tmp_path, spec=DetectionConfig(), kitti=True))
    assert out["kitti"]["car"]["easy"]["num_gt"] == 2 and out["kitti"]["pedestrian"]["moderate"]["num_gt"] == 1


def test_model_evaluation_needs_a_spec(tmp_path):
    with pytest.raises(TlkitError, match="give the experiment spec with -e"):
        run(ctx(tmp_path, model=tmp_path / "m.tlk"))
    with pytest.raises(TlkitError, match="give --predictions DIR and --labels DIR"):
        run(CommandContext(task="detection", command="evaluate", options={}))


def test_bad_prediction_file(tmp_path):
    c = ctx(tmp_path)
    (tmp_path / "preds" / "000002.txt").write_text("Pedestrian 0 0 0 10 10 40 90 0 0 0 0 0 0 0\n")
    with pytest.raises(DataError, match=r"000002.txt: object 1 \(Pedestrian\) has no score"):
        run(c)


def test_cli_evaluate(tmp_path):
    preds, labels = write_dirs(tmp_path)
    r = run_tlkit(["detection", "evaluate", "--predictions", str(preds), "-l", str(labels), "-r", str(tmp_path / "r")])
    assert r.returncode == 0, r.stderr
    assert "| class name | average precision (in %) |" in r.stdout and "|    car     |" in r.stdout
    assert (tmp_path / "r" / "evaluation.json").is_file()
    r = run_tlkit(["detection", "evaluate", "-m", "x.tlk"])
    assert r.returncode != 0 and "x.tlk: model file not found" in r.stdout + r.stderr
