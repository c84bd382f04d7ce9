"""Dataset conversion between Pascal VOC, COCO json and KITTI labels.

Every reader returns `(samples, report)`: `Sample`s with the image path, its real size and KITTI objects,
and a `ConvertReport` that counts each kind of label problem instead of hiding it:

* box_clipped        -- a box reaching outside the image: clipped to the image;
* zero_size_box      -- zero width or height (after clipping): dropped;
* unknown_class      -- a class not in the requested `classes`: dropped;
* missing_label      -- an image without a label file: skipped;
* missing_image      -- a label/annotation whose image file is missing: skipped;
* unreadable_image   -- an image file that does not decode completely (truncated, not an image): skipped.

Malformed label files (bad XML, a KITTI line with a wrong field, a COCO json without `images`) raise
`DataError` naming the file (and line) instead.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlkit.errors import DataError
from tlkit.images import IMAGE_EXTENSIONS, image_problem
from tlkit.io import atomic_write_text, make_dir, read_json
from tlkit_detection.kitti import KittiObject, read_label, write_label

KINDS = {
    "box_clipped": "boxes outside the image (clipped)",
    "zero_size_box": "zero-size boxes (dropped)",
    "unknown_class": "objects of unknown classes (dropped)",
    "missing_label": "images without a label file (skipped)",
    "missing_image": "labels whose image is missing (skipped)",
    "unreadable_image": "unreadable or truncated images (skipped)",
}
MAX_EXAMPLES = 5


@dataclass
class Sample:
    frame_id: str
    image_path: Path
    width: int
    height: int
    objects: list[KittiObject]


@dataclass
class ConvertReport:
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    unknown_classes: Counter = field(default_factory=Counter)
    images: int = 0
    objects: int = 0

    def add(self, kind: str, where: str) -> None:
        assert kind in KINDS, kind
        self.counts[kind] += 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(where)

    def merge(self, other: ConvertReport) -> None:
        """Add another source's counts (several COCO files converted together)."""
        for kind, n in other.counts.items():
            self.counts[kind] += n
            ex = self.examples.setdefault(kind, [])
            ex += other.examples.get(kind, [])[: MAX_EXAMPLES - len(ex)]
        self.unknown_classes.update(other.unknown_classes)
        self.images += other.images
        self.objects += other.objects

    @property
    def problems(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        lines = [f"{self.images} images, {self.objects} objects kept"]
        for kind, text in KINDS.items():
            n = self.counts.get(kind, 0)
            if n:
                extra = (
                    f" ({', '.join(f'{k}: {v}' for k, v in self.unknown_classes.most_common())})"
                    if kind == "unknown_class"
                    else ""
                )
                lines.append(f"  {n} {text}{extra}; e.g. {'; '.join(self.examples[kind])}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "objects": self.objects,
            "problems": {k: self.counts.get(k, 0) for k in KINDS},
            "examples": self.examples,
            "unknown_classes": dict(self.unknown_classes),
        }


def image_size(path: Path, report: ConvertReport) -> tuple[int, int] | None:
    """(width, height) of an image that decodes completely (a truncated file is caught here, not in
    training); None, counted in `report` as unreadable_image with the reason, when it does not."""
    size, problem = image_problem(path)
    if problem is not None:
        report.add("unreadable_image", f"{path} ({problem})")
    return size


def sanitize(
    objects: Iterable[KittiObject],
    width: int,
    height: int,
    where: str,
    report: ConvertReport,
    classes: Sequence[str] | None = None,
) -> list[KittiObject]:
    """Clip boxes to the image, drop zero-size boxes and unknown classes, counting each in `report`."""
    keep = []
    wanted = {c.lower() for c in classes} if classes else None
    for i, o in enumerate(objects, 1):
        if wanted is not None and o.type.lower() not in wanted and o.type.lower() != "dontcare":
            report.add("unknown_class", f"{where} object {i} ({o.type})")
            report.unknown_classes[o.type] += 1
            continue
        x1, y1, x2, y2 = o.bbox
        c = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
        if c != (x1, y1, x2, y2):
            report.add("box_clipped", f"{where} object {i} ({o.type} {x1:g},{y1:g},{x2:g},{y2:g} in {width}x{height})")
            o.bbox = c
        if c[2] - c[0] <= 0 or c[3] - c[1] <= 0:
            report.add("zero_size_box", f"{where} object {i} ({o.type} {x1:g},{y1:g},{x2:g},{y2:g})")
            continue
        keep.append(o)
    report.objects += len(keep)
    return keep


# -- KITTI ------------------------------------------------------------------------------------------------


def read_kitti(
    root: str | Path,
    image_dir_name: str = "images",
    label_dir_name: str = "labels",
    image_extension: str | None = None,
    classes: Sequence[str] | None = None,
) -> tuple[list[Sample], ConvertReport]:
    """A KITTI folder: `root/<image_dir_name>/<id><ext>` and `root/<label_dir_name>/<id>.txt`."""
    root = Path(root)
    image_dir, label_dir = root / image_dir_name, root / label_dir_name
    for d, what in ((image_dir, "image"), (label_dir, "label")):
        if not d.is_dir():
            raise DataError(f"{d}: KITTI {what} directory not found")
    exts = (_norm_ext(image_extension),) if image_extension else IMAGE_EXTENSIONS
    images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in exts)
    if not images:
        found = sorted({p.suffix.lower() for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS})
        hint = f" (the folder holds {', '.join(found)}: set image_extension to it, or leave it out)" if found else ""
        raise DataError(f"{image_dir}: no images with extension {', '.join(exts)}{hint}")
    report = ConvertReport()
    samples = []
    stems = set()
    for img in images:
        stems.add(img.stem)
        label = label_dir / f"{img.stem}.txt"
        if not label.is_file():
            report.add("missing_label", str(img))
            continue
        objs = read_label(label)
        size = image_size(img, report)
        if size is None:
            continue
        samples.append(Sample(img.stem, img, size[0], size[1], sanitize(objs, *size, str(label), report, classes)))
    for label in sorted(label_dir.glob("*.txt")):
        if label.stem not in stems:
            report.add("missing_image", str(label))
    report.images = len(samples)
    return samples, report


def write_kitti(samples: Sequence[Sample], out_dir: str | Path, link_images: bool = True) -> Path:
    """Write `out_dir/images` (symlinks, or copies) and `out_dir/labels` in KITTI format."""
    out = Path(out_dir)
    make_dir(out / "images")
    for s in samples:
        dst = out / "images" / f"{s.frame_id}{s.image_path.suffix}"
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if link_images:
            os.symlink(s.image_path.resolve(), dst)
        else:
            shutil.copyfile(s.image_path, dst)
        write_label(out / "labels" / f"{s.frame_id}.txt", s.objects)
    return out


def _norm_ext(ext: str) -> str:
    ext = ext.lower()
    return ext if ext.startswith(".") else "." + ext


# -- Pascal VOC --------------------------------------------------------------------------------------------


def read_voc(
    root: str | Path,
    image_set: str | None = None,
    classes: Sequence[str] | None = None,
    include_difficult: bool = True,
    image_dir_name: str = "JPEGImages",
    annotation_dir_name: str = "Annotations",
) -> tuple[list[Sample], ConvertReport]:
    """Pascal VOC: `Annotations/*.xml`, `JPEGImages/` (or the folder names given), optionally only the ids in
    ImageSets/Main/<image_set>.txt."""
    import xml.etree.ElementTree as ET

    root = Path(root)
    ann_dir, img_dir = root / annotation_dir_name, root / image_dir_name
    for d, what in ((ann_dir, "annotation_dir_name"), (img_dir, "image_dir_name")):
        if not d.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise DataError(
                f"{root}: not a Pascal VOC folder: no {d.name}/ (set {what}; its folders: {present or 'none'})"
            )
    report = ConvertReport()
    if image_set:
        list_file = root / "ImageSets" / "Main" / f"{image_set}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: image set not found")
        ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
    else:
        ids = sorted(p.stem for p in ann_dir.glob("*.xml"))
        annotated = set(ids)
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.stem not in annotated:
                report.add("missing_label", str(p))
    samples = []
    for frame in ids:
        xml = ann_dir / f"{frame}.xml"
        if not xml.is_file():
            report.add("missing_label", f"{frame} (no {xml.name})")
            continue
        try:
            tree = ET.parse(xml).getroot()
        except ET.ParseError as err:
            raise DataError(f"{xml}:{err.position[0]}: not valid XML: {err}") from None
        fname = (tree.findtext("filename") or "").strip()
        img = img_dir / fname if fname and (img_dir / fname).is_file() else _find_image(img_dir, frame)
        if img is None:
            report.add("missing_image", str(xml))
            continue
        size = image_size(img, report)
        if size is None:
            continue
        objs = []
        for i, obj in enumerate(tree.iter("object"), 1):
            if not include_difficult and (obj.findtext("difficult") or "0").strip() == "1":
                continue
            name = (obj.findtext("name") or "").strip()
            try:  # a missing bndbox or coordinate reads as "": ValueError
                x1, y1, x2, y2 = (float(obj.findtext(f"bndbox/{k}", "")) for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError:
                raise DataError(
                    f"{xml}: object {i} ({name or '?'}): bndbox needs numeric xmin, ymin, xmax, ymax"
                ) from None
            if not name:
                raise DataError(f"{xml}: object {i}: missing <name>")
            if x2 < x1 or y2 < y1:
                raise DataError(f"{xml}: object {i} ({name}): xmax < xmin or ymax < ymin ({[x1, y1, x2, y2]})")
            truncated = 1.0 if (obj.findtext("truncated") or "0").strip() == "1" else 0.0
            objs.append(KittiObject(type=name, bbox=(x1, y1, x2, y2), truncated=truncated))
        samples.append(Sample(frame, img, size[0], size[1], sanitize(objs, *size, str(xml), report, classes)))
    report.images = len(samples)
    return samples, report


def _find_image(img_dir: Path, frame: str) -> Path | None:
    for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        p = img_dir / f"{frame}{ext}"
        if p.is_file():
            return p
    return None


# -- COCO ---------------------------------------------------------------------------------------------------


def read_coco(
    annotation_file: str | Path, image_dir: str | Path, classes: Sequence[str] | None = None
) -> tuple[list[Sample], ConvertReport]:
    """COCO detection json (bbox = x, y, w, h); crowd boxes become KITTI DontCare regions."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    data = read_json(annotation_file, "COCO annotation file")
    if not isinstance(data, dict):
        raise DataError(f"{annotation_file}: expected a JSON object with 'images', 'annotations', 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{annotation_file}: expected a '{key}' list (COCO detection format)")
    required = {"categories": ("id", "name"), "annotations": ("image_id",), "images": ("id", "file_name")}
    for key, fields in required.items():
        for i, entry in enumerate(data[key]):
            lacking = [f for f in fields if not isinstance(entry, dict) or f not in entry]
            if lacking:
                raise DataError(f"{annotation_file}: {key}[{i}] has no '{lacking[0]}' (COCO detection format)")
    cats = {c["id"]: c["name"] for c in data["categories"]}
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    report = ConvertReport()
    samples = []
    for im in data["images"]:
        img = image_dir / im["file_name"]
        if not img.is_file():
            report.add("missing_image", f"{annotation_file} image id {im['id']} ({im['file_name']})")
            continue
        size = image_size(img, report)
        if size is None:
            continue
        objs = []
        for a in by_image.get(im["id"], []):
            where = f"{annotation_file} annotation id {a.get('id')}"
            if a.get("category_id") not in cats:
                raise DataError(f"{where}: category_id {a.get('category_id')} is not in 'categories'")
            try:
                x, y, w, h = (float(v) for v in a["bbox"])
            except (KeyError, TypeError, ValueError):
                raise DataError(f"{where}: 'bbox' must be [x, y, width, height]") from None
            if w < 0 or h < 0:
                raise DataError(f"{where}: negative bbox width or height ({w}, {h})")
            name = "DontCare" if a.get("iscrowd") else cats[a["category_id"]]
            objs.append(KittiObject(type=name, bbox=(x, y, x + w, y + h)))
        frame = Path(im["file_name"]).stem
        samples.append(
            Sample(
                frame,
                img,
                size[0],
                size[1],
                sanitize(objs, *size, f"{annotation_file} image {im['file_name']}", report, classes),
            )
        )
    report.images = len(samples)
    return samples, report


# -- the registered dataset formats (DatasetFormatSpec.load): one signature, `load(source, options)` --------------
# `options` are the keys of the -d spec's kitti_config / voc_config / coco_config section plus `classes` (keep only
# these; None = all); a key not given takes the section's default. Each returns `(samples, report)`.


def load_kitti(source: str | Path, options: dict) -> tuple[list[Sample], ConvertReport]:
    """`kitti`: `source` is the KITTI root folder."""
    return read_kitti(
        source,
        options.get("image_dir_name") or "images",
        options.get("label_dir_name") or "labels",
        options.get("image_extension"),
        options.get("classes"),
    )


def load_voc(source: str | Path, options: dict) -> tuple[list[Sample], ConvertReport]:
    """`voc`: `source` is the VOC root folder."""
    return read_voc(
        source,
        options.get("image_set"),
        options.get("classes"),
        options.get("include_difficult", True),
        options.get("image_dir_name") or "JPEGImages",
        options.get("annotation_dir_name") or "Annotations",
    )


def load_coco(source: str | Path, options: dict) -> tuple[list[Sample], ConvertReport]:
    """`coco`: `source` is the instances json; `image_directory_path` its image folder (default: the json's)."""
    source = Path(source)
    return read_coco(source, options.get("image_directory_path") or source.parent, options.get("classes"))


def write_coco(samples: Sequence[Sample], out_json: str | Path, classes: Sequence[str] | None = None) -> Path:
    """COCO detection json; DontCare objects become crowd boxes of the first category."""
    names = (
        list(classes)
        if classes
        else sorted({o.type for s in samples for o in s.objects if o.type.lower() != "dontcare"})
    )
    cat_id = {n: i + 1 for i, n in enumerate(names)}
    images: list[dict] = []
    anns: list[dict] = []
    for img_id, s in enumerate(samples, 1):
        images.append({"id": img_id, "file_name": s.image_path.name, "width": s.width, "height": s.height})
        for o in s.objects:
            crowd = o.type.lower() == "dontcare"
            if (not crowd and o.type not in cat_id) or (crowd and not names):
                continue
            x1, y1, x2, y2 = o.bbox
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img_id,
                    "category_id": cat_id[names[0]] if crowd else cat_id[o.type],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(crowd),
                }
            )
    data = {"images": images, "annotations": anns, "categories": [{"id": i, "name": n} for n, i in cat_id.items()]}
    atomic_write_text(out_json, json.dumps(data))
    return Path(out_json)
