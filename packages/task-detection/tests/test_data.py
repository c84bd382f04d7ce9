"""Data pipeline: records -> resized frames -> augmentation (deterministic) -> rasterized targets -> batches."""

import numpy as np
import pytest
from detection_synth import tiny_spec, write_synthetic_records

from tlkit.errors import DataError, SpecError


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_synthetic_records(tmp_path_factory.mktemp("synth"), n=8, val_split=25)


def test_splits_resize_frames_and_keep_source_boxes(manifest):
    from tlkit_detection.data import dataset_for

    cfg = tiny_spec(
        manifest,
        **{
            "augmentation_config.preprocessing.output_image_width": 64,
            "augmentation_config.preprocessing.output_image_height": 48,
        },
    )
    train, val = dataset_for(cfg, "training"), dataset_for(cfg, "validation")
    assert train.classes == ["blue", "red"] and len(train) == 6 and len(val) == 2
    assert not {f.frame_id for f in train.frames} & {f.frame_id for f in val.frames}
    f = train.frames[0]
    assert f.image.shape == (48, 64, 3) and f.orig_size == (128, 96)
    np.testing.assert_allclose(f.boxes, f.orig_boxes * 0.5, rtol=1e-5)
    gt = f.ground_truth(train.classes)
    assert list(gt.types) == [train.classes[c] for c in f.classes]


def test_hflip_zoom_translate_move_boxes_with_the_pixels():
    from tlkit_detection.config import AugmentationConfig
    from tlkit_detection.data import augment

    img = np.zeros((48, 64, 3), np.uint8)
    img[10:20, 20:30] = 255
    boxes = np.array([[20, 10, 30, 20]], np.float32)
    aug = AugmentationConfig.model_validate(
        {
            "spatial_augmentation": {
                "hflip_probability": 1.0,
                "zoom_min": 1.5,
                "zoom_max": 1.5,
                "translate_max_x": 0,
                "translate_max_y": 0,
            }
        }
    )
    out, b, c = augment(img, boxes, np.array([1]), aug, np.random.default_rng(0))
    # flip: x -> 64 - x; zoom 1.5 about the centre (32, 24)
    exp = np.array([(64 - 30 - 32) * 1.5 + 32, (10 - 24) * 1.5 + 24, (64 - 20 - 32) * 1.5 + 32, (20 - 24) * 1.5 + 24])
    np.testing.assert_allclose(b[0], exp, atol=1e-4)
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert abs(xs.min() - exp[0]) <= 1 and abs(xs.max() + 1 - exp[2]) <= 1
    assert abs(ys.min() - exp[1]) <= 1 and abs(ys.max() + 1 - exp[3]) <= 1
    assert list(c) == [1]


def test_boxes_pushed_out_are_dropped_and_small_ones_filtered():
    from tlkit_detection.config import AugmentationConfig
    from tlkit_detection.data import augment

    img = np.zeros((48, 64, 3), np.uint8)
    boxes = np.array([[0, 0, 10, 10], [40, 20, 60, 40]], np.float32)
    aug = AugmentationConfig.model_validate(
        {"spatial_augmentation": {"hflip_probability": 0.0, "translate_max_x": 0.0}}
    )
    # no randomness asked: unchanged
    _, b, _ = augment(img, boxes, np.array([0, 1]), aug, np.random.default_rng(0))
    np.testing.assert_array_equal(b, boxes)
    aug = AugmentationConfig.model_validate(
        {"preprocessing": {"min_bbox_width": 12, "output_image_width": 64, "output_image_height": 48}}
    )
    aug.spatial_augmentation.hflip_probability = 0.0
    _, b, c = augment(img, boxes, np.array([0, 1]), aug, np.random.default_rng(0))
    assert list(c) == [1]


def test_color_augmentation_changes_pixels_not_boxes():
    from tlkit_detection.config import AugmentationConfig
    from tlkit_detection.data import augment

    img = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    boxes = np.array([[1, 1, 8, 8]], np.float32)
    aug = AugmentationConfig.model_validate(
        {
            "spatial_augmentation": {"hflip_probability": 0},
            "color_augmentation": {"hue_rotation_max": 30, "saturation_shift_max": 0.3, "contrast_scale_max": 0.3},
        }
    )
    out, b, _ = augment(img, boxes, np.array([0]), aug, np.random.default_rng(1))
    np.testing.assert_array_equal(b, boxes)
    assert out.shape == img.shape and np.abs(out.astype(float) - img).mean() > 1.0
    assert out.min() >= 0 and out.max() <= 255


def test_batches_are_deterministic_per_epoch_and_carry_targets(manifest):
    from tlkit_detection.data import TargetMaker, batches, dataset_for

    cfg = tiny_spec(
        manifest,
        **{
            "augmentation_config.spatial_augmentation.zoom_min": 0.8,
            "augmentation_config.spatial_augmentation.zoom_max": 1.2,
        },
    )
    ds = dataset_for(cfg, "training")
    maker = TargetMaker(cfg, ds.classes, {"mode": "torch"}, ds.input_size)

    def epoch(e, workers=1):
        return list(batches(ds, maker, 4, aug=cfg.augmentation_config, epoch=e, seed=3, shuffle=True, workers=workers))

    a, b, other = epoch(0), epoch(0, workers=2), epoch(1)
    assert len(a) == 2 and a[0][0].shape == (4, 3, 96, 128)
    cov, bbox, cov_norm = a[0][1]
    assert cov.shape == (4, 2, 6, 8) and bbox.shape == (4, 8, 6, 8) and cov_norm.shape == (4, 2, 6, 8)
    assert cov.max() > 0.5  # every frame has an object
    for (x1, t1), (x2, t2) in zip(a, b):
        np.testing.assert_array_equal(x1, x2)
        for u, v in zip(t1, t2):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0][0], other[0][0])


def test_dataset_errors(tmp_path, manifest):
    from tlkit_detection.data import dataset_for

    with pytest.raises(SpecError, match="data_sources is empty"):
        dataset_for(tiny_spec(manifest, **{"dataset_config.data_sources": []}), "training")
    with pytest.raises(DataError, match="manifest not found"):
        dataset_for(tiny_spec(tmp_path / "missing.json"), "training")
    with pytest.raises(SpecError, match="validation_fold 5"):
        dataset_for(tiny_spec(manifest, **{"dataset_config.validation_fold": 5}), "training")
    with pytest.raises(DataError, match="no objects of classes \\['x'\\]"):
        dataset_for(tiny_spec(manifest, **{"dataset_config.target_class_mapping": {"green": "x"}}), "training")


def test_source_weight_sets_how_often_a_source_is_drawn(manifest):
    from tlkit_detection.data import TargetMaker, batches, dataset_for

    def spec(w1, w2):
        return tiny_spec(
            manifest,
            **{
                "dataset_config.data_sources": [
                    {"records_path": str(manifest), "source_weight": w1},
                    {"records_path": str(manifest), "source_weight": w2},
                ]
            },
        )

    equal = dataset_for(spec(2.0, 2.0), "training")
    assert len(equal) == 12 and equal.sample_weights is None  # equal weights: every frame once per epoch
    cfg = spec(1.0, 3.0)
    ds = dataset_for(cfg, "training")
    assert ds.sample_weights.tolist() == [1.0] * 6 + [3.0] * 6
    assert dataset_for(cfg, "validation").sample_weights is None
    maker = TargetMaker(cfg, ds.classes, {"mode": "torch"}, ds.input_size)
    drawn = np.concatenate(
        [idx for e in range(40) for _, idx in batches(ds, maker, 4, epoch=e, shuffle=True, with_targets=False)]
    )
    assert drawn.size == 40 * 12
    assert 0.68 < np.mean(drawn >= 6) < 0.82  # 3:1 -> 75 % from the second source
    with pytest.raises(SpecError, match="source_weight 0"):
        dataset_for(spec(0.0, 0.0), "training")

    # a subset of the frames (YOLOv3 trains on the frames with objects): drawn from it only, same weighting
    from tlkit_detection.data import epoch_order

    subset = [0, 2, 4, 7, 9, 11]
    sub = np.concatenate([epoch_order(ds, e, 42, subset) for e in range(40)])
    assert sub.size == 40 * 6 and set(sub.tolist()) <= set(subset)
    assert 0.68 < np.mean(sub >= 6) < 0.82
    assert sorted(epoch_order(equal, 3, 42, subset).tolist()) == subset  # unweighted: a permutation of it
    with pytest.raises(SpecError, match="source_weight 0"):
        epoch_order(dataset_for(spec(0.0, 1.0), "training"), 0, 42, [0, 1, 2])
