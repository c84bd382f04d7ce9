"""`tlkit classification dataset_convert`: make folder-per-class datasets.

- ``--mode split``: split one ``<dir>/<class>/<image>`` set into ``<out>/{train,val,test}/<class>/`` by
  ratios, stratified (each class split by the same ratios) and reproducible (``--seed``).
- ``--mode voc`` (the registered ``voc`` dataset format; ``--input_format NAME`` reads with any registered
  classification format, e.g. a plugin's, the same way): Pascal VOC (``Annotations/*.xml`` + ``JPEGImages/``, or the folders ``--annotation_dir_name``
  / ``--image_dir_name`` name) to ``<out>/<class>/``, either one crop per object (``--voc_label crop``) or each
  whole image labelled by its largest object (``--voc_label dominant``). Degenerate boxes (zero width/height,
  outside the image) are skipped and counted. With ``--ratios`` the result is then split as above; with
  ``--train_list/--val_list/--test_list`` (id files, or ImageSets/Main names) each listed split goes to
  ``<out>/<split>/<class>/`` as the lists say.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tlkit.context import print_warning
from tlkit.errors import DataError, TlkitError
from tlkit.images import IMAGE_EXTENSIONS, SkippedImages, image_problem
from tlkit.io import atomic_write_bytes, make_dir

if TYPE_CHECKING:
    from tlkit.context import CommandContext

SPLITS = ("train", "val", "test")


def parse_ratios(text: str | tuple | list) -> tuple[float, float, float]:
    """'0.7,0.2,0.1' -> (0.7, 0.2, 0.1); two values mean no test split. They must sum to 1."""
    vals = text.split(",") if isinstance(text, str) else list(text)
    try:
        r = [float(v) for v in vals]
    except ValueError:
        raise TlkitError(f"--ratios {text!r}: expected numbers like 0.7,0.2,0.1 (train,val[,test])") from None
    if len(r) == 2:
        r.append(0.0)
    if len(r) != 3 or any(v < 0 for v in r) or abs(sum(r) - 1.0) > 1e-6 or r[0] <= 0:
        raise TlkitError(f"--ratios {text!r}: expected 2 or 3 non-negative fractions summing to 1, train > 0")
    return r[0], r[1], r[2]


def _split_counts(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Largest-remainder allocation; then a split with a positive ratio gets >= 1 image when n allows, the
    test split first (an evaluation without a class says nothing about it), then val; train keeps >= 1."""
    raw = [n * r for r in ratios]
    counts = [int(x) for x in raw]
    for i in sorted(range(3), key=lambda i: raw[i] - counts[i], reverse=True)[: n - sum(counts)]:
        counts[i] += 1
    floor = [1, 0, 0]  # images a split must keep when giving one away
    for i in (2, 1):
        if ratios[i] > 0 and counts[i] == 0:
            donor = max((j for j in range(3) if j != i), key=lambda j: counts[j] - floor[j])
            if counts[donor] > floor[donor]:
                counts[donor] -= 1
                counts[i] += 1
        floor[i] = min(counts[i], 1)
    return counts


def _place(src: Path, dst: Path, link: bool) -> None:
    make_dir(dst.parent)
    if link:
        if dst.exists() or dst.is_symlink():
            dst.unlink()
        dst.symlink_to(src.resolve())
    else:
        atomic_write_bytes(dst, src.read_bytes())


def split_folder(
    src: str | Path,
    out: str | Path,
    ratios: tuple[float, float, float] = (0.7, 0.2, 0.1),
    seed: int = 42,
    *,
    link: bool = False,
    extensions: tuple[str, ...] | list[str] = IMAGE_EXTENSIONS,
    skipped: SkippedImages | None = None,
) -> dict[str, dict[str, int]]:
    """Stratified split of a folder-per-class set. Returns {split: {class: count}}.

    Every image is decoded once: unreadable or truncated ones are left out and listed in `skipped` (without
    it, the first one is a DataError). A class gets an image in the test split (and val) whenever it has
    enough; one with a single image and a test split is a DataError."""
    skipped = skipped if skipped is not None else SkippedImages(strict=True)
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError(f"{src}: dataset directory not found")
    classes = sorted(d.name for d in src.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{src}: no class folders; expected {src}/<class_name>/<image files>")
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise TlkitError(f"-o {out}: must not be inside the input dataset {src}")
    exts = {e.lower() for e in extensions}
    counts: dict[str, dict[str, int]] = {s: {} for s in SPLITS}
    for ci, cls in enumerate(classes):
        files = sorted(p for p in (src / cls).rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise DataError(f"{src / cls}: class folder has no images")
        readable = []
        for f in files:
            problem = image_problem(f)[1]
            if problem is None:
                readable.append(f)
            else:
                skipped.add(f, problem)
        if not readable:
            raise DataError(
                f"{src / cls}: none of the class's {len(files)} image(s) can be decoded ({files[0].name}: {problem})"
            )
        files = readable
        if len(files) == 1 and ratios[2] > 0:
            raise DataError(
                f"{src / cls}: 1 readable image; a class needs at least 2 to be in both the train and the test "
                f"split (3 for val too): add images or give --ratios without a test split"
            )
        order = np.random.default_rng([seed, ci]).permutation(len(files))
        n_train, n_val, _ = _split_counts(len(files), ratios)
        bounds = {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
        for split, idx in bounds.items():
            for i in idx:
                f = files[int(i)]
                _place(f, out / split / cls / f.relative_to(src / cls), link)
            counts[split][cls] = len(idx)
    return counts


# -- Pascal VOC ----------------------------------------------------------------------------------------


@dataclass
class VocObject:
    name: str
    box: tuple[int, int, int, int]  # xmin, ymin, xmax, ymax (pixels, inclusive-exclusive after clipping)
    difficult: bool = False


@dataclass
class VocImage:
    image: Path
    objects: list[VocObject] = field(default_factory=list)
    skipped: int = 0  # degenerate boxes


def parse_voc_xml(xml_path: Path, images_dir: Path) -> VocImage:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise DataError(f"{xml_path}: not valid XML: {err}") from None
    fname = root.findtext("filename")
    if not fname:
        fname = xml_path.stem + ".jpg"
    image = images_dir / fname.strip()
    if not image.is_file():
        alt = [p for p in images_dir.glob(xml_path.stem + ".*")]
        if not alt:
            raise DataError(f"{xml_path}: its image {image} does not exist")
        image = alt[0]
    size = root.find("size")
    w = int(float(size.findtext("width", "0"))) if size is not None else 0
    h = int(float(size.findtext("height", "0"))) if size is not None else 0
    out = VocImage(image)
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not name or bb is None:
            raise DataError(f"{xml_path}: object {i} lacks <name> or <bndbox>")
        try:
            x0, y0, x1, y1 = (float(bb.findtext(k, "")) for k in ("xmin", "ymin", "xmax", "ymax"))  # missing: ""
        except ValueError:
            raise DataError(f"{xml_path}: object {i} ({name}): bndbox needs numeric xmin, ymin, xmax, ymax") from None
        if x1 <= x0 or y1 <= y0:  # zero width/height (BCCD has a few): no object to crop
            out.skipped += 1
            continue
        # VOC boxes are 1-based inclusive; convert to 0-based half-open and clip to the image
        x0, y0 = max(0, int(round(x0)) - 1), max(0, int(round(y0)) - 1)
        x1, y1 = int(round(x1)), int(round(y1))
        if w and h:
            x1, y1 = min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            out.skipped += 1
            continue
        out.objects.append(VocObject(name, (x0, y0, x1, y1), (obj.findtext("difficult") or "0").strip() == "1"))
    return out


def image_list(voc_root: Path, name: str) -> tuple[Path, list[str]]:
    """The ids of a list: a text file (one id per line; VOC lines may carry a flag after the id), or the name
    of an image set in <voc_root>/ImageSets/Main/<name>.txt."""
    p = Path(name)
    list_file = p if p.suffix or "/" in name or p.is_file() else voc_root / "ImageSets" / "Main" / f"{name}.txt"
    if not list_file.is_file():
        raise DataError(f"{list_file}: image list {name!r} not found")
    return list_file, [ln.split()[0] for ln in list_file.read_text().splitlines() if ln.strip()]


@dataclass(frozen=True)
class LabeledImage:
    """What a classification dataset format yields: one image for `<out>/<label>/<name>`."""

    label: str
    name: str
    image: Path | bytes  # an image file (copied as is), or encoded image bytes (e.g. a crop)


def read_voc(source: str | Path, options: dict[str, Any]) -> tuple[Iterator[LabeledImage], Counter]:
    """The registered `voc` dataset format (DatasetFormatSpec.load): Pascal VOC at `source` as LabeledImages, one
    crop per object (options["voc_label"] = "crop", the default) or each image under its largest object
    ("dominant"). Other options (CLI names): image_set, min_size (4), include_difficult, margin, image_dir_name,
    annotation_dir_name, skipped_images (a SkippedImages for unreadable images; without it the first is a
    DataError). The folders and lists are checked now; the returned Counter of skipped objects/images fills in as
    the images are read."""
    voc_root = Path(source)
    mode = options.get("voc_label") or "crop"
    ann_dir = voc_root / (options.get("annotation_dir_name") or "Annotations")
    img_dir = voc_root / (options.get("image_dir_name") or "JPEGImages")
    for d, flag in ((ann_dir, "--annotation_dir_name"), (img_dir, "--image_dir_name")):
        if not d.is_dir():
            present = sorted(p.name for p in voc_root.iterdir() if p.is_dir()) if voc_root.is_dir() else []
            raise DataError(
                f"{voc_root}: not a Pascal VOC folder: no {d.name}/ directory "
                f"(set {flag}; its folders: {present or 'none'})"
            )
    if mode not in ("crop", "dominant"):
        raise TlkitError(f"--voc_label {mode!r}: expected crop or dominant")
    if options.get("image_set"):
        list_file, ids = image_list(voc_root, options["image_set"])
        xmls = [ann_dir / f"{i}.xml" for i in ids]
        missing = [x for x in xmls if not x.is_file()]
        if missing:
            raise DataError(f"{list_file}: lists {missing[0].stem!r} but {missing[0]} does not exist")
    else:
        xmls = sorted(ann_dir.glob("*.xml"))
    if not xmls:
        raise DataError(f"{ann_dir}: no annotation files (*.xml)")
    skipped: Counter = Counter()
    unreadable = options.get("skipped_images")
    unreadable = unreadable if unreadable is not None else SkippedImages(strict=True)
    return _voc_images(xmls, img_dir, mode, options, skipped, unreadable), skipped


def _voc_images(
    xmls: list[Path], img_dir: Path, mode: str, options: dict[str, Any], skipped: Counter, unreadable: SkippedImages
) -> Iterator[LabeledImage]:
    import cv2

    from tlkit_classification.data import read_image

    min_size = int(options["min_size"]) if options.get("min_size") is not None else 4
    margin = float(options.get("margin") or 0.0)
    for xml in xmls:
        rec = parse_voc_xml(xml, img_dir)
        skipped["degenerate_box"] += rec.skipped
        objs = [o for o in rec.objects if options.get("include_difficult") or not o.difficult]
        skipped["difficult"] += len(rec.objects) - len(objs)
        if not objs:
            skipped["image_without_objects"] += 1
            continue
        if mode == "dominant":
            problem = image_problem(rec.image)[1]
            if problem is not None:
                unreadable.add(rec.image, problem)
                skipped["unreadable_image"] += 1
                continue
            best = max(objs, key=lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]))
            yield LabeledImage(best.name, rec.image.name, rec.image)
            continue
        img = read_image(rec.image)
        if img is None:
            unreadable.add(rec.image, image_problem(rec.image)[1] or "OpenCV cannot decode it")
            skipped["unreadable_image"] += 1
            continue
        ih, iw = img.shape[:2]
        for k, o in enumerate(objs):
            x0, y0, x1, y1 = o.box
            if min(x1 - x0, y1 - y0) < min_size:
                skipped["smaller_than_min_size"] += 1
                continue
            mx_, my_ = int((x1 - x0) * margin), int((y1 - y0) * margin)
            x0, y0, x1, y1 = max(0, x0 - mx_), max(0, y0 - my_), min(iw, x1 + mx_), min(ih, y1 + my_)
            crop = cv2.cvtColor(np.ascontiguousarray(img[y0:y1, x0:x1]), cv2.COLOR_RGB2BGR)
            ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
            if not ok:
                raise DataError(f"{rec.image}: could not encode crop {k}")
            yield LabeledImage(o.name, f"{rec.image.stem}_{k:03d}.jpg", buf.tobytes())


def to_class_folders(name: str, source: str | Path, out: str | Path, options: dict[str, Any]) -> dict[str, Any]:
    """Read `source` with the registered classification dataset format `name` and write `<out>/<class>/` folders.
    Returns {"classes": {class: images}, "skipped": {what: count}}."""
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    load = resolve(get_registry().dataset_format("classification", name).load)
    items, skipped = load(Path(source), options)
    return write_class_folders(items, skipped, Path(out), source)


def write_class_folders(items: Iterable[LabeledImage], skipped: Counter, out: Path, source: Any) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    for item in items:
        dst = out / item.label / item.name
        if isinstance(item.image, bytes):
            atomic_write_bytes(dst, item.image)
        else:
            _place(Path(item.image), dst, link=False)
        counts[item.label] += 1
    if not counts:
        raise DataError(f"{source}: no usable objects (skipped: {dict(skipped)})")
    return {"classes": dict(sorted(counts.items())), "skipped": {k: v for k, v in skipped.items() if v}}


def voc_to_folders(
    voc_root: str | Path,
    out: str | Path,
    *,
    mode: str = "crop",
    image_set: str | None = None,
    min_size: int = 4,
    include_difficult: bool = False,
    margin: float = 0.0,
    image_dir_name: str = "JPEGImages",
    annotation_dir_name: str = "Annotations",
    skipped_images: SkippedImages | None = None,
) -> dict[str, Any]:
    """Pascal VOC -> `<out>/<class>/*.jpg` (see `read_voc`). Returns counts per class and what was skipped."""
    options = {
        "voc_label": mode,
        "image_set": image_set,
        "min_size": min_size,
        "include_difficult": include_difficult,
        "margin": margin,
        "image_dir_name": image_dir_name,
        "annotation_dir_name": annotation_dir_name,
        "skipped_images": skipped_images,
    }
    items, skipped = read_voc(voc_root, options)
    return write_class_folders(items, skipped, Path(out), voc_root)


# -- command -------------------------------------------------------------------------------------------


def _print_class_counts(ctx: CommandContext, res: dict[str, Any], title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    table.add_column("class")
    table.add_column("images", justify="right")
    for c, n in res["classes"].items():
        table.add_row(c, str(n))
    ctx.console.print(table)
    if res["skipped"]:
        ctx.console.print("skipped: " + ", ".join(f"{k} {v}" for k, v in res["skipped"].items()))


def run(ctx: CommandContext) -> int:
    from rich.table import Table

    opts = ctx.options
    src = ctx.option("input")
    if not src:
        raise TlkitError("dataset_convert: --input is required (the dataset to convert)")
    out = ctx.output or ctx.results_dir
    if out is None:
        raise TlkitError("dataset_convert: -o/--output is required (where to write the class folders)")
    out = Path(out)
    mode = ctx.option("mode")
    ratios = parse_ratios(opts["ratios"]) if opts.get("ratios") else None
    seed = int(ctx.option("seed"))
    unreadable = SkippedImages()
    # --mode voc is the registered `voc` format; --input_format names any registered classification format
    fmt = ctx.option("input_format") or ("voc" if mode == "voc" else None)
    if fmt:
        what = f"VOC -> class folders ({ctx.option('voc_label')})" if fmt == "voc" else f"{fmt} -> class folders"
        read = {**opts, "skipped_images": unreadable}  # every flag by name: a format takes the ones it knows
        lists = {s: opts.get(f"{s}_list") for s in SPLITS if opts.get(f"{s}_list")}
        if lists:  # a fixed split: each listed split converted on its own
            if ratios or opts.get("image_set"):
                raise TlkitError("--train_list/--val_list/--test_list fix the split: drop --ratios and --image_set")
            for split, name in lists.items():
                res = to_class_folders(fmt, src, out / split, {**read, "image_set": name})
                _print_class_counts(ctx, res, f"{split} ({name}): {what}")
            if unreadable:
                print_warning(ctx.console, unreadable.summary())
            ctx.console.print(f"wrote {', '.join(str(out / s) for s in lists)}")
            return 0
        res = to_class_folders(fmt, src, out / "all" if ratios else out, read)
        _print_class_counts(ctx, res, what)
        if unreadable:
            print_warning(ctx.console, unreadable.summary())
        if not ratios:
            ctx.console.print(f"wrote {out}")
            return 0
        src = out / "all"
    elif mode != "split":
        raise TlkitError(f"--mode {mode!r}: expected split or voc")
    ratios = ratios or (0.7, 0.2, 0.1)
    n_before = len(unreadable)
    counts = split_folder(src, out, ratios, seed, link=bool(opts.get("link")), skipped=unreadable)
    table = Table(title=f"stratified split (seed {seed})")
    table.add_column("class")
    for s in SPLITS:
        table.add_column(s, justify="right")
    for c in counts["train"]:
        table.add_row(c, *(str(counts[s].get(c, 0)) for s in SPLITS))
    ctx.console.print(table)
    if len(unreadable) > n_before:
        print_warning(ctx.console, unreadable.summary())
    for split, ratio in zip(SPLITS, ratios):
        missing = [c for c in counts["train"] if ratio > 0 and counts[split].get(c, 0) == 0]
        if missing:
            print_warning(ctx.console, f"too few images for the {split} split: no {', '.join(missing)} in it")
    ctx.console.print(f"wrote {', '.join(str(out / s) for s in SPLITS if sum(counts[s].values()))}")
    if fmt:
        shutil.rmtree(out / "all")
    return 0
