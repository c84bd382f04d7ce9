"""The results-dir lock: one training per results dir; a second is refused without touching a file; a lock
left by a dead process is taken over (by flock, or by its recorded pid)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from tlkit.errors import ResultsDirError
from tlkit.training.lock import LOCK_NAME, read_holder, results_dir_lock

HOLD = (
    "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "
    "print('locked', flush=True); time.sleep(60)"
)


def _holder(path):
    """A process that holds an flock on `path` until killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_records_the_holder_and_is_removed_after(tmp_path):
    with results_dir_lock(tmp_path) as lock:
        holder = read_holder(lock)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname() and holder["started"]
        with results_dir_lock(tmp_path):  # the same process again (CLI, then engine): nests
            assert lock.is_file()
        assert lock.is_file()  # the inner exit did not release it
    assert not lock.exists()


def test_lock_is_released_when_the_run_fails(tmp_path):
    with pytest.raises(RuntimeError):
        with results_dir_lock(tmp_path):
            raise RuntimeError("boom")
    assert not (tmp_path / LOCK_NAME).exists()
    with results_dir_lock(tmp_path):  # and can be taken again
        pass


def test_a_live_holder_refuses_the_second_run_without_touching_the_lock_file(tmp_path):
    lock = tmp_path / LOCK_NAME
    proc = _holder(lock)
    try:
        lock.write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "host": socket.gethostname(),
                    "command": "tlkit pose train -r x",
                    "started": "2024-01-02 03:04:05",
                }
            )
            + "\n"
        )
        before = lock.read_bytes()
        with pytest.raises(ResultsDirError) as err:
            with results_dir_lock(tmp_path):
                pytest.fail("acquired a held lock")
        assert str(err.value) == (
            f"{tmp_path}: in use by another training (pid {proc.pid}, started 2024-01-02 03:04:05: "
            f"`tlkit pose train -r x`); wait for it to finish or use another -r/--results_dir (lock file {lock})"
        )
        assert lock.read_bytes() == before
    finally:
        proc.kill()
        proc.wait()
    with results_dir_lock(tmp_path):  # the kernel dropped the flock with the process
        assert read_holder(lock)["pid"] == os.getpid()


def test_a_lock_file_left_by_a_killed_run_is_taken_over(tmp_path):
    lock = tmp_path / LOCK_NAME
    dead = _dead_pid()
    lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    said = []
    with results_dir_lock(tmp_path, warn=said.append):
        assert read_holder(lock)["pid"] == os.getpid()
    assert said == [f"{lock}: the run of pid {dead} ended without releasing its lock; taking it over"]


def test_a_held_lock_whose_recorded_pid_is_gone_is_taken_over(tmp_path):
    """A child that inherited the lock's descriptor outlives its run (the recorded pid is dead): stale by pid."""
    lock = tmp_path / LOCK_NAME
    proc = _holder(lock)
    try:
        dead = _dead_pid()
        lock.write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
        said = []
        with results_dir_lock(tmp_path, warn=said.append):
            assert read_holder(lock)["pid"] == os.getpid()
        assert said == [f"{lock}: taking over the lock of pid {dead}, which is no longer running"]
    finally:
        proc.kill()
        proc.wait()


def test_a_holder_on_another_host_is_never_taken_over(tmp_path):
    lock = tmp_path / LOCK_NAME
    proc = _holder(lock)
    try:
        lock.write_text(json.dumps({"pid": _dead_pid(), "host": "other-host"}))
        with pytest.raises(ResultsDirError, match=r"in use by another training \(pid \d+ on other-host\)"):
            with results_dir_lock(tmp_path):
                pass
    finally:
        proc.kill()
        proc.wait()
