"""CPU thread defaults (tlkit.threads): training throughput with MXNet's own default vs tlkit's.

MXNet reads OMP_NUM_THREADS once, when it loads, so each setting runs in a fresh process (threads_child.py):
- engine: the classification network trained by the engine on one fixed in-memory batch (resnet18 and
  mobilenet_v2 at 224 px, batch 32), img/s over the iterations after the warm-up, under
  * "mxnet_default": no OMP_NUM_THREADS (MXNet then uses half the cores: 1 on 2 cores);
  * "tlkit": what `configure_threads()` sets (OMP_NUM_THREADS = the usable cores, OpenCV 1 thread);
  * "tlkit+2_engine_workers": the same plus MXNET_CPU_WORKER_NTHREADS=2 (MXNet's engine running two ops at
    once), to decide whether tlkit should set it too;
- loader: `classification train` for one epoch on 300 JPEGs (decoded every epoch, colour augmentation, 2
  loader threads) at 112 px, with tlkit's settings vs the same with OpenCV free to use its own threads
  inside the loader threads ("opencv_default"): whether the loader oversubscribes the cores.
Rounds alternate the order of the settings. The ratio tlkit / mxnet_default is the gain a user gets.

Run: .venv/bin/python -m pytest benchmarks/test_bench_threads.py --benchmark-only \\
         --benchmark-json=benchmarks/results/threads.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mxnet")
pytest.importorskip("tlkit_classification")

HERE = Path(__file__).resolve().parent
ROUNDS = 2
THREAD_VARS = ("OMP_NUM_THREADS", "OPENCV_FOR_THREADS_NUM", "MXNET_CPU_WORKER_NTHREADS", "MXNET_OMP_MAX_THREADS")


def env_for(setting: str) -> dict[str, str]:
    from tlkit.threads import configure_threads

    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if setting != "mxnet_default":
        configure_threads(environ=env)
    if setting == "tlkit+2_engine_workers":
        env["MXNET_CPU_WORKER_NTHREADS"] = "2"
    if setting == "opencv_default":
        del env["OPENCV_FOR_THREADS_NUM"]
    return env


def child(args: list[str], setting: str, results: Path) -> dict:
    env = {**env_for(setting), "TLKIT_BENCH_RESULTS": str(results), "TLKIT_BENCH_ITERS": "6", "TLKIT_BENCH_WARMUP": "2"}
    out = subprocess.run(
        [sys.executable, str(HERE / "threads_child.py"), *args], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(benchmark, tmp_path, args: list[str], settings: tuple[str, ...], baseline: str) -> None:
    rows: list[dict] = []
    rounds = iter(range(ROUNDS))

    def one_round():
        r = next(rounds)
        order = settings if r % 2 == 0 else settings[::-1]
        rows.append({s: child(args, s, tmp_path / f"{s}{r}") for s in order} | {"loadavg": list(os.getloadavg())})

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    med = {s: float(np.median([r[s]["img_per_s"] for r in rows])) for s in settings}
    benchmark.extra_info.update(
        {
            "args": args,
            "img_per_s": med,
            "vs_mxnet_default" if baseline == "mxnet_default" else "vs_tlkit": {
                s: med[s] / med[baseline] for s in settings
            },
            "env": {s: rows[0][s]["env"] for s in settings},
            "rounds": rows,
        }
    )
    assert all(v > 0 for v in med.values())


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2"])
def test_engine_threads(benchmark, tmp_path, arch):
    measure(
        benchmark,
        tmp_path,
        ["engine", arch, "224"],
        ("mxnet_default", "tlkit", "tlkit+2_engine_workers"),
        "mxnet_default",
    )


def test_loader_threads(benchmark, tmp_path, jpeg_folder):
    measure(
        benchmark,
        tmp_path,
        ["loader", "resnet18", "112", str(jpeg_folder)],
        ("tlkit", "opencv_default", "mxnet_default"),
        "mxnet_default",
    )
