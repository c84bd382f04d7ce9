"""`tlkit classification evaluate`: loss, top-k accuracy, per-class precision/recall/F1/support and the
confusion matrix (text + PNG), for a .tlk model or an exported .onnx with the same preprocessing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import SpecError, TlkitError
from tlkit.io import atomic_write, atomic_write_text
from tlkit.types import EvaluationResult
from tlkit_classification.data import ImageFolder, Pipeline, batches, open_image_folder
from tlkit_classification.runner import Runner, load_runner

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def eval_pipeline(meta: dict[str, Any], center_crop: bool | None = None) -> Pipeline:
    """The deterministic pipeline for a model, from its own metadata (so any consumer feeds it alike).

    `center_crop=None`: what the model was validated with in training (preprocessing "center_crop",
    stored in the model file and carried into exported ONNX metadata; default on).
    """
    from tlkit.export.preprocess import resolve_preprocessing

    pre = resolve_preprocessing(meta)
    center = bool(pre.get("center_crop", True)) if center_crop is None else center_crop
    c, h, w = (int(v) for v in meta["input_shape"])
    return Pipeline(
        (c, h, w),
        pre,
        interp=pre.get("resize_interpolation", "bilinear"),
        train=False,
        center_crop=center,
    )


def predict_dataset(
    run, ds: ImageFolder, pipe: Pipeline, batch_size: int, workers: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) and labels (N,) over a dataset, in dataset order."""
    outs, labels = [], []
    for x, y in batches(ds, pipe, batch_size, workers=workers):
        outs.append(run(x))
        labels.append(y)
    return np.concatenate(outs), np.concatenate(labels)


def metrics_from_logits(logits: np.ndarray, labels: np.ndarray, classes: list[str], top_k: int = 5) -> dict[str, Any]:
    """Loss (cross-entropy), top-1/top-k accuracy, sklearn per-class report and confusion matrix."""
    from sklearn.metrics import classification_report, confusion_matrix

    n_classes = len(classes)
    if logits.shape[1] != n_classes:
        raise TlkitError(f"model outputs {logits.shape[1]} classes but the class list has {n_classes}")
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # log-softmax: exact even when p underflows
    probs = np.exp(logp)
    loss = float(-logp[np.arange(len(labels)), labels].mean())
    k = max(1, min(top_k, n_classes))
    topk = np.argsort(-probs, axis=1)[:, :k]
    pred = topk[:, 0]
    report = classification_report(
        labels, pred, labels=list(range(n_classes)), target_names=classes, output_dict=True, zero_division=0
    )
    return {
        "loss": loss,
        "accuracy": float((pred == labels).mean()),
        "top_k": k,
        "top_k_accuracy": float((topk == labels[:, None]).any(axis=1).mean()),
        "n_images": len(labels),
        "per_class": {c: report[c] for c in classes},
        "macro_avg": report["macro avg"],
        "weighted_avg": report["weighted avg"],
        "confusion_matrix": confusion_matrix(labels, pred, labels=list(range(n_classes))).tolist(),
        "classes": list(classes),
    }


def report_text(m: dict[str, Any]) -> str:
    """TLT's printout: loss, top-k accuracy, confusion matrix, classification report."""
    from sklearn.metrics import classification_report  # noqa: F401  (same numbers, our layout)

    classes = m["classes"]
    width = max(8, *(len(c) for c in classes)) + 2
    lines = [
        f"Evaluation Loss: {m['loss']:.4f}",
        f"Evaluation Top 1 accuracy: {m['accuracy']:.4f}",
        f"Evaluation Top {m['top_k']} accuracy: {m['top_k_accuracy']:.4f}",
        "",
        "Confusion Matrix (rows: true class, columns: predicted)",
        " " * width + "".join(f"{c[:8]:>9}" for c in classes),
    ]
    for c, row in zip(classes, m["confusion_matrix"]):
        lines.append(f"{c:<{width}}" + "".join(f"{v:>9}" for v in row))
    lines += [
        "",
        "Classification Report",
        f"{'':<{width}}{'precision':>10}{'recall':>10}{'f1-score':>10}{'support':>10}",
    ]
    for c in classes:
        r = m["per_class"][c]
        lines.append(
            f"{c:<{width}}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1-score']:>10.4f}{int(r['support']):>10}"
        )
    for name in ("macro_avg", "weighted_avg"):
        r = m[name]
        lines.append(
            f"{name.replace('_', ' '):<{width}}{r['precision']:>10.4f}{r['recall']:>10.4f}{r['f1-score']:>10.4f}{int(r['support']):>10}"
        )
    return "\n".join(lines) + "\n"


def plot_confusion(m: dict[str, Any], path: Path, title: str = "Confusion matrix") -> Path:
    # Figure + Agg canvas directly: no pyplot global state (safe in threads and without a display)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cm = np.asarray(m["confusion_matrix"])
    classes = m["classes"]
    n = len(classes)
    fig = Figure(figsize=(1.6 + 0.6 * n, 1.4 + 0.6 * n), dpi=100, tight_layout=True)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}\ntop-1 {m['accuracy']:.3f}", fontsize=9)
    hi = cm.max() if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if cm[i, j] > hi / 2 else "black",
            )
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png")
    return path


REPORT_FILES = ("evaluation.json", "evaluation.txt", "confusion_matrix.png")  # what evaluate_model writes


def evaluate_model(
    runner: Runner,
    ds: ImageFolder,
    *,
    batch_size: int = 32,
    top_k: int = 5,
    center_crop: bool | None = None,
    out_dir: Path | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Evaluate and (with out_dir) write evaluation.json, evaluation.txt and confusion_matrix.png."""
    pipe = eval_pipeline(runner.meta, center_crop)
    logits, labels = predict_dataset(runner.logits, ds, pipe, batch_size, workers)
    m = metrics_from_logits(logits, labels, runner.classes, top_k)
    m["model"] = str(runner.path)
    m["backend"] = runner.backend
    m["dataset"] = str(ds.root)
    m["skipped_images"] = [str(p) for p in ds.corrupt]
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_text(out_dir / "evaluation.json", json.dumps(m, indent=2) + "\n")
        atomic_write_text(out_dir / "evaluation.txt", report_text(m))
        plot_confusion(m, out_dir / "confusion_matrix.png", f"{runner.path.name} on {ds.root.name}")
    return m


def eval_data_path(cfg: Any) -> str:
    for p in (
        cfg.eval_config.eval_dataset_path,
        cfg.dataset_config.test_dataset_path,
        cfg.dataset_config.val_dataset_path,
    ):
        if p:
            return p
    raise SpecError(
        "evaluate: no data to evaluate on; set eval_config.eval_dataset_path (or dataset_config.test_dataset_path)"
    )


def run(ctx: CommandContext) -> EvaluationResult:
    """Print TLT's report; with -r also write evaluation.json / .txt, confusion_matrix.png and status.json.
    kpi: accuracy, top_k_accuracy, loss; metrics: the whole report (per class, confusion matrix, ...)."""
    cfg = ctx.spec
    out_dir = ctx.results_dir
    model = ctx.model or cfg.eval_config.model_path
    if not model:
        raise SpecError("evaluate: no model; pass -m model.tlk|model.onnx or set eval_config.model_path")
    runner = load_runner(model, ctx.contexts()[0] if Path(model).suffix == ".tlk" else None, ctx.option("classmap"))
    ds = open_image_folder(
        eval_data_path(cfg),
        classes=runner.classes,
        extensions=cfg.dataset_config.image_extensions,
        strict=bool(ctx.option("strict")) or not cfg.dataset_config.skip_corrupt,
        channels=runner.input_shape[0],
        max_side=int(max(runner.input_shape[1:]) / 0.875 * 1.25),
        workers=cfg.eval_config.n_workers,
        what="eval_config.eval_dataset_path",
    )
    if ds.corrupt:
        ctx.console.print(f"[yellow]warning:[/] {ds.problems()}")
    m = evaluate_model(
        runner,
        ds,
        batch_size=ctx.option("batch_size", cfg.eval_config.batch_size),
        top_k=ctx.option("top_k", cfg.eval_config.top_k),
        center_crop=cfg.eval_config.enable_center_crop,
        out_dir=out_dir,
        workers=cfg.eval_config.n_workers,
    )
    ctx.console.print(report_text(m), markup=False, highlight=False)
    kpi = {"loss": m["loss"], "top_k_accuracy": m["top_k_accuracy"], "accuracy": m["accuracy"]}
    artifacts = {}
    if out_dir is not None:
        from tlkit.training.status import StatusLogger

        artifacts = {name: str(Path(out_dir) / name) for name in REPORT_FILES}
        ctx.console.print(f"wrote {out_dir / 'evaluation.json'}, evaluation.txt, confusion_matrix.png")
        StatusLogger(out_dir).write("SUCCESS", "evaluation finished", kpi=kpi)
    return EvaluationResult(kpi=kpi, artifacts=artifacts, metrics=m)
