"""The detectors of `tlkit detection`, by name (`model_config.detector`, a model file's meta["detector"]).

Built in: detectnet_v2 (TLT's), and GluonCV's ssd and yolov3. Each is one module with a `base.Detector`
subclass. Another package adds one through the entry-point group `tlkit_detection.detectors`
(`name = "pkg.module:MyDetector"`, a class or an instance), or in-process with `register(MyDetector())`.
Importing this module is light (no MXNet): detectors load on first use.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from tlkit_detection.detectors.base import Detector, Training

__all__ = ["Detector", "Training", "build_from_meta", "for_meta", "get", "names", "register", "unregister"]

ENTRY_POINT_GROUP = "tlkit_detection.detectors"
DEFAULT = "detectnet_v2"  # model files from before meta["detector"] existed are DetectNet_v2
_BUILTIN = {
    "detectnet_v2": "tlkit_detection.detectors.detectnet_v2:DetectNetV2",
    "ssd": "tlkit_detection.detectors.ssd:SSD",
    "yolov3": "tlkit_detection.detectors.yolov3:YOLOv3",
}
_refs: dict[str, Any] = {}  # name -> "module:attr" (not loaded yet) or a Detector
_discovered = False


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for name, ref in _BUILTIN.items():
        _refs.setdefault(name, ref)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _refs.setdefault(ep.name, ep.value)


def register(detector: Detector) -> Detector:
    """Add (or replace) a detector under `detector.name`."""
    if not detector.name:
        raise ValueError(f"{type(detector).__name__}: a detector needs a name")
    _discover()
    _refs[detector.name] = detector
    return detector


def unregister(name: str) -> None:
    _refs.pop(name, None)


def names() -> list[str]:
    """Every detector's name, the built-in ones first."""
    _discover()
    return list(_refs)


def get(name: str) -> Detector:
    """The detector registered as `name` (SpecError with the known names otherwise)."""
    from tlkit.errors import SpecError, did_you_mean

    _discover()
    ref = _refs.get(name)
    if ref is None:
        raise SpecError(f"detector {name!r} is not installed{did_you_mean(name, _refs)}; known: {', '.join(_refs)}")
    if isinstance(ref, str):
        module, _, attr = ref.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        ref = obj() if isinstance(obj, type) else obj
        _refs[name] = ref
    return ref


def for_meta(meta: dict[str, Any]) -> Detector:
    """The detector of a model file: meta["detector"]; else (ONNX files, older models) the detector whose
    outputs the file has; else DetectNet_v2."""
    from tlkit.errors import ModelFileError, SpecError

    name = meta.get("detector")
    if name:
        try:
            return get(name)
        except SpecError as e:
            raise ModelFileError(f"the model is a {name!r} detector: {e}") from None
    outputs = list(meta.get("output_names") or [])
    for n in names():
        if outputs and get(n).reads_outputs(outputs):
            return get(n)
    return get(DEFAULT)


def build_from_meta(meta: dict[str, Any]) -> Any:
    """TaskSpec.build_model of the detection task: the network of a gluon model file, by its detector."""
    return for_meta(meta).build_from_meta(meta)
