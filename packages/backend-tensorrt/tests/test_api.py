"""The TensorRT API adapter: how each flavour/version is driven. TensorRT 8.6/10/11 cannot be installed on
CPU machines, so their enums are modelled by small namespaces with the real flag names; TensorRT-RTX is
the real module."""

import types

import pytest

from tlkit.errors import ModelFileError, SpecError
from tlkit_tensorrt.api import ENV_MODULE, TensorRTError, TrtApi, load_api
from tlkit_tensorrt.builder import _choose_precision


def fake_trt(version, calibrators=True, strongly_typed=True):
    flags = {"EXPLICIT_BATCH": 0}
    if strongly_typed:
        flags["STRONGLY_TYPED"] = 2
    mod = types.SimpleNamespace(
        __version__=version,
        NetworkDefinitionCreationFlag=types.SimpleNamespace(**flags),
        BuilderFlag=types.SimpleNamespace(FP16="FP16", INT8="INT8", STRICT_TYPES="STRICT_TYPES"),
    )
    if calibrators:
        mod.IInt8EntropyCalibrator2 = object
    return TrtApi(trt=mod, module="tensorrt", flavour="tensorrt", version=version)


def test_versions_and_network_flags():
    trt86, trt10, trt11 = fake_trt("8.6.1"), fake_trt("10.3.0.26"), fake_trt("11.4.0.106", calibrators=False)
    assert (trt86.major, trt86.minor, trt10.major, trt11.major) == (8, 6, 10, 11)
    assert trt86.network_flags(qdq=False) == 1 << 0  # EXPLICIT_BATCH
    assert trt86.network_flags(qdq=True) == 1 << 0  # 8.6 takes Q/DQ with the INT8 flag instead
    assert trt10.network_flags(qdq=False) == 0  # explicit batch is the default from 10
    assert trt10.network_flags(qdq=True) == 1 << 2  # STRONGLY_TYPED for Q/DQ graphs
    assert trt11.network_flags(qdq=False) == 1 << 2
    assert [a.strongly_typed_only for a in (trt86, trt10, trt11)] == [False, False, True]
    assert [a.has_calibrators for a in (trt86, trt10, trt11)] == [True, True, False]
    assert trt11.label == "TensorRT 11.4.0.106"


def test_set_flag_uses_the_first_name_this_version_has():
    api = fake_trt("8.6.1")
    seen = []
    config = types.SimpleNamespace(set_flag=seen.append)
    assert api.set_flag(config, "OBEY_PRECISION_CONSTRAINTS", "STRICT_TYPES") == "STRICT_TYPES"
    assert api.set_flag(config, "BF16") is None
    assert seen == ["STRICT_TYPES"]


def test_real_rtx_module(trt_api):
    if not trt_api.is_rtx:
        pytest.skip("TensorRT-RTX is not the installed flavour")
    assert trt_api.strongly_typed_only and not trt_api.has_calibrators
    assert trt_api.label.startswith("TensorRT-RTX 1.")
    strongly = int(trt_api.trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert trt_api.network_flags(qdq=False) == 1 << strongly


def test_missing_module_says_how_to_install(monkeypatch):
    with pytest.raises(TensorRTError) as err:
        load_api("no_such_tensorrt_module")
    assert "no_such_tensorrt_module" in str(err.value) and "pip install tlkit-tensorrt[rtx]" in str(err.value)
    monkeypatch.setenv(ENV_MODULE, "no_such_tensorrt_module")
    with pytest.raises(TensorRTError, match="no_such_tensorrt_module"):
        load_api()


def test_int8_from_calibration_cache_on_weakly_typed_tensorrt(models, tmp_path):
    import onnx

    model = onnx.load(str(models["tiny"]))
    api = fake_trt("10.3.0")
    with pytest.raises(SpecError, match=r"needs a calibration cache \(-c cal.bin\)"):
        _choose_precision(api, model, "int8", None, [])
    with pytest.raises(ModelFileError, match="calibration cache not found"):
        _choose_precision(api, model, "int8", tmp_path / "missing.bin", [])
    junk = tmp_path / "junk.bin"
    junk.write_text("input: 3c010204\n")
    with pytest.raises(ModelFileError, match="not a TensorRT calibration cache"):
        _choose_precision(api, model, "int8", junk, [])
    cache = tmp_path / "cal.bin"
    cache.write_text("TRT-10300-EntropyCalibration2\ninput: 3c010204\n")
    plan = _choose_precision(api, model, "int8", cache, [])
    assert plan["calibration_cache"] == cache.read_bytes() and plan["qdq"] is False
    notes = []
    assert _choose_precision(api, model, "fp16", cache, notes)["calibration_cache"] is None
    assert notes == [f"ignored -c {cache}: -t fp16 does not calibrate"]
    notes = []
    plan = _choose_precision(fake_trt("11.4.0"), model, "fp16", None, notes)
    assert plan["convert_fp16"] is True and "strongly typed" in notes[0]
    assert _choose_precision(api, model, "fp16", None, [])["convert_fp16"] is False  # BuilderFlag.FP16 instead
