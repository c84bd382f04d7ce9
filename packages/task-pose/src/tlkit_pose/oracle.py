"""The oracle: ground-truth targets rendered at the model stride, upsampled as the inferencer upsamples a
model's outputs, and decoded by the post-processor. Its COCO AP is the ceiling the target encoding and the
post-processing allow a perfect model; tests require it to be >= 0.95.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tlkit_pose.coco import CocoImage, CocoKeypoints
from tlkit_pose.config import InferenceConfig, LabelProcessorConfig
from tlkit_pose.postprocess import ScaledInput, decode, merge_multiscale, to_coco_results
from tlkit_pose.skeleton import coco_to_parts
from tlkit_pose.targets import render_targets


def oracle_maps(
    coco_keypoints: np.ndarray,
    image_hw: tuple[int, int],
    stride: int = 8,
    label: LabelProcessorConfig | None = None,
    scales: Sequence[float] = (1.0,),
) -> tuple[np.ndarray, np.ndarray]:
    """Image-resolution heatmap and PAF a perfect model would give, averaged over `scales` like the
    multi-scale inferencer (targets rendered at stride resolution for each scaled, padded input)."""
    label = label or LabelProcessorConfig()
    h, w = image_hw
    parts = coco_to_parts(np.asarray(coco_keypoints).reshape(-1, 17, 3))
    inputs, outputs = [], []
    for s in scales:
        sh, sw = max(1, int(round(h * s))), max(1, int(round(w * s)))
        f_x, f_y = sw / w, sh / h
        scaled = parts.copy()
        # pixel-index coordinates scale about the pixel-centre convention: x' = (x + 0.5) * f - 0.5
        scaled[..., 0] = (parts[..., 0] + 0.5) * f_x - 0.5
        scaled[..., 1] = (parts[..., 1] + 0.5) * f_y - 0.5
        ph, pw = -(-sh // stride) * stride, -(-sw // stride) * stride
        inputs.append(ScaledInput(np.zeros((ph, pw, 1), np.uint8), s, (sh, sw)))
        outputs.append(
            render_targets(scaled, (ph, pw), stride, label.heatmap_gaussian_sigma, label.paf_ortho_dist_thresh)
        )
    return merge_multiscale(outputs, inputs, image_hw, stride)


def oracle_image_results(
    image: CocoImage, stride: int = 8, params: InferenceConfig | None = None, label: LabelProcessorConfig | None = None
) -> list[dict]:
    params = params or InferenceConfig()
    hm, paf = oracle_maps(image.keypoints(), (image.height, image.width), stride, label, params.scales)
    return to_coco_results(decode(hm, paf, params), image.id)


def oracle_results(
    ds: CocoKeypoints, stride: int = 8, params: InferenceConfig | None = None, label: LabelProcessorConfig | None = None
) -> list[dict]:
    """COCO keypoint results of the oracle for every image of a dataset."""
    out: list[dict] = []
    for image in ds.images.values():
        out += oracle_image_results(image, stride, params, label)
    return out
