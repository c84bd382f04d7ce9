"""Acceptance: DetectNet_v2 on real microscope images (BCCD, Pascal VOC, 364 images, RBC / WBC / Platelets).

1. VOC -> RecordIO with `dataset_convert`, on the dataset's official split: ImageSets/Main/trainval.txt
   (292 images) to train on, ImageSets/Main/test.txt (72 images) to report on (validation_data_source).
   Nothing was tuned on the test images: the recipe and clustering settings were chosen on train.txt /
   val.txt (205 / 87 images of trainval).
2. Train DetectNet_v2 from the ImageNet EfficientNet-Lite0 (the backbone whose weights ship offline) at
   WxH px: target mAP@0.5 >= 0.65 (TLT AP, 11-point) on the test split within 30 minutes on 2 cores.
3. Prune (parameter ratio <= 0.25; the heads keep their size) and retrain the pruned graph (load_graph) for
   at most 8 epochs with tlkit's default retrain recipe (BN re-estimation, warm-up) and distillation from the
   unpruned model (coverage / bbox maps): target within 1 point of the unpruned mAP. The retrain defaults were
   chosen on classification's train/val splits: nothing is tuned on BCCD test.
4. Per-class AP, parameters, file size and batch-1 latency (MXNet and onnxruntime) of each, wall and CPU
   times and the machine's load average, as JSON in benchmarks/acceptance/detection.json.

The recipes: examples/detection/bccd_detectnet_v2.yaml, bccd_detectnet_v2_retrain.yaml and bccd_ssd.yaml.
Long (tens of minutes on 2 cores): run with `make acceptance` (not part of the test suite). Set
TLKIT_DET_EPOCHS / TLKIT_DET_RETRAIN_EPOCHS / TLKIT_DET_BATCH / TLKIT_DET_SIZE (e.g. 320x240) and
TLKIT_SSD_EPOCHS / TLKIT_SSD_SIZE to change the recipes; TLKIT_DET_UNPRUNED=model.tlk reuses an unpruned model
trained with the recipe on this split (TLKIT_DET_ALLOCATION: the pruning allocation, default uniform).
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
# the recipes (with why each value was chosen): examples users can copy, read here with only the data paths
# (and what TLKIT_DET_* change) overridden
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "detection"
RECIPE, RETRAIN_RECIPE = EXAMPLES / "bccd_detectnet_v2.yaml", EXAMPLES / "bccd_detectnet_v2_retrain.yaml"
SSD_RECIPE, EXPORT_SPEC = EXAMPLES / "bccd_ssd.yaml", EXAMPLES / "bccd_voc_export.yaml"
BUDGET_S = 1800
TARGET_MAP = 0.65
PRUNE_TARGET = 0.25  # pruned / original parameters
# chosen on train.txt / val.txt (never test), pruned to 0.25 and retrained 3 epochs with the retrain recipe: val
# mAP 0.634 uniform, 0.552 threshold, 0.543 global (after BN re-estimation, before training: 0.057 / 0.004 / 0.006)
ALLOCATION = os.environ.get("TLKIT_DET_ALLOCATION", "uniform")


def recipe(path: Path, train: Path, test: Path, *extra: str):
    """The recipe file on these RecordIO sets, with what the TLKIT_DET_* / TLKIT_SSD_* variables change."""
    from tlkit.config import load_spec
    from tlkit_detection.config import DetectionConfig

    ssd = path == SSD_RECIPE
    env = []
    size = os.environ.get("TLKIT_SSD_SIZE" if ssd else "TLKIT_DET_SIZE")
    if size:
        w, h = size.split("x")
        env += [
            f"augmentation_config.preprocessing.output_image_width={w}",
            f"augmentation_config.preprocessing.output_image_height={h}",
        ]
    epochs_var = (
        "TLKIT_SSD_EPOCHS" if ssd else "TLKIT_DET_RETRAIN_EPOCHS" if path == RETRAIN_RECIPE else "TLKIT_DET_EPOCHS"
    )
    epochs = os.environ.get(epochs_var)
    if epochs:  # validate (on test) only after the last epoch: the number reported is the final model's
        env += [f"train_config.n_epochs={epochs}", f"train_config.validation_period={epochs}"]
    if os.environ.get("TLKIT_DET_BATCH") and not ssd:
        env.append(f"train_config.batch_size_per_gpu={os.environ['TLKIT_DET_BATCH']}")
    return load_spec(
        path,
        DetectionConfig,
        [
            f"dataset_config.data_sources=[{{records_path: {train}}}]",
            f"dataset_config.validation_data_source={{records_path: {test}}}",
            *env,
            *extra,
        ],
    )


def input_size(cfg) -> tuple[int, int]:
    pre = cfg.augmentation_config.preprocessing
    return pre.output_image_width, pre.output_image_height


def latency_ms(detector, size: tuple[int, int], iters: int = 20) -> float:
    w, h = size
    x = np.random.default_rng(0).normal(0, 1, (1, 3, h, w)).astype(np.float32)
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
    res = eval_run(
        CommandContext(
            task="detection", command="evaluate", spec=cfg, model=model, results_dir=work / f"eval_{name}", options={}
        )
    )
    res_onnx = eval_run(CommandContext(task="detection", command="evaluate", spec=cfg, model=onnx, options={}))
    net, _ = load_net(model)
    return {
        "model": str(model),
        "mAP@0.5": res.kpi["mean average precision"] / 100,
        "AP@0.5": {k: v / 100 for k, v in res.metrics["average_precision"].items()},
        "mAP@0.5_onnx": res_onnx.kpi["mean average precision"] / 100,
        "params": count_params(net),
        "file_mb": round(model.stat().st_size / 2**20, 2),
        "onnx_mb": round(onnx.stat().st_size / 2**20, 2),
        "latency_ms_mxnet_b1": latency_ms(load_detector(model), input_size(cfg)),
        "latency_ms_onnxruntime_b1": latency_ms(load_detector(onnx), input_size(cfg)),
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
    cfg = recipe(RECIPE, manifests["trainval"], manifests["test"])
    reuse = os.environ.get("TLKIT_DET_UNPRUNED")
    t, c = time.time(), cpu_s()
    if reuse:
        out = {"model": reuse}
    else:
        out = train_run(
            CommandContext(
                task="detection", command="train", spec=cfg, results_dir=work / "train", gpus=0, console=console
            )
        )
    train_s, train_cpu = time.time() - t, cpu_s() - c
    load_train = os.getloadavg()
    base = measure("unpruned", Path(out["model"]), cfg, work, train_s)
    base["train_cpu_s"] = round(train_cpu, 1)
    if reuse:
        info = Path(reuse).with_name("info.json")  # written beside a shared model: how long it trained
        base["reused"] = {"model": reuse, **(json.loads(info.read_text()) if info.is_file() else {})}

    pruned = work / "pruned.tlk"
    report = prune_model_file(out["model"], pruned, target_ratio=PRUNE_TARGET, min_filters=8, allocation=ALLOCATION)
    rcfg = recipe(
        RETRAIN_RECIPE,
        manifests["trainval"],
        manifests["test"],
        f"train_config.pretrained_model_path={pruned}",
        f"train_config.distillation.teacher={out['model']}",
    )
    t, c = time.time(), cpu_s()
    rout = train_run(
        CommandContext(
            task="detection", command="train", spec=rcfg, results_dir=work / "retrain", gpus=0, console=console
        )
    )
    retrain_s, retrain_cpu = time.time() - t, cpu_s() - c
    after = measure("pruned_retrained", Path(rout["model"]), rcfg, work, retrain_s)
    after["train_cpu_s"] = round(retrain_cpu, 1)
    # epoch 0: mAP raw and after the BN re-estimation (validation on test before training); teacher_s per epoch
    after["training_csv"] = (work / "retrain" / "training.csv").read_text().splitlines()

    result = {
        "dataset": "BCCD (Pascal VOC, 364 images): official split, trained on trainval, reported on test",
        "split": split,
        "recipe": {
            "file": str(RECIPE.relative_to(EXAMPLES.parents[1])),
            "retrain_file": str(RETRAIN_RECIPE.relative_to(EXAMPLES.parents[1])),
            "arch": "efficientnet_lite0 (ImageNet)",
            "input": list(input_size(cfg)),
            "epochs": cfg.train_config.n_epochs,
            "retrain_epochs": rcfg.train_config.n_epochs,
            "retrain": "the training schedule under tlkit's default retrain_config (BN re-estimation on 512 "
            "images, a 1-epoch warm-up), distillation from the unpruned model, every layer trained",
            "allocation": ALLOCATION,
            "batch": cfg.train_config.batch_size_per_gpu,
            "clustering": cfg.postprocessing_config.default.clustering_algorithm,
            "coverage_foreground_weight": cfg.cost_function_config.default.coverage_foreground_weight,
            "bbox_min_radius": cfg.bbox_rasterizer_config.default.bbox_min_radius,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS")},
            "load_average_1_5_15": {"train_start": load_start, "train_end": load_train, "end": os.getloadavg()},
        },
        "note": "the machine is shared: wall times include other processes; train_cpu_s is this process's CPU time",
        "unpruned": base,
        "pruning": {
            "target_ratio": PRUNE_TARGET,
            "ratio": report.ratio,
            "flops_ratio": report.flops_ratio,
            "params_before": report.params_before,
            "params_after": report.params_after,
        },
        "pruned_retrained": after,
        "targets": {
            "mAP@0.5": TARGET_MAP,
            "budget_s": BUDGET_S,
            "param_ratio_le": PRUNE_TARGET,
            "max_drop_points": 1,
            "retrain_epochs_le": 8,
        },
    }
    OUT.write_text(json.dumps(result, indent=1))
    console.print(json.dumps(result, indent=1))
    assert base["mAP@0.5"] >= TARGET_MAP
    assert reuse or train_s <= BUDGET_S
    assert after["params"] <= PRUNE_TARGET * base["params"] and rcfg.train_config.n_epochs <= 8
    assert after["mAP@0.5"] >= base["mAP@0.5"] - 0.01


# -- GluonCV SSD beside DetectNet_v2 (same data, same official split) --------------------------------------

SSD_OUT = Path(__file__).resolve().parent / "detection_ssd.json"


def bccd_records(work: Path, image_sets=("trainval", "test")) -> dict[str, Path]:
    """VOC image sets -> RecordIO manifests (one fold holding every frame of the set), with bccd_voc_export.yaml."""
    from tlkit.context import CommandContext
    from tlkit_detection.dataset_convert import run as convert_run

    manifests = {}
    for image_set in image_sets:
        prefix = work / "records" / image_set
        convert_run(
            CommandContext(
                task="detection",
                command="dataset_convert",
                output=prefix,
                overrides=[f"voc_config.root_directory_path={DATA}", f"voc_config.image_set={image_set}"],
                options={"dataset_export_spec": EXPORT_SPEC, "output_format": "recordio"},
            )
        )
        manifests[image_set] = Path(f"{prefix}.json")
    return manifests


@pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} is absent")
def test_bccd_gluoncv_ssd(tmp_path):
    from rich.console import Console

    from tlkit.context import CommandContext
    from tlkit_detection.train import run as train_run

    console = Console(highlight=False, width=120)
    manifests = bccd_records(tmp_path)
    cfg = recipe(SSD_RECIPE, manifests["trainval"], manifests["test"])
    load_start = os.getloadavg()
    t, c = time.time(), time.process_time()
    out = train_run(
        CommandContext(
            task="detection", command="train", spec=cfg, results_dir=tmp_path / "train", gpus=0, console=console
        )
    )
    train_s, train_cpu = time.time() - t, time.process_time() - c
    load_end = os.getloadavg()
    res = measure("ssd", Path(out["model"]), cfg, tmp_path, train_s)
    res["train_cpu_s"] = round(train_cpu, 1)
    result = {
        "dataset": "BCCD (Pascal VOC, 364 images): trained on ImageSets/Main/trainval.txt (292), reported on "
        "test.txt (72), the DetectNet_v2 split; recipe chosen on train.txt / val.txt, never on test",
        "recipe": {
            "detector": "GluonCV SSD (gluoncv.model_zoo.ssd.SSD, SSDDefaultTrainTransform, SSDMultiBoxLoss)",
            "backbone": "efficientnet_lite0 (tlkit; ImageNet weights shipped offline; GluonCV's mobilenet1.0 / "
            "resnet50_v1 ImageNet files are absent and never downloaded), freeze_blocks [0, 1, 2]",
            "file": str(SSD_RECIPE.relative_to(EXAMPLES.parents[1])),
            "input": list(input_size(cfg)),
            "epochs": cfg.train_config.n_epochs,
            "batch": cfg.train_config.batch_size_per_gpu,
            "augmentation": "colour distortion, SSD constrained random crop, flip 0.5 (no random expand)",
            "optimizer": "adam 1e-3, soft start 0.1, annealing 0.6, L2 5e-5",
            "post": "per-class NMS IoU 0.45, confidence 0.01, top 400 per class, 100 per image",
        },
        "conditions": {
            "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS")},
            "loadavg_start": load_start,
            "loadavg_end": load_end,
            "note": "2 shared cores; other engineers' training runs at the same time",
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "ssd": res,
        "targets": {"budget_s": BUDGET_S},
    }
    SSD_OUT.write_text(json.dumps(result, indent=1))
    console.print(json.dumps(result, indent=1))
    assert train_s <= BUDGET_S
    assert res["mAP@0.5_onnx"] == pytest.approx(res["mAP@0.5"], abs=1e-6)
