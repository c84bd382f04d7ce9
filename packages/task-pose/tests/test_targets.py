"""Ground-truth heatmaps and PAFs: values at known places, TLT's grid convention, overlap handling."""

import numpy as np
import pytest

from tlkit_pose.skeleton import LIMBS, NUM_PARTS, PART_INDEX
from tlkit_pose.targets import mask_to_target, render_heatmaps, render_pafs, render_targets, target_shape


def _person(points: dict[str, tuple[float, float]]) -> np.ndarray:
    p = np.zeros((1, NUM_PARTS, 3))
    for name, (x, y) in points.items():
        p[0, PART_INDEX[name]] = (x, y, 2)
    return p


def test_shapes_and_grid_rounds_up():
    assert target_shape((256, 256), 8) == (32, 32)
    assert target_shape((425, 640), 8) == (54, 80)
    hm, paf = render_targets(np.zeros((0, 18, 3)), (60, 70), stride=8)
    assert hm.shape == (8, 9, 19) and paf.shape == (8, 9, 38)
    assert hm.dtype == np.float32 and paf.dtype == np.float32
    assert (hm[..., :18] == 0).all() and (hm[..., 18] == 1).all() and (paf == 0).all()


def test_heatmap_gaussian_at_cell_centres():
    # cell (gy=2, gx=3) has its centre at input pixel (3*8 + 3.5, 2*8 + 3.5) = (27.5, 19.5)
    hm = render_heatmaps(_person({"nose": (27.5, 19.5)}), (64, 64), stride=8, sigma=7.0)
    nose = hm[..., PART_INDEX["nose"]]
    assert nose[2, 3] == pytest.approx(1.0)
    assert nose[2, 4] == pytest.approx(np.exp(-64 / 98), rel=1e-5)  # 8 px away, sigma 7
    assert nose[4, 3] == pytest.approx(np.exp(-256 / 98), rel=1e-5)
    assert nose[7, 7] == 0.0  # below TLT's 0.001 floor -> exactly 0
    assert hm[2, 3, 18] == pytest.approx(0.0, abs=1e-6)  # background = 1 - max
    assert (hm[..., PART_INDEX["neck"]] == 0).all()  # unlabeled part


def test_overlapping_people_combine_by_maximum():
    two = np.concatenate([_person({"nose": (27.5, 19.5)}), _person({"nose": (35.5, 19.5)})])
    hm = render_heatmaps(two, (64, 64))[..., 0]
    one = render_heatmaps(two[:1], (64, 64))[..., 0]
    other = render_heatmaps(two[1:], (64, 64))[..., 0]
    np.testing.assert_allclose(hm, np.maximum(one, other))


def test_paf_unit_vectors_inside_the_band_only():
    k = LIMBS.index((1, 8))  # neck -> right hip, vertical here
    paf = render_pafs(
        _person({"neck": (27.5, 11.5), "right_hip": (27.5, 43.5)}), (64, 64), stride=8, ortho_dist_thresh=1.0
    )
    vx, vy = paf[..., 2 * k], paf[..., 2 * k + 1]
    # column gx=3 is on the limb, gx=2 and 4 are 8 px away (= 1 stride: inside), gx=1 and 5 are 16 px away (outside)
    for gy in range(1, 6):
        for gx in (2, 3, 4):
            assert (vx[gy, gx], vy[gy, gx]) == pytest.approx((0.0, 1.0)), (gy, gx)
        assert vy[gy, 1] == 0 and vy[gy, 5] == 0
    # 8 px before the start and past the end count (TLT's window), 16 px past the end does not
    assert vy[0, 3] == pytest.approx(1.0) and vy[6, 3] == pytest.approx(1.0) and vy[7, 3] == 0
    others = np.delete(paf.reshape(8, 8, 19, 2), k, axis=2)
    assert (others == 0).all()
    assert np.all(np.hypot(vx, vy)[np.hypot(vx, vy) > 0] == pytest.approx(1.0))


def test_paf_overlaps_are_averaged_and_zero_length_limbs_skipped():
    k = LIMBS.index((1, 8))
    a = _person({"neck": (27.5, 11.5), "right_hip": (27.5, 51.5)})  # pointing down
    b = _person({"neck": (27.5, 27.5), "right_hip": (51.5, 27.5)})  # pointing right, crossing a at cell (3, 3)
    paf = render_pafs(np.concatenate([a, b]), (64, 64))
    assert (paf[3, 3, 2 * k], paf[3, 3, 2 * k + 1]) == pytest.approx((0.5, 0.5))
    assert (paf[1, 3, 2 * k], paf[1, 3, 2 * k + 1]) == pytest.approx((0.0, 1.0))
    dot = render_pafs(_person({"neck": (20, 20), "right_hip": (20, 20)}), (64, 64))
    assert (dot == 0).all()


def test_unlabeled_endpoint_gives_no_paf_and_bad_shapes_are_refused():
    paf = render_pafs(_person({"neck": (27.5, 11.5)}), (64, 64))
    assert (paf == 0).all()
    with pytest.raises(ValueError, match="coco_to_parts"):
        render_targets(np.zeros((1, 17, 3)), (64, 64))


def test_mask_to_target_area_vote():
    mask = np.ones((64, 64), np.uint8)
    mask[:16, :20] = 0  # cells (0..1, 0..1) fully masked, (0..1, 2) half masked (2 of 8 px columns... 4 of 8)
    t = mask_to_target(mask, 8)
    assert t.shape == (8, 8)
    assert t[0, 0] == 0 and t[1, 1] == 0 and t[0, 3] == 1 and t[2, 0] == 1
    assert t[0, 2] == 1  # 4 of 8 columns still usable: a half counts as usable (>= 0.5)
