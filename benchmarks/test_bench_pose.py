"""Pose post-processing time per image vs number of people, and ground-truth target throughput.

Inputs are the oracle's maps (ground truth rendered at stride 8 and upsampled x8 as the inferencer does), so
every person is found: the timings are those of a well-trained model's outputs. Image 384x640.
Results: benchmarks/results/pose.json.
"""

import numpy as np
import pytest

from tlkit_pose.postprocess import decode, upsample
from tlkit_pose.skeleton import coco_to_parts
from tlkit_pose.synthetic import random_pose
from tlkit_pose.targets import render_targets

H, W, STRIDE = 384, 640, 8


def _people(n: int, seed: int = 0, hw=(H, W)) -> np.ndarray:
    """n people on a grid of cells (no overlaps), COCO (n, 17, 3)."""
    rng = np.random.default_rng(seed)
    cols = int(np.ceil(np.sqrt(n * hw[1] / hw[0])))
    rows = int(np.ceil(n / cols))
    ch, cw = hw[0] / rows, hw[1] / cols
    out = np.zeros((n, 17, 3))
    for i in range(n):
        r, c = divmod(i, cols)
        size = ch * 0.8
        kp = random_pose(rng) * size
        out[i, :, :2] = kp + [c * cw + cw / 2, r * ch + ch * 0.08]
        out[i, :, 2] = 2
    return out


def _maps(n: int):
    hm, paf = render_targets(coco_to_parts(_people(n)), (H, W), STRIDE)
    return hm, paf


@pytest.mark.parametrize("people", [1, 5, 20])
def test_postprocess_per_image(benchmark, people):
    hm, paf = _maps(people)
    hm_up, paf_up = upsample(hm, STRIDE, (H, W)), upsample(paf, STRIDE, (H, W))
    found = benchmark.pedantic(decode, args=(hm_up, paf_up), rounds=10, warmup_rounds=1)
    assert len(found) == people
    benchmark.extra_info.update(people=people, image=f"{H}x{W}", stage="decode (peaks, limbs, grouping)")


@pytest.mark.parametrize("people", [1, 20])
def test_upsample_and_postprocess_per_image(benchmark, people):
    hm, paf = _maps(people)

    def run():
        return decode(upsample(hm, STRIDE, (H, W)), upsample(paf, STRIDE, (H, W)))

    found = benchmark.pedantic(run, rounds=10, warmup_rounds=1)
    assert len(found) == people
    benchmark.extra_info.update(people=people, image=f"{H}x{W}", stage="x8 bicubic upsample + decode")


@pytest.mark.parametrize("size,people", [((256, 256), 3), ((368, 368), 5), ((384, 640), 20)])
def test_target_generation_throughput(benchmark, size, people):
    parts = coco_to_parts(_people(people, hw=size))
    hm, paf = benchmark.pedantic(render_targets, args=(parts, size, STRIDE), rounds=30, warmup_rounds=2)
    assert hm.shape == (size[0] // 8, size[1] // 8, 19) and paf.shape[2] == 38
    benchmark.extra_info.update(people=people, input=f"{size[0]}x{size[1]}", stride=STRIDE)
