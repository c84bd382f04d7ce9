"""Acceptance: DetectNet_v2 on real microscope images (BCCD, Pascal VOC, 364 images, RBC / WBC / Platelets).

1. VOC -> RecordIO folds with `dataset_convert` (fold 0 = 20 % validation, seed 42).
2. Train DetectNet_v2 from the ImageNet EfficientNet-Lite0 (the backbone whose weights ship offline) at
   WxH px: target mAP@0.5 >= 0.65 (TLT AP, 11-point) on the validation fold within 30 minutes on 2 cores.
3. Prune (target >= 4x fewer parameters; the heads keep their size) and retrain the pruned graph
   (load_graph): target within 2 points of the unpruned mAP.
4. Per-class AP, parameters, file size and batch-1 latency (MXNet and onnxruntime) of each, as JSON in
   benchmarks/acceptance/detection.json.

Long (tens of minutes on 2 cores): run with `make acceptance` (not part of the test suite). Set
TLKIT_DET_EPOCHS / TLKIT_DET_RETRAIN_EPOCHS / TLKIT_DET_SIZE (e.g. 320x240) to change the recipe.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "bccd-voc"
OUT = Path(__file__).resolve().parent / "detection.json"
W, H = (int(v) for v in os.environ.get("TLKIT_DET_SIZE", "320x240").split("x"))
EPOCHS = int(os.environ.get("TLKIT_DET_EPOCHS", "20"))
RETRAIN_EPOCHS = int(os.environ.get("TLKIT_DET_RETRAIN_EPOCHS", "6"))
BUDGET_S = 1800
TARGET_MAP = 0.65
PRUNE_TARGET = 0.25  # pruned / original parameters


def spec(manifest: Path, *extra: str):
    from tlkit.config import load_spec
    from tlkit_detection.config import DetectionConfig

    return load_spec(None, DetectionConfig, [
        f"dataset_config.data_sources=[{{records_path: {manifest}}}]", "dataset_config.validation_fold=0",
        "model_config.arch=efficientnet_lite0", "model_config.freeze_blocks=[0, 1, 2]",
        f"augmentation_config.preprocessing.output_image_width={W}",
        f"augmentation_config.preprocessing.output_image_height={H}",
        "augmentation_config.spatial_augmentation={hflip_probability: 0.5, zoom_min: 0.9, zoom_max: 1.1, "
        "translate_max_x: 8, translate_max_y: 8}",
        "augmentation_config.color_augmentation={hue_rotation_max: 10, saturation_shift_max: 0.1, contrast_scale_max: 0.1}",
        # BCCD boxes at 320x240: platelets ~10-20 px
        "postprocessing_config.default={minimum_bounding_box_height: 4, coverage_threshold: 0.005, "
        "dbscan_confidence_threshold: 0.1, dbscan_eps: 0.3}",
        "evaluation_config.default_overlap=0.5",
        "bbox_rasterizer_config.default={bbox_min_radius: 0.5}",
        "train_config.pretrained_model_path=imagenet",
        f"train_config.n_epochs={EPOCHS}", "train_config.batch_size_per_gpu=8", "train_config.n_workers=2",
        "train_config.max_checkpoints_to_keep=1", "train_config.validation_period=5",
        "train_config.optimizer.type=adam", "train_config.reg_config={type: L2, weight_decay: 1e-5}",
        "train_config.lr_config={type: soft_start_annealing, learning_rate: 1e-3, min_learning_rate: 1e-5, "
        "soft_start: 0.1, annealing: 0.6}",
        *extra,
    ])


def latency_ms(detector, iters: int = 20) -> float:
    x = np.random.default_rng(0).normal(0, 1, (1, 3, H, W)).astype(np.float32)
    for _ in range(3):
        detector.heads(x)
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        detector.heads(x)
        ts.append((time.perf_counter() - t) * 1000)
    return float(np.median(ts))


def measure(name: str, model: Path, cfg, work: Path, train_s: float) -> dict:
    from tlkit.context import CommandContext
    from tlkit.export.command import run as export_run
    from tlkit.model_io import load_net
    from tlkit_detection.evaluate import run as eval_run
    from tlkit_detection.model import count_params
    from tlkit_detection.predict import load_detector

    onnx = work / f"{name}.onnx"
    export_run(CommandContext(task="detection", command="export", model=model, output=onnx))
    res = eval_run(CommandContext(task="detection", command="evaluate", spec=cfg, model=model,
                                  results_dir=work / f"eval_{name}", options={}))
    res_onnx = eval_run(CommandContext(task="detection", command="evaluate", spec=cfg, model=onnx, options={}))
    net, _ = load_net(model)
    return {
        "model": str(model),
        "mAP@0.5": res["mean_average_precision"] / 100,
        "AP@0.5": {k: v / 100 for k, v in res["average_precision"].items()},
        "mAP@0.5_onnx": res_onnx["mean_average_precision"] / 100,
        "params": count_params(net),
        "file_mb": round(model.stat().st_size / 2**20, 2),
        "onnx_mb": round(onnx.stat().st_size / 2**20, 2),
        "latency_ms_mxnet_b1": latency_ms(load_detector(model)),
        "latency_ms_onnxruntime_b1": latency_ms(load_detector(onnx)),
        "train_wall_s": round(train_s, 1),
    }


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
def test_bccd_detectnet_v2(tmp_path):
    import yaml
    from rich.console import Console

    from tlkit.context import CommandContext
    from tlkit.pruning.command import prune_model_file
    from tlkit_detection.dataset_convert import run as convert_run
    from tlkit_detection.train import run as train_run

    console = Console(highlight=False)
    work = tmp_path
    export_spec = work / "export.yaml"
    export_spec.write_text(yaml.safe_dump({"voc_config": {"root_directory_path": str(DATA), "val_split": 20,
                                                          "num_shards": 2, "seed": 42}}))
    prefix = work / "records" / "bccd"
    convert_run(CommandContext(task="detection", command="dataset_convert", output=prefix,
                               options={"dataset_export_spec": export_spec, "output_format": "recordio"}))
    manifest = Path(f"{prefix}.json")

    cfg = spec(manifest)
    t = time.time()
    out = train_run(CommandContext(task="detection", command="train", spec=cfg, results_dir=work / "train",
                                   gpus=0, console=console))
    train_s = time.time() - t
    base = measure("unpruned", Path(out["model"]), cfg, work, train_s)

    pruned = work / "pruned.tlk"
    report = prune_model_file(out["model"], pruned, target_ratio=PRUNE_TARGET, min_filters=8)
    rcfg = spec(manifest, f"train_config.pretrained_model_path={pruned}", "train_config.load_graph=true",
                f"train_config.n_epochs={RETRAIN_EPOCHS}", "model_config.freeze_blocks=[]",
                "train_config.lr_config={type: soft_start_annealing, learning_rate: 5e-4, min_learning_rate: 5e-6, "
                "soft_start: 0.1, annealing: 0.5}")
    t = time.time()
    rout = train_run(CommandContext(task="detection", command="train", spec=rcfg, results_dir=work / "retrain",
                                    gpus=0, console=console))
    retrain_s = time.time() - t
    after = measure("pruned_retrained", Path(rout["model"]), rcfg, work, retrain_s)

    result = {
        "dataset": "BCCD (Pascal VOC, 364 images; fold 0 = 20 % validation)",
        "recipe": {"arch": "efficientnet_lite0 (ImageNet)", "input": [W, H], "epochs": EPOCHS,
                   "retrain_epochs": RETRAIN_EPOCHS, "batch": 8},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "unpruned": base,
        "pruning": {"target_ratio": PRUNE_TARGET, "ratio": report.ratio,
                    "params_before": report.params_before, "params_after": report.params_after},
        "pruned_retrained": after,
        "targets": {"mAP@0.5": TARGET_MAP, "budget_s": BUDGET_S, "pruned_smaller_x": 4, "max_drop_points": 2},
    }
    OUT.write_text(json.dumps(result, indent=1))
    console.print(json.dumps(result, indent=1))
    assert base["mAP@0.5"] >= TARGET_MAP
    assert train_s <= BUDGET_S
    assert after["params"] * 4 <= base["params"]
    assert after["mAP@0.5"] >= base["mAP@0.5"] - 0.02
