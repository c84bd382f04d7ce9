"""The engine file format: magic + length + JSON header + serialized engine."""

import struct

import pytest

from tlkit.errors import ModelFileError
from tlkit.export.engine_file import MAGIC, read_engine, read_engine_metadata, write_engine, write_plan

PLAN = bytes(range(256)) * 40  # stands for a serialized engine: the format treats it as opaque bytes


def test_round_trip_and_layout(tmp_path):
    header = {"model": {"task": "classification", "classes": ["a", "b"]}, "engine": {"precision": "fp16"}}
    path = write_engine(tmp_path / "m.engine", header, PLAN)
    data = path.read_bytes()
    assert data[:8] == MAGIC
    (n,) = struct.unpack("<Q", data[8:16])
    assert data[16 + n :] == PLAN
    meta = read_engine_metadata(path)
    assert meta["format"] == "tlkit-tensorrt-engine"
    assert meta["model"] == header["model"] and meta["engine"] == header["engine"]
    got_header, got_plan = read_engine(path)
    assert got_header == meta and got_plan == PLAN
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no leftovers


def test_plan_extraction_and_raw_plans(tmp_path):
    path = write_engine(tmp_path / "m.engine", {"engine": {}}, PLAN)
    plan = write_plan(path, tmp_path / "model.plan")
    assert plan.read_bytes() == PLAN
    assert read_engine(plan, raw=True) == ({}, PLAN)  # a bare plan (Triton's) is accepted when raw=True
    assert read_engine(path, raw=True)[1] == PLAN  # raw=True still strips our header
    with pytest.raises(ModelFileError, match="not a tlkit engine file"):
        read_engine(plan)


def test_corrupt_files_are_refused_clearly(tmp_path):
    with pytest.raises(ModelFileError, match="engine file not found"):
        read_engine_metadata(tmp_path / "missing.engine")
    (tmp_path / "short.engine").write_bytes(MAGIC + struct.pack("<Q", 100) + b"{}")
    with pytest.raises(ModelFileError, match=r"truncated engine file \(header needs 100 bytes, file has 2\)"):
        read_engine_metadata(tmp_path / "short.engine")
    (tmp_path / "json.engine").write_bytes(MAGIC + struct.pack("<Q", 3) + b"{x}" + PLAN)
    with pytest.raises(ModelFileError, match="engine header is not valid JSON"):
        read_engine_metadata(tmp_path / "json.engine")
    (tmp_path / "other.engine").write_bytes(MAGIC + struct.pack("<Q", 13) + b'{"format": 1}' + PLAN)
    with pytest.raises(ModelFileError, match="expected 'tlkit-tensorrt-engine'"):
        read_engine_metadata(tmp_path / "other.engine")
    (tmp_path / "huge.engine").write_bytes(MAGIC + struct.pack("<Q", 1 << 40))
    with pytest.raises(ModelFileError, match="corrupt file"):
        read_engine_metadata(tmp_path / "huge.engine")
    write_engine(tmp_path / "empty.engine", {}, b"")
    with pytest.raises(ModelFileError, match="has a header but no engine"):
        read_engine(tmp_path / "empty.engine")
