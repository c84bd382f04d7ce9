"""A tiny synthetic detection dataset written by the tests: coloured rectangles on a noisy background."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = ("blue", "red")
_COLORS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_synthetic_kitti(root: Path, n: int = 16, size: tuple[int, int] = (128, 96), seed: int = 0) -> Path:
    """n PNG frames of `size` (width, height), each with 1-2 filled rectangles (20-40 px) labelled by colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = rng.integers(90, 160, (h, w, 3)).astype(np.uint8)
        lines = []
        for k in range(1 + i % 2):
            cls = CLASSES[(i + k) % 2]
            bw, bh = rng.integers(20, 40, size=2)
            # first box in the left half, second in the right half: they never overlap
            x1 = int(rng.integers(0, w // 2 - bw)) + k * (w // 2)
            y1 = int(rng.integers(0, h - bh))
            img[y1 : y1 + bh, x1 : x1 + bw] = _COLORS[cls]
            lines.append(f"{cls} 0.00 0 0.00 {x1} {y1} {x1 + bw} {y1 + bh} 0 0 0 0 0 0 0")
        Image.fromarray(img).save(root / "images" / f"{i:04d}.png")
        (root / "labels" / f"{i:04d}.txt").write_text("\n".join(lines) + "\n")
    return root


def write_synthetic_records(tmp: Path, n: int = 16, val_split: float = 25.0, size=(128, 96), seed: int = 0) -> Path:
    """KITTI frames -> RecordIO folds (fold 0 = validation); returns the manifest path."""
    from tlkit_detection.config import PartitionConfig
    from tlkit_detection.convert import read_kitti
    from tlkit_detection.records import write_records

    root = write_synthetic_kitti(tmp / "kitti", n, size, seed)
    samples, report = read_kitti(root, image_extension="png")
    prefix = tmp / "records" / "synth"
    write_records(samples, prefix, PartitionConfig(val_split=val_split, num_shards=1, seed=seed), report)
    return Path(f"{prefix}.json")


def tiny_spec(manifest: Path, **over):
    """A DetectionConfig for fast tests: 128x96 input (an 8x6 grid), resnet10, 1 epoch, batch 4."""
    from tlkit_detection.config import DetectionConfig

    data = {
        "dataset_config": {"data_sources": [{"records_path": str(manifest)}], "validation_fold": 0},
        "model_config": {"arch": "resnet", "n_layers": 10},
        "augmentation_config": {
            "preprocessing": {"output_image_width": 128, "output_image_height": 96},
            "spatial_augmentation": {"hflip_probability": 0.5},
        },
        "postprocessing_config": {
            "default": {
                "minimum_bounding_box_height": 4,
                "dbscan_confidence_threshold": 0.05,
                "coverage_threshold": 0.05,
            }
        },
        "train_config": {
            "batch_size_per_gpu": 4,
            "n_epochs": 1,
            "n_workers": 1,
            "optimizer": {"type": "adam"},
            "lr_config": {"type": "constant", "learning_rate": 1e-3},
            "reg_config": {"type": "none"},
        },
    }
    for k, v in over.items():
        cur = data
        keys = k.split(".")
        for part in keys[:-1]:
            cur = cur.setdefault(part, {})
        cur[keys[-1]] = v
    return DetectionConfig.model_validate(data)
