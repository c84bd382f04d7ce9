"""`tlkit detection evaluate`: score a model, or KITTI prediction files.

- `-m model.tlk|model.onnx -e spec.yaml [-r results] [--use_training_set]`: run the model on the
  validation split of dataset_config (the training split with --use_training_set) with the same
  post-processing as training (postprocessing_config), print TLT's table, COCO AP, the median inference
  time per image at batch 1 and at the batch used and, with --kitti_difficulty, KITTI easy/moderate/hard AP.
- `--predictions DIR --labels DIR [-e spec] [-r results]`: score KITTI prediction files (16th field =
  score) against KITTI label files, with no model. Prediction files from other tools are read as the
  KITTI devkit reads them (degenerate and out-of-image boxes are scored); problems are counted and
  reported, not fatal.

Classes are compared in lower case after `dataset_config.target_class_mapping` (unmapped classes are
dropped when a mapping is given). With `-r`, writes `evaluation.json` and one PR-curve PNG per class.
Returns an EvaluationResult: kpi {"mean average precision": mAP in %} (status.json's, TLT's key); metrics: the
per-class AP, counts, COCO and KITTI results and timings (what evaluation.json holds).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tlkit.errors import DataError, TlkitError
from tlkit.io import atomic_write_text
from tlkit.types import EvaluationResult
from tlkit_detection.config import DetectionConfig
from tlkit_detection.kitti import FrameArrays, KittiObject, read_label_dir, read_prediction_dir, to_arrays
from tlkit_detection.metrics import (
    BoxFilter,
    evaluate_ap,
    evaluate_coco,
    evaluate_kitti,
    format_ap_table,
    save_pr_curves,
)

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def map_frame(objects: list[KittiObject], mapping: dict[str, str]) -> FrameArrays:
    """Lower-case class names, apply the target class mapping (dropping unmapped classes when one is given)."""
    kept = []
    for o in objects:
        t = o.type.lower()
        if mapping:
            if t not in mapping:
                continue
            t = mapping[t]
        kept.append(KittiObject(type=t, bbox=o.bbox, truncated=o.truncated, occluded=o.occluded, score=o.score))
    return to_arrays(kept)


def run(ctx: CommandContext) -> EvaluationResult:
    if ctx.model is not None:
        return run_model(ctx)
    pred_dir, label_dir = ctx.option("predictions"), ctx.option("labels")
    if pred_dir is None or label_dir is None:
        raise TlkitError("tlkit detection evaluate: give --predictions DIR and --labels DIR (KITTI text files)")
    spec: DetectionConfig = ctx.spec if isinstance(ctx.spec, DetectionConfig) else DetectionConfig()
    ev = spec.evaluation_config
    gt_raw = read_label_dir(label_dir)
    if not gt_raw:
        raise DataError(f"{label_dir}: no KITTI label files (*.txt)")
    pred_raw, report = read_prediction_dir(pred_dir)
    if report.counts and not report.detections:  # e.g. label files (no score) given as predictions
        raise DataError(
            f"{pred_dir}: no usable detection in {report.files} prediction file(s): {'; '.join(report.lines())}"
        )
    for line in report.lines():
        ctx.console.print(f"[yellow]prediction files: {line}[/]")
    extra = sorted(set(pred_raw) - set(gt_raw))
    missing = sorted(set(gt_raw) - set(pred_raw))
    if extra:
        ctx.console.print(
            f"[yellow]{len(extra)} prediction files have no label file and are ignored, e.g. {extra[:3]}[/]"
        )
    if missing:
        ctx.console.print(
            f"[yellow]{len(missing)} label files have no prediction file (scored as no detections), e.g. {missing[:3]}[/]"
        )
    mapping = {k.lower(): v.lower() for k, v in spec.dataset_config.target_class_mapping.items()}
    gt = {k: map_frame(v, mapping) for k, v in gt_raw.items()}
    preds = {k: map_frame(v, mapping) for k, v in pred_raw.items() if k in gt_raw}
    thresholds = {k.lower(): v for k, v in ev.minimum_detection_ground_truth_overlap.items()}
    if thresholds:
        classes = sorted(thresholds)
    else:
        classes = sorted({t for f in gt.values() for t in f.types} - {"dontcare"})
    if not classes:
        raise DataError(f"{label_dir}: no objects to evaluate")
    filters = {
        c: BoxFilter(**(ev.per_class_box_config.get(c) or ev.evaluation_box_config).model_dump()) for c in classes
    }
    result = evaluate_ap(
        gt,
        preds,
        classes,
        {c: thresholds.get(c, ev.default_overlap) for c in classes},
        mode=ev.average_precision_mode.lower(),
        num_recall_points=ev.num_recall_points,
        box_filters=filters,
        matching=ev.matching,
    )
    ctx.console.print(format_ap_table(result))
    for c in classes:
        if result.classes[c].num_gt == 0:
            ctx.console.print(f"[yellow]class {c!r} has no ground-truth boxes: its AP counts as 0[/]")
    outputs = result.to_dict()
    outputs["prediction_files"] = report.to_dict()
    _coco(ctx, spec, gt, preds, classes, outputs)
    if ev.kitti_difficulty or ctx.option("kitti_difficulty"):
        raw_gt = {k: to_arrays(v) for k, v in gt_raw.items()}
        raw_pred = {k: to_arrays(v) for k, v in pred_raw.items() if k in gt_raw}
        kitti = evaluate_kitti(raw_gt, raw_pred, classes, thresholds or None)
        ctx.console.print("\nKITTI difficulty levels (official devkit rules):")
        ctx.console.print(kitti.table())
        outputs["kitti"] = kitti.to_dict()
    return _save(ctx, result, outputs)


def _coco(ctx: CommandContext, spec: DetectionConfig, gt: dict, preds: dict, classes: list[str], outputs: dict) -> None:
    """COCO AP through pycocotools, printed and added to `outputs` (evaluation_config.coco_metrics)."""
    if not spec.evaluation_config.coco_metrics:
        return
    coco = evaluate_coco(gt, preds, classes)
    ctx.console.print("\nCOCO AP (pycocotools; AP = mAP@[.5:.95], in %):")
    ctx.console.print(coco.table())
    outputs["coco"] = coco.to_dict()


def _save(ctx: CommandContext, result, outputs: dict) -> EvaluationResult:
    """With -r: evaluation.json, the PR curves and status.json. The result, in evaluate's one shape."""
    kpi = {"mean average precision": outputs["mean_average_precision"]}  # TLT's key, as status.json has it
    artifacts = {}
    if ctx.results_dir is not None:
        out = Path(ctx.results_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "evaluation.json", json.dumps(outputs, indent=1, default=_json_default))
        curves = save_pr_curves(result, out)
        artifacts = {p.name: str(p) for p in [out / "evaluation.json", *curves]}
        from tlkit.training.status import StatusLogger

        # TLT's keys, so tools reading TAO's status.json find the numbers
        StatusLogger(out).write(
            "SUCCESS", "evaluation finished", kpi=kpi, categorical={"average_precision": outputs["average_precision"]}
        )
    metrics = json.loads(json.dumps(outputs, default=_json_default))  # JSON-ready, as evaluation.json has them
    return EvaluationResult(kpi=kpi, artifacts=artifacts, metrics=metrics)


def run_model(ctx: CommandContext) -> EvaluationResult:
    """evaluate -m: the model on the validation (or training) split of the spec's dataset."""
    from tlkit_detection.data import TargetMaker
    from tlkit_detection.predict import load_detector
    from tlkit_detection.train import evaluate_dataset

    # without -e the CLI hands over the default spec, which sets no dataset_config
    scored = isinstance(ctx.spec, DetectionConfig) and "dataset_config" in ctx.spec.model_fields_set
    if not scored and ctx.spec_path is None:
        raise TlkitError(
            "tlkit detection evaluate -m: give the experiment spec with -e (its dataset_config says what to score)"
        )
    spec: DetectionConfig = ctx.spec
    assert ctx.model is not None  # run() calls this for -m only
    det = load_detector(ctx.model, spec)  # the model's own problems first (a missing file, an engine without a GPU)
    if not scored:
        raise TlkitError(
            f"{ctx.spec_path}: sets no dataset_config; evaluate -m scores the model on its "
            "validation_data_source (or validation_fold / data_sources)"
        )
    classes = det.classes
    split = "training" if ctx.option("use_training_set") else "validation"
    ds = _dataset_at(spec, split, classes, det.input_size)
    maker = TargetMaker(spec, classes, det.meta.get("preprocessing") or {}, ds.input_size)
    bs = int(ctx.option("batch_size", spec.train_config.batch_size_per_gpu))
    out = evaluate_dataset(det, ds, maker, spec, bs)
    result = out["result"]
    ctx.console.print(f"{ctx.model} ({det.backend}) on {len(ds)} {split} frames")
    ctx.console.print(format_ap_table(result))
    timing = inference_time(det, ds, maker, bs)
    ctx.console.print(  # TLT's label, with a unit and batch 1 too
        f"\nMedian Inference Time: {timing['median_ms']:.3f} ms per image at batch {bs}, "
        f"{timing['median_ms_batch_1']:.3f} ms at batch 1 (forward pass, {det.backend})"
    )
    outputs = result.to_dict()
    outputs["inference_time"] = timing
    outputs["backend"] = det.backend
    _coco(ctx, spec, out["ground_truth"], out["predictions"], classes, outputs)
    if spec.evaluation_config.kitti_difficulty or ctx.option("kitti_difficulty"):
        thr = {k.lower(): v for k, v in spec.evaluation_config.minimum_detection_ground_truth_overlap.items()}
        kitti = evaluate_kitti(
            out["ground_truth"],
            out["predictions"],
            classes,
            {c: thr[c.lower()] for c in classes if c.lower() in thr} or None,
        )
        ctx.console.print("\nKITTI difficulty levels (official devkit rules):")
        ctx.console.print(kitti.table())
        outputs["kitti"] = kitti.to_dict()
    return _save(ctx, result, outputs)


BATCH_1_FRAMES = 16  # forward passes timed at batch 1 (after one warm-up)


def inference_time(det, ds, maker, batch_size: int) -> dict:
    """Median forward-pass time per image (ms) over the evaluation's batches, and at batch 1 on up to
    BATCH_1_FRAMES frames. TLT prints the former only, in seconds and without a unit."""
    import time

    from tlkit_detection.data import batches

    at_batch = float(np.median(det.times) * 1000) if det.times else float("nan")
    inputs = [x for _, (x, _) in zip(range(BATCH_1_FRAMES), batches(ds, maker, 1, with_targets=False))]
    times = []
    for x in [inputs[0], *inputs]:  # the first pass warms up
        t = time.perf_counter()
        det.heads(x)
        times.append(time.perf_counter() - t)
    return {
        "unit": "ms per image",
        "batch_size": batch_size,
        "median_ms": at_batch,
        "median_ms_batch_1": float(np.median(times[1:]) * 1000),
        "frames_at_batch_1": len(inputs),
    }


def _dataset_at(spec: DetectionConfig, split: str, classes: list[str], input_size: tuple[int, int]):
    """The split resized to the model's input (which may differ from the spec's)."""
    from tlkit_detection.data import class_list, load_frames, open_readers

    readers = open_readers(spec, split)
    if not readers:
        raise TlkitError(
            "no validation data: set dataset_config.validation_fold or validation_data_source, or pass --use_training_set"
        )
    missing = sorted(set(class_list(readers)) - set(classes))
    if missing:
        raise DataError(f"the dataset has classes {missing} that the model does not know (model classes: {classes})")
    ds = load_frames(readers, classes, input_size)
    if not ds.frames:
        raise DataError(f"the {split} split has no frames")
    return ds


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(type(v))
