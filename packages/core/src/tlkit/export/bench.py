"""Throughput and latency percentiles of a model in an engine backend, like trtexec's summary
(`tlkit model bench`, `tlkit tensorrt bench`).

Latency is host wall time per `runner.run(batch)` call: host->device copy, inference and device->host
copy (trtexec's "Latency"), after `warmup` untimed calls. Any runner works (`load_runner` picks the
backend by suffix), so an .onnx in onnxruntime can be compared with its engine.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError, SpecError

PERCENTILES = (50, 90, 95, 99)


def latency_summary(seconds: list[float] | np.ndarray) -> dict[str, float]:
    """min/mean/p50/p90/p95/p99/max in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise DataError("no timed iterations")
    out = {"min": float(ms.min()), "mean": float(ms.mean())}
    out.update({f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES})
    out["max"] = float(ms.max())
    return out


def input_shape_of(runner: Any, shape: tuple[int, ...] | None = None) -> tuple[int, ...]:
    shape = tuple(shape or runner.input_shape or ())
    if len(shape) != 3:
        raise SpecError(f"the model's input shape is not fixed ({shape or 'unknown'}); give --shape CxHxW")
    return shape


def bench_runner(
    runner: Any,
    *,
    batch: int = 1,
    iterations: int = 100,
    warmup: int = 10,
    shape: tuple[int, ...] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Time `iterations` runs of a random NCHW batch; returns throughput and latency statistics."""
    if batch < 1 or iterations < 1 or warmup < 0:
        raise SpecError(
            f"--batch {batch} / --iterations {iterations} / --warmup {warmup}: batch and iterations "
            "must be >= 1, warmup >= 0"
        )
    chw = input_shape_of(runner, shape)
    x = np.random.RandomState(seed).uniform(-1, 1, (batch, *chw)).astype(np.float32)
    for _ in range(warmup):
        runner.run(x)
    times = []
    start = time.perf_counter()
    for _ in range(iterations):
        t = time.perf_counter()
        runner.run(x)
        times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    return {
        "batch": batch,
        "input_shape": [batch, *chw],
        "iterations": iterations,
        "warmup": warmup,
        "total_s": total,
        "throughput_qps": iterations / total,
        "throughput_ips": iterations * batch / total,
        "latency_ms": latency_summary(times),
    }


def bench(
    path: str | os.PathLike,
    *,
    backend: str | None = None,
    batch: int = 1,
    iterations: int = 100,
    warmup: int = 10,
    shape: tuple[int, ...] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Load `path` with its engine backend and benchmark it (`threads`: onnxruntime's intra-op threads)."""
    from tlkit.export.runners import load_runner

    runner = load_runner(path, backend, **({"threads": threads} if threads else {}))
    result = bench_runner(runner, batch=batch, iterations=iterations, warmup=warmup, shape=shape)
    engine = (getattr(runner, "metadata", None) or {}).get("engine") or {}
    session = getattr(runner, "session", None)  # onnxruntime: the execution provider that ran it
    device = (
        session.get_providers()[0]
        if session is not None and hasattr(session, "get_providers")
        else str(getattr(runner, "ctx", None) or "")
    )
    return {
        "model": str(Path(path)),
        "backend": type(runner).__name__,
        "device": device or "default",
        "precision": engine.get("precision") or (runner.metadata or {}).get("data_type"),
        **result,
    }


def format_report(r: dict[str, Any]) -> str:
    lat = r["latency_ms"]
    return "\n".join(
        [
            f"Model: {r['model']} ({r['backend']}, {r.get('precision') or '?'}), "
            f"input {'x'.join(map(str, r['input_shape']))}",
            f"Iterations: {r['iterations']} timed after {r['warmup']} warm-up, {r['total_s']:.3f} s",
            f"Throughput: {r['throughput_qps']:.2f} qps ({r['throughput_ips']:.2f} images/s)",
            "Latency: min = {min:.3f} ms, max = {max:.3f} ms, mean = {mean:.3f} ms, median = {p50:.3f} ms, "
            "percentile(90%) = {p90:.3f} ms, percentile(95%) = {p95:.3f} ms, percentile(99%) = {p99:.3f} ms".format(
                **lat
            ),
        ]
    )
