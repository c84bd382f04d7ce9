"""Input images that cannot be used: found by decoding them completely, then skipped and reported by name.

`image_problem` decodes a whole image (Pillow), so a truncated JPEG/PNG is caught where it is found (by
`dataset_convert`), not halfway through training; `read_rgb` returns such a decode or a DataError.
`SkippedImages` collects what a command skipped and says so in one line, or, in strict mode (`--strict`),
stops at the first one.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.errors import DataError


def image_problem(source: str | os.PathLike | bytes) -> tuple[tuple[int, int] | None, str | None]:
    """((width, height), None) for an image that decodes completely, else (None, why it does not)."""
    image, problem = _decode(source)
    return (image.size if image is not None else None), problem


def read_rgb(source: str | os.PathLike | bytes, name: str | os.PathLike | None = None) -> Any:
    """A completely decoded image as an (H, W, 3) uint8 RGB array; DataError naming `name` (or the path) and
    the reason when it does not decode (a truncated file included)."""
    import numpy as np

    image, problem = _decode(source)
    if image is None:
        raise DataError(f"{name if name is not None else source}: {problem}")
    return np.asarray(image.convert("RGB"))


def read_bgr(path: str | os.PathLike) -> Any:
    """OpenCV's decode of a whole file as (H, W, 3) uint8 BGR (EXIF orientation applied), or None when it does
    not decode completely. cv2.imread accepts a truncated JPEG (grey bottom rows); cv2.imdecode does not."""
    import cv2
    import numpy as np

    try:
        data = np.fromfile(str(path), dtype=np.uint8)  # also handles non-ASCII paths, unlike cv2.imread
    except OSError:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def _decode(source: str | os.PathLike | bytes) -> tuple[Any, str | None]:
    from PIL import Image, ImageFile, UnidentifiedImageError

    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as err:
        return None, f"cannot read the file ({err.strerror or err})"
    if not data:
        return None, "empty file"
    # GluonCV sets Pillow's process-wide LOAD_TRUNCATED_IMAGES when imported, which makes a cut file decode
    # "fine" (grey bottom rows): a check wants the truth
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel: a truncated file fails here, not only its header
            return im.copy(), None
    except UnidentifiedImageError:
        return None, "not an image (unknown format)"
    except (OSError, ValueError, SyntaxError) as err:  # PIL reports broken files with these
        return None, str(err) or type(err).__name__  # e.g. "image file is truncated (286 bytes not processed)"
    except Image.DecompressionBombError as err:
        return None, f"refused: {err}"
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


@dataclass
class SkippedImages:
    """Images a command could not use. `add` raises DataError instead in strict mode."""

    strict: bool = False
    items: list[tuple[Path, str]] = field(default_factory=list)

    def add(self, path: str | os.PathLike, reason: str) -> None:
        if self.strict:
            raise DataError(
                f"{path}: {reason} (--strict stops at the first unreadable image; without it such "
                f"images are skipped and reported)"
            )
        self.items.append((Path(path), reason))

    def __len__(self) -> int:
        return len(self.items)

    def summary(self, n: int = 3) -> str:
        """'' or one line: how many were skipped, the first `n` by name and why."""
        if not self.items:
            return ""
        first = "; ".join(f"{p} ({why})" for p, why in self.items[:n])
        more = f"; +{len(self.items) - n} more" if len(self.items) > n else ""
        return f"skipped {len(self.items)} unreadable image(s): {first}{more}"
