"""INT8 calibration: the export step that turns calibration data into a Q/DQ ONNX and a TensorRT cache.

Its parts, each in its own module (all names are importable from here too, for existing callers):
- `tlkit.export.tensorfile`: TLT's HDF5 calibration tensorfile (`TensorFileWriter`, `write_tensorfile`,
  `read_tensorfile`, `tensorfile_info`);
- `tlkit.export.ranges`: per-tensor activation amax by "entropy", "max" or "percentile" (`compute_ranges`,
  `Ranges`, `save_ranges_json`);
- `tlkit.export.trt_cache`: TensorRT's text calibration cache (`write_trt_cache`, `read_trt_cache`);
- `tlkit.export.qdq`: the Q/DQ ONNX, output heads kept float by default (`quantize_qdq`, `output_head_nodes`).
This module joins them (`quantize_with_calibration`) and reads calibration images (`batches_from_images`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError, SpecError
from tlkit.export.qdq import QDQ_FORMATS, output_head_nodes, quantize_qdq, without_output_heads
from tlkit.export.ranges import (
    CACHE_BYTES,
    METHODS,
    NUM_BINS,
    NUM_QUANTIZED_BINS,
    Ranges,
    compute_ranges,
    save_ranges_json,
)
from tlkit.export.tensorfile import (
    ARRAY_KEY,
    GROUP_PREFIX,
    TensorFileWriter,
    read_tensorfile,
    tensorfile_info,
    write_tensorfile,
)
from tlkit.export.trt_cache import (
    CACHE_HEADER,
    amax_to_hex,
    hex_to_amax,
    read_trt_cache,
    trt_version_number,
    write_trt_cache,
)

__all__ = [
    "ARRAY_KEY",
    "CACHE_BYTES",
    "CACHE_HEADER",
    "GROUP_PREFIX",
    "METHODS",
    "NUM_BINS",
    "NUM_QUANTIZED_BINS",
    "QDQ_FORMATS",
    "Ranges",
    "TensorFileWriter",
    "amax_to_hex",
    "batches_from_images",
    "compute_ranges",
    "hex_to_amax",
    "output_head_nodes",
    "quantize_qdq",
    "quantize_with_calibration",
    "read_tensorfile",
    "read_trt_cache",
    "save_ranges_json",
    "tensorfile_info",
    "trt_version_number",
    "without_output_heads",
    "write_tensorfile",
    "write_trt_cache",
]


def quantize_with_calibration(
    model: Any,
    output: str | os.PathLike,
    cal_batches: Iterable[np.ndarray] | None,
    *,
    method: str = "entropy",
    cal_cache_file: str | os.PathLike | None = None,
    trt_version: str | int = "10.x",
    qdq_format: str = "tensorrt",
    quantize_output_heads: bool = False,
) -> Path:
    """INT8 export step: ranges from `cal_batches` (then also written to `cal_cache_file`), or imported
    from an existing `cal_cache_file` (which says nothing about signs: every tensor then gets [-amax, amax]);
    then the Q/DQ ONNX at `output`. The output heads stay float in both unless `quantize_output_heads`."""
    if cal_batches is not None:
        ranges = compute_ranges(model, cal_batches, method)
        if not quantize_output_heads:
            ranges = without_output_heads(ranges, model)
        if cal_cache_file:
            write_trt_cache(ranges, cal_cache_file, trt_version)
    elif cal_cache_file and Path(cal_cache_file).is_file():
        ranges = read_trt_cache(cal_cache_file)
    else:
        raise SpecError(
            "int8 export needs calibration data: --cal_data_file (tensorfile), --cal_image_dir, "
            "or an existing --cal_cache_file to import"
        )
    return quantize_qdq(model, ranges, output, qdq_format=qdq_format, quantize_output_heads=quantize_output_heads)


def batches_from_images(
    image_dir: str | os.PathLike, meta: dict[str, Any], batches: int, batch_size: int
) -> list[np.ndarray]:
    """Up to `batches` preprocessed batches from the images in `image_dir` (sorted, recursive)."""
    import cv2

    from tlkit.export.preprocess import preprocess
    from tlkit.images import IMAGE_EXTENSIONS, list_image_files

    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: calibration image directory not found")
    files = list_image_files(image_dir)
    if not files:
        raise DataError(f"{image_dir}: no images for calibration ({', '.join(IMAGE_EXTENSIONS)})")
    out = []
    for start in range(0, min(len(files), batches * batch_size), batch_size):
        chunk = files[start : start + batch_size]
        if len(chunk) < batch_size and out:
            break  # keep batches equal-sized
        imgs = []
        for f in chunk:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"{f}: cannot decode image")
            imgs.append(img[:, :, ::-1])  # BGR -> RGB
        out.append(preprocess(imgs, meta))
    return out
