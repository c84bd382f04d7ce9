"""CPU thread defaults (tlkit.threads): usable cores from affinity and cgroup quotas, who decides the thread
count, and the CLI's --num_threads / train-only multi-node flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tlkit.errors import SpecError
from tlkit.testing.plugins import run_tlkit
from tlkit.threads import available_cores, cgroup_cpu_limit, configure_threads, loader_workers


def cgroup_v2(root, limits: dict[str, str]):
    """A fake cgroup v2 tree: {relative dir: cpu.max text}."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    for rel, text in limits.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cpu.max").write_text(text + "\n")
    return root


def test_cgroup_v2_quota_takes_the_tightest_ancestor(tmp_path):
    root = cgroup_v2(tmp_path, {"kube/pod": "150000 100000", "kube/pod/app": "max 100000"})
    assert cgroup_cpu_limit(root, "0::/kube/pod/app\n") == pytest.approx(1.5)
    cgroup_v2(tmp_path, {"kube": "50000 100000"})
    assert cgroup_cpu_limit(root, "0::/kube/pod/app\n") == pytest.approx(0.5)
    assert cgroup_cpu_limit(cgroup_v2(tmp_path / "free", {"x": "max 100000"}), "0::/x\n") is None


def test_cgroup_v1_cfs_quota(tmp_path):
    d = tmp_path / "cpu,cpuacct" / "docker" / "abc"
    d.mkdir(parents=True)
    (d / "cpu.cfs_quota_us").write_text("250000\n")
    (d / "cpu.cfs_period_us").write_text("100000\n")
    proc = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n"
    assert cgroup_cpu_limit(tmp_path, proc) == pytest.approx(2.5)
    (d / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert cgroup_cpu_limit(tmp_path, proc) is None


def test_available_cores_is_the_affinity_capped_by_the_quota():
    assert 1 <= available_cores() <= len(os.sched_getaffinity(0))
    code = (
        "import os; from tlkit.threads import available_cores; os.sched_setaffinity(0, {0}); print(available_cores())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def test_who_decides_the_thread_count():
    env: dict[str, str] = {}
    cfg = configure_threads(environ=env)
    assert (cfg.threads, cfg.source) == (available_cores(), "detected")
    assert env == {"OMP_NUM_THREADS": str(available_cores()), "OPENCV_FOR_THREADS_NUM": "1"}

    env = {"OMP_NUM_THREADS": "3", "OPENCV_FOR_THREADS_NUM": "2"}  # the user's own settings stay
    cfg = configure_threads(environ=env)
    assert (cfg.threads, cfg.source, cfg.set_vars) == (3, "environment", {})
    assert env == {"OMP_NUM_THREADS": "3", "OPENCV_FOR_THREADS_NUM": "2"}

    cfg = configure_threads(5, environ=env)  # the flag wins over the environment
    assert (cfg.threads, cfg.source) == (5, "argument") and env["OMP_NUM_THREADS"] == "5"
    assert "5 CPU thread(s) for MXNet (from --num_threads)" in cfg.describe()
    assert cfg.effective == ("mxnet" not in sys.modules)

    for bad in ("0", "two"):
        with pytest.raises(SpecError, match="positive whole number"):
            configure_threads(environ={"OMP_NUM_THREADS": bad})


def test_configured_before_mxnet_loads():
    code = (
        "import os, json; from tlkit.threads import configure_threads; c = configure_threads(); import mxnet, cv2; "
        "print(json.dumps([c.effective, os.environ['OMP_NUM_THREADS'], cv2.getNumThreads()]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    # MXNet gets the cores; OpenCV, which runs inside the loader threads, one thread
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [True, str(available_cores()), 1]


def test_loader_workers_never_exceed_the_cores():
    assert loader_workers(0) == 0
    assert loader_workers(1000) == available_cores()
    assert loader_workers(1) == 1


def test_cli_flags(plugin_dir, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("counting_config:\n  target: 2\n")
    base = ["counting", "count", "-e", str(spec), "-r", str(tmp_path / "res")]
    r = run_tlkit([*base, "--num_threads", "0"], plugin_dir)
    assert r.returncode != 0 and "--num_threads: expected a positive whole number of threads, got 0" in r.stderr
    r = run_tlkit([*base, "--num_nodes", "2", "--master", "127.0.0.1:9091"], plugin_dir)
    assert r.returncode != 0 and "--num_nodes/--node_rank/--master apply to train only" in r.stderr
    r = run_tlkit([*base, "--num_threads", "1"], plugin_dir)
    assert r.returncode == 0, r.stderr
