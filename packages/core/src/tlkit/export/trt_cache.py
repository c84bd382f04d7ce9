"""TensorRT's text calibration cache: "TRT-<ver>-EntropyCalibration2", then "name: <hex of float32 big-endian
bits of amax/127>" per tensor; the legacy TRT <= 10 INT8 route (ours, TAO's and TensorRT's own caches read).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np

from tlkit.errors import DataError
from tlkit.io import atomic_write_text

CACHE_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def trt_version_number(version: str | int) -> int:
    """'8.6.1' -> 8601, '10.3' -> 10300 (MAJOR*1000 + MINOR*100 + PATCH, as TAO writes it); 'x' = 0."""
    if isinstance(version, int):
        return version
    parts = [0 if p in ("x", "") else int(p) for p in str(version).split(".")]
    parts += [0] * (3 - len(parts))
    return parts[0] * 1000 + parts[1] * 100 + parts[2]


def amax_to_hex(amax: float) -> str:
    """amax -> the cache's hex: float32 bits of amax/127, big-endian (1.0 -> '3c010204')."""
    return struct.pack(">f", float(np.float32(amax) / np.float32(127.0))).hex()


def hex_to_amax(text: str) -> float:
    return float(np.float32(struct.unpack(">f", bytes.fromhex(text))[0]) * np.float32(127.0))


def write_trt_cache(
    ranges: dict[str, float],
    path: str | os.PathLike,
    trt_version: str | int = "10.x",
    algorithm: str = "EntropyCalibration2",
) -> Path:
    """Write a TensorRT text calibration cache. Pass your TensorRT version (TRT compares the header)."""
    lines = [f"TRT-{trt_version_number(trt_version)}-{algorithm}"]
    lines += [f"{name}: {amax_to_hex(v)}" for name, v in ranges.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def read_trt_cache(path: str | os.PathLike) -> dict[str, float]:
    """Import a TensorRT calibration cache (ours, TAO's or TensorRT's own) -> {tensor: amax}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: calibration cache not found")
    text = path.read_text(errors="replace").splitlines()
    if not text or not CACHE_HEADER.match(text[0].strip()):
        raise DataError(f"{path}:1: expected a header like 'TRT-8601-EntropyCalibration2', got {text[:1]!r}")
    ranges = {}
    for lineno, line in enumerate(text[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{1,8}", value):
            raise DataError(f"{path}:{lineno}: expected '<tensor>: <8 hex digits>', got {line!r}")
        ranges[name.strip()] = hex_to_amax(value.zfill(8))
    return ranges
