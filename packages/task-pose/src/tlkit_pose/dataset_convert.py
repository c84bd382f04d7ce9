"""`tlkit pose dataset_convert`: a COCO keypoints json -> sharded MXNet RecordIO (TLT's TFRecords step).

Output: `<prefix>-<mode>-fold-PPP-of-NNN-shard-SSSSS-of-MMMMM.rec` with its `.idx` (mxnet.recordio
MXIndexedRecordIO) and `<prefix>-<mode>.json`, a manifest of files, counts and label problems. There is one
record per image that has a non-crowd person with labeled keypoints (TLT skips the others too; unlike TLT
an image is not duplicated per "main person": augmentation picks the person). Images are dealt to
partitions (folds) round-robin in image-id order as TLT does, then to shards.

Record payload (after the IRHeader, whose `label` is the image id): a 4-byte little-endian length + JSON
metadata (image id, file name, size, the people's COCO keypoints, boxes, areas, crowd flags), then the
original encoded image bytes, then (with --generate_masks) the loss mask as a PNG; lengths prefix each part.
`read_record` decodes it back.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.errors import DataError, TlkitError
from tlkit.images import image_problem
from tlkit.io import atomic_write_text, make_dir
from tlkit.recordfile import record_writer
from tlkit_pose.coco import CocoImage, CocoKeypoints, loss_mask

if TYPE_CHECKING:
    from tlkit.context import CommandContext


def _part(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


def encode_record(image: CocoImage, image_bytes: bytes, mask: np.ndarray | None) -> bytes:
    """One image's payload (see the module doc)."""
    import cv2

    meta = {
        "image_id": image.id,
        "file_name": image.file_name,
        "height": image.height,
        "width": image.width,
        "keypoints": [a["keypoints"] for a in image.annotations],
        "bbox": [a["bbox"] for a in image.annotations],
        "area": [a["area"] for a in image.annotations],
        "iscrowd": [a["iscrowd"] for a in image.annotations],
        "num_keypoints": [a["num_keypoints"] for a in image.annotations],
        "has_mask": mask is not None,
    }
    mask_bytes = b""
    if mask is not None:
        ok, buf = cv2.imencode(".png", (mask > 0).astype(np.uint8) * 255)
        mask_bytes = buf.tobytes()
    return _part(json.dumps(meta).encode()) + _part(image_bytes) + _part(mask_bytes)


def read_record(record: bytes, decode_image: bool = True) -> dict[str, Any]:
    """A packed record (as read from the .rec) -> meta dict + "image" (H, W, 3 BGR uint8, or the encoded
    bytes when decode_image=False), "keypoints" (P, 17, 3) and "mask" ((H, W) uint8 0/1 or None)."""
    import cv2
    from mxnet import recordio

    header, payload = recordio.unpack(record)
    parts, off = [], 0
    for _ in range(3):
        (n,) = struct.unpack_from("<I", payload, off)
        parts.append(payload[off + 4 : off + 4 + n])
        off += 4 + n
    meta = json.loads(parts[0])
    meta["image"] = cv2.imdecode(np.frombuffer(parts[1], np.uint8), cv2.IMREAD_COLOR) if decode_image else parts[1]
    meta["keypoints"] = np.array(meta["keypoints"], dtype=np.float64).reshape(-1, 17, 3)
    meta["mask"] = (
        (cv2.imdecode(np.frombuffer(parts[2], np.uint8), cv2.IMREAD_GRAYSCALE) > 0).astype(np.uint8)
        if parts[2]
        else None
    )
    meta["record_label"] = float(header.label)
    return meta


def shard_name(prefix: Path, mode: str, p: int, n_p: int, s: int, n_s: int) -> Path:
    return prefix.parent / f"{prefix.name}-{mode}-fold-{p:03d}-of-{n_p:03d}-shard-{s:05d}-of-{n_s:05d}.rec"


def convert(
    ds: CocoKeypoints,
    prefix: Path,
    mode: str = "train",
    num_partitions: int = 1,
    num_shards: int = 1,
    generate_masks: bool = False,
    image_root: Path | None = None,
    min_keypoints_for_mask: int = 1,
) -> dict[str, Any]:
    """Write the shards; returns the manifest (also written next to them). Every image is decoded once:
    missing, unreadable (truncated) and wrongly sized ones are skipped and listed in the manifest."""
    from mxnet import recordio

    if num_partitions < 1 or num_shards < 1:
        raise TlkitError(f"--num_partitions and --num_shards must be >= 1, got {num_partitions} and {num_shards}")
    images = [
        im
        for _, im in sorted(ds.images.items())
        if any(not a["iscrowd"] and a["num_keypoints"] > 0 for a in im.annotations)
    ]
    if not images:
        raise DataError(f"{ds.path}: no image has a person with labeled keypoints; nothing to convert")
    if not any(ds.image_path(im, image_root).is_file() for im in images):  # before writing any shard
        first = ds.image_path(images[0], image_root)
        raise DataError(
            f"{ds.path}: none of the {len(images)} images could be used (first: {first} not found); check --image_root"
        )
    skipped: dict[str, list[str]] = {"missing": [], "unreadable": [], "size_mismatch": []}
    make_dir(prefix.parent)
    folds = [images[p::num_partitions] for p in range(num_partitions)]
    files, counts = [], []
    for p, fold in enumerate(folds):
        for s in range(num_shards):
            shard = fold[s::num_shards]
            rec_path = shard_name(prefix, mode, p, num_partitions, s, num_shards)
            n = 0
            with record_writer(rec_path) as writer:  # both files appear only once complete
                for im in shard:
                    path = ds.image_path(im, image_root)
                    if not path.is_file():
                        skipped["missing"].append(str(path))
                        continue
                    data = path.read_bytes()
                    size, problem = image_problem(data)
                    if problem is not None:
                        skipped["unreadable"].append(f"{path} ({problem})")
                        continue
                    assert size is not None  # it decodes: image_problem gives its size
                    if size != (im.width, im.height):
                        json_size = f"{im.width}x{im.height}"
                        skipped["size_mismatch"].append(f"{path} is {size[0]}x{size[1]}, json says {json_size}")
                        continue
                    mask = loss_mask(im, min_keypoints_for_mask) if generate_masks else None
                    header = recordio.IRHeader(0, float(im.id), n, 0)
                    writer.write_idx(n, recordio.pack(header, encode_record(im, data, mask)))
                    n += 1
            files.append(str(rec_path))
            counts.append(n)
    if not sum(counts):
        first_skipped = next((v[0] for v in skipped.values() if v), "")
        raise DataError(
            f"{ds.path}: none of the {len(images)} images could be used (first: {first_skipped}); check --image_root"
        )
    manifest = {
        "annotations": str(ds.path),
        "mode": mode,
        "num_partitions": num_partitions,
        "num_shards": num_shards,
        "generate_masks": generate_masks,
        "files": files,
        "records_per_file": counts,
        "num_records": int(sum(counts)),
        "num_people": int(
            sum(sum(1 for a in im.annotations if not a["iscrowd"] and a["num_keypoints"] > 0) for im in images)
        ),
        "skipped_images": {k: v for k, v in skipped.items() if v},
        "label_problems": dict(ds.problems),
    }
    atomic_write_text(prefix.parent / f"{prefix.name}-{mode}.json", json.dumps(manifest, indent=2))
    return manifest


def dataset_spec_split(path: Path, mode: str, overrides: list[str] | None = None) -> tuple[Path, Path | None]:
    """(annotations json, image folder) of `mode`'s split in a dataset spec (TLT's coco_spec.json)."""
    from tlkit.config import load_spec
    from tlkit_pose.config import PoseDatasetSpec

    ds: Any = load_spec(path, PoseDatasetSpec, overrides)
    key = "train_data" if mode == "train" else "test_data"
    split = getattr(ds, key)
    if split is None:
        raise TlkitError(f"{path}: --mode {mode} needs {key} in the dataset spec")
    root = Path(ds.root_directory_path)
    root = root if root.is_absolute() else path.parent / root
    images = root / split.images_root_dir_path if split.images_root_dir_path else None
    return root / split.annotation_root_dir_path, images


def dataset_format(name: str) -> Any:
    """The `load(source, options) -> CocoKeypoints` of the registered pose dataset format `name`."""
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    return resolve(get_registry().dataset_format("pose", name).load)


def run(ctx: CommandContext) -> dict[str, Any]:
    """`tlkit pose dataset_convert`."""
    spec = ctx.spec
    mode = ctx.option("mode")
    ann = ctx.option("annotations")
    root = ctx.option("image_root")
    if ann is None and ctx.option("dataset_spec") is not None:
        ann, spec_root = dataset_spec_split(Path(ctx.option("dataset_spec")), mode, ctx.overrides)
        root = root or spec_root
    dl = spec.dataloader if spec is not None else None
    if ann is None and dl is not None:
        ann = dl.train_annotations if mode == "train" else dl.val_annotations
        root = root or (dl.train_images if mode == "train" else dl.val_images)
    if ann is None:
        raise TlkitError(
            f"tlkit pose dataset_convert: give -a/--annotations COCO.json (or dataloader.{'train' if mode == 'train' else 'val'}_annotations in the spec)"
        )
    strict = ctx.option("strict") or (dl is not None and not dl.skip_bad_labels)
    ds = dataset_format(ctx.option("input_format"))(Path(ann), {"strict": strict})
    for line in ds.problem_report():
        ctx.console.print(f"label problem: {line}", markup=False)
    if ctx.output is not None:
        prefix = Path(ctx.output)
        prefix = prefix.with_suffix("") if prefix.suffix == ".rec" else prefix
    else:
        prefix = ctx.require_results_dir() / "pose"
    manifest = convert(
        ds,
        prefix,
        mode=mode,
        num_partitions=int(ctx.option("num_partitions")),
        num_shards=int(ctx.option("num_shards")),
        generate_masks=bool(ctx.option("generate_masks")),
        image_root=Path(root) if root else None,
        min_keypoints_for_mask=dl.min_keypoints_for_mask if dl is not None else 1,
    )
    for kind, items in manifest["skipped_images"].items():
        more = " ..." if len(items) > 1 else ""
        ctx.console.print(f"skipped {len(items)} image(s), {kind}: {items[0]}{more}", markup=False, soft_wrap=True)
    ctx.console.print(
        f"Wrote {manifest['num_records']} images ({manifest['num_people']} people) to {len(manifest['files'])} file(s): {manifest['files'][0]} ...",
        markup=False,
    )
    return {"num_records": manifest["num_records"], "files": manifest["files"]}
