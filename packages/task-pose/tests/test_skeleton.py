"""The 18-part topology, the COCO-17 mapping (neck rule) and left/right flips."""

import numpy as np
import pytest

from tlkit_pose import skeleton as sk
from tlkit_pose.targets import render_targets


def test_topology_sizes_and_tlt_order():
    assert sk.NUM_PARTS == 18 and sk.NUM_LIMBS == 19 and sk.NUM_PAF_CHANNELS == 38 and sk.NUM_HEATMAP_CHANNELS == 19
    assert sk.PARTS[:2] == ("nose", "neck") and sk.PARTS[-1] == "left_ear"
    assert sk.LIMBS[0] == (1, 8)  # neck -> right hip first: limbs grow from the neck outwards
    # the last two limbs are the eye-ear edges that never start a person
    assert [(sk.PARTS[a], sk.PARTS[b]) for a, b in sk.LIMBS[-2:]] == [
        ("right_eye", "right_ear"),
        ("left_eye", "left_ear"),
    ]
    # every part is reachable from the neck
    seen, frontier = {1}, [1]
    while frontier:
        j = frontier.pop()
        for a, b in sk.LIMBS:
            if a == j and b not in seen:
                seen.add(b)
                frontier.append(b)
    assert seen == set(range(18))


def test_coco_to_parts_maps_by_name_and_builds_the_neck():
    coco = np.zeros((17, 3))
    for i, _ in enumerate(sk.COCO_KEYPOINTS):
        coco[i] = (10 + i, 100 + i, 2)
    coco[sk.COCO_KEYPOINTS.index("left_shoulder")] = (40, 60, 1)
    coco[sk.COCO_KEYPOINTS.index("right_shoulder")] = (20, 50, 2)
    parts = sk.coco_to_parts(coco)
    for j, name in enumerate(sk.PARTS):
        if name != "neck":
            assert parts[j].tolist() == coco[sk.COCO_KEYPOINTS.index(name)].tolist(), name
    assert parts[sk.NECK].tolist() == [30, 55, 1]  # midpoint, the lower visibility flag
    np.testing.assert_array_equal(sk.parts_to_coco(parts), coco)  # the neck is dropped on the way back


def test_neck_needs_both_shoulders():
    coco = np.zeros((2, 17, 3))
    coco[:, sk.COCO_KEYPOINTS.index("left_shoulder")] = (40, 60, 2)
    coco[0, sk.COCO_KEYPOINTS.index("right_shoulder")] = (20, 50, 0)
    coco[1, sk.COCO_KEYPOINTS.index("right_shoulder")] = (20, 50, 2)
    parts = sk.coco_to_parts(coco)
    assert parts[0, sk.NECK].tolist() == [0, 0, 0]
    assert parts[1, sk.NECK].tolist() == [30, 55, 2]
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, 3\)"):
        sk.coco_to_parts(np.zeros((18, 3)))


def test_flip_swaps_sides_and_is_an_involution():
    assert all(sk.PARTS[sk.FLIP_PARTS[sk.PART_INDEX["right_wrist"]]] == "left_wrist" for _ in [0])
    assert sk.PARTS[sk.FLIP_PARTS[sk.PART_INDEX["nose"]]] == "nose"
    assert (sk.FLIP_PARTS[sk.FLIP_PARTS] == np.arange(18)).all()
    assert (sk.FLIP_LIMBS[sk.FLIP_LIMBS] == np.arange(19)).all()
    kp = np.random.default_rng(0).uniform(0, 63, (3, 17, 3))
    kp[..., 2] = 2
    kp[0, 4] = 0  # unlabeled stays (0, 0, 0)
    flipped = sk.flip_keypoints(kp, 64, coco=True)
    assert flipped[0, sk.COCO_FLIP[4]].tolist() == [0, 0, 0]
    li, ri = sk.COCO_KEYPOINTS.index("left_wrist"), sk.COCO_KEYPOINTS.index("right_wrist")
    assert flipped[1, li, 0] == pytest.approx(63 - kp[1, ri, 0])
    np.testing.assert_allclose(sk.flip_keypoints(flipped, 64, coco=True), kp)


def test_flipping_keypoints_then_rendering_equals_flipping_the_targets():
    """The flip of the labels and the flip of the maps agree exactly (what flip augmentation relies on)."""
    rng = np.random.default_rng(1)
    coco = np.concatenate([rng.uniform(4, 60, (2, 17, 2)), np.full((2, 17, 1), 2.0)], axis=2)
    parts = sk.coco_to_parts(coco)
    hm, paf = render_targets(parts, (64, 64), stride=8)
    hm_f, paf_f = render_targets(sk.flip_keypoints(parts, 64), (64, 64), stride=8)
    hm2, paf2 = sk.flip_maps(hm, paf)
    np.testing.assert_allclose(hm_f, hm2, atol=1e-6)
    np.testing.assert_allclose(paf_f, paf2, atol=1e-6)
    assert np.abs(paf).sum() > 10  # not trivially zero
