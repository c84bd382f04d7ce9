"""File I/O. Output: atomic writes (a killed run never leaves a half-written file under the final name) and the
error boundary for writing: any OSError while writing becomes one `OutputError` line naming the path and the
reason (permission denied, disk full, read-only file system, a file where a folder should be), and the
previous file is left as it was. Input: `read_json`, whose every failure is one DataError line."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from tlkit.errors import DataError, OutputError

# errno -> the reason as a user reads it (OSError's own strerror is used for the others)
_REASONS = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "it already exists",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error_reason(err: OSError) -> str:
    return _REASONS.get(err.errno or -1) or err.strerror or str(err) or type(err).__name__


def describe_os_error(err: OSError, path: str | os.PathLike | None = None) -> str:
    """'<path>: <reason>': the path the error names (else `path`), and why it failed."""
    where = err.filename if err.filename is not None else path
    return f"{os.fsdecode(where)}: {os_error_reason(err)}" if where is not None else os_error_reason(err)


def output_error(err: OSError, path: str | os.PathLike, action: str = "cannot write") -> OutputError:
    """The OutputError for `err` raised while writing `path`."""
    return OutputError(f"{os.fsdecode(path)}: {action}: {_why(err, Path(path))}")


def _why(err: OSError, path: Path) -> str:
    if err.errno == errno.ENOTDIR or (err.errno == errno.EEXIST and not path.is_dir()):
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is a file, not a folder"
    return os_error_reason(err)


def _about(err: OSError, *paths: Path) -> bool:
    """Whether `err` is about one of `paths` (or their folders), not some other file a caller read."""
    if err.filename is None:
        return True  # write()/flush()/fsync() errors carry no file name
    named = Path(os.fsdecode(err.filename))
    return any(named == p or named in p.parents for p in paths)


def make_dir(path: str | os.PathLike, what: str = "") -> Path:
    """mkdir -p, or an OutputError naming the folder (and `what` it is, e.g. '-r/--results_dir')."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{label}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{label}: cannot create the folder: {_why(err, path)}") from None
    return path


def _default_file_mode() -> int:
    """0666 less the process umask: what open() would give a new file (0644 under the usual umask 022)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_file_beside(path: str | os.PathLike, suffix: str = ".tmp") -> str:
    """Create an empty temporary file in `path`'s folder, to be renamed over `path` when complete.

    mkstemp makes files 0600; the temp file gets the mode a plain open() would give, so a published
    artefact is readable by the services (Triton, DeepStream) that run as another user.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise output_error(err, path) from None
    try:
        os.fchmod(fd, _default_file_mode())
    finally:
        os.close(fd)
    return tmp


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside `path`, fsync it, then rename it over `path`.

    On any exception the temporary file is removed and `path` is left as it was; an OSError of the write
    itself (disk full, permissions, `path` is a folder) becomes an OutputError naming `path`.
    """
    path = Path(path)
    tmp = temp_file_beside(path)
    try:
        with open(tmp, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and _about(err, path, Path(tmp)):
            raise output_error(err, path) from None
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (read in 1 MiB chunks; "sha256" or "sha1")."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike, what: str = "file", hint: str = "") -> Any:
    """Parse a JSON file; missing, unreadable, not UTF-8 or invalid JSON is a DataError naming the file (and
    line). `what` says what the file is ('classmap file', ...); `hint` how to make a missing one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: {what} not found" + (f" ({hint})" if hint else "")) from None
    except OSError as err:
        raise DataError(f"{path}: cannot read the {what}: {os_error_reason(err)}") from None
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        byte = data[err.start]
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{byte:02x}); expected a JSON {what}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: not valid JSON: {err.msg}") from None
