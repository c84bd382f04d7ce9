"""Quantization-aware training (tlkit.qat): the fake-quantized graph, its gradients, training through the engine
(calibration, resume, frozen layers, retraining a QAT graph) and the INT8 export with the learned ranges."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import autograd, gluon  # noqa: E402
from rich.console import Console  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))  # the engine tests' tiny net and job (--import-mode=importlib)
from test_training import make_cfg, make_job, make_net  # noqa: E402

from tlkit import qat  # noqa: E402
from tlkit.errors import SpecError  # noqa: E402
from tlkit.model_io import load_net, read_meta  # noqa: E402
from tlkit.training import train  # noqa: E402

SHAPE = (3, 16, 16)


def dense_net(w: np.ndarray, b: np.ndarray) -> gluon.HybridBlock:
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(w.shape[0], in_units=w.shape[1]))
    net.initialize()
    net[0].weight.set_data(mx.nd.array(w))
    net[0].bias.set_data(mx.nd.array(b))
    return net


def fake_quant(x: np.ndarray, amax: float) -> np.ndarray:
    s = np.float32(amax) / np.float32(127)
    return np.clip(np.round(x / s), -128, 127) * s


def test_forward_is_int8_weights_per_channel_and_activations_per_tensor():
    rs = np.random.RandomState(0)
    w, b = rs.normal(0, 1, (4, 6)).astype(np.float32), rs.normal(0, 1, 4).astype(np.float32)
    w[2] *= 0.01  # a channel with a much smaller range keeps its own scale
    net, points = qat.prepare_qat(dense_net(w, b), (6,))
    assert [p.amax for p in points] == ["0.qat_in.amax"] and points[0].features == 6
    net.collect_params()["0.qat_in.amax"].set_data(mx.nd.array([1.5]))
    x = rs.normal(0, 1, (5, 6)).astype(np.float32)
    wq = np.stack([fake_quant(row, np.abs(row).max()) for row in w])
    expected = fake_quant(x, 1.5) @ wq.T + b
    np.testing.assert_allclose(net(mx.nd.array(x)).asnumpy(), expected, rtol=1e-5, atol=1e-6)
    # its own scale keeps the small channel's 6 weights on 6 levels (the whole tensor's scale would give 0 or 1)
    assert len(np.unique(wq[2])) == 6 and len(np.unique(fake_quant(w[2], np.abs(w).max()))) <= 2


def test_gradients_are_straight_through_and_amax_gets_lsq():
    rs = np.random.RandomState(1)
    w = rs.normal(0, 1, (3, 4)).astype(np.float32)
    net, points = qat.prepare_qat(dense_net(w, np.zeros(3, np.float32)), (4,))
    params = net.collect_params()
    amax = params["0.qat_in.amax"]
    amax.set_data(mx.nd.array([1.0]))
    x = mx.nd.array([[0.3, -0.2, 5.0, -7.0]])  # two values inside the range, two clipped
    x.attach_grad()
    with autograd.record():
        total = net(x).sum()
    total.backward()
    wq = np.stack([fake_quant(row, np.abs(row).max()) for row in w])
    # d/dx: the quantized weights' column sums where x is inside the range, 0 where it is clipped
    np.testing.assert_allclose(x.grad.asnumpy()[0], wq.sum(0) * np.array([1, 1, 0, 0]), rtol=1e-5, atol=1e-6)
    # d/dW (straight through the weight rounding): the quantized input, for every output
    xq = fake_quant(x.asnumpy(), 1.0)
    np.testing.assert_allclose(params["0.weight"].grad().asnumpy(), np.repeat(xq, 3, 0), rtol=1e-5, atol=1e-6)
    # d/d amax (LSQ): per input element (round(v) - v) / 127 inside the range, the clip level / 127 (127 or -128)
    # outside, times the column sum of the weights, times the gradient scale g
    v = x.asnumpy()[0] * 127
    per = np.where(v > 127, 1.0, np.where(v < -128, -128 / 127, (np.round(v) - v) / 127))
    g = 1 / np.sqrt(127 * points[0].features)
    np.testing.assert_allclose(amax.grad().asnumpy()[0], g * float((per * wq.sum(0)).sum()), rtol=1e-4)


def test_strip_gives_back_the_float_network():
    net = make_net(dropout=0.0)
    x = mx.nd.array(np.random.RandomState(2).rand(2, *SHAPE))
    ref = net(x).asnumpy()
    qnet, points = qat.prepare_qat(net, SHAPE)
    assert len(points) == 3  # the image, the second conv's input, the dense input
    assert not np.allclose(qnet(x).asnumpy(), ref, atol=1e-7)
    fnet, amax = qat.strip_qat(qnet)
    np.testing.assert_allclose(fnet(x).asnumpy(), ref, rtol=1e-6, atol=1e-7)
    assert set(amax) == {"0.weight", "3.weight", "7.weight"} and all(v == 1.0 for v in amax.values())
    assert not any(qat.TAG in k for k in fnet.collect_params())
    again, none = qat.prepare_qat(qnet, SHAPE)  # a QAT graph is not quantized twice
    assert again is qnet and none == []


def quiet():
    return Console(file=io.StringIO())


def test_training_with_qat_then_int8_export_uses_the_learned_ranges(tmp_path):
    import onnx
    import onnxruntime as ort

    from tlkit.export.onnx_export import export_onnx, read_onnx_metadata
    from tlkit.export.trt_cache import read_trt_cache

    res = train(make_job(net=make_net(dropout=0.0)), make_cfg(enable_qat=True), tmp_path / "r", console=quiet())
    meta = read_meta(res.model_path)
    assert meta["kind"] == "graph" and meta["qat"]["activations_quantized"] == 3
    net, _ = load_net(res.model_path)
    amax = {k: float(p.data().asscalar()) for k, p in net.collect_params().items() if k.endswith(".amax")}
    assert len(amax) == 3 and all(v > 0 for v in amax.values())

    with pytest.raises(SpecError, match="calibration data"):  # --force_ptq discards the learned ranges
        export_onnx(res.model_path, tmp_path / "ptq.onnx", data_type="int8", force_ptq=True)
    out = export_onnx(
        res.model_path,
        tmp_path / "int8.onnx",
        data_type="int8",
        cal_cache_file=tmp_path / "cal.bin",
        cal_json_file=tmp_path / "cal.json",
    )  # no calibration data needed
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 3 + 3  # activations + weights
    assert {t.data_type for t in model.graph.initializer if t.name.endswith("_quantized")} == {onnx.TensorProto.INT8}
    assert read_onnx_metadata(out)["quantization"] == "qat"
    scales = json.loads((tmp_path / "cal.json").read_text())["tensor_scales"]
    assert sorted(scales.values()) == pytest.approx(sorted(amax.values()))
    assert read_trt_cache(tmp_path / "cal.bin") == pytest.approx(scales, rel=1e-6)
    assert "input" in scales  # the image itself is quantized for the first conv

    x = np.random.RandomState(3).rand(4, *SHAPE).astype(np.float32)
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, net(mx.nd.array(x)).asnumpy(), rtol=1e-4, atol=1e-5)
    fp32 = export_onnx(res.model_path, tmp_path / "fp32.onnx")
    assert not any(n.op_type == "QuantizeLinear" for n in onnx.load(str(fp32)).graph.node)


def test_qat_resume_equals_an_uninterrupted_run(tmp_path):
    def cfg(epochs):  # a constant rate: the schedule of a 1-epoch run would differ from a 2-epoch one's
        return make_cfg(enable_qat=True, n_epochs=epochs, lr_config={"type": "constant", "learning_rate": 0.02})

    full = train(make_job(net=make_net(dropout=0.0)), cfg(2), tmp_path / "a", console=quiet())
    train(make_job(net=make_net(dropout=0.0)), cfg(1), tmp_path / "b", console=quiet())
    resumed = train(make_job(net=make_net(dropout=0.0)), cfg(2), tmp_path / "b", console=quiet())
    assert resumed.resumed_from_epoch == 1
    a, _ = load_net(full.model_path)
    b, _ = load_net(resumed.model_path)
    pa, pb = a.collect_params(), b.collect_params()
    assert set(pa) == set(pb)
    for k in pa:
        np.testing.assert_array_equal(pa[k].data().asnumpy(), pb[k].data().asnumpy(), err_msg=k)


def test_qat_keeps_frozen_layers_and_retrains_a_qat_graph(tmp_path):
    from tlkit.transfer import load_graph_for_retraining

    net = make_net(dropout=0.0)
    net(mx.nd.zeros((1, *SHAPE)))  # materialise the deferred shapes
    job = make_job(net=net, frozen=("0",))
    before = net[0].weight.data().asnumpy().copy()
    res = train(job, make_cfg(enable_qat=True), tmp_path / "r", console=quiet())
    params = job.net.collect_params()  # the engine swapped in the QAT graph; names stay structural
    np.testing.assert_array_equal(params["0.weight"].data().asnumpy(), before)
    assert params["0.weight"].grad_req == "null" and params["3.weight"].grad_req == "write"

    built = load_graph_for_retraining(str(res.model_path), task="unit", ctx=[mx.cpu()])
    again = train(
        make_job(net=built.net, meta=built.meta, save_as_graph=True),
        make_cfg(enable_qat=True, n_epochs=1),
        tmp_path / "again",
        console=quiet(),
    )
    g = json.loads(load_net(again.model_path)[0]._cached_graph[1].tojson())
    assert sum(n["name"].endswith(".qat_in.amax") for n in g["nodes"]) == 3  # not quantized twice


def test_a_qat_model_is_not_pruned(tmp_path):
    from tlkit.errors import ModelFileError
    from tlkit.pruning.command import prune_model_file

    res = train(
        make_job(net=make_net(dropout=0.0)), make_cfg(enable_qat=True, n_epochs=1), tmp_path / "r", console=quiet()
    )
    with pytest.raises(ModelFileError, match="prune the float model .*train_config.enable_qat: true"):
        prune_model_file(res.model_path, tmp_path / "pruned.tlk", target_ratio=0.5)
