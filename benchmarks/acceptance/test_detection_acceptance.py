"""Acceptance: DetectNet_v2 on real microscope images (BCCD, Pascal VOC, 364 images, RBC / WBC / Platelets).

1. VOC -> RecordIO with `dataset_convert`, on the dataset's official split: ImageSets/Main/trainval.txt
   (292 images) to train on, ImageSets/Main/test.txt (72 images) to report on (validation_data_source).
   Nothing was tuned on the test images: the recipe and clustering settings were chosen on train.txt /
   val.txt (205 / 87 images of trainval).
2. Train DetectNet_v2 from the ImageNet EfficientNet-Lite0 (the backbone whose weights ship offline) at
   WxH px: target mAP@0.5 >= 0.65 (TLT AP, 11-point) on the test split within 30 minutes on 2 cores.
3. Prune (parameter ratio <= 0.25; the heads keep their size) and retrain the pruned graph (load_graph) for
   at most 8 epochs with tlkit's default retrain recipe (BN re-estimation, warm-up, lr_scale) and distillation
   from the unpruned model (coverage / bbox maps): target within 1 point of the unpruned mAP. The recipe and
   the allocation are the defaults chosen on classification's train/val splits: nothing is tuned on BCCD test.
4. Per-class AP, parameters, file size and batch-1 latency (MXNet and onnxruntime) of each, wall and CPU
   times and the machine's load average, as JSON in benchmarks/acceptance/detection.json.

Long (tens of minutes on 2 cores): run with `make acceptance` (not part of the test suite). Set
TLKIT_DET_EPOCHS / TLKIT_DET_RETRAIN_EPOCHS / TLKIT_DET_BATCH / TLKIT_DET_SIZE (e.g. 320x240) to change the recipe;
TLKIT_DET_UNPRUNED=model.tlk reuses an unpruned model trained with this recipe on this split.
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
W, H = (int(v) for v in os.environ.get("TLKIT_DET_SIZE", "448x336").split("x"))
EPOCHS = int(os.environ.get("TLKIT_DET_EPOCHS", "10"))
# at most 8 (the acceptance); the earlier run without BN re-estimation, warm-up or distillation needed 16
RETRAIN_EPOCHS = int(os.environ.get("TLKIT_DET_RETRAIN_EPOCHS", "8"))
ALLOCATION = os.environ.get("TLKIT_DET_ALLOCATION", "threshold")
# batch 4 (chosen on train/val): val mAP 0.636 after 8 epochs vs 0.49-0.54 with batch 8 (platelets 0.19 vs 0.01)
BATCH = int(os.environ.get("TLKIT_DET_BATCH", "4"))
BUDGET_S = 1800
TARGET_MAP = 0.65
PRUNE_TARGET = 0.25  # pruned / original parameters


def spec(train: Path, test: Path, *extra: str):
    from tlkit.config import load_spec
    from tlkit_detection.config import DetectionConfig

    return load_spec(None, DetectionConfig, [
        f"dataset_config.data_sources=[{{records_path: {train}}}]",
        f"dataset_config.validation_data_source={{records_path: {test}}}",
        "model_config.arch=efficientnet_lite0", "model_config.freeze_blocks=[0, 1, 2]",
        f"augmentation_config.preprocessing.output_image_width={W}",
        f"augmentation_config.preprocessing.output_image_height={H}",
        ("augmentation_config.spatial_augmentation={hflip_probability: 0.5, zoom_min: 0.9, zoom_max: 1.1, "
         "translate_max_x: 8, translate_max_y: 8}"),
        "augmentation_config.color_augmentation={hue_rotation_max: 10, saturation_shift_max: 0.1, contrast_scale_max: 0.1}",
        # TLT's 0.05 foreground weight left the coverage of small, crowded cells near 0 (RBC 0.04 vs 0.014 on
        # background after 8 epochs): balanced BCE learns it within the budget
        "cost_function_config.default={coverage_foreground_weight: 0.5}",
        # TLT's 1-cell minimum ellipse: smaller ones give sub-cell platelets too little coverage to cluster
        "bbox_rasterizer_config.default={bbox_min_radius: 1.0}",
        # NMS on raw coverage (chosen on train/val, never on test): platelets are ~20 px at the input
        ("postprocessing_config.default={clustering_algorithm: nms, minimum_bounding_box_height: 4, "
         "nms_iou_threshold: 0.3, nms_confidence_threshold: 0.05}"),
        "evaluation_config.default_overlap=0.5",
        "train_config.pretrained_model_path=imagenet",
        f"train_config.n_epochs={EPOCHS}", f"train_config.batch_size_per_gpu={BATCH}", "train_config.n_workers=2",
        # validate (on test) only after the last epoch: the number reported is the final model's
        "train_config.max_checkpoints_to_keep=1", f"train_config.validation_period={EPOCHS}",
        "train_config.optimizer.type=adam", "train_config.reg_config={type: L2, weight_decay: 1e-5}",
        ("train_config.lr_config={type: soft_start_annealing, learning_rate: 1e-3, min_learning_rate: 1e-5, "
         "soft_start: 0.1, annealing: 0.6}"),
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


def cpu_s() -> float:
    """CPU seconds of this process (all threads): the wall time on a shared machine includes other work."""
    return time.process_time()


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
def test_bccd_detectnet_v2(tmp_path):
    from rich.console import Console
    from tlkit.context import CommandContext
    from tlkit.pruning.command import prune_model_file
    from tlkit_detection.train import run as train_run

    console = Console(highlight=False, width=120)
    work = tmp_path
    manifests = bccd_records(work)  # the official split
    split = {k: json.loads(m.read_text())["frames_per_fold"][1] for k, m in manifests.items()}

    load_start = os.getloadavg()
    cfg = spec(manifests["trainval"], manifests["test"])
    reuse = os.environ.get("TLKIT_DET_UNPRUNED")
    t, c = time.time(), cpu_s()
    if reuse:
        out = {"model": reuse}
    else:
        out = train_run(CommandContext(task="detection", command="train", spec=cfg, results_dir=work / "train",
                                       gpus=0, console=console))
    train_s, train_cpu = time.time() - t, cpu_s() - c
    load_train = os.getloadavg()
    base = measure("unpruned", Path(out["model"]), cfg, work, train_s)
    base["train_cpu_s"] = round(train_cpu, 1)
    if reuse:
        base["reused"] = reuse

    pruned = work / "pruned.tlk"
    report = prune_model_file(out["model"], pruned, target_ratio=PRUNE_TARGET, min_filters=8, allocation=ALLOCATION)
    rcfg = spec(manifests["trainval"], manifests["test"], f"train_config.pretrained_model_path={pruned}",
                "train_config.load_graph=true", f"train_config.n_epochs={RETRAIN_EPOCHS}",
                f"train_config.validation_period={RETRAIN_EPOCHS}", "model_config.freeze_blocks=[]",
                f"train_config.distillation.teacher={out['model']}")
    t, c = time.time(), cpu_s()
    rout = train_run(CommandContext(task="detection", command="train", spec=rcfg, results_dir=work / "retrain",
                                    gpus=0, console=console))
    retrain_s, retrain_cpu = time.time() - t, cpu_s() - c
    after = measure("pruned_retrained", Path(rout["model"]), rcfg, work, retrain_s)
    after["train_cpu_s"] = round(retrain_cpu, 1)
    history = [json.loads(x) for x in (work / "retrain" / "status.json").read_text().splitlines()]
    csv_rows = (work / "retrain" / "training.csv").read_text().splitlines()
    after["training_csv"] = csv_rows  # epoch 0: mAP raw and after BN re-estimation; teacher_s per epoch
    after["teacher_s_total"] = sum(h.get("teacher_s", 0.0) for h in history if h.get("status") == "RUNNING")

    result = {
        "dataset": "BCCD (Pascal VOC, 364 images): official split, trained on trainval, reported on test",
        "split": split,
        "recipe": {"arch": "efficientnet_lite0 (ImageNet)", "input": [W, H], "epochs": EPOCHS,
                   "retrain_epochs": RETRAIN_EPOCHS,
                   "retrain": "the training schedule under tlkit's default retrain_config (BN re-estimation on 512 "
                              "images, 1 warm-up epoch, the spec's peak rate), distillation from the unpruned model, every layer trained",
                   "allocation": ALLOCATION,
                   "batch": BATCH, "clustering": "nms",
                   "coverage_foreground_weight": 0.5, "bbox_min_radius": 1.0},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS")},
                    "load_average_1_5_15": {"train_start": load_start, "train_end": load_train,
                                            "end": os.getloadavg()}},
        "note": "the machine is shared: wall times include other processes; train_cpu_s is this process's CPU time",
        "unpruned": base,
        "pruning": {"target_ratio": PRUNE_TARGET, "ratio": report.ratio, "flops_ratio": report.flops_ratio,
                    "params_before": report.params_before, "params_after": report.params_after},
        "pruned_retrained": after,
        "targets": {"mAP@0.5": TARGET_MAP, "budget_s": BUDGET_S, "param_ratio_le": PRUNE_TARGET, "max_drop_points": 1,
                    "retrain_epochs_le": 8},
    }
    OUT.write_text(json.dumps(result, indent=1))
    console.print(json.dumps(result, indent=1))
    assert base["mAP@0.5"] >= TARGET_MAP
    assert reuse or train_s <= BUDGET_S
    assert after["params"] <= PRUNE_TARGET * base["params"] and RETRAIN_EPOCHS <= 8
    assert after["mAP@0.5"] >= base["mAP@0.5"] - 0.01


# -- GluonCV SSD beside DetectNet_v2 (same data, same official split) --------------------------------------

SSD_OUT = Path(__file__).resolve().parent / "detection_ssd.json"
# 22 epochs: 1380 s at load ~2-3 (11 epochs, 699 s, was sized for the load ~7 of the diagnostics)
SSD_EPOCHS = int(os.environ.get("TLKIT_SSD_EPOCHS", "22"))
SSD_W, SSD_H = (int(v) for v in os.environ.get("TLKIT_SSD_SIZE", "320x240").split("x"))


def ssd_spec(train: Path, test: Path, *extra: str):
    """GluonCV SSD on tlkit's EfficientNet-Lite0: the only ImageNet weights on this machine (GluonCV's
    mobilenet1.0 / resnet50_v1 ImageNet files are absent, and tlkit never lets GluonCV download)."""
    from tlkit.config import load_spec
    from tlkit_detection.config import DetectionConfig

    return load_spec(None, DetectionConfig, [
        f"dataset_config.data_sources=[{{records_path: {train}}}]",
        f"dataset_config.validation_data_source={{records_path: {test}}}",
        "model_config.detector=ssd", "model_config.arch=efficientnet_lite0", "model_config.freeze_blocks=[0, 1, 2]",
        f"augmentation_config.preprocessing.output_image_width={SSD_W}",
        f"augmentation_config.preprocessing.output_image_height={SSD_H}",
        "evaluation_config.default_overlap=0.5",
        "train_config.pretrained_model_path=imagenet",
        # batch 4: twice the steps of 8 in the same time, which SSD needs most in a short budget (on
        # train/val: 4 epochs gave val mAP 0.27 at batch 4, 0.15 at batch 8)
        f"train_config.n_epochs={SSD_EPOCHS}", "train_config.batch_size_per_gpu=4",
        # validate (on test) only after the last epoch: the number reported is the final model's
        "train_config.max_checkpoints_to_keep=1", f"train_config.validation_period={SSD_EPOCHS}",
        "train_config.optimizer.type=adam", "train_config.reg_config={type: L2, weight_decay: 5e-5}",
        ("train_config.lr_config={type: soft_start_annealing, learning_rate: 1e-3, min_learning_rate: 1e-5, "
         "soft_start: 0.1, annealing: 0.6}"),
        *extra,
    ])


def bccd_records(work: Path, image_sets=("trainval", "test")) -> dict[str, Path]:
    """VOC image sets -> RecordIO manifests (one fold holding every frame of the set)."""
    import yaml
    from tlkit.context import CommandContext
    from tlkit_detection.dataset_convert import run as convert_run

    manifests = {}
    for image_set in image_sets:
        export_spec = work / f"export_{image_set}.yaml"
        export_spec.write_text(yaml.safe_dump({"voc_config": {
            "root_directory_path": str(DATA), "image_set": image_set, "val_split": 0, "num_shards": 1}}))
        prefix = work / "records" / image_set
        convert_run(CommandContext(task="detection", command="dataset_convert", output=prefix,
                                   options={"dataset_export_spec": export_spec, "output_format": "recordio"}))
        manifests[image_set] = Path(f"{prefix}.json")
    return manifests


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
def test_bccd_gluoncv_ssd(tmp_path):
    from rich.console import Console
    from tlkit.context import CommandContext
    from tlkit_detection.train import run as train_run

    global W, H
    console = Console(highlight=False, width=120)
    manifests = bccd_records(tmp_path)
    cfg = ssd_spec(manifests["trainval"], manifests["test"])
    load_start = os.getloadavg()
    t, c = time.time(), time.process_time()
    out = train_run(CommandContext(task="detection", command="train", spec=cfg, results_dir=tmp_path / "train",
                                   gpus=0, console=console))
    train_s, train_cpu = time.time() - t, time.process_time() - c
    load_end = os.getloadavg()
    W, H = SSD_W, SSD_H  # measure()'s latency input
    res = measure("ssd", Path(out["model"]), cfg, tmp_path, train_s)
    res["train_cpu_s"] = round(train_cpu, 1)
    result = {
        "dataset": "BCCD (Pascal VOC, 364 images): trained on ImageSets/Main/trainval.txt (292), reported on "
                   "test.txt (72), the DetectNet_v2 split; recipe chosen on train.txt / val.txt, never on test",
        "recipe": {"detector": "GluonCV SSD (gluoncv.model_zoo.ssd.SSD, SSDDefaultTrainTransform, SSDMultiBoxLoss)",
                   "backbone": "efficientnet_lite0 (tlkit; ImageNet weights shipped offline; GluonCV's mobilenet1.0 / "
                               "resnet50_v1 ImageNet files are absent and never downloaded), freeze_blocks [0, 1, 2]",
                   "input": [SSD_W, SSD_H], "epochs": SSD_EPOCHS, "batch": 4,
                   "augmentation": "colour distortion, SSD constrained random crop, flip 0.5 (no random expand)",
                   "optimizer": "adam 1e-3, soft start 0.1, annealing 0.6, L2 5e-5",
                   "post": "per-class NMS IoU 0.45, confidence 0.01, top 400 per class, 100 per image"},
        "conditions": {"threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS")},
                       "loadavg_start": load_start, "loadavg_end": load_end,
                       "note": "2 shared cores; other engineers' training runs at the same time"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "ssd": res,
        "targets": {"budget_s": BUDGET_S},
    }
    SSD_OUT.write_text(json.dumps(result, indent=1))
    console.print(json.dumps(result, indent=1))
    assert train_s <= BUDGET_S
    assert res["mAP@0.5_onnx"] == pytest.approx(res["mAP@0.5"], abs=1e-6)
