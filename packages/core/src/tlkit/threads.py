"""CPU thread defaults: MXNet's OpenMP threads = the cores this process may use.

Without OMP_NUM_THREADS, MXNet 1.9 gives its operators omp_get_num_procs() / 2 threads (it assumes
hyperthreading on x86): one thread on a 2-core machine, which trains ResNet-18 at 7.8 img/s instead of
13.5 with two (benchmarks/results/threads.json). MXNet reads the variable once, when libmxnet loads, so
it must be set before `import mxnet`: the CLI calls `configure_threads()` first thing, and in-process
users call it before their first MXNet import.

The cores this process may use: its CPU affinity (taskset, cpuset, Kubernetes cpuset), capped by the
cgroup CPU quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`; Docker `--cpus`,
Kubernetes limits), rounded up. A user's own setting wins: an explicit `threads` argument (the CLI's
`--num_threads`), then OMP_NUM_THREADS already in the environment, then the detected cores.

Data loaders run in threads of the same process: `loader_workers()` caps their number at the cores, and
OpenCV inside them runs single-threaded (OPENCV_FOR_THREADS_NUM=1), so decoding never multiplies threads.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tlkit.errors import SpecError

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class ThreadConfig:
    """What `configure_threads` decided: the thread count, where it came from, and the variables it set."""

    threads: int
    source: str  # "argument", "environment" (OMP_NUM_THREADS) or "detected"
    cores: int  # the cores this process may use
    set_vars: dict[str, str] = field(default_factory=dict)  # environment variables written by this call
    effective: bool = True  # False: MXNet was imported before the call, its thread count is already fixed

    def describe(self) -> str:
        where = {
            "argument": "--num_threads",
            "environment": "OMP_NUM_THREADS",
            "detected": f"the {self.cores} usable core(s)",
        }[self.source]
        text = f"{self.threads} CPU thread(s) for MXNet (from {where})"
        if not self.effective:
            text += "; MXNet was already imported, so its own thread count stays as it was loaded"
        return text


def _cgroup_v2_dir(proc_cgroup: str, root: Path) -> Path | None:
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[0] == "0" and parts[1] == "":
            return root / parts[2].lstrip("/")
    return None


def _quota_v2(directory: Path, root: Path) -> float | None:
    """The tightest `cpu.max` quota from `directory` up to the cgroup root (a parent's limit applies too)."""
    best: float | None = None
    d = directory
    while True:
        f = d / "cpu.max"
        if f.is_file():
            fields = f.read_text().split()
            if len(fields) >= 2 and fields[0] != "max":
                try:
                    q = int(fields[0]) / int(fields[1])
                except (ValueError, ZeroDivisionError):
                    q = None
                if q and q > 0:
                    best = q if best is None else min(best, q)
        if d == root or root not in d.parents:
            return best
        d = d.parent


def _quota_v1(proc_cgroup: str, root: Path) -> float | None:
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3 or "cpu" not in parts[1].split(","):
            continue
        for mount in (root / "cpu,cpuacct", root / "cpu", root / "cpuacct,cpu"):
            for d in (mount / parts[2].lstrip("/"), mount):
                try:
                    quota = int((d / "cpu.cfs_quota_us").read_text())
                    period = int((d / "cpu.cfs_period_us").read_text())
                except (OSError, ValueError):
                    continue
                return quota / period if quota > 0 and period > 0 else None
    return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The cgroup CPU quota in cores (e.g. 1.5), or None when there is none (or no cgroup filesystem)."""
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    v2 = _cgroup_v2_dir(proc_cgroup, root)
    if v2 is not None and (root / "cgroup.controllers").is_file():
        return _quota_v2(v2, root)
    return _quota_v1(proc_cgroup, root)


def available_cores() -> int:
    """Cores this process may run on: CPU affinity, capped by the cgroup quota (rounded up); at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, math.ceil(limit))
    return max(1, cores)


def _positive_int(value: str | int, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise SpecError(f"{what}: expected a positive whole number of threads, got {value!r}")
    return n


def configure_threads(threads: int | None = None, environ: dict | None = None) -> ThreadConfig:
    """Set MXNet's CPU threads before MXNet is imported (see the module doc). Returns what was decided.

    `threads` (the CLI's --num_threads) wins over OMP_NUM_THREADS in the environment, which wins over the
    detected cores. Called after `import mxnet`, it still sets the variables (for child processes) but
    reports `effective=False`."""
    env = os.environ if environ is None else environ
    cores = available_cores()
    if threads is not None:
        n, source = _positive_int(threads, "--num_threads"), "argument"
    elif env.get("OMP_NUM_THREADS"):
        n, source = _positive_int(env["OMP_NUM_THREADS"].split(",")[0], "OMP_NUM_THREADS"), "environment"
    else:
        n, source = cores, "detected"
    wanted = {"OMP_NUM_THREADS": str(n), "OPENCV_FOR_THREADS_NUM": "1"}
    set_vars = {}
    for key, value in wanted.items():
        if source == "argument" or not env.get(key):
            if env.get(key) != value:
                set_vars[key] = value
            env[key] = value
    return ThreadConfig(n, source, cores, set_vars, effective="mxnet" not in sys.modules)


def loader_workers(requested: int) -> int:
    """Data-loader threads: what the spec asks for, at most the usable cores (0 stays 0: no threads)."""
    return max(0, min(int(requested), available_cores()))
