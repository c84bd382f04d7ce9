"""`tlkit detection inference -m model.tlk|.onnx -i IMAGE|DIR|LIST.txt|VIDEO -r results [-e spec.yaml]`.

Images (one, a folder with its sub-folders, or a .txt list): `<r>/images_annotated/<name>` (boxes, class and
confidence drawn) and `<r>/labels/<stem>.txt` (KITTI lines with the confidence as 16th field), as TLT, where
<name> is the image's path below the folder given (so sub-folders keep apart); with inference_config.coco_dump
`<r>/detections_coco.json` (COCO results, with the ids it uses in `detections_coco_ids.json`) and with
csv_dump `<r>/detections.csv`. A video file (mp4/avi/mov/mkv/webm): an annotated
`<r>/<stem>_annotated.mp4` plus `<r>/<stem>_detections.json` (per-frame boxes). Only boxes with a
confidence of at least inference_config.confidence_threshold are drawn and written. Post-processing
follows the spec's postprocessing_config when the spec sets one, else the one saved in the model (the
model's training spec), never silently the built-in defaults. Unreadable images are skipped and reported
by name (`--strict`: stop at the first one).

`--secondary CLASSIFIER.onnx` runs the DeepStream primary + secondary cascade in Python: every detected object
(`--operate_on_class_ids`, at least `--input_object_min_width/height` px) is cropped as nvinfer crops it
(`tlkit.export.cascade`, widened by `--secondary_margin`) and classified; a label is kept at
`--classifier_threshold` probability or above. Both labels are drawn and written: `<r>/labels_secondary/`
(KITTI, type = the secondary label, score = its probability) beside `<r>/labels/`, and `<r>/cascade.csv` /
`<r>/cascade.json` (one row per object with both labels), plus per-stage latency.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import DataError, TlkitError
from tlkit.images import (
    IMAGE_EXTENSIONS,
    Inputs,
    SkippedImages,
    inference_source,
    read_batches,
    read_rgb,
    resolve_inputs,
)
from tlkit.io import atomic_write, atomic_write_text, make_dir, temp_file_beside
from tlkit_detection.clustering import Detection
from tlkit_detection.kitti import KittiObject, write_label
from tlkit_detection.metrics import coco_detections
from tlkit_detection.predict import to_frame

if TYPE_CHECKING:
    from tlkit.context import CommandContext

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
    (0, 128, 128),
]


def draw(
    image: np.ndarray,
    dets: Sequence[Detection],
    classes: Sequence[str],
    linewidth: int = 2,
    secondary: Sequence[Any] | None = None,
) -> np.ndarray:
    """A copy of RGB `image` with the detections drawn (class colour, label and confidence; with `secondary`
    results, the secondary label and probability after a '|')."""
    import cv2

    out = np.ascontiguousarray(image.copy())
    for i, d in enumerate(dets):
        color = (
            _PALETTE[list(classes).index(d.class_name) % len(_PALETTE)] if d.class_name in classes else (255, 255, 0)
        )
        x1, y1, x2, y2 = (int(round(v)) for v in d.bbox)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, linewidth)
        text = f"{d.class_name} {d.confidence:.2f}"
        if secondary is not None and secondary[i].label is not None:
            text += f" | {secondary[i].label} {secondary[i].probability:.2f}"
        cv2.putText(out, text, (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4, color, 1, cv2.LINE_AA)
    return out


def classify_objects(secondary: Any, image: np.ndarray, dets: Sequence[Detection], classes: Sequence[str]) -> list[Any]:
    """The secondary classifier's result for each detection (tlkit.export.cascade.SecondaryResult)."""
    ids = [list(classes).index(d.class_name) if d.class_name in classes else -1 for d in dets]
    return secondary.classify(image, [d.bbox for d in dets], ids)


def cascade_rows(name: str, dets: Sequence[Detection], results: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "image": name,
            "bbox": [round(float(v), 2) for v in d.bbox],
            "class": d.class_name,
            "confidence": round(float(d.confidence), 4),
            "secondary_label": r.label,
            "secondary_probability": None if r.probability is None else round(r.probability, 4),
        }
        for d, r in zip(dets, results)
    ]


def write_cascade(out_dir: Path, rows: list[dict[str, Any]], latency: dict[str, Any]) -> dict[str, str]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image", "x1", "y1", "x2", "y2", "class", "confidence", "secondary_label", "secondary_probability"])
    for r in rows:
        w.writerow(
            [
                r["image"],
                *r["bbox"],
                r["class"],
                r["confidence"],
                r["secondary_label"] or "",
                "" if r["secondary_probability"] is None else r["secondary_probability"],
            ]
        )
    atomic_write_text(out_dir / "cascade.csv", buf.getvalue())
    atomic_write_text(out_dir / "cascade.json", json.dumps({"objects": rows, "latency_ms": latency}, indent=1))
    return {"cascade_csv": str(out_dir / "cascade.csv"), "cascade_json": str(out_dir / "cascade.json")}


def latency_ms(detector: Any, secondary: Any, frame_s: Sequence[float]) -> dict[str, Any]:
    """Median per-stage latency: detector forward per frame, classifier forward per crop, whole cascade per
    frame (read, preprocess, detect, post-process, crop, classify; drawing and writing excluded)."""

    def med(v: Sequence[float]) -> float | None:
        return round(float(np.median(v)) * 1000, 3) if len(v) else None

    return {
        "detector_per_frame": med(detector.times),
        "classifier_per_crop": med(secondary.times),
        "cascade_per_frame": med(frame_s),
    }


def _box(d: Detection) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in d.bbox)
    return x1, y1, x2, y2


def kitti_objects(dets: Sequence[Detection]) -> list[KittiObject]:
    return [KittiObject(type=d.class_name, bbox=_box(d), score=float(d.confidence)) for d in dets]


def _write_png_or_jpg(path: Path, rgb: np.ndarray) -> None:
    import cv2

    ok, buf = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_EXTENSIONS else ".png", rgb[:, :, ::-1])
    if not ok:
        raise TlkitError(f"{path}: could not encode the annotated image")
    with atomic_write(path, "wb") as fh:
        fh.write(buf.tobytes())


def coco_image_ids(paths: Sequence[Path]) -> dict[Path, int]:
    """COCO image ids: the file name's number when every stem is one (COCO's 000000000785.jpg -> 785, KITTI's
    000123.png -> 123, so the ids match the dataset's own), else 1, 2, ... in the listed order."""
    stems = [p.stem for p in paths]
    if all(s.isdigit() for s in stems) and len({int(s) for s in stems}) == len(stems):
        return {p: int(p.stem) for p in paths}
    return {p: i + 1 for i, p in enumerate(paths)}


def infer_images(
    detector: Any,
    inputs: Inputs | Sequence[Path],
    out_dir: Path,
    batch_size: int,
    cfg: Any,
    skipped: SkippedImages | None = None,
    secondary: Any = None,
) -> dict[str, Any]:
    """Unreadable images are left out and listed in `skipped` (without it, the first one is a DataError); when
    all are, a DataError and nothing written."""
    import time

    if not isinstance(inputs, Inputs):
        inputs = Inputs(images=tuple(Path(p) for p in inputs))
    paths = list(inputs.images)
    ic = cfg.inference_config
    img_dir, lbl_dir, sec_dir = out_dir / "images_annotated", out_dir / "labels", out_dir / "labels_secondary"
    counts: dict[str, int] = {}
    skipped = skipped if skipped is not None else SkippedImages(strict=True)
    image_ids = coco_image_ids(paths)
    coco: list[dict[str, Any]] = []
    rows: list[list[Any]] = []
    done: list[Path] = []
    cascade: list[dict[str, Any]] = []
    frame_s: list[float] = []
    # the cascade is timed frame by frame (batch 1, as a video pipeline runs); plain detection batches
    step = 1 if secondary is not None else batch_size
    t = time.perf_counter()  # a cascade frame's time starts before its image is read
    for batch in read_batches(paths, step, read_rgb, skipped):
        chunk, images = [p for _, p, _ in batch], [img for _, _, img in batch]
        done += chunk
        for p, img, dets in zip(chunk, images, detector.detect(images)):
            name = inputs.name(p)
            dets = [d for d in dets if d.confidence >= ic.confidence_threshold]
            results: list[Any] | None = None
            if secondary is not None:
                results = classify_objects(secondary, img, dets, detector.classes)
                frame_s.append(time.perf_counter() - t)
                cascade += cascade_rows(name, dets, results)
                write_label(
                    sec_dir / Path(name).with_suffix(".txt"),
                    [
                        KittiObject(type=r.label, bbox=_box(d), score=float(r.probability))
                        for d, r in zip(dets, results)
                        if r.label is not None
                    ],
                )
            for d in dets:
                counts[d.class_name] = counts.get(d.class_name, 0) + 1
                rows.append([str(p), d.class_name, f"{d.confidence:.6f}", *(f"{float(v):.2f}" for v in d.bbox)])
            coco += coco_detections({name: to_frame(dets)}, {name: image_ids[p]}, detector.classes)
            if ic.kitti_dump:
                write_label(lbl_dir / Path(name).with_suffix(".txt"), kitti_objects(dets))
            if not ic.disable_overlay:
                _write_png_or_jpg(img_dir / name, draw(img, dets, detector.classes, ic.overlay_linewidth, results))
        t = time.perf_counter()
    skipped.require_some(len(paths), inputs.source)
    out: dict[str, Any] = {
        "images": len(done),
        "skipped": len(skipped),
        "detections": counts,
        "labels_dir": str(lbl_dir) if ic.kitti_dump else None,
        "images_dir": str(img_dir) if not ic.disable_overlay else None,
    }
    if ic.coco_dump:
        out["coco_json"] = str(out_dir / "detections_coco.json")
        atomic_write_text(out_dir / "detections_coco.json", json.dumps(coco))
        atomic_write_text(
            out_dir / "detections_coco_ids.json",
            json.dumps(
                {
                    "categories": [{"id": i + 1, "name": c} for i, c in enumerate(detector.classes)],
                    "images": [{"id": image_ids[p], "file_name": inputs.name(p)} for p in done],
                },
                indent=1,
            ),
        )
    if ic.csv_dump:
        out["csv"] = str(out_dir / "detections.csv")
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(
            [["image", "class", "confidence", "x1", "y1", "x2", "y2"], *rows]
        )
        atomic_write_text(out_dir / "detections.csv", buf.getvalue())
    if secondary is not None:
        out["latency_ms"] = latency_ms(detector, secondary, frame_s)
        out["secondary_labels"] = dict(sorted(Counter(r["secondary_label"] or "(none)" for r in cascade).items()))
        out.update(write_cascade(out_dir, cascade, out["latency_ms"]), labels_secondary_dir=str(sec_dir))
    return out


def infer_video(
    detector: Any, path: Path, out_dir: Path, batch_size: int, cfg: Any, secondary: Any = None
) -> dict[str, Any]:
    """Annotate every frame of a video (cv2), writing an mp4 next to a per-frame detections json."""
    import os

    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(f"{path}: cannot open the video (unsupported codec or not a video)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out_path = out_dir / f"{path.stem}_annotated.mp4"
    make_dir(out_dir)
    tmp = temp_file_beside(out_path, suffix=".mp4")
    writer = None
    frames_out: list[list[dict[str, Any]]] = []
    try:
        pending: list[np.ndarray] = []

        def flush() -> None:
            nonlocal writer
            for img, dets in zip(pending, detector.detect(pending)):
                dets = [d for d in dets if d.confidence >= cfg.inference_config.confidence_threshold]
                if writer is None:
                    h, w = img.shape[:2]
                    writer = cv2.VideoWriter(tmp, cv2.VideoWriter.fourcc(*"mp4v"), fps, (w, h))
                results = classify_objects(secondary, img, dets, detector.classes) if secondary is not None else None
                writer.write(
                    draw(img, dets, detector.classes, cfg.inference_config.overlay_linewidth, results)[:, :, ::-1]
                )
                frames_out.append(
                    [
                        {
                            "class": d.class_name,
                            "bbox": [float(v) for v in d.bbox],
                            "confidence": float(d.confidence),
                            **(
                                {"secondary_label": r.label, "secondary_probability": r.probability}
                                if results is not None
                                else {}
                            ),
                        }
                        for d, r in zip(dets, results or [None] * len(dets))
                    ]
                )
            pending.clear()

        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            pending.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
        if writer is None:
            raise DataError(f"{path}: the video has no readable frames")
        writer.release()
        writer = None
        os.replace(tmp, out_path)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
        if os.path.exists(tmp):
            os.unlink(tmp)
    det_path = out_dir / f"{path.stem}_detections.json"
    atomic_write_text(det_path, json.dumps({"video": str(path), "fps": fps, "frames": frames_out}))
    return {"video": str(out_path), "frames": len(frames_out), "detections_json": str(det_path)}


def run(ctx: CommandContext) -> dict[str, Any]:
    from tlkit_detection.config import DetectionConfig
    from tlkit_detection.predict import load_detector, spec_postprocessing

    if ctx.model is None:
        raise TlkitError("tlkit detection inference: -m/--model (a .tlk or .onnx detection model) is required")
    cfg = ctx.spec if isinstance(ctx.spec, DetectionConfig) else DetectionConfig()
    inputs = resolve_inputs(inference_source(ctx.options, "tlkit detection inference"))
    out_dir = ctx.require_results_dir()
    detector = load_detector(ctx.model, cfg)
    ctx.console.print(
        f"post-processing: {'the spec' if spec_postprocessing(cfg) is not None else 'saved in ' + Path(ctx.model).name}"
        f" (min confidence to draw/write: {cfg.inference_config.confidence_threshold:g})"
    )
    secondary = None
    if ctx.option("secondary"):
        from tlkit.export.cascade import load_secondary

        secondary = load_secondary(ctx.option("secondary"), ctx.options)
    bs = int(ctx.option("batch_size", cfg.inference_config.batch_size))
    if inputs.video is not None:
        res = infer_video(detector, inputs.video, out_dir, bs, cfg, secondary)
        ctx.console.print(f"annotated {res['frames']} frames -> {res['video']}")
        return res
    skipped = SkippedImages(strict=bool(ctx.option("strict")))
    res = infer_images(detector, inputs, out_dir, bs, cfg, skipped, secondary)
    skipped.warn(ctx.console)
    ctx.console.print(
        f"{res['images']} images: "
        + (", ".join(f"{k} {v}" for k, v in sorted(res["detections"].items())) or "no detections")
    )
    if secondary is not None:
        ctx.console.print(
            "secondary labels: "
            + ", ".join(f"{k} {v}" for k, v in res["secondary_labels"].items())
            + f"; latency (ms, median): {res['latency_ms']}; {res['cascade_csv']}"
        )
    return res
