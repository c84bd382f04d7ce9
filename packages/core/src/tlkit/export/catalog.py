"""The built-in exporters and engine backends, as light records (no MXNet/onnx import here)."""

from tlkit.types import EngineBackendSpec, ExporterSpec

EXPORTERS: tuple[ExporterSpec, ...] = (
    ExporterSpec(
        name="onnx",
        export="tlkit.export.command:export_with_options",
        summary="ONNX (dynamic batch, embedded metadata); fp32, fp16 or int8 Q/DQ",
        suffix=".onnx",
    ),
)

ENGINE_BACKENDS: tuple[EngineBackendSpec, ...] = (
    EngineBackendSpec(
        name="onnxruntime",
        available="tlkit.export.runners:onnxruntime_available",
        load="tlkit.export.runners:load_onnxruntime",
        suffixes=(".onnx",),
        summary="ONNX files in onnxruntime (CPU, or CUDA when installed)",
    ),
    EngineBackendSpec(
        name="mxnet",
        available="tlkit.export.runners:mxnet_available",
        load="tlkit.export.runners:load_mxnet",
        suffixes=(".tlk",),
        summary="tlkit model files in MXNet",
    ),
)
