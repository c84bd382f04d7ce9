"""Training data: sources (COCO json, RecordIO, memory), deterministic augmentation, flips that swap
left/right, person-centric scaling, targets and masks, and errors."""

from __future__ import annotations

import numpy as np
import pytest

from tlkit.errors import DataError, SpecError


def _cfg(**aug):
    from tlkit_pose.config import PoseConfig

    return PoseConfig.model_validate(
        {"dataloader": {"image_dims": [64, 64, 3]}, "pose_config": {"target_shape": [8, 8]}, "augmentation_config": aug}
    )


@pytest.fixture(scope="module")
def mem_samples():
    from tlkit_pose.data import samples_from_memory
    from tlkit_pose.synthetic import synthetic_coco

    coco, images = synthetic_coco(6, seed=5, size=(80, 96), people=(1, 2), crowd_prob=0.5)
    return samples_from_memory(coco, images), coco


def test_batches_are_deterministic_per_epoch(mem_samples):
    from tlkit_pose.data import batches
    from tlkit_pose.model import preprocessing

    samples, _ = mem_samples
    cfg = _cfg()
    a = list(batches(samples, cfg, preprocessing(), 2, epoch=0, seed=1))
    b = list(batches(samples, cfg, preprocessing(), 2, epoch=0, seed=1))
    c = list(batches(samples, cfg, preprocessing(), 2, epoch=1, seed=1))
    assert len(a) == 3
    x, (hm, paf, mask) = a[0]
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32
    assert hm.shape == (2, 19, 8, 8) and paf.shape == (2, 38, 8, 8) and mask.shape == (2, 1, 8, 8)
    assert -0.5 <= x.min() and x.max() < 0.5  # pixel / 256 - 0.5
    for (xa, la), (xb, lb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        for u, v in zip(la, lb):
            np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    assert hm[:, :18].max() > 0.5  # people are in the crops


def test_flip_swaps_left_and_right(mem_samples):
    from tlkit_pose.data import augment_params, warp_sample
    from tlkit_pose.skeleton import coco_to_parts, flip_maps
    from tlkit_pose.targets import render_targets

    samples, _ = mem_samples
    s = samples[0]
    cfg = _cfg(flip_lr_prob=0.0)
    m, flip = augment_params(s, (80, 96), (64, 64), cfg.augmentation_config, np.random.default_rng(0))
    assert not flip
    img, kp, _ = warp_sample(s.load(), s.keypoints, None, m, False, (64, 64))
    fimg, fkp, _ = warp_sample(s.load(), s.keypoints, None, m, True, (64, 64))
    np.testing.assert_array_equal(fimg, img[:, ::-1])
    # COCO 5 = left shoulder: after the flip it is the mirrored right shoulder (6)
    lab = kp[:, 6, 2] > 0
    np.testing.assert_allclose(fkp[lab, 5, 0], 63 - kp[lab, 6, 0])
    hm, paf = render_targets(coco_to_parts(kp), (64, 64), 8)
    fhm, fpaf = render_targets(coco_to_parts(fkp), (64, 64), 8)
    want_hm, want_paf = flip_maps(hm, paf)
    np.testing.assert_allclose(fhm, want_hm, atol=1e-5)
    np.testing.assert_allclose(fpaf, want_paf, atol=1e-5)


def test_person_centric_scales_and_centres_the_person(mem_samples):
    from tlkit_pose.data import augment_params, warp_sample

    samples, _ = mem_samples
    s = next(x for x in samples if len(x.keypoints) == 1)
    cfg = _cfg(rotate_deg_max=0, translate_max_x=0, translate_max_y=0, flip_lr_prob=0, target_person_scale=0.5)
    m, _ = augment_params(s, (80, 96), (64, 64), cfg.augmentation_config, np.random.default_rng(0))
    _, kp, _ = warp_sample(s.load(), s.keypoints, None, m, False, (64, 64))
    pts = kp[0, kp[0, :, 2] > 0, :2]
    lo, hi = pts.min(0), pts.max(0)
    np.testing.assert_allclose((lo + hi) / 2, [31.5, 31.5], atol=1e-6)
    assert abs((hi[1] - lo[1]) - 32) < 1e-6 or (hi[0] - lo[0]) * 0.5 > (hi[1] - lo[1])


def test_mask_follows_crowds(mem_samples):
    from tlkit_pose.data import make_example

    samples, coco = mem_samples
    crowd_images = {a["image_id"] for a in coco["annotations"] if a["iscrowd"]}
    s = next(x for x in samples if x.image_id in crowd_images)
    cfg = _cfg(
        spatial_augmentation_mode="standard", rotate_deg_max=0, translate_max_x=0, translate_max_y=0, flip_lr_prob=0
    )
    *_, mask = make_example(s, cfg, np.random.default_rng(0))
    assert mask.shape == (1, 8, 8) and mask.min() == 0.0 and mask.max() == 1.0


def test_records_and_coco_sources_agree(synthetic_set, tmp_path):
    from tlkit_pose.coco import load_coco_keypoints
    from tlkit_pose.data import samples_from_coco, samples_from_records
    from tlkit_pose.dataset_convert import convert

    convert(load_coco_keypoints(synthetic_set), tmp_path / "pose", num_shards=2, generate_masks=True)
    rec = {s.image_id: s for s in samples_from_records(str(tmp_path / "pose-train-*.rec"))}
    coco = {s.image_id: s for s in samples_from_coco(synthetic_set)}
    assert rec.keys() == coco.keys()
    for i, s in coco.items():
        np.testing.assert_allclose(rec[i].keypoints, s.keypoints)
        np.testing.assert_array_equal(rec[i].load(), s.load())
        m = rec[i].mask()
        assert m is not None and m.shape == s.load().shape[:2]


def test_source_errors(tmp_path):
    from tlkit_pose.data import open_train_samples, samples_from_coco, samples_from_records
    from tlkit_pose.synthetic import generate_dataset

    with pytest.raises(SpecError, match="train_annotations"):
        open_train_samples(_cfg())
    with pytest.raises(DataError, match="no .rec files"):
        samples_from_records(str(tmp_path / "none-*.rec"))
    ann = generate_dataset(tmp_path / "d", n_images=2, seed=0, size=(64, 64))
    next((tmp_path / "d" / "images").iterdir()).unlink()
    with pytest.raises(DataError, match="not found"):
        samples_from_coco(ann)
