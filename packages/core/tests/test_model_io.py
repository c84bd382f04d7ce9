"""The .tlk model file: gluon and graph kinds round-trip exactly; corrupt files give clear errors."""

import json
import zipfile

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn

from tlkit import model_io
from tlkit.errors import ModelFileError


def tiny_net():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize(mx.init.Xavier())
    return net


def test_graph_round_trip_is_exact(tmp_path):
    net = tiny_net()
    x = mx.nd.random.uniform(shape=(2, 3, 8, 8))
    ref = net(x).asnumpy()
    path = model_io.save_net(tmp_path / "m.tlk", net, {"task": "t", "input_shape": [3, 8, 8]}, as_graph=True)
    loaded, meta = model_io.load_net(path)
    assert meta["kind"] == "graph" and meta["format"] == "tlkit-model" and meta["input_shape"] == [3, 8, 8]
    np.testing.assert_array_equal(loaded(x).asnumpy(), ref)


def test_gluon_params_round_trip(tmp_path):
    net = tiny_net()
    net(mx.nd.zeros((1, 3, 8, 8)))
    path = model_io.save_net(tmp_path / "m.tlk", net, {"task": "t"}, trainer_states=b"abc")
    mf = model_io.load_model(path)
    assert mf.kind == "gluon" and mf.trainer_states == b"abc"
    other = tiny_net()
    other(mx.nd.zeros((1, 3, 8, 8)))
    model_io.load_gluon_params(other, mf.params, mx.cpu())
    x = mx.nd.random.uniform(shape=(1, 3, 8, 8))
    np.testing.assert_array_equal(other(x).asnumpy(), net(x).asnumpy())


def test_shape_mismatch_names_the_tensor(tmp_path):
    net = tiny_net()
    net(mx.nd.zeros((1, 3, 8, 8)))
    params = model_io.gluon_params(net)
    params["4.weight"] = mx.nd.zeros((5, 4))
    with pytest.raises(ModelFileError, match=r"parameter '4.weight' has shape \(5, 4\), network expects \(3, 4\)"):
        model_io.load_gluon_params(net, params, mx.cpu(), source="m.tlk")


def test_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "bad.tlk"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="not a tlkit model file"):
        model_io.read_meta(bad)
    with pytest.raises(ModelFileError, match="model file not found"):
        model_io.read_meta(tmp_path / "missing.tlk")
    foreign = tmp_path / "f.tlk"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("meta.json", json.dumps({"format": "other"}))
    with pytest.raises(ModelFileError, match="format 'other', expected 'tlkit-model'"):
        model_io.read_meta(foreign)
