"""The demo's smoke run (--quick): every stage runs and the report's numbers hang together."""

import csv
import json

import pytest


def test_demo_quick(tmp_path, make_ctx):
    from tlkit_classification.demo import run

    out = run(make_ctx("demo", results_dir=tmp_path, quick=True))
    assert out["report"].endswith("report.md")
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["classes"] == ["brick", "galaxy", "grass", "gravel", "moon", "tissue"]
    assert s["n"] == {"train": 60, "val": 24, "test": 24}
    fine, pruned = s["models"]
    assert pruned["params"] <= 0.3 * fine["params"]  # compress's target ratio (one step in --quick)
    # the demo's compress recipe: the same fraction of every layer, retrained at a quarter of the fine-tuning rate
    state = json.loads((tmp_path / "compress" / "compress.json").read_text())
    assert state["prune_options"]["allocation"] == "uniform"
    assert "lr_scale: 0.25" in (tmp_path / "spec_compress.yaml").read_text()
    steps = s["compress"]["per_step"]
    assert [st["step"] for st in steps] == [0, 1] and steps[1]["params"] == pruned["params"]
    # the step reports validation accuracy right after pruning, after BN re-estimation and after retraining
    for k in ("kpi_after_prune", "kpi_after_bn", "kpi_value"):  # accuracies over the 24 validation images
        assert steps[1][k] * 24 == pytest.approx(round(steps[1][k] * 24)), (k, steps[1][k])
    for m in (fine, pruned):
        # onnxruntime and MXNet agree on the test split (one near-tie may flip in a barely trained model)
        assert abs(m["onnx_accuracy"] - m["accuracy"]) <= 1 / 24 + 1e-9
        assert m["mxnet_ms"] > 0 and m["ort_ms"] > 0 and m["onnx_size_mb"] > 0
    rows = list(csv.DictReader((tmp_path / "result.csv").read_text().splitlines()))
    assert len(rows) == 24 and {r["label"] for r in rows} <= set(s["classes"])
    report = (tmp_path / "report.md").read_text()
    assert f"{fine['params']:,}" in report and f"{pruned['params']:,}" in report
    assert "Compress steps" in report and "after BN" in report
    for png in (
        "summary.png",
        "finetune/training_curves.png",
        "compress/test_eval/confusion_matrix.png",
        "compress/compress.png",
        "compress/step_1/retrain/training_curves.png",
    ):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG", png
