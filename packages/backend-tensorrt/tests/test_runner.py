"""Running engines: why they cannot run here (CPU machines), and on a GPU (marked gpu) that they match
onnxruntime, keep output order, honour the profile and run bare plans."""

import numpy as np
import pytest

from tlkit.errors import DataError, TlkitError
from tlkit_tensorrt.api import ENV_MODULE
from tlkit_tensorrt.builder import build_engine
from tlkit_tensorrt.runner import available, gpu_info, rtx_unsupported

SHAPE = (3, 32, 32)


def test_rtx_gpu_support_by_compute_capability():
    msg = rtx_unsupported({"name": "NVIDIA H100 80GB HBM3", "compute_capability": (9, 0)})
    assert msg == (
        "TensorRT-RTX engines do not run on NVIDIA H100 80GB HBM3 (compute capability 9.0); "
        "use full TensorRT (pip install tensorrt) on this GPU"
    )
    assert "compute capability 8.0" in rtx_unsupported({"name": "A100", "compute_capability": (8, 0)})
    for cc in [(7, 5), (8, 6), (8, 9), (12, 0)]:
        assert rtx_unsupported({"name": "RTX", "compute_capability": cc}) is None


def test_available_gives_the_first_blocking_reason(monkeypatch):
    monkeypatch.setenv(ENV_MODULE, "no_such_tensorrt_module")
    assert available().startswith("TensorRT is not importable (no_such_tensorrt_module")
    monkeypatch.delenv(ENV_MODULE)
    info = gpu_info()
    why = available()
    if isinstance(info, str):  # CPU machine: the driver is the reason
        assert why == info and info.startswith("no NVIDIA GPU")
    else:
        assert info["count"] >= 1 and len(info["compute_capability"]) == 2
        assert why is None or "pycuda" in why or "TensorRT-RTX engines do not run" in why


def test_load_runner_refuses_with_the_reason(trt_api, models, tmp_path):
    from tlkit.export.runners import load_runner

    why = available()
    if why is None:
        pytest.skip("engines run here")
    engine = build_engine(models["tiny"], tmp_path / "t.engine", max_batch=2)
    with pytest.raises(TlkitError) as err:
        load_runner(engine)
    assert str(err.value) == f"engine backend 'tensorrt' cannot run {engine}: {why}"


# -- on a GPU -----------------------------------------------------------------------------------------
def _onnx(path, x):
    from tlkit.export.runners import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"]).run(x)


def _close(got, ref, rel):
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        err = float(np.abs(g.astype(np.float64) - r).max())
        assert err <= rel * float(np.abs(r).max()) + 1e-5, f"max error {err} vs {rel} * {np.abs(r).max()}"


@pytest.mark.gpu
@pytest.mark.parametrize("name, data_type, rel", [("resnet18", "fp32", 1e-3), ("mobilenetv2", "fp16", 3e-2)])
def test_engine_matches_onnxruntime(models, tmp_path, name, data_type, rel):
    from tlkit.export.runners import load_runner

    engine = build_engine(
        models[name], tmp_path / "m.engine", data_type=data_type, profiles=["input,1x3x32x32,2x3x32x32,4x3x32x32"]
    )
    runner = load_runner(engine)
    assert runner.metadata["data_type"] == data_type and runner.metadata["classes"]
    assert runner.input_shape == SHAPE
    for b in (1, 3, 4):
        x = np.random.RandomState(b).uniform(-1, 1, (b, *SHAPE)).astype(np.float32)
        _close(runner.run(x), _onnx(models[name], x), rel)
    with pytest.raises(DataError, match=r"batch 5 is outside the engine's profile \(1..4\)"):
        runner.run(np.zeros((5, *SHAPE), np.float32))
    runner.close()


@pytest.mark.gpu
def test_two_outputs_in_onnx_order_and_bare_plan(models, tmp_path):
    from tlkit.export.engine_file import write_plan
    from tlkit.export.runners import load_runner

    engine = build_engine(models["two_heads"], tmp_path / "two.engine", max_batch=4)
    runner = load_runner(engine)
    assert runner.output_names == ["output_cov", "output_bbox"]
    x = np.random.RandomState(0).uniform(-1, 1, (2, *SHAPE)).astype(np.float32)
    got = runner.run(x)
    assert [g.shape for g in got] == [(2, 4, 16, 16), (2, 16, 16, 16)]
    _close(got, _onnx(models["two_heads"], x), 1e-3)
    plan = load_runner(write_plan(engine, tmp_path / "model.plan"))  # Triton's bare plan: no header
    assert plan.metadata.get("engine") == {} and plan.input_shape == SHAPE
    _close(plan.run(x), got, 1e-6)


@pytest.mark.gpu
def test_int8_qdq_engine_runs(models, tmp_path):
    from tlkit.export.runners import load_runner

    runner = load_runner(build_engine(models["tiny_int8"], tmp_path / "q.engine", data_type="int8"))
    x = np.random.RandomState(0).uniform(-1, 1, (4, *SHAPE)).astype(np.float32)
    _close(runner.run(x), _onnx(models["tiny"], x), 0.1)  # int8 vs the fp32 graph
