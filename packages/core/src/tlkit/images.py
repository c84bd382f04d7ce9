"""Input images: which files count as images, what an inference command was given, and images that cannot
be used (found by decoding them completely, then skipped and reported by name).

`IMAGE_EXTENSIONS` / `VIDEO_EXTENSIONS` are the file endings every task reads. `resolve_inputs` turns an
inference input (an image, a folder of images, a .txt list of images, or a video) into an `Inputs` record, and
`read_batches` reads its images batch by batch, skipping the unreadable ones into a `SkippedImages`.
`image_problem` decodes a whole image (Pillow), so a truncated JPEG/PNG is caught where it is found (by
`dataset_convert`), not halfway through training; `read_rgb` returns such a decode or a DataError.
`SkippedImages` collects what a command skipped and says so in one line, or, in strict mode (`--strict`),
stops at the first one.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.errors import DataError, TlkitError

# Lower case; files are matched case-insensitively. The order is the lookup order where a name is tried with
# each ending (a KITTI label's image).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm")
LIST_EXTENSION = ".txt"  # a list of images, one path a line


def is_image_file(path: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> bool:
    """Whether the name ends with one of `extensions` (case-insensitive); says nothing about the content."""
    return Path(path).suffix.lower() in {e.lower() for e in extensions}


def list_image_files(folder: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The image files in `folder` and its sub-folders, sorted (by path)."""
    exts = {e.lower() for e in extensions}
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in exts and p.is_file())


@dataclass(frozen=True)
class Inputs:
    """An inference command's input, resolved: the images to read, in order, or one video."""

    images: tuple[Path, ...] = ()
    video: Path | None = None
    root: Path | None = None  # the folder given (or the list file's folder): output names are relative to it
    source: Path | None = None  # as given

    def name(self, image: str | os.PathLike) -> str:
        """The image's name for the files written about it: its path below the folder given (so images of
        sub-folders keep apart), else its file name."""
        image = Path(image)
        if self.root is not None:
            with contextlib.suppress(ValueError):
                return image.relative_to(self.root).as_posix()
        return image.name


def resolve_inputs(
    source: str | os.PathLike, *, extensions: Sequence[str] = IMAGE_EXTENSIONS, videos: bool = True
) -> Inputs:
    """What `source` names: an image, a folder (its images and those of its sub-folders, sorted), a .txt list
    of images (one path a line, relative to the list's folder; blank lines and # comments skipped) or, with
    `videos`, a video file. Images are not opened here: `read_batches` skips and reports unreadable ones.
    A DataError (naming `source`) when it does not exist, holds no image or is none of these."""
    path = Path(source)
    kinds = _kinds(videos)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder (expected {kinds})")
    if path.is_dir():
        images = list_image_files(path, extensions)
        if not images:
            raise DataError(
                f"{path}: no images found (looked for {', '.join(sorted({e.lower() for e in extensions}))})"
            )
        return Inputs(images=tuple(images), root=path, source=path)
    suffix = path.suffix.lower()
    if suffix == LIST_EXTENSION:
        return Inputs(images=tuple(_read_image_list(path)), root=path.parent, source=path)
    if videos and suffix in VIDEO_EXTENSIONS:
        return Inputs(video=path, source=path)
    if suffix in {e.lower() for e in extensions}:
        return Inputs(images=(path,), source=path)
    what = f"{', '.join(extensions)}" + (f"; a video: {', '.join(VIDEO_EXTENSIONS)}" if videos else "")
    raise DataError(f"{path}: not {kinds} (an image: {what}; a list: {LIST_EXTENSION})")


def _kinds(videos: bool) -> str:
    return (
        "an image, a folder of images, a .txt list of images or a video"
        if videos
        else ("an image, a folder of images or a .txt list of images")
    )


def _read_image_list(path: Path) -> list[Path]:
    from tlkit.io import describe_os_error

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataError(describe_os_error(err, path)) from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not a text list of images ({err.reason} at byte {err.start})") from None
    images = [path.parent / line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not images:
        raise DataError(f"{path}: the list names no image (one path a line, relative to the list's folder)")
    return images


def inference_source(
    options: Mapping[str, Any], command: str, names: Sequence[str] = ("image", "image_dir"), videos: bool = True
) -> Path:
    """The one input an inference command was given among the options `names` (-i/--image, -d/--image_dir,
    ...), each of which takes any kind `resolve_inputs` reads; a TlkitError naming the flags when none or
    several are given."""
    given = [options[n] for n in names if options.get(n)]
    if len(given) != 1:
        flags = {"image": "-i/--image", "image_dir": "-d/--image_dir"}
        raise TlkitError(
            f"{command}: give exactly one of {', '.join(flags.get(n, '--' + n) for n in names)} ({_kinds(videos)})"
        )
    return Path(given[0])


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
        if name is None:  # bytes have no name: say what they are rather than print them
            name = f"{len(source)} bytes of image data" if isinstance(source, bytes) else source
        raise DataError(f"{name}: {problem}")
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

    def warn(self, console: Any) -> None:
        """The summary as one warning line on `console`, when anything was skipped."""
        if self.items:
            from tlkit.context import print_warning

            print_warning(console, self.summary())

    def require_some(self, total: int, source: str | os.PathLike | None = None) -> None:
        """A DataError (naming `source`, the first skipped image and why) when all `total` images were skipped."""
        if total and len(self.items) >= total:
            first, why = self.items[0]
            where = f"{source}: " if source is not None else ""
            raise DataError(f"{where}none of the {total} image(s) could be read ({first}: {why})")


def read_batches(
    paths: Sequence[Path], batch_size: int, read: Callable[[Path], Any], skipped: SkippedImages
) -> Iterator[list[tuple[int, Path, Any]]]:
    """The images `read` decodes, as batches of (position in `paths`, path, image), in order. An image it cannot
    decode (`read` returns None or raises DataError) goes to `skipped`, which raises in strict mode; a batch is
    one `batch_size` slice of `paths` less its skipped images, and an empty one is not yielded."""
    for start in range(0, len(paths), batch_size):
        batch = []
        for i, p in enumerate(paths[start : start + batch_size], start):
            try:
                image = read(p)
            except DataError as err:
                skipped.add(p, str(err).removeprefix(f"{p}: "))
                continue
            if image is None:
                skipped.add(p, image_problem(p)[1] or "OpenCV cannot decode it")
                continue
            batch.append((i, p, image))
        if batch:
            yield batch
