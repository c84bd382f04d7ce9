"""One training per results dir: an exclusive lock file, `<results_dir>/.tlkit.lock`.

The lock is an `flock` on that file, which also records who holds it (pid, host, command, start time) for the
message a second run gets. The kernel drops an flock when its process dies, however it dies (SIGKILL, OOM), so
a crashed run never blocks the next one; a lock still held by a process that is gone (a data-loader child that
inherited the descriptor) is detected by its recorded pid and taken over. The second run is refused before it
reads or writes anything: it neither truncates the lock file nor touches any other file.

Taking the lock again in the same process (the CLI, then the engine) just nests.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tlkit.errors import ResultsDirError
from tlkit.io import output_error

LOCK_NAME = ".tlkit.lock"

_held: dict[str, tuple[int, int]] = {}  # resolved results dir -> (fd, nesting depth), this process's locks


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def read_holder(path: Path) -> dict:
    """What a lock file says about its holder ({} when unreadable or empty)."""
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _try_lock(path: Path) -> int | None:
    """An fd holding the flock on `path` (created if missing, never truncated here), or None if it is held."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise output_error(err, path, "cannot create the lock file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EACCES):
                return None
            raise output_error(err, path, "cannot lock") from None
        # the holder may have removed the file between our open and flock: then we locked a dead inode
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def results_dir_lock(results_dir: str | os.PathLike, warn: Callable[[str], object] = print) -> Iterator[Path]:
    """Hold `<results_dir>/.tlkit.lock` for the duration; ResultsDirError if another live run holds it."""
    results_dir = Path(results_dir)
    key = str(results_dir.resolve())
    if key in _held:
        held_fd, depth = _held[key]
        _held[key] = (held_fd, depth + 1)
        try:
            yield results_dir / LOCK_NAME
        finally:
            held_fd, depth = _held[key]
            _held[key] = (held_fd, depth - 1)
        return
    path = results_dir / LOCK_NAME
    fd = _try_lock(path)
    if fd is None:
        holder = read_holder(path)
        pid = holder.get("pid")
        same_host = holder.get("host") == socket.gethostname()
        if isinstance(pid, int) and same_host and not _pid_alive(pid):
            warn(f"{path}: taking over the lock of pid {pid}, which is no longer running")
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its inode stays locked by the orphan; the new file is ours
            fd = _try_lock(path)
        if fd is None:
            who = f"pid {pid}" if pid else "another process"
            if holder.get("host") and not same_host:
                who += f" on {holder['host']}"
            since = f", started {holder['started']}" if holder.get("started") else ""
            cmd = f": `{holder['command']}`" if holder.get("command") else ""
            raise ResultsDirError(
                f"{results_dir}: in use by another training ({who}{since}{cmd}); wait for it to finish or use "
                f"another -r/--results_dir (lock file {path})"
            )
    stale = read_holder(path)
    if stale.get("pid") and stale.get("pid") != os.getpid():
        warn(f"{path}: the run of pid {stale['pid']} ended without releasing its lock; taking it over")
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(["tlkit", *sys.argv[1:]])
        if sys.argv and sys.argv[0].endswith("tlkit")
        else " ".join(sys.argv),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    except OSError as err:
        os.close(fd)
        raise output_error(err, path, "cannot write the lock file") from None
    _held[key] = (fd, 1)
    try:
        yield path
    finally:
        _held.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before closing, so no one locks the old inode after we are done
        os.close(fd)
