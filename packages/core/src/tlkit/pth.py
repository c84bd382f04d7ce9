"""PyTorch `.pth` weights read WITHOUT torch (the core's "pytorch-pth" weight format).

A `.pth` is a pickle, and loading an arbitrary one runs arbitrary code: this reader unpickles through a
restricted unpickler that only rebuilds tensors (storage types, tensor rebuilders, OrderedDict) and refuses
any other global, naming it. Both layouts are read: the zip of torch >= 1.6 and the legacy stream format.

    state = load_pth("resnet18.pth")   # dict[str, numpy.ndarray], wrappers ("state_dict.", "module.") removed
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError

_TORCH_STORAGE_DTYPES: dict[str, type | str] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",  # no numpy dtype: stored as uint16, widened to float32
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PREFIX = b"\x80\x02\x8a\x0a" + _LEGACY_MAGIC.to_bytes(10, "little")


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        dt = _TORCH_STORAGE_DTYPES[self.name]
        return np.dtype(np.uint16 if dt == "bfloat16" else dt)


@dataclass
class _Storage:
    """A storage referenced by the pickle; its bytes are attached once read (legacy files: after the pickle)."""

    key: str
    type: _StorageType
    numel: int
    data: np.ndarray | None = None


@dataclass
class _LazyTensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        base = self.storage.data
        if base is None:
            raise ValueError(f"storage {self.storage.key} has no data")
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=self.size, strides=tuple(s * item for s in self.stride)
        )
        arr = np.array(view, order="C")  # a C-contiguous copy out of the shared storage
        if self.storage.type.name == "BFloat16Storage":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        return arr


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _LazyTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *args):
    return data


# The only globals a weights pickle may name: tensor rebuilders, storage types and OrderedDict.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    **{("torch", name): _StorageType(name) for name in _TORCH_STORAGE_DTYPES},
}


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a PyTorch state dict; refuses every global that is not tensor data."""

    def __init__(self, fh: Any, source: str, read_storage: Callable[[_Storage], np.ndarray] | None):
        super().__init__(fh)
        self.source = source
        self.read_storage = read_storage  # None: legacy file, storage bytes come after the pickle
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ModelFileError(
                f"{self.source}: refusing to unpickle global '{module}.{name}': only tensor data is allowed "
                f"in a weights file (a .pth is a pickle and could run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and pid and pid[0] in ("storage", b"storage")):
            raise ModelFileError(f"{self.source}: unsupported persistent id {str(pid)[:60]!r} in pickle")
        storage_type, key, _location, numel = pid[1], str(pid[2]), pid[3], int(pid[4])
        view = pid[5] if len(pid) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise ModelFileError(f"{self.source}: storage of unknown type {storage_type!r}")
        if key not in self.storages:
            st = _Storage(key, storage_type, numel)
            if self.read_storage is not None:
                st.data = self.read_storage(st)
            self.storages[key] = st
        if view is not None:
            raise ModelFileError(f"{self.source}: storage views (pre-1.0 PyTorch files) are not supported")
        return self.storages[key]


def _materialize(obj: Any) -> Any:
    if isinstance(obj, _LazyTensor):
        return obj.materialize()
    if isinstance(obj, dict):
        return OrderedDict((k, _materialize(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(v) for v in obj)
    return obj


def _flatten_state(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
    """A checkpoint may nest its state dict ({"state_dict": {...}}, {"model": {...}}): flatten to dotted names."""
    out: dict[str, np.ndarray] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten_state(v, f"{prefix}{k}."))
    elif isinstance(obj, np.ndarray):
        out[prefix[:-1]] = obj
    return out


def _strip_wrapper(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for wrapper in ("state_dict.", "model.", "module."):
        if state and all(k.startswith(wrapper) for k in state):
            state = {k[len(wrapper) :]: v for k, v in state.items()}
    return state


def is_pth(path: str | os.PathLike) -> bool:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                return any(n.endswith("/data.pkl") or n == "data.pkl" for n in zf.namelist())
        with open(path, "rb") as fh:
            return fh.read(len(_LEGACY_PREFIX)) == _LEGACY_PREFIX
    except OSError:
        return False


def load_pth(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict (zip format of torch >= 1.6, or the legacy stream format) without torch."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            obj = _load_pth_zip(path)
        else:
            obj = _load_pth_legacy(path)
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError) as err:
        raise ModelFileError(f"{path}: not a readable PyTorch weights file: {err}") from None
    state = _strip_wrapper(_flatten_state(_materialize(obj)))
    if not state:
        raise ModelFileError(f"{path}: no tensors found (expected a state dict of name -> tensor)")
    return state


def _load_pth_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if not pkl:
            raise ModelFileError(f"{path}: zip without data.pkl, not a PyTorch weights file")
        root = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if f"{root}byteorder" in zf.namelist():
            byteorder = zf.read(f"{root}byteorder").decode().strip()

        def read_storage(st: _Storage) -> np.ndarray:
            dtype = st.type.dtype.newbyteorder("<" if byteorder == "little" else ">")
            raw = zf.read(f"{root}data/{st.key}")
            return np.frombuffer(raw, dtype=dtype, count=st.numel).astype(st.type.dtype)

        return _TensorOnlyUnpickler(io.BytesIO(zf.read(pkl[0])), str(path), read_storage).load()


def _load_pth_legacy(path: Path) -> Any:
    with open(path, "rb") as fh:
        # magic number, protocol version and sys info are plain pickles of builtins
        magic = _TensorOnlyUnpickler(fh, str(path), None).load()
        if magic != _LEGACY_MAGIC:
            raise ModelFileError(f"{path}: not a PyTorch weights file (bad magic number)")
        _TensorOnlyUnpickler(fh, str(path), None).load()  # protocol version
        sys_info = _TensorOnlyUnpickler(fh, str(path), None).load()
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        unpickler = _TensorOnlyUnpickler(fh, str(path), None)
        result = unpickler.load()
        keys = _TensorOnlyUnpickler(fh, str(path), None).load()
        for key in keys:
            st = unpickler.storages[str(key)]
            (numel,) = struct.unpack("<q" if little else ">q", fh.read(8))
            dtype = st.type.dtype.newbyteorder("<" if little else ">")
            raw = fh.read(numel * dtype.itemsize)
            if len(raw) != numel * dtype.itemsize:
                raise ModelFileError(f"{path}: truncated (storage {key} needs {numel} elements)")
            st.data = np.frombuffer(raw, dtype=dtype).astype(st.type.dtype)
    return result
