"""Acceptance: BodyPoseNet on synthetic people reaches COCO keypoint AP >= 0.5 with a short CPU training run.

Recipe (from scratch, no pretrained weights): generated stick-figure people (tlkit_pose.synthetic), one person
per SIZE x SIZE image, TRAIN_IMAGES training images (seed 1), 32 validation images (seed 2: validation during
training picks weights/model_best.tlk by AP) and 64 held-out test images (seed 3: the reported AP); a ResNet-18
backbone truncated at stride 8 (layer2, 128 channels), 2 stages of 64 channels; Adam, cosine LR 2e-3,
batch 8, EPOCHS epochs, flips/rotation/translation on. The best model is evaluated on the test set through
the `evaluate -m` command, as .tlk (MXNet) and as exported ONNX (onnxruntime), the final-epoch model too; the oracle (ground truth decoded
by the same post-processing) is reported as the ceiling.

Results: benchmarks/acceptance/pose.json. Long (about 20 minutes on 2 shared cores): `make acceptance`.
TLKIT_POSE_ACCEPT_EPOCHS / TLKIT_POSE_ACCEPT_IMAGES change the recipe.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

OUT = Path(__file__).resolve().parent / "pose.json"
SIZE = 96
EPOCHS = int(os.environ.get("TLKIT_POSE_ACCEPT_EPOCHS", "32"))
TRAIN_IMAGES = int(os.environ.get("TLKIT_POSE_ACCEPT_IMAGES", "1024"))
TARGET_AP = 0.5


@pytest.mark.slow
def test_synthetic_pose_reaches_ap(tmp_path):
    import mxnet as mx
    from rich.console import Console

    from tlkit.context import CommandContext
    from tlkit.io import atomic_write_text
    from tlkit_pose.coco import load_coco_keypoints
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.evaluate import evaluate_keypoints
    from tlkit_pose.evaluate import run as evaluate_run
    from tlkit_pose.export import run as export_run
    from tlkit_pose.oracle import oracle_results
    from tlkit_pose.synthetic import generate_dataset
    from tlkit_pose.train import train_model

    people = dict(people=(1, 1), person_height=(0.6, 0.9))
    train = generate_dataset(tmp_path / "train", n_images=TRAIN_IMAGES, seed=1, size=(SIZE, SIZE), **people)
    val = generate_dataset(tmp_path / "val", n_images=32, seed=2, size=(SIZE, SIZE), **people)
    test = generate_dataset(tmp_path / "test", n_images=64, seed=3, size=(SIZE, SIZE), **people)
    cfg = PoseConfig.model_validate({
        "dataloader": {"train_annotations": str(train), "val_annotations": str(val), "image_dims": [SIZE, SIZE, 3]},
        "pose_config": {"target_shape": [SIZE // 8, SIZE // 8]},
        "augmentation_config": {"spatial_augmentation_mode": "standard", "rotate_deg_max": 10, "translate_max_x": 8, "translate_max_y": 8},
        "model": {"arch": "resnet18", "backbone_blocks": 3, "stages": 2, "stage_channels": 64},
        "train_config": {"batch_size_per_gpu": 8, "n_epochs": EPOCHS, "validation_period": 4, "max_checkpoints_to_keep": 1,
                         "optimizer": {"type": "adam"}, "reg_config": {"type": "none"},
                         "lr_config": {"type": "cosine", "learning_rate": 2e-3, "warmup_epochs": 0.3}},
    })
    console = Console(highlight=False)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    res = train_model(cfg, tmp_path / "train_out", console, [mx.cpu()])
    train_s = time.perf_counter() - t

    best = res.best_model_path or res.model_path
    onnx = tmp_path / "bpnet.onnx"
    export_run(CommandContext(task="pose", command="export", model=best, output=onnx, console=console))
    kpi = {}
    for name, model in (("tlk", best), ("onnx", onnx), ("final_tlk", res.model_path)):
        out = evaluate_run(CommandContext(task="pose", command="evaluate", model=model, results_dir=tmp_path / f"eval_{name}",
                                          console=console, options={"annotations": test}))
        kpi[name] = out["kpi"]
    oracle = evaluate_keypoints(test, oracle_results(load_coco_keypoints(test)))["kpi"]
    result = {
        "task": "pose (BodyPoseNet) on synthetic people",
        "input": f"{SIZE}x{SIZE}",
        "train_images": TRAIN_IMAGES,
        "val_images": 32,
        "test_images": 64,
        "best_model": str(best.name),
        "epochs": EPOCHS,
        "model": cfg.model.model_dump(),
        "train_s": round(train_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {load0:.1f}",
        "history": res.history,
        "kpi_tlk": kpi["tlk"],
        "kpi_onnx": kpi["onnx"],
        "kpi_final_epoch_tlk": kpi["final_tlk"],
        "oracle_kpi": oracle,
        "target_ap": TARGET_AP,
    }
    atomic_write_text(OUT, json.dumps(result, indent=2))
    ap = kpi["tlk"]["AP_0.50:0.95_all"]
    assert abs(ap - kpi["onnx"]["AP_0.50:0.95_all"]) < 0.01
    assert ap >= TARGET_AP, f"AP {ap:.3f} < {TARGET_AP} after {EPOCHS} epochs ({train_s:.0f} s)"
