"""Export and deployment benchmarks: ONNX export time per architecture (GluonCV classifiers, DetectNet_v2 and
BodyPoseNet at their default spec sizes); onnxruntime FP32 vs INT8 Q/DQ latency for resnet18 at 224 px, batch 1
and 16, in both Q/DQ layouts ("int8": --qdq_format tensorrt, symmetric int8 activations; "int8_onnxruntime":
uint8 activations, which onnxruntime's x86 kernels fuse completely); activation-range calibration time.

    .venv/bin/python -m pytest benchmarks/test_bench_export.py --benchmark-only \
        --benchmark-json=benchmarks/results/export.json

Latency runs use one onnxruntime thread and also record CPU time per call (extra_info.cpu_ms_median),
which stays meaningful on a shared machine. Random (Xavier) weights: latency does not depend on them;
the int8-vs-fp32 error recorded in extra_info is only a smoke check (random nets are a poor accuracy
proxy; packages/core/tests/test_calibration.py checks a trained net).
"""

import os
import time

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

from tlkit.export.calibration import compute_ranges, quantize_qdq  # noqa: E402
from tlkit.export.onnx_export import export_onnx  # noqa: E402
from tlkit.export.runners import OnnxRuntimeRunner  # noqa: E402

SIZE = 224


def build(name):
    from gluoncv.model_zoo import get_model

    mx.random.seed(0)
    net = get_model(name, pretrained=False, classes=1000)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    return net


@pytest.mark.parametrize("arch", ["resnet18_v1", "mobilenetv2_1.0", "resnet50_v1"])
def test_export_time(benchmark, tmp_path, arch):
    net = build(arch)
    meta = {"task": "classification", "arch": arch, "input_shape": [3, SIZE, SIZE]}
    path = benchmark.pedantic(
        export_onnx, args=(net, tmp_path / f"{arch}.onnx"), kwargs={"meta": meta}, rounds=2, iterations=1
    )
    benchmark.extra_info.update(arch=arch, input=SIZE, onnx_bytes=os.path.getsize(path))


def _detectnet_v2():
    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.model import build_for_training

    built = build_for_training(DetectionConfig(), ["car", "person"], [mx.cpu()])  # resnet18, 3x544x960
    return built.net, built.meta


def _bodyposenet():
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.model import build_meta, build_net

    meta = build_meta(PoseConfig())  # vgg19 backbone, 3 stages, 3x256x256
    mx.random.seed(0)
    net = build_net(meta["build"])
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, *meta["input_shape"])))
    return net, meta


@pytest.mark.parametrize(
    "name, task", [("detectnet_v2_resnet18", "tlkit_detection"), ("bodyposenet_vgg19", "tlkit_pose")]
)
def test_export_time_task_models(benchmark, tmp_path, name, task):
    pytest.importorskip(task)
    net, meta = (_detectnet_v2 if task == "tlkit_detection" else _bodyposenet)()
    path = benchmark.pedantic(
        export_onnx, args=(net, tmp_path / f"{name}.onnx"), kwargs={"meta": meta}, rounds=2, iterations=1
    )
    benchmark.extra_info.update(arch=name, input=meta["input_shape"], onnx_bytes=os.path.getsize(path))


def _optimized_ops(path, tmp_path):
    """Op counts of onnxruntime's optimized graph (QLinearConv = a fused int8 conv; Conv = float)."""
    import collections

    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return dict(collections.Counter(n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node))


@pytest.fixture(scope="module")
def resnet18_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench")
    net = build("resnet18_v1")
    fp32 = export_onnx(net, d / "fp32.onnx", meta={"task": "classification", "input_shape": [3, SIZE, SIZE]})
    rs = np.random.RandomState(0)
    cal = [rs.uniform(-2, 2, (4, 3, SIZE, SIZE)).astype(np.float32) for _ in range(2)]
    ranges = compute_ranges(fp32, cal, "max")
    return {
        "fp32": fp32,
        "int8": quantize_qdq(fp32, ranges, d / "int8.onnx"),
        "int8_onnxruntime": quantize_qdq(fp32, ranges, d / "int8_ort.onnx", qdq_format="onnxruntime"),
    }


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("precision", ["fp32", "int8", "int8_onnxruntime"])
def test_onnxruntime_latency_resnet18(benchmark, resnet18_models, tmp_path, precision, batch):
    # One intra-op thread: the machine is shared, and a single-threaded session's CPU time (recorded
    # below) stays meaningful when other processes compete for the cores; wall time does not.
    runner = OnnxRuntimeRunner(resnet18_models[precision], threads=1)
    x = np.random.RandomState(1).uniform(-2, 2, (batch, 3, SIZE, SIZE)).astype(np.float32)
    runner.run(x)  # warm-up
    cpu_ms = []

    def timed():
        t = time.process_time()
        res = runner.run(x)
        cpu_ms.append((time.process_time() - t) * 1e3)
        return res

    out = benchmark.pedantic(timed, rounds=5 if batch == 16 else 20, iterations=1)
    info = {
        "model": "resnet18_v1",
        "input": SIZE,
        "batch": batch,
        "precision": precision,
        "threads": 1,
        "cpu_ms_median": float(np.median(cpu_ms)),
        "onnx_bytes": os.path.getsize(resnet18_models[precision]),
    }
    if precision != "fp32":
        ref = OnnxRuntimeRunner(resnet18_models["fp32"]).run(x)[0]
        info["max_rel_error_vs_fp32"] = float(np.abs(out[0] - ref).max() / np.abs(ref).max())
        ops = _optimized_ops(resnet18_models[precision], tmp_path)
        info["onnxruntime_ops"] = {k: ops.get(k, 0) for k in ("QLinearConv", "Conv", "QLinearAdd", "Add")}
    benchmark.extra_info.update(info)


@pytest.mark.parametrize("method", ["max", "entropy"])
def test_calibration_time_resnet18(benchmark, resnet18_models, method):
    """compute_ranges over 2 batches of 8 images at 224 px (every activation of resnet18)."""
    rs = np.random.RandomState(2)
    batches = [rs.uniform(-2, 2, (8, 3, SIZE, SIZE)).astype(np.float32) for _ in range(2)]
    ranges = benchmark.pedantic(compute_ranges, args=(resnet18_models["fp32"], batches, method), rounds=1, iterations=1)
    benchmark.extra_info.update(model="resnet18_v1", input=SIZE, images=16, method=method, tensors=len(ranges))
