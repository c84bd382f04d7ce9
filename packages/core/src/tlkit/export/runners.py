"""One runner interface for every engine, so evaluate/inference of every task take .tlk, .onnx, .engine...

    runner = load_runner("model.onnx")          # backend picked by suffix from the registry
    outputs = runner.run(batch)                 # NCHW float32 -> list of numpy arrays

A runner has `input_names`, `output_names`, `metadata` (the model's meta dict: task, classes,
input_shape, preprocessing, postprocessing, ...) and `input_shape` (C, H, W). Backends are registered
as `EngineBackendSpec`s (core: "onnxruntime" for .onnx, "mxnet" for .tlk; tlkit-tensorrt adds its own).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from tlkit.errors import DataError, ModelFileError, TlkitError, UnknownNameError


class Runner(Protocol):
    input_names: list[str]
    output_names: list[str]
    metadata: dict[str, Any]
    input_shape: tuple[int, ...]

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def check_batch(batch: Any, input_shape: tuple[int, ...], source: str) -> np.ndarray:
    """An NCHW float32 batch matching `input_shape`, or a DataError saying what is wrong."""
    arr = np.asarray(batch)
    if arr.ndim != 4:
        raise DataError(f"{source}: expected an NCHW batch (4 dims), got shape {arr.shape}")
    if input_shape and tuple(arr.shape[1:]) != tuple(input_shape):
        raise DataError(f"{source}: batch has shape {arr.shape[1:]} per image, the model expects {tuple(input_shape)}")
    return np.ascontiguousarray(arr, dtype=np.float32)


class OnnxRuntimeRunner:
    """Runs an ONNX file in onnxruntime (CUDA provider first when it is installed and a GPU is there)."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        from tlkit.export.onnx_export import read_onnx_metadata

        self.path = Path(path)
        self.metadata = read_onnx_metadata(self.path)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = threads
        if providers is None:
            wanted = ("CUDAExecutionProvider", "CPUExecutionProvider")
            providers = [p for p in wanted if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as err:  # onnxruntime's Fail/InvalidGraph/... exceptions
            raise ModelFileError(f"{self.path}: onnxruntime cannot load it: {str(err).splitlines()[0]}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"{self.path}: expected one image input, the model has {[i.name for i in inputs]}")
        self.input_names = [inputs[0].name]
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = self.metadata.get("input_shape") or inputs[0].shape[1:]
        self.input_shape = tuple(int(d) if isinstance(d, int) else -1 for d in shape)
        if -1 in self.input_shape:
            self.input_shape = ()  # symbolic dims: accept any
        b = inputs[0].shape[0]
        self.static_batch = b if isinstance(b, int) else None

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        arr = check_batch(batch, self.input_shape, str(self.path))
        if self.static_batch and arr.shape[0] != self.static_batch:
            raise DataError(f"{self.path}: exported with static batch {self.static_batch}, got batch {arr.shape[0]}")
        return self.session.run(self.output_names, {self.input_names[0]: arr})


class MXNetRunner:
    """Runs a .tlk model file with MXNet (the reference the exported engines are compared with)."""

    def __init__(self, path: str | os.PathLike, ctx: Any = None):
        from tlkit.model_io import load_net

        self.path = Path(path)
        self.net, self.metadata = load_net(self.path, ctx)
        self.ctx = ctx
        self.input_shape = tuple(int(v) for v in self.metadata.get("input_shape") or ())
        self.input_names = ["input"]
        self.output_names = list(self.metadata.get("output_names") or [])
        self._hybridized = False

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        import mxnet as mx

        arr = check_batch(batch, self.input_shape, str(self.path))
        if not self._hybridized:
            self.net.hybridize(static_alloc=True, static_shape=False)
            self._hybridized = True
        out = self.net(mx.nd.array(arr, ctx=self.ctx or mx.cpu()))
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        result = [o.asnumpy() for o in outs]
        if not self.output_names:
            self.output_names = ["output"] if len(result) == 1 else [f"output{i}" for i in range(len(result))]
        return result


# -- EngineBackendSpec callables (named in tlkit.export.catalog) -----------------------------------


def onnxruntime_available() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError as err:
        return f"onnxruntime is not installed ({err})"
    return None


def mxnet_available() -> str | None:
    try:
        import mxnet  # noqa: F401
    except ImportError as err:
        return f"mxnet is not installed ({err})"
    return None


def load_onnxruntime(path: str | os.PathLike, **kw: Any) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(path, **kw)


def load_mxnet(path: str | os.PathLike, **kw: Any) -> MXNetRunner:
    return MXNetRunner(path, **kw)


def load_runner(path: str | os.PathLike, backend: str | None = None, **kw: Any) -> Runner:
    """A runner for `path`: the registered engine backend named `backend`, or the one whose suffixes
    match the file name (first registered wins; core's come first)."""
    from tlkit.lazy import resolve

    spec = backend_for(path, backend)
    why = resolve(spec.available)()
    if why:
        raise TlkitError(f"engine backend {spec.name!r} cannot run {path}: {why}")
    return resolve(spec.load)(Path(path), **kw)


def backend_for(path: str | os.PathLike, backend: str | None = None) -> Any:
    """The EngineBackendSpec `load_runner` uses for `path` (named, or by file suffix)."""
    from tlkit.registry import get_registry

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    backends = get_registry().engine_backends()
    if backend is not None:
        if backend not in backends:
            raise UnknownNameError("engine backend", backend, backends)
        spec = backends[backend]
    else:
        name = path.name.lower()
        matches = [b for b in backends.values() if any(name.endswith(s.lower()) for s in b.suffixes)]
        if not matches:
            known = sorted({s for b in backends.values() for s in b.suffixes})
            raise ModelFileError(
                f"{path}: no engine backend runs {path.suffix or 'this'} files (known: {', '.join(known)}); "
                f"install a backend plugin or pass backend="
            )
        spec = matches[0]
    return spec
