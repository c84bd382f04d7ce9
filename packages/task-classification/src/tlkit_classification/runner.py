"""Run a classification model file, whatever it is (.tlk in MXNet, .onnx in onnxruntime, engines of backend
plugins: core's `tlkit.export.runners.load_runner` picks by suffix), with the SAME pre- and post-processing:
the eval pipeline of `data.py` driven by the model's own metadata, then softmax."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Runner:
    """`logits(batch NCHW float32) -> (N, classes) float32`, plus what the model file says about itself."""

    path: Path
    backend: str
    meta: dict[str, Any]
    logits: Callable[[np.ndarray], np.ndarray]

    @property
    def classes(self) -> list[str]:
        return list(self.meta.get("classes") or [])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = (int(v) for v in self.meta["input_shape"])
        return c, h, w


def load_runner(path: str | Path, ctx: Any = None, classmap: str | Path | None = None) -> Runner:
    """A Runner for a .tlk model file or anything an installed engine backend loads."""
    from tlkit.export.runners import load_runner as core_load_runner

    path = Path(path)
    kw = {"ctx": ctx} if ctx is not None and path.suffix == ".tlk" else {}
    eng = core_load_runner(path, **kw)
    meta = dict(eng.metadata or {})
    if meta.get("task") not in (None, "classification"):
        raise ModelFileError(f"{path}: a {meta['task']!r} model, not a classification model")

    probabilities = meta.get("output_activation") == "softmax"  # exports end in a Softmax (tlkit.export.onnx_export)

    def logits(batch: np.ndarray) -> np.ndarray:
        out = np.asarray(eng.run(np.ascontiguousarray(batch, dtype=np.float32))[0], np.float32)
        # log-probabilities are logits: softmax(log p) = p, so evaluate/inference treat every model alike
        return np.log(np.maximum(out, np.finfo(np.float32).tiny)) if probabilities else out

    backend = "mxnet" if path.suffix == ".tlk" else type(eng).__name__.removesuffix("Runner").lower()
    runner = Runner(path, backend, meta, logits)
    if classmap is not None:
        from tlkit_classification.data import read_classmap

        runner.meta["classes"] = read_classmap(classmap)
    if not runner.meta.get("input_shape"):
        raise ModelFileError(f"{path}: model metadata has no input_shape [C, H, W]")
    if not runner.classes:
        raise ModelFileError(f"{path}: model metadata has no class names; pass -cm/--classmap classmap.json")
    return runner
