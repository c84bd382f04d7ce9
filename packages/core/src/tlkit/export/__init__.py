"""Export and deployment: ONNX export, engine runners, INT8 calibration, DeepStream/Triton configs.

Public API (imported lazily, so `import tlkit.export` stays light)::

    export_onnx(model_path_or_net, output, *, meta=None, input_shape=None, opset=None,
                static_batch_size=-1, data_type="fp32") -> Path
    read_onnx_metadata(path) -> dict
    load_runner(path, backend=None) -> Runner          # .run(batch) -> list[np.ndarray]
    preprocess(images, meta) -> NCHW float32; normalize(img, mode, mean=None)
    compute_ranges / write_trt_cache / read_trt_cache / quantize_qdq
    TensorFileWriter / write_tensorfile / read_tensorfile
    write_deepstream_config / write_triton_repo
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "export_onnx": "onnx_export",
    "read_onnx_metadata": "onnx_export",
    "ExportError": "onnx_export",
    "load_runner": "runners",
    "Runner": "runners",
    "OnnxRuntimeRunner": "runners",
    "MXNetRunner": "runners",
    "preprocess": "preprocess",
    "normalize": "preprocess",
    "preprocessing_params": "preprocess",
    "to_deepstream": "preprocess",
    "from_deepstream": "preprocess",
    "TensorFileWriter": "calibration",
    "write_tensorfile": "calibration",
    "read_tensorfile": "calibration",
    "tensorfile_info": "calibration",
    "compute_ranges": "calibration",
    "write_trt_cache": "calibration",
    "read_trt_cache": "calibration",
    "quantize_qdq": "calibration",
    "write_deepstream_config": "deploy",
    "write_triton_repo": "deploy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"tlkit.export.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'tlkit.export' has no attribute {name!r}")
