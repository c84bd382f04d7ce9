"""DetectNet_v2 cost on hand-computed cases."""

import json
import math

import numpy as np
import pytest

from tlkit_detection.loss import ClassCost, DetectNetLoss, autoweights


def _nd(*arrays):
    import mxnet as mx

    return tuple(mx.nd.array(np.asarray(a, np.float32)) for a in arrays)


def _one_cell(p, t, bbox_p, bbox_t, cov_norm):
    """B=1, C=1, 1x1 grid."""
    return (
        _nd(np.full((1, 1, 1, 1), p), np.asarray(bbox_p).reshape(1, 4, 1, 1)),
        _nd(np.full((1, 1, 1, 1), t), np.asarray(bbox_t).reshape(1, 4, 1, 1), np.full((1, 1, 1, 1), cov_norm)),
    )


def test_foreground_cell_weighted_bce_plus_normalised_l1():
    loss = DetectNetLoss([ClassCost()])  # fg weight 0.05, objective weights 1 / 10 -> 1/11, 10/11
    out, lab = _one_cell(0.8, 1.0, [0, 0, 0, 0], [1, 2, 3, 4], 0.5)
    value = float(loss(out, lab).asnumpy()[0])
    expected = (0.05 * -math.log(0.8)) / 11 + (0.5 * 10.0) * 10 / 11
    assert value == pytest.approx(expected, rel=1e-5)


def test_background_cell_gets_one_minus_foreground_weight_and_no_box_cost():
    loss = DetectNetLoss([ClassCost(coverage_foreground_weight=0.2, cov_weight=1.0, bbox_weight=1.0)])
    out, lab = _one_cell(0.1, 0.0, [5, 5, 5, 5], [0, 0, 0, 0], 0.0)
    assert float(loss(out, lab).asnumpy()[0]) == pytest.approx(0.8 * -math.log(0.9) * 0.5, rel=1e-5)


def test_costs_average_over_cells_and_class_weights_scale_per_class():
    import mxnet as mx

    loss = DetectNetLoss(
        [
            ClassCost(class_weight=1.0, cov_weight=1, bbox_weight=0),
            ClassCost(class_weight=3.0, cov_weight=1, bbox_weight=0),
        ]
    )
    cov_p = np.full((2, 2, 2, 2), 0.5, np.float32)
    cov_t = np.zeros((2, 2, 2, 2), np.float32)
    cov_t[1, 1, 0, 0] = 1.0  # sample 1, class 1: one foreground cell of four
    out = (mx.nd.array(cov_p), mx.nd.zeros((2, 8, 2, 2)))
    lab = (mx.nd.array(cov_t), mx.nd.zeros((2, 8, 2, 2)), mx.nd.zeros((2, 2, 2, 2)))
    v = loss(out, lab).asnumpy()
    ln2 = math.log(2)
    bg = 0.95 * ln2
    assert v[0] == pytest.approx(bg + 3 * bg, rel=1e-5)
    assert v[1] == pytest.approx(bg + 3 * (3 * bg + 0.05 * ln2) / 4, rel=1e-5)


def test_saturated_predictions_stay_finite():
    loss = DetectNetLoss([ClassCost()])
    out, lab = _one_cell(0.0, 1.0, [0, 0, 0, 0], [0, 0, 0, 0], 0.0)
    v = float(loss(out, lab).asnumpy()[0])
    assert math.isfinite(v) and v > 0


def test_gradients_flow_to_both_heads():
    import mxnet as mx
    from mxnet import autograd

    loss = DetectNetLoss([ClassCost()])
    cov = mx.nd.array(np.full((1, 1, 2, 2), 0.3, np.float32))
    bbox = mx.nd.zeros((1, 4, 2, 2))
    cov.attach_grad()
    bbox.attach_grad()
    lab = _nd(np.ones((1, 1, 2, 2)), np.ones((1, 4, 2, 2)), np.full((1, 1, 2, 2), 0.25))
    with autograd.record():
        v = loss((cov, bbox), lab)
    v.backward()
    assert np.all(cov.grad.asnumpy() < 0)  # raise coverage towards the target
    assert np.all(bbox.grad.asnumpy() < 0)  # move boxes towards the target


def test_autoweighting_is_inverse_to_mean_cost_normalised_and_clamped():
    w = autoweights(np.array([[0.5, 0.5]]), np.array([1.0, 4.0]), 1e-4, 0.9999)
    np.testing.assert_allclose(w, [[0.8, 0.2]])
    w = autoweights(np.array([[0.5, 0.5]]), np.array([1.0, 1e9]), 1e-4, 0.9999)
    np.testing.assert_allclose(w, [[0.9999, 1e-4]])


def test_autoweighting_updates_from_the_epochs_costs():
    loss = DetectNetLoss([ClassCost(cov_weight=1, bbox_weight=1)], autoweight=True)
    from mxnet import autograd

    out, lab = _one_cell(0.5, 0.0, [2, 0, 0, 0], [0, 0, 0, 0], 1.0)  # cov cost 0.95 ln2, bbox cost 2
    loss(out, lab)  # not recording (validation): not counted
    assert loss.update_weights() is None
    with autograd.record():
        loss(out, lab)
    w = loss.update_weights()
    cov_c, bbox_c = 0.95 * math.log(2), 2.0
    expect = np.array([1 / cov_c, 1 / bbox_c])
    np.testing.assert_allclose(w[0], expect / expect.sum(), rtol=1e-5)
    assert loss.update_weights() is None or np.allclose(loss.weights, w)


def test_autoweight_state_round_trips_into_a_fresh_loss():
    """What a checkpoint saves (get_state) makes a fresh loss compute the same cost (resume is exact)."""
    from mxnet import autograd

    from tlkit.errors import ModelFileError

    out, lab = _one_cell(0.5, 0.0, [2, 0, 0, 0], [0, 0, 0, 0], 1.0)
    trained = DetectNetLoss([ClassCost(cov_weight=1, bbox_weight=1)], autoweight=True)
    with autograd.record():
        trained(out, lab)
    trained.update_weights()
    fresh = DetectNetLoss([ClassCost(cov_weight=1, bbox_weight=1)], autoweight=True)
    assert not np.allclose(fresh(out, lab).asnumpy(), trained(out, lab).asnumpy())
    fresh.set_state(json.loads(json.dumps(trained.get_state())))  # through JSON, as in meta.json
    np.testing.assert_array_equal(fresh(out, lab).asnumpy(), trained(out, lab).asnumpy())
    two = DetectNetLoss([ClassCost(), ClassCost()], autoweight=True)
    with pytest.raises(ModelFileError, match=r"objective weights have shape \(1, 2\).*\(2, 2\)"):
        two.set_state(trained.get_state())


def test_config_errors():
    with pytest.raises(ValueError, match="at least one class"):
        DetectNetLoss([])
    with pytest.raises(ValueError, match="cov_weight \\+ bbox_weight"):
        DetectNetLoss([ClassCost(cov_weight=0, bbox_weight=0)])
