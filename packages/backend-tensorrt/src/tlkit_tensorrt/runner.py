"""Run tlkit engine files on an NVIDIA GPU (TensorRT or TensorRT-RTX, pycuda for memory and streams).

    runner = load_engine("model.engine")     # or tlkit.export.load_runner("model.engine")
    outputs = runner.run(batch)              # NCHW float32 -> list of numpy arrays (ONNX output order)

`available()` says why engines cannot run here (no TensorRT, no GPU/driver, no pycuda, a GPU that
TensorRT-RTX does not support) without importing pycuda or touching CUDA beyond the driver library.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError, ModelFileError
from tlkit.export.engine_file import read_engine
from tlkit.export.runners import check_batch
from tlkit_tensorrt.api import TensorRTError, TrtApi, load_api

# GPUs TensorRT-RTX supports (tlt-reference.md §8: Turing 7.5, Ampere 8.6, Ada 8.9, Blackwell 12.0/12.1;
# no data-centre 8.0/9.0/10.0).
RTX_COMPUTE_CAPABILITIES = {(7, 5), (8, 6), (8, 9), (12, 0), (12, 1)}
GPU_EXTRA_HINT = "pip install tlkit-tensorrt[gpu]"
_CU_ATTR_CC_MAJOR, _CU_ATTR_CC_MINOR = 75, 76


def gpu_info(index: int = 0) -> dict[str, Any] | str:
    """{name, compute_capability, count} of GPU `index` through the CUDA driver API, or why there is none."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA GPU/driver (libcuda.so.1 not found)"
    rc = cuda.cuInit(0)
    if rc != 0:
        return f"no NVIDIA GPU/driver (cuInit failed with CUDA error {rc})"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "no NVIDIA GPU (the CUDA driver sees none)"
    if index >= count.value:
        return f"no GPU {index} (the CUDA driver sees {count.value})"
    dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    name = ctypes.create_string_buffer(256)
    cuda.cuDeviceGet(ctypes.byref(dev), index)
    cuda.cuDeviceGetName(name, 256, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, dev)
    cuda.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, dev)
    return {
        "name": name.value.decode(errors="replace"),
        "compute_capability": (major.value, minor.value),
        "count": count.value,
    }


def rtx_unsupported(info: dict[str, Any]) -> str | None:
    cc = tuple(info["compute_capability"])
    if cc in RTX_COMPUTE_CAPABILITIES:
        return None
    return (
        f"TensorRT-RTX engines do not run on {info['name']} (compute capability {cc[0]}.{cc[1]}); "
        "use full TensorRT (pip install tensorrt) on this GPU"
    )


def available(device: int = 0) -> str | None:
    """None when engines can run here, else why not (shown by `tlkit plugins`)."""
    try:
        api = load_api()
    except TensorRTError as err:
        return str(err)
    info = gpu_info(device)
    if isinstance(info, str):
        return info
    if api.is_rtx and rtx_unsupported(info):
        return rtx_unsupported(info)
    try:
        import pycuda.driver  # noqa: F401
    except ImportError:
        return f"pycuda not installed ({GPU_EXTRA_HINT})"
    return None


class TensorRTRunner:
    """A deserialized engine with its execution context, CUDA stream and device buffers.

    Dynamic shapes: the input shape is set per call (`set_input_shape` on TensorRT >= 8.5,
    `set_binding_shape` before), output buffers grow when a larger batch needs them.
    """

    def __init__(self, path: str | os.PathLike, device: int = 0, raw: bool = False, verbose: bool = False):
        import pycuda.driver as cuda

        self.path = Path(path)
        header, blob = read_engine(self.path, raw=raw)
        self.header = header
        eng = header.get("engine", {})
        built = eng.get("trt", {})
        try:  # the module that built it, else whichever is installed (the version check below decides)
            self.api: TrtApi = load_api(built.get("module"))
        except TensorRTError:
            self.api = load_api()
        if built and built.get("version") != self.api.version:
            raise ModelFileError(
                f"{self.path}: built with {built.get('flavour')} {built.get('version')}, this process has "
                f"{self.api.label}; engines are specific to the TensorRT version: rebuild with `tlkit tensorrt convert`"
            )
        trt = self.api.trt
        self._cuda = cuda
        cuda.init()
        self._ctx = cuda.Device(device).retain_primary_context()
        self._ctx.push()
        try:
            from tlkit_tensorrt.builder import _first_error, _make_logger

            self._logger = _make_logger(self.api, verbose)
            self._runtime = trt.Runtime(self._logger)
            self.engine = self._runtime.deserialize_cuda_engine(blob)
            if self.engine is None:
                raise ModelFileError(
                    f"{self.path}: {self.api.label} cannot load the engine: {_first_error(self._logger.errors)}"
                )
            self.context = self.engine.create_execution_context()
            self.stream = cuda.Stream()
            self._tensor_api = hasattr(self.engine, "num_io_tensors")
            self._io = self._describe_io()
        finally:
            self._ctx.pop()
        model = header.get("model") or {}
        self.input_names = [n for n, (is_in, _, _) in self._io.items() if is_in]
        if len(self.input_names) != 1:
            raise ModelFileError(f"{self.path}: expected one image input, the engine has {self.input_names}")
        outs = [n for n, (is_in, _, _) in self._io.items() if not is_in]
        order = [n for n in model.get("output_names") or [] if n in outs]
        self.output_names = order + [n for n in outs if n not in order]  # the ONNX's order
        self.metadata = {**model, "data_type": eng.get("precision", model.get("data_type")), "engine": eng}
        shape = model.get("input_shape") or list(self._io[self.input_names[0]][2][1:])
        self.input_shape = tuple(int(d) for d in shape) if all(int(d) > 0 for d in shape) else ()
        self._buffers: dict[str, tuple[int, Any]] = {}  # name -> (nbytes, device allocation)
        self._hosts: dict[str, np.ndarray] = {}  # name -> page-locked host array

    # -- engine description ---------------------------------------------------------------------------
    def _describe_io(self) -> dict[str, tuple[bool, Any, tuple[int, ...]]]:
        """name -> (is_input, numpy dtype, engine shape with -1 for dynamic dims)."""
        trt, e = self.api.trt, self.engine
        io = {}
        if self._tensor_api:
            for i in range(e.num_io_tensors):
                n = e.get_tensor_name(i)
                io[n] = (
                    e.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                    trt.nptype(e.get_tensor_dtype(n)),
                    tuple(e.get_tensor_shape(n)),
                )
        else:  # TensorRT < 8.5: bindings
            for i in range(e.num_bindings):
                n = e.get_binding_name(i)
                io[n] = (e.binding_is_input(i), trt.nptype(e.get_binding_dtype(i)), tuple(e.get_binding_shape(i)))
        return io

    def batch_range(self) -> tuple[int, int] | None:
        """(min, max) batch of the engine's first optimisation profile; None for a static engine."""
        name = self.input_names[0]
        if all(d >= 0 for d in self._io[name][2]):
            return None
        e = self.engine
        if self._tensor_api:
            lo, _, hi = e.get_tensor_profile_shape(name, 0)
        else:
            lo, _, hi = e.get_profile_shape(0, name)
        return int(lo[0]), int(hi[0])

    def _device_buffer(self, name: str, nbytes: int) -> Any:
        have = self._buffers.get(name)
        if have is None or have[0] < nbytes:
            self._buffers[name] = (nbytes, self._cuda.mem_alloc(max(nbytes, 1)))
        return self._buffers[name][1]

    def _host_buffer(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Page-locked host memory (async copies need it), kept while the shape stays the same."""
        have = self._hosts.get(name)
        if have is None or have.shape != shape:
            have = self._hosts[name] = self._cuda.pagelocked_empty(shape, self._io[name][1])
        return have

    # -- run ----------------------------------------------------------------------------------------
    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        arr = check_batch(batch, self.input_shape, str(self.path))
        rng = self.batch_range()
        if rng and not rng[0] <= arr.shape[0] <= rng[1]:
            raise DataError(
                f"{self.path}: batch {arr.shape[0]} is outside the engine's profile ({rng[0]}..{rng[1]}); "
                "rebuild it with -p input,MIN,OPT,MAX"
            )
        name = self.input_names[0]
        arr = np.ascontiguousarray(arr, dtype=self._io[name][1])
        cuda = self._cuda
        self._ctx.push()
        try:
            return self._run(name, arr, cuda)
        finally:
            self._ctx.pop()

    def _run(self, name: str, arr: np.ndarray, cuda: Any) -> list[np.ndarray]:
        e, ctx = self.engine, self.context
        h_in = self._host_buffer(name, arr.shape)
        np.copyto(h_in, arr)
        d_in = self._device_buffer(name, h_in.nbytes)
        cuda.memcpy_htod_async(d_in, h_in, self.stream)
        hosts: dict[str, np.ndarray] = {}
        if self._tensor_api:
            ctx.set_input_shape(name, arr.shape)
            ctx.set_tensor_address(name, int(d_in))
            for out in self.output_names:
                host = self._host_buffer(out, tuple(ctx.get_tensor_shape(out)))
                ctx.set_tensor_address(out, int(self._device_buffer(out, host.nbytes)))
                hosts[out] = host
            ok = ctx.execute_async_v3(self.stream.handle)
        else:  # TensorRT < 8.5: binding indices
            bindings = [0] * e.num_bindings
            idx = e.get_binding_index(name)
            ctx.set_binding_shape(idx, arr.shape)
            bindings[idx] = int(d_in)
            for out in self.output_names:
                j = e.get_binding_index(out)
                host = self._host_buffer(out, tuple(ctx.get_binding_shape(j)))
                bindings[j] = int(self._device_buffer(out, host.nbytes))
                hosts[out] = host
            ok = ctx.execute_async_v2(bindings, self.stream.handle)
        if not ok:
            raise TensorRTError(
                f"{self.path}: {self.api.label} failed to run the engine on a batch of shape {arr.shape}"
            )
        for out, host in hosts.items():
            cuda.memcpy_dtoh_async(host, self._buffers[out][1], self.stream)
        self.stream.synchronize()
        return [np.array(hosts[o], copy=True) for o in self.output_names]  # the host buffers are reused

    def close(self) -> None:
        """Free device memory and release the GPU context."""
        self._ctx.push()
        try:
            for _, buf in self._buffers.values():
                buf.free()
            self._buffers.clear()
            self._hosts.clear()
            self.context = self.engine = None
        finally:
            self._ctx.pop()
            self._ctx.detach()


def load_engine(path: str | os.PathLike, **kw: Any) -> TensorRTRunner:
    """The EngineBackendSpec.load callable (core's `load_runner` checks `available()` first). A `.plan`
    may be a bare TensorRT plan (Triton's model.plan) without tlkit's header."""
    kw.setdefault("raw", Path(path).suffix.lower() == ".plan")
    return TensorRTRunner(path, **kw)
