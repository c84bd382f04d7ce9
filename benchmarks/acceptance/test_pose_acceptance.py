"""Acceptance: BodyPoseNet on synthetic people reaches COCO keypoint AP >= 0.5 with a short CPU training run.

Recipe (from scratch, no pretrained weights): generated stick-figure people (tlkit_pose.synthetic), one person
per IMG x IMG image (height 0.6-0.9 of the image), TRAIN_IMAGES training images (seed 1), 32 validation images
(seed 2: validation during training picks weights/model_best.tlk by AP) and 64 held-out test images (seed 3:
the reported AP). The network input is INPUT x INPUT (128): the images are fitted into it (x4/3), so the
stride-8 output grid is 6 image pixels instead of 8 - what the keypoint precision needs (at 96 px input the
same recipe stalls at AP 0.46-0.49 with AP50 1.0: people found, keypoints ~2 px off, the OKS tolerance of these
small people is ~1-2 px). A ResNet-18 backbone truncated at stride 8 (layer2, 128 channels), 2 stages of 64
channels; Adam, cosine LR 2e-3, batch 8, EPOCHS epochs, flips/rotation/translation on. The best model is
evaluated on the test set through the `evaluate -m` command, as .tlk (MXNet) and as exported ONNX
(onnxruntime), the final-epoch model too, and multi-scale ([1.0, 1.5]) as extra information; the oracle (ground
truth at the model's stride and input scale, decoded by the same post-processing) is reported as the ceiling.

The recipe is examples/pose/synthetic_people.yaml. Results: benchmarks/acceptance/pose.json. Long (about 20
minutes on 2 shared cores): `make acceptance`.
TLKIT_POSE_ACCEPT_EPOCHS / TLKIT_POSE_ACCEPT_IMAGES / TLKIT_POSE_ACCEPT_INPUT change the recipe.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import pytest

OUT = Path(__file__).resolve().parent / "pose.json"
# the recipe: an example users can copy, read here with only the data paths (and what TLKIT_POSE_* change) overridden
RECIPE = Path(__file__).resolve().parents[2] / "examples" / "pose" / "synthetic_people.yaml"
IMG = 96  # synthetic image size (the test set is the same as with earlier 96 px input runs)
INPUT = int(os.environ.get("TLKIT_POSE_ACCEPT_INPUT", "0")) or None  # network input; None: the recipe's
EPOCHS = int(os.environ.get("TLKIT_POSE_ACCEPT_EPOCHS", "0")) or None
TRAIN_IMAGES = int(os.environ.get("TLKIT_POSE_ACCEPT_IMAGES", "1024"))
TARGET_AP = 0.5


def recipe(tmp_path: Path):
    """(train, val, test annotation files, PoseConfig): the recipe file on generated people (seeds 1 / 2 / 3)."""
    from tlkit.config import load_spec
    from tlkit_pose.config import PoseConfig
    from tlkit_pose.synthetic import generate_dataset

    people = dict(people=(1, 1), person_height=(0.6, 0.9))
    train = generate_dataset(tmp_path / "train", n_images=TRAIN_IMAGES, seed=1, size=(IMG, IMG), **people)
    val = generate_dataset(tmp_path / "val", n_images=32, seed=2, size=(IMG, IMG), **people)
    test = generate_dataset(tmp_path / "test", n_images=64, seed=3, size=(IMG, IMG), **people)
    env = [f"train_config.n_epochs={EPOCHS}"] if EPOCHS else []
    if INPUT:
        shift = 8 * INPUT / 96  # +-8 px at 96 px input
        env += [
            f"dataloader.image_dims=[{INPUT}, {INPUT}, 3]",
            f"pose_config.target_shape=[{INPUT // 8}, {INPUT // 8}]",
            f"augmentation_config.translate_max_x={shift}",
            f"augmentation_config.translate_max_y={shift}",
        ]
    cfg = load_spec(
        RECIPE, PoseConfig, [f"dataloader.train_annotations={train}", f"dataloader.val_annotations={val}", *env]
    )
    return train, val, test, cfg


@pytest.mark.slow
def test_synthetic_pose_reaches_ap(tmp_path):
    import mxnet as mx
    from rich.console import Console

    from tlkit.context import CommandContext
    from tlkit.io import atomic_write_text
    from tlkit_pose.coco import load_coco_keypoints
    from tlkit_pose.config import InferenceConfig, PoseConfig
    from tlkit_pose.evaluate import evaluate_keypoints
    from tlkit_pose.evaluate import run as evaluate_run
    from tlkit_pose.export import run as export_run
    from tlkit_pose.oracle import oracle_results
    from tlkit_pose.train import train_model

    train, val, test, cfg = recipe(tmp_path)
    input_size = cfg.dataloader.image_dims[0]
    console = Console(highlight=False)
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    res = train_model(cfg, tmp_path / "train_out", console, [mx.cpu()])
    train_s = time.perf_counter() - t
    load1 = os.getloadavg()[0]

    best = res.best_model_path or res.model_path
    onnx = tmp_path / "bpnet.onnx"
    export_run(CommandContext(task="pose", command="export", model=best, output=onnx, console=console))
    kpi = {}
    runs = (
        ("tlk", best, None),
        ("onnx", onnx, None),
        ("final_tlk", res.model_path, None),
        ("tlk_multiscale", best, [1.0, 1.5]),
    )
    for name, model, scales in runs:
        spec = PoseConfig.model_validate({"inference": {"scales": scales}}) if scales else None
        out = evaluate_run(
            CommandContext(
                task="pose",
                command="evaluate",
                model=model,
                spec=spec,
                results_dir=tmp_path / f"eval_{name}",
                console=console,
                options={"annotations": test},
            )
        )
        kpi[name] = out.kpi
    # the ceiling: ground truth rendered at stride 8 in the model's input (the image fitted x INPUT/IMG)
    oracle_params = InferenceConfig(scales=[input_size / IMG])
    oracle = evaluate_keypoints(test, oracle_results(load_coco_keypoints(test), params=oracle_params))["kpi"]
    result = {
        "task": "pose (BodyPoseNet) on synthetic people",
        "recipe_file": str(RECIPE.relative_to(RECIPE.parents[2])),
        "input": f"{input_size}x{input_size}",
        "images": f"{IMG}x{IMG}, one person each, height 0.6-0.9 of the image (synthetic_coco seeds 1/2/3)",
        "train_images": TRAIN_IMAGES,
        "val_images": 32,
        "test_images": 64,
        "best_model": str(best.name),
        "epochs": cfg.train_config.n_epochs,
        "model": cfg.model.model_dump(),
        "recipe": {
            k: cfg.model_dump(mode="json")[k] for k in ("augmentation_config", "label_processor_config", "train_config")
        },
        "train_s": round(train_s, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average at start {load0:.1f}, at the end of training {load1:.1f}",
        "history": res.history,
        "kpi_tlk": kpi["tlk"],
        "kpi_onnx": kpi["onnx"],
        "kpi_final_epoch_tlk": kpi["final_tlk"],
        "kpi_tlk_multiscale_1.0_1.5": kpi["tlk_multiscale"],
        "oracle_kpi": oracle,
        "target_ap": TARGET_AP,
    }
    atomic_write_text(OUT, json.dumps(result, indent=2))
    ap = kpi["tlk"]["AP_0.50:0.95_all"]
    assert abs(ap - kpi["onnx"]["AP_0.50:0.95_all"]) < 0.01
    assert ap >= TARGET_AP, f"AP {ap:.3f} < {TARGET_AP} after {cfg.train_config.n_epochs} epochs ({train_s:.0f} s)"


PRUNED_OUT = Path(__file__).resolve().parent / "pose_pruning.json"
PRUNE_TARGET = 0.3
# the issue sets no epoch limit for pose: the retrain gets the training's own budget (the recipe's n_epochs). At 8
# epochs (seed recipe, threshold allocation, ratio 0.29) the pruned model reached val AP 0.41 and test 0.31 against
# the unpruned 0.64: keypoint precision comes late in training (the unpruned model was at val 0.49 after 8 epochs)
RETRAIN_EPOCHS = int(os.environ.get("TLKIT_POSE_RETRAIN_EPOCHS", "0")) or None
# chosen on val (seed 2), 24 retrain epochs: uniform val AP 0.685 (ratio 0.265), global 0.657 (ratio 0.298, FLOPs
# 0.206: it cuts the stride-4 backbone to 8 channels), TLT's threshold 0.50 (it cut the refinement stages'
# 64-channel convolutions to 8-24 channels)
ALLOCATION = os.environ.get("TLKIT_POSE_ALLOCATION", "uniform")


@pytest.mark.slow
def test_synthetic_pose_pruned_keeps_ap(tmp_path):
    """Prune the trained BodyPoseNet to a parameter ratio <= 0.3 and retrain it (the recipe's epochs) with the
    default retrain recipe and distillation (heatmaps and PAFs) from the unpruned model: test AP within 0.02.
    TLKIT_POSE_UNPRUNED=model.tlk reuses a model trained with the recipe above (else it is trained here)."""
    import mxnet as mx
    from rich.console import Console

    from tlkit.context import CommandContext
    from tlkit.io import atomic_write_text
    from tlkit.pruning.command import prune_model_file
    from tlkit_pose.evaluate import run as evaluate_run
    from tlkit_pose.train import train_model

    train, val, test, cfg = recipe(tmp_path)
    console = Console(highlight=False)
    reuse = os.environ.get("TLKIT_POSE_UNPRUNED")
    if reuse:
        base = Path(reuse)
    else:
        res = train_model(cfg, tmp_path / "train_out", console, [mx.cpu()])
        base = res.best_model_path or res.model_path

    def test_ap(model: Path, name: str) -> dict:
        out = evaluate_run(
            CommandContext(
                task="pose",
                command="evaluate",
                model=model,
                results_dir=tmp_path / f"eval_{name}",
                console=console,
                options={"annotations": test},
            )
        )
        return out.kpi

    pruned = tmp_path / "pruned.tlk"
    report = prune_model_file(base, pruned, target_ratio=PRUNE_TARGET, min_filters=8, allocation=ALLOCATION)
    retrain_epochs = RETRAIN_EPOCHS or cfg.train_config.n_epochs
    tc = {
        **cfg.train_config.model_dump(),
        "pretrained_model_path": str(pruned),
        "load_graph": True,
        "n_epochs": retrain_epochs,
        "distillation": {"teacher": str(base), "weight": 0.5, "temperature": 2.0},
    }
    rcfg = cfg.model_copy(update={"train_config": type(cfg.train_config).model_validate(tc)})
    t = time.perf_counter()
    rres = train_model(rcfg, tmp_path / "retrain", console, [mx.cpu()])
    retrain_s = time.perf_counter() - t
    kpi = {
        "unpruned": test_ap(base, "unpruned"),
        "pruned_raw": test_ap(pruned, "raw"),
        "pruned_retrained": test_ap(Path(rres.model_path), "retrained"),
    }
    ap = {k: v["AP_0.50:0.95_all"] for k, v in kpi.items()}
    result = {
        "task": "pose (BodyPoseNet) on synthetic people: the acceptance recipe's model, pruned and retrained",
        "unpruned_model": "reused: " + reuse if reuse else "trained here",
        "pruning": {
            "target_ratio": PRUNE_TARGET,
            "allocation": ALLOCATION,
            "ratio": report.ratio,
            "flops_ratio": report.flops_ratio,
            "params_before": report.params_before,
            "params_after": report.params_after,
        },
        "retrain_epochs": retrain_epochs,
        "retrain": "default retrain_config (BN re-estimation, 1 warm-up epoch, the spec's peak rate) + distillation weight 0.5",
        "retrain_s": round(retrain_s, 1),
        "val_history": [
            {k: r[k] for k in ("epoch", "stage", "AP", "loss", "teacher_s") if k in r} for r in rres.history
        ],
        "test_AP": ap,
        "test_kpi": kpi,
        "ap_drop": ap["unpruned"] - ap["pruned_retrained"],
        "targets": {"param_ratio_le": PRUNE_TARGET, "max_ap_drop": 0.02},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
    }
    atomic_write_text(PRUNED_OUT, json.dumps(result, indent=2))
    assert ap["unpruned"] >= TARGET_AP, ap  # a trained model was pruned (an untrained one "keeps" AP 0)
    assert report.ratio <= PRUNE_TARGET
    assert result["ap_drop"] <= 0.02, ap
