"""`tlkit classification inference`: classify an image or a directory (batched) into result.csv
(path, label, confidence[, top-k]), with any model file a Runner loads (.tlk, .onnx). Unreadable images are
skipped and reported by name (`--strict`: stop at the first one)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from tlkit.context import print_warning
from tlkit.errors import DataError, TlkitError
from tlkit.images import SkippedImages, image_problem
from tlkit.io import atomic_write_text

from tlkit_classification.data import list_images, read_image
from tlkit_classification.evaluate import eval_pipeline
from tlkit_classification.runner import Runner, load_runner, softmax


def classify(runner: Runner, images: list[Path], batch_size: int = 16, top_k: int = 1, center_crop: bool | None = None,
             skipped: SkippedImages | None = None) -> list[dict[str, Any]]:
    """[{path, label, confidence, top_k: [(label, p), ...]}] in input order. Unreadable files are left out and
    listed in `skipped` (a DataError without it, or when it is strict)."""
    pipe = eval_pipeline(runner.meta, center_crop)
    classes = runner.classes
    k = max(1, min(top_k, len(classes)))
    out: list[dict[str, Any]] = []
    c = runner.input_shape[0]
    skipped = skipped if skipped is not None else SkippedImages(strict=True)
    for i in range(0, len(images), batch_size):
        chunk, pixels = [], []
        for p in images[i : i + batch_size]:
            img = read_image(p, c)
            if img is None:
                skipped.add(p, image_problem(p)[1] or "OpenCV cannot decode it")
                continue
            chunk.append(p)
            pixels.append(pipe.transform(img, None))
        if not chunk:
            continue
        x = pipe.preprocess(pixels)
        probs = softmax(runner.logits(x))
        if probs.shape[1] != len(classes):
            raise TlkitError(f"{runner.path}: model outputs {probs.shape[1]} classes, its class list has {len(classes)}")
        order = np.argsort(-probs, axis=1)[:, :k]
        for p, row, idx in zip(chunk, probs, order):
            out.append({
                "path": str(p),
                "label": classes[idx[0]],
                "confidence": float(row[idx[0]]),
                "top_k": [(classes[j], float(row[j])) for j in idx],
            })
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


def run(ctx: Any) -> dict[str, Any]:
    opts = ctx.options
    model = ctx.model or (ctx.spec.eval_config.model_path if ctx.spec is not None else None)
    if not model:
        raise TlkitError("inference: -m/--model is required (a .tlk or .onnx classification model)")
    image, image_dir = opts.get("image"), opts.get("image_dir")
    if bool(image) == bool(image_dir):
        raise TlkitError("inference: give exactly one of -i/--image FILE or -d/--image_dir DIR")
    # without -e the CLI still hands over the default spec: then the model's own metadata decides
    spec = ctx.spec if ctx.spec is not None and ctx.spec_path is not None else None
    exts = spec.dataset_config.image_extensions if spec is not None else None
    images = list_images(image or image_dir, **({"extensions": exts} if exts else {}))
    runner = load_runner(model, ctx.contexts()[0] if Path(model).suffix == ".tlk" else None, opts.get("classmap"))
    top_k = int(opts.get("top_k") or 1)
    center = spec.eval_config.enable_center_crop if spec is not None else None
    skipped = SkippedImages(strict=bool(opts.get("strict")))
    results = classify(runner, images, int(opts.get("batch_size") or 16), top_k, center, skipped)
    if skipped:
        print_warning(ctx.console, skipped.summary())
    if not results:
        first, why = skipped.items[0]
        raise DataError(f"{image or image_dir}: none of the {len(images)} image(s) could be read ({first}: {why})")
    out_dir = ctx.require_results_dir()
    csv_path = write_csv(results, Path(ctx.output) if ctx.output else out_dir / "result.csv", max(1, min(top_k, len(runner.classes))))
    if image:
        r = results[0]
        ctx.console.print(f"{r['path']}: {r['label']} ({r['confidence']:.4f})")
    ctx.console.print(f"classified {len(results)} image(s) with {runner.path.name} ({runner.backend}); wrote {csv_path}")
    return {"result_csv": str(csv_path), "n_images": len(results), "n_skipped": len(skipped)}
