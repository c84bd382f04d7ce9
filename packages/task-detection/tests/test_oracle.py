"""Oracle check of the whole DetectNet_v2 output path: rasterized ground truth, fed back as if it were the
network's heads, must come out of decoding + clustering + scaling to source pixels + AP as the ground truth again
(AP ~ 1). A failure here is a bug in the rasterizer, decoder, clustering or metric, not in
training. The scenes mimic BCCD blood smears: crowds of touching cells (~3 grid cells wide), sub-cell
specks (smaller than one 16-px cell) and a few large cells, on 640x480 sources scaled to a 320x240 input.
"""

import numpy as np
import pytest

from tlkit_detection.clustering import ClusteringParams
from tlkit_detection.detectors.detectnet_v2 import postprocess
from tlkit_detection.kitti import FrameArrays
from tlkit_detection.metrics import evaluate_ap
from tlkit_detection.predict import to_frame
from tlkit_detection.rasterizer import ClassRasterParams, rasterize

CLASSES = ["speck", "cell", "big"]
SRC = (640, 480)
NET = (320, 240)
GRID = (20, 15)


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (source pixels) and class ids: a jittered lattice of touching cells + specks + one big cell."""
    boxes, cls = [], []
    for y in range(20, 440, 95):
        for x in range(15, 560, 100):
            w, h = rng.uniform(95, 115, 2)  # neighbours touch or overlap by a few pixels
            x0, y0 = x + rng.uniform(-6, 6), y + rng.uniform(-6, 6)
            boxes.append([x0, y0, min(x0 + w, SRC[0]), min(y0 + h, SRC[1])])
            cls.append(1)
    for _ in range(3):  # 20-28 source px = 10-14 px at the network input: less than one cell
        s = rng.uniform(20, 28)
        x0, y0 = rng.uniform(0, SRC[0] - s), rng.uniform(0, SRC[1] - s)
        boxes.append([x0, y0, x0 + s, y0 + s])
        cls.append(0)
    x0, y0 = rng.uniform(0, 400), rng.uniform(0, 260)
    boxes.append([x0, y0, x0 + 200, y0 + 200])
    cls.append(2)
    return np.array(boxes), np.array(cls)


def oracle_ap(params: ClusteringParams, raster: ClassRasterParams | None = None, n: int = 6):
    raster = raster or ClassRasterParams()
    rng = np.random.default_rng(0)
    s = np.array([NET[0] / SRC[0], NET[1] / SRC[1]] * 2)
    gts, preds = {}, {}
    for i in range(n):
        boxes, cls = scene(rng)
        t = rasterize(boxes * s, cls, len(CLASSES), NET, GRID, [raster] * len(CLASSES))
        dets = postprocess(t.cov[None], t.bbox[None], CLASSES, NET, {c: params for c in CLASSES}, [SRC])[0]
        preds[str(i)] = to_frame(dets)
        names = np.array([CLASSES[c] for c in cls], dtype=object)
        gts[str(i)] = FrameArrays(names, boxes, np.zeros(len(cls)), np.zeros(len(cls), np.int64), np.ones(len(cls)))
    # the VOC all-point area, which a perfect detector scores 1 (TLT's INTEGRATE starts at the first recall)
    return evaluate_ap(gts, preds, CLASSES, 0.7, mode="integrate", matching="voc")


@pytest.mark.parametrize("algorithm", ["dbscan", "nms"])
def test_rasterized_ground_truth_scores_ap_one(algorithm):
    # TLT's defaults except the minimum height (specks are ~12 px at the input)
    r = oracle_ap(ClusteringParams(clustering_algorithm=algorithm, minimum_bounding_box_height=4))
    for c in CLASSES:
        assert r.classes[c].num_gt > 0
        # a touching neighbour's deadzone may clear a cell entirely: allow one miss in ~200 cells
        assert r.classes[c].ap >= 0.99, (c, r.classes[c].ap, r.classes[c].num_pred, r.classes[c].num_gt)


def test_small_coverage_ellipses_starve_weighted_dbscan():
    """TLT's weighted DBSCAN needs a total coverage >= 1 around a core cell: a sub-cell object rasterized
    with bbox_min_radius < 1 has less, so DBSCAN drops it while NMS (raw coverage) keeps it."""
    small = ClassRasterParams(bbox_min_radius=0.5)
    dbscan = oracle_ap(ClusteringParams(minimum_bounding_box_height=4), small)
    nms = oracle_ap(ClusteringParams(clustering_algorithm="nms", minimum_bounding_box_height=4), small)
    assert dbscan.classes["speck"].ap < 0.7
    assert nms.classes["speck"].ap >= 0.99
    assert dbscan.classes["big"].ap >= 0.99  # large objects are unaffected
