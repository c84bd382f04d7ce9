"""Images -> people with any model: a Gluon net (training validation), a .tlk or an .onnx (tlkit runners).

Each image is fitted into the network input keeping its aspect ratio and padded bottom/right with grey
(TLT's `pad_image_input` mode, the one TensorRT/DeepStream use); the outputs are upsampled x8 (bicubic),
cropped to the image's part and resized to the image, then decoded (postprocess.decode).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tlkit.errors import DataError

from tlkit_pose.config import InferenceConfig
from tlkit_pose.postprocess import Person, ScaledInput, decode, merge_multiscale

PAD_VALUE = 128


def fit_input(image_bgr: np.ndarray, input_hw: tuple[int, int]) -> ScaledInput:
    """Resize to fit (H, W) keeping the aspect ratio, pad bottom/right; returns the padded RGB image."""
    import cv2

    if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise DataError(f"expected an HxWx3 image, got {None if image_bgr is None else image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    H, W = input_hw
    f = min(H / h, W / w)
    sh, sw = min(H, max(1, int(round(h * f)))), min(W, max(1, int(round(w * f))))
    resized = cv2.resize(image_bgr, (sw, sh), interpolation=cv2.INTER_CUBIC) if (sh, sw) != (h, w) else image_bgr
    padded = np.full((H, W, 3), PAD_VALUE, np.uint8)
    padded[:sh, :sw] = resized[:, :, ::-1]
    return ScaledInput(padded, f, (sh, sw))


def net_forward(net: Any, ctx: Any = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A (N, 3, H, W) -> [heatmap, paf] function for a Gluon block (last stage of a training-mode net)."""
    import mxnet as mx

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = net(mx.nd.array(x, ctx=ctx or mx.cpu()))
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return [out[-2].asnumpy(), out[-1].asnumpy()]

    return run


class PosePredictor:
    """Runs a model on images and decodes people. `forward(batch) -> [heatmap, paf]` (NCHW, stride 8)."""

    def __init__(self, forward: Callable[[np.ndarray], list[np.ndarray]], meta: dict[str, Any], params: InferenceConfig | None = None, batch_size: int = 8):
        from tlkit.export.preprocess import resolve_preprocessing

        self.forward = forward
        self.meta = meta
        self.params = params or InferenceConfig(**((meta.get("postprocessing") or {}).get("inference") or {}))
        self.pre = resolve_preprocessing(meta)
        c, h, w = (int(v) for v in meta["input_shape"])
        self.input_hw = (h, w)
        self.stride = int((meta.get("postprocessing") or {}).get("stride", 8))
        self.batch_size = max(1, int(batch_size))

    @classmethod
    def from_model(cls, path: Any, params: InferenceConfig | None = None, batch_size: int = 8) -> "PosePredictor":
        from tlkit.errors import ModelFileError
        from tlkit.export.runners import load_runner

        runner = load_runner(path)
        meta = runner.metadata
        if meta.get("task") not in (None, "pose"):
            raise ModelFileError(f"{path}: a {meta.get('task')!r} model, not a pose model")
        if "input_shape" not in meta:
            raise ModelFileError(f"{path}: metadata has no input_shape")

        def forward(x: np.ndarray) -> list[np.ndarray]:
            out = runner.run(x)
            if len(out) < 2:
                raise ModelFileError(f"{path}: expected heatmap and paf outputs, the model has {len(out)} output(s)")
            return [out[-2], out[-1]]

        return cls(forward, meta, params, batch_size)

    def maps(self, images_bgr: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Image-resolution (heatmap, paf) of each image, (H, W, 19) and (H, W, 38)."""
        from tlkit_pose.model import normalize

        out = []
        for start in range(0, len(images_bgr), self.batch_size):
            chunk = images_bgr[start : start + self.batch_size]
            inputs = [fit_input(img, self.input_hw) for img in chunk]
            hm, paf = self.forward(normalize(np.stack([i.image for i in inputs]), self.pre))
            if hm.shape[1] != 19 or paf.shape[1] != 38:
                raise DataError(f"model outputs have {hm.shape[1]} and {paf.shape[1]} channels; expected 19 heatmaps and 38 PAFs")
            stride = math.ceil(self.input_hw[0] / hm.shape[2])  # 8, or 2 for an sdk-compatible (x4) export
            for k, (img, inp) in enumerate(zip(chunk, inputs)):
                out.append(merge_multiscale([(hm[k].transpose(1, 2, 0), paf[k].transpose(1, 2, 0))], [inp], img.shape[:2], stride))
        return out

    def people(self, images_bgr: Sequence[np.ndarray]) -> list[list[Person]]:
        return [decode(hm, paf, self.params) for hm, paf in self.maps(images_bgr)]


def predict_coco(predictor: PosePredictor, items: Iterable[tuple[int, np.ndarray]]) -> list[dict]:
    """COCO keypoint results for (image_id, BGR image) pairs."""
    from tlkit_pose.postprocess import to_coco_results

    results: list[dict] = []
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        for (iid, _), people in zip(batch, predictor.people([im for _, im in batch])):
            results.extend(to_coco_results(people, iid))
        batch.clear()

    for item in items:
        batch.append(item)
        if len(batch) >= predictor.batch_size:
            flush()
    if batch:
        flush()
    return results


def coco_images(annotations: Any, image_root: Any = None) -> tuple[Any, Iterable[tuple[int, np.ndarray]]]:
    """The checked dataset and a lazy iterator of (image id, BGR image) over its images."""
    import cv2

    from tlkit_pose.coco import load_coco_keypoints

    ds = load_coco_keypoints(annotations)

    def items() -> Iterable[tuple[int, np.ndarray]]:
        for _, im in sorted(ds.images.items()):
            path = ds.image_path(im, image_root)
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"{annotations}: image {im.id}: {path} missing or not decodable (set the images folder)")
            yield im.id, img

    return ds, items()
