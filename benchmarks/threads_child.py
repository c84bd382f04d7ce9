"""Child process of test_bench_threads.py: one training measurement under the environment it was started with.

    python benchmarks/threads_child.py engine resnet18 224     # fixed in-memory batch, the engine's loop
    python benchmarks/threads_child.py loader resnet18 112 DIR  # `classification train` on a JPEG folder

Prints one JSON line: img/s over the measured iterations, the thread settings MXNet saw.
MXNet reads OMP_NUM_THREADS when it loads, hence a fresh process per setting.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def bench_module():
    path = Path(__file__).with_name("test_bench_classification.py")
    spec = importlib.util.spec_from_file_location("bench_classification", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def engine(arch: str, size: int, results: Path) -> dict:
    """Median and mean img/s of the engine's iterations after the warm-up (fixed in-memory batch)."""
    mod = bench_module()
    x, y = mod.fixed_batch(size)
    stamps, _ = mod.tlkit_train(arch, size, x, y, results)
    d = np.diff(np.asarray(stamps))[mod.WARMUP : mod.WARMUP + mod.ITERS]
    return {"img_per_s": mod.BATCH * len(d) / float(d.sum()), "median_iter_img_per_s": mod.BATCH / float(np.median(d))}


def loader(arch: str, size: int, images: Path, results: Path) -> dict:
    """img/s of one epoch of `classification train` reading JPEGs with its thread-pool loader (workers 2)."""
    import mxnet as mx
    from rich.console import Console

    from tlkit_classification.train import train_model

    mod = bench_module()
    cfg = mod.spec(
        arch,
        size,
        (
            f"dataset_config.train_dataset_path={images}",
            "dataset_config.cache_images=false",
            "augmentation_config.enable_color_augmentation=true",
            "train_config.n_workers=2",
        ),
    )
    res = train_model(cfg, results, Console(file=io.StringIO()), [mx.cpu()])
    return {"img_per_s": res.history[0]["throughput"]}


def main() -> None:
    kind, arch, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    results = Path(os.environ["TLKIT_BENCH_RESULTS"])
    t = time.perf_counter()
    out = engine(arch, size, results) if kind == "engine" else loader(arch, size, Path(sys.argv[4]), results)
    out.update(
        {
            "seconds": time.perf_counter() - t,
            "env": {
                k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MXNET_CPU_WORKER_NTHREADS", "OPENCV_FOR_THREADS_NUM")
            },
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
