"""`tlkit tensorrt bench`: latency statistics, the report, and the command on any backend's model."""

import json

import numpy as np
import pytest

from tlkit.errors import SpecError
from tlkit_tensorrt.bench import bench, bench_runner, format_report, latency_summary


def test_latency_summary_values():
    s = latency_summary(np.arange(1, 101) / 1000.0)  # 1..100 ms
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0) and s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5) and s["p90"] == pytest.approx(90.1) and s["p99"] == pytest.approx(99.01)


def test_bench_onnx_model(models):
    r = bench(models["tiny"], batch=2, iterations=20, warmup=2)
    assert r["backend"] == "OnnxRuntimeRunner" and r["precision"] == "fp32"
    assert r["input_shape"] == [2, 3, 32, 32] and r["iterations"] == 20
    lat = r["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert r["throughput_ips"] == pytest.approx(2 * r["throughput_qps"])
    assert r["throughput_qps"] == pytest.approx(20 / r["total_s"])
    text = format_report(r)
    assert "Throughput:" in text and "percentile(99%)" in text and "input 2x3x32x32" in text


def test_bench_validates_arguments(models):
    from tlkit.export.runners import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(models["tiny"])
    with pytest.raises(SpecError, match="batch and iterations must be >= 1"):
        bench_runner(runner, batch=0)
    runner.input_shape = ()  # as for an ONNX with symbolic H, W
    with pytest.raises(SpecError, match="give --shape CxHxW"):
        bench_runner(runner, iterations=1)
    assert bench_runner(runner, iterations=2, warmup=0, shape=(3, 32, 32))["input_shape"] == [1, 3, 32, 32]


def test_bench_cli_writes_json(models, tmp_path):
    from tlkit.testing.plugins import run_tlkit

    out = tmp_path / "bench.json"
    r = run_tlkit(["tensorrt", "bench", "-e", str(models["tiny"]), "--batch", "2", "--iterations", "5", "-o", str(out)])
    assert r.returncode == 0, r.stderr
    assert "Throughput:" in r.stdout and "median" in r.stdout
    data = json.loads(out.read_text())
    assert data["iterations"] == 5 and data["batch"] == 2 and set(data["latency_ms"]) >= {"p50", "p90", "p99"}


def test_bench_cli_engine_without_gpu(trt_api, models, tmp_path):
    from tlkit.testing.plugins import run_tlkit
    from tlkit_tensorrt.builder import build_engine
    from tlkit_tensorrt.runner import available

    why = available()
    if why is None:
        pytest.skip("engines run here")
    engine = build_engine(models["tiny"], tmp_path / "t.engine", max_batch=2)
    r = run_tlkit(["tensorrt", "bench", "-e", str(engine)])
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: engine backend 'tensorrt' cannot run {engine}: {why}"
