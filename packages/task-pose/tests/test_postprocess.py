"""The post-processor: peaks, limb scoring, assignment, grouping, COCO output, multi-scale helpers."""

import numpy as np
import pytest

from tlkit_pose.config import InferenceConfig
from tlkit_pose.postprocess import (
    decode,
    find_connections,
    find_peaks,
    merge_multiscale,
    multiscale_inputs,
    predict_multiscale,
    score_limbs,
    to_coco_results,
    upsample,
)
from tlkit_pose.skeleton import COCO_KEYPOINTS, LIMBS, NUM_PARTS, PART_INDEX, coco_to_parts
from tlkit_pose.synthetic import random_pose
from tlkit_pose.targets import render_targets


def _maps(coco: np.ndarray, hw=(128, 128), stride=8):
    hm, paf = render_targets(coco_to_parts(coco), hw, stride)
    return upsample(hm, stride, hw), upsample(paf, stride, hw)


def _people(n: int, hw=(128, 256), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 17, 3))
    for i in range(n):
        out[i, :, :2] = random_pose(rng) * 100 + [40 + i * 80, 12]
        out[i, :, 2] = 2
    return out


def test_peaks_found_at_blobs_with_raw_scores():
    hm = np.zeros((40, 40, 19), np.float32)
    hm[10, 12, 0] = 0.9
    hm[30, 5, 0] = 0.05  # below heatmap_threshold 0.1
    hm[20, 20, 3] = 0.5
    peaks = find_peaks(hm)
    assert len(peaks) == NUM_PARTS
    assert peaks[0][:, :3].tolist() == [[12, 10, pytest.approx(0.9)]]
    assert peaks[3][:, :3].tolist() == [[20, 20, 0.5]]
    assert [len(p) for p in peaks].count(0) == NUM_PARTS - 2
    assert sorted(np.concatenate(peaks)[:, 3].tolist()) == [0, 1]  # global ids


def test_plateau_gives_one_peak_not_two():
    """A part exactly between two pixels makes two equal maxima; TLT's NMS keeps both (and splits people)."""
    hm = np.zeros((30, 30, 19), np.float32)
    hm[10, 10, 1] = hm[10, 11, 1] = 0.8
    peaks = find_peaks(hm)[1]
    assert peaks[:, :2].tolist() == [[10, 10]]


def test_line_integral_scores_real_limbs_and_rejects_wrong_pairs():
    coco = _people(2)
    hm, paf = _maps(coco, (128, 256))
    parts = coco_to_parts(coco)
    k = LIMBS.index((1, 8))
    starts = np.c_[parts[:, 1, :2], np.ones(2), np.arange(2)]
    ends = np.c_[parts[:, 8, :2], np.ones(2), np.arange(2)]
    score, count = score_limbs(starts, ends, paf[:, :, 2 * k : 2 * k + 2])
    # bicubic upsampling overshoots the band's edge a little, so a perfect limb scores slightly above 1
    assert ((np.diag(score) > 0.9) & (np.diag(score) < 1.3)).all() and (np.diag(count) == 10).all()
    assert count[0, 1] <= 8 and count[1, 0] <= 8  # across people: the field does not support the pair


def test_decode_recovers_people_exactly_enough():
    coco = _people(3, seed=3)
    hm, paf = _maps(coco, (128, 256))
    people = decode(hm, paf)
    assert len(people) == 3
    for person in people:
        got = person.keypoints
        assert (got[:, 2] > 0).sum() == NUM_PARTS
        # match the person by the nose
        i = np.argmin(np.abs(coco[:, 0, 0] - got[PART_INDEX["nose"], 0]))
        want = coco_to_parts(coco[i])
        assert np.abs(got[:, :2] - want[:, :2]).max() <= 1.5
        assert 0.9 < person.score < 1.0 and person.num_parts == NUM_PARTS
        assert person.score == pytest.approx(1 - 1 / person.total)


def test_people_with_too_few_parts_are_dropped():
    coco = np.zeros((1, 17, 3))
    coco[0, COCO_KEYPOINTS.index("left_shoulder")] = (40, 40, 2)  # no neck: it needs both shoulders
    coco[0, COCO_KEYPOINTS.index("left_elbow")] = (70, 40, 2)
    hm, paf = _maps(coco)
    assert decode(hm, paf) == []
    assert decode(hm, paf, InferenceConfig(num_parts_thresh=2))[0].num_parts == 2


def test_to_coco_results_remaps_by_name_and_zeroes_missing():
    coco = _people(1, seed=5)
    coco[0, COCO_KEYPOINTS.index("left_ankle"), :] = 0
    coco[0, COCO_KEYPOINTS.index("left_knee"), :] = 0
    hm, paf = _maps(coco, (128, 256))
    res = to_coco_results(decode(hm, paf), image_id=42)
    assert len(res) == 1 and res[0]["image_id"] == 42 and res[0]["category_id"] == 1
    kp = np.array(res[0]["keypoints"]).reshape(17, 3)
    assert kp[COCO_KEYPOINTS.index("left_ankle")].tolist() == [0, 0, 0]
    lw = COCO_KEYPOINTS.index("left_wrist")
    assert kp[lw, 2] == 1 and np.abs(kp[lw, :2] - coco[0, lw, :2]).max() <= 1.5


def test_bad_map_shapes_are_refused():
    with pytest.raises(ValueError, match=r"heatmap must be \(H, W, 19\)"):
        decode(np.zeros((8, 8, 17)), np.zeros((8, 8, 38)))
    with pytest.raises(ValueError, match="paf must be"):
        decode(np.zeros((8, 8, 19)), np.zeros((8, 9, 38)))


def test_multiscale_inputs_pad_to_the_stride_and_merge_back():
    img = np.full((50, 70, 3), 200, np.uint8)
    ins = multiscale_inputs(img, (0.5, 1.0, 1.5), stride=8)
    assert [i.image.shape[:2] for i in ins] == [(32, 40), (56, 72), (80, 112)]
    assert [i.scaled_hw for i in ins] == [(25, 35), (50, 70), (75, 105)]
    assert (ins[1].image[50:, :, 0] == 128).all() and (ins[1].image[:50, :70] == 200).all()
    ins = multiscale_inputs(img, (1.0,), stride=8, input_height=100)
    assert ins[0].scaled_hw == (100, 140) and ins[0].factor == 2.0
    # a constant "model" averages to the same constant at image resolution
    ins = multiscale_inputs(img, (0.5, 1.0), stride=8)
    outs = [
        (
            np.full((i.image.shape[0] // 8, i.image.shape[1] // 8, 19), 0.25, np.float32),
            np.full((i.image.shape[0] // 8, i.image.shape[1] // 8, 38), -0.5, np.float32),
        )
        for i in ins
    ]
    hm, paf = merge_multiscale(outs, ins, (50, 70), stride=8)
    assert hm.shape == (50, 70, 19) and paf.shape == (50, 70, 38)
    np.testing.assert_allclose(hm, 0.25, atol=1e-5)
    np.testing.assert_allclose(paf, -0.5, atol=1e-5)
    with pytest.raises(ValueError, match="2 outputs for 1"):
        merge_multiscale(outs, ins[:1], (50, 70))


def test_predict_multiscale_calls_the_model_per_scale():
    seen = []

    def model(x):
        seen.append(x.shape)
        return np.zeros((x.shape[0] // 8, x.shape[1] // 8, 19), np.float32), np.zeros(
            (x.shape[0] // 8, x.shape[1] // 8, 38), np.float32
        )

    hm, paf = predict_multiscale(np.zeros((64, 64, 3), np.uint8), model, InferenceConfig(scales=[1.0, 2.0]))
    assert seen == [(64, 64, 3), (128, 128, 3)] and hm.shape == (64, 64, 19)


def test_connections_are_one_to_one():
    coco = _people(2, seed=9)
    hm, paf = _maps(coco, (128, 256))
    peaks = find_peaks(hm)
    for conns in find_connections(peaks, paf):
        assert len(set(conns[:, 0])) == len(conns) and len(set(conns[:, 1])) == len(conns)


def test_find_peaks_matches_a_direct_whole_image_reference():
    """Independent reference (scipy, whole image, TLT's steps) on noisy maps with sub-threshold clutter."""
    import cv2
    from scipy import ndimage

    rng = np.random.default_rng(4)
    hm = (rng.random((90, 120, 19)) * 0.09).astype(np.float32)  # clutter below the 0.1 threshold
    yy, xx = np.mgrid[0:90, 0:120]
    for j in range(18):
        for _ in range(3):
            cy, cx = rng.uniform(0, 90), rng.uniform(0, 120)
            hm[..., j] = np.maximum(
                hm[..., j], rng.uniform(0.2, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 6.0**2))
            )
    k1 = cv2.getGaussianKernel(5, 3.0)[:, 0]
    ref = []
    for j in range(18):
        sm = ndimage.correlate(hm[..., j].astype(np.float64), np.outer(k1, k1), mode="constant").astype(np.float32)
        mx = ndimage.maximum_filter(sm, size=3, mode="nearest")
        ys, xs = np.nonzero((sm == mx) & (hm[..., j] > 0.1))
        ref.append(sorted(zip(xs.tolist(), ys.tolist())))
    got = [sorted(map(tuple, p[:, :2].astype(int).tolist())) for p in find_peaks(hm)]
    mismatched = [j for j in range(18) if got[j] != ref[j]]
    assert not mismatched, [(got[j], ref[j]) for j in mismatched]
    assert sum(len(g) for g in got) >= 40
