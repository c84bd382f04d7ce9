"""`tlkit classification inference`: classify an image, a folder (with its sub-folders) or a .txt list of images
(batched) into result.csv (path, label, confidence[, top-k]), with any model file a Runner loads (.tlk, .onnx).
Unreadable images are skipped and reported by name (`--strict`: stop at the first one)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import TlkitError
from tlkit.images import IMAGE_EXTENSIONS, SkippedImages, inference_source, read_batches, resolve_inputs
from tlkit.io import atomic_write_text
from tlkit_classification.data import read_image
from tlkit_classification.evaluate import eval_pipeline
from tlkit_classification.runner import Runner, load_runner, softmax

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def classify(
    runner: Runner,
    images: list[Path],
    batch_size: int = 16,
    top_k: int = 1,
    center_crop: bool | None = None,
    skipped: SkippedImages | None = None,
) -> list[dict[str, Any]]:
    """[{path, label, confidence, top_k: [(label, p), ...]}] in input order. Unreadable files are left out and
    listed in `skipped` (a DataError without it, or when it is strict)."""
    pipe = eval_pipeline(runner.meta, center_crop)
    classes = runner.classes
    k = max(1, min(top_k, len(classes)))
    out: list[dict[str, Any]] = []
    c = runner.input_shape[0]
    skipped = skipped if skipped is not None else SkippedImages(strict=True)
    for batch in read_batches(images, batch_size, lambda p: read_image(p, c), skipped):
        x = pipe.preprocess([pipe.transform(img, None) for _, _, img in batch])
        probs = softmax(runner.logits(x))
        if probs.shape[1] != len(classes):
            raise TlkitError(
                f"{runner.path}: model outputs {probs.shape[1]} classes, its class list has {len(classes)}"
            )
        order = np.argsort(-probs, axis=1)[:, :k]
        for (_, p, _), row, idx in zip(batch, probs, order):
            out.append(
                {
                    "path": str(p),
                    "label": classes[idx[0]],
                    "confidence": float(row[idx[0]]),
                    "top_k": [(classes[j], float(row[j])) for j in idx],
                }
            )
    return out


def write_csv(results: list[dict[str, Any]], path: Path, top_k: int = 1) -> Path:
    """TLT's result.csv: path, label, confidence (plus label_i/confidence_i columns for top-k > 1)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    header = ["path", "label", "confidence"]
    for i in range(2, top_k + 1):
        header += [f"label_{i}", f"confidence_{i}"]
    w.writerow(header)
    for r in results:
        row = [r["path"], r["label"], f"{r['confidence']:.6f}"]
        for lab, p in r["top_k"][1:top_k]:
            row += [lab, f"{p:.6f}"]
        w.writerow(row)
    atomic_write_text(path, buf.getvalue())
    return path


def run(ctx: CommandContext) -> dict[str, Any]:
    model = ctx.model or (ctx.spec.eval_config.model_path if ctx.spec is not None else None)
    if not model:
        raise TlkitError("inference: -m/--model is required (a .tlk or .onnx classification model)")
    source = inference_source(ctx.options, "tlkit classification inference", videos=False)
    # without -e the CLI still hands over the default spec: then the model's own metadata decides
    spec = ctx.spec if ctx.spec is not None and ctx.spec_path is not None else None
    exts = spec.dataset_config.image_extensions if spec is not None else IMAGE_EXTENSIONS
    images = list(resolve_inputs(source, extensions=exts, videos=False).images)
    runner = load_runner(model, ctx.contexts()[0] if Path(model).suffix == ".tlk" else None, ctx.option("classmap"))
    top_k = int(ctx.option("top_k"))
    center = spec.eval_config.enable_center_crop if spec is not None else None
    skipped = SkippedImages(strict=bool(ctx.option("strict")))
    results = classify(runner, images, int(ctx.option("batch_size")), top_k, center, skipped)
    skipped.require_some(len(images), source)
    skipped.warn(ctx.console)
    out_dir = ctx.require_results_dir()
    csv_path = write_csv(
        results, Path(ctx.output) if ctx.output else out_dir / "result.csv", max(1, min(top_k, len(runner.classes)))
    )
    if len(images) == 1:
        r = results[0]
        ctx.console.print(f"{r['path']}: {r['label']} ({r['confidence']:.4f})")
    ctx.console.print(
        f"classified {len(results)} image(s) with {runner.path.name} ({runner.backend}); wrote {csv_path}"
    )
    return {"result_csv": str(csv_path), "n_images": len(results), "n_skipped": len(skipped)}
