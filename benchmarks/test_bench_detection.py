"""Detection evaluation time at KITTI scale: 7,481 images (the KITTI training set size) of synthetic
ground truth and predictions with KITTI-like statistics (about 4 cars, 0.6 pedestrians, 0.2 cyclists,
1 Van/DontCare per image; 1242x375 px; random occlusion/truncation; jittered true detections plus
false positives): per-class AP (TLT and VOC conventions), COCO AP (pycocotools), KITTI AP11/AP40, and
the official KITTI devkit (compiled from tests/data/reference_tools) on the same frames, whose AP tlkit
must equal. Save the numbers of record with:

    .venv/bin/python -m pytest benchmarks/test_bench_detection.py --benchmark-only \
        --benchmark-json=benchmarks/results/detection.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tlkit_detection.kitti import KittiObject, make_frame, read_label_dir, read_prediction_dir, to_arrays, write_label
from tlkit_detection.metrics import DIFFICULTIES, evaluate_ap, evaluate_coco, evaluate_kitti

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "task-detection" / "tests"))
import kitti_devkit  # noqa: E402  (the tests' devkit builder)

N_IMAGES = 7481
W, H = 1242, 375
CLASSES = ("Car", "Pedestrian", "Cyclist")


def synthetic_kitti(n: int = N_IMAGES, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt, pred = {}, {}
    for i in range(n):
        counts = {
            "Car": rng.poisson(4),
            "Pedestrian": rng.poisson(0.6),
            "Cyclist": rng.poisson(0.2),
            "Van": rng.poisson(0.4),
            "DontCare": rng.poisson(0.6),
        }
        types = [t for t, k in counts.items() for _ in range(k)]
        m = len(types)
        h = rng.uniform(15, 200, m)
        w = h * rng.uniform(0.4, 2.5, m)
        x1, y1 = rng.uniform(0, W - w), rng.uniform(0, H - np.minimum(h, H - 1))
        boxes = np.stack([x1, y1, np.minimum(x1 + w, W), np.minimum(y1 + h, H)], 1)
        gt[f"{i:06d}"] = make_frame(
            types, boxes, occluded=rng.integers(0, 3, m), truncated=rng.choice([0.0, 0.2, 0.45, 0.7], m)
        )
        # detections: 85% of the real objects, jittered; plus ~1.5 false positives per image
        real = [j for j, t in enumerate(types) if t in CLASSES and rng.random() < 0.85]
        jitter = rng.normal(0, 0.05, (len(real), 4)) * np.repeat(h[real, None], 4, 1)
        det_boxes = boxes[real] + jitter
        n_fp = rng.poisson(1.5)
        fh = rng.uniform(15, 150, n_fp)
        fx, fy = rng.uniform(0, W - 2 * fh), rng.uniform(0, H - fh)
        fp = np.stack([fx, fy, fx + fh * rng.uniform(0.5, 2, n_fp), fy + fh], 1)
        det_types = [types[j] for j in real] + list(rng.choice(CLASSES, n_fp))
        scores = np.concatenate([rng.uniform(0.3, 1.0, len(real)), rng.uniform(0.0, 0.7, n_fp)])
        det = np.concatenate([det_boxes, fp]).reshape(-1, 4)
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        pred[f"{i:06d}"] = make_frame(det_types, det, scores=scores)
    return gt, pred


@pytest.fixture(scope="module")
def kitti_scale():
    return synthetic_kitti()


@pytest.fixture(scope="module")
def kitti_scale_lower(kitti_scale):
    def lower(d):
        return {
            k: make_frame([t.lower() for t in f.types], f.boxes, f.occluded, f.truncated, f.scores)
            for k, f in d.items()
        }

    return tuple(lower(d) for d in kitti_scale)


@pytest.mark.parametrize("matching", ["tlt", "voc"])
def test_bench_per_class_ap(benchmark, kitti_scale_lower, matching):
    gt_l, pred_l = kitti_scale_lower
    result = benchmark.pedantic(
        evaluate_ap,
        args=(gt_l, pred_l, ["car", "pedestrian", "cyclist"], {"car": 0.7, "pedestrian": 0.5, "cyclist": 0.5}),
        kwargs={"matching": matching},
        rounds=3,
        iterations=1,
    )
    benchmark.extra_info.update(
        {
            "images": N_IMAGES,
            "mAP": result.mean_ap * 100,
            "gt_boxes": sum(c.num_gt for c in result.classes.values()),
            "predictions": sum(c.num_pred for c in result.classes.values()),
        }
    )
    assert 0 < result.mean_ap < 1


def test_bench_coco_ap(benchmark, kitti_scale_lower):
    """pycocotools' COCOeval (10 IoU thresholds, 3 size ranges) on the same frames, as `evaluate` runs it."""
    gt_l, pred_l = kitti_scale_lower
    result = benchmark.pedantic(
        evaluate_coco, args=(gt_l, pred_l, ["car", "pedestrian", "cyclist"]), rounds=2, iterations=1
    )
    benchmark.extra_info.update({"images": N_IMAGES, **result.metrics})
    assert 0 < result.metrics["AP"] < result.metrics["AP50"] < 100


def test_bench_kitti_difficulty_ap(benchmark, kitti_scale):
    gt, pred = kitti_scale
    result = benchmark.pedantic(evaluate_kitti, args=(gt, pred, CLASSES), rounds=3, iterations=1)
    benchmark.extra_info.update(
        {"images": N_IMAGES, "moderate_AP40": {c: result.classes[c]["moderate"]["AP40"] for c in CLASSES}}
    )
    assert all(0 < result.classes[c]["moderate"]["AP40"] < 100 for c in CLASSES)


def test_bench_kitti_devkit_reference(benchmark, kitti_scale, tmp_path):
    """The official devkit (C++, -O2) on the same 7,481 frames written as KITTI files; tlkit's AP11/AP40 on
    the files it reads back must equal it (1e-6): the KITTI-scale acceptance of the differential test."""
    exe = kitti_devkit.build(tmp_path)
    if exe is None:
        pytest.skip("g++ is not installed")
    gt, pred = kitti_scale
    labels, results = tmp_path / "label_2", tmp_path / "data"
    for k in gt:
        g, p = gt[k], pred[k]
        write_label(
            labels / f"{k}.txt",
            [
                KittiObject(str(t), tuple(b), truncated=float(tr), occluded=int(o))
                for t, b, tr, o in zip(g.types, g.boxes, g.truncated, g.occluded)
            ],
        )
        write_label(
            results / f"{k}.txt",
            [KittiObject(str(t), tuple(b), score=float(s)) for t, b, s in zip(p.types, p.boxes, p.scores)],
        )
    reference = benchmark.pedantic(
        kitti_devkit.run, args=(exe, labels, results, N_IMAGES, tmp_path / "out"), rounds=1, iterations=1
    )
    ours = evaluate_kitti(
        {k: to_arrays(v) for k, v in read_label_dir(labels).items()},
        {k: to_arrays(v) for k, v in read_prediction_dir(results)[0].items()},
        CLASSES,
    )
    worst = max(
        abs(ours.classes[c][d][m] - reference[c.lower()][m][i])
        for c in CLASSES
        for i, d in enumerate(DIFFICULTIES)
        for m in ("AP11", "AP40")
    )
    benchmark.extra_info.update(
        {
            "images": N_IMAGES,
            "max_abs_difference_to_tlkit": worst,
            "moderate_AP40": {c: reference[c.lower()]["AP40"][1] for c in CLASSES},
        }
    )
    assert worst < 1e-6


def test_bench_convert_bccd_to_records(benchmark, tmp_path):
    """Pascal VOC -> sharded RecordIO on the real BCCD set (364 images 640x480), when ../shared/data has it."""
    from pathlib import Path

    from tlkit_detection.config import VocSourceConfig
    from tlkit_detection.convert import read_voc
    from tlkit_detection.records import write_records

    root = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "bccd-voc"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    cfg = VocSourceConfig(root_directory_path=str(root), num_shards=4)

    def convert():
        samples, report = read_voc(root)
        return write_records(samples, tmp_path / "bccd", cfg, report)

    manifest = benchmark.pedantic(convert, rounds=3, iterations=1, warmup_rounds=1)  # warm-up: MXNet import, file cache
    benchmark.extra_info.update(
        {"images": sum(manifest["frames_per_fold"]), "objects": sum(manifest["object_counts"].values())}
    )
    assert manifest["report"]["problems"]["zero_size_box"] == 2


# -- DetectNet_v2 data and post-processing at TLT's default input (960x544, a 60x34 grid) --------------


def _detectnet_frames(n: int = 8, seed: int = 0):
    from tlkit_detection.data import Dataset, Frame

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        m = rng.poisson(6) + 1
        h = rng.uniform(20, 200, m)
        w = h * rng.uniform(0.5, 2.0, m)
        x1, y1 = rng.uniform(0, 960 - w), rng.uniform(0, 544 - np.minimum(h, 543))
        boxes = np.stack([x1, y1, np.minimum(x1 + w, 960), np.minimum(y1 + h, 544)], 1).astype(np.float32)
        img = rng.integers(0, 255, (544, 960, 3), dtype=np.uint8)
        cls = rng.integers(0, 3, m)
        frames.append(Frame(img, boxes, cls, f"{i}", (960, 544), boxes.astype(float), np.zeros(m), np.zeros(m, int)))
    return Dataset(frames, ["car", "pedestrian", "cyclist"], (960, 544))


def test_bench_detectnet_training_batch(benchmark):
    """One batch of 8 at 960x544: hflip + zoom + translate + colour augmentation, normalisation and the
    coverage/bbox rasterization (what the training loop waits for per step)."""
    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.data import TargetMaker, batches

    cfg = DetectionConfig.model_validate(
        {
            "augmentation_config": {
                "spatial_augmentation": {
                    "hflip_probability": 0.5,
                    "zoom_min": 0.8,
                    "zoom_max": 1.2,
                    "translate_max_x": 16,
                    "translate_max_y": 16,
                },
                "color_augmentation": {"hue_rotation_max": 20, "saturation_shift_max": 0.2, "contrast_scale_max": 0.2},
            }
        }
    )
    ds = _detectnet_frames()
    maker = TargetMaker(cfg, ds.classes, {"mode": "torch"}, ds.input_size)
    x, (cov, _, _) = benchmark(lambda: next(batches(ds, maker, 8, aug=cfg.augmentation_config, seed=1)))
    assert x.shape == (8, 3, 544, 960) and cov.shape == (8, 3, 34, 60)


def test_bench_detectnet_train_step(benchmark):
    """What the training loop consumes per step, beside what the loader makes (test_bench_detectnet_training_batch):
    one forward + backward + Adam update of DetectNet_v2 ResNet-18 on a batch of 8 at 960x544."""
    import mxnet as mx
    from mxnet import autograd, gluon

    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.data import TargetMaker, batches
    from tlkit_detection.loss import DetectNetLoss
    from tlkit_detection.model import build_net

    cfg = DetectionConfig.model_validate({"model_config": {"arch": "resnet", "n_layers": 18}})
    ds = _detectnet_frames()
    x, label = next(batches(ds, TargetMaker(cfg, ds.classes, {"mode": "torch"}, ds.input_size), 8, seed=1))
    net = build_net({"arch": "resnet", "n_layers": 18, "n_classes": 3})
    net.initialize(mx.init.Xavier())
    net.hybridize()
    loss = DetectNetLoss.from_config(cfg, ds.classes)
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 1e-5})
    xb, lb = mx.nd.array(x), tuple(mx.nd.array(v) for v in label)

    def step():
        with autograd.record():
            cost = loss(net(xb), lb)
        cost.backward()
        trainer.step(8)
        return float(cost.mean().asscalar())

    assert np.isfinite(benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=1))


@pytest.mark.parametrize("algorithm", ["dbscan", "nms"])
def test_bench_detectnet_clustering(benchmark, algorithm):
    """Clustering of one image's heads (3 classes, 60x34 grid) from rasterized targets: DBSCAN vs NMS."""
    from tlkit_detection.clustering import ClusteringParams
    from tlkit_detection.detectors.detectnet_v2 import postprocess
    from tlkit_detection.rasterizer import rasterize

    f = _detectnet_frames(1)
    fr = f.frames[0]
    t = rasterize(fr.boxes, fr.classes, 3, (960, 544), (60, 34))
    params = {c: ClusteringParams(clustering_algorithm=algorithm, minimum_bounding_box_height=4) for c in f.classes}
    dets = benchmark(lambda: postprocess(t.cov[None], t.bbox[None], f.classes, (960, 544), params, [(960, 544)]))
    assert len(dets[0]) >= 1
