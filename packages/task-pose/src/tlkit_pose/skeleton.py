"""The 18-part BodyPoseNet/OpenPose body topology (TLT's `bpnet_18joints`) and its COCO-17 mapping.

Part order, limb order and the PAF channel layout are those of TLT's BodyPoseNet, so a model trained here
reads like a TLT one: limb `k` owns PAF channels `2k` (x component) and `2k + 1` (y component); the
heatmap has the 18 parts followed by the background channel. Limbs are listed from the neck outwards, which
the person grouping relies on; the last two (eye-ear) never start a new person.
"""

from __future__ import annotations

import numpy as np

PARTS: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NUM_PARTS = len(PARTS)  # 18
PART_INDEX = {name: i for i, name in enumerate(PARTS)}

# 19 limbs as (start part, end part), TLT bpnet_18joints order.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13), (1, 2), (2, 3), (3, 4), (2, 16),
    (1, 5), (5, 6), (6, 7), (5, 17), (1, 0), (0, 14), (0, 15), (14, 16), (15, 17),
)  # fmt: skip
NUM_LIMBS = len(LIMBS)  # 19
NUM_HEATMAP_CHANNELS = NUM_PARTS + 1  # + background (last)
NUM_PAF_CHANNELS = 2 * NUM_LIMBS  # 38

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
NUM_COCO = len(COCO_KEYPOINTS)  # 17
# COCO's own skeleton (1-based), written into the person category of generated COCO files.
COCO_SKELETON: tuple[tuple[int, int], ...] = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9),
    (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip

# For every 18-part index, the COCO index of the same name (-1 for the neck, which COCO lacks).
PART_TO_COCO = np.array([COCO_KEYPOINTS.index(p) if p in COCO_KEYPOINTS else -1 for p in PARTS])
NECK = PART_INDEX["neck"]
_R_SHOULDER, _L_SHOULDER = COCO_KEYPOINTS.index("right_shoulder"), COCO_KEYPOINTS.index("left_shoulder")


def _mirror(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


# Left/right swap under a horizontal flip: part i of the flipped image is part FLIP_PARTS[i] of the original.
FLIP_PARTS = np.array([PART_INDEX[_mirror(p)] for p in PARTS])
COCO_FLIP = np.array([COCO_KEYPOINTS.index(_mirror(p)) for p in COCO_KEYPOINTS])
_LIMB_INDEX = {limb: k for k, limb in enumerate(LIMBS)}
FLIP_LIMBS = np.array([_LIMB_INDEX[(int(FLIP_PARTS[a]), int(FLIP_PARTS[b]))] for a, b in LIMBS])


def coco_to_parts(coco: np.ndarray) -> np.ndarray:
    """COCO keypoints (..., 17, 3) [x, y, v] -> 18 BodyPoseNet parts (..., 18, 3).

    The neck is the midpoint of the two shoulders when both are labeled (v > 0), with the smaller of their
    visibility flags; otherwise it is unlabeled (0, 0, 0), as in TLT/OpenPose.
    """
    coco = np.asarray(coco, dtype=np.float64)
    if coco.shape[-2:] != (NUM_COCO, 3):
        raise ValueError(f"expected COCO keypoints of shape (..., 17, 3), got {coco.shape}")
    parts = np.zeros(coco.shape[:-2] + (NUM_PARTS, 3))
    have = PART_TO_COCO >= 0
    parts[..., have, :] = coco[..., PART_TO_COCO[have], :]
    rs, ls = coco[..., _R_SHOULDER, :], coco[..., _L_SHOULDER, :]
    both = (rs[..., 2] > 0) & (ls[..., 2] > 0)
    neck = np.concatenate([(rs[..., :2] + ls[..., :2]) / 2, np.minimum(rs[..., 2:], ls[..., 2:])], axis=-1)
    parts[..., NECK, :] = np.where(both[..., None], neck, 0.0)
    return parts


def parts_to_coco(parts: np.ndarray) -> np.ndarray:
    """18 parts (..., 18, C) -> COCO order (..., 17, C) by name; the neck is dropped (COCO does not score it)."""
    parts = np.asarray(parts)
    if parts.shape[-2] != NUM_PARTS:
        raise ValueError(f"expected (..., 18, C) parts, got {parts.shape}")
    out = np.zeros(parts.shape[:-2] + (NUM_COCO, parts.shape[-1]), dtype=parts.dtype)
    have = PART_TO_COCO >= 0
    out[..., PART_TO_COCO[have], :] = parts[..., have, :]
    return out


def flip_keypoints(keypoints: np.ndarray, width: int, coco: bool = False) -> np.ndarray:
    """Keypoints (..., K, 3) of an image `width` pixels wide, mirrored left-right: x -> width - 1 - x
    (pixel-index coordinates) and left/right parts swapped. Unlabeled points stay (0, 0, 0)."""
    kp = np.array(keypoints, dtype=np.float64, copy=True)
    labeled = kp[..., 2] > 0
    kp[..., 0] = np.where(labeled, width - 1 - kp[..., 0], kp[..., 0])
    return kp[..., COCO_FLIP if coco else FLIP_PARTS, :]


def flip_maps(heatmap: np.ndarray, paf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror network outputs (H, W, 19) and (H, W, 38) left-right: columns reversed, left/right part and
    limb channels swapped, PAF x components negated (flip test-time augmentation, flip augmentation)."""
    hm = heatmap[:, ::-1, :]
    hm = np.concatenate([hm[:, :, FLIP_PARTS], hm[:, :, NUM_PARTS:]], axis=2)
    pf = paf[:, ::-1, :].reshape(paf.shape[0], paf.shape[1], NUM_LIMBS, 2)[:, :, FLIP_LIMBS, :].copy()
    pf[..., 0] *= -1
    return np.ascontiguousarray(hm), pf.reshape(paf.shape)
