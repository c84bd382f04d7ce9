"""A tiny end-to-end run of the commands as the CLI calls them: train -> evaluate -> inference ->
calibration_tensorfile -> prune -> retrain (load_graph) -> evaluate -> export ONNX -> evaluate the ONNX.

resnet10 from scratch at 32 px on 36 generated images, 2 epochs: a smoke run, so the checks are about
consistency between stages (same data -> same numbers), files and formats, not about accuracy.
"""

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from tiny_recipe import ctx, spec

from tlkit.model_io import load_model, read_meta


def n_params(path):
    return sum(int(np.prod(v.shape)) for v in load_model(path).params.values())


@pytest.fixture(scope="module")
def run(tmp_path_factory, shapes):
    """The chain, run once; returns {stage: outputs}."""
    from tlkit.export.command import run as export_run
    from tlkit.pruning.command import run as prune_run
    from tlkit_classification import calibration, evaluate, inference, train

    r = tmp_path_factory.mktemp("workflow")
    cfg = spec(shapes)
    out = {"root": r, "cfg": cfg}
    out["train"] = train.run(ctx("train", cfg, results_dir=r / "train"))
    model = Path(out["train"]["model"])
    out["eval"] = evaluate.run(ctx("evaluate", cfg, results_dir=r / "eval", model=model))
    out["infer"] = inference.run(
        ctx(
            "inference",
            None,
            results_dir=r / "infer",
            model=model,
            options={"image_dir": shapes / "val", "batch_size": 5, "top_k": 2},
        )
    )
    out["calib"] = calibration.run(
        ctx("calibration_tensorfile", cfg, model=model, output=r / "cal.tensorfile", options={"max_batches": 2})
    )
    prune_run(
        ctx(
            "prune",
            results_dir=r,
            model=model,
            output=r / "pruned.tlk",
            options={"target_ratio": 0.5, "pruning_granularity": 8, "min_num_filters": 8},
        )
    )
    cfg2 = spec(shapes, f"train_config.pretrained_model_path={r / 'pruned.tlk'}", "train_config.load_graph=true")
    out["retrain"] = train.run(ctx("train", cfg2, results_dir=r / "retrain"))
    retrained = Path(out["retrain"]["model"])
    out["eval2"] = evaluate.run(ctx("evaluate", cfg, results_dir=r / "eval2", model=retrained))
    export_run(ctx("export", results_dir=r, model=retrained, output=r / "model.onnx"))
    out["eval_onnx"] = evaluate.run(ctx("evaluate", cfg, results_dir=r / "eval_onnx", model=r / "model.onnx"))
    return out


def test_train_outputs(run):
    r = run["root"] / "train"
    assert json.loads((r / "classmap.json").read_text()) == {"circle": 0, "square": 1, "triangle": 2}
    assert "model_config:" in (r / "experiment_spec.yaml").read_text()
    meta = read_meta(r / "weights" / "model.tlk")
    assert meta["task"] == "classification" and meta["classes"] == ["circle", "square", "triangle"]
    assert meta["input_shape"] == [3, 32, 32] and meta["preprocessing"]["channel_order"] == "RGB"  # resnet: torch
    status = [json.loads(line) for line in (r / "status.json").read_text().splitlines()]
    assert status[-1]["status"] == "SUCCESS"
    accuracy = run["train"]["validation_accuracy"]
    assert status[-1]["kpi"]["validation_accuracy"] == pytest.approx(accuracy)
    assert accuracy * 12 == pytest.approx(round(accuracy * 12))  # a fraction of the 12 validation images


def test_evaluate_reproduces_training_validation(run):
    # same images, same deterministic pipeline, same weights: the same accuracy and loss
    kpi = run["eval"].kpi
    assert kpi["accuracy"] == pytest.approx(run["train"]["validation_accuracy"])
    assert kpi["loss"] == pytest.approx(run["train"]["validation_loss"], rel=1e-4)
    # evaluate's one result shape: the KPIs status.json has, the files written, the whole report
    status = json.loads((run["root"] / "eval" / "status.json").read_text().splitlines()[-1])
    assert status["kpi"] == pytest.approx(kpi) and set(kpi) == {"accuracy", "top_k_accuracy", "loss"}
    assert {n: Path(p).is_file() for n, p in run["eval"].artifacts.items()} == {
        "evaluation.json": True,
        "evaluation.txt": True,
        "confusion_matrix.png": True,
    }
    e = json.loads((run["root"] / "eval" / "evaluation.json").read_text())
    assert run["eval"].metrics["confusion_matrix"] == e["confusion_matrix"]
    cm = np.array(e["confusion_matrix"])
    assert cm.shape == (3, 3) and cm.sum() == 12 and list(cm.sum(axis=1)) == [4, 4, 4]
    assert e["accuracy"] == pytest.approx(np.trace(cm) / 12)
    assert e["top_k"] == 3 and e["top_k_accuracy"] == 1.0  # top-5 capped at 3 classes
    assert set(e["per_class"]) == {"circle", "square", "triangle"}
    assert (run["root"] / "eval" / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    assert "Evaluation Top 3 accuracy" in (run["root"] / "eval" / "evaluation.txt").read_text()


def test_inference_csv_agrees_with_evaluate(run):
    rows = list(csv.DictReader(Path(run["infer"]["result_csv"]).read_text().splitlines()))
    assert len(rows) == 12 and list(rows[0]) == ["path", "label", "confidence", "label_2", "confidence_2"]
    cm = np.array(json.loads((run["root"] / "eval" / "evaluation.json").read_text())["confusion_matrix"])
    predicted = {c: sum(r["label"] == c for r in rows) for c in ("circle", "square", "triangle")}
    assert list(predicted.values()) == list(cm.sum(axis=0))  # same predictions as evaluate
    for r in rows:
        assert 1 / 3 <= float(r["confidence"]) <= 1 and float(r["confidence_2"]) <= float(r["confidence"])
        assert r["label"] != r["label_2"]


def test_calibration_tensorfile_is_tlt_format(run):
    with h5py.File(run["root"] / "cal.tensorfile", "r") as f:
        assert int(f.attrs["count"]) == 2 and tuple(f.attrs["shape"]) == (8, 3, 32, 32)
        batch = f["_tensorfile_array_key__0"]["_tensorfile_array_key_"][()]
    assert batch.dtype == np.float32 and batch.shape == (8, 3, 32, 32)
    # torch preprocessing of 0..255 pixels lies in [-2.2, 2.7]
    assert batch.min() >= -2.2 and batch.max() <= 2.7 and batch.std() > 0.1


def test_prune_and_retrain_keep_the_smaller_graph(run):
    r = run["root"]
    before, pruned = n_params(r / "train" / "weights" / "model.tlk"), n_params(r / "pruned.tlk")
    assert pruned < 0.6 * before  # target ratio 0.5, rounded to the granularity
    retrained = Path(run["retrain"]["model"])
    meta = read_meta(retrained)
    assert meta["kind"] == "graph" and meta["classes"] == ["circle", "square", "triangle"]
    from tlkit.types import ModelMeta

    assert set(meta) <= set(ModelMeta.model_fields), set(meta) - set(ModelMeta.model_fields)  # every key documented
    assert n_params(retrained) == pruned
    # the retrained graph evaluates to what its training validated (same images, pipeline and weights)
    assert run["eval2"].kpi["accuracy"] == pytest.approx(run["retrain"]["validation_accuracy"])


def test_onnx_evaluates_like_the_tlk(run):
    assert run["eval_onnx"].kpi["accuracy"] == pytest.approx(run["eval2"].kpi["accuracy"])
    assert run["eval_onnx"].kpi["loss"] == pytest.approx(run["eval2"].kpi["loss"], rel=1e-4, abs=1e-5)
    e = json.loads((run["root"] / "eval_onnx" / "evaluation.json").read_text())
    assert e["backend"] != "mxnet" and e["model"].endswith("model.onnx")


def test_qat_fine_tune_exports_int8_without_calibration(run, shapes, tmp_path):
    """TLT's enable_qat from a trained model: a QAT graph that the int8 export reproduces, evaluated as ONNX."""
    from tlkit.testing.qat import assert_qat_export_reproduces
    from tlkit_classification import evaluate, train

    model = Path(run["train"]["model"])
    cfg = spec(
        shapes, f"train_config.pretrained_model_path={model}", "train_config.enable_qat=true", "train_config.n_epochs=1"
    )
    out = train.run(ctx("train", cfg, results_dir=tmp_path / "qat"))
    meta = read_meta(out["model"])
    assert meta["kind"] == "graph" and meta["qat"]["activations_quantized"] >= 10  # every conv/dense input
    onnx = assert_qat_export_reproduces(out["model"], out_dir=tmp_path)
    ev = evaluate.run(ctx("evaluate", cfg, results_dir=tmp_path / "eval", model=onnx))
    assert ev.kpi["accuracy"] == pytest.approx(out["validation_accuracy"], abs=1 / 12 + 1e-9)  # 12 images: 1 may flip
