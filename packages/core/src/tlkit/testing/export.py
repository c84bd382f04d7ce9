"""Conformance helper: every task's tests check every architecture exports and matches MXNet.

from tlkit.testing.export import assert_onnx_matches
assert_onnx_matches(net, (3, 64, 64), meta={"task": "classification", "classes": [...]})
"""

from __future__ import annotations

import configparser
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def assert_onnx_matches(
    net_or_model_path: Any,
    input_shape: Sequence[int] | None = None,
    *,
    meta: dict[str, Any] | None = None,
    rtol: float = 1e-4,
    atol: float = 1e-6,
    batch_sizes: Sequence[int] = (1, 3),
    output_indices: Sequence[int] | None = None,
    out_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> Path:
    """Export to ONNX, run onnxruntime and MXNet on the same random batches, assert they agree.

    Per output: max|onnx - mxnet| <= rtol * max|mxnet| + atol, for every batch size (the dynamic batch
    dim); a classifier's probabilities are compared with the softmax of MXNet's logits. `output_indices`
    picks the outputs to compare (detectors: the tensors before NMS, which ties
    on random weights). Returns the ONNX path (inside `out_dir`, or a temporary dir that is removed).
    """
    import mxnet as mx

    from tlkit.export.onnx_export import export_onnx, read_onnx_metadata
    from tlkit.export.runners import OnnxRuntimeRunner

    if isinstance(net_or_model_path, (str, os.PathLike)):
        from tlkit.model_io import load_net

        net, file_meta = load_net(net_or_model_path)
        meta = {**file_meta, **(meta or {})}
    else:
        net = net_or_model_path
    shape = tuple(input_shape or (meta or {}).get("input_shape") or ())
    assert len(shape) == 3, f"input_shape must be (C, H, W), got {shape}"
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlkit-onnx-")
        out_dir = tmp.name
    try:
        path = export_onnx(net, Path(out_dir) / "model.onnx", meta=meta, input_shape=shape)
        runner = OnnxRuntimeRunner(path)
        md = read_onnx_metadata(path)
        assert md["input_shape"] == list(shape), md
        rs = np.random.RandomState(seed)
        for b in batch_sizes:
            x = rs.uniform(-1, 1, (b, *shape)).astype(np.float32)
            ref = net(mx.nd.array(x))
            ref = [r.asnumpy() for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
            if md.get("output_activation") == "softmax":  # classifier exports end in a Softmax; the net gives logits
                ref = [np.exp(r - r.max(-1, keepdims=True)) for r in ref]
                ref = [e / e.sum(-1, keepdims=True) for e in ref]
            got = runner.run(x)
            assert len(got) == len(ref), f"ONNX has {len(got)} outputs, MXNet {len(ref)}"
            for i in output_indices if output_indices is not None else range(len(ref)):
                assert got[i].shape == ref[i].shape, f"output {i} at batch {b}: {got[i].shape} vs {ref[i].shape}"
                err = float(np.max(np.abs(got[i].astype(np.float64) - ref[i]))) if ref[i].size else 0.0
                bound = rtol * float(np.max(np.abs(ref[i]))) + atol if ref[i].size else 0.0
                name = runner.output_names[i]
                assert err <= bound, f"output {i} ({name}) at batch {b}: max error {err:.3g} > {bound:.3g}"
        return path
    finally:
        if tmp is not None:
            tmp.cleanup()


def parse_triton_config(path: str | os.PathLike) -> Any:
    """A Triton config.pbtxt parsed with Triton's own ModelConfig message (model_config.proto, the generated
    module tritonclient ships; tlkit-core[test]). Unknown fields or bad syntax raise."""
    import importlib.util

    import tritonclient
    from google.protobuf import text_format

    # tritonclient.grpc's __init__ needs the grpc extra (whose protobuf pin conflicts with ours); the
    # generated proto module itself needs only protobuf
    source = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", source)
    assert spec is not None and spec.loader is not None  # a .py file path always has both
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return text_format.Parse(Path(path).read_text(), module.ModelConfig())


def read_deepstream_config(path: str | os.PathLike) -> configparser.ConfigParser:
    """A DeepStream INI config (nvinfer / deepstream-app) as DeepStream reads it: keys case-sensitive
    (`minBoxes`), values verbatim (no `%` interpolation)."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keep keys as written (stubs type it as a method)
    cp.read(Path(path))
    return cp
