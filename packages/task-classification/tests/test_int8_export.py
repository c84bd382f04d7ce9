"""INT8 beside FP32 through the real CLI (the fast smoke version of benchmarks/acceptance/test_export_acceptance.py):
train -> calibration_tensorfile -> export --data_type fp32 / int8 --cal_data_file -> evaluate and inference of
both ONNX files. A really trained model (the ImageNet EfficientNet-Lite0 fine-tuned at 32 px on generated shapes,
100 % on its validation images): INT8 must predict like FP32 with every calibration method, on 120 images it was
neither trained nor calibrated on (the output head stays float by default: see tlkit.export.calibration)."""

import csv
import json
from pathlib import Path

import onnx
import pytest

from tlkit.testing.plugins import run_tlkit

SPEC = """\
model_config: {{arch: efficientnet_lite0, input_image_size: "3,32,32"}}
dataset_config: {{train_dataset_path: {root}/train, val_dataset_path: {root}/val}}
train_config:
  batch_size_per_gpu: 16
  n_workers: 1
  n_epochs: 6
  pretrained_model_path: imagenet
  optimizer: {{type: adam}}
  lr_config: {{type: constant, learning_rate: 0.001}}
"""


def cli(*args):
    p = run_tlkit(["classification", *map(str, args)])
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def shapes30(tmp_path_factory):
    """Generated shapes, 30 per class to train on (enough for a model that separates them well), 4 to validate."""
    from tlkit_classification.demo_data import make_shapes_dataset

    root = tmp_path_factory.mktemp("shapes30")
    make_shapes_dataset(root / "train", 30, 32, seed=0)
    make_shapes_dataset(root / "val", 4, 32, seed=1)
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory, shapes30):
    shapes = shapes30
    d = tmp_path_factory.mktemp("int8")
    spec = d / "spec.yaml"
    spec.write_text(SPEC.format(root=shapes))
    cli("train", "-e", spec, "-r", d / "train")
    model = d / "train" / "weights" / "model.tlk"
    cli("calibration_tensorfile", "-e", spec, "-m", model, "-o", d / "cal.h5", "--max_batches", -1)
    cli("export", "-m", model, "-o", d / "fp32.onnx", "--data_type", "fp32")
    cli(
        "export",
        "-m",
        model,
        "-o",
        d / "int8.onnx",
        "--data_type",
        "int8",
        "--cal_data_file",
        d / "cal.h5",
        "--cal_cache_file",
        d / "cal.bin",
    )
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


@pytest.fixture(scope="module")
def agreement_images(tmp_path_factory):
    """120 shapes (40 per class) from another seed: neither trained nor calibrated on."""
    from tlkit_classification.demo_data import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("agree") / "images", 40, 32, seed=7)


def _labels(d, model, images):
    cli("inference", "-r", d, "-m", model, "-d", images)
    (path,) = list(d.glob("*.csv"))
    return {r["path"]: r["label"] for r in csv.DictReader(path.read_text().splitlines())}


@pytest.mark.parametrize("method", ["entropy", "max", "percentile"])
def test_int8_agrees_with_fp32_for_every_calibration_method(exported, agreement_images, method, tmp_path):
    d = exported["dir"]
    q = tmp_path / f"{method}.onnx"
    cli(
        "export",
        "-m",
        d / "train" / "weights" / "model.tlk",
        "-o",
        q,
        "--data_type",
        "int8",
        "--cal_data_file",
        d / "cal.h5",
        "--calibration_method",
        method,
    )
    fp32 = _labels(tmp_path / "fp32", d / "fp32.onnx", agreement_images)
    int8 = _labels(tmp_path / "int8", q, agreement_images)
    assert len(fp32) == 120 and fp32.keys() == int8.keys()
    truth = {p: Path(p).parent.name for p in fp32}
    assert sum(fp32[p] == truth[p] for p in fp32) >= 0.66 * 120  # a trained model (chance: 1/3), not a constant one
    agree = sum(fp32[p] == int8[p] for p in fp32) / 120
    assert agree >= 0.98, f"{method}: int8 agrees with fp32 on {agree:.1%} of the images"
