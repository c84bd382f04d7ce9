"""Acceptance: quantization-aware training (train_config.enable_qat) on real data, INT8 without calibration.

Classification (sign-language-digits, 10 classes, ../shared/data):
1. Split 70/15/15 per class (`split_folder`, seed 42): QAT's recipe is chosen on val, numbers are reported
   on test. The FP32 model: TLKIT_QAT_FP32_MODEL, else issue 12's model trained on this split with
   test_classification_acceptance.py's recipe (/work/coord/artifacts/, recorded), else trained here with it.
2. QAT fine-tuning from the FP32 model (`tlkit classification train` with enable_qat) for QAT_EPOCHS at a tenth
   of the recipe's learning rate.
3. `export --data_type int8` of the QAT model (no calibration data: the learned ranges) -> Q/DQ ONNX and
   TensorRT cache; FP32 ONNX of the FP32 model; PTQ of the FP32 model for comparison (entropy calibration,
   10 batches of training images, TensorRT Q/DQ layout) -> `evaluate` each ONNX on test (onnxruntime).
4. `tensorrt convert -t int8` of the QAT export (TensorRT-RTX builds on CPU; skipped without a TensorRT).
Target: QAT INT8 top-1 within 0.5 point of FP32 on test.

DetectNet_v2 (BCCD): see test_bccd_detectnet_v2_qat_retrain below.
Everything as JSON in benchmarks/acceptance/qat.json. Long: `make acceptance` (not in the test suite).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"
SIGN = SHARED / "sign-language-digits"
OUT = Path(__file__).resolve().parent / "qat.json"
ARTIFACT = Path("/work/coord/artifacts/sign-language-efficientnet_lite0-96/model.tlk")
QAT_EPOCHS = int(os.environ.get("TLKIT_QAT_EPOCHS", "2"))
MAX_DROP = 0.005


def cli(task: str, *args) -> float:
    """Run `tlkit TASK ARGS` (the installed CLI); returns its wall time in seconds."""
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "tlkit", task, *map(str, args)], capture_output=True, text=True, check=False
    )
    assert p.returncode == 0, f"tlkit {task} {' '.join(map(str, args))}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return time.perf_counter() - t


def _module(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def save(section: str, result: dict) -> None:
    """Merge `result` under `section` into qat.json (the two acceptance runs write one file)."""
    data = json.loads(OUT.read_text()) if OUT.is_file() else {}
    data[section] = result
    OUT.write_text(json.dumps(data, indent=1) + "\n")


def trt_int8(onnx: Path, engine: Path, input_shape: list[int]) -> dict:
    """`tensorrt convert -t int8` of the QAT export: the engine header's precision, Q/DQ flag and weights bytes."""
    try:
        from tlkit_tensorrt.api import TensorRTError, load_api

        load_api()
    except (ImportError, TensorRTError) as err:
        return {"skipped": str(err)}
    c, h, w = input_shape
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "tlkit",
            "tensorrt",
            "convert",
            str(onnx),
            "-t",
            "int8",
            "-e",
            str(engine),
            "-p",
            f"input,1x{c}x{h}x{w},8x{c}x{h}x{w},16x{c}x{h}x{w}",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if p.returncode != 0:
        return {"error": p.stderr[-2000:]}
    e = json.loads(p.stdout)["engine"]
    return {k: e.get(k) for k in ("precision", "qdq", "fallbacks", "weights_bytes", "builder")}


@pytest.mark.slow
def test_sign_language_qat_int8(tmp_path):
    if not SIGN.is_dir():
        pytest.skip(f"{SIGN} not present")
    from tlkit.config import spec_to_yaml
    from tlkit_classification.dataset_convert import split_folder

    recipe = _module("test_classification_acceptance")
    split = tmp_path / "split"
    counts = split_folder(SIGN, split, (0.7, 0.15, 0.15), seed=42, link=True)
    wall: dict[str, float] = {}

    def spec_file(name: str, *extra: str) -> Path:
        f = tmp_path / f"{name}.yaml"
        f.write_text(spec_to_yaml(recipe.spec(split, f"dataset_config.test_dataset_path={split / 'test'}", *extra)))
        return f

    fp32_model = Path(os.environ["TLKIT_QAT_FP32_MODEL"]) if os.environ.get("TLKIT_QAT_FP32_MODEL") else None
    source = "TLKIT_QAT_FP32_MODEL"
    if fp32_model is None and ARTIFACT.is_file():
        fp32_model, source = ARTIFACT, "issue 12's artifact (same split, same recipe)"
    if fp32_model is None:
        wall["train_fp32"] = cli(
            "classification",
            "train",
            "-e",
            spec_file("fp32", "train_config.pretrained_model_path=imagenet"),
            "-r",
            tmp_path / "fp32",
        )
        fp32_model, source = tmp_path / "fp32" / "weights" / "model.tlk", "trained here"

    lr = recipe.spec(split).train_config.lr_config.learning_rate / 10
    qat_spec = spec_file(
        "qat",
        f"train_config.pretrained_model_path={fp32_model}",
        "train_config.enable_qat=true",
        f"train_config.n_epochs={QAT_EPOCHS}",
        f"train_config.lr_config.learning_rate={lr}",
        "train_config.lr_config.warmup_epochs=0",
    )
    wall["train_qat"] = cli("classification", "train", "-e", qat_spec, "-r", tmp_path / "qat")
    qat_model = tmp_path / "qat" / "weights" / "model.tlk"
    qat_val = json.loads((tmp_path / "qat" / "status.json").read_text().splitlines()[-1])["kpi"]

    onnx = {
        "fp32": tmp_path / "fp32.onnx",
        "qat_int8": tmp_path / "qat_int8.onnx",
        "ptq_int8": tmp_path / "ptq_int8.onnx",
    }
    eval_spec = spec_file("eval")
    wall["export_fp32"] = cli("classification", "export", "-m", fp32_model, "-o", onnx["fp32"])
    wall["export_qat_int8"] = cli(
        "classification",
        "export",
        "-m",
        qat_model,
        "-o",
        onnx["qat_int8"],
        "--data_type",
        "int8",
        "--cal_cache_file",
        tmp_path / "qat_cal.bin",
        "--cal_json_file",
        tmp_path / "qat_cal.json",
    )
    cal = tmp_path / "cal.h5"
    wall["calibration_tensorfile"] = cli(
        "classification",
        "calibration_tensorfile",
        "-e",
        eval_spec,
        "-r",
        tmp_path / "cal",
        "-m",
        fp32_model,
        "-o",
        cal,
        "--max_batches",
        10,
    )
    wall["export_ptq_int8"] = cli(
        "classification",
        "export",
        "-m",
        fp32_model,
        "-o",
        onnx["ptq_int8"],
        "--data_type",
        "int8",
        "--cal_data_file",
        cal,
        "--batches",
        10,
        "--cal_cache_file",
        tmp_path / "ptq_cal.bin",
    )
    evals = {}
    for name, path in onnx.items():  # eval_data_path: dataset_config.test_dataset_path
        wall[f"evaluate_{name}"] = cli(
            "classification", "evaluate", "-e", eval_spec, "-r", tmp_path / f"eval_{name}", "-m", path
        )
        evals[name] = json.loads((tmp_path / f"eval_{name}" / "evaluation.json").read_text())
    drop = {n: evals["fp32"]["accuracy"] - evals[n]["accuracy"] for n in ("qat_int8", "ptq_int8")}
    from tlkit.model_io import read_meta

    result = {
        "dataset": "sign-language-digits (10 classes)",
        "split": {s: sum(c.values()) for s, c in counts.items()},
        "fp32_model": {"path": str(fp32_model), "source": source},
        "qat": {
            "epochs": QAT_EPOCHS,
            "learning_rate": lr,
            "from": "the FP32 model (fine-tune)",
            "validation_top1_mxnet_fake_quant": qat_val.get("validation_accuracy"),
            "meta": read_meta(qat_model)["qat"],
            "scales_in_cache": len((tmp_path / "qat_cal.bin").read_text().splitlines()) - 1,
        },
        "test": {n: {"top1": e["accuracy"], "loss": e["loss"], "n_images": e["n_images"]} for n, e in evals.items()},
        "top1_drop_points": {n: 100 * d for n, d in drop.items()},
        "onnx_mb": {n: p.stat().st_size / 2**20 for n, p in onnx.items()},
        "tensorrt_int8_from_qat": trt_int8(
            onnx["qat_int8"], tmp_path / "qat_int8.engine", read_meta(qat_model)["input_shape"]
        ),
        "wall_s": wall,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_end": os.getloadavg()},
        "target": {"max_drop_points": 100 * MAX_DROP, "met": drop["qat_int8"] <= MAX_DROP + 1e-9},
    }
    save("classification_sign_language", result)
    print(json.dumps({k: result[k] for k in ("test", "top1_drop_points", "tensorrt_int8_from_qat")}, indent=1))
    assert {e["n_images"] for e in evals.values()} == {result["split"]["test"]}
    assert drop["qat_int8"] <= MAX_DROP + 1e-9, f"QAT int8 is {100 * drop['qat_int8']:.2f} points below FP32 on test"


# -- DetectNet_v2 on BCCD: QAT retraining of the pruned model ------------------------------------------------

BCCD = SHARED / "bccd-voc"
DET_MAX_DROP = 0.01


def _det_eval(cfg, model: Path, work: Path, name: str) -> dict:
    from tlkit.context import CommandContext
    from tlkit_detection.evaluate import run as eval_run

    r = eval_run(
        CommandContext(
            task="detection", command="evaluate", spec=cfg, model=model, results_dir=work / f"eval_{name}", options={}
        )
    )
    return {
        "mAP@0.5": r.kpi["mean average precision"] / 100,
        "AP@0.5": {k: v / 100 for k, v in r.metrics["average_precision"].items()},
    }


@pytest.mark.slow
def test_bccd_detectnet_v2_qat_retrain(tmp_path):
    """TLT's recipe on BCCD (the detection acceptance's data, split and recipes, examples/detection/bccd_*.yaml):
    train, prune 4x (the detection acceptance's allocation), then retrain the pruned graph twice with the
    retraining recipe, in FP32 and with enable_qat (TLKIT_QAT_DET_MODEL / _PRUNED / _FP32 / _QAT reuse the model
    files of earlier runs). Reported on the official test split: the FP32 retrain (MXNet), the QAT model exported
    INT8 without calibration (onnxruntime), and the FP32 retrain's PTQ INT8.
    Target: QAT INT8 mAP@0.5 within 1 point of the FP32 retrain."""
    if not BCCD.is_dir():
        pytest.skip(f"{BCCD} not present")
    from rich.console import Console

    from tlkit.context import CommandContext
    from tlkit.export.command import run as export_run
    from tlkit.model_io import read_meta
    from tlkit.pruning.command import prune_model_file
    from tlkit_detection.calibration import run as cal_run
    from tlkit_detection.train import run as train_run

    det = _module("test_detection_acceptance")
    console = Console(highlight=False, width=120)
    manifests = det.bccd_records(tmp_path)
    wall: dict[str, float] = {}

    def train(name: str, cfg) -> Path:
        t = time.time()
        out = train_run(
            CommandContext(
                task="detection", command="train", spec=cfg, results_dir=tmp_path / name, gpus=0, console=console
            )
        )
        wall[f"train_{name}"] = round(time.time() - t, 1)
        return Path(out["model"])

    # TLKIT_QAT_DET_*: model files from earlier runs of this recipe, each skipping the step that makes it. MODEL: an
    # unpruned model; PRUNED / FP32: the detection acceptance's pruned model and FP32 retrain of that unpruned model
    # (retraining is deterministic: the same recipe gives the same weights); QAT: a QAT retrain, to redo the exports
    reused = {name: os.environ.get(f"TLKIT_QAT_DET_{name}") for name in ("MODEL", "PRUNED", "FP32", "QAT")}

    def reuse_or(name: str, make) -> Path:
        return Path(reused[name]) if reused[name] else make()

    def prune() -> Path:
        out = tmp_path / "pruned.tlk"
        prune_model_file(unpruned, out, target_ratio=det.PRUNE_TARGET, min_filters=8, allocation=det.ALLOCATION)
        return out

    base_cfg = det.recipe(det.RECIPE, manifests["trainval"], manifests["test"])
    unpruned = reuse_or("MODEL", lambda: train("unpruned", base_cfg))
    pruned = reuse_or("PRUNED", prune)

    def retrain_cfg(*extra: str):
        return det.recipe(
            det.RETRAIN_RECIPE,
            manifests["trainval"],
            manifests["test"],
            f"train_config.pretrained_model_path={pruned}",
            f"train_config.distillation.teacher={unpruned}",  # the recipe's teacher: the unpruned model
            *extra,
        )

    fp32_cfg = retrain_cfg()
    fp32_model = reuse_or("FP32", lambda: train("retrain_fp32", fp32_cfg))
    qat_model = reuse_or("QAT", lambda: train("retrain_qat", retrain_cfg("train_config.enable_qat=true")))

    onnx = {n: tmp_path / f"{n}.onnx" for n in ("fp32", "qat_int8", "ptq_int8")}
    export_run(CommandContext(task="detection", command="export", model=fp32_model, output=onnx["fp32"]))
    export_run(
        CommandContext(
            task="detection",
            command="export",
            model=qat_model,
            output=onnx["qat_int8"],
            options={"data_type": "int8", "cal_cache_file": tmp_path / "qat_cal.bin"},
        )
    )
    cal = tmp_path / "cal.h5"
    cal_run(
        CommandContext(
            task="detection",
            command="calibration_tensorfile",
            spec=fp32_cfg,
            model=fp32_model,
            output=cal,
            options={"max_batches": 10},
        )
    )
    export_run(
        CommandContext(
            task="detection",
            command="export",
            model=fp32_model,
            output=onnx["ptq_int8"],
            options={
                "data_type": "int8",
                "cal_data_file": cal,
                "batches": 10,
                "cal_cache_file": tmp_path / "ptq_cal.bin",
            },
        )
    )
    scores = {
        "fp32_retrain_mxnet": _det_eval(fp32_cfg, fp32_model, tmp_path, "fp32_tlk"),
        "qat_retrain_mxnet_fake_quant": _det_eval(fp32_cfg, qat_model, tmp_path, "qat_tlk"),
    }
    scores.update({n: _det_eval(fp32_cfg, p, tmp_path, n) for n, p in onnx.items()})
    ref = scores["fp32_retrain_mxnet"]["mAP@0.5"]
    drop = {n: 100 * (ref - s["mAP@0.5"]) for n, s in scores.items()}
    result = {
        "dataset": "BCCD (Pascal VOC): official split, trained on trainval, reported on test",
        "recipe": {
            "files": [str(p.relative_to(ROOT)) for p in (det.RECIPE, det.RETRAIN_RECIPE)],
            "input": list(det.input_size(fp32_cfg)),
            "unpruned": str(unpruned) if reused["MODEL"] else f"trained here, {base_cfg.train_config.n_epochs} epochs",
            "prune_target_ratio": det.PRUNE_TARGET,
            "allocation": det.ALLOCATION,
            "pruning_ratio": read_meta(pruned)["pruning"]["pruning_ratio"],  # prune's report, kept in the file
            "reused": {"pruned": reused["PRUNED"], "fp32_retrain": reused["FP32"], "qat_retrain": reused["QAT"]},
            "retrain_epochs": fp32_cfg.train_config.n_epochs,
            "qat": "train_config.enable_qat during the pruned model's retraining (TLT)",
        },
        "qat_meta": read_meta(qat_model)["qat"],
        "test": scores,
        "drop_vs_fp32_retrain_points": drop,
        "tensorrt_int8_from_qat": trt_int8(
            onnx["qat_int8"], tmp_path / "qat_int8.engine", read_meta(qat_model)["input_shape"]
        ),
        "wall_s": wall,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average_end": os.getloadavg()},
        "target": {"max_drop_points": 100 * DET_MAX_DROP, "met": drop["qat_int8"] <= 100 * DET_MAX_DROP + 1e-9},
    }
    save("detection_bccd_detectnet_v2", result)
    print(
        json.dumps({k: result[k] for k in ("test", "drop_vs_fp32_retrain_points", "tensorrt_int8_from_qat")}, indent=1)
    )
    assert drop["qat_int8"] <= 100 * DET_MAX_DROP + 1e-9, f"QAT int8 mAP is {drop['qat_int8']:.2f} points below FP32"
