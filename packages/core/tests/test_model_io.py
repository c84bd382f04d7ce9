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


# -- the meta.json record (tlkit.types.ModelMeta) ------------------------------------------------------------


def _write_raw(path, meta):
    """A model file as an older or foreign writer made it: meta.json exactly as given, empty params."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.json", json.dumps(meta))
        zf.writestr("params.nd", b"")
    return path


def test_model_meta_round_trip_keeps_every_key(tmp_path):
    from tlkit import __version__
    from tlkit.types import ModelMeta

    meta = {
        "task": "t",
        "arch": "a",
        "classes": ["cat", "dog"],
        "input_shape": [3, 8, 8],
        "preprocessing": {"mode": "caffe"},
        "prune_exclude": ["head"],
        "plugin_key": {"x": [1, 2]},
    }
    path = model_io.save_model(tmp_path / "m.tlk", model_io.ModelFile(meta, {"w": mx.nd.ones((2,))}))
    raw = model_io.read_meta(path)
    assert raw == {
        **meta,
        "kind": "gluon",
        "format": "tlkit-model",
        "format_version": model_io.FORMAT_VERSION,
        "tlkit_version": __version__,
    }
    info = model_io.read_model_meta(path)
    assert isinstance(info, ModelMeta)
    assert (info.task, info.classes, info.input_shape, info.prune_exclude) == ("t", ["cat", "dog"], [3, 8, 8], ["head"])
    assert info.plugin_key == {"x": [1, 2]}  # a plugin's own key survives
    assert ModelMeta.of(raw).to_dict() == raw  # the dict form round-trips exactly: no defaults added


def test_resaved_model_gets_the_current_version(tmp_path):
    from tlkit import __version__

    old = {"format": "tlkit-model", "format_version": 0, "tlkit_version": "0.0.1", "task": "t"}
    path = model_io.save_model(tmp_path / "m.tlk", model_io.ModelFile(old, {"w": mx.nd.ones((2,))}))
    meta = model_io.read_meta(path)
    assert meta["format_version"] == model_io.FORMAT_VERSION == 1 and meta["tlkit_version"] == __version__


def test_file_without_version_is_read(tmp_path):
    """A file written before format_version existed (version 0): read, with kind and layout defaulted."""
    path = _write_raw(tmp_path / "old.tlk", {"format": "tlkit-model", "task": "t", "input_shape": [3, 4, 4]})
    assert model_io.read_meta(path) == {"format": "tlkit-model", "task": "t", "input_shape": [3, 4, 4]}
    info = model_io.read_model_meta(path)
    assert (info.format_version, info.kind, info.input_layout, info.classes) == (0, "gluon", "NCHW", [])


def test_newer_version_is_refused(tmp_path):
    path = _write_raw(tmp_path / "new.tlk", {"format": "tlkit-model", "format_version": 2, "kind": "hologram"})
    with pytest.raises(ModelFileError, match=r"new.tlk: written by a newer tlkit \(format_version 2\)"):
        model_io.read_meta(path)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("input_shape", [3, 8], r"key 'input_shape': expected \[C, H, W\], three positive integers \(got \[3, 8\]\)"),
        ("kind", "onnx", r"key 'kind': Input should be 'gluon' or 'graph'"),
        ("classes", "cat", r"key 'classes': Input should be a valid list \(got 'cat'\)"),
        ("prune_exclude", ["head", 3], r"key 'prune_exclude\.1': Input should be a valid string"),
    ],
)
def test_bad_meta_names_the_file_and_key(tmp_path, key, value, message):
    path = _write_raw(tmp_path / "bad.tlk", {"format": "tlkit-model", "format_version": 1, key: value})
    with pytest.raises(ModelFileError, match=r"bad.tlk: meta.json " + message):
        model_io.read_meta(path)
    with pytest.raises(ModelFileError, match=r"out.tlk \(writing\): meta.json " + message):
        model_io.save_model(tmp_path / "out.tlk", model_io.ModelFile({key: value}, {}))
    assert not (tmp_path / "out.tlk").exists()


def test_bad_meta_is_one_line_from_the_cli(tmp_path):
    from tlkit.testing.plugins import run_tlkit

    path = _write_raw(tmp_path / "bad.tlk", {"format": "tlkit-model", "format_version": 1, "classes": "cat"})
    r = run_tlkit(["model", "info", str(path)])
    assert r.returncode == 1
    assert r.stderr == f"error: {path}: meta.json key 'classes': Input should be a valid list (got 'cat')\n"


def test_meta_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.tlk"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("meta.json", "[1, 2]")
    with pytest.raises(ModelFileError, match="list.tlk: meta.json has format 'list', expected 'tlkit-model'"):
        model_io.read_meta(path)


def test_every_documented_key_has_a_description():
    from tlkit.types import ModelMeta

    missing = [name for name, f in ModelMeta.model_fields.items() if not f.description]
    assert missing == []


def test_types_module_stays_light():
    import subprocess
    import sys

    code = "import sys, tlkit.types; assert 'pydantic' not in sys.modules; from tlkit.types import ModelMeta; print(ModelMeta.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "tlkit.model_meta"
