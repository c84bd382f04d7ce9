"""Conformance helper: a task's QAT model exports to an INT8 Q/DQ ONNX that computes what it was trained as.

from tlkit.testing.qat import assert_qat_export_reproduces
onnx_path = assert_qat_export_reproduces("results/weights/model.tlk", out_dir=tmp_path)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def assert_qat_export_reproduces(
    model_path: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    batch: int = 2,
    seed: int = 0,
    max_rel_error: float = 0.05,
) -> Path:
    """Export a QAT `.tlk` as int8 (no calibration data) and as fp32; run both in onnxruntime and the QAT model
    in MXNet on the same random batch. Per output, the int8 export must be closer to the QAT model than the
    float export is (it reproduces the quantization, not only the float function), and within
    `max_rel_error` of the output's range (BatchNorm folded at export moves a few values across a rounding
    step). Also checks the file carries the QAT markers and the calibration cache was written.
    Returns the int8 ONNX path."""
    import mxnet as mx
    import onnx

    from tlkit.export.onnx_export import export_onnx, read_onnx_metadata
    from tlkit.export.runners import OnnxRuntimeRunner
    from tlkit.export.trt_cache import read_trt_cache
    from tlkit.model_io import load_net

    out_dir = Path(out_dir)
    net, meta = load_net(model_path)
    assert meta.get("qat"), f"{model_path} is not a QAT model"
    int8 = export_onnx(model_path, out_dir / "qat_int8.onnx", data_type="int8", cal_cache_file=out_dir / "qat_cal.bin")
    fp32 = export_onnx(model_path, out_dir / "qat_fp32.onnx")
    md = read_onnx_metadata(int8)
    assert (md["data_type"], md["quantization"]) == ("int8", "qat"), md
    n_q = sum(node.op_type == "QuantizeLinear" for node in onnx.load(str(int8)).graph.node)
    assert n_q == meta["qat"]["activations_quantized"], (n_q, meta["qat"])
    assert len(read_trt_cache(out_dir / "qat_cal.bin")) == n_q

    x = np.random.default_rng(seed).normal(0, 1, (batch, *meta["input_shape"])).astype(np.float32)
    ref = net(mx.nd.array(x))
    ref = [r.asnumpy() for r in (ref if isinstance(ref, (list, tuple)) else [ref])]
    if md.get("output_activation") == "softmax" and meta.get("output_activation") != "softmax":
        # the export appended the classifier's softmax (DeepStream and Triton read probabilities)
        ref = [mx.nd.softmax(mx.nd.array(r), axis=-1).asnumpy() for r in ref]
    got8, got32 = OnnxRuntimeRunner(int8).run(x), OnnxRuntimeRunner(fp32).run(x)
    for k, (r, a, b) in enumerate(zip(ref, got8, got32)):
        span = float(np.abs(r).max()) or 1.0
        err8, err32 = float(np.abs(a - r).max()), float(np.abs(b - r).max())
        assert err8 <= max_rel_error * span, f"output {k}: int8 ONNX off the QAT model by {err8:.3g} (range {span:.3g})"
        assert err8 < err32 or err32 == 0.0, (
            f"output {k}: int8 error {err8:.3g} not below the float export's {err32:.3g}"
        )
    return int8


__all__ = ["assert_qat_export_reproduces"]
