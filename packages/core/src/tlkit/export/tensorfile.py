"""TLT's INT8 calibration tensorfile (HDF5), read and written.

File attrs `count` (batches) and `shape` (the shared batch shape); batch i is the gzip dataset
`_tensorfile_array_key_` in group `_tensorfile_array_key__<i>`, an already-preprocessed (N,C,H,W) float32 batch.
Files written here open in TAO's reader and vice versa.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError
from tlkit.io import output_error, temp_file_beside

ARRAY_KEY = "_tensorfile_array_key_"
GROUP_PREFIX = "_tensorfile_array_key_"  # groups are f"{GROUP_PREFIX}_{i}" -> "_tensorfile_array_key__0"


def _group_name(i: int) -> str:
    return f"{GROUP_PREFIX}_{i}"


class TensorFileWriter:
    """Write calibration batches to a TLT tensorfile; the file appears (atomically) on close()."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        self._tmp = temp_file_beside(self.path)
        self._db = h5py.File(self._tmp, "w")
        self._db.attrs["count"] = 0
        self.count = 0

    def write(self, batch: np.ndarray | dict[str, np.ndarray]) -> None:
        data = {ARRAY_KEY: batch} if isinstance(batch, np.ndarray) else dict(batch)
        group = self._db.create_group(_group_name(self.count))
        for key, value in data.items():
            value = np.asarray(value)
            if "shape" not in self._db.attrs:
                self._db.attrs["shape"] = value.shape
            elif tuple(self._db.attrs["shape"]) != value.shape:
                raise DataError(
                    f"{self.path}: batch {self.count} has shape {value.shape}, earlier batches "
                    f"{tuple(self._db.attrs['shape'])} (a tensorfile holds equal-shaped batches)"
                )
            group.create_dataset(key, data=value, compression="gzip")
        self.count += 1
        self._db.attrs["count"] = self.count

    def close(self) -> Path:
        self._db.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> TensorFileWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_tensorfile(path: str | os.PathLike, batches: Iterable[np.ndarray]) -> Path:
    """Write NCHW float32 batches (already preprocessed) as a TLT calibration tensorfile."""
    try:
        with TensorFileWriter(path) as tf:
            for b in batches:
                tf.write(np.asarray(b, dtype=np.float32))
    except OSError as err:
        if err.filename is not None:  # about another file (a source image), not this write
            raise
        raise output_error(err, path) from None  # h5py's write errors (disk full) name no file
    return Path(path)


def tensorfile_info(path: str | os.PathLike) -> tuple[int, tuple[int, ...]]:
    """(count, batch shape) of a tensorfile."""
    with _open_tensorfile(path) as db:
        return int(db.attrs["count"]), tuple(int(v) for v in db.attrs.get("shape", ()))


@contextlib.contextmanager
def _open_tensorfile(path: str | os.PathLike) -> Iterator[Any]:
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: calibration tensorfile not found")
    try:
        db = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not an HDF5 calibration tensorfile ({err})") from None
    try:
        if "count" not in db.attrs:
            raise DataError(f"{path}: HDF5 file without a 'count' attribute is not a TLT calibration tensorfile")
        yield db
    finally:
        db.close()


def read_tensorfile(path: str | os.PathLike, max_batches: int | None = None) -> Iterator[np.ndarray]:
    """Yield the batches of a tensorfile (arrays, or dicts of arrays for multi-input files)."""
    with _open_tensorfile(path) as db:
        count = int(db.attrs["count"])
        n = count if max_batches is None or max_batches < 0 else min(count, max_batches)
        for i in range(n):
            name = _group_name(i)
            if name not in db:
                raise DataError(f"{path}: count says {count} batches but group {name!r} is missing")
            group = db[name]
            data = {k: group[k][()] for k in group.keys()}
            yield data[ARRAY_KEY] if list(data) == [ARRAY_KEY] else data
