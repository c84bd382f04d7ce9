"""Acceptance: INT8 (Q/DQ) beside FP32 on real photos (sign-language-digits, ../shared/data), through the CLI.

1. The split and the fine-tuning recipe of test_classification_acceptance.py (stratified 80/20, seed 42;
   EfficientNet-Lite0 at 96 px from ImageNet weights), trained with `tlkit classification train`.
2. `tlkit classification calibration_tensorfile` (training preprocessing, augmentation off; CAL_BATCHES
   batches of 32 training images) -> `export --data_type fp32` and `export --data_type int8 --cal_data_file`
   (entropy calibration, also writing the TensorRT cache) in both Q/DQ layouts: `--qdq_format tensorrt` (symmetric
   int8 activations, what TensorRT builds) and `--qdq_format onnxruntime` (uint8 activations, what onnxruntime's
   x86 kernels fuse) -> `evaluate -m X.onnx` for each on the held-out 20 %. Target: top-1 drop <= 1 point (both).
3. onnxruntime CPU latency of the three files at batch 1 and 16, one intra-op thread each (CPU time per call:
   steadier than wall time on a shared machine), and what onnxruntime made of the Q/DQ graph (op counts of
   its optimized model: QLinearConv = fused int8 conv, Conv = float conv between DequantizeLinear/QuantizeLinear).
4. Everything as JSON in benchmarks/acceptance/export.json.

Long (~10 CPU minutes, mostly the fine-tuning): `make acceptance`. TLKIT_EXPORT_MODEL=path/to/model.tlk
skips the training and uses that model (recorded in the JSON); TLKIT_ACCEPT_CAL_BATCHES changes the calibration.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "sign-language-digits"
OUT = Path(__file__).resolve().parent / "export.json"
CAL_BATCHES = int(os.environ.get("TLKIT_ACCEPT_CAL_BATCHES", "10"))
CAL_METHOD = "entropy"  # TensorRT's default (EntropyCalibration2)
MAX_DROP = 0.01


def cli(*args) -> float:
    """Run `tlkit classification ARGS` (the installed CLI); returns its wall time in seconds."""
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "tlkit", "classification", *map(str, args)], capture_output=True, text=True, check=False
    )
    assert p.returncode == 0, f"tlkit classification {' '.join(map(str, args))}:\n{p.stdout}\n{p.stderr}"
    return time.perf_counter() - t


def latency(path: Path, batch: int, iters: int) -> dict:
    """Median CPU and wall ms per onnxruntime call, one intra-op thread; plus the optimized graph's op counts."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(path.with_suffix(".optimized.onnx"))
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape[1:]
    x = np.random.default_rng(0).normal(0, 1, (batch, *shape)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"input": x})
    cpu, wall = [], []
    for _ in range(iters):
        t, c = time.perf_counter(), time.process_time()
        sess.run(None, {"input": x})
        cpu.append((time.process_time() - c) * 1e3)
        wall.append((time.perf_counter() - t) * 1e3)
    ops = collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node)
    return {"cpu_ms": float(np.median(cpu)), "wall_ms": float(np.median(wall)), "optimized_ops": dict(ops)}


def _classification_recipe():
    """(EPOCHS, SIZE, spec) of the classification acceptance: the same recipe, not a copy that drifts."""
    import importlib.util

    path = Path(__file__).with_name("test_classification_acceptance.py")
    mod_spec = importlib.util.spec_from_file_location("tlkit_classification_acceptance", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.EPOCHS, mod.SIZE, mod.spec


@pytest.mark.slow
def test_int8_beside_fp32(tmp_path):
    if not DATA.is_dir():
        pytest.skip(f"{DATA} not present")
    from tlkit.config import spec_to_yaml
    from tlkit_classification.dataset_convert import split_folder

    EPOCHS, SIZE, spec = _classification_recipe()
    split = tmp_path / "split"
    counts = split_folder(DATA, split, (0.8, 0.2, 0.0), seed=42, link=True)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_to_yaml(spec(split, "train_config.pretrained_model_path=imagenet")))
    wall: dict[str, float] = {}
    model = os.environ.get("TLKIT_EXPORT_MODEL")
    if model:
        model = Path(model)
    else:
        wall["train"] = cli("train", "-e", spec_file, "-r", tmp_path / "train")
        model = tmp_path / "train" / "weights" / "model_best.tlk"
    cal, cache = tmp_path / "cal.h5", tmp_path / "cal.bin"
    wall["calibration_tensorfile"] = cli(
        "calibration_tensorfile",
        "-e",
        spec_file,
        "-r",
        tmp_path / "cal",
        "-m",
        model,
        "-o",
        cal,
        "--max_batches",
        CAL_BATCHES,
    )
    onnx = {p: tmp_path / f"{p}.onnx" for p in ("fp32", "int8", "int8_onnxruntime")}
    wall["export_fp32"] = cli("export", "-m", model, "-o", onnx["fp32"], "--data_type", "fp32")
    for p, fmt in (("int8", "tensorrt"), ("int8_onnxruntime", "onnxruntime")):
        wall[f"export_{p}"] = cli(
            "export",
            "-m",
            model,
            "-o",
            onnx[p],
            "--data_type",
            "int8",
            "--cal_data_file",
            cal,
            "--batches",
            CAL_BATCHES,
            "--calibration_method",
            CAL_METHOD,
            "--qdq_format",
            fmt,
            "--cal_cache_file",
            cache,
        )
    evals = {}
    for p, path in onnx.items():
        wall[f"evaluate_{p}"] = cli("evaluate", "-e", spec_file, "-r", tmp_path / f"eval_{p}", "-m", path)
        evals[p] = json.loads((tmp_path / f"eval_{p}" / "evaluation.json").read_text())
    lat = {p: {f"b{b}": latency(path, b, 40 if b == 1 else 10) for b in (1, 16)} for p, path in onnx.items()}
    drop = {p: evals["fp32"]["accuracy"] - evals[p]["accuracy"] for p in ("int8", "int8_onnxruntime")}
    out = {
        "dataset": "sign-language-digits (10 classes)",
        "split": {s: sum(c.values()) for s, c in counts.items()},
        "model": {
            "arch": "efficientnet_lite0",
            "input_size": SIZE,
            "epochs": EPOCHS,
            "source": str(model) if os.environ.get("TLKIT_EXPORT_MODEL") else "fine-tuned here (CLI train)",
        },
        "calibration": {
            "method": CAL_METHOD,
            "batches": CAL_BATCHES,
            "batch_size": 32,
            "images": 32 * CAL_BATCHES,
            "source": "training split, training preprocessing, augmentation off (calibration_tensorfile)",
            "weights": "per-channel symmetric int8; 7-bit for GEMM-backed convs/FC (onnxruntime x86 "
            "without VNNI saturates at 8), 8-bit for depthwise convs",
            "activations": "per tensor, scale amax/127 (int8) or amax/255 (uint8 [0, amax]); see qdq_formats",
            "trt_cache_lines": len(cache.read_text().splitlines()) - 1,
        },
        **{p: {"top1": e["accuracy"], "loss": e["loss"], "n_images": e["n_images"]} for p, e in evals.items()},
        "qdq_formats": {
            "int8": "tensorrt: symmetric int8 activations (what TensorRT builds)",
            "int8_onnxruntime": "onnxruntime: uint8 activations, [0, amax] where never negative",
        },
        "top1_drop": drop,
        "onnx_mb": {p: path.stat().st_size / 2**20 for p, path in onnx.items()},
        "latency_onnxruntime_1_thread": {
            p: {b: {k: v for k, v in r.items() if k != "optimized_ops"} for b, r in d.items()} for p, d in lat.items()
        },
        "speedup_vs_fp32_cpu_time": {
            p: {b: lat["fp32"][b]["cpu_ms"] / lat[p][b]["cpu_ms"] for b in ("b1", "b16")}
            for p in ("int8", "int8_onnxruntime")
        },
        "onnxruntime_optimized_ops": {p: lat[p]["b1"]["optimized_ops"] for p in onnx},
        "convs_fused": {
            p: {
                "QLinearConv": lat[p]["b1"]["optimized_ops"].get("QLinearConv", 0),
                "float_Conv_left": lat[p]["b1"]["optimized_ops"].get("Conv", 0),
            }
            for p in ("int8", "int8_onnxruntime")
        },
        "wall_s": wall,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, onnxruntime {__import__('onnxruntime').__version__}",
        "load_average_at_end": os.getloadavg()[0],
        "targets": {f"{p}_top1_drop_le_1_point": d <= MAX_DROP for p, d in drop.items()},
    }
    OUT.write_text(json.dumps(out, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: out[k]
                for k in ("fp32", "int8", "int8_onnxruntime", "top1_drop", "speedup_vs_fp32_cpu_time", "convs_fused")
            },
            indent=2,
        )
    )
    assert {e["n_images"] for e in evals.values()} == {out["split"]["val"]}
    for p, d in drop.items():
        assert d <= MAX_DROP, (
            f"{p} top-1 {evals[p]['accuracy']:.4f} is {100 * d:.2f} points below fp32 {evals['fp32']['accuracy']:.4f}"
        )
