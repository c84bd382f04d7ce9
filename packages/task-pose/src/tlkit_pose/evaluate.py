"""COCO keypoint evaluation (pycocotools COCOeval 'keypoints'), printed as TLT prints it, plus the KPI dict.

`tlkit pose evaluate --predictions RESULTS.json --annotations COCO.json [-r DIR]` scores a COCO results file
(no model needed); `tlkit pose evaluate -m model.tlk|model.onnx -a COCO.json [-r DIR]` runs the model on the
annotations' images first. Both print COCOeval's summary; with -r they also write DIR/detections.json (the model's
people), DIR/evaluation.json (the KPIs) and DIR/results.csv (TLT's results summary table), and log the KPIs to
DIR/status.json. Without -r nothing is written, as TLT's evaluate.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import DataError, TlkitError
from tlkit.io import atomic_write, atomic_write_text
from tlkit.types import EvaluationResult

if TYPE_CHECKING:
    from tlkit.context import CommandContext

# COCOeval.stats order for 'keypoints' -> TLT's KPI names.
KPI_NAMES = (
    "AP_0.50:0.95_all", "AP_0.5", "AP_0.75", "AP_0.50:0.95_medium", "AP_0.50:0.95_large",
    "AR_0.50:0.95_all", "AR_0.5", "AR_0.75", "AR_0.50:0.95_medium", "AR_0.50:0.95_large",
)  # fmt: skip
SHORT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
_ROWS = [  # metric, IoU, area (TLT results.csv)
    ("AP", "0.50:0.95", "all"), ("AP", "0.50", "all"), ("AP", "0.75", "all"), ("AP", "0.50:0.95", "medium"),
    ("AP", "0.50:0.95", "large"), ("AR", "0.50:0.95", "all"), ("AR", "0.50", "all"), ("AR", "0.75", "all"),
    ("AR", "0.50:0.95", "medium"), ("AR", "0.50:0.95", "large"),
]  # fmt: skip


def _coco_gt(annotations: str | Path | dict):
    """pycocotools COCO of the checked, cleaned annotations (a path or an in-memory dict), and the dataset
    (whose `problems` say what was skipped or repaired)."""
    from pycocotools.coco import COCO

    from tlkit_pose.coco import load_coco_keypoints, parse_coco_keypoints, to_coco_dict

    ds = parse_coco_keypoints(annotations) if isinstance(annotations, dict) else load_coco_keypoints(annotations)
    data = to_coco_dict(ds)
    for a in data["annotations"]:
        a["id"] = a.get("id") or 0
    ids = [a["id"] for a in data["annotations"]]
    if len(set(ids)) != len(ids) or 0 in ids:  # pycocotools indexes annotations by id
        for n, a in enumerate(data["annotations"], 1):
            a["id"] = n
    gt = COCO()
    gt.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt, ds


def load_predictions(predictions: str | Path | list, image_ids: set[int] | None = None) -> list[dict]:
    """Read and check a COCO keypoint results list: each entry needs image_id, 51 keypoint numbers and a score."""
    where = str(predictions) if not isinstance(predictions, list) else "<predictions>"
    if not isinstance(predictions, list):
        p = Path(predictions)
        if not p.is_file():
            raise DataError(f"{p}: predictions file not found")
        try:
            predictions = json.loads(p.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{p}:{err.lineno}: not valid JSON: {err.msg}") from None
    if not isinstance(predictions, list):
        raise DataError(f"{where}: expected a JSON list of COCO keypoint results, got a {type(predictions).__name__}")
    for i, r in enumerate(predictions):
        if not isinstance(r, dict) or not {"image_id", "keypoints", "score"} <= set(r):
            raise DataError(f"{where}: entry {i}: expected an object with image_id, keypoints (51 numbers) and score")
        kp = r["keypoints"]
        if not isinstance(kp, list) or len(kp) != 51 or not all(isinstance(v, (int, float)) for v in kp):
            raise DataError(
                f"{where}: entry {i} (image_id {r['image_id']}): keypoints must be 51 numbers (17 x [x, y, v]), got {len(kp) if isinstance(kp, list) else type(kp).__name__}"
            )
        if not isinstance(r["score"], (int, float)):
            raise DataError(f"{where}: entry {i}: score must be a number, got {r['score']!r}")
        if image_ids is not None and r["image_id"] not in image_ids:
            raise DataError(f"{where}: entry {i}: image_id {r['image_id']!r} is not in the annotations")
    return predictions


def evaluate_keypoints(
    annotations: str | Path | dict, predictions: str | Path | list, verbose: bool = False
) -> dict[str, Any]:
    """Score keypoint results against COCO annotations.

    Returns {"kpi": {TLT name: value}, "metrics": {short name: value}, "summary": COCOeval's printed text,
    "num_predictions", "num_images"}.
    """
    from pycocotools.cocoeval import COCOeval

    gt, ds = _coco_gt(annotations)
    preds = load_predictions(predictions, set(gt.getImgIds()))
    cat = gt.getCatIds(catNms=["person"]) or [1]
    for r in preds:
        r.setdefault("category_id", cat[0])
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        if preds:
            dt = gt.loadRes(copy.deepcopy(preds))
            ev = COCOeval(gt, dt, "keypoints")
            ev.params.imgIds = sorted(gt.getImgIds())
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            stats = [max(0.0, float(s)) if s > -1 else -1.0 for s in ev.stats]
        else:
            stats = [0.0] * 10
            print("No predictions: every metric is 0.")
    kpi = dict(zip(KPI_NAMES, stats))
    return {
        "kpi": kpi,
        "metrics": dict(zip(SHORT_NAMES, stats)),
        "summary": buf.getvalue(),
        "num_predictions": len(preds),
        "num_images": len(gt.getImgIds()),
        "label_problems": ds.problem_report(),
    }


def write_results(result: dict[str, Any], results_dir: str | Path) -> dict[str, Path]:
    """evaluation.json (KPIs and counts) and results.csv (TLT's summary table) in `results_dir`."""
    d = Path(results_dir)
    js = d / "evaluation.json"
    atomic_write_text(js, json.dumps({k: v for k, v in result.items() if k != "summary"}, indent=2))
    table = d / "results.csv"
    with atomic_write(table, "w") as fh:
        w = csv.writer(fh)
        w.writerow(["", "metric", "IoU", "area", "maxDets", "score"])
        for i, ((metric, iou, area), v) in enumerate(zip(_ROWS, result["kpi"].values())):
            w.writerow([i, metric, iou, area, 20, f"{v:.6f}"])
    return {"evaluation": js, "results_csv": table}


def _model_predictions(ctx: CommandContext, annotations: Any, image_root: Any) -> list[dict]:
    """Run the -m model (.tlk or .onnx) on every image of `annotations` -> COCO keypoint results."""
    from tlkit_pose.predict import PosePredictor, coco_images, predict_coco, spec_inference

    predictor = PosePredictor.from_model(ctx.model, spec_inference(ctx.spec), batch_size=int(ctx.option("batch_size")))
    _, items = coco_images(annotations, image_root)
    return predict_coco(predictor, items)


def run(ctx: CommandContext) -> EvaluationResult:
    """`tlkit pose evaluate`: score --predictions, or run the model -m on the annotations' images first.
    kpi: the ten COCO keypoint AP/AR numbers (KPI_NAMES)."""
    from tlkit.training.status import StatusLogger

    predictions = ctx.option("predictions")
    annotations = ctx.option("annotations")
    image_root = ctx.option("image_root")
    spec = ctx.spec
    if annotations is None and spec is not None and spec.dataloader.val_annotations:
        annotations = spec.dataloader.val_annotations
        image_root = image_root or spec.dataloader.val_images
    if predictions is None and ctx.model is None:
        raise TlkitError(
            "tlkit pose evaluate: give -m MODEL (.tlk or .onnx) to evaluate, or --predictions RESULTS.json (a COCO keypoint results list)"
        )
    if annotations is None:
        raise TlkitError(
            "tlkit pose evaluate: give --annotations COCO.json (or dataloader.val_annotations in the spec)"
        )
    results_dir = ctx.results_dir  # None: print only, as TLT's evaluate without -r
    status = StatusLogger(results_dir) if results_dir is not None else None
    if status:
        status.write("STARTED", "Starting COCO keypoint evaluation.")
    artifacts: dict[str, str] = {}
    try:
        if predictions is None:
            predictions = _model_predictions(ctx, annotations, image_root)
            ctx.console.print(f"{len(predictions)} people detected")
            if results_dir is not None:
                atomic_write_text(results_dir / "detections.json", json.dumps(predictions))
                artifacts["detections.json"] = str(results_dir / "detections.json")
                ctx.console.print(f"results: {results_dir / 'detections.json'}")
        result = evaluate_keypoints(annotations, predictions)
    except TlkitError as err:
        if status:
            status.write("FAILURE", str(err), verbosity="ERROR")
        raise
    for line in result["label_problems"]:
        ctx.console.print(f"label problem in the annotations: {line}", markup=False)
    ctx.console.print("Running test for keypoints results.")
    ctx.console.print(result["summary"].rstrip(), markup=False)
    metrics = {k: v for k, v in result.items() if k not in ("kpi", "summary")}
    if results_dir is None:
        return EvaluationResult(kpi=result["kpi"], metrics=metrics)
    paths = write_results(result, results_dir)
    artifacts.update((p.name, str(p)) for p in paths.values())
    ctx.console.print(f"Results: {paths['evaluation']}, {paths['results_csv']}")
    assert status is not None  # made for results_dir
    status.write("SUCCESS", "Evaluation finished successfully.", kpi=result["kpi"])
    return EvaluationResult(kpi=result["kpi"], artifacts=artifacts, metrics=metrics)
