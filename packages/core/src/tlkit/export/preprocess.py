"""Input preprocessing shared by training, export metadata, the engine runners and DeepStream configs.

One definition, so a deployed model is fed exactly what it was trained on. Every mode reduces to
``y = (x - mean) / std`` per channel, on pixel values ``x`` in 0..255, after putting the channels in the
model's order:

========  =============  ====================================  =============================
mode      channel order  mean (in that order, 0..255 scale)    std
========  =============  ====================================  =============================
caffe     BGR            103.939, 116.779, 123.68 (gray 117.3786)  1
torch     RGB            123.675, 116.28, 103.53               58.395, 57.12, 57.375
tf        RGB            127.5                                  127.5
========  =============  ====================================  =============================

(TLT's ``preprocess_mode``; torch's constants are ImageNet's 0.485/0.456/0.406 and 0.229/0.224/0.225
times 255.) A custom ``mean`` (TLT ``image_mean``) is always given in **RGB** order, 0..255 scale.

The resolved parameters live in ``meta["preprocessing"]`` of a model file and in the exported ONNX
metadata::

    {"mode": "caffe", "channel_order": "BGR", "mean": [...], "std": [...],
     "resize_interpolation": "bilinear"}

No MXNet import here (numpy and, for resizing only, OpenCV).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tlkit.errors import SpecError

MODES = ("caffe", "torch", "tf")
_DEFAULTS = {
    # mode: (channel_order, mean in RGB order, std in RGB order)
    "caffe": ("BGR", (123.68, 116.779, 103.939), (1.0, 1.0, 1.0)),
    "torch": ("RGB", (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "tf": ("RGB", (127.5, 127.5, 127.5), (127.5, 127.5, 127.5)),
}
_GRAY_MEAN = {"caffe": 117.3786, "torch": 114.444, "tf": 127.5}
_GRAY_STD = {"caffe": 1.0, "torch": 57.1, "tf": 127.5}
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")


def preprocessing_params(
    mode: str = "caffe",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    channels: int = 3,
    resize_interpolation: str = "bilinear",
) -> dict[str, Any]:
    """The resolved parameters (channel order, mean/std in the model's channel order) for `mode`."""
    if mode not in MODES:
        raise SpecError(f"preprocessing mode {mode!r} is not one of {', '.join(MODES)}")
    if resize_interpolation.lower() not in INTERPOLATIONS:
        raise SpecError(f"resize_interpolation {resize_interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")
    order, dmean, dstd = _DEFAULTS[mode]
    if channels == 1:
        m = [float(mean[0]) if mean else _GRAY_MEAN[mode]]
        s = [float(std[0]) if std else _GRAY_STD[mode]]
        order = "GRAY"
    elif channels == 3:
        m = [float(v) for v in (mean if mean is not None else dmean)]
        s = [float(v) for v in (std if std is not None else dstd)]
        if len(m) != 3 or len(s) != 3:
            raise SpecError(f"preprocessing mean/std need 3 values (RGB order), got mean={m} std={s}")
        if order == "BGR":  # given in RGB, stored in the model's order
            m, s = m[::-1], s[::-1]
    else:
        raise SpecError(f"input has {channels} channels; preprocessing supports 1 (gray) or 3")
    if any(v == 0 for v in s):
        raise SpecError(f"preprocessing std must be non-zero, got {s}")
    return {
        "mode": mode,
        "channel_order": order,
        "mean": m,
        "std": s,
        "resize_interpolation": resize_interpolation.lower(),
    }


def resolve_preprocessing(meta: dict[str, Any]) -> dict[str, Any]:
    """meta["preprocessing"] completed with defaults (caffe mode, as TLT's classification default).

    Keys this module does not know (a task's own, e.g. "center_crop") are kept, so they reach the
    exported ONNX metadata too."""
    pre = dict(meta.get("preprocessing") or {})
    channels = int((meta.get("input_shape") or [3])[0])
    if "channel_order" in pre and "mean" in pre and "std" in pre:
        # already resolved (e.g. read back from an exported ONNX)
        pre.setdefault("mode", "custom")
        pre.setdefault("resize_interpolation", "bilinear")
        return pre
    mean = pre.get("mean")
    if isinstance(mean, dict):  # TLT image_mean {r, g, b} / {l}
        mean = [mean[k] for k in ("r", "g", "b")] if "r" in mean else [mean.get("l")]
    resolved = preprocessing_params(
        pre.get("mode", "caffe"),
        mean=mean,
        std=pre.get("std"),
        channels=channels,
        resize_interpolation=pre.get("resize_interpolation", "bilinear"),
    )
    return {**pre, **resolved}  # task-specific keys (e.g. center_crop) ride along


def normalize(
    img: np.ndarray,
    mode: str = "caffe",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Normalize float RGB pixels (0..255, channels last: HWC or NHWC) for `mode`.

    Returns float32 in the model's channel order (BGR for caffe). A 1-channel image stays 1-channel.
    The classification data pipeline calls this, so training and deployment share one definition.
    """
    x = np.asarray(img, dtype=np.float32)
    channels = x.shape[-1] if x.ndim >= 3 else 1
    p = preprocessing_params(mode, mean, std, channels=channels)
    return normalize_with(x, p)


def normalize_with(x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Apply resolved `params` (see `preprocessing_params`) to float RGB pixels, channels last."""
    x = np.asarray(x, dtype=np.float32)
    if params["channel_order"] == "BGR":
        x = x[..., ::-1]
    mean = np.asarray(params["mean"], np.float32)
    std = np.asarray(params["std"], np.float32)
    return ((x - mean) / std).astype(np.float32)


def _cv2_interp(name: str) -> int:
    import cv2

    return {
        "nearest": cv2.INTER_NEAREST,
        "bilinear": cv2.INTER_LINEAR,
        "bicubic": cv2.INTER_CUBIC,
        "area": cv2.INTER_AREA,
    }[name]


def _resize(img: np.ndarray, w: int, h: int, interp: int) -> np.ndarray:
    import cv2

    out = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)
    return out[:, :, None] if out.ndim == 2 else out


def preprocess(images: Sequence[np.ndarray], meta: dict[str, Any]) -> np.ndarray:
    """RGB uint8 HWC images (or HxW gray) -> an NCHW float32 batch, resized and normalized per `meta`.

    `meta` is a model file's meta or `read_onnx_metadata(...)`: it needs "input_shape" [C, H, W] and
    "preprocessing" (see the module docstring). With preprocessing "center_crop": true the short side is
    resized to size / crop_fraction (default 0.875) and the middle kept, else the image is resized to (H, W).
    """
    import cv2

    if "input_shape" not in meta:
        raise SpecError("model metadata has no input_shape [C, H, W]; cannot preprocess images for it")
    c, h, w = (int(v) for v in meta["input_shape"])
    params = resolve_preprocessing(meta)
    interp = _cv2_interp(params["resize_interpolation"])
    out = np.empty((len(images), c, h, w), np.float32)
    for i, img in enumerate(images):
        img = np.asarray(img)
        if img.ndim == 2:
            img = img[:, :, None]
        if img.ndim != 3 or img.shape[2] not in (1, 3):
            raise SpecError(f"image {i}: expected an HxWx3 RGB (or HxW gray) array, got shape {img.shape}")
        if c == 1 and img.shape[2] == 3:
            img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)[:, :, None]
        elif c == 3 and img.shape[2] == 1:
            img = np.repeat(img, 3, axis=2)
        if params.get("center_crop"):
            # classification's eval convention (TLT/Keras): short side to size / crop_fraction, keep the middle
            ih, iw = img.shape[:2]
            scale = max(h, w) / float(params.get("crop_fraction", 0.875)) / min(ih, iw)
            rh, rw = max(h, round(ih * scale)), max(w, round(iw * scale))
            img = _resize(img, rw, rh, interp)
            top, left = (rh - h) // 2, (rw - w) // 2
            img = img[top : top + h, left : left + w]
        elif img.shape[:2] != (h, w):
            img = _resize(img, w, h, interp)
        out[i] = normalize_with(img.astype(np.float32), params).transpose(2, 0, 1)
    return out


# -- DeepStream ------------------------------------------------------------------------------------
# nvinfer computes y = net-scale-factor * (x - offsets[c]) on pixels in model-color-format order.
COLOR_FORMATS = {"RGB": 0, "BGR": 1, "GRAY": 2}


def to_deepstream(params: dict[str, Any]) -> dict[str, Any]:
    """Resolved preprocessing -> DeepStream's net-scale-factor, offsets and model-color-format.

    nvinfer has one scale for all channels: a per-channel std (torch mode) is approximated by its mean
    and "exact" is False, with "max_rel_error" the worst relative scale error that causes.
    """
    std = [float(s) for s in params["std"]]
    mean_std = float(np.mean(std))
    max_rel = max(abs(s - mean_std) / s for s in std)
    return {
        "net-scale-factor": 1.0 / mean_std,
        "offsets": [float(m) for m in params["mean"]],
        "model-color-format": COLOR_FORMATS[params["channel_order"]],
        "exact": max_rel < 1e-6,
        "max_rel_error": max_rel,
    }


def from_deepstream(net_scale_factor: float, offsets: Sequence[float], model_color_format: int) -> dict[str, Any]:
    """DeepStream's net-scale-factor/offsets/model-color-format -> resolved preprocessing params."""
    order = {v: k for k, v in COLOR_FORMATS.items()}.get(int(model_color_format))
    if order is None:
        raise SpecError(f"model-color-format {model_color_format} is not 0 (RGB), 1 (BGR) or 2 (GRAY)")
    if net_scale_factor <= 0:
        raise SpecError(f"net-scale-factor must be > 0, got {net_scale_factor}")
    n = 1 if order == "GRAY" else 3
    offsets = list(offsets) or [0.0] * n
    if len(offsets) != n:
        raise SpecError(f"offsets need {n} values for model-color-format {model_color_format}, got {offsets}")
    return {
        "mode": "custom",
        "channel_order": order,
        "mean": [float(o) for o in offsets],
        "std": [1.0 / float(net_scale_factor)] * n,
        "resize_interpolation": "bilinear",
    }
