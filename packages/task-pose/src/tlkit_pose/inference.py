"""`tlkit pose inference -m MODEL (.tlk|.onnx) -i | -d | --input IMAGE|DIR|LIST.txt|VIDEO -r RESULTS`.

Images (one, a folder with its sub-folders, or a .txt list): RESULTS/images_annotated/<name> (skeleton overlays,
<name> = the image's path below the folder given; --no_visualizations skips them) and RESULTS/detections.json
(COCO keypoint results, image_id = position in sorted order, plus file_name).
A video file: RESULTS/<stem>_annotated.mp4 (every frame annotated) and RESULTS/<stem>_detections.json
(image_id = frame index). Unreadable images are skipped and reported by name (`--strict`: stop at the first).
"""

from __future__ import annotations

import json
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
    read_bgr,
    resolve_inputs,
)
from tlkit.io import atomic_write_text
from tlkit_pose.postprocess import Person, to_coco_results
from tlkit_pose.skeleton import LIMBS

if TYPE_CHECKING:
    from tlkit.context import CommandContext

# one colour per limb (BGR), OpenPose-like rainbow
_COLORS = [
    tuple(int(c) for c in np.array(__import__("colorsys").hsv_to_rgb(i / len(LIMBS), 1.0, 1.0))[::-1] * 255)
    for i in range(len(LIMBS))
]


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


def infer_images(
    predictor: Any,
    inputs: Inputs | Sequence[Path],
    out_dir: Path,
    visualize: bool = True,
    skipped: SkippedImages | None = None,
) -> dict[str, Any]:
    """Unreadable images are left out and listed in `skipped` (without it, the first one is a DataError; when all
    are, a DataError and no detections.json); the image_id of a result stays its position in the inputs."""
    import cv2

    from tlkit.io import atomic_write_bytes

    if not isinstance(inputs, Inputs):
        inputs = Inputs(images=tuple(Path(p) for p in inputs))
    files = list(inputs.images)
    results: list[dict] = []
    vis_dir = out_dir / "images_annotated"
    skipped = skipped if skipped is not None else SkippedImages(strict=True)
    for batch in read_batches(files, predictor.batch_size, read_bgr, skipped):
        imgs = [img for _, _, img in batch]
        for (image_id, f, img), people in zip(batch, predictor.people(imgs)):
            for r in to_coco_results(people, image_id):
                results.append({**r, "file_name": str(f)})
            if visualize:
                ok, buf = cv2.imencode(
                    f.suffix if f.suffix.lower() in IMAGE_EXTENSIONS else ".png", draw_people(img, people)
                )
                atomic_write_bytes(vis_dir / inputs.name(f), buf.tobytes())
    skipped.require_some(len(files), inputs.source)
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
                writer = cv2.VideoWriter(
                    str(tmp_path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (frame.shape[1], frame.shape[0])
                )
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


def run(ctx: CommandContext) -> dict[str, Any]:
    from tlkit_pose.predict import PosePredictor, spec_inference

    if ctx.model is None:
        raise TlkitError("tlkit pose inference: -m/--model (a .tlk or .onnx pose model) is required")
    inputs = resolve_inputs(inference_source(ctx.options, "tlkit pose inference", ("image", "image_dir", "input")))
    out_dir = ctx.require_results_dir()
    predictor = PosePredictor.from_model(ctx.model, spec_inference(ctx.spec), batch_size=int(ctx.option("batch_size")))
    if inputs.video is not None:
        res = infer_video(predictor, inputs.video, out_dir)
        ctx.console.print(f"{res['frames']} frames, {res['people']} people: {res['video']}, {res['detections']}")
    else:
        skipped = SkippedImages(strict=bool(ctx.option("strict")))
        visualize = not ctx.option("no_visualizations")
        res = infer_images(predictor, inputs, out_dir, visualize=visualize, skipped=skipped)
        skipped.warn(ctx.console)
        ctx.console.print(
            f"{res['images']} image(s), {res['people']} people: {res['detections']}"
            + (f", overlays in {res['annotated_dir']}" if res["annotated_dir"] else "")
        )
    return res
