"""One face over the TensorRT Python APIs tlkit meets: TensorRT 8.6, 10.x, 11.x and TensorRT-RTX.

What differs, and what `TrtApi` answers for each (tlt-reference.md §8):

| | 8.6 | 10.x | 11.x | RTX 1.x |
|---|---|---|---|---|
| network flag | EXPLICIT_BATCH | (explicit by default) | strongly typed | strongly typed |
| fp16 | BuilderFlag.FP16 | BuilderFlag.FP16 | fp16 ONNX | fp16 ONNX |
| int8 with Q/DQ ONNX | BuilderFlag.INT8 | STRONGLY_TYPED | yes | yes |
| int8 from a calibration cache | calibrator | calibrator (deprecated) | removed | removed |
| strict types (-s) | OBEY_PRECISION_CONSTRAINTS | same | always | always |
| dynamic shapes at run time | set_input_shape (8.5+) | set_input_shape | set_input_shape | set_input_shape |

The module is picked by `TLKIT_TENSORRT_MODULE` (a module name) or the first of `tensorrt`,
`tensorrt_rtx`, `tensorrt_rtx_bindings` that imports.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

from tlkit.errors import TlkitError

MODULES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")
ENV_MODULE = "TLKIT_TENSORRT_MODULE"
INSTALL_HINT = (
    "install TensorRT (pip install tensorrt) or TensorRT-RTX "
    "(pip install tlkit-tensorrt[rtx], which builds engines even without a GPU)"
)


class TensorRTError(TlkitError):
    """TensorRT is missing, or cannot do what was asked (with why, and what to do instead)."""


@dataclass(frozen=True)
class TrtApi:
    """The imported module plus what its version can do."""

    trt: Any
    module: str
    flavour: str  # "tensorrt" | "tensorrt_rtx"
    version: str

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def minor(self) -> int:
        parts = self.version.split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0

    @property
    def label(self) -> str:
        return f"{'TensorRT-RTX' if self.is_rtx else 'TensorRT'} {self.version}"

    @property
    def is_rtx(self) -> bool:
        return self.flavour == "tensorrt_rtx"

    @property
    def strongly_typed_only(self) -> bool:
        """TRT 11 and TRT-RTX removed weak typing: precision comes from the ONNX's tensor types."""
        return self.is_rtx or self.major >= 11

    @property
    def has_calibrators(self) -> bool:
        """INT8 calibrators (and so calibration caches) exist up to TRT 10 (deprecated from 10.1)."""
        return not self.strongly_typed_only and hasattr(self.trt, "IInt8EntropyCalibrator2")

    # -- builder pieces ---------------------------------------------------------------------------
    def network_flags(self, qdq: bool) -> int:
        flags = self.trt.NetworkDefinitionCreationFlag
        if self.strongly_typed_only:
            # 11 is strongly typed by default; the flag is still accepted where it exists.
            return 1 << int(flags.STRONGLY_TYPED) if hasattr(flags, "STRONGLY_TYPED") else 0
        if self.major < 10:
            return 1 << int(flags.EXPLICIT_BATCH)  # 8.x: implicit batch unless asked
        if qdq and hasattr(flags, "STRONGLY_TYPED"):
            return 1 << int(flags.STRONGLY_TYPED)  # 10.x: a Q/DQ graph carries its own types (TAO does this)
        return 0

    def set_workspace(self, config: Any, nbytes: int) -> None:
        if hasattr(config, "set_memory_pool_limit"):
            config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, int(nbytes))
        else:  # < 8.4
            config.max_workspace_size = int(nbytes)

    def set_flag(self, config: Any, *names: str) -> str | None:
        """Set the first BuilderFlag of `names` this version has; returns its name (None: none exists)."""
        for name in names:
            flag = getattr(self.trt.BuilderFlag, name, None)
            if flag is not None:
                config.set_flag(flag)
                return name
        return None

    def cache_calibrator(self, cache: bytes, batch_size: int) -> Any:
        """An IInt8EntropyCalibrator2 that serves an existing calibration cache and no batches (TRT <= 10):
        TensorRT reads the scales from the cache and never asks for data."""
        base = self.trt.IInt8EntropyCalibrator2

        class CacheCalibrator(base):  # type: ignore[misc, valid-type]  # TensorRT's class, loaded at run time
            def __init__(self) -> None:
                base.__init__(self)

            def get_batch_size(self) -> int:
                return batch_size

            def get_batch(self, names: Any) -> None:
                return None

            def read_calibration_cache(self) -> bytes:
                return cache

            def write_calibration_cache(self, data: Any) -> None:
                return None

        return CacheCalibrator()


def _flavour(module_name: str) -> str:
    return "tensorrt_rtx" if "rtx" in module_name else "tensorrt"


def load_api(module: str | None = None) -> TrtApi:
    """Import TensorRT (or TensorRT-RTX) and describe it. Raises TensorRTError when none imports."""
    wanted = module or os.environ.get(ENV_MODULE)
    names = (wanted,) if wanted else MODULES
    problems = []
    for name in names:
        try:
            mod = importlib.import_module(name)
        except ImportError as err:  # also OSError-ish "libnvinfer.so.N: cannot open" arrives as ImportError
            problems.append(f"{name}: {str(err).splitlines()[0]}")
            continue
        except OSError as err:
            problems.append(f"{name}: {err}")
            continue
        version = str(getattr(mod, "__version__", "0"))
        return TrtApi(trt=mod, module=name, flavour=_flavour(name), version=version)
    raise TensorRTError(f"TensorRT is not importable ({'; '.join(problems)}): {INSTALL_HINT}")


def why_unavailable_api(module: str | None = None) -> str | None:
    try:
        load_api(module)
    except TensorRTError as err:
        return str(err)
    return None
