"""Weight files: PyTorch .pth read without torch (zip and legacy layouts, hand-written here the way torch
writes them), refusal of non-tensor pickles, MXNet .params and .tlk, the filtered load and its report,
and weight references (paths, named sets, gluoncv://)."""

from __future__ import annotations

import io
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from tlkit.backbones import build_backbone
from tlkit.backbones.base import ImageNetClassifier
from tlkit.errors import ModelFileError, UnknownNameError
from tlkit.pth import load_pth
from tlkit.weights import LoadReport, load_pretrained, load_weight_file, resolve_weights

# -- writing .pth files the way torch.save does, without torch -------------------------------------------

MAGIC = 0x1950A86A20F9469CFC6C
_NP_TO_STORAGE = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.uint8): "ByteStorage",
}


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, np.ascontiguousarray(data).reshape(-1)


class _Tensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride))


def _fake_torch(monkeypatch):
    """Just enough of a `torch` module for pickle to write the globals torch.save writes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in _NP_TO_STORAGE.values():
        cls = type(name, (), {"__module__": "torch"})
        setattr(torch, name, cls)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    _Tensor.__reduce__ = lambda self: (utils._rebuild_tensor_v2, (*self.args, False, OrderedDict()))
    return torch


class _Pickler(pickle.Pickler):
    def __init__(self, fh, torch):
        super().__init__(fh, protocol=2)
        self.torch, self.seen = torch, {}

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            self.seen[obj.key] = obj
            return ("storage", getattr(self.torch, _NP_TO_STORAGE[obj.data.dtype]), obj.key, "cpu", obj.data.size)
        return None


def write_pth(path: Path, state: dict, monkeypatch, *, legacy: bool = False, archive: str = "archive") -> Path:
    """`state`: name -> numpy array (own storage) or _Tensor (views into shared storages)."""
    torch = _fake_torch(monkeypatch)
    obj = OrderedDict()
    for i, (name, value) in enumerate(state.items()):
        if isinstance(value, np.ndarray):
            st = _Storage(str(i), value)  # torch names storages "0", "1", ...
            strides = tuple(s // value.itemsize for s in np.array(value, order="C").strides)
            value = _Tensor(st, 0, value.shape, strides)
        obj[name] = value
    obj._metadata = OrderedDict({"": {"version": 1}})  # torch state dicts carry this attribute
    buf = io.BytesIO()
    pickler = _Pickler(buf, torch)
    pickler.dump(obj)
    if legacy:
        with open(path, "wb") as fh:
            for header in (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(header, fh, protocol=2)
            fh.write(buf.getvalue())
            pickle.dump(list(pickler.seen), fh, protocol=2)
            for st in pickler.seen.values():
                fh.write(struct.pack("<q", st.data.size) + st.data.astype(st.data.dtype.newbyteorder("<")).tobytes())
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr(f"{archive}/data.pkl", buf.getvalue())
            zf.writestr(f"{archive}/byteorder", "little")
            for st in pickler.seen.values():
                zf.writestr(f"{archive}/data/{st.key}", st.data.tobytes())
            zf.writestr(f"{archive}/version", "3\n")
    return path


@pytest.fixture
def state():
    rng = np.random.default_rng(0)
    shared = _Storage("99", rng.standard_normal(40).astype(np.float32))
    return {
        "conv.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "half": rng.standard_normal((5,)).astype(np.float16),
        # two views of one storage: an offset slice and a transposed (non-contiguous) matrix
        "view.a": _Tensor(shared, 4, (2, 3), (3, 1)),
        "view.t": _Tensor(shared, 10, (5, 6), (1, 5)),
    }


def _expected(state):
    out = {}
    for k, v in state.items():
        if isinstance(v, _Tensor):
            st, off, size, stride = v.args
            v = np.lib.stride_tricks.as_strided(st.data[off:], size, [s * st.data.itemsize for s in stride])
        out[k] = np.array(v)
    return out


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pth_round_trip(tmp_path, monkeypatch, state, legacy):
    path = write_pth(tmp_path / "w.pth", state, monkeypatch, legacy=legacy)
    monkeypatch.delitem(sys.modules, "torch")  # reading must not need torch
    monkeypatch.delitem(sys.modules, "torch._utils")
    got = load_pth(path)
    want = _expected(state)
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        np.testing.assert_array_equal(got[k], want[k])
    np.testing.assert_array_equal(got["view.t"], want["view.t"])
    assert got["view.t"].flags["C_CONTIGUOUS"]


def test_pth_is_found_by_the_registered_sniffer(tmp_path, monkeypatch, state):
    path = write_pth(tmp_path / "weights.bin", state, monkeypatch, archive="weights")  # any name, any root
    assert set(load_weight_file(path)) == set(state)


def test_nested_checkpoint_is_unwrapped(tmp_path, monkeypatch):
    torch = _fake_torch(monkeypatch)
    buf = io.BytesIO()
    w = np.arange(6, dtype=np.float32)
    pickler = _Pickler(buf, torch)
    pickler.dump({"epoch": 3, "state_dict": {"module.fc.weight": _Tensor(_Storage("0", w), 0, (2, 3), (3, 1))}})
    path = tmp_path / "ckpt.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/data/0", w.tobytes())
    got = load_pth(path)
    assert list(got) == ["fc.weight"]
    np.testing.assert_array_equal(got["fc.weight"], w.reshape(2, 3))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # os.system('touch ...') in pickle protocol 0
    path = tmp_path / "evil.pth"
    if legacy:
        path.write_bytes(pickle.dumps(MAGIC, 2) + pickle.dumps(1001, 2) + pickle.dumps({}, 2) + payload)
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", payload)
    with pytest.raises(ModelFileError) as err:
        load_weight_file(path)
    assert str(err.value) == (
        f"{path}: refusing to unpickle global 'os.system': only tensor data is allowed in a weights file "
        "(a .pth is a pickle and could run code)"
    )
    assert not marker.exists()


def test_builtins_are_refused_too(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(ModelFileError, match=r"refusing to unpickle global 'builtins.eval'"):
        load_pth(path)


def test_pth_without_tensors_is_an_error(tmp_path):
    path = tmp_path / "empty.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"epoch": 1}, protocol=2))
    with pytest.raises(ModelFileError, match=r"empty.pth: no tensors found"):
        load_pth(path)


# -- MXNet .params and .tlk -------------------------------------------------------------------------------


def test_params_with_arg_aux_prefixes(tmp_path):
    path = tmp_path / "net-0000.params"
    mx.nd.save(str(path), {"arg:conv0_weight": mx.nd.ones((2, 3)), "aux:bn0_running_mean": mx.nd.zeros(2)})
    got = load_weight_file(path)
    assert sorted(got) == ["bn0_running_mean", "conv0_weight"]
    np.testing.assert_array_equal(got["conv0_weight"], np.ones((2, 3), np.float32))


def test_params_from_save_parameters_and_tlk(tmp_path):
    from tlkit.model_io import save_net

    bb = build_backbone("resnet10")
    bb.initialize()
    bb(mx.nd.zeros((1, 3, 32, 32)))
    bb.save_parameters(str(tmp_path / "bb.params"))
    save_net(tmp_path / "bb.tlk", bb, {"task": "classification", "arch": "resnet10"})
    own = {n: p.data().asnumpy() for n, p in bb._collect_params_with_prefix().items()}
    for name in ("bb.params", "bb.tlk"):
        got = load_weight_file(tmp_path / name)
        assert set(got) == set(own), name
        np.testing.assert_array_equal(got["features.0.weight"], own["features.0.weight"])


def test_unnamed_params_list_is_an_error(tmp_path):
    path = tmp_path / "list.params"
    mx.nd.save(str(path), [mx.nd.ones(2)])
    with pytest.raises(ModelFileError, match=r"list.params: holds an unnamed list of 1 arrays"):
        load_weight_file(path)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ModelFileError, match=r"nope.pth: weights file not found$"):
        load_weight_file(tmp_path / "nope.pth")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(
        ModelFileError,
        match=r"notes.txt: unrecognised weights format; expected one of: "
        r"tlkit, mxnet-params, pytorch-pth",
    ):
        load_weight_file(text)
    keras = tmp_path / "resnet_18.hdf5"  # a TLT/TAO pretrained model
    keras.write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(ModelFileError, match=r"resnet_18.hdf5: unrecognised weights format \(a TLT/TAO Keras model: "):
        load_weight_file(keras)
    with pytest.raises(ModelFileError, match=r"missing.params: weights file not found"):
        load_pretrained(build_backbone("resnet10"), str(tmp_path / "missing.params"))


# -- the filtered load ------------------------------------------------------------------------------------


def _classifier(classes: int, seed: int) -> ImageNetClassifier:
    mx.random.seed(seed)
    net = ImageNetClassifier(build_backbone("resnet10"), classes=classes)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 32, 32)))
    return net


def test_filtered_load_skips_shape_mismatch_and_lists_new(tmp_path):
    src = _classifier(5, seed=1)
    src.save_parameters(str(tmp_path / "src.params"))
    mx.nd.save(
        str(tmp_path / "extra.params"),
        {**{n: p.data() for n, p in src._collect_params_with_prefix().items()}, "unused.weight": mx.nd.ones(3)},
    )
    dst = _classifier(3, seed=2)
    report = load_pretrained(dst, str(tmp_path / "extra.params"))
    head = ["output.weight", "output.bias"]
    assert report.new == head
    assert dict(report.skipped) == {
        "output.weight": "shape (5, 512) in file, (3, 512) in network",
        "output.bias": "shape (5,) in file, (3,) in network",
        "unused.weight": "no parameter 'unused.weight' in the network",
    }
    src_p, dst_p = src._collect_params_with_prefix(), dst._collect_params_with_prefix()
    assert sorted(report.loaded) == sorted(n for n in dst_p if n not in head)
    for n in report.loaded:
        np.testing.assert_array_equal(dst_p[n].data().asnumpy(), src_p[n].data().asnumpy())
    assert not np.array_equal(dst_p["output.weight"].data().asnumpy()[:3], src_p["output.weight"].data().asnumpy()[:3])
    assert report.summary() == (
        f"{tmp_path / 'extra.params'}: loaded {len(report.loaded)} tensors, 2 new (not in file), 3 skipped"
    )
    assert report.table().row_count == 5


def test_prefix_and_weight_map_place_backbone_weights(tmp_path):
    bb = build_backbone("resnet10")
    bb.initialize()
    bb(mx.nd.zeros((1, 3, 32, 32)))
    # a "foreign" file: every name renamed; the weight map translates back, and drops the stem BN
    mx.nd.save(str(tmp_path / "f.params"), {"x/" + n: p.data() for n, p in bb._collect_params_with_prefix().items()})
    net = _classifier(4, seed=3)
    report = load_pretrained(
        net,
        str(tmp_path / "f.params"),
        prefix="backbone.",
        weight_map=lambda n: None if n.startswith("x/features.1.") else n[2:],
    )
    assert set(report.new) == {"output.weight", "output.bias"} | {
        f"backbone.features.1.{k}" for k in ("gamma", "beta", "running_mean", "running_var")
    }
    assert {r for _, r in report.skipped} == {"not used by this network (weight map)"}
    np.testing.assert_array_equal(
        net._collect_params_with_prefix()["backbone.features.0.weight"].data().asnumpy(),
        bb._collect_params_with_prefix()["features.0.weight"].data().asnumpy(),
    )


def test_load_into_uninitialised_net_sets_shapes(tmp_path):
    src = _classifier(2, seed=4)
    src.save_parameters(str(tmp_path / "s.params"))
    dst = ImageNetClassifier(build_backbone("resnet10"), classes=2)  # never initialised
    report = load_pretrained(dst, str(tmp_path / "s.params"))
    assert report.new == [] and report.skipped == []
    out = dst(mx.nd.ones((1, 3, 32, 32)))
    np.testing.assert_allclose(out.asnumpy(), src(mx.nd.ones((1, 3, 32, 32))).asnumpy(), rtol=1e-5)


def test_empty_report_summary():
    assert LoadReport("x").summary() == "x: loaded 0 tensors, 0 new (not in file), 0 skipped"


# -- resolving references ---------------------------------------------------------------------------------


def test_resolve_local_and_named(tmp_path):
    f = tmp_path / "w.params"
    f.write_bytes(b"x")
    assert resolve_weights(str(f)) == f
    lite = resolve_weights("imagenet", arch="efficientnet_lite0")
    assert lite.name == "efficientnet-lite0-57934424.pth" and lite.is_file()
    with pytest.raises(
        ModelFileError,
        match=r"imagenet: weights file not found \(resnet18 knows no pretrained "
        r"set 'imagenet'\)",
    ):
        resolve_weights("imagenet", arch="resnet18")


def test_resolve_gluoncv(tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    monkeypatch.setenv("TLKIT_OFFLINE", "1")
    models = tmp_path / "models"
    models.mkdir()
    (models / "resnet18_v1-a0666292.params").write_bytes(b"x")
    assert resolve_weights("gluoncv://resnet18_v1") == models / "resnet18_v1-a0666292.params"
    with pytest.raises(ModelFileError, match=rf"gluoncv://resnet50_v1: not in {models} and TLKIT_OFFLINE is set"):
        resolve_weights("gluoncv://resnet50_v1")
    with pytest.raises(UnknownNameError, match=r"unknown GluonCV pretrained model 'resnet18_v9'; did you mean"):
        resolve_weights("gluoncv://resnet18_v9")


def test_gluoncv_store_file_loads_into_the_backbone(tmp_path, monkeypatch):
    """gluoncv://resnet18_v1 from $MXNET_HOME/models: every backbone tensor by name; the features match."""
    from gluoncv import model_zoo

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    ref = model_zoo.get_model("resnet18_v1", pretrained=False)
    ref.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    ref(x)
    (tmp_path / "models").mkdir()
    ref.save_parameters(str(tmp_path / "models" / "resnet18_v1-a0666292.params"))
    bb = build_backbone("resnet", n_layers=18)
    report = load_pretrained(bb, "gluoncv://resnet18_v1")
    assert report.new == []
    assert sorted(n for n, _ in report.skipped) == ["output.bias", "output.weight"]
    want = ref.features[:8](x).asnumpy()  # GluonCV's layers up to the global pool
    np.testing.assert_allclose(bb(x).asnumpy(), want, rtol=1e-5, atol=1e-6)


def test_gluoncv_v1b_weights_fill_the_v1_layout_resnet18(tmp_path, monkeypatch):
    """gluoncv://resnet18_v1b (conv1/layerN names) loads through its weight map: every backbone tensor, and the
    features equal GluonCV's own resnet18_v1b (basic blocks: v1b and v1 are the same network)."""
    from gluoncv import model_zoo

    from tlkit.hub import gluoncv_store

    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    ref = model_zoo.get_model("resnet18_v1b", pretrained=False)
    ref.initialize(mx.init.Xavier())
    x = mx.nd.random.uniform(shape=(1, 3, 64, 64))
    ref(x)
    path = gluoncv_store.local_path("resnet18_v1b")
    path.parent.mkdir(parents=True)
    ref.save_parameters(str(path))
    bb = build_backbone("resnet", n_layers=18)
    report = load_pretrained(bb, "gluoncv://resnet18_v1b")
    assert report.new == [] and len(report.loaded) == 100
    assert sorted(n for n, _ in report.skipped) == ["fc.bias", "fc.weight"]
    want = ref.layer4(ref.layer3(ref.layer2(ref.layer1(ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))))))
    np.testing.assert_allclose(bb(x).asnumpy(), want.asnumpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(
        ModelFileError,
        match=r"gluoncv://resnet18_v1b holds resnet18 ImageNet weights, the network's "
        r"backbone is resnet34; use gluoncv://resnet34_v1, gluoncv://resnet34_v1b",
    ):
        load_pretrained(build_backbone("resnet", n_layers=34), "gluoncv://resnet18_v1b")
