"""Training-engine overhead: `tlkit.training.train` vs a bare hybridized Gluon loop vs PyTorch eager, same model.

Models: tlkit's classification networks resnet18, mobilenet_v2 and efficientnet_lite0 (random init, 10 classes),
SIZE px, batch 32, one fixed in-memory batch (the input pipeline is measured in test_bench_classification.py):
- bare: the same network, hybridized, `autograd.record` / SoftmaxCrossEntropyLoss / backward / `gluon.Trainer.step`
  (SGD momentum 0.9, weight decay 1e-4) with the loss read every step, as a hand-written loop would;
- engine: `train()` on the same network and batch (the task's soft cross-entropy on one-hot labels; L2 on the
  kernels only), stamped when it pulls each batch;
- torch: PyTorch eager on the same architecture (torch_child.py, in the venv named by TLKIT_TORCH_PYTHON,
  default .venvs/torch/bin/python; skipped without one), same batch size, threads and optimizer.
Each round runs the three in turn, the order rotating between rounds, so load drift on the shared machine hits
all of them. Per iteration after WARMUP: wall time and process CPU time; recorded per round and as medians:
img/s (median iteration), engine/bare and engine/torch ratios. Target: engine within 5 % of bare.
MXNet's threads come from the environment (run with OMP_NUM_THREADS=2); torch gets the same count.

Run: OMP_NUM_THREADS=2 .venv/bin/python -m pytest benchmarks/test_bench_engine.py --benchmark-only \\
         --benchmark-json=benchmarks/results/engine.json
(TLKIT_BENCH_SIZE, TLKIT_BENCH_ITERS, TLKIT_BENCH_ROUNDS change the size, iterations and rounds.)
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
pytest.importorskip("tlkit_classification")

from mxnet import autograd, gluon  # noqa: E402

HERE = Path(__file__).resolve().parent
BATCH, N_CLASSES = 32, 10
SIZE = int(os.environ.get("TLKIT_BENCH_SIZE", "224"))
WARMUP = 2
ITERS = int(os.environ.get("TLKIT_BENCH_ITERS", "6"))
ROUNDS = int(os.environ.get("TLKIT_BENCH_ROUNDS", "2"))
ARCHS = ("resnet18", "mobilenet_v2", "efficientnet_lite0")
TORCH_PYTHON = Path(os.environ.get("TLKIT_TORCH_PYTHON", HERE.parent / ".venvs" / "torch" / "bin" / "python"))


def threads() -> int:
    from tlkit.threads import configure_threads

    return configure_threads(environ=dict(os.environ)).threads


def spec(arch: str):
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig

    model = (
        ["model_config.arch=resnet", "model_config.n_layers=18"]
        if arch == "resnet18"
        else [f"model_config.arch={arch}"]
    )
    return load_spec(
        None,
        ClassificationConfig,
        [
            *model,
            f"model_config.input_image_size=3,{SIZE},{SIZE}",
            f"train_config.batch_size_per_gpu={BATCH}",
            "train_config.n_epochs=1",
            "train_config.optimizer.type=sgd",
            "train_config.optimizer.momentum=0.9",
            "train_config.lr_config.type=constant",
            "train_config.lr_config.learning_rate=0.01",
            "train_config.reg_config.type=L2",
            "train_config.reg_config.weight_decay=0.0001",
        ],
    )


def build(arch: str):
    from tlkit_classification.model import build_for_training

    mx.random.seed(0)
    return build_for_training(spec(arch), [f"c{i}" for i in range(N_CLASSES)], [mx.cpu()])


def fixed_batch() -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(0)
    return rs.rand(BATCH, 3, SIZE, SIZE).astype(np.float32), rs.randint(0, N_CLASSES, BATCH)


def bare(arch: str, x_np, y_np, _results) -> list:
    net = build(arch).net
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    stamps = []
    for _ in range(WARMUP + ITERS + 1):
        stamps.append((time.perf_counter(), time.process_time()))
        x, y = mx.nd.array(x_np), mx.nd.array(y_np)  # the engine converts numpy batches too
        with autograd.record():
            loss = ce(net(x), y)
        loss.backward()
        trainer.step(BATCH)
        loss.mean().asscalar()  # a real loop reads its loss
    return stamps


def engine(arch: str, x_np, y_np, results) -> list:
    from rich.console import Console
    from tlkit.training import TrainJob, train
    from tlkit_classification.train import soft_cross_entropy

    built = build(arch)
    onehot = np.eye(N_CLASSES, dtype=np.float32)[y_np]
    stamps = []

    def data(epoch):
        for _ in range(WARMUP + ITERS + 1):
            stamps.append((time.perf_counter(), time.process_time()))
            yield x_np, onehot

    job = TrainJob(
        net=built.net,
        train_data=data,
        steps_per_epoch=WARMUP + ITERS + 1,
        loss=soft_cross_entropy,
        meta=built.meta,
        frozen=built.frozen,
    )
    train(job, spec(arch).train_config, results, [mx.cpu()], Console(file=io.StringIO()))
    return stamps


def torch(arch: str, _x, _y, _results) -> list | None:
    if not TORCH_PYTHON.is_file():
        return None
    out = subprocess.run(
        [
            str(TORCH_PYTHON),
            str(HERE / "torch_child.py"),
            arch,
            str(SIZE),
            str(BATCH),
            str(WARMUP),
            str(ITERS),
            str(threads()),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["stamps"]


def per_iter(stamps: list) -> tuple[float, float]:
    """(median wall s, median CPU s) of the iterations after the warm-up."""
    d = np.diff(np.asarray(stamps), axis=0)[WARMUP : WARMUP + ITERS]
    return float(np.median(d[:, 0])), float(np.median(d[:, 1]))


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_vs_bare_loop_vs_torch(benchmark, tmp_path, arch):
    x_np, y_np = fixed_batch()
    loops = {"bare": bare, "engine": engine, "torch": torch}
    rows = []
    rounds = iter(range(ROUNDS))

    def one_round():
        r = next(rounds)
        order = list(loops)[r % 3 :] + list(loops)[: r % 3]
        row = {"order": order, "loadavg_before": list(os.getloadavg())}
        for name in order:
            stamps = loops[name](arch, x_np, y_np, tmp_path / f"{name}{r}")
            if stamps is not None:
                wall, cpu = per_iter(stamps)
                row[f"{name}_img_per_s"], row[f"{name}_img_per_cpu_s"] = BATCH / wall, BATCH / cpu
        rows.append(row)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0] if k.endswith("_s")}
    ratios = {
        "engine_vs_bare": med["engine_img_per_s"] / med["bare_img_per_s"],
        "engine_vs_bare_cpu": med["engine_img_per_cpu_s"] / med["bare_img_per_cpu_s"],
    }
    if "torch_img_per_s" in med:
        ratios["engine_vs_torch"] = med["engine_img_per_s"] / med["torch_img_per_s"]
    benchmark.extra_info.update(
        {
            "arch": arch,
            "input": SIZE,
            "batch": BATCH,
            "warmup": WARMUP,
            "iters": ITERS,
            "threads": threads(),
            "median": med,
            "ratios": ratios,
            "rounds": rows,
        }
    )
    assert med["engine_img_per_s"] > 0 and med["bare_img_per_s"] > 0
