"""Multi-scale inference in PosePredictor (what evaluate and inference run): scales are fitted into the fixed
network input, larger ones tiled, and the upsampled maps averaged.

The model here is an oracle network: the test image encodes each pixel's source coordinates in its colours
(R = x, G = y, B = 0; padding is grey), so for any scaled, padded or tiled input the fake forward recovers the
input -> image mapping and renders the ground-truth maps of the known people at stride 8. A correct
multi-scale pipeline then finds those people at every scale combination.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tlkit_pose.config import InferenceConfig
from tlkit_pose.postprocess import merge_multiscale
from tlkit_pose.predict import PosePredictor, fit_input, predict_coco, tile_offsets
from tlkit_pose.skeleton import coco_to_parts
from tlkit_pose.synthetic import synthetic_coco
from tlkit_pose.targets import render_targets

IMG_H, IMG_W = 96, 128  # the test image
NET_H, NET_W = 64, 96  # the network input (a different aspect ratio: padding on one side)


def _coords_image() -> np.ndarray:
    """BGR image whose R/G channels are the pixel's x/y scaled to 0..255 (B = 0)."""
    ys, xs = np.mgrid[0:IMG_H, 0:IMG_W].astype(np.float64)
    img = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    img[..., 2] = np.rint(xs * 255 / (IMG_W - 1))
    img[..., 1] = np.rint(ys * 255 / (IMG_H - 1))
    return img


def _oracle_forward(coco_people: np.ndarray, calls: list):
    """forward(NCHW batch) -> stride-8 ground truth of `coco_people` (image coordinates) in each input."""
    parts = coco_to_parts(coco_people)

    def forward(x: np.ndarray) -> list[np.ndarray]:
        calls.append(x.shape)
        hms, pafs = [], []
        for tile in x:
            rgb = tile.transpose(1, 2, 0) * 256 + 128  # undo the model normalization
            image = rgb[..., 2] < 64  # image pixels (padding is grey: B = 128)
            ty, tx = np.nonzero(image)
            # image pixel = a * input pixel + b (least squares over the tile's image pixels)
            ax, bx = np.polyfit(tx, rgb[ty, tx, 0] * (IMG_W - 1) / 255, 1)
            ay, by = np.polyfit(ty, rgb[ty, tx, 1] * (IMG_H - 1) / 255, 1)
            p = parts.copy()
            p[..., 0] = (parts[..., 0] - bx) / ax
            p[..., 1] = (parts[..., 1] - by) / ay
            hm, paf = render_targets(p, tile.shape[1:], 8)
            hms.append(hm.transpose(2, 0, 1))
            pafs.append(paf.transpose(2, 0, 1))
        return [np.stack(hms), np.stack(pafs)]

    return forward


@pytest.fixture(scope="module")
def scene():
    coco, _ = synthetic_coco(1, seed=11, size=(IMG_H, IMG_W), people=(2, 2), person_height=(0.6, 0.75))
    kps = np.array([a["keypoints"] for a in coco["annotations"] if a["num_keypoints"]], np.float64).reshape(-1, 17, 3)
    return coco, kps


def _predictor(kps, scales, calls, batch_size=8):
    meta = {
        "task": "pose",
        "input_shape": [3, NET_H, NET_W],
        "preprocessing": {"mode": "custom", "channel_order": "RGB", "mean": [128.0] * 3, "std": [256.0] * 3},
        "postprocessing": {"stride": 8},
    }
    return PosePredictor(_oracle_forward(kps, calls), meta, InferenceConfig(scales=scales), batch_size=batch_size)


def test_tile_offsets_cover_with_half_overlap():
    assert tile_offsets(64, 64) == [0] and tile_offsets(40, 64) == [0]
    offs = tile_offsets(192, 64)
    assert offs[0] == 0 and offs[-1] == 128 and all(o % 8 == 0 for o in offs)
    assert all(b - a <= 32 for a, b in itertools.pairwise(offs))


def test_single_scale_is_the_plain_fit_and_pad_path(scene):
    _, kps = scene
    img, calls = _coords_image(), []
    got_hm, got_paf = _predictor(kps, [1.0], calls).maps([img, img[:, ::-1].copy()])[0]
    assert calls == [(2, 3, NET_H, NET_W)]  # one input per image, batched
    # what the single-scale predictor did before scales were wired: fit + pad, one forward, upsample
    inp = fit_input(img, (NET_H, NET_W))
    assert inp.image.shape == (NET_H, NET_W, 3)
    x = ((inp.image.astype(np.float32) - 128) / 256).transpose(2, 0, 1)[None]
    hm, paf = _oracle_forward(kps, [])(x)
    want_hm, want_paf = merge_multiscale(
        [(hm[0].transpose(1, 2, 0), paf[0].transpose(1, 2, 0))], [inp], (IMG_H, IMG_W), 8
    )
    np.testing.assert_array_equal(got_hm, want_hm)
    np.testing.assert_array_equal(got_paf, want_paf)


@pytest.mark.parametrize("scales, min_ap", [([1.0], 0.9), ([0.5, 1.0], 0.75), ([1.0, 2.0], 0.95)])
def test_multiscale_finds_the_people(scene, scales, min_ap):
    """At scale 0.5 the people are ~20 px tall (4x6 output cells) and blur the average a little; scale 2
    (tiled) sharpens it."""
    from tlkit_pose.evaluate import evaluate_keypoints

    coco, kps = scene
    calls: list = []
    pred = _predictor(kps, scales, calls, batch_size=4)
    hm, paf = pred.maps([_coords_image()])[0]
    assert hm.shape == (IMG_H, IMG_W, 19) and paf.shape == (IMG_H, IMG_W, 38)
    assert np.isfinite(hm).all() and np.isfinite(paf).all()
    # scale 2 (128x171 px, padded to 128x176: more than the 64x96 input) is tiled in 3 x 3 overlapping inputs
    assert sum(c[0] for c in calls) == {(1.0,): 1, (0.5, 1.0): 2, (1.0, 2.0): 1 + 9}[tuple(scales)]
    results = predict_coco(pred, [(coco["images"][0]["id"], _coords_image())])
    assert len(results) == 2
    for r in results:  # each found person's keypoints lie within 2 px (mean) of one true person's
        k = np.array(r["keypoints"]).reshape(17, 3)[:, :2]
        assert np.linalg.norm(kps[:, :, :2] - k, axis=-1).mean(-1).min() < 2.0
    ap = evaluate_keypoints(coco, results)["metrics"]["AP"]
    assert ap >= min_ap, (scales, ap)
