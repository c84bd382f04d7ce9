"""TensorRT engine build time with TensorRT-RTX on a CPU-only machine, per model and precision.

GluonCV classifiers at 224 px, DetectNet_v2 (resnet18, 3x544x960) and BodyPoseNet (vgg19, 3x256x256) at
their default spec sizes (random Xavier weights: build time does not depend on them), exported with
core's exporter (dynamic batch), built with the default profile (batch 1..16). fp16 on TensorRT-RTX
includes converting the ONNX to fp16 (strong typing); int8 builds core's Q/DQ export. TensorRT-RTX
compiles kernels at run time on the GPU, so a CPU build is graph optimisation + serialisation only.
extra_info: engine/ONNX sizes, the builder's own time from the engine header, the TensorRT version.

    .venv/bin/python -m pytest benchmarks/test_bench_tensorrt.py --benchmark-only \
        --benchmark-json=benchmarks/results/tensorrt.json
"""

import os
import time

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from tlkit_tensorrt.api import TensorRTError, load_api  # noqa: E402

try:
    API = load_api()
except TensorRTError as err:  # no TensorRT flavour installed
    pytest.skip(str(err), allow_module_level=True)

from tlkit.export.engine_file import read_engine_metadata  # noqa: E402
from tlkit.export.onnx_export import export_onnx  # noqa: E402
from tlkit_tensorrt.builder import build_engine  # noqa: E402

SIZE = 224
ARCHS = ["resnet18_v1", "mobilenetv2_1.0", "resnet50_v1"]
TASK_MODELS = ["detectnet_v2_resnet18", "bodyposenet_vgg19"]  # int8 of these too (max calibration, 2 images)


def _task_model(name):
    """(net, meta) of a task model at its default spec size, or None when the task package is missing."""
    try:
        if name.startswith("detectnet"):
            from tlkit_detection.config import DetectionConfig
            from tlkit_detection.model import build_for_training

            built = build_for_training(DetectionConfig(), ["car", "person"], [mx.cpu()])
            return built.net, built.meta
        from tlkit_pose.config import PoseConfig
        from tlkit_pose.model import build_meta, build_net
    except ImportError:
        return None
    meta = build_meta(PoseConfig())
    mx.random.seed(0)
    net = build_net(meta["build"])
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, *meta["input_shape"])))
    return net, meta


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory):
    from gluoncv.model_zoo import get_model

    d = tmp_path_factory.mktemp("trt-bench")
    out = {}
    for arch in ARCHS:
        mx.random.seed(0)
        net = get_model(arch, pretrained=False, classes=1000)
        net.initialize(mx.init.Xavier())
        meta = {"task": "classification", "arch": arch, "input_shape": [3, SIZE, SIZE]}
        out[arch] = export_onnx(net, d / f"{arch}.onnx", meta=meta)
        if arch == "resnet18_v1":
            cal = [np.random.RandomState(i).uniform(-2, 2, (4, 3, SIZE, SIZE)).astype(np.float32) for i in range(2)]
            out["resnet18_v1-int8"] = export_onnx(
                net, d / "resnet18_int8.onnx", meta=meta, data_type="int8", cal_batches=cal, calibration_method="max"
            )
    for name in TASK_MODELS:
        built = _task_model(name)
        if built is None:
            continue
        net, meta = built
        out[name] = export_onnx(net, d / f"{name}.onnx", meta=meta)
        cal = [np.random.RandomState(0).uniform(-1, 1, (2, *meta["input_shape"])).astype(np.float32)]
        out[f"{name}-int8"] = export_onnx(
            net, d / f"{name}_int8.onnx", meta=meta, data_type="int8", cal_batches=cal, calibration_method="max"
        )
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("arch", ARCHS + TASK_MODELS)
def test_engine_build_time(benchmark, onnx_models, tmp_path, arch, precision):
    if arch not in onnx_models:
        pytest.skip(f"{arch}: its task package is not installed")
    if precision == "int8" and arch in ("mobilenetv2_1.0", "resnet50_v1"):
        pytest.skip("int8 (Q/DQ export) of the classifiers is measured on resnet18 only: the export is slow on 2 cores")
    src = onnx_models[f"{arch}-int8" if precision == "int8" else arch]
    engine = tmp_path / f"{arch}-{precision}.engine"
    cpu = []

    def build():
        t = time.process_time()
        path = build_engine(src, engine, data_type=precision)
        cpu.append(time.process_time() - t)
        return path

    path = benchmark.pedantic(build, rounds=3, iterations=1)
    e = read_engine_metadata(path)["engine"]
    benchmark.extra_info.update(
        arch=arch,
        input=read_engine_metadata(path)["model"]["input_shape"],
        precision=precision,
        trt=f"{e['trt']['flavour']} {e['trt']['version']}",
        engine_bytes=e["engine_bytes"],
        onnx_bytes=os.path.getsize(src),
        builder_seconds=e["build_seconds"],
        cpu_seconds_median=float(np.median(cpu)),
        profile=e["profiles"][0],
        notes=e["notes"],
        weights_bytes=e.get("weights_bytes"),
        fallbacks=e.get("fallbacks"),
    )
