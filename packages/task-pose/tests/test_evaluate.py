"""COCO keypoint evaluation of results files, and the `tlkit pose evaluate` command."""

import json
from pathlib import Path

import numpy as np
import pytest

from tlkit.errors import DataError, TlkitError
from tlkit.testing import make_context
from tlkit.testing.plugins import run_tlkit
from tlkit_pose.evaluate import KPI_NAMES, evaluate_keypoints, run


def _gt_as_results(path: Path, shift: float = 0.0) -> list[dict]:
    data = json.loads(path.read_text())
    out = []
    for a in data["annotations"]:
        if a["iscrowd"] or not a["num_keypoints"]:
            continue
        k = np.array(a["keypoints"], float).reshape(17, 3)
        k[:, 0] += shift
        k[:, 2] = (k[:, 2] > 0).astype(float)
        out.append({"image_id": a["image_id"], "category_id": 1, "keypoints": k.reshape(-1).tolist(), "score": 0.9})
    return out


def test_ground_truth_scores_one_and_shifted_scores_less(synthetic_set):
    perfect = evaluate_keypoints(synthetic_set, _gt_as_results(synthetic_set))
    assert perfect["metrics"]["AP"] == pytest.approx(1.0) and perfect["metrics"]["AR"] == pytest.approx(1.0)
    assert list(perfect["kpi"]) == list(KPI_NAMES)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets= 20 ]" in perfect["summary"]
    shifted = evaluate_keypoints(synthetic_set, _gt_as_results(synthetic_set, shift=4.0))["metrics"]
    assert 0.0 < shifted["AP"] < 0.9 and shifted["AP50"] > shifted["AP75"]


def test_no_predictions_scores_zero(synthetic_set):
    r = evaluate_keypoints(synthetic_set, [])
    assert r["num_predictions"] == 0 and all(v == 0 for v in r["kpi"].values())


@pytest.mark.parametrize(
    "preds, message",
    [
        ({"a": 1}, "expected a JSON list of COCO keypoint results"),
        ([{"image_id": 1, "keypoints": [0] * 51}], "entry 0: expected an object with image_id, keypoints"),
        ([{"image_id": 1, "keypoints": [0] * 50, "score": 1}], r"entry 0 \(image_id 1\): keypoints must be 51 numbers"),
        ([{"image_id": 12345, "keypoints": [0] * 51, "score": 1}], "image_id 12345 is not in the annotations"),
    ],
)
def test_bad_predictions_are_clear_errors(tmp_path, synthetic_set, preds, message):
    p = tmp_path / "preds.json"
    p.write_text(json.dumps(preds))
    with pytest.raises(DataError, match=message):
        evaluate_keypoints(synthetic_set, p)


def test_run_writes_kpis_status_and_table(tmp_path, synthetic_set):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(_gt_as_results(synthetic_set)))
    ctx = make_context(
        "pose", "evaluate", results_dir=tmp_path / "r", options={"predictions": preds, "annotations": synthetic_set}
    )
    out = run(ctx)
    assert out.kpi["AP_0.50:0.95_all"] == pytest.approx(1.0)
    assert out.artifacts == {
        "evaluation.json": str(tmp_path / "r" / "evaluation.json"),
        "results.csv": str(tmp_path / "r" / "results.csv"),
    }  # scored a file: no detections.json
    ev = json.loads((tmp_path / "r" / "evaluation.json").read_text())
    assert ev["kpi"]["AP_0.5"] == pytest.approx(1.0) and ev["num_predictions"] == len(_gt_as_results(synthetic_set))
    lines = [json.loads(x) for x in (tmp_path / "r" / "status.json").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["STARTED", "SUCCESS"] and lines[-1]["kpi"]["AP_0.75"] == pytest.approx(1.0)
    rows = (tmp_path / "r" / "results.csv").read_text().splitlines()
    assert rows[1] == "0,AP,0.50:0.95,all,20,1.000000" and len(rows) == 11
    with pytest.raises(TlkitError, match="give --annotations"):
        run(make_context("pose", "evaluate", results_dir=tmp_path / "r", options={"predictions": preds}))


def test_cli_evaluate_and_its_error(tmp_path, synthetic_set):
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps(_gt_as_results(synthetic_set, shift=2.0)))
    r = run_tlkit(
        ["pose", "evaluate", "--predictions", str(preds), "-a", str(synthetic_set), "-r", str(tmp_path / "r")]
    )
    assert r.returncode == 0, r.stderr
    assert "Average Recall     (AR) @[ IoU=0.50      | area=   all | maxDets= 20 ]" in r.stdout
    r = run_tlkit(
        [
            "pose",
            "evaluate",
            "--predictions",
            str(tmp_path / "missing.json"),
            "-a",
            str(synthetic_set),
            "-r",
            str(tmp_path / "r"),
        ]
    )
    assert r.returncode != 0 and "missing.json: predictions file not found" in (r.stdout + r.stderr)
    assert "Traceback" not in r.stderr


def test_broken_annotations_are_skipped_and_reported_not_a_crash(tmp_path, synthetic_set):
    data = json.loads(synthetic_set.read_text())
    data["annotations"].append({**data["annotations"][0], "id": 9999, "keypoints": [1, 2, 2] * 16})  # 48 numbers
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    r = evaluate_keypoints(bad, _gt_as_results(synthetic_set))
    assert r["metrics"]["AP"] == pytest.approx(1.0)
    assert len(r["label_problems"]) == 1 and "keypoints is not a list of 51 numbers" in r["label_problems"][0]
    assert "(id 9999)" in r["label_problems"][0]
