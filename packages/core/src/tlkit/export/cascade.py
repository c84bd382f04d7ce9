"""A secondary classifier on a detector's objects, cropped and preprocessed exactly as DeepStream's secondary
GIE (nvinfer, process-mode 2) does it with the config `write_deepstream_config(secondary=...)` writes.

nvinfer's object crop (gst-nvinfer `get_converted_buffer`): the object rect (left, top, width, height) is cut
to integers, left/top rounded UP to even and width/height DOWN to even (NV12 alignment), then scaled to the
network input with `scaling-filter` (bilinear) without keeping the aspect ratio (maintain-aspect-ratio=0),
and normalized y = net-scale-factor * (x - offsets[c]) in model-color-format order. Objects narrower or
shorter than input-object-min-width/height are not classified; a label is attached only when its
probability reaches classifier-threshold. `margin` widens each box by that fraction of its width/height on
every side first (clipped to the frame): nvinfer has no such setting, so with a margin the Python cascade no
longer matches a DeepStream deployment (the DeepStream config says so).

Task packages use this through core only (a detection task runs an exported classifier, never the
classification package), so the cascade needs nothing but the two exported models.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError, SpecError


def nvinfer_object_rect(
    box: Sequence[float], frame_w: int, frame_h: int, margin: float = 0.0
) -> tuple[int, int, int, int]:
    """(left, top, width, height) in pixels that nvinfer crops for object `box` (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if margin:
        mw, mh = (x2 - x1) * margin, (y2 - y1) * margin
        x1, y1, x2, y2 = x1 - mw, y1 - mh, x2 + mw, y2 + mh
    x1, y1 = min(max(x1, 0.0), frame_w - 1.0), min(max(y1, 0.0), frame_h - 1.0)  # DeepStream's parsers clip
    x2, y2 = min(max(x2, 0.0), frame_w - 1.0), min(max(y2, 0.0), frame_h - 1.0)
    left, top = int(x1), int(y1)
    left, top = left + (left & 1), top + (top & 1)  # GST_ROUND_UP_2
    width, height = int(x2 - x1) & ~1, int(y2 - y1) & ~1  # GST_ROUND_DOWN_2
    width, height = min(width, frame_w - left), min(height, frame_h - top)
    return left, top, max(width, 0), max(height, 0)


def classifier_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata `preprocess` needs to treat a crop as nvinfer does: a plain resize (no center crop)."""
    pre = dict(meta.get("preprocessing") or {})
    pre["center_crop"] = False
    return {**meta, "preprocessing": pre}


@dataclass
class SecondaryResult:
    label: str | None  # None: not classified (too small, another class) or below the threshold
    probability: float | None
    rect: tuple[int, int, int, int] | None = None  # the crop (left, top, width, height); None when skipped


@dataclass
class SecondaryClassifier:
    """An exported classifier (probabilities out) run on detected objects; see the module docstring."""

    path: Path
    margin: float = 0.0
    min_width: int = 16
    min_height: int = 16
    threshold: float = 0.5
    operate_on_class_ids: tuple[int, ...] = ()  # () = objects of every detector class
    backend: str | None = None
    times: list[float] = field(default_factory=list)  # seconds per crop of each classifier forward pass

    def __post_init__(self) -> None:
        from tlkit.export.runners import load_runner

        self.path = Path(self.path)
        if self.margin < 0:
            raise SpecError(f"secondary margin {self.margin}: must be >= 0 (a fraction of the box size)")
        self.runner = load_runner(self.path, self.backend)
        meta = dict(self.runner.metadata or {})
        if not meta.get("input_shape") or not meta.get("classes"):
            raise ModelFileError(f"{self.path}: not an exported classifier (its metadata lacks input_shape/classes)")
        self.meta = classifier_meta(meta)
        self.probabilities = meta.get("output_activation") == "softmax"

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.meta["classes"]]

    def inputs(
        self, frame: np.ndarray, boxes: Sequence[Sequence[float]], class_ids: Sequence[int] | None = None
    ) -> tuple[np.ndarray, list[int], list[tuple[int, int, int, int]]]:
        """(NCHW batch, indices of the boxes it holds, their crop rects) for RGB `frame` and its `boxes`."""
        from tlkit.export.preprocess import preprocess

        h, w = frame.shape[:2]
        crops, kept, rects = [], [], []
        for i, box in enumerate(boxes):
            if (
                self.operate_on_class_ids
                and class_ids is not None
                and int(class_ids[i]) not in self.operate_on_class_ids
            ):
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            if x2 - x1 < self.min_width or y2 - y1 < self.min_height:  # nvinfer filters on the object's own rect
                continue
            rect = nvinfer_object_rect(box, w, h, self.margin)
            left, top, cw, ch = rect
            if cw < 2 or ch < 2:
                continue
            crops.append(frame[top : top + ch, left : left + cw])
            kept.append(i)
            rects.append(rect)
        if not crops:
            c, ih, iw = (int(v) for v in self.meta["input_shape"])
            return np.zeros((0, c, ih, iw), np.float32), [], []
        return preprocess(crops, self.meta), kept, rects

    def classify(
        self, frame: np.ndarray, boxes: Sequence[Sequence[float]], class_ids: Sequence[int] | None = None
    ) -> list[SecondaryResult]:
        """One SecondaryResult per box (label None where nvinfer would attach none)."""
        out = [SecondaryResult(None, None) for _ in boxes]
        x, kept, rects = self.inputs(frame, boxes, class_ids)
        if not kept:
            return out
        t = time.perf_counter()
        probs = np.asarray(self.runner.run(x)[0], np.float64)
        self.times.append((time.perf_counter() - t) / len(kept))
        if not self.probabilities:  # a classifier exported before softmax was in the graph: logits
            probs = np.exp(probs - probs.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
        if probs.shape[1] != len(self.classes):
            raise ModelFileError(f"{self.path}: {probs.shape[1]} outputs for {len(self.classes)} classes")
        for i, rect, p in zip(kept, rects, probs):
            k = int(np.argmax(p))
            label = self.classes[k] if p[k] >= self.threshold else None
            out[i] = SecondaryResult(label, float(p[k]), rect)
        return out


def load_secondary(path: str | os.PathLike, options: dict[str, Any]) -> SecondaryClassifier:
    """A SecondaryClassifier from command options (the export/deploy DeepStream flags and --secondary_margin)."""
    from tlkit.export.deploy import parse_class_ids

    return SecondaryClassifier(
        Path(path),
        margin=float(options.get("secondary_margin", 0.0)),
        min_width=int(options.get("input_object_min_width", 16)),
        min_height=int(options.get("input_object_min_height", 16)),
        threshold=float(options.get("classifier_threshold", 0.5)),
        operate_on_class_ids=parse_class_ids(options.get("operate_on_class_ids")),
    )
