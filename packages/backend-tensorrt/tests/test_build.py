"""Real engine builds with the installed TensorRT flavour (TensorRT-RTX on CPU machines): fp32, fp16 and
Q/DQ int8 engines from core's ONNX exports, their headers, and clear refusals for impossible requests."""

import hashlib
import json
import struct

import numpy as np
import onnx
import pytest

from tlkit.errors import ModelFileError, SpecError
from tlkit.export.engine_file import MAGIC, read_engine, read_engine_metadata
from tlkit.export.onnx_export import raw_initializers, read_onnx_metadata
from tlkit_tensorrt.api import TensorRTError
from tlkit_tensorrt.builder import build_engine, build_with_options, fold_int32_dequantize, is_qdq

SHAPE = (3, 32, 32)  # as in conftest.py (test modules cannot import it under --import-mode=importlib)
CLASSES = ["cat", "dog", "bird", "fish", "frog"]


def _engine_part_size(path):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[8:16])
    return len(data) - 16 - n


def _int32_dequantized(model):
    """How many DequantizeLinear nodes read an int32 initializer (onnxruntime's quantized biases)."""
    int32 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT32}
    return sum(n.op_type == "DequantizeLinear" and n.input[0] in int32 for n in model.graph.node)


def test_fp32_resnet18_engine_and_header(trt_api, models, tmp_path):
    onnx_path = models["resnet18"]
    path = build_engine(
        onnx_path,
        tmp_path / "r18.engine",
        data_type="fp32",
        profiles=["input,1x3x32x32,4x3x32x32,8x3x32x32"],
        workspace=1 << 28,
    )
    assert path.read_bytes()[:8] == MAGIC
    h = read_engine_metadata(path)
    assert h["model"] == read_onnx_metadata(onnx_path)  # the ONNX's tlkit metadata, unchanged
    assert h["model"]["classes"] == CLASSES and h["model"]["arch"] == "resnet18_v1"
    e = h["engine"]
    assert e["trt"] == {"flavour": trt_api.flavour, "module": trt_api.module, "version": trt_api.version}
    assert e["precision"] == "fp32" and e["qdq"] is False
    assert e["profiles"] == [{"name": "input", "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]}]
    assert e["inputs"] == [{"name": "input", "shape": [-1, *SHAPE], "dtype": "FLOAT"}]
    assert e["outputs"] == [{"name": "output", "shape": [-1, len(CLASSES)], "dtype": "FLOAT"}]
    assert e["workspace"] == 1 << 28 and e["max_batch"] == 16 and e["calib_batch"] == 8
    assert e["onnx_sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert e["engine_bytes"] == _engine_part_size(path)
    # resnet18's 11.2M fp32 weights live in the engine
    assert e["engine_bytes"] > 11_000_000 * 4


def test_fp16_mobilenetv2_engine_holds_half_size_weights(trt_api, models, tmp_path):
    e32 = read_engine_metadata(build_engine(models["mobilenetv2"], tmp_path / "m32.engine"))["engine"]
    e16 = read_engine_metadata(build_engine(models["mobilenetv2"], tmp_path / "m16.engine", data_type="fp16"))["engine"]
    assert e16["precision"] == "fp16"
    # default profile for the dynamic batch: 1..max batch (tao-converter's -m, default 16)
    assert e16["profiles"] == [{"name": "input", "min": [1, 3, 32, 32], "opt": [16, 3, 32, 32], "max": [16, 3, 32, 32]}]
    assert e16["engine_bytes"] < 0.7 * e32["engine_bytes"]  # fp16 weights
    if trt_api.strongly_typed_only:
        assert any("converted the fp32 ONNX to fp16" in n for n in e16["notes"])
        assert e16["builder_flags"] == []
    else:
        assert "FP16" in e16["builder_flags"]


def test_two_output_net_keeps_output_names_and_shapes(trt_api, models, tmp_path):
    path = build_engine(models["two_heads"], tmp_path / "two.engine", max_batch=4)
    h = read_engine_metadata(path)
    assert h["model"]["output_names"] == ["output_cov", "output_bbox"]
    assert [(o["name"], o["shape"]) for o in h["engine"]["outputs"]] == [
        ("output_cov", [-1, 4, 16, 16]),
        ("output_bbox", [-1, 16, 16, 16]),
    ]
    assert h["engine"]["profiles"][0]["max"] == [4, 3, 32, 32]


def test_qdq_int8_onnx_builds(trt_api, models, tmp_path):
    path = build_engine(models["tiny_int8"], tmp_path / "q.engine", data_type="int8")
    e = read_engine_metadata(path)["engine"]
    assert e["precision"] == "int8" and e["qdq"] is True and e["calibration_cache"] is None
    # onnxruntime's quantizer stores biases as int32 Q/DQ (conv + dense here), which TensorRT rejects:
    # they were folded
    n_int32 = _int32_dequantized(onnx.load(str(models["tiny_int8"])))
    if n_int32:
        assert any(f"folded {n_int32} int32 bias DequantizeLinear" in n for n in e["notes"])
    assert e["strongly_typed"] is (trt_api.strongly_typed_only or trt_api.major >= 10)


def test_int8_header_reports_weights_and_no_fallback(trt_api, models, tmp_path):
    e8 = read_engine_metadata(build_engine(models["tiny_int8"], tmp_path / "q.engine", data_type="int8"))["engine"]
    e32 = read_engine_metadata(build_engine(models["tiny"], tmp_path / "f.engine"))["engine"]
    assert e8["warnings"] == [] and e8["fallbacks"] == []
    # the builder's "Total Weights Memory" (this net is too small for int8 to be smaller: per-layer scales and
    # alignment dominate; tests/test_engine_build_every_task.py compares them on real-sized layers)
    assert e8["weights_bytes"] > 0 and e32["weights_bytes"] >= 4 * (8 * 3 * 3 * 3 + 5 * 8)  # the fp32 weights


def test_uint8_activation_qdq_is_refused_clearly(trt_api, models, tmp_path):
    """`export --qdq_format onnxruntime` is for onnxruntime on CPU; TensorRT wants zero points of 0."""
    with pytest.raises(SpecError, match="quantizes activations to uint8.*--qdq_format tensorrt"):
        build_engine(models["tiny_int8_ort"], tmp_path / "x.engine", data_type="int8")
    assert not (tmp_path / "x.engine").exists()


def test_folding_int32_biases_keeps_the_graph_output(models):
    import onnxruntime as ort

    model = onnx.load(str(models["tiny_int8"]))
    assert is_qdq(model)
    folded = onnx.load(str(models["tiny_int8"]))
    n_int32 = _int32_dequantized(model)
    if n_int32 == 0:
        pytest.skip("core's Q/DQ export has no int32 biases to fold")
    assert fold_int32_dequantize(folded) == n_int32 == 2  # the conv's and the dense layer's biases
    assert not any(t.data_type == onnx.TensorProto.INT32 for t in folded.graph.initializer)
    x = np.random.RandomState(3).uniform(-1, 1, (3, *SHAPE)).astype(np.float32)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # reference Q/DQ semantics
    ref = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    got = ort.InferenceSession(folded.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"input": x}
    )[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * float(np.abs(ref).max()))


def test_raw_initializers_keep_values(models):
    from onnx import numpy_helper

    model = onnx.load(str(models["tiny"]))
    before = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    raw_initializers(model)
    for t in model.graph.initializer:
        assert not t.float_data and t.raw_data
        np.testing.assert_array_equal(numpy_helper.to_array(t), before[t.name])


def test_int8_without_qdq_is_refused_clearly(trt_api, models, tmp_path):
    if trt_api.strongly_typed_only:
        with pytest.raises(TensorRTError) as err:
            build_engine(models["tiny"], tmp_path / "x.engine", data_type="int8")
        assert f"-t int8 on {trt_api.label} needs a Q/DQ ONNX" in str(err.value)
        assert "--data_type int8" in str(err.value)
        cache = tmp_path / "cal.bin"
        cache.write_text("TRT-8601-EntropyCalibration2\ninput: 3c010204\n")
        with pytest.raises(TensorRTError, match="calibration caches are not supported"):
            build_engine(models["tiny"], tmp_path / "x.engine", data_type="int8", cal_cache_file=cache)
    else:
        with pytest.raises(SpecError, match=r"needs a calibration cache \(-c cal.bin\)"):
            build_engine(models["tiny"], tmp_path / "x.engine", data_type="int8")
    assert not (tmp_path / "x.engine").exists()


def test_precision_mismatches_are_refused(trt_api, models, tmp_path):
    with pytest.raises(SpecError, match="the ONNX is a Q/DQ \\(int8\\) graph; build it with -t int8"):
        build_engine(models["tiny_int8"], tmp_path / "x.engine", data_type="fp16")
    with pytest.raises(SpecError, match="the ONNX holds fp16 weights"):
        build_engine(models["tiny_fp16"], tmp_path / "x.engine", data_type="fp32")
    with pytest.raises(SpecError, match="'bf16' is not one of fp32, fp16, int8"):
        build_engine(models["tiny"], tmp_path / "x.engine", data_type="bf16")
    with pytest.raises(SpecError, match="the network has no input 'data'"):
        build_engine(models["tiny"], tmp_path / "x.engine", profiles=["data,1x3x32x32,1x3x32x32,1x3x32x32"])
    # an fp16 ONNX (core's fp16 export) builds as fp16
    e = read_engine_metadata(build_engine(models["tiny_fp16"], tmp_path / "h.engine", data_type="fp16"))["engine"]
    assert e["precision"] == "fp16" and not any("converted" in n for n in e["notes"])


def test_bad_onnx_files(trt_api, tmp_path):
    with pytest.raises(ModelFileError, match="ONNX file not found"):
        build_engine(tmp_path / "missing.onnx", tmp_path / "x.engine")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not a protobuf at all" * 10)
    with pytest.raises(ModelFileError, match="not a valid ONNX file"):
        build_engine(bad, tmp_path / "x.engine")


def test_unparsable_graph_names_the_problem(trt_api, tmp_path):
    from onnx import TensorProto, helper

    # a custom-domain op TensorRT has no importer (or plugin) for
    node = helper.make_node("NoSuchOp", ["input"], ["output"], domain="tlkit.test")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("tlkit.test", 1)])
    p = tmp_path / "custom.onnx"
    p.write_bytes(model.SerializeToString())
    with pytest.raises(TensorRTError) as err:
        build_engine(p, tmp_path / "x.engine")
    msg = str(err.value)
    assert "cannot parse the ONNX" in msg and "NoSuchOp" in msg and "\n" not in msg


def test_backend_registered_and_build_callable(trt_api, models, tmp_path):
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    spec = get_registry().engine_backend("tensorrt")
    assert spec.suffixes == (".engine", ".plan") and spec.distribution == "tlkit-tensorrt"
    out = resolve(spec.build)(models["tiny"], tmp_path / "b.engine", {"data_type": "fp16", "max_batch": 2})
    e = read_engine_metadata(out)["engine"]
    assert e["precision"] == "fp16" and e["profiles"][0]["max"] == [2, *SHAPE]
    assert build_with_options(models["tiny"], tmp_path / "c.engine", {})  # all defaults


def test_convert_cli(trt_api, models, tmp_path):
    from tlkit.testing.plugins import run_tlkit

    engine, plan = tmp_path / "cli.engine", tmp_path / "model.plan"
    r = run_tlkit(
        [
            "tensorrt",
            "convert",
            str(models["two_heads"]),
            "-t",
            "fp16",
            "-e",
            str(engine),
            "-m",
            "4",
            "-b",
            "2",
            "-w",
            str(1 << 27),
            "-s",
            "-k",
            "nvidia_tlt",
            "-p",
            "input,1x3x32x32,2x3x32x32,4x3x32x32",
            "--plan",
            str(plan),
        ]
    )
    assert r.returncode == 0, r.stderr
    assert f"Built {engine}" in r.stdout and "fp16" in r.stdout
    header, blob = read_engine(engine)
    assert plan.read_bytes() == blob
    e = header["engine"]
    assert e["strict_types"] is True and e["calib_batch"] == 2 and e["max_batch"] == 4 and e["workspace"] == 1 << 27
    info = run_tlkit(["tensorrt", "info", str(engine), "--json"])
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout) == header

    bad = run_tlkit(
        ["tensorrt", "convert", str(models["tiny"]), "-e", str(tmp_path / "y.engine"), "-p", "input,1x3x32"]
    )
    assert bad.returncode != 0
    assert bad.stderr.strip().startswith("error: -p 'input,1x3x32': expected <input_name>")
    assert "Traceback" not in bad.stderr and not (tmp_path / "y.engine").exists()
