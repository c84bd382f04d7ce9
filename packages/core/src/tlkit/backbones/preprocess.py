"""Input preprocessing conventions of pretrained weights (numpy + OpenCV; MXNet only for the output array).

- "torch": RGB / 255, minus mean (0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225) (GluonCV, PyTorch)
- "tf":    RGB / 127.5 - 1, i.e. [-1, 1] (TensorFlow / Keras "tf" mode, EfficientNet-Lite)
- "caffe": BGR minus the ImageNet mean (103.939, 116.779, 123.68), 0..255 scale (Keras "caffe" mode, TLT)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_TORCH_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_TORCH_STD = np.array([0.229, 0.224, 0.225], np.float32)
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


def normalize(images: np.ndarray, mode: str) -> np.ndarray:
    """NHWC RGB uint8/float 0..255 -> NCHW float32 in the convention `mode`."""
    x = np.asarray(images, dtype=np.float32)
    if mode == "torch":
        x = (x / 255.0 - _TORCH_MEAN) / _TORCH_STD
    elif mode == "tf":
        x = x / 127.5 - 1.0
    elif mode == "caffe":
        x = x[..., ::-1] - _CAFFE_MEAN_BGR
    else:
        raise ValueError(f"unknown preprocessing mode {mode!r}; expected torch, tf or caffe")
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def center_crop_resize(image: np.ndarray, size: tuple[int, int], crop_fraction: float = 0.875) -> np.ndarray:
    """Resize so the shorter side is size/crop_fraction, then take the central `size` (H, W) crop:
    the standard ImageNet evaluation transform."""
    import cv2

    h, w = image.shape[:2]
    scale = max(size) / crop_fraction / min(h, w)
    nh, nw = max(size[0], round(h * scale)), max(size[1], round(w * scale))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return resized[top : top + size[0], left : left + size[1]]


@dataclass(frozen=True)
class Preprocess:
    """preprocess(images) -> mx.nd.NDArray (N, 3, H, W): images are HxWx3 RGB arrays (one or a list),
    center-cropped and resized to `size` (H, W), normalized in the convention `mode`."""

    mode: str
    size: tuple[int, int]

    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> Any:
        import mxnet as mx

        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        batch = np.stack([center_crop_resize(np.asarray(im)[..., :3], self.size) for im in images])
        return mx.nd.array(normalize(batch, self.mode))


def make_preprocess(mode: str, size: tuple[int, int] = (224, 224)) -> Preprocess:
    """The `Preprocess` of a convention and an input size."""
    normalize(np.zeros((1, 1, 1, 3), np.uint8), mode)  # fail now on an unknown mode
    return Preprocess(mode, size)
