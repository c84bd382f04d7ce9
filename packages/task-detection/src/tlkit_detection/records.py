"""Sharded MXNet RecordIO datasets for detection (TLT's TFRecords converter, in RecordIO).

`write_records(samples, prefix, partition)` writes, per fold and shard,
`<prefix>-fold-000-of-002-shard-00000-of-00010.rec` + `.idx` (`mxnet.recordio.MXIndexedRecordIO`), and
`<prefix>.json`: the manifest (source classes, folds, shards and their frame ids, conversion report).

A record is the original encoded image bytes with an im2rec-style detection label:
`[4, 7, width, height]` then per object `[class index, x1/W, y1/H, x2/W, y2/H, truncated, occluded]`
(coordinates normalised as `mx.io.ImageDetRecordIter` expects). Class indices point into the manifest's
source `classes`; `RecordReader` maps them to target classes at read time.

Partitioning (`PartitionConfig`): random -> fold 0 is the first `val_split` % of the frames shuffled
with `seed` (validation), fold 1 the rest; sequence -> sequences shuffled with `seed` and dealt
round-robin into `num_partitions` folds. Each fold is split into `num_shards` contiguous shards.
"""

from __future__ import annotations

import glob
import json
import random
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlkit.errors import DataError
from tlkit.images import read_rgb
from tlkit.io import atomic_write_text, make_dir, read_json
from tlkit.recordfile import open_reader, read_record, record_writer
from tlkit_detection.config import PartitionConfig
from tlkit_detection.convert import ConvertReport, Sample

HEADER_WIDTH = 4
OBJECT_WIDTH = 7
MANIFEST_FORMAT = "tlkit-detection-recordio"


def partition_frames(frame_ids: Sequence[str], cfg: PartitionConfig) -> list[list[str]]:
    """Split frame ids into folds as TLT's KITTI converter does (see module doc)."""
    rng = random.Random(cfg.seed)
    frames = list(frame_ids)
    if cfg.partition_mode == "list":
        return _listed_folds(frames, cfg)
    if cfg.partition_mode == "random":
        rng.shuffle(frames)
        n_val = int(cfg.val_split / 100.0 * len(frames))
        return [frames[:n_val], frames[n_val:]]
    sequences = _sequences(frames, cfg)
    names = sorted(sequences)
    rng.shuffle(names)
    folds: list[list[str]] = [[] for _ in range(cfg.num_partitions)]
    for i, name in enumerate(names):
        folds[i % cfg.num_partitions] += sequences[name]
    return folds


def read_id_list(path: str | Path) -> list[str]:
    """Frame ids of a list file: the first word of each line (VOC ImageSets lines may carry a flag after it)."""
    p = Path(path)
    try:
        return [ln.split()[0] for ln in p.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except FileNotFoundError:
        raise DataError(f"{p}: frame list not found") from None


def _listed_folds(frames: list[str], cfg: PartitionConfig) -> list[list[str]]:
    """list mode: [val_list frames, train_list frames (or every other frame)], in list order."""
    present = set(frames)
    assert cfg.val_list  # PartitionConfig requires it in list mode
    val = read_id_list(cfg.val_list)
    train = read_id_list(cfg.train_list) if cfg.train_list else [f for f in frames if f not in set(val)]
    both = sorted(set(val) & set(train))
    if both:
        raise DataError(f"{cfg.train_list} and {cfg.val_list} share {len(both)} frames, e.g. {both[:3]}")
    for name, ids in ((cfg.val_list, val), (cfg.train_list, train)):
        missing = [i for i in ids if i not in present]
        if missing and len(missing) == len(ids):
            raise DataError(f"{name}: none of its {len(ids)} frame ids is in the dataset, e.g. {missing[:3]}")
        if missing:  # images skipped by the reader (missing labels, unreadable): already in the report
            ids[:] = [i for i in ids if i in present]
    return [val, train]


def _sequences(frames: list[str], cfg: PartitionConfig) -> dict[str, list[str]]:
    if not cfg.kitti_sequence_to_frames_file:
        return {f: [f] for f in frames}
    path = Path(cfg.kitti_sequence_to_frames_file)
    mapping = read_json(path, "kitti_sequence_to_frames_file")
    if not isinstance(mapping, dict):
        raise DataError(f"{path}: expected a JSON object {{sequence: [frame ids]}}")
    present = set(frames)
    out, seen = {}, set()
    for seq, ids in mapping.items():
        ids = [str(i) for i in ids if str(i) in present]
        out[str(seq)] = ids
        seen.update(ids)
    missing = sorted(present - seen)
    if missing:
        raise DataError(f"{path}: {len(missing)} frames belong to no sequence, e.g. {missing[:3]}")
    return out


def shard_name(prefix: str | Path, fold: int, num_folds: int, shard: int, num_shards: int) -> str:
    return f"{prefix}-fold-{fold:03d}-of-{num_folds:03d}-shard-{shard:05d}-of-{num_shards:05d}"


def encode_label(sample: Sample, class_index: Mapping[str, int]) -> np.ndarray:
    w, h = float(sample.width), float(sample.height)
    rows = [[HEADER_WIDTH, OBJECT_WIDTH, w, h]]
    for o in sample.objects:
        x1, y1, x2, y2 = o.bbox
        rows.append([class_index[o.type], x1 / w, y1 / h, x2 / w, y2 / h, o.truncated, o.occluded])
    return np.concatenate([np.asarray(r, np.float32) for r in rows])


def write_records(
    samples: Sequence[Sample],
    output_prefix: str | Path,
    partition: PartitionConfig,
    report: ConvertReport | None = None,
    image_extension: str | None = None,
    folds: list[list[str]] | None = None,
) -> dict:
    """Write the folds/shards and the manifest; returns the manifest. `folds` (frame ids per fold) replaces
    the partitioning of `partition` (e.g. one fold per COCO file). A fold gets at most one shard per frame,
    so an empty fold (val_split 0) writes no files."""
    from mxnet import recordio

    if not samples:
        raise DataError(f"{output_prefix}: nothing to convert (no usable images)")
    output_prefix = Path(output_prefix)
    make_dir(output_prefix.parent)
    by_id = {s.frame_id: s for s in samples}
    if len(by_id) != len(samples):
        dup = sorted(k for k, n in Counter(s.frame_id for s in samples).items() if n > 1)
        raise DataError(f"frame ids must be unique (file stems); {len(dup)} repeat, e.g. {dup[:3]}")
    classes = sorted({o.type for s in samples for o in s.objects})
    class_index = {c: i for i, c in enumerate(classes)}
    if folds is None:
        folds = partition_frames(sorted(by_id), partition)
    unknown = sorted({f for fold in folds for f in fold} - set(by_id))
    if unknown:
        raise DataError(f"folds list {len(unknown)} frames that were not converted, e.g. {unknown[:3]}")
    shards = []
    for fold, frame_ids in enumerate(folds):
        n_shards = min(partition.num_shards, len(frame_ids))
        chunks = np.array_split(np.asarray(frame_ids, dtype=object), n_shards) if n_shards else []
        for shard, chunk in enumerate(chunks):
            name = shard_name(output_prefix, fold, len(folds), shard, n_shards)
            rec, idx = Path(name + ".rec"), Path(name + ".idx")
            with record_writer(rec, idx) as writer:
                for i, frame in enumerate(chunk):
                    s = by_id[frame]
                    header = recordio.IRHeader(0, encode_label(s, class_index), i, 0)
                    writer.write_idx(i, recordio.pack(header, s.image_path.read_bytes()))
            shards.append(
                {"fold": fold, "shard": shard, "rec": rec.name, "idx": idx.name, "frames": [str(f) for f in chunk]}
            )
    counts: dict[str, int] = {}
    for s in samples:
        for o in s.objects:
            counts[o.type] = counts.get(o.type, 0) + 1
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "classes": classes,
        "object_counts": counts,
        "partition_mode": partition.partition_mode,
        "num_partitions": len(folds),
        "num_shards": partition.num_shards,
        "frames_per_fold": [len(f) for f in folds],
        "frames_in_no_fold": len(by_id) - sum(len(f) for f in folds),  # list mode: in neither list
        "image_extension": image_extension,
        "shards": shards,
        "report": report.to_dict() if report else None,
    }
    atomic_write_text(f"{output_prefix}.json", json.dumps(manifest, indent=1))
    return manifest


def find_manifest(path: str | Path) -> Path:
    """The manifest for a records_path: the .json itself, its prefix, a folder holding one manifest, or a glob
    (TLT's tfrecords_path, e.g. `tfrecords/kitti_trainval/*`) matching one manifest or the shards of one."""
    text = str(path)
    p = Path(text)
    if p.is_dir():
        text = str(p / "*")
    if not any(ch in text for ch in "*?["):
        return p if p.suffix == ".json" else Path(f"{p}.json")
    hits = sorted(glob.glob(text))
    found = {h for h in hits if h.endswith(".json") and _is_manifest(h)}
    if not found:  # the glob names shards: <prefix>-fold-NNN-of-NNN-shard-...
        found = {m.group(1) + ".json" for h in hits if (m := re.match(r"(.+)-fold-\d{3}-of-\d{3}", h))}
        found = {f for f in found if Path(f).is_file()}
    if len(found) != 1:
        what = "no dataset_convert manifest" if not found else f"{len(found)} manifests ({', '.join(sorted(found))})"
        raise DataError(f"records_path {text!r} matches {what}; give the <prefix>.json that dataset_convert wrote")
    return Path(found.pop())


def _is_manifest(path: str) -> bool:
    try:
        with open(path) as fh:
            return MANIFEST_FORMAT in fh.read(200)
    except OSError:
        return False


def load_manifest(path: str | Path) -> tuple[dict, Path]:
    path = find_manifest(path)
    manifest = read_json(path, "converted dataset manifest", "run `tlkit detection dataset_convert`")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path}: not a tlkit detection dataset manifest (format {found!r})")
    return manifest, path.parent


@dataclass
class DetectionSample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2, pixels
    classes: np.ndarray  # (N,) int64 indices into RecordReader.classes
    frame_id: str
    truncated: np.ndarray | None = None  # (N,) float32, KITTI truncation (for difficulty levels)
    occluded: np.ndarray | None = None  # (N,) int64, KITTI occlusion


class RecordReader:
    """Iterate a converted dataset: yields DetectionSample(image, boxes, classes, frame_id).

    `folds`: which folds to read (None = all). `target_class_mapping`: {source class: target class},
    matched case-insensitively; objects of unmapped classes are dropped (TLT semantics). Without a
    mapping every source class is its own target (DontCare regions included).
    """

    def __init__(
        self,
        manifest: str | Path,
        folds: Sequence[int] | None = None,
        target_class_mapping: Mapping[str, str] | None = None,
    ):
        self.manifest, self.root = load_manifest(manifest)
        self.source_classes: list[str] = self.manifest["classes"]
        n_folds = self.manifest["num_partitions"]
        if folds is not None:
            bad = [f for f in folds if not 0 <= f < n_folds]
            if bad:
                raise DataError(f"{manifest}: fold(s) {bad} do not exist; the dataset has folds 0..{n_folds - 1}")
        self.shards = [s for s in self.manifest["shards"] if folds is None or s["fold"] in folds]
        if target_class_mapping:
            lower = {k.lower(): v for k, v in target_class_mapping.items()}
            self.classes = sorted(set(lower.values()))
            target = [lower.get(c.lower()) for c in self.source_classes]
            self._map = np.array([self.classes.index(t) if t is not None else -1 for t in target], np.int64)
        else:
            self.classes = list(self.source_classes)
            self._map = np.arange(len(self.source_classes), dtype=np.int64)

    def __len__(self) -> int:
        return sum(len(s["frames"]) for s in self.shards)

    @property
    def frame_ids(self) -> list[str]:
        return [f for s in self.shards for f in s["frames"]]

    def __iter__(self) -> Iterator[DetectionSample]:
        from mxnet import recordio

        for shard in self.shards:
            rec, idx = self.root / shard["rec"], self.root / shard["idx"]
            if not rec.is_file() or not idx.is_file():
                raise DataError(f"{rec}: shard listed in the manifest is missing")
            reader = open_reader(rec, idx)
            try:
                for i, frame in enumerate(shard["frames"]):
                    header, payload = recordio.unpack(read_record(reader, i, rec))
                    label = np.asarray(header.label, np.float32)
                    hw, ow = int(label[0]), int(label[1])
                    w, h = label[2], label[3]
                    objs = label[hw:].reshape(-1, ow)
                    image = read_rgb(payload, f"{rec}: record {i} ({frame})")
                    cls = self._map[objs[:, 0].astype(np.int64)] if len(objs) else np.zeros(0, np.int64)
                    keep = cls >= 0
                    boxes = objs[keep, 1:5] * np.array([w, h, w, h], np.float32)
                    trunc = objs[keep, 5].astype(np.float32) if len(objs) else np.zeros(0, np.float32)
                    occl = objs[keep, 6].astype(np.int64) if len(objs) else np.zeros(0, np.int64)
                    yield DetectionSample(image, boxes.astype(np.float32), cls[keep], frame, trunc, occl)
            finally:
                reader.close()
