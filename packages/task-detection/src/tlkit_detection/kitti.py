"""KITTI object labels: one text file per image, one object per line, 15 space-separated fields
(16 with a detection score)::

    type truncated occluded alpha x1 y1 x2 y2 h w l x y z rotation_y [score]

Only `type` and the 2D box matter for 2D detection; the 3D fields are kept so a read/write round trip is
lossless. Malformed lines raise `DataError` naming the file, the line number and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from tlkit.errors import DataError
from tlkit.io import atomic_write_text

FIELDS = (
    "type", "truncated", "occluded", "alpha", "x1", "y1", "x2", "y2",
    "height", "width", "length", "x", "y", "z", "rotation_y", "score",
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
            self.type, _num(self.truncated), str(int(self.occluded)), _num(self.alpha),
            *(_num(v) for v in self.bbox), *(_num(v) for v in self.dimensions),
            *(_num(v) for v in self.location), _num(self.rotation_y),
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
    trunc, occ, alpha, x1, y1, x2, y2, h, w, l, x, y, z, ry = values[:14]
    if occ != int(occ):
        raise DataError(f"{where}: field 'occluded' must be an integer 0-3, got {parts[2]!r}")
    if x2 < x1 or y2 < y1:
        raise DataError(f"{where}: box has x2 < x1 or y2 < y1 ({x1} {y1} {x2} {y2})")
    return KittiObject(
        type=parts[0], bbox=(x1, y1, x2, y2), truncated=trunc, occluded=int(occ), alpha=alpha,
        dimensions=(h, w, l), location=(x, y, z), rotation_y=ry, score=values[14] if len(values) == 15 else None,
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


@dataclass
class FrameArrays:
    """The objects of one frame as arrays (what metrics and the rasterizer consume)."""

    types: np.ndarray  # (N,) str
    boxes: np.ndarray  # (N, 4) float64 x1 y1 x2 y2
    truncated: np.ndarray = field(default_factory=lambda: np.zeros(0))
    occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))


def to_arrays(objects: list[KittiObject]) -> FrameArrays:
    n = len(objects)
    return FrameArrays(
        types=np.array([o.type for o in objects], dtype=object),
        boxes=np.array([o.bbox for o in objects], dtype=np.float64).reshape(n, 4),
        truncated=np.array([o.truncated for o in objects], dtype=np.float64),
        occluded=np.array([o.occluded for o in objects], dtype=np.int64),
        scores=np.array([o.score if o.score is not None else 1.0 for o in objects], dtype=np.float64),
    )


def make_frame(types, boxes, occluded=None, truncated=None, scores=None) -> FrameArrays:
    """FrameArrays from plain lists (synthetic data, tests, benchmarks)."""
    n = len(types)
    return FrameArrays(
        types=np.array(list(types), dtype=object),
        boxes=np.array(boxes, dtype=np.float64).reshape(n, 4),
        truncated=np.array(truncated if truncated is not None else [0.0] * n, dtype=np.float64),
        occluded=np.array(occluded if occluded is not None else [0] * n, dtype=np.int64),
        scores=np.array(scores if scores is not None else [1.0] * n, dtype=np.float64),
    )
