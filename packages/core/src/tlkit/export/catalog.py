"""The built-in exporters and engine backends, as light records (no MXNet/onnx import here)."""

from tlkit.types import EngineBackendSpec, ExporterSpec

EXPORTERS: tuple[ExporterSpec, ...] = ()
ENGINE_BACKENDS: tuple[EngineBackendSpec, ...] = ()
