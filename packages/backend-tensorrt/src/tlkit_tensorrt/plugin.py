"""Entry-point module of tlkit_tensorrt: hook implementations only (no heavy imports).

Registers the "tensorrt" engine backend (runs .engine/.plan files; `build` compiles ONNX) and the
`tlkit tensorrt convert|bench|info` commands.
"""

from tlkit import hookimpl
from tlkit.types import EngineBackendSpec


@hookimpl
def tlkit_register_engine_backends():
    yield EngineBackendSpec(
        name="tensorrt",
        available="tlkit_tensorrt.runner:available",
        load="tlkit_tensorrt.runner:load_engine",
        suffixes=(".engine", ".plan"),
        build="tlkit_tensorrt.builder:build_with_options",
        summary="TensorRT / TensorRT-RTX engines (runs on an NVIDIA GPU; TensorRT-RTX builds on CPU too)",
    )


@hookimpl
def tlkit_register_commands(app):
    from tlkit_tensorrt.cli import app as tensorrt_app

    app.add_typer(tensorrt_app, name="tensorrt", help="TensorRT engines: convert ONNX (tao-converter), bench, info.")
