"""Post-processing: decode, DBSCAN / NMS, confidence models, and the rasterize -> cluster round trip."""

import numpy as np
import pytest

from tlkit_detection.clustering import ClusteringParams, cluster_class, cluster_outputs, decode_bboxes
from tlkit_detection.rasterizer import rasterize


def test_decode_inverts_the_encoding():
    # one class, 2x2 grid on a 32x32 input (stride 16): grid points 0.5 and 16.5
    p = np.zeros((4, 2, 2))
    p[:, 1, 1] = [(16.5 - 10) / 35, (16.5 - 4) / 35, (30 - 16.5) / 35, (31 - 16.5) / 35]
    boxes = decode_bboxes(p, (32, 32))
    assert boxes.shape == (1, 4, 2, 2)
    assert boxes[0, :, 1, 1] == pytest.approx([10, 4, 30, 31])
    # clipping: left/top to the image, right >= left
    q = np.zeros((4, 1, 1))
    q[:, 0, 0] = [1.0, 1.0, -1.0, 5.0]
    assert decode_bboxes(q, (32, 32))[0, :, 0, 0] == pytest.approx([0, 0, 0, 32])


@pytest.mark.parametrize("algorithm", ["dbscan", "nms"])
def test_round_trip_recovers_ground_truth(algorithm):
    gt = np.array([[40, 50, 140, 200], [200, 30, 330, 120], [150, 140, 260, 250], [10, 180, 90, 250]], float)
    cls = np.array([0, 0, 1, 1])
    t = rasterize(gt, cls, 2, (384, 256), (24, 16))
    dets = cluster_outputs(
        t.cov, t.bbox, ["car", "pedestrian"], (384, 256), ClusteringParams(clustering_algorithm=algorithm)
    )
    got = {(d.class_name, tuple(np.round(d.bbox, 3))) for d in dets}
    want = {(["car", "pedestrian"][c], tuple(b)) for b, c in zip(gt, cls)}
    assert got == want
    for d in dets:
        assert 0 < d.cov <= 1


def test_confidence_models_and_thresholds():
    # three cells voting for the same box, coverages 0.5, 0.3, 0.2
    boxes = np.array([[0, 0, 50, 50]] * 3, float)
    covs = np.array([0.5, 0.3, 0.2])
    agg = cluster_class(boxes, covs, "car")
    assert len(agg) == 1 and agg[0].confidence == pytest.approx(1.0) and agg[0].cov == pytest.approx(1 / 3)
    assert agg[0].num_raw_bboxes == 3 and agg[0].bbox_variance == pytest.approx(0)
    mean = cluster_class(boxes, covs, "car", ClusteringParams(confidence_model="mean_cov"))
    assert mean[0].confidence == pytest.approx(1 / 3)
    assert cluster_class(boxes, covs, "car", ClusteringParams(dbscan_confidence_threshold=1.01)) == []
    # height 50 is not above a 50-pixel minimum
    assert cluster_class(boxes, covs, "car", ClusteringParams(minimum_bounding_box_height=50)) == []
    # cells at or below the coverage threshold never vote
    only = cluster_class(boxes, np.array([0.6, 0.5, 0.2]), "car", ClusteringParams(coverage_threshold=0.25))
    assert only[0].confidence == pytest.approx(1.1) and only[0].num_raw_bboxes == 2
    # weighted DBSCAN as in TLT: min_samples = max(int(0.05), 1) = 1 is a minimum total coverage,
    # so 0.5 + 0.3 = 0.8 forms no core point and the cells are noise
    assert cluster_class(boxes, covs, "car", ClusteringParams(coverage_threshold=0.25)) == []


def test_cluster_box_is_the_coverage_weighted_mean():
    boxes = np.array([[0, 0, 100, 100], [2, 2, 102, 102]], float)
    d = cluster_class(boxes, np.array([0.75, 0.25]), "car")
    assert len(d) == 1
    assert d[0].bbox == pytest.approx([0.5, 0.5, 100.5, 100.5])


def test_nms_keeps_the_best_and_separate_boxes():
    boxes = np.array([[0, 0, 100, 100], [5, 5, 105, 105], [300, 0, 400, 100]], float)
    dets = cluster_class(boxes, np.array([0.6, 0.9, 0.4]), "car", ClusteringParams(clustering_algorithm="nms"))
    assert [d.confidence for d in dets] == pytest.approx([0.9, 0.4])
    assert dets[0].bbox == pytest.approx([5, 5, 105, 105])


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"cov head must be \(C=2, h, w\)"):
        cluster_outputs(np.zeros((1, 4, 4)), np.zeros((4, 4, 4)), ["a", "b"], (64, 64))
    with pytest.raises(ValueError, match=r"bbox head must be \(4C=4, h, w\)"):
        cluster_outputs(np.zeros((1, 4, 4)), np.zeros((8, 4, 4)), ["a"], (64, 64))
