"""Training-engine overhead: `tlkit.training.train` vs a bare hybridized Gluon loop vs PyTorch eager, same model.

Models: resnet18, mobilenet_v2 and efficientnet_lite0 (tlkit's classification networks, random init, 10 classes;
PyTorch: the same architectures, parameter counts checked equal), SIZE px, batch 32, one fixed in-memory batch
(the input pipeline is measured in test_bench_classification.py):
- bare / engine: engine_child.py (the hand-written hybridized Gluon loop; `train()` on the same network);
- torch: torch_child.py in the venv named by TLKIT_TORCH_PYTHON (default .venvs/torch/bin/python; skipped
  without one): PyTorch eager, same batch, optimizer and thread count.
The three run as separate processes in lockstep: one iteration of each in turn, ROUNDS times, each iteration
finished (all queued work waited for) before the next process starts. On the shared machine a load burst
then hits all three alike, and each round gives paired ratios. Recorded per model: every iteration's wall and
CPU time, the median img/s of each loop, and the medians of the per-round ratios engine/bare and engine/torch.
Target: engine within 5 % of bare.

Run: OMP_NUM_THREADS=2 .venv/bin/python -m pytest benchmarks/test_bench_engine.py --benchmark-only \\
         --benchmark-json=benchmarks/results/engine.json
(TLKIT_BENCH_SIZE, TLKIT_BENCH_ROUNDS change the input size and rounds; threads come from OMP_NUM_THREADS.)
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
BATCH = 32
SIZE = int(os.environ.get("TLKIT_BENCH_SIZE", "224"))
WARMUP = 2
ROUNDS = int(os.environ.get("TLKIT_BENCH_ROUNDS", "8"))
ARCHS = ("resnet18", "mobilenet_v2", "efficientnet_lite0")
TORCH_PYTHON = Path(os.environ.get("TLKIT_TORCH_PYTHON", HERE.parent / ".venvs" / "torch" / "bin" / "python"))


def threads() -> int:
    from tlkit.threads import configure_threads

    return configure_threads(environ=dict(os.environ)).threads


class Loop:
    """A child process that runs one training iteration per request."""

    def __init__(self, cmd: list[str]):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.header = self._line()  # "ready" or torch's JSON line, after the warm-up
        self.times: list[tuple[float, float]] = []

    def _line(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.proc.args[:3]} exited with {self.proc.wait()}")
        return line.strip()

    def iteration(self) -> None:
        self.proc.stdin.write("go\n")
        wall, cpu = (float(v) for v in self._line().split())
        self.times.append((wall, cpu))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=300)


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_vs_bare_loop_vs_torch(benchmark, tmp_path, arch):
    env_threads = str(threads())
    mx_cmd = [sys.executable, str(HERE / "engine_child.py")]
    loops = {
        "bare": Loop([*mx_cmd, "bare", arch, str(SIZE), str(BATCH), str(WARMUP)]),
        "engine": Loop([*mx_cmd, "engine", arch, str(SIZE), str(BATCH), str(WARMUP), str(tmp_path / "run")]),
    }
    if TORCH_PYTHON.is_file():
        loops["torch"] = Loop(
            [str(TORCH_PYTHON), str(HERE / "torch_child.py"), arch, str(SIZE), str(BATCH), str(WARMUP), env_threads]
        )
    load = []

    def one_round():
        load.append(os.getloadavg()[0])
        for loop in loops.values():
            loop.iteration()

    try:
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    finally:
        for loop in loops.values():
            loop.close()
    wall = {k: np.array([t[0] for t in v.times]) for k, v in loops.items()}
    cpu = {k: np.array([t[1] for t in v.times]) for k, v in loops.items()}
    img_per_s = {k: BATCH / float(np.median(w)) for k, w in wall.items()}
    ratios = {
        "engine_vs_bare": float(np.median(wall["bare"] / wall["engine"])),
        "engine_vs_bare_cpu": float(np.median(cpu["bare"] / cpu["engine"])),
    }
    if "torch" in loops:
        ratios["engine_vs_torch"] = float(np.median(wall["torch"] / wall["engine"]))
        ratios["engine_vs_torch_cpu"] = float(np.median(cpu["torch"] / cpu["engine"]))
    benchmark.extra_info.update(
        {
            "arch": arch,
            "input": SIZE,
            "batch": BATCH,
            "warmup": WARMUP,
            "rounds": ROUNDS,
            "threads": int(env_threads),
            "img_per_s_median": img_per_s,
            "ratios_median_of_rounds": ratios,
            "torch": json.loads(loops["torch"].header) if "torch" in loops else None,
            "iterations_wall_s": {k: v.tolist() for k, v in wall.items()},
            "iterations_cpu_s": {k: v.tolist() for k, v in cpu.items()},
            "loadavg_per_round": load,
        }
    )
    assert all(v > 0 for v in img_per_s.values())
