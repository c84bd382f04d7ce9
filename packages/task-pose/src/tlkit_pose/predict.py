"""Images -> people with any model: a Gluon net (training validation), a .tlk or an .onnx (tlkit runners).

Each image is fitted into the network input keeping its aspect ratio and padded bottom/right with grey
(TLT's `pad_image_input` mode, the one TensorRT/DeepStream use); the outputs are upsampled x8 (bicubic),
cropped to the image's part and resized to the image, then decoded (postprocess.decode).

Multi-scale (`inference.scales`, TLT's multi-scale inference): at scale s the image is fitted at s times the
single-scale size. The network input is fixed (exported engines are), so a scale below 1 is padded into it, and
a scale above 1 (an image larger than the input) is covered by input-sized tiles overlapping by at least half,
whose stride-resolution outputs are averaged where they overlap. Each scale's maps are then upsampled and
resized to the image, and the scales' heatmaps and PAFs averaged (postprocess.merge_multiscale).
`scales: [1.0]` is exactly the single-scale path.
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
TILE_ALIGN = 8  # tile offsets on the model stride, so output cells line up


def fit_input(image_bgr: np.ndarray, input_hw: tuple[int, int], scale: float = 1.0) -> ScaledInput:
    """Resize to fit (H, W) keeping the aspect ratio (times `scale`), pad bottom/right; returns the padded RGB
    image: (H, W) when it fits, else the scaled image padded to a multiple of 8 (to be tiled)."""
    import cv2

    if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise DataError(f"expected an HxWx3 image, got {None if image_bgr is None else image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    H, W = input_hw
    f = min(H / h, W / w) * scale
    sh, sw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    if scale <= 1.0:  # rounding must not push the fitted image past the input
        sh, sw = min(H, sh), min(W, sw)
    resized = cv2.resize(image_bgr, (sw, sh), interpolation=cv2.INTER_CUBIC) if (sh, sw) != (h, w) else image_bgr
    padded = np.full(
        (max(H, math.ceil(sh / TILE_ALIGN) * TILE_ALIGN), max(W, math.ceil(sw / TILE_ALIGN) * TILE_ALIGN), 3),
        PAD_VALUE,
        np.uint8,
    )
    padded[:sh, :sw] = resized[:, :, ::-1]
    return ScaledInput(padded, f, (sh, sw))


def tile_offsets(size: int, window: int, align: int = TILE_ALIGN) -> list[int]:
    """Start offsets of `window`-long tiles covering `size` (both multiples of `align`), consecutive tiles
    overlapping by at least half a window so every point has context on both sides in some tile."""
    if size <= window:
        return [0]
    n = math.ceil((size - window) / (window // 2)) + 1
    return sorted({round(k * (size - window) / (n - 1) / align) * align for k in range(n)})


def net_forward(net: Any, ctx: Any = None) -> Callable[[np.ndarray], list[np.ndarray]]:
    """A (N, 3, H, W) -> [heatmap, paf] function for a Gluon block (last stage of a training-mode net)."""
    import mxnet as mx

    def run(x: np.ndarray) -> list[np.ndarray]:
        out = net(mx.nd.array(x, ctx=ctx or mx.cpu()))
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return [out[-2].asnumpy(), out[-1].asnumpy()]

    return run


def spec_inference(spec: Any) -> InferenceConfig | None:
    """The spec's `inference` section when the spec sets it (in its file or by overrides), else None: then the
    post-processing saved in the model applies, not the built-in defaults (the CLI hands over the default spec
    when there is no -e)."""
    if spec is None or "inference" not in spec.model_fields_set:
        return None
    return spec.inference


class PosePredictor:
    """Runs a model on images and decodes people. `forward(batch) -> [heatmap, paf]` (NCHW, stride 8)."""

    def __init__(
        self,
        forward: Callable[[np.ndarray], list[np.ndarray]],
        meta: dict[str, Any],
        params: InferenceConfig | None = None,
        batch_size: int = 8,
    ):
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
    def from_model(cls, path: Any, params: InferenceConfig | None = None, batch_size: int = 8) -> PosePredictor:
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
        """Image-resolution (heatmap, paf) of each image, (H, W, 19) and (H, W, 38), averaged over
        `params.scales`."""
        from tlkit_pose.model import normalize

        H, W = self.input_hw
        out = []
        for start in range(0, len(images_bgr), self.batch_size):
            chunk = images_bgr[start : start + self.batch_size]
            # every (image, scale) input and the network-input tiles that cover it
            inputs = [[fit_input(img, self.input_hw, s) for s in self.params.scales] for img in chunk]
            tiles = [
                (i, k, y, x)
                for i, ins in enumerate(inputs)
                for k, inp in enumerate(ins)
                for y in tile_offsets(inp.image.shape[0], H)
                for x in tile_offsets(inp.image.shape[1], W)
            ]
            results: list[tuple[np.ndarray, np.ndarray]] = []
            for t0 in range(0, len(tiles), self.batch_size):
                batch = [inputs[i][k].image[y : y + H, x : x + W] for i, k, y, x in tiles[t0 : t0 + self.batch_size]]
                hm, paf = self.forward(normalize(np.stack(batch), self.pre))
                if hm.shape[1] != 19 or paf.shape[1] != 38:
                    raise DataError(
                        f"model outputs have {hm.shape[1]} and {paf.shape[1]} channels; expected 19 heatmaps and 38 PAFs"
                    )
                results += [(a.transpose(1, 2, 0), b.transpose(1, 2, 0)) for a, b in zip(hm, paf)]
            stride = math.ceil(H / results[0][0].shape[0])  # 8, or 2 for an sdk-compatible (x4) export
            by_input: dict[tuple[int, int], list] = {}  # (image, scale) -> its tiles' (maps, y, x)
            for (i, k, y, x), r in zip(tiles, results):
                by_input.setdefault((i, k), []).append((r, y, x))
            for i, img in enumerate(chunk):
                per_scale = [
                    _stitch(by_input[i, k], (inp.image.shape[0], inp.image.shape[1]), stride)
                    for k, inp in enumerate(inputs[i])
                ]
                out.append(merge_multiscale(per_scale, inputs[i], (img.shape[0], img.shape[1]), stride))
        return out

    def people(self, images_bgr: Sequence[np.ndarray]) -> list[list[Person]]:
        return [decode(hm, paf, self.params) for hm, paf in self.maps(images_bgr)]


def _stitch(
    tiles: list[tuple[tuple[np.ndarray, np.ndarray], int, int]], padded_hw: tuple[int, int], stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stride-resolution (heatmap, paf) of a padded input from its tiles' outputs (offsets in input pixels),
    averaged where tiles overlap. One tile is returned as it is."""
    if len(tiles) == 1:
        return tiles[0][0]
    gh, gw = padded_hw[0] // stride, padded_hw[1] // stride
    (hm0, paf0), _, _ = tiles[0]
    th, tw = hm0.shape[:2]
    acc = [np.zeros((gh, gw, m.shape[2]), np.float32) for m in (hm0, paf0)]
    count = np.zeros((gh, gw, 1), np.float32)
    for maps, y, x in tiles:
        ys, xs = slice(y // stride, y // stride + th), slice(x // stride, x // stride + tw)
        for a, m in zip(acc, maps):
            a[ys, xs] += m
        count[ys, xs] += 1
    return acc[0] / count, acc[1] / count


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
                raise DataError(
                    f"{annotations}: image {im.id}: {path} missing or not decodable (set the images folder)"
                )
            yield im.id, img

    return ds, items()
