"""Fault injection for tests: run `tlkit` in-process, check that a failure is one clean line (or a warning is
reported), that no file changed, and simulate folders that refuse writes and a full disk.

    res = run_cli(capsys, "classification", "train", "-e", spec, "-r", results)
    assert_clean_failure(res, match="in use by another training", names=[results])

Unwritable folders: `chmod` does not stop root (tests often run as root), so `deny_writes` then intercepts the
Python-level calls that create, write, rename or delete files under the folder (os.open, open, os.mkdir,
os.replace, ...) and raises the OSError the kernel would give. Writes done in C (MXNet, HDF5) are not seen;
tlkit creates its temporary files in Python first, so those writes fail there too.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import io
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def run_cli(capsys: Any, *args: Any) -> CliResult:
    """`tlkit ARGS` in this process (what the `tlkit` script calls): exit code, stdout, stderr."""
    from tlkit.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out = capsys.readouterr()
    return CliResult(code, out.out, out.err)


def assert_clean_failure(res: CliResult, match: str, names: Iterable[Any] = (), code: int | None = None) -> str:
    """A non-zero exit (`code` if given) with exactly one `error: ...` line on stderr that matches `match` and
    names each of `names`; no traceback and no `internal error` anywhere. Returns the message."""
    both = res.out + res.err
    assert res.code != 0, f"exit 0 (a silent result?)\n{both}"
    if code is not None:
        assert res.code == code, f"exit {res.code}, expected {code}\n{both}"
    assert "Traceback" not in both, f"traceback in the output:\n{both}"
    lines = res.error_lines
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line on stderr, got:\n{res.err}"
    msg = lines[0]
    assert "internal error" not in msg, msg
    assert re.search(match, msg), f"{msg!r} does not match {match!r}"
    for name in names:
        assert str(name) in msg, f"{msg!r} does not name {name}"
    return msg


def assert_reported(res: CliResult, match: str, names: Iterable[Any] = ()) -> str:
    """A run that went on (exit 0) but said what it skipped: a stdout line matching `match` naming `names`."""
    both = res.out + res.err
    assert res.code == 0, f"exit {res.code}\n{both}"
    assert "Traceback" not in both, both
    hits = [ln for ln in res.out.splitlines() if re.search(match, ln)]
    assert hits, f"no line matches {match!r} in:\n{res.out}"
    for name in names:
        assert any(str(name) in h for h in hits), f"{hits} do not name {name}"
    return hits[0]


def snapshot(root: str | os.PathLike) -> dict[str, str]:
    """relative path -> sha256 of every file under `root` (a symlink: its target), to prove nothing changed."""
    root = Path(root)
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "-> " + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def assert_unchanged(before: dict[str, str], after: dict[str, str], allowed_new: Iterable[str] = ()) -> None:
    """No file changed or disappeared, and no file appeared except those matching `allowed_new` (globs)."""
    import fnmatch

    changed = sorted(k for k in before if k in after and before[k] != after[k])
    gone = sorted(set(before) - set(after))
    new = sorted(k for k in set(after) - set(before) if not any(fnmatch.fnmatch(k, g) for g in allowed_new))
    assert not (changed or gone or new), f"changed: {changed}, removed: {gone}, new: {new}"


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _under(path: Any, folder: str) -> bool:
    try:
        p = os.path.abspath(os.fsdecode(path))
    except TypeError:  # a file descriptor
        return False
    return p == folder or p.startswith(folder + os.sep)


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _writes(mode: str) -> bool:
    return any(c in mode for c in "wax+")


@contextlib.contextmanager
def deny_writes(monkeypatch: Any, folder: str | os.PathLike, error: int = errno.EACCES) -> Iterator[None]:
    """Make `folder` refuse new files, writes, renames and deletions (EACCES by default; errno.EROFS for a
    read-only file system). Uses chmod when that works (not root), else intercepts the calls (see module doc)."""
    folder = os.path.abspath(folder)
    if not running_as_root() and error == errno.EACCES:
        mode = os.stat(folder).st_mode
        os.chmod(folder, 0o555)
        try:
            yield
        finally:
            os.chmod(folder, mode)
        return

    def refuse(path: Any) -> None:
        raise OSError(error, os.strerror(error), os.fsdecode(path))

    real_open, real_os_open = builtins.open, os.open

    def fake_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        if _writes(mode) and _under(file, folder):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def fake_os_open(path: Any, flags: int, *a: Any, **k: Any) -> int:
        if flags & _WRITE_FLAGS and _under(path, folder):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    def guard(fn: Any, n_paths: int = 1) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            for p in args[:n_paths]:
                if _under(p, folder):
                    refuse(p)
            return fn(*args, **kwargs)

        return wrapped

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", fake_open)
        m.setattr(io, "open", fake_open)
        m.setattr(os, "open", fake_os_open)
        m.setattr(os, "mkdir", guard(os.mkdir))
        m.setattr(os, "unlink", guard(os.unlink))
        m.setattr(os, "remove", guard(os.remove))
        m.setattr(os, "rmdir", guard(os.rmdir))
        m.setattr(os, "replace", guard(os.replace, 2))
        m.setattr(os, "rename", guard(os.rename, 2))
        m.setattr(os, "symlink", guard(os.symlink, 2))
        yield


class _FullDiskFile:
    """A file opened for writing on a full disk: opening works, the first write fails with ENOSPC."""

    def __init__(self, fh: Any):
        self._fh = fh

    def write(self, data: Any) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._fh.close()


@contextlib.contextmanager
def disk_full(monkeypatch: Any, folder: str | os.PathLike) -> Iterator[None]:
    """Every file written under `folder` through Python's open() fails on its first write with ENOSPC."""
    folder = os.path.abspath(folder)
    real_open = builtins.open

    def fake_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        fh = real_open(file, mode, *a, **k)
        return _FullDiskFile(fh) if _writes(mode) and _under(file, folder) else fh

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", fake_open)
        m.setattr(io, "open", fake_open)
        yield
