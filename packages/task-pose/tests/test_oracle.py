"""ORACLE: ground-truth targets at TLT's stride (8), upsampled as the inferencer does, decoded by the
post-processor, must reach COCO keypoint AP >= 0.95 - on generated data always, on real COCO when present."""

import numpy as np
import pytest

from tlkit_pose.coco import load_coco_keypoints
from tlkit_pose.config import InferenceConfig
from tlkit_pose.evaluate import evaluate_keypoints
from tlkit_pose.oracle import oracle_results


@pytest.mark.parametrize("scales", [[1.0], [0.5, 1.0, 1.5]], ids=["single-scale", "multi-scale"])
def test_oracle_on_synthetic_people(synthetic_set, scales):
    ds = load_coco_keypoints(synthetic_set)
    assert ds.num_people >= 12
    res = oracle_results(ds, stride=8, params=InferenceConfig(scales=scales))
    m = evaluate_keypoints(synthetic_set, res)["metrics"]
    assert m["AP"] >= 0.95, m
    assert m["AR"] >= 0.95, m


def test_oracle_on_real_coco_single_and_multi_scale(coco_mini):
    ds = load_coco_keypoints(coco_mini)
    single = evaluate_keypoints(coco_mini, oracle_results(ds, stride=8))["metrics"]
    multi = evaluate_keypoints(coco_mini, oracle_results(ds, stride=8, params=InferenceConfig(scales=[0.5, 1.0, 1.5])))[
        "metrics"
    ]
    assert single["AP"] >= 0.95, single
    assert multi["AP"] >= 0.95, multi


def test_oracle_is_not_trivially_perfect(synthetic_set):
    """The same pipeline scores badly when the keypoints are wrong: AP can fail."""
    ds = load_coco_keypoints(synthetic_set)
    res = oracle_results(ds, stride=8)
    half = [dict(r) for r in res[: len(res) // 2]]
    rng = np.random.default_rng(0)
    for r in res:
        k = np.array(r["keypoints"], dtype=float).reshape(17, 3)
        k[:, :2] += rng.normal(0, 6, (17, 2))
        r["keypoints"] = k.reshape(-1).tolist()
    assert evaluate_keypoints(synthetic_set, res)["metrics"]["AP"] < 0.5  # 6 px of noise
    assert evaluate_keypoints(synthetic_set, half)["metrics"]["AR"] < 0.6  # half the people missing
