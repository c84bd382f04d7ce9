"""INT8 calibration: TLT tensorfile format, activation ranges, TensorRT cache, Q/DQ ONNX."""

import h5py
import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet.gluon import nn
from onnx import helper, numpy_helper

from tlkit.errors import DataError, SpecError, TlkitError
from tlkit.export.onnx_export import export_onnx, read_onnx_metadata
from tlkit.export.qdq import quantize_qdq
from tlkit.export.ranges import compute_ranges
from tlkit.export.runners import OnnxRuntimeRunner
from tlkit.export.tensorfile import TensorFileWriter, read_tensorfile, tensorfile_info, write_tensorfile
from tlkit.export.trt_cache import amax_to_hex, read_trt_cache, trt_version_number, write_trt_cache

SHAPE = (3, 32, 32)


# -- tensorfile ------------------------------------------------------------------------------------


def test_tensorfile_round_trip_and_exact_tlt_layout(tmp_path):
    rs = np.random.RandomState(0)
    batches = [rs.randn(4, *SHAPE).astype(np.float32) for _ in range(3)]
    path = write_tensorfile(tmp_path / "cal.tensorfile", batches)
    with h5py.File(path, "r") as db:
        assert int(db.attrs["count"]) == 3
        assert tuple(db.attrs["shape"]) == (4, *SHAPE)
        assert sorted(db.keys()) == [f"_tensorfile_array_key__{i}" for i in range(3)]
        ds = db["_tensorfile_array_key__1"]["_tensorfile_array_key_"]
        assert ds.compression == "gzip" and ds.dtype == np.float32 and ds.shape == (4, *SHAPE)
        np.testing.assert_array_equal(ds[()], batches[1])
    assert tensorfile_info(path) == (3, (4, *SHAPE))
    back = list(read_tensorfile(path))
    assert len(back) == 3 and all(np.array_equal(a, b) for a, b in zip(back, batches))
    assert len(list(read_tensorfile(path, max_batches=2))) == 2


def test_tensorfile_written_by_plain_h5py_reads_back(tmp_path):
    """A file laid out as TAO writes it (written here with h5py alone) is read by our reader."""
    path = tmp_path / "tao.h5"
    data = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    with h5py.File(path, "w") as db:
        db.attrs["count"] = 2
        db.attrs["shape"] = data.shape
        for i in range(2):
            db.create_group(f"_tensorfile_array_key__{i}").create_dataset(
                "_tensorfile_array_key_", data=data + i, compression="gzip"
            )
    back = list(read_tensorfile(path))
    np.testing.assert_array_equal(back[1], data + 1)


def test_tensorfile_errors(tmp_path):
    with pytest.raises(DataError, match="earlier batches"):
        with TensorFileWriter(tmp_path / "x.h5") as tf:
            tf.write(np.zeros((2, 3, 8, 8), np.float32))
            tf.write(np.zeros((1, 3, 8, 8), np.float32))
    assert not (tmp_path / "x.h5").exists()  # nothing half-written under the final name
    (tmp_path / "plain.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match="not an HDF5 calibration tensorfile"):
        list(read_tensorfile(tmp_path / "plain.h5"))
    with h5py.File(tmp_path / "other.h5", "w") as db:
        db.create_dataset("x", data=np.zeros(3))
    with pytest.raises(DataError, match="'count' attribute"):
        list(read_tensorfile(tmp_path / "other.h5"))
    with pytest.raises(DataError, match="not found"):
        list(read_tensorfile(tmp_path / "missing.h5"))


# -- TensorRT cache ---------------------------------------------------------------------------------


def test_cache_hex_values_match_tensorrt():
    assert amax_to_hex(1.0) == "3c010204"
    assert amax_to_hex(2.5) == "3ca14285"
    assert amax_to_hex(6.0) == "3d418306"


def test_trt_version_number():
    assert trt_version_number("8.6.1") == 8601
    assert trt_version_number("10.3.0") == 10300
    assert trt_version_number("10.x") == 10000


def test_cache_write_and_import_round_trip(tmp_path):
    ranges = {"input": 1.0, "conv0_fwd": 2.5, "relu0_fwd": 6.0, "(Unnamed Layer* 4) [Fully Connected]_output": 0.123}
    path = write_trt_cache(ranges, tmp_path / "cal.bin", trt_version="8.6.1")
    lines = path.read_text().splitlines()
    assert lines[0] == "TRT-8601-EntropyCalibration2"
    assert lines[1:4] == ["input: 3c010204", "conv0_fwd: 3ca14285", "relu0_fwd: 3d418306"]
    back = read_trt_cache(path)
    assert list(back) == list(ranges)
    for k, v in ranges.items():
        assert back[k] == pytest.approx(v, rel=1e-6)


def test_cache_import_errors_name_the_line(tmp_path):
    p = tmp_path / "c.bin"
    p.write_text("hello\ninput: 3c010204\n")
    with pytest.raises(DataError, match=r"c.bin:1: expected a header"):
        read_trt_cache(p)
    p.write_text("TRT-8601-EntropyCalibration2\ninput: 3c010204\nbroken line\n")
    with pytest.raises(DataError, match=r"c.bin:3: expected '<tensor>: <8 hex digits>'"):
        read_trt_cache(p)


# -- ranges -----------------------------------------------------------------------------------------


def scale_relu_model():
    """y = Relu(2 * x): the ranges of its tensors are known in closed form."""
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["scaled"]), helper.make_node("Relu", ["scaled"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 1, 64, 64])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1, 64, 64])],
        [two],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)


def test_max_ranges_are_exact():
    rs = np.random.RandomState(0)
    batches = [rs.uniform(-3, 1, (2, 1, 64, 64)).astype(np.float32) for _ in range(2)]
    ranges = compute_ranges(scale_relu_model(), batches, "max")
    top = max(float(np.abs(b).max()) for b in batches)
    pos = max(float(b.max()) for b in batches)
    assert set(ranges) == {"x", "scaled", "y"}
    assert ranges["x"] == pytest.approx(top)
    assert ranges["scaled"] == pytest.approx(2 * top)
    assert ranges["y"] == pytest.approx(2 * pos)


def test_entropy_and_percentile_clip_outliers_but_not_uniform_data():
    rs = np.random.RandomState(0)
    uniform = [rs.uniform(-1, 1, (4, 1, 64, 64)).astype(np.float32)]
    r = compute_ranges(scale_relu_model(), uniform, "entropy")
    assert 0.9 <= r["x"] <= 1.0  # nothing to clip: keeps (nearly) the full range
    heavy = rs.laplace(0, 0.1, (4, 1, 64, 64)).astype(np.float32)
    heavy.flat[0] = 20.0  # one outlier in 16384 values, far out
    ent = compute_ranges(scale_relu_model(), [heavy], "entropy")["x"]
    pct = compute_ranges(scale_relu_model(), [heavy], "percentile")["x"]
    mx_ = compute_ranges(scale_relu_model(), [heavy], "max")["x"]
    assert mx_ == pytest.approx(20.0)
    assert ent < 0.25 * mx_
    assert pct < 0.5 * mx_  # the 99.99th percentile leaves out the top 1.6 of 16384 values
    assert ent > float(np.percentile(np.abs(heavy), 99))  # but covers the bulk of the distribution
    with pytest.raises(SpecError, match="calibration_method 'kl'"):
        compute_ranges(scale_relu_model(), uniform, "kl")
    with pytest.raises(DataError, match="at least one batch"):
        compute_ranges(scale_relu_model(), [], "max")


# -- Q/DQ --------------------------------------------------------------------------------------------


def structured_setup(tmp_path):
    """A small conv net and smooth (image-like) inputs: int8 should track fp32 closely."""
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(
        nn.Conv2D(16, 3, padding=1),
        nn.BatchNorm(),
        nn.Activation("relu"),
        nn.Conv2D(32, 3, strides=2, padding=1),
        nn.Activation("relu"),
        nn.GlobalAvgPool2D(),
        nn.Dense(10),
    )
    net.initialize(mx.init.Xavier())
    rs = np.random.RandomState(0)
    x = np.kron(rs.uniform(0, 1, (8, 3, 4, 4)), np.ones((1, 1, 8, 8))).astype(np.float32)
    meta = {"task": "classification", "classes": [str(i) for i in range(10)], "input_shape": list(SHAPE)}
    fp32 = export_onnx(net, tmp_path / "fp32.onnx", meta=meta)
    return net, x, meta, fp32


def rel_err(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_qdq_onnx_runs_and_tracks_fp32(tmp_path):
    _, x, _, fp32 = structured_setup(tmp_path)
    ref = OnnxRuntimeRunner(fp32).run(x)[0]
    ranges = compute_ranges(fp32, [x], "max")
    q = quantize_qdq(fp32, ranges, tmp_path / "int8.onnx")
    model = onnx.load(str(q))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") >= 4 and "DequantizeLinear" in ops
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    # activations: per-tensor symmetric int8 with scale amax/127
    assert inits["input_scale"] == pytest.approx(ranges["input"] / 127, rel=1e-6)
    assert inits["input_zero_point"].dtype == np.int8 and inits["input_zero_point"] == 0
    # weights: per-channel
    w_scales = [v for k, v in inits.items() if k.endswith("weight_scale")]
    assert w_scales and all(s.ndim == 1 and s.size > 1 for s in w_scales)
    out = OnnxRuntimeRunner(q).run(x)[0]
    assert rel_err(out, ref) < 0.05
    assert (out.argmax(1) == ref.argmax(1)).mean() >= 0.75
    assert read_onnx_metadata(q)["data_type"] == "int8"


def test_int8_export_writes_cache_and_imports_it(tmp_path):
    net, x, meta, fp32 = structured_setup(tmp_path)
    cache = tmp_path / "cal.bin"
    q1 = export_onnx(
        net,
        tmp_path / "a.onnx",
        meta=meta,
        data_type="int8",
        cal_batches=[x],
        calibration_method="max",
        cal_cache_file=cache,
    )
    ranges = read_trt_cache(cache)
    assert ranges["input"] == pytest.approx(float(np.abs(x).max()), rel=1e-6)
    # a second export imports the cache (no calibration data) and gets the same scales
    q2 = export_onnx(net, tmp_path / "b.onnx", meta=meta, data_type="int8", cal_cache_file=cache)

    def scales(p):
        return {
            t.name: numpy_helper.to_array(t).tolist()
            for t in onnx.load(str(p)).graph.initializer
            if t.name.endswith("_scale")
        }

    s1, s2 = scales(q1), scales(q2)
    assert s1.keys() == s2.keys()
    for k in s1:
        np.testing.assert_allclose(s1[k], s2[k], rtol=1e-6)
    ref = OnnxRuntimeRunner(fp32).run(x)[0]
    assert rel_err(OnnxRuntimeRunner(q2).run(x)[0], ref) < 0.05


def test_quantize_with_foreign_ranges_is_refused(tmp_path):
    _, _, _, fp32 = structured_setup(tmp_path)
    with pytest.raises(TlkitError, match="no calibration range for .* made for another model"):
        quantize_qdq(fp32, {"input": 1.0}, tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_entropy_search_finds_the_exhaustive_minimum():
    """The vectorized search lands where the plain one-candidate-at-a-time KL says the minimum is."""
    from tlkit.export.ranges import _entropy_amax, _kl_for_threshold

    rs = np.random.RandomState(0)
    for data in (rs.laplace(0, 0.1, 50000), np.maximum(rs.randn(50000), 0), rs.standard_t(3, 50000)):
        a = np.abs(data)
        hist = np.histogram(a, bins=2048, range=(0, a.max()))[0].astype(np.float64)
        tail = np.cumsum(hist[::-1])[::-1]
        kls = [_kl_for_threshold(hist, tail, i, 128) for i in range(128, 2049)]
        exhaustive = (128 + int(np.argmin(kls))) * a.max() / 2048
        assert _entropy_amax(hist, a.max()) == pytest.approx(exhaustive, rel=1e-9)


def test_tao_cal_json_and_dict_batches(tmp_path):
    import json

    from tlkit.export.ranges import save_ranges_json

    path = save_ranges_json({"input": 1.5, "conv": 3.0}, tmp_path / "cal.json")
    assert json.loads(path.read_text()) == {"tensor_scales": {"input": 1.5, "conv": 3.0}}
    # multi-input tensorfiles store a dict of arrays per batch, as TAO's writer does
    with TensorFileWriter(tmp_path / "multi.h5") as tf:
        tf.write({"image": np.ones((2, 3, 4, 4), np.float32), "mask": np.zeros((2, 3, 4, 4), np.float32)})
    (batch,) = list(read_tensorfile(tmp_path / "multi.h5"))
    assert sorted(batch) == ["image", "mask"] and batch["image"].sum() == 96


@pytest.fixture(scope="module")
def trained_net_onnx(tmp_path_factory):
    """A really trained network (EfficientNet-Lite0, the ImageNet weights core ships) and real photos."""
    skdata = pytest.importorskip("skimage.data")
    from tlkit.backbones import imagenet_classifier

    net, preprocess = imagenet_classifier("efficientnet_lite0")

    def rgb(im):
        return np.repeat(im[..., None], 3, axis=2) if im.ndim == 2 else im[..., :3]

    photos = [
        skdata.chelsea(),
        skdata.coffee(),
        skdata.rocket(),
        skdata.stereo_motorcycle()[0],
        rgb(skdata.camera()),
        skdata.astronaut(),
        rgb(skdata.coins()),
        rgb(skdata.brick()),
    ]
    x = np.concatenate([preprocess(p).asnumpy() for p in photos])
    path = export_onnx(net, tmp_path_factory.mktemp("eff") / "fp32.onnx", input_shape=(3, 224, 224))
    return path, x, OnnxRuntimeRunner(path).run(x)[0]


@pytest.mark.slow
@pytest.mark.parametrize("method, min_top1", [("max", 7), ("entropy", 6)])
def test_int8_of_a_trained_net_keeps_its_predictions(trained_net_onnx, tmp_path, method, min_top1):
    """Q/DQ int8 of a trained ImageNet net calibrated on 8 real photos keeps fp32's answers on them."""
    fp32, x, ref = trained_net_onnx
    q = quantize_qdq(fp32, compute_ranges(fp32, [x], method), tmp_path / "int8.onnx")
    out = OnnxRuntimeRunner(q).run(x)[0]
    top1 = ref.argmax(1)
    assert (out.argmax(1) == top1).sum() >= min_top1
    top5 = np.argsort(-out, axis=1)[:, :5]
    assert all(t in row for t, row in zip(top1, top5))  # fp32's answer always among int8's top 5


# -- weights per kind of conv, the two Q/DQ layouts ------------------------------------------------


def _mbconv_onnx(path):
    """conv-BN-ReLU6, depthwise conv-BN-ReLU6, 1x1 conv, pool, dense: the MobileNet/EfficientNet-Lite pattern."""

    class Net(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.c1, self.b1 = nn.Conv2D(16, 3, padding=1), nn.BatchNorm()
            self.dw, self.b2 = nn.Conv2D(16, 3, padding=1, groups=16), nn.BatchNorm()
            self.pw, self.out = nn.Conv2D(8, 1), nn.Dense(5)

        def hybrid_forward(self, F, x):
            x = F.clip(self.b1(self.c1(x)), 0, 6)
            x = F.clip(self.b2(self.dw(x)), 0, 6)
            return self.out(F.contrib.AdaptiveAvgPooling2D(self.pw(x), output_size=1))

    mx.random.seed(3)
    net = Net()
    net.initialize(mx.init.Xavier())
    return export_onnx(net, path, meta={"task": "classification", "input_shape": list(SHAPE)})


def _weight_quant(qmodel):
    """{conv group: (scale shape, max |int8 weight|)} of the Conv weights of a Q/DQ model."""
    inits = {t.name: numpy_helper.to_array(t) for t in qmodel.graph.initializer}
    dq = {n.output[0]: n for n in qmodel.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for n in qmodel.graph.node:
        if n.op_type == "Conv":
            d = dq[n.input[1]]
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            out[group] = (inits[d.input[1]].shape, int(np.abs(inits[d.input[0]].astype(int)).max()))
    return out


def test_ranges_know_which_tensors_are_never_negative(tmp_path):
    fp32 = _mbconv_onnx(tmp_path / "fp32.onnx")
    x = np.random.RandomState(0).randn(4, *SHAPE).astype(np.float32)
    ranges = compute_ranges(fp32, [x], "max")
    clips = [n.output[0] for n in onnx.load(str(fp32)).graph.node if n.op_type == "Clip"]
    assert len(clips) == 2 and set(clips) <= ranges.nonnegative
    assert "input" not in ranges.nonnegative  # normal noise has negative values
    assert ranges["input"] == pytest.approx(float(np.abs(x).max()))


def test_depthwise_weights_keep_8_bits_per_channel(tmp_path):
    fp32 = _mbconv_onnx(tmp_path / "fp32.onnx")
    x = np.random.RandomState(0).randn(4, *SHAPE).astype(np.float32)
    q = quantize_qdq(fp32, compute_ranges(fp32, [x], "max"), tmp_path / "int8.onnx")
    w = _weight_quant(onnx.load(str(q)))
    assert w[16] == ((16,), 127)  # depthwise: per-channel, full 8 bits (onnxruntime's depthwise kernel is exact)
    assert w[1][0] in ((16,), (8,)) and w[1][1] == 64  # GEMM-backed convs: per-channel, 7 bits
    q8 = quantize_qdq(fp32, compute_ranges(fp32, [x], "max"), tmp_path / "int8_full.onnx", reduce_range=False)
    assert all(v[1] == 127 for v in _weight_quant(onnx.load(str(q8))).values())


def test_onnxruntime_layout_fuses_every_conv(tmp_path):
    import onnxruntime as ort

    fp32 = _mbconv_onnx(tmp_path / "fp32.onnx")
    rs = np.random.RandomState(0)
    cal = [rs.uniform(-2, 2, (8, *SHAPE)).astype(np.float32) for _ in range(2)]
    ranges = compute_ranges(fp32, cal, "max")
    ref = OnnxRuntimeRunner(fp32).run(cal[0])[0]
    ops = {}
    for fmt in ("tensorrt", "onnxruntime"):
        q = quantize_qdq(fp32, ranges, tmp_path / f"{fmt}.onnx", qdq_format=fmt)
        assert read_onnx_metadata(q)["qdq_format"] == fmt
        out = OnnxRuntimeRunner(q).run(cal[0])[0]
        assert np.abs(out - ref).max() <= 0.1 * np.abs(ref).max(), fmt
        so = ort.SessionOptions()
        so.optimized_model_filepath = str(tmp_path / f"{fmt}.opt.onnx")
        ort.InferenceSession(str(q), so, providers=["CPUExecutionProvider"])
        ops[fmt] = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
        zps = [numpy_helper.to_array(t) for t in onnx.load(str(q)).graph.initializer if "zero_point" in t.name]
        if fmt == "tensorrt":  # TensorRT: int8 activations, zero point 0 everywhere
            assert all(z.dtype == np.int8 and not z.any() for z in zps)
    # uint8 activations: every conv runs as QLinearConv and ReLU6 is folded into the quantization
    assert ops["onnxruntime"].count("QLinearConv") == 3
    assert "Conv" not in ops["onnxruntime"] and "Clip" not in ops["onnxruntime"]
    assert "Clip" in ops["tensorrt"]  # int8 activations: onnxruntime keeps the float Clip between DQ and Q
    with pytest.raises(SpecError, match="qdq_format 'tflite'"):
        quantize_qdq(fp32, ranges, tmp_path / "x.onnx", qdq_format="tflite")


# -- output heads stay float ---------------------------------------------------------------------------


def test_output_head_nodes_are_the_last_weighted_layers_and_what_follows(tmp_path):
    _, _, _, fp32 = structured_setup(tmp_path)  # conv-bn-relu, conv-relu, pool, dense
    from tlkit.export.qdq import output_head_nodes

    model = onnx.load(str(fp32))
    heads = output_head_nodes(model)
    by_name = {n.name: n for n in model.graph.node}
    # the classifier and the Softmax a classifier export ends in; the pool before them is not a head
    assert [by_name[h].op_type for h in heads] == ["Gemm", "Softmax"]

    # two heads (DetectNet_v2-like): coverage conv + sigmoid and bbox conv; the shared trunk is no head
    class TwoHeads(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.trunk, self.cov, self.bbox = nn.Conv2D(8, 3, padding=1), nn.Conv2D(2, 1), nn.Conv2D(8, 1)

        def hybrid_forward(self, F, x):
            f = F.relu(self.trunk(x))
            return F.sigmoid(self.cov(f)), self.bbox(f)

    mx.random.seed(0)
    net = TwoHeads()
    net.initialize(mx.init.Xavier())
    two = onnx.load(str(export_onnx(net, tmp_path / "two.onnx", meta={"input_shape": list(SHAPE)})))
    by_name = {n.name: n for n in two.graph.node}
    assert sorted(by_name[h].op_type for h in output_head_nodes(two)) == ["Conv", "Conv", "Sigmoid"]


def test_int8_keeps_output_heads_float_unless_asked(tmp_path):
    """The reported failure: entropy calibration gave a trained classifier's logits a range of +-0.25, so every
    logit saturated and every prediction became the same class. By default the head is not quantized."""
    net, x, meta, _ = structured_setup(tmp_path)
    fp32 = export_onnx(net, tmp_path / "logits.onnx", meta={**meta, "task": "other"})  # logits out, no softmax
    ref = OnnxRuntimeRunner(fp32).run(x)[0]
    x = x * (4.0 / np.abs(ref).max())  # logits over about +-4 (the net is positively homogeneous)
    ref = OnnxRuntimeRunner(fp32).run(x)[0]
    ranges = compute_ranges(fp32, [x], "max")
    ranges["output"] = 0.25  # what entropy calibration picked for the logits in the report
    float_heads = quantize_qdq(fp32, ranges, tmp_path / "default.onnx")
    int8_heads = quantize_qdq(fp32, ranges, tmp_path / "heads.onnx", quantize_output_heads=True)

    model = onnx.load(str(float_heads))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    weights = {t.name: t for t in model.graph.initializer}
    assert weights[gemm.input[1]].data_type == onnx.TensorProto.FLOAT  # float weights, no DequantizeLinear
    assert produced_by["output"] == "Gemm"  # no Q/DQ after the head
    assert read_onnx_metadata(float_heads)["int8_output_heads"] is False
    out = OnnxRuntimeRunner(float_heads).run(x)[0]
    assert rel_err(out, ref) < 0.05 and (out.argmax(1) == ref.argmax(1)).mean() >= 0.75

    clipped = OnnxRuntimeRunner(int8_heads).run(x)[0]
    assert np.abs(clipped).max() <= 0.26  # the logits clipped to the calibrated range
    assert read_onnx_metadata(int8_heads)["int8_output_heads"] is True


def test_trt_cache_leaves_out_the_heads(tmp_path):
    net, x, meta, fp32 = structured_setup(tmp_path)
    cache = tmp_path / "cal.bin"
    export_onnx(
        net,
        tmp_path / "q.onnx",
        meta=meta,
        data_type="int8",
        cal_batches=[x],
        calibration_method="entropy",
        cal_cache_file=cache,
    )
    model = onnx.load(str(fp32))
    gemm_out = next(n.output[0] for n in model.graph.node if n.op_type == "Gemm")
    pool_out = next(n.output[0] for n in model.graph.node if n.op_type == "GlobalAveragePool")
    names = set(read_trt_cache(cache))
    assert "input" in names and pool_out in names  # the head's input keeps its range
    assert gemm_out not in names and "output" not in names  # TensorRT keeps the head's output in float
    export_onnx(
        net,
        tmp_path / "q2.onnx",
        meta=meta,
        data_type="int8",
        cal_batches=[x],
        calibration_method="entropy",
        cal_cache_file=tmp_path / "all.bin",
        quantize_output_heads=True,
    )
    assert gemm_out in set(read_trt_cache(tmp_path / "all.bin"))


def test_calibration_module_still_exports_its_parts():
    """tlkit.export.calibration was split into tensorfile / ranges / trt_cache / qdq; old imports keep working."""
    import tlkit.export.calibration as cal
    from tlkit.export import qdq, ranges, tensorfile, trt_cache

    parts = {n: getattr(m, n) for m in (qdq, ranges, tensorfile, trt_cache) for n in dir(m) if not n.startswith("_")}
    assert set(cal.__all__) - {"quantize_with_calibration", "batches_from_images"} <= set(parts)
    for name in cal.__all__:
        assert getattr(cal, name) is parts.get(name, getattr(cal, name)), name
