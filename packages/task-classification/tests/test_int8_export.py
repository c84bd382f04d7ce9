"""INT8 beside FP32 through the real CLI (the fast smoke version of benchmarks/acceptance/test_export_acceptance.py):
train -> calibration_tensorfile -> export --data_type fp32 / int8 --cal_data_file -> evaluate and inference of
both ONNX files. resnet10 at 32 px on generated shapes: the check is that the Q/DQ model runs through the same
evaluate/inference path and predicts like the FP32 model, not the accuracy itself."""

import csv
import json

import onnx
import pytest
from tlkit.testing.plugins import run_tlkit

SPEC = """\
model_config: {{arch: resnet, n_layers: 10, input_image_size: "3,32,32"}}
dataset_config: {{train_dataset_path: {root}/train, val_dataset_path: {root}/val}}
train_config:
  batch_size_per_gpu: 8
  n_workers: 1
  n_epochs: 4
  lr_config: {{type: constant, learning_rate: 0.01}}
"""


def cli(*args):
    p = run_tlkit(["classification", *map(str, args)])
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shapes):
    d = tmp_path_factory.mktemp("int8")
    spec = d / "spec.yaml"
    spec.write_text(SPEC.format(root=shapes))
    cli("train", "-e", spec, "-r", d / "train")
    model = d / "train" / "weights" / "model.tlk"
    cli("calibration_tensorfile", "-e", spec, "-m", model, "-o", d / "cal.h5", "--max_batches", 3)
    cli("export", "-m", model, "-o", d / "fp32.onnx", "--data_type", "fp32")
    cli("export", "-m", model, "-o", d / "int8.onnx", "--data_type", "int8", "--cal_data_file", d / "cal.h5",
        "--cal_cache_file", d / "cal.bin")
    out = {"dir": d}
    for p in ("fp32", "int8"):
        cli("evaluate", "-e", spec, "-r", d / f"eval_{p}", "-m", d / f"{p}.onnx")
        out[p] = json.loads((d / f"eval_{p}" / "evaluation.json").read_text())
        cli("inference", "-r", d / f"infer_{p}", "-m", d / f"{p}.onnx", "-d", shapes / "val")
        csvs = list((d / f"infer_{p}").glob("*.csv"))
        assert len(csvs) == 1, csvs
        out[f"{p}_rows"] = {r["path"]: r["label"] for r in csv.DictReader(csvs[0].read_text().splitlines())}
    return out


def test_int8_export_is_qdq_with_a_trt_cache(exported):
    d = exported["dir"]
    ops = {n.op_type for n in onnx.load(str(d / "int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    lines = (d / "cal.bin").read_text().splitlines()
    assert lines[0].startswith("TRT-") and lines[0].endswith("-EntropyCalibration2") and len(lines) > 10


def test_int8_evaluates_like_fp32(exported):
    fp32, int8 = exported["fp32"], exported["int8"]
    assert fp32["n_images"] == int8["n_images"] == 12
    assert abs(fp32["accuracy"] - int8["accuracy"]) <= 2 / 12  # at most two of the 12 images flip


def test_int8_inference_agrees_with_fp32_on_most_images(exported):
    a, b = exported["fp32_rows"], exported["int8_rows"]
    assert sorted(a) == sorted(b) and len(a) == 12
    agree = sum(a[k] == b[k] for k in a)
    assert agree >= 10, f"int8 and fp32 predictions agree on only {agree}/12 images"
