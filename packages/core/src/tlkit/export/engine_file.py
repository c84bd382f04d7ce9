"""The tlkit engine file: a small JSON header in front of the serialized TensorRT engine.

    offset 0   8 bytes   MAGIC b"TLKTRT\\x00\\x01"
    offset 8   8 bytes   header length N (unsigned, little-endian)
    offset 16  N bytes   header: UTF-8 JSON (see `header` in builder.py)
    offset 16+N ...      the serialized engine (what IBuilder.build_serialized_network returned)

A serialized engine alone says nothing about the model it holds (task, classes, preprocessing) nor how
it was built; the header carries that, so evaluate/inference can take a .engine like a .onnx. No
TensorRT import here: `tlkit tensorrt info`, `read_engine_metadata` and Triton repo generation work on any machine
(this format lives in core so deploy configs need no TensorRT package).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

from tlkit.errors import ModelFileError
from tlkit.io import atomic_write

MAGIC = b"TLKTRT\x00\x01"
FORMAT = "tlkit-tensorrt-engine"
_LEN = struct.Struct("<Q")
_PREFIX = len(MAGIC) + _LEN.size
MAX_HEADER = 16 << 20  # a header is a few KiB; anything huge means a corrupt file


def write_engine(path: str | os.PathLike, header: dict[str, Any], engine: bytes | memoryview) -> Path:
    """Write header + engine to `path` atomically (a reader never sees a half-written engine)."""
    path = Path(path)
    blob = json.dumps({"format": FORMAT, **header}, default=str, sort_keys=True).encode()
    with atomic_write(path, "wb") as f:
        f.write(MAGIC)
        f.write(_LEN.pack(len(blob)))
        f.write(blob)
        f.write(memoryview(engine))
    return path


def _read_header(f: Any, path: Path) -> tuple[dict[str, Any], int]:
    prefix = f.read(_PREFIX)
    if len(prefix) < _PREFIX or prefix[: len(MAGIC)] != MAGIC:
        raise ModelFileError(
            f"{path}: not a tlkit engine file (no {MAGIC[:6].decode()} header); build engines with "
            "`tlkit tensorrt convert`, or pass a raw TensorRT plan with raw=True"
        )
    (n,) = _LEN.unpack(prefix[len(MAGIC) :])
    if n > MAX_HEADER:
        raise ModelFileError(f"{path}: engine header claims {n} bytes (corrupt file?)")
    blob = f.read(n)
    if len(blob) != n:
        raise ModelFileError(f"{path}: truncated engine file (header needs {n} bytes, file has {len(blob)})")
    try:
        header = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: engine header is not valid JSON: {err}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: engine header has format {header.get('format') if isinstance(header, dict) else header!r}, expected {FORMAT!r}"
        )
    return header, _PREFIX + n


def read_engine_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a tlkit engine file (model metadata from the ONNX, TensorRT flavour/version,
    precision, profiles, bindings). Reads only the header, not the engine."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: engine file not found")
    with open(path, "rb") as f:
        return _read_header(f, path)[0]


def read_engine(path: str | os.PathLike, raw: bool = False) -> tuple[dict[str, Any], bytes]:
    """(header, serialized engine). `raw=True` also accepts a plain TensorRT plan (header {})."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: engine file not found")
    with open(path, "rb") as f:
        if raw and f.read(len(MAGIC)) != MAGIC:
            f.seek(0)
            return {}, f.read()
        f.seek(0)
        header, offset = _read_header(f, path)
        engine = f.read()
    if not engine:
        raise ModelFileError(f"{path}: the engine file has a header but no engine after it")
    return header, engine


def write_plan(engine_path: str | os.PathLike, plan_path: str | os.PathLike) -> Path:
    """Write the bare serialized engine (no header) to `plan_path`, e.g. Triton's model.plan."""
    _, engine = read_engine(engine_path)
    with atomic_write(plan_path, "wb") as f:
        f.write(engine)
    return Path(plan_path)
