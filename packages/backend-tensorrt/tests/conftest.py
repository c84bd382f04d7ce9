"""Shared fixtures: small ONNX models exported with core's exporter (32 px, random weights), and the
TensorRT module (TensorRT-RTX on CPU machines; tests that need one skip cleanly without it).

Tests marked `gpu` run engines and skip unless `tlkit_tensorrt.runner.available()` says engines can run
here (NVIDIA GPU + driver, pycuda, a GPU the installed TensorRT flavour supports).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")

SHAPE = (3, 32, 32)
CLASSES = ["cat", "dog", "bird", "fish", "frog"]


def pytest_collection_modifyitems(config, items):
    gpu_items = [i for i in items if i.get_closest_marker("gpu")]
    if not gpu_items:
        return
    from tlkit_tensorrt.runner import available

    why = available()
    if why:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=f"engines cannot run here: {why}"))


@pytest.fixture(scope="session")
def trt_api():
    from tlkit_tensorrt.api import TensorRTError, load_api

    try:
        return load_api()
    except TensorRTError as err:
        pytest.skip(str(err))


def _meta(arch, **extra):
    return {
        "task": "classification",
        "arch": arch,
        "classes": CLASSES,
        "input_shape": list(SHAPE),
        "preprocessing": {"mode": "caffe"},
        **extra,
    }


def _gluoncv(name):
    import mxnet as mx
    from gluoncv.model_zoo import get_model

    mx.random.seed(0)
    net = get_model(name, pretrained=False, classes=len(CLASSES))
    net.initialize(mx.init.Xavier())
    return net


def _tiny():
    import mxnet as mx
    from mxnet.gluon import nn

    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(len(CLASSES))
    )
    net.initialize(mx.init.Xavier())
    return net


def _two_heads():
    import mxnet as mx
    from mxnet.gluon import nn

    class TwoHeads(nn.HybridBlock):
        """Two outputs, like a detector's coverage and box heads."""

        def __init__(self):
            super().__init__()
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(8, 3, padding=1, strides=2), nn.Activation("relu"))
            self.cov = nn.Conv2D(4, 1)
            self.bbox = nn.Conv2D(16, 1)

        def hybrid_forward(self, F, x):
            f = self.body(x)
            return F.sigmoid(self.cov(f)), self.bbox(f)

    mx.random.seed(0)
    net = TwoHeads()
    net.initialize(mx.init.Xavier())
    return net


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """{name: ONNX path}: resnet18, mobilenetv2, tiny, two_heads (fp32), tiny_int8 (Q/DQ), tiny_int8_ort (Q/DQ with
    uint8 activations, onnxruntime's CPU layout) and tiny_fp16."""
    pytest.importorskip("mxnet")
    from tlkit.export.onnx_export import export_onnx

    d = tmp_path_factory.mktemp("onnx")
    out = {
        "resnet18": export_onnx(_gluoncv("resnet18_v1"), d / "resnet18.onnx", meta=_meta("resnet18_v1")),
        "mobilenetv2": export_onnx(_gluoncv("mobilenetv2_1.0"), d / "mobilenetv2.onnx", meta=_meta("mobilenetv2_1.0")),
        "two_heads": export_onnx(
            _two_heads(),
            d / "two_heads.onnx",
            meta={**_meta("two_heads", task="detection"), "output_names": ["output_cov", "output_bbox"]},
        ),
    }
    tiny = _tiny()
    out["tiny"] = export_onnx(tiny, d / "tiny.onnx", meta=_meta("tiny"))
    cal = [np.random.RandomState(i).uniform(-1, 1, (4, *SHAPE)).astype(np.float32) for i in range(2)]
    out["tiny_int8"] = export_onnx(
        tiny, d / "tiny_int8.onnx", meta=_meta("tiny"), data_type="int8", cal_batches=cal, calibration_method="max"
    )
    out["tiny_int8_ort"] = export_onnx(
        tiny,
        d / "tiny_int8_ort.onnx",
        meta=_meta("tiny"),
        data_type="int8",
        cal_batches=cal,
        calibration_method="max",
        qdq_format="onnxruntime",
    )
    out["tiny_fp16"] = export_onnx(tiny, d / "tiny_fp16.onnx", meta=_meta("tiny"), data_type="fp16")
    return out
