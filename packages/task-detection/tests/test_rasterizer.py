"""DetectNet_v2 rasterizer against values worked out by hand (see the comments)."""

import numpy as np
import pytest

from tlkit_detection.rasterizer import ClassRasterParams, ellipse_params, rasterize

# 64x64 input, 16x16 output (stride 4). Box (16,16)-(48,48) -> output (4,4)-(12,12): centre (8,8), half size 4.
# cov radius 0.4*4 = 1.6 (above bbox_min_radius 1); deadzone 0.33*1.6 + 0.67*4 = 3.208.
BOX = np.array([[16.0, 16.0, 48.0, 48.0]])


def test_ellipse_parameters():
    cx, cy, rx, ry, dx, dy, inv_area = ellipse_params(BOX[0] / 4, ClassRasterParams(), 0.67)
    assert (cx, cy) == (8.0, 8.0)
    assert rx == pytest.approx(1.6) and ry == pytest.approx(1.6)
    assert dx == pytest.approx(3.208) and dy == pytest.approx(3.208)
    assert inv_area == pytest.approx(1 / 10.24)


def test_min_radius_keeps_aspect_ratio():
    # output box 2 x 8 cells: radii 0.4 and 1.6 -> x raised to 1.0, y scaled by the same 2.5 -> 4.0
    _, _, rx, ry, *_ = ellipse_params(np.array([0.0, 0.0, 2.0, 8.0]), ClassRasterParams(), 0.67)
    assert (rx, ry) == pytest.approx((1.0, 4.0))
    # the 0.1-cell floor applies first to degenerate boxes: 0.1 -> 1.0 (x10) on both axes
    _, _, rx, ry, *_ = ellipse_params(np.array([5.0, 5.0, 5.0, 5.0]), ClassRasterParams(bbox_min_radius=0.0), 0.67)
    assert (rx, ry) == pytest.approx((0.1, 0.1))


def test_coverage_bbox_and_cov_norm_values():
    t = rasterize(BOX, [0], 1, (64, 64), (16, 16))
    assert t.cov.shape == (1, 16, 16) and t.bbox.shape == (4, 16, 16) and t.cov_norm.shape == (1, 16, 16)
    # cell (7,7) spans [7,8)^2; its 16 sub-samples are within 0.875*sqrt(2) < 1.6 of the centre: full coverage
    assert t.cov[0, 7, 7] == 1.0
    # cell x=6, y=7: sub-sample dx in {-1.875,-1.625,-1.375,-1.125}, dy in {-0.875,...,-0.125};
    # dx^2+dy^2 < 2.56 holds for 0 + 0 + 3 + 4 of the 16 samples -> 7/16
    assert t.cov[0, 7, 6] == pytest.approx(7 / 16)
    # the ellipse is symmetric about (8,8): cells (7,9)/(9,8)/(8,6) mirror (7,6)
    assert t.cov[0, 7, 9] == t.cov[0, 9, 8] == t.cov[0, 6, 8] == pytest.approx(7 / 16)
    # outside the coverage ellipse, inside the deadzone: nothing drawn
    assert t.cov[0, 8, 5] == 0.0 and t.cov[0, 4, 4] == 0.0
    assert t.cov.sum() == pytest.approx(t.cov[0, 5:11, 5:11].sum())
    # bbox targets at cell (7,7): grid point 7*4+0.5 = 28.5 -> L = T = (28.5-16)/35, R = B = (48-28.5)/35
    assert t.bbox[:, 7, 7] == pytest.approx([12.5 / 35, 12.5 / 35, 19.5 / 35, 19.5 / 35])
    # cov_norm = coverage / (4 * 1.6 * 1.6)
    assert t.cov_norm[0, 7, 7] == pytest.approx(1 / 10.24)
    assert t.cov_norm[0, 7, 6] == pytest.approx(7 / 16 / 10.24)
    assert np.all(t.bbox[:, t.cov[0] == 0] == 0)


def test_classes_go_to_their_own_channels():
    t = rasterize(np.vstack([BOX, BOX]), [1, 3], 4, (64, 64), (16, 16))
    assert t.cov[0].sum() == 0 and t.cov[2].sum() == 0
    np.testing.assert_array_equal(t.cov[1], t.cov[3])
    np.testing.assert_array_equal(t.bbox[4:8], t.bbox[12:16])


def test_nearer_box_deadzone_clears_the_farther_box():
    # far box A (ymax 40) covers output cell (x=8, y=4) fully. Near box B (ymax 56) is 2x6 cells wide/high
    # around (8,8): cov radii (1, 3) after the min-radius floor, deadzone radii (1.67, 5.01). Cell (8,4)
    # lies outside B's coverage ellipse but inside its deadzone -> cleared to 0.
    far = [0.0, 0.0, 64.0, 40.0]
    near = [24.0, 8.0, 40.0, 56.0]
    only_far = rasterize(np.array([far]), [0], 1, (64, 64), (16, 16))
    assert only_far.cov[0, 4, 8] == 1.0
    both = rasterize(np.array([near, far]), [0, 0], 1, (64, 64), (16, 16))  # input order does not matter
    assert both.cov[0, 4, 8] == 0.0 and np.all(both.bbox[:, 4, 8] == 0)
    # B's own coverage wins inside its ellipse, with B's distances
    assert both.cov[0, 8, 8] == 1.0
    assert both.bbox[:, 8, 8] == pytest.approx([(32.5 - 24) / 35, (32.5 - 8) / 35, (40 - 32.5) / 35, (56 - 32.5) / 35])
    # far from B the far box is untouched
    assert both.cov[0, 5, 5] == only_far.cov[0, 5, 5] == 1.0
    # a box of another class is never cleared
    other = rasterize(np.array([near, far]), [1, 0], 2, (64, 64), (16, 16))
    assert other.cov[0, 4, 8] == 1.0


def test_depth_order_is_by_ymax_not_input_order():
    a, b = [8.0, 8.0, 40.0, 40.0], [20.0, 12.0, 52.0, 44.0]
    t1 = rasterize(np.array([a, b]), [0, 0], 1, (64, 64), (16, 16))
    t2 = rasterize(np.array([b, a]), [0, 0], 1, (64, 64), (16, 16))
    np.testing.assert_array_equal(t1.cov, t2.cov)
    np.testing.assert_array_equal(t1.bbox, t2.bbox)


def test_empty_image():
    t = rasterize(np.zeros((0, 4)), [], 2, (64, 32), (4, 2))
    assert t.cov.shape == (2, 2, 4) and t.bbox.shape == (8, 2, 4) and not t.cov.any()
