"""`tlkit pose inference -m MODEL (.tlk|.onnx) -i IMAGE | -d DIR | --input IMAGE|DIR|VIDEO -r RESULTS`.

Images: RESULTS/images_annotated/<name> (skeleton overlays; --no_visualizations skips them) and
RESULTS/detections.json (COCO keypoint results, image_id = position in sorted order, plus file_name).
A video file: RESULTS/<stem>_annotated.mp4 (every frame annotated) and RESULTS/<stem>_detections.json
(image_id = frame index). Unreadable images are skipped and reported by name (`--strict`: stop at the first).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.context import print_warning
from tlkit.errors import DataError, TlkitError
from tlkit.images import SkippedImages, image_problem, read_bgr
from tlkit.io import atomic_write_text, make_dir

from tlkit_pose.postprocess import Person, to_coco_results
from tlkit_pose.skeleton import LIMBS

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}
# one colour per limb (BGR), OpenPose-like rainbow
_COLORS = [tuple(int(c) for c in np.array(__import__("colorsys").hsv_to_rgb(i / len(LIMBS), 1.0, 1.0))[::-1] * 255) for i in range(len(LIMBS))]


def draw_people(image_bgr: np.ndarray, people: Sequence[Person]) -> np.ndarray:
    """A copy of the image with each person's limbs and parts drawn."""
    import cv2

    out = image_bgr.copy()
    t = max(1, round(min(out.shape[:2]) / 160))
    for person in people:
        kp = person.keypoints
        for k, (a, b) in enumerate(LIMBS):
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                pa, pb = (int(round(kp[a, 0])), int(round(kp[a, 1]))), (int(round(kp[b, 0])), int(round(kp[b, 1])))
                cv2.line(out, pa, pb, _COLORS[k], t, cv2.LINE_AA)
        for x, y, s in kp:
            if s > 0:
                cv2.circle(out, (int(round(x)), int(round(y))), t + 1, (255, 255, 255), -1, cv2.LINE_AA)
    return out


def _inputs(ctx: Any) -> tuple[str, list[Path] | Path]:
    o = ctx.options
    given = [(k, o.get(k)) for k in ("image", "image_dir", "input") if o.get(k)]
    if len(given) != 1:
        raise TlkitError("tlkit pose inference: give exactly one of -i/--image, -d/--image_dir or --input (image, folder or video)")
    path = Path(given[0][1])
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DataError(f"{path}: no {'/'.join(sorted(IMAGE_EXTS))} images in the folder")
        return "images", files
    if path.suffix.lower() in VIDEO_EXTS:
        return "video", path
    if path.suffix.lower() in IMAGE_EXTS:
        return "images", [path]
    raise DataError(f"{path}: not an image ({', '.join(sorted(IMAGE_EXTS))}) or video ({', '.join(sorted(VIDEO_EXTS))}) file")


def infer_images(predictor: Any, files: Sequence[Path], out_dir: Path, visualize: bool = True,
                 skipped: SkippedImages | None = None) -> dict[str, Any]:
    """Unreadable images are left out and listed in `skipped` (without it, the first one is a DataError); the
    image_id of a result stays its position in `files`."""
    import cv2

    from tlkit.io import atomic_write_bytes

    results: list[dict] = []
    vis_dir = out_dir / "images_annotated"
    if visualize:
        make_dir(vis_dir)
    skipped = skipped if skipped is not None else SkippedImages(strict=True)
    bs = predictor.batch_size
    for start in range(0, len(files), bs):
        chunk, ids, imgs = [], [], []
        for k, f in enumerate(files[start : start + bs]):
            img = read_bgr(f)
            if img is None:
                skipped.add(f, image_problem(f)[1] or "OpenCV cannot decode it")
                continue
            chunk.append(f)
            ids.append(start + k)
            imgs.append(img)
        if not chunk:
            continue
        for image_id, f, img, people in zip(ids, chunk, imgs, predictor.people(imgs)):
            for r in to_coco_results(people, image_id):
                results.append({**r, "file_name": str(f)})
            if visualize:
                ok, buf = cv2.imencode(f.suffix if f.suffix.lower() in IMAGE_EXTS else ".png", draw_people(img, people))
                atomic_write_bytes(vis_dir / f.name, buf.tobytes())
    if files and len(skipped) == len(files):
        first, why = skipped.items[0]
        raise DataError(f"none of the {len(files)} image(s) could be read ({first}: {why})")
    path = out_dir / "detections.json"
    atomic_write_text(path, json.dumps(results))
    return {
        "detections": str(path),
        "images": len(files) - len(skipped),
        "skipped": len(skipped),
        "people": len(results),
        "annotated_dir": str(vis_dir) if visualize else None,
    }


def infer_video(predictor: Any, video: Path, out_dir: Path) -> dict[str, Any]:
    import cv2

    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DataError(f"{video}: OpenCV cannot open this video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    out_path = out_dir / f"{video.stem}_annotated.mp4"
    tmp_path = out_dir / f".{video.stem}_annotated.tmp.mp4"
    writer = None
    results: list[dict] = []
    frame_i = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            people = predictor.people([frame])[0]
            results += to_coco_results(people, frame_i)
            if writer is None:
                writer = cv2.VideoWriter(str(tmp_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0]))
            writer.write(draw_people(frame, people))
            frame_i += 1
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frame_i == 0:
        tmp_path.unlink(missing_ok=True)
        raise DataError(f"{video}: no frame could be read")
    tmp_path.replace(out_path)  # the video appears only once complete
    det = out_dir / f"{video.stem}_detections.json"
    atomic_write_text(det, json.dumps(results))
    return {"video": str(out_path), "frames": frame_i, "detections": str(det), "people": len(results)}


def run(ctx: Any) -> dict[str, Any]:
    from tlkit_pose.predict import PosePredictor

    if ctx.model is None:
        raise TlkitError("tlkit pose inference: -m/--model (a .tlk or .onnx pose model) is required")
    kind, what = _inputs(ctx)
    out_dir = ctx.require_results_dir()
    params = ctx.spec.inference if ctx.spec is not None else None
    predictor = PosePredictor.from_model(ctx.model, params, batch_size=int(ctx.options.get("batch_size") or 8))
    if kind == "video":
        res = infer_video(predictor, what, out_dir)
        ctx.console.print(f"{res['frames']} frames, {res['people']} people: {res['video']}, {res['detections']}")
    else:
        skipped = SkippedImages(strict=bool(ctx.options.get("strict")))
        visualize = not ctx.options.get("no_visualizations")
        res = infer_images(predictor, what, out_dir, visualize=visualize, skipped=skipped)
        if skipped:
            print_warning(ctx.console, skipped.summary())
        ctx.console.print(f"{res['images']} image(s), {res['people']} people: {res['detections']}" + (f", overlays in {res['annotated_dir']}" if res["annotated_dir"] else ""))
    return res
