"""ONNX export: onnxruntime matches MXNet, dynamic/static batch, names, metadata, opsets, fp16, runners,
and the generic `export` command."""

import mxnet as mx
import numpy as np
import onnx
import pytest
from mxnet.gluon import nn

from tlkit import model_io
from tlkit.errors import DataError, ModelFileError, SpecError, TlkitError
from tlkit.export.onnx_export import ExportError, export_onnx, read_onnx_metadata
from tlkit.export.runners import MXNetRunner, OnnxRuntimeRunner, load_runner
from tlkit.testing.export import assert_onnx_matches

SHAPE = (3, 32, 32)
CLASSES = ["cat", "dog", "bird", "fish", "frog"]


def tiny_net(classes=5):
    mx.random.seed(0)
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"), nn.GlobalAvgPool2D(), nn.Dense(classes))
    net.initialize(mx.init.Xavier())
    return net


class TwoHeads(nn.HybridBlock):
    """A net with two outputs (like a detector's class and box heads)."""

    def __init__(self):
        super().__init__()
        self.body = nn.HybridSequential()
        self.body.add(nn.Conv2D(8, 3, padding=1, strides=2), nn.Activation("relu"))
        self.cls = nn.Conv2D(4, 1)
        self.box = nn.Conv2D(2, 1)

    def hybrid_forward(self, F, x):
        f = self.body(x)
        return self.cls(f), F.sigmoid(self.box(f))


def gluoncv_net(name, **kw):
    from gluoncv.model_zoo import get_model

    mx.random.seed(0)
    net = get_model(name, pretrained=False, classes=5, **kw)
    net.initialize(mx.init.Xavier())
    return net


META = {
    "task": "classification",
    "arch": "tiny",
    "classes": CLASSES,
    "input_shape": list(SHAPE),
    "preprocessing": {"mode": "caffe"},
    "postprocessing": {"top_k": 3},
}


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    net = tiny_net()
    path = export_onnx(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", meta=META)
    return net, path


def test_resnet18_matches_mxnet_at_batch_1_and_3(tmp_path):
    path = assert_onnx_matches(gluoncv_net("resnet18_v1"), SHAPE, meta=META, out_dir=tmp_path)
    assert path.is_file()


def test_mobilenetv2_matches_mxnet(tmp_path):
    assert_onnx_matches(gluoncv_net("mobilenetv2_0.25"), SHAPE, meta=META, out_dir=tmp_path)


def test_two_output_net_gets_task_output_names(tmp_path):
    net = TwoHeads()
    net.initialize(mx.init.Xavier())
    meta = {"task": "detection", "input_shape": list(SHAPE), "output_names": ["cls", "box"]}
    path = assert_onnx_matches(net, SHAPE, meta=meta, out_dir=tmp_path)
    runner = OnnxRuntimeRunner(path)
    assert runner.output_names == ["cls", "box"]
    cls, box = runner.run(np.zeros((2, *SHAPE), np.float32))
    assert cls.shape == (2, 4, 16, 16) and box.shape == (2, 2, 16, 16)
    assert read_onnx_metadata(path)["output_shapes"] == [["batch", 4, 16, 16], ["batch", 2, 16, 16]]


def test_graph_structure_names_and_ir_version(tiny_onnx):
    _, path = tiny_onnx
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"]  # initializers are not graph inputs
    assert [o.name for o in model.graph.output] == ["output"]
    in_dims = model.graph.input[0].type.tensor_type.shape.dim
    assert in_dims[0].dim_param == "batch" and [d.dim_value for d in in_dims[1:]] == list(SHAPE)
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == 5
    assert {o.domain: o.version for o in model.opset_import}[""] == 13
    assert model.ir_version == 7  # the lowest IR for opset 13: old runtimes load it


def test_metadata_round_trips(tiny_onnx):
    _, path = tiny_onnx
    md = read_onnx_metadata(path)
    assert md["task"] == "classification" and md["arch"] == "tiny"
    assert md["classes"] == CLASSES
    assert md["input_shape"] == list(SHAPE) and md["input_layout"] == "NCHW"
    assert md["input_name"] == "input" and md["output_names"] == ["output"]
    assert md["batch"] == "batch" and md["data_type"] == "fp32"
    assert md["postprocessing"] == {"top_k": 3}
    pre = md["preprocessing"]
    assert pre["channel_order"] == "BGR" and pre["mean"] == [103.939, 116.779, 123.68] and pre["std"] == [1, 1, 1]
    from tlkit import __version__

    assert md["tlkit_version"] == __version__


def test_dynamic_batch_runs_any_batch(tiny_onnx):
    net, path = tiny_onnx
    runner = OnnxRuntimeRunner(path)
    for b in (1, 3, 7):
        x = np.random.RandomState(b).uniform(-1, 1, (b, *SHAPE)).astype(np.float32)
        (out,) = runner.run(x)
        probs = mx.nd.softmax(net(mx.nd.array(x)), axis=-1).asnumpy()  # a classifier's export ends in a Softmax
        np.testing.assert_allclose(out, probs, rtol=1e-4, atol=1e-6)


def test_classifier_export_gives_probabilities_other_tasks_raw_outputs(tiny_onnx, tmp_path):
    net, path = tiny_onnx
    assert read_onnx_metadata(path)["output_activation"] == "softmax"
    assert onnx.load(str(path)).graph.node[-1].op_type == "Softmax"
    x = np.random.RandomState(0).uniform(-1, 1, (4, *SHAPE)).astype(np.float32)
    (p,) = OnnxRuntimeRunner(path).run(x)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    other = export_onnx(net, tmp_path / "pose.onnx", meta={**META, "task": "pose"})
    assert "output_activation" not in read_onnx_metadata(other)
    (raw,) = OnnxRuntimeRunner(other).run(x)
    np.testing.assert_allclose(raw, net(mx.nd.array(x)).asnumpy(), rtol=1e-4, atol=1e-6)


def test_static_batch_fixes_the_dim(tmp_path):
    path = export_onnx(tiny_net(), tmp_path / "s.onnx", meta=META, static_batch_size=2)
    model = onnx.load(str(path))
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [2, *SHAPE]
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 2
    assert read_onnx_metadata(path)["batch"] == 2
    runner = OnnxRuntimeRunner(path)
    assert runner.run(np.zeros((2, *SHAPE), np.float32))[0].shape == (2, 5)
    with pytest.raises(DataError, match="static batch 2"):
        runner.run(np.zeros((3, *SHAPE), np.float32))


def test_opset_12_and_higher_opsets(tmp_path):
    net = tiny_net()
    x = np.random.RandomState(0).uniform(-1, 1, (2, *SHAPE)).astype(np.float32)
    ref = mx.nd.softmax(net(mx.nd.array(x)), axis=-1).asnumpy()  # a classifier's export ends in a Softmax
    for opset, ir in ((12, 7), (17, 8)):
        path = export_onnx(net, tmp_path / f"o{opset}.onnx", meta=META, opset=opset)
        model = onnx.load(str(path))
        assert {o.domain: o.version for o in model.opset_import}[""] == opset and model.ir_version == ir
        np.testing.assert_allclose(OnnxRuntimeRunner(path).run(x)[0], ref, rtol=1e-4, atol=1e-6)
    with pytest.raises(SpecError, match="opset 11 is too old"):
        export_onnx(net, tmp_path / "o11.onnx", meta=META, opset=11)


def test_fp16_export_keeps_float_io_and_is_close(tmp_path):
    net = tiny_net()
    path = export_onnx(net, tmp_path / "h.onnx", meta=META, data_type="fp16")
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in model.graph.initializer if t.dims and len(t.dims) == 4]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert read_onnx_metadata(path)["data_type"] == "fp16"
    x = np.random.RandomState(0).uniform(-1, 1, (2, *SHAPE)).astype(np.float32)
    ref = mx.nd.softmax(net(mx.nd.array(x)), axis=-1).asnumpy()
    out = OnnxRuntimeRunner(path).run(x)[0]
    assert np.abs(out - ref).max() <= 1e-2 * np.abs(ref).max() + 1e-3


def test_bad_inputs_give_specific_errors(tmp_path):
    net = tiny_net()
    with pytest.raises(SpecError, match=r"input_shape must be \(C, H, W\)"):
        export_onnx(net, tmp_path / "a.onnx", meta={"task": "classification"})
    with pytest.raises(SpecError, match="lists 2 names .* 1 outputs"):
        export_onnx(net, tmp_path / "a.onnx", meta={**META, "output_names": ["a", "b"]})
    with pytest.raises(SpecError, match="must be distinct and not 'input'"):
        export_onnx(net, tmp_path / "a.onnx", meta={**META, "output_names": ["input"]})
    with pytest.raises(SpecError, match="data_type 'int4'"):
        export_onnx(net, tmp_path / "a.onnx", meta=META, data_type="int4")
    with pytest.raises(SpecError, match="int8 export needs calibration data"):
        export_onnx(net, tmp_path / "a.onnx", meta=META, data_type="int8")
    assert not (tmp_path / "a.onnx").exists()
    too_small = nn.HybridSequential()
    too_small.add(nn.AvgPool2D(pool_size=16))
    with pytest.raises(ExportError, match=r"does not run on input \(1, 3, 8, 8\).*kernel size \(16\)"):
        export_onnx(too_small, tmp_path / "a.onnx", input_shape=(3, 8, 8))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf at all\xff" * 10)
    with pytest.raises(ModelFileError, match="not a valid ONNX file"):
        read_onnx_metadata(bad)


@pytest.fixture(scope="module")
def tlk_model(tmp_path_factory):
    net = tiny_net()
    path = model_io.save_net(tmp_path_factory.mktemp("tlk") / "m.tlk", net, META, as_graph=True)
    return net, path


def test_load_runner_picks_backend_by_suffix(tlk_model, tmp_path):
    net, tlk = tlk_model
    onnx_path = export_onnx(tlk, tmp_path / "m.onnx")
    x = np.random.RandomState(1).uniform(-1, 1, (3, *SHAPE)).astype(np.float32)
    ref = net(mx.nd.array(x)).asnumpy()
    r_mx, r_ort = load_runner(tlk), load_runner(onnx_path)
    assert isinstance(r_mx, MXNetRunner) and isinstance(r_ort, OnnxRuntimeRunner)
    probs = mx.nd.softmax(mx.nd.array(ref), axis=-1).asnumpy()
    for r, want in ((r_mx, ref), (r_ort, probs)):  # the .tlk gives logits, the classifier export probabilities
        assert r.input_shape == SHAPE and r.metadata["classes"] == CLASSES
        np.testing.assert_allclose(r.run(x)[0], want, rtol=1e-4, atol=1e-6)
    assert read_onnx_metadata(onnx_path)["source_model"] == str(tlk)
    with pytest.raises(DataError, match=r"expects \(3, 32, 32\)"):
        r_ort.run(np.zeros((1, 3, 16, 16), np.float32))
    other = tmp_path / "m.xyz"
    other.write_bytes(b"x")
    with pytest.raises(ModelFileError, match="no engine backend runs .xyz"):
        load_runner(other)
    with pytest.raises(TlkitError, match="unknown engine backend 'onnxrt'"):
        load_runner(onnx_path, backend="onnxrt")


def export_context(task="classification", **kw):
    """The context of `tlkit <task> export` as the CLI builds it (core alone: no task installed)."""
    from tlkit.commands import export_command
    from tlkit.testing import make_context

    return make_context(task, "export", command_spec=export_command(), **kw)


def test_export_command_writes_onnx_and_configs(tlk_model, tmp_path):
    from tlkit.export.command import run

    _, tlk = tlk_model
    options = dict(gen_ds_config=True, gen_triton_repo=tmp_path / "triton")
    outputs = run(export_context(model=tlk, output=tmp_path / "out" / "m.onnx", options=options))
    assert outputs["onnx"] == str(tmp_path / "out" / "m.onnx") and (tmp_path / "out" / "m.onnx").is_file()
    assert (tmp_path / "out" / "nvinfer_config.txt").is_file() and (tmp_path / "out" / "labels.txt").is_file()
    assert (tmp_path / "triton" / "tiny" / "config.pbtxt").is_file()
    assert (tmp_path / "triton" / "tiny" / "1" / "model.onnx").is_file()
    with pytest.raises(TlkitError, match="-m/--model"):
        run(export_context(options=options))
    with pytest.raises(TlkitError, match="a 'classification' model; export it with `tlkit classification export`"):
        run(export_context("detection", model=tlk, options=options))


@pytest.fixture
def npz_exporter():
    """A registry with a plugin exporter `npz` (the parameters as a numpy archive) that records its calls."""
    from tlkit.testing.plugins import plugin, registered_plugin
    from tlkit.types import ExporterSpec

    calls = []

    def to_npz(model, output, options):
        calls.append((model, output, options))
        arrays = {k.replace(":", "_"): v.asnumpy() for k, v in model_io.load_model(model).params.items()}
        np.savez(output, **arrays)
        return output

    npz = ExporterSpec("npz", export=to_npz, suffix=".npz")
    with registered_plugin(plugin(tlkit_register_exporters=lambda: [npz]), "npz"):
        yield calls


def test_export_format_runs_the_registered_exporter(tlk_model, tmp_path, npz_exporter):
    from tlkit.export.command import run

    _, tlk = tlk_model
    outputs = run(export_context(model=tlk, results_dir=tmp_path, options={"format": "npz", "static_batch_size": 2}))
    ((model, output, options),) = npz_exporter
    assert model == tlk
    # the default name takes the exporter's suffix; every export flag arrives, with its default when not given
    assert output == tmp_path / "m.npz" and outputs == {"output": str(output), "format": "npz"}
    assert options["static_batch_size"] == 2 and options["data_type"] == "fp32" and options["format"] == "npz"
    assert sorted(np.load(output)) == sorted(k.replace(":", "_") for k in model_io.load_model(tlk).params)
    with pytest.raises(
        TlkitError, match="--gen_ds_config: deployment configs describe an ONNX model; --format npz writes .npz"
    ):
        run(export_context(model=tlk, output=tmp_path / "x", options={"format": "npz", "gen_ds_config": True}))
    assert len(npz_exporter) == 1 and not (tmp_path / "x.npz").exists()
    with pytest.raises(
        TlkitError, match=r"unknown exporter 'nzp'; did you mean 'npz'\? Installed exporters: npz, onnx\."
    ):
        run(export_context(model=tlk, output=tmp_path / "y", options={"format": "nzp"}))
    # without --format: core's ONNX
    assert run(export_context(model=tlk, output=tmp_path / "m", options={}))["onnx"] == str(tmp_path / "m.onnx")


def test_core_registers_exporter_and_engine_backends():
    from tlkit.registry import get_registry

    reg = get_registry()
    assert "onnx" in reg.exporters()
    backends = reg.engine_backends()
    assert backends["onnxruntime"].suffixes == (".onnx",) and backends["mxnet"].suffixes == (".tlk",)


def test_export_command_int8_from_images_and_tensorfile(tlk_model, tmp_path):
    import cv2

    from tlkit.export.command import run
    from tlkit.export.preprocess import preprocess
    from tlkit.export.tensorfile import write_tensorfile
    from tlkit.export.trt_cache import read_trt_cache

    _, tlk = tlk_model
    rs = np.random.RandomState(0)
    images = []
    (tmp_path / "cal" / "sub").mkdir(parents=True)
    for i in range(6):
        img = np.kron(rs.randint(0, 255, (5, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        cv2.imwrite(str(tmp_path / "cal" / "sub" / f"{i}.png"), img[:, :, ::-1])
        images.append(img)
    opts = {
        "data_type": "int8",
        "cal_image_dir": tmp_path / "cal",
        "batches": 2,
        "batch_size": 3,
        "calibration_method": "max",
    }
    out = run(export_context(model=tlk, output=tmp_path / "a.onnx", options=opts))
    assert out["data_type"] == "int8" and out["cal_cache_file"] == str(tmp_path / "cal.bin")
    ranges = read_trt_cache(tmp_path / "cal.bin")
    expected = float(np.abs(preprocess(images, META)).max())  # the caffe-normalized calibration images
    assert ranges["input"] == pytest.approx(expected, rel=1e-5)
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(tmp_path / "a.onnx")).graph.node}
    # the same batches through a TLT tensorfile give the same ranges
    tf = write_tensorfile(tmp_path / "cal.tensorfile", [preprocess(images[:3], META), preprocess(images[3:], META)])
    opts = {
        "data_type": "int8",
        "cal_data_file": tf,
        "cal_cache_file": tmp_path / "cal2.bin",
        "calibration_method": "max",
    }
    run(export_context(model=tlk, output=tmp_path / "b.onnx", options=opts))
    again = read_trt_cache(tmp_path / "cal2.bin")
    assert again.keys() == ranges.keys()
    for k in ranges:
        assert again[k] == pytest.approx(ranges[k], rel=1e-5)


def test_assert_onnx_matches_can_fail(tmp_path):
    """The conformance helper really compares: with a zero tolerance float noise trips it."""
    with pytest.raises(AssertionError, match=r"output 0 \(output\) at batch 1: max error"):
        assert_onnx_matches(gluoncv_net("resnet18_v1"), SHAPE, meta=META, rtol=0.0, atol=0.0)


def test_runner_on_a_foreign_onnx_file(tmp_path):
    """An ONNX file tlkit did not write runs too: metadata is empty, the shape comes from the graph."""
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 2, 4, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 2, 4, 4])],
    )
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7), str(path))
    runner = load_runner(path)
    assert runner.metadata == {} and runner.input_shape == (2, 4, 4) and runner.input_names == ["x"]
    x = np.linspace(-1, 1, 64, dtype=np.float32).reshape(2, 2, 4, 4)
    np.testing.assert_array_equal(runner.run(x)[0], np.maximum(x, 0))
