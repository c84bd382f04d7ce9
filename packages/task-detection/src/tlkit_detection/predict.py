"""Run a detection model (.tlk in MXNet, .onnx in onnxruntime, through core's `load_runner`) with the same pre-
and post-processing everywhere: training validation, `evaluate -m` and `inference`.

network outputs -> its detector's `decode` (`tlkit_detection.detectors`) -> boxes in each source image's pixels.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError
from tlkit_detection.clustering import Detection
from tlkit_detection.kitti import FrameArrays


def to_frame(dets: Sequence[Detection]) -> FrameArrays:
    n = len(dets)
    return FrameArrays(
        np.array([d.class_name for d in dets], dtype=object),
        np.array([d.bbox for d in dets], np.float64).reshape(n, 4),
        np.zeros(n),
        np.zeros(n, np.int64),
        np.array([d.confidence for d in dets], np.float64),
    )


def output_list(out: Any) -> list[Any]:
    """A network's outputs as a list (a single-output network gives one array, not a tuple)."""
    return list(out) if isinstance(out, (list, tuple)) else [out]


def spec_postprocessing(spec: Any) -> Any:
    """The spec's postprocessing_config when the spec sets one (in its file or by overrides), else None:
    then the post-processing saved in the model applies, not the built-in defaults."""
    if spec is None or "postprocessing_config" not in spec.model_fields_set:
        return None
    return spec.postprocessing_config


@dataclass
class LoadedDetector:
    """A detection model ready to run: `heads(batch NCHW)` gives its outputs (numpy, in the order its
    detector's `decode` takes), `params` its per-class post-processing; `detect(images)` runs everything."""

    path: Path | None
    backend: str
    meta: dict[str, Any]
    heads: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    params: dict[str, Any]
    kind: Any  # the tlkit_detection.detectors.Detector that made the model
    times: list[float] = field(default_factory=list)  # seconds per image of each forward pass

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def input_size(self) -> tuple[int, int]:
        _, h, w = (int(v) for v in self.meta["input_shape"])
        return w, h

    def decode(self, outputs: Sequence[np.ndarray], orig_sizes: Sequence[tuple[int, int]]) -> list[list[Detection]]:
        return self.kind.decode(outputs, self.classes, self.input_size, self.params, orig_sizes)

    def run_batch(self, x: np.ndarray, orig_sizes: Sequence[tuple[int, int]]) -> list[list[Detection]]:
        t = time.perf_counter()
        outs = self.heads(x)
        self.times.append((time.perf_counter() - t) / max(len(x), 1))
        return self.decode(outs, orig_sizes)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """RGB uint8 HWC images of any size -> detections in their own pixels."""
        from tlkit.export.preprocess import preprocess

        x = preprocess(list(images), self.meta)
        return self.run_batch(x, [(im.shape[1], im.shape[0]) for im in images])


def net_detector(net: Any, meta: dict[str, Any], ctx: Any, params: dict[str, Any], kind: Any = None) -> LoadedDetector:
    """A LoadedDetector over an in-memory Gluon network (validation during training)."""
    from tlkit_detection import detectors

    def heads(x: np.ndarray):
        import mxnet as mx

        return tuple(o.asnumpy() for o in output_list(net(mx.nd.array(x, ctx=ctx))))

    return LoadedDetector(None, "mxnet", meta, heads, params, kind or detectors.for_meta(meta))


def load_detector(path: str | Path, spec: Any = None, ctx: Any = None) -> LoadedDetector:
    """A LoadedDetector for a .tlk or .onnx (or engine-backend) model file; its detector from the file's meta."""
    from tlkit.export.runners import load_runner
    from tlkit_detection import detectors

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: model file not found")
    kw = {"ctx": ctx} if ctx is not None and path.suffix == ".tlk" else {}
    eng = load_runner(path, **kw)
    meta = dict(eng.metadata or {})
    if meta.get("task") != "detection":
        raise ModelFileError(f"{path}: a {meta.get('task')!r} model, not a detection model")
    for key in ("classes", "input_shape"):
        if not meta.get(key):
            raise ModelFileError(f"{path}: model metadata has no {key}")
    kind = detectors.for_meta(meta)
    names = list(getattr(eng, "output_names", None) or meta.get("output_names") or kind.output_names)

    def heads(x: np.ndarray):
        return kind.select_outputs(path, eng.run(np.ascontiguousarray(x, dtype=np.float32)), names)

    backend = "mxnet" if path.suffix == ".tlk" else type(eng).__name__.removesuffix("Runner").lower()
    return LoadedDetector(path, backend, meta, heads, kind.postprocessing(meta, spec), kind)
