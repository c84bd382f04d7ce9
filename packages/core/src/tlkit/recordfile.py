"""Indexed MXNet RecordIO shards (`.rec` + `.idx`), read and written with errors that name the file.

MXNet reports a damaged shard as a C++ backtrace ("Invalid RecordIO File") without the file name, and a
writer into an unwritable folder as an MXNetError. Here a shard is checked when opened (index parseable,
every record starting inside the `.rec`), each read failure becomes a DataError naming the file and record,
and shards are written atomically (temp files renamed once complete) with write failures as OutputError.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tlkit.errors import DataError, error_summary
from tlkit.io import output_error

RERUN = "re-run dataset_convert to write it again"


def open_reader(rec: str | os.PathLike, idx: str | os.PathLike | None = None) -> Any:
    """An `mxnet.recordio.MXIndexedRecordIO` reader of `rec` (index: `idx`, default beside it as .idx)."""
    from mxnet import recordio

    rec = Path(rec)
    idx = Path(idx) if idx is not None else rec.with_suffix(".idx")
    for p, what in ((rec, "RecordIO shard"), (idx, "RecordIO index")):
        if not p.is_file():
            raise DataError(f"{p}: {what} not found; {RERUN}")
    try:
        reader = recordio.MXIndexedRecordIO(str(idx), str(rec), "r")
    except (ValueError, IndexError):
        raise DataError(f"{idx}: not a RecordIO index (expected '<key>\\t<offset>' lines); {RERUN}") from None
    except Exception as err:  # MXNetError: the .rec cannot be opened
        raise DataError(f"{rec}: cannot open the RecordIO shard: {error_summary(err)}") from None
    size = rec.stat().st_size
    beyond = [k for k, off in reader.idx.items() if off >= size]
    if beyond:
        reader.close()
        raise DataError(
            f"{rec}: truncated ({size} bytes, but record {beyond[0]} starts at byte {reader.idx[beyond[0]]} per "
            f"{idx.name}; {len(beyond)} record(s) missing); {RERUN}"
        )
    return reader


def read_record(reader: Any, key: Any, rec: str | os.PathLike) -> bytes:
    """The raw record `key` of an open reader; a damaged record is a DataError naming `rec` and the key."""
    try:
        data = reader.read_idx(key)
    except KeyError:
        raise DataError(f"{rec}: no record {key!r} in its index") from None
    except Exception as err:  # MXNetError "Invalid RecordIO File"
        raise DataError(f"{rec}: record {key} is damaged ({error_summary(err)}); {RERUN}") from None
    if data is None:
        raise DataError(f"{rec}: record {key} is missing (the file ends early); {RERUN}")
    return data


@contextlib.contextmanager
def record_writer(rec: str | os.PathLike, idx: str | os.PathLike | None = None) -> Iterator[Any]:
    """An `MXIndexedRecordIO` writer whose `.rec`/`.idx` appear under their names only once complete; any
    failure removes the temp files and leaves earlier files as they were. Write errors are OutputErrors."""
    from mxnet import recordio

    rec = Path(rec)
    idx = Path(idx) if idx is not None else rec.with_suffix(".idx")
    tmp_rec, tmp_idx = Path(f"{rec}.tmp"), Path(f"{idx}.tmp")
    for tmp in (tmp_rec, tmp_idx):  # created here, in Python, so a folder we cannot write is an OSError
        try:
            tmp.parent.mkdir(parents=True, exist_ok=True)
            tmp.open("wb").close()
        except OSError as err:
            raise output_error(err, rec if tmp is tmp_rec else idx) from None
    writer = None
    try:
        writer = recordio.MXIndexedRecordIO(str(tmp_idx), str(tmp_rec), "w")
        yield writer
        writer.close()
        writer = None
        os.replace(tmp_rec, rec)
        os.replace(tmp_idx, idx)
    except OSError as err:
        if err.filename is not None and Path(os.fsdecode(err.filename)) not in (tmp_rec, tmp_idx, rec, idx):
            raise  # about a file the caller read (a source image), not this write
        raise output_error(err, rec) from None
    except Exception as err:
        if type(err).__name__ == "MXNetError":  # the C++ writer failed (disk full)
            raise output_error(OSError(error_summary(err)), rec) from None
        raise
    finally:
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        for tmp in (tmp_rec, tmp_idx):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
