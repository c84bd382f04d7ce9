"""Run a DetectNet_v2 model (.tlk in MXNet, .onnx in onnxruntime, through core's `load_runner`) with the
same pre- and post-processing everywhere: training validation, `evaluate -m` and `inference`.

raw heads -> `clustering.cluster_outputs` (in network-input pixels, where minimum_bounding_box_height
applies, as TLT) -> boxes scaled back to each source image's size.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError
from tlkit_detection.clustering import ClusteringParams, Detection, cluster_outputs
from tlkit_detection.kitti import FrameArrays


def postprocess(
    cov: np.ndarray,
    bbox: np.ndarray,
    classes: Sequence[str],
    input_size: tuple[int, int],
    params: Mapping[str, ClusteringParams],
    orig_sizes: Sequence[tuple[int, int]],
) -> list[list[Detection]]:
    """Batch heads (B, C, h, w) / (B, 4C, h, w) -> per image detections in source pixels."""
    out = []
    w_in, h_in = input_size
    for i, (w0, h0) in enumerate(orig_sizes):
        dets = cluster_outputs(cov[i], bbox[i], classes, input_size, params)
        s = np.array([w0 / w_in, h0 / h_in, w0 / w_in, h0 / h_in])
        for d in dets:
            d.bbox = np.asarray(d.bbox, np.float64) * s
        out.append(dets)
    return out


def to_frame(dets: Sequence[Detection]) -> FrameArrays:
    n = len(dets)
    return FrameArrays(
        np.array([d.class_name for d in dets], dtype=object),
        np.array([d.bbox for d in dets], np.float64).reshape(n, 4),
        np.zeros(n),
        np.zeros(n, np.int64),
        np.array([d.confidence for d in dets], np.float64),
    )


def spec_postprocessing(spec: Any) -> Any:
    """The spec's postprocessing_config when the spec sets one (in its file or by overrides), else None:
    then the post-processing saved in the model applies, not the built-in defaults."""
    if spec is None or "postprocessing_config" not in spec.model_fields_set:
        return None
    return spec.postprocessing_config


def clustering_params(meta: dict[str, Any], spec: Any = None) -> dict[str, ClusteringParams]:
    """Per-class clustering: the spec's postprocessing_config when it sets one, else the model's own meta."""
    classes = list(meta["classes"])
    if spec_postprocessing(spec) is not None:
        return spec.postprocessing_config.params(classes)
    saved = meta.get("postprocessing") or {}
    return {c: ClusteringParams(**saved[c]) if c in saved else ClusteringParams() for c in classes}


@dataclass
class Detector:
    """`heads(batch NCHW) -> (cov, bbox)` with the model's metadata; `detect(images)` runs everything."""

    path: Path | None
    backend: str
    meta: dict[str, Any]
    heads: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    params: dict[str, ClusteringParams]
    times: list[float] = field(default_factory=list)  # seconds per image of each forward pass

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def input_size(self) -> tuple[int, int]:
        _, h, w = (int(v) for v in self.meta["input_shape"])
        return w, h

    def run_batch(self, x: np.ndarray, orig_sizes: Sequence[tuple[int, int]]) -> list[list[Detection]]:
        t = time.perf_counter()
        cov, bbox = self.heads(x)
        self.times.append((time.perf_counter() - t) / max(len(x), 1))
        return postprocess(cov, bbox, self.classes, self.input_size, self.params, orig_sizes)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """RGB uint8 HWC images of any size -> detections in their own pixels."""
        from tlkit.export.preprocess import preprocess

        x = preprocess(list(images), self.meta)
        return self.run_batch(x, [(im.shape[1], im.shape[0]) for im in images])


def net_detector(net: Any, meta: dict[str, Any], ctx: Any, params: dict[str, ClusteringParams]) -> Detector:
    """A Detector over an in-memory Gluon network (validation during training)."""

    def heads(x: np.ndarray):
        import mxnet as mx

        cov, bbox = net(mx.nd.array(x, ctx=ctx))
        return cov.asnumpy(), bbox.asnumpy()

    return Detector(None, "mxnet", meta, heads, params)


def load_detector(path: str | Path, spec: Any = None, ctx: Any = None) -> Detector:
    """A Detector for a .tlk or .onnx (or engine-backend) model file."""
    from tlkit.export.runners import load_runner

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
    backend = "mxnet" if path.suffix == ".tlk" else type(eng).__name__.removesuffix("Runner").lower()
    # GluonCV detectors (decoded boxes, NMS in numpy); ONNX metadata keeps output_names, not "detector"
    from tlkit.export.nms import OUTPUTS as NMS_OUTPUTS

    if meta.get("detector") in ("ssd", "yolov3") or list(meta.get("output_names") or []) in (["ids", "scores", "bboxes"], NMS_OUTPUTS):
        from tlkit_detection.gluoncv_models import runner_detector

        return runner_detector(path, eng, meta, spec, backend)
    names = list(meta.get("output_names") or ["output_cov", "output_bbox"])

    def heads(x: np.ndarray):
        outs = eng.run(np.ascontiguousarray(x, dtype=np.float32))
        if len(outs) != 2:
            raise ModelFileError(f"{path}: expected 2 outputs (output_cov, output_bbox), the model gave {len(outs)}")
        got = list(getattr(eng, "output_names", None) or names)
        by_name = dict(zip(got, outs))
        if "output_cov" in by_name and "output_bbox" in by_name:
            return np.asarray(by_name["output_cov"]), np.asarray(by_name["output_bbox"])
        return np.asarray(outs[0]), np.asarray(outs[1])

    backend = "mxnet" if path.suffix == ".tlk" else type(eng).__name__.removesuffix("Runner").lower()
    return Detector(path, backend, meta, heads, clustering_params(meta, spec))
