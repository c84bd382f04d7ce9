"""KITTI object labels: one text file per image, one object per line, 15 space-separated fields
(16 with a detection score)::

    type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]

Only `type` and the 2D box matter for 2D detection; the 3D fields are kept so a read/write round trip is
lossless. Malformed lines raise `DataError` naming the file, the line number and the field.

Prediction files written by other tools are read leniently (`read_prediction_dir`), as the KITTI devkit
scores them: degenerate boxes (x2 < x1 or y2 < y1) and boxes outside the image are kept (a degenerate box
overlaps nothing), lines that give no usable detection are skipped; every problem is counted and reported
in a `PredictionReport`, none is fatal.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from tlkit.errors import DataError
from tlkit.io import atomic_write_text

FIELDS = (
    "type",
    "truncated",
    "occluded",
    "alpha",
    "x1",
    "y1",
    "x2",
    "y2",
    "height",
    "width",
    "length",
    "x",
    "y",
    "z",
    "rotation_y",
    "score",
)
LABEL_SUFFIX = ".txt"


@dataclass
class KittiObject:
    type: str
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    truncated: float = 0.0
    occluded: int = 0  # 0 visible, 1 partly, 2 largely occluded, 3 unknown
    alpha: float = 0.0
    dimensions: tuple[float, float, float] = (0.0, 0.0, 0.0)  # h, w, l (m)
    location: tuple[float, float, float] = (0.0, 0.0, 0.0)  # x, y, z (m, camera coordinates)
    rotation_y: float = 0.0
    score: Optional[float] = None  # detections only

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]

    @property
    def width(self) -> float:
        return self.bbox[2] - self.bbox[0]

    def to_line(self) -> str:
        vals = [
            self.type,
            _num(self.truncated),
            str(int(self.occluded)),
            _num(self.alpha),
            *(_num(v) for v in self.bbox),
            *(_num(v) for v in self.dimensions),
            *(_num(v) for v in self.location),
            _num(self.rotation_y),
        ]
        if self.score is not None:
            vals.append(_num(self.score, 6))
        return " ".join(vals)


def _num(v: float, digits: int = 2) -> str:
    return f"{float(v):.{digits}f}"


def parse_line(line: str, where: str = "<string>") -> KittiObject:
    """One KITTI line -> KittiObject; `where` ("file:line") prefixes error messages."""
    parts = line.split()
    if len(parts) not in (15, 16):
        raise DataError(
            f"{where}: expected 15 KITTI fields (type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y) "
            f"or 16 with a score, got {len(parts)}"
        )
    values = []
    for name, raw in zip(FIELDS[1:], parts[1:]):
        try:
            values.append(float(raw))
        except ValueError:
            raise DataError(f"{where}: field '{name}' is not a number: {raw!r}") from None
    if not all(np.isfinite(values)):
        bad = next(n for n, v in zip(FIELDS[1:], values) if not np.isfinite(v))
        raise DataError(f"{where}: field '{bad}' is not finite")
    occ, (x1, y1, x2, y2) = values[1], values[3:7]
    if occ != int(occ):
        raise DataError(f"{where}: field 'occluded' must be an integer 0-3, got {parts[2]!r}")
    if x2 < x1 or y2 < y1:
        raise DataError(f"{where}: box has x2 < x1 or y2 < y1 ({x1} {y1} {x2} {y2})")
    return _kitti_object(parts[0], values)


def _kitti_object(type_: str, values: Sequence[float]) -> KittiObject:
    """The object of a line's type and its 14 numbers (FIELDS[1:15]), plus the score when there is a 15th."""
    trunc, occ, alpha, x1, y1, x2, y2, h, w, l, x, y, z, ry = values[:14]  # noqa: E741 (KITTI's field names: l = length)
    return KittiObject(
        type=type_,
        bbox=(x1, y1, x2, y2),
        truncated=trunc,
        occluded=int(occ),
        alpha=alpha,
        dimensions=(h, w, l),
        location=(x, y, z),
        rotation_y=ry,
        score=values[14] if len(values) > 14 else None,
    )


def read_label(path: str | Path) -> list[KittiObject]:
    """Read one KITTI label file (blank lines are skipped)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"{path}: label file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read label file: {err}") from None
    return [parse_line(line, f"{path}:{i}") for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def write_label(path: str | Path, objects: Iterable[KittiObject]) -> None:
    """Write one KITTI label file atomically."""
    lines = [o.to_line() for o in objects]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def read_label_dir(directory: str | Path, require_scores: bool = False) -> dict[str, list[KittiObject]]:
    """{frame id (file stem): objects} for every *.txt in `directory`."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: label directory not found")
    out = {}
    for p in sorted(directory.glob(f"*{LABEL_SUFFIX}")):
        objs = read_label(p)
        if require_scores:
            for i, o in enumerate(objs, 1):
                if o.score is None:
                    raise DataError(f"{p}: object {i} ({o.type}) has no score (16th field); predictions need one")
        out[p.stem] = objs
    return out


# what read_prediction_dir counts: kind -> what it means (and what was done)
PREDICTION_PROBLEMS = {
    "too_few_fields": "lines with fewer than 15 fields (skipped)",
    "no_score": "lines with 15 fields, no score (skipped)",
    "extra_fields": "lines with more than 16 fields (the first 16 used)",
    "not_a_number": "lines with a non-numeric field (skipped)",
    "not_finite": "lines with a nan/inf value (skipped)",
    "degenerate_box": "degenerate boxes, x2 < x1 or y2 < y1 (kept: they match nothing)",
    "negative_coordinates": "boxes reaching outside the image, x1 < 0 or y1 < 0 (scored as given)",
}
MAX_EXAMPLES = 3


@dataclass
class PredictionReport:
    """Problems found in prediction files: counts per kind of PREDICTION_PROBLEMS with a few file:line examples."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    files: int = 0
    detections: int = 0

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(where)

    def lines(self) -> list[str]:
        return [
            f"{self.counts[k]} {text}, e.g. {'; '.join(self.examples[k])}"
            for k, text in PREDICTION_PROBLEMS.items()
            if self.counts.get(k)
        ]

    def to_dict(self) -> dict:
        return {
            "files": self.files,
            "detections": self.detections,
            "problems": {k: self.counts.get(k, 0) for k in PREDICTION_PROBLEMS},
            "examples": self.examples,
        }


def parse_prediction_line(line: str, where: str, report: PredictionReport) -> Optional[KittiObject]:
    """A detection line as the devkit reads it (type, 14 numbers, score), or None (counted in `report`)."""
    parts = line.split()
    if len(parts) < 15:
        report.add("too_few_fields", where)
        return None
    if len(parts) == 15:
        report.add("no_score", where)
        return None
    if len(parts) > 16:
        report.add("extra_fields", where)
        parts = parts[:16]
    try:
        values = [float(v) for v in parts[1:]]
    except ValueError:
        report.add("not_a_number", where)
        return None
    if not all(np.isfinite(values)):
        report.add("not_finite", where)
        return None
    x1, y1, x2, y2 = values[3:7]
    if x2 < x1 or y2 < y1:
        report.add("degenerate_box", where)
    if x1 < 0 or y1 < 0:
        report.add("negative_coordinates", where)
    return _kitti_object(parts[0], values)


def read_prediction_dir(directory: str | Path) -> tuple[dict[str, list[KittiObject]], PredictionReport]:
    """{frame id: detections} for every *.txt in `directory` (KITTI lines with a 16th score field), leniently."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: prediction directory not found")
    report, out = PredictionReport(), {}
    for p in sorted(directory.glob(f"*{LABEL_SUFFIX}")):
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{p}: cannot read prediction file: {err}") from None
        objs = [
            parse_prediction_line(line, f"{p}:{i}", report)
            for i, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]
        out[p.stem] = [o for o in objs if o is not None]
        report.files += 1
        report.detections += len(out[p.stem])
    return out, report


@dataclass
class FrameArrays:
    """The objects of one frame as arrays (what metrics and the rasterizer consume)."""

    types: np.ndarray  # (N,) str
    boxes: np.ndarray  # (N, 4) float64 x1 y1 x2 y2
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # Pascal VOC "difficult" ground truth (neutral under matching: voc); None = no box is difficult
    difficult: Optional[np.ndarray] = None

    def difficult_mask(self) -> np.ndarray:
        return np.zeros(self.types.size, bool) if self.difficult is None else np.asarray(self.difficult, bool)


def to_arrays(objects: list[KittiObject]) -> FrameArrays:
    n = len(objects)
    return FrameArrays(
        types=np.array([o.type for o in objects], dtype=object),
        boxes=np.array([o.bbox for o in objects], dtype=np.float64).reshape(n, 4),
        truncated=np.array([o.truncated for o in objects], dtype=np.float64),
        occluded=np.array([o.occluded for o in objects], dtype=np.int64),
        scores=np.array([o.score if o.score is not None else 1.0 for o in objects], dtype=np.float64),
    )


def make_frame(types, boxes, occluded=None, truncated=None, scores=None, difficult=None) -> FrameArrays:
    """FrameArrays from plain lists (synthetic data, tests, benchmarks)."""
    n = len(types)
    return FrameArrays(
        types=np.array(list(types), dtype=object),
        boxes=np.array(boxes, dtype=np.float64).reshape(n, 4),
        truncated=np.array(truncated if truncated is not None else [0.0] * n, dtype=np.float64),
        occluded=np.array(occluded if occluded is not None else [0] * n, dtype=np.int64),
        scores=np.array(scores if scores is not None else [1.0] * n, dtype=np.float64),
        difficult=None if difficult is None else np.array(difficult, dtype=bool),
    )
