"""Shared preprocessing, DeepStream nvinfer configs and Triton model repositories."""

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from tlkit.errors import ModelFileError, SpecError
from tlkit.export.deploy import write_deepstream_config, write_triton_repo
from tlkit.export.onnx_export import export_onnx, read_onnx_metadata
from tlkit.export.preprocess import (
    from_deepstream,
    normalize,
    preprocess,
    preprocessing_params,
    to_deepstream,
)
from tlkit.testing.export import parse_triton_config, read_deepstream_config

SHAPE = (3, 32, 32)
CLASSES = ["cat", "dog", "bird"]


# -- preprocessing ----------------------------------------------------------------------------------


def test_normalize_modes():
    px = np.array([[[10.0, 20.0, 30.0]]], np.float32)  # one RGB pixel
    caffe = normalize(px, "caffe")
    np.testing.assert_allclose(caffe[0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68], rtol=1e-6)  # BGR
    torch = normalize(px, "torch")
    np.testing.assert_allclose(
        torch[0, 0], (np.array([10, 20, 30]) / 255 - [0.485, 0.456, 0.406]) / np.array([0.229, 0.224, 0.225]), rtol=1e-5
    )
    np.testing.assert_allclose(normalize(px, "tf")[0, 0], [10 / 127.5 - 1, 20 / 127.5 - 1, 30 / 127.5 - 1], rtol=1e-6)
    # a custom mean is given in RGB order and reordered for caffe's BGR
    np.testing.assert_allclose(normalize(px, "caffe", mean=[1, 2, 3])[0, 0], [27, 18, 9])
    batch = np.stack([px, px])  # NHWC works too
    assert normalize(batch, "tf").shape == (2, 1, 1, 3)
    with pytest.raises(SpecError, match="preprocessing mode 'yolo'"):
        normalize(px, "yolo")


def test_preprocess_resizes_and_lays_out_nchw():
    meta = {"input_shape": [3, 8, 16], "preprocessing": {"mode": "tf"}}
    img = np.full((20, 30, 3), [255, 0, 127.5], np.float32).astype(np.uint8)
    batch = preprocess([img, img[:10]], meta)
    assert batch.shape == (2, 3, 8, 16) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, 4, 8], [1.0, -1.0, 127 / 127.5 - 1], atol=1e-6)
    gray = preprocess([img], {"input_shape": [1, 8, 8], "preprocessing": {"mode": "caffe"}})
    assert gray.shape == (1, 1, 8, 8)
    with pytest.raises(SpecError, match="expected an HxWx3 RGB"):
        preprocess([np.zeros((4, 4, 5), np.uint8)], meta)


def test_deepstream_mapping_round_trips():
    for mode in ("caffe", "tf"):
        p = preprocessing_params(mode)
        ds = to_deepstream(p)
        assert ds["exact"]
        back = from_deepstream(ds["net-scale-factor"], ds["offsets"], ds["model-color-format"])
        assert back["channel_order"] == p["channel_order"]
        np.testing.assert_allclose(back["mean"], p["mean"])
        np.testing.assert_allclose(back["std"], p["std"])
        px = np.random.RandomState(0).uniform(0, 255, (4, 4, 3))
        from tlkit.export.preprocess import normalize_with

        np.testing.assert_allclose(normalize_with(px, back), normalize(px, mode), rtol=1e-5, atol=1e-5)
    ds = to_deepstream(preprocessing_params("caffe"))
    assert ds["net-scale-factor"] == 1.0 and ds["model-color-format"] == 1
    assert ds["offsets"] == [103.939, 116.779, 123.68]
    torch = to_deepstream(preprocessing_params("torch"))  # one scale cannot hold 3 stds
    assert not torch["exact"] and 0.01 < torch["max_rel_error"] < 0.03
    with pytest.raises(SpecError, match="model-color-format 5"):
        from_deepstream(1.0, [0, 0, 0], 5)


# -- exported model fixtures --------------------------------------------------------------------------


def tiny_net():
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(len(CLASSES)))
    net.initialize(mx.init.Xavier())
    return net


@pytest.fixture(scope="module")
def classifier_onnx(tmp_path_factory):
    meta = {
        "task": "classification",
        "arch": "tiny",
        "classes": CLASSES,
        "input_shape": list(SHAPE),
        "preprocessing": {"mode": "caffe"},
    }
    return export_onnx(tiny_net(), tmp_path_factory.mktemp("cls") / "cls.onnx", meta=meta)


# -- DeepStream -----------------------------------------------------------------------------------------


def test_deepstream_classifier_config_is_complete(classifier_onnx, tmp_path):
    cfg = write_deepstream_config(classifier_onnx, None, tmp_path, batch_size=4)
    p = read_deepstream_config(cfg)["property"]
    assert float(p["net-scale-factor"]) == 1.0
    assert p["offsets"] == "103.939;116.779;123.68"
    assert p["model-color-format"] == "1"  # BGR (caffe)
    assert p["infer-dims"] == "3;32;32"
    assert p["network-type"] == "1" and p["num-detected-classes"] == "3"
    assert p["output-blob-names"] == "output"
    assert p["batch-size"] == "4" and p["network-mode"] == "0"
    assert p["model-engine-file"] == "cls.onnx_b4_gpu0_fp32.engine"
    assert (tmp_path / p["onnx-file"]).resolve() == classifier_onnx.resolve()
    assert (tmp_path / p["labelfile-path"]).read_text() == "cat;dog;bird\n"  # classifier labels: one line
    assert "int8-calib-file" not in p


def test_deepstream_detector_config_from_task_meta(tmp_path):
    net = tiny_net()
    meta = {
        "task": "detection",
        "classes": ["car", "person"],
        "input_shape": list(SHAPE),
        "preprocessing": {"mode": "tf"},
        "output_names": ["output_cov"],
        "deepstream": {
            "properties": {"cluster-mode": 3, "parse-bbox-func-name": "NvDsInferParseCustom"},
            "class_attrs_all": {"pre-cluster-threshold": 0.3},
            "class_attrs": {"1": {"pre-cluster-threshold": 0.6, "topk": 20}},
        },
    }
    onnx_path = export_onnx(net, tmp_path / "det.onnx", meta=meta)
    cal = tmp_path / "cal.bin"
    cal.write_text("TRT-10000-EntropyCalibration2\n")
    cfg = write_deepstream_config(onnx_path, None, tmp_path / "ds", data_type="int8", int8_calib_file=cal)
    cp = read_deepstream_config(cfg)
    p = cp["property"]
    assert p["network-type"] == "0" and p["num-detected-classes"] == "2"
    assert p["cluster-mode"] == "3" and p["parse-bbox-func-name"] == "NvDsInferParseCustom"
    assert p["network-mode"] == "1"
    assert (tmp_path / "ds" / p["int8-calib-file"]).resolve() == cal.resolve()
    assert float(p["net-scale-factor"]) == pytest.approx(1 / 127.5) and p["offsets"] == "127.5;127.5;127.5"
    assert p["model-color-format"] == "0"
    assert (tmp_path / "ds" / p["labelfile-path"]).read_text() == "car\nperson\n"
    assert float(cp["class-attrs-all"]["pre-cluster-threshold"]) == 0.3
    assert cp["class-attrs-all"]["nms-iou-threshold"] == "0.5"
    assert cp["class-attrs-1"]["pre-cluster-threshold"] == "0.6" and cp["class-attrs-1"]["topk"] == "20"


def test_deepstream_torch_mode_notes_the_approximation(tmp_path):
    meta = {"task": "pose", "input_shape": list(SHAPE), "preprocessing": {"mode": "torch"}}
    onnx_path = export_onnx(tiny_net(), tmp_path / "p.onnx", meta=meta)
    cfg = write_deepstream_config(onnx_path, None, tmp_path)
    text = cfg.read_text()
    assert "approximates per-channel std" in text
    p = read_deepstream_config(cfg)["property"]
    assert p["network-type"] == "100" and p["output-tensor-meta"] == "1"
    assert float(p["net-scale-factor"]) == pytest.approx(1 / np.mean([58.395, 57.12, 57.375]))
    with pytest.raises(SpecError, match="data_type 'int4'"):
        write_deepstream_config(onnx_path, None, tmp_path, data_type="int4")


# -- Triton ---------------------------------------------------------------------------------------------


def parse_config(path):
    pytest.importorskip("tritonclient")
    return parse_triton_config(path)  # Triton's own ModelConfig proto: unknown fields or bad syntax raise


def test_triton_onnx_repo_matches_the_model(classifier_onnx, tmp_path):
    cfg_path = write_triton_repo(classifier_onnx, None, tmp_path / "repo", "tiny_cls", max_batch_size=8)
    cfg = parse_config(cfg_path)
    md = read_onnx_metadata(classifier_onnx)
    cls = type(cfg)
    assert cfg.name == "tiny_cls" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 8
    assert [i.name for i in cfg.input] == ["input"]
    inp = cfg.input[0]
    assert inp.data_type == 11 and list(inp.dims) == md["input_shape"]  # TYPE_FP32, batch dim left out
    assert (
        cls.DESCRIPTOR.fields_by_name["input"]
        .message_type.enum_types_by_name["Format"]
        .values_by_number[inp.format]
        .name
        == "FORMAT_NCHW"
    )
    assert [o.name for o in cfg.output] == md["output_names"] == ["output"]
    assert list(cfg.output[0].dims) == [len(CLASSES)] and cfg.output[0].data_type == 11
    assert cfg.output[0].label_filename == "labels.txt"
    assert (tmp_path / "repo" / "tiny_cls" / "labels.txt").read_text() == "cat\ndog\nbird\n"
    assert list(cfg.dynamic_batching.preferred_batch_size) == [1, 4, 8]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 100
    assert len(cfg.instance_group) == 1 and cfg.instance_group[0].count == 1 and cfg.instance_group[0].kind == 1
    model_file = tmp_path / "repo" / "tiny_cls" / "1" / "model.onnx"
    assert model_file.read_bytes() == classifier_onnx.read_bytes()


def test_triton_static_batch_and_plan(tmp_path):
    meta = {"task": "classification", "classes": CLASSES, "input_shape": list(SHAPE)}
    static = export_onnx(tiny_net(), tmp_path / "s.onnx", meta=meta, static_batch_size=2)
    cfg = parse_config(write_triton_repo(static, None, tmp_path / "repo", "s", instance_kind="KIND_CPU"))
    assert cfg.max_batch_size == 0 and list(cfg.input[0].dims) == [2, *SHAPE]
    assert list(cfg.output[0].dims) == [2, len(CLASSES)]
    assert not cfg.HasField("dynamic_batching") and cfg.instance_group[0].kind == 2
    # a TensorRT plan carries no metadata: the ONNX's metadata describes it
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"engine bytes")
    dyn = export_onnx(tiny_net(), tmp_path / "d.onnx", meta=meta)
    cfg = parse_config(write_triton_repo(plan, read_onnx_metadata(dyn), tmp_path / "repo", "trt"))
    assert cfg.platform == "tensorrt_plan" and cfg.max_batch_size == 16
    assert list(cfg.input[0].dims) == list(SHAPE) and list(cfg.output[0].dims) == [len(CLASSES)]
    assert (tmp_path / "repo" / "trt" / "1" / "model.plan").read_bytes() == b"engine bytes"
    with pytest.raises(SpecError, match="carries no tlkit metadata"):
        write_triton_repo(plan, None, tmp_path / "repo", "x")
    # a tlkit engine file: Triton gets the bare plan, the model metadata comes from its header
    from tlkit.export.engine_file import write_engine

    engine = write_engine(tmp_path / "m.engine", {"model": read_onnx_metadata(dyn)}, b"serialized plan")
    cfg = parse_config(write_triton_repo(engine, None, tmp_path / "repo", "eng"))
    assert cfg.platform == "tensorrt_plan" and list(cfg.input[0].dims) == list(SHAPE)
    assert (tmp_path / "repo" / "eng" / "1" / "model.plan").read_bytes() == b"serialized plan"
    torchscript = tmp_path / "m.pt"
    torchscript.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="take .onnx or TensorRT"):
        write_triton_repo(torchscript, meta, tmp_path / "repo", "x")


def test_resolve_preprocessing_keeps_task_keys():
    from tlkit.export.preprocess import resolve_preprocessing

    pre = resolve_preprocessing({"input_shape": [3, 8, 8], "preprocessing": {"mode": "tf", "center_crop": True}})
    assert pre["center_crop"] is True and pre["channel_order"] == "RGB" and pre["mean"] == [127.5] * 3
    gray = resolve_preprocessing({"input_shape": [1, 8, 8], "preprocessing": {"mode": "caffe", "mean": {"l": 100}}})
    assert gray["channel_order"] == "GRAY" and gray["mean"] == [100.0]


def test_deepstream_for_qdq_onnx_uses_explicit_quantization(tmp_path):
    meta = {"task": "classification", "classes": CLASSES, "input_shape": list(SHAPE)}
    x = np.random.RandomState(0).uniform(0, 1, (2, *SHAPE)).astype(np.float32)
    q = export_onnx(
        tiny_net(),
        tmp_path / "q.onnx",
        meta=meta,
        data_type="int8",
        cal_batches=[x],
        calibration_method="max",
        cal_cache_file=tmp_path / "cal.bin",
    )
    cfg = write_deepstream_config(q, None, tmp_path, int8_calib_file=tmp_path / "cal.bin")
    p = read_deepstream_config(cfg)["property"]
    assert p["network-mode"] == "1" and "int8-calib-file" not in p
    assert "explicit quantization" in cfg.read_text()


def test_preprocess_center_crop_keeps_the_middle():
    import cv2

    # a horizontal ramp, 40 x 80: the short side goes to 28 / 0.875 = 32 (so 32 x 64), middle 28 x 28 kept
    img = np.repeat(np.repeat((np.arange(80) * 3).astype(np.uint8)[None, :, None], 40, 0), 3, 2)
    meta = {"input_shape": [3, 28, 28], "preprocessing": {"mode": "tf", "center_crop": True}}
    crop = preprocess([img], meta)[0]
    expected = cv2.resize(img, (64, 32), interpolation=cv2.INTER_LINEAR)[2:30, 18:46]
    np.testing.assert_allclose(crop, expected.transpose(2, 0, 1) / 127.5 - 1, atol=1e-6)
    assert crop[0, 0, 0] > -0.6  # the left edge is cut off: no near-black column
    plain = preprocess([img], {**meta, "preprocessing": {"mode": "tf"}})[0]
    assert plain[0, 0, 0] < -0.9  # a plain resize keeps the dark left edge
