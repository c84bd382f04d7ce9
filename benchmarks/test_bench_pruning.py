"""Pruning benchmarks: prune wall time (resnet18/50, mobilenetv2 at 224 px) and onnxruntime CPU latency of
resnet18 unpruned vs pruned to parameter ratios ~0.5 / 0.25 / 0.1, batch 1 and 16.

    .venv/bin/python -m pytest benchmarks/test_bench_pruning.py --benchmark-only \
        --benchmark-json=benchmarks/results/pruning.json

Weights are random with non-uniform filter norms (tlkit.testing.pruning.randomize_params); latency does
not depend on them. ONNX export as mxnet-notes.md describes: mx.onnx.export_model with a dynamic batch,
then the initializers are removed from the graph inputs so onnxruntime can fold constants.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from tlkit.model_io import graph_of  # noqa: E402 (after the importorskips)
from tlkit.pruning.graph import prune_graph  # noqa: E402 (after the importorskips)
from tlkit.testing.pruning import randomize_params  # noqa: E402 (after the importorskips)

SIZE = 224
SHAPE = (3, SIZE, SIZE)


def note(benchmark, **info):
    """extra_info, with the 1-minute load average: the dev machine is shared, so judge timings by it."""
    benchmark.extra_info.update(info, loadavg_1m=os.getloadavg()[0], cpus=os.cpu_count())


def build(name):
    from gluoncv.model_zoo import get_model

    mx.random.seed(0)
    net = get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier())
    return net


@pytest.fixture(scope="module")
def graphs():
    out = {}
    for name in ("resnet18_v1", "resnet50_v1", "mobilenetv2_1.0"):
        net = build(name)
        t = time.perf_counter()
        sym, params = graph_of(net, SHAPE)
        out[name] = (net, sym, randomize_params(sym, params), time.perf_counter() - t)
    return out


@pytest.mark.parametrize("arch", ["resnet18_v1", "resnet50_v1", "mobilenetv2_1.0"])
def test_prune_time(benchmark, graphs, arch):
    _, sym, params, first_trace = graphs[arch]
    res = benchmark.pedantic(
        prune_graph, args=(sym, params), kwargs={"input_shape": SHAPE, "threshold": 0.5}, rounds=5, iterations=1
    )
    rep = res.report
    note(
        benchmark,
        arch=arch,
        input=SIZE,
        threshold=0.5,
        ratio=rep.ratio,
        flops_ratio=rep.flops_ratio,
        params_before=rep.params_before,
        params_after=rep.params_after,
        first_graph_of_s=first_trace,
    )


@pytest.mark.parametrize("tracer", ["symbolic", "export"])
@pytest.mark.parametrize("arch", ["resnet50_v1"])
def test_graph_and_prune_time(benchmark, graphs, arch, tracer):
    """Network -> symbol graph -> pruned graph: what pruning a Gluon model costs end to end.
    symbolic (graph_of, what prune uses) calls the net on a symbol; export runs a 224 px batch and exports."""
    from tlkit.model_io import _exported_graph

    net = graphs[arch][0]
    trace = graph_of if tracer == "symbolic" else _exported_graph

    def trace_and_prune():
        sym, params = trace(net, SHAPE)
        return prune_graph(sym, params, input_shape=SHAPE, threshold=0.5)

    benchmark.pedantic(trace_and_prune, rounds=3, iterations=1)
    note(benchmark, arch=arch, input=SIZE, tracer=tracer)


def export_onnx(sym_json: str, params: dict, path) -> str:
    """mx.onnx.export_model with a dynamic batch; initializers stripped from the graph inputs."""
    sym = mx.sym.load_json(sym_json)
    params = {k.split(":", 1)[-1]: v for k, v in params.items()}  # the exporter wants bare names
    mx.onnx.export_model(
        sym, params, [(1, *SHAPE)], np.float32, str(path), dynamic=True, dynamic_input_shapes=[(None, *SHAPE)]
    )
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def resnet18_onnx(graphs, tmp_path_factory):
    d = tmp_path_factory.mktemp("prune_onnx")
    _, sym, params, _ = graphs["resnet18_v1"]
    models = {"unpruned": (export_onnx(sym, params, d / "unpruned.onnx"), 1.0, None)}
    for target in (0.5, 0.25, 0.1):
        res = prune_graph(sym, params, input_shape=SHAPE, target_ratio=target)
        models[f"ratio_{target}"] = (
            export_onnx(res.symbol_json, res.params, d / f"r{target}.onnx"),
            res.report.ratio,
            res,
        )
    # the exported pruned models compute what MXNet computes
    x = np.random.default_rng(0).normal(size=(2, *SHAPE)).astype(np.float32)
    from tlkit.model_io import symbol_block

    for name, (path, _, res) in models.items():
        sj, ps = (sym, params) if res is None else (res.symbol_json, res.params)
        ref = symbol_block(sj, ps)(mx.nd.array(x)).asnumpy()
        got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"data": x})[0]
        assert np.abs(ref - got).max() <= 1e-4 * np.abs(ref).max(), name
    return models


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("model", ["unpruned", "ratio_0.5", "ratio_0.25", "ratio_0.1"])
def test_onnxruntime_latency_resnet18(benchmark, resnet18_onnx, model, batch):
    path, ratio, res = resnet18_onnx[model]
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).normal(size=(batch, *SHAPE)).astype(np.float32)
    sess.run(None, {"data": x})  # warm-up
    benchmark.pedantic(sess.run, args=(None, {"data": x}), rounds=5 if batch == 16 else 20, iterations=1)
    flops_ratio = 1.0 if res is None else res.report.flops_ratio
    note(benchmark, model=model, param_ratio=ratio, flops_ratio=flops_ratio, batch=batch, input=SIZE)


# -- tlkit vs Torch-Pruning, ResNet-18 at 224 px, side by side ------------------------------------------------

TORCH_VENV = Path(__file__).resolve().parents[1] / ".venvs" / "bench-torch" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "torch_pruning_resnet18.py"
ORT_THREADS = 2


def _session(path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = ORT_THREADS  # the same for every model of the comparison
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _median_ms(sess, x, rounds=40):
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(5):
        sess.run(None, feed)
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        sess.run(None, feed)
        ts.append((time.perf_counter() - t) * 1000)
    return float(np.median(ts))


@pytest.fixture(scope="module")
def versus_torch(graphs, tmp_path_factory):
    """tlkit pruned to a parameter ratio of 0.1 with each allocation, and Torch-Pruning (MagnitudePruner, L2,
    round_to=8) bisected to at most the parameter count of tlkit's model; all exported to ONNX."""
    if not TORCH_VENV.is_file():
        pytest.skip(f"{TORCH_VENV} absent: `make bench-torch` creates the benchmark-only torch venv")
    import subprocess

    d = tmp_path_factory.mktemp("vs_torch")
    _, sym, params, _ = graphs["resnet18_v1"]
    out = {"tlkit_unpruned": {"onnx": export_onnx(sym, params, d / "tlkit_unpruned.onnx"), "params": None}}
    for alloc in ("threshold", "uniform", "global"):
        res = prune_graph(sym, params, input_shape=SHAPE, target_ratio=0.1, allocation=alloc)
        out[f"tlkit_{alloc}"] = {
            "onnx": export_onnx(res.symbol_json, res.params, d / f"tlkit_{alloc}.onnx"),
            "params": res.report.params_after,
            "macs": res.report.flops_after // 2,
            "params_before": res.report.params_before,
            "macs_before": res.report.flops_before // 2,
        }
    target = out["tlkit_global"]["params"]
    proc = subprocess.run(
        [str(TORCH_VENV), str(PEER_SCRIPT), str(target), str(d / "torch"), str(SIZE)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((d / "torch" / "torch_pruning.json").read_text())
    out["torch_unpruned"] = {
        "onnx": str(d / "torch" / "torch_unpruned.onnx"),
        "params": info["params_before"],
        "macs": info["macs_before"],
    }
    out["torch_pruned"] = {
        "onnx": str(d / "torch" / "torch_pruned.onnx"),
        "params": info["params"],
        "macs": info["macs"],
        "info": info,
    }
    return out


def test_resnet18_speedup_vs_torch_pruning(benchmark, versus_torch):
    """Batch-1 onnxruntime latency of every model, interleaved in one process with the same threads; the
    speed-ups (unpruned / pruned, each against its own framework's unpruned export) go into extra_info."""
    x = np.random.default_rng(1).normal(size=(1, *SHAPE)).astype(np.float32)
    sessions = {name: _session(m["onnx"]) for name, m in versus_torch.items()}
    ms = {name: [] for name in sessions}
    for _ in range(3):  # interleaved rounds: load on the shared machine hits every model alike
        for name, sess in sessions.items():
            ms[name].append(_median_ms(sess, x))
    lat = {name: float(np.median(v)) for name, v in ms.items()}
    benchmark.pedantic(sessions["tlkit_global"].run, args=(None, {"data": x}), rounds=20, iterations=1)
    speedup = {name: lat["tlkit_unpruned"] / lat[name] for name in ("tlkit_threshold", "tlkit_uniform", "tlkit_global")}
    speedup["torch_pruned"] = lat["torch_unpruned"] / lat["torch_pruned"]
    note(
        benchmark,
        input=SIZE,
        ort_threads=ORT_THREADS,
        latency_ms=lat,
        speedup=speedup,
        models={k: {kk: vv for kk, vv in v.items() if kk != "onnx"} for k, v in versus_torch.items()},
    )
    # same parameter budget: the peer is pruned to at most tlkit's count
    assert versus_torch["torch_pruned"]["params"] <= versus_torch["tlkit_global"]["params"]
