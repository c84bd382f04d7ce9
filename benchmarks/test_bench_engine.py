"""Training-engine overhead: `tlkit.training.train` vs a bare hybridized Gluon loop, same model and batch.

GluonCV resnet18_v1 (random init), 64x64 input, batch 32, 20 iterations from a freshly built network
(both include the first-iteration graph trace). Each round runs the bare loop and then the engine, so
both see the same machine load (the dev machine is shared); recorded per round in `extra_info`:
- bare: img/s of the plain loop (record/forward/loss/backward/trainer.step, L2 via Trainer wd);
- engine: img/s over the whole `train()` call (end to end: also the checkpoint with optimizer state,
  the final model, training.csv, TensorBoard events and the curves PNG), and the engine's own in-loop
  img/s (the epoch's training loop only, before the end-of-epoch writes);
- steady: the median time between consecutive iterations after the first three, for both loops (the
  engine's is stamped when it pulls each batch), i.e. the per-iteration cost without one-off work.
Also img per CPU-second (process time, all threads): steadier than wall time on a shared machine.
Target: the engine's per-iteration (steady / in-loop) throughput within 5 % of the bare loop.

Run: .venv/bin/python -m pytest benchmarks/test_bench_engine.py --benchmark-only \
         --benchmark-json=benchmarks/results/engine.json
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
pytest.importorskip("gluoncv")

from mxnet import autograd, gluon  # noqa: E402

BATCH, SIZE, ITERS, ROUNDS = 32, 64, 20, 4


def build_net():
    from gluoncv.model_zoo import get_model

    mx.random.seed(0)
    net = get_model("resnet18_v1", pretrained=False)
    net.initialize(mx.init.Xavier())
    return net


def batch():
    rs = np.random.RandomState(0)
    x = rs.rand(BATCH, 3, SIZE, SIZE).astype(np.float32)
    y = rs.randint(0, 1000, BATCH).astype(np.float32)
    return x, y


def steady(stamps: list[tuple[float, float]]) -> tuple[float, float]:
    """Median img/s and img per CPU-second between consecutive iterations, after the first 3 (trace, warm-up)."""
    d = np.diff(np.asarray(stamps), axis=0)[3:]
    return BATCH / float(np.median(d[:, 0])), BATCH / float(np.median(d[:, 1]))


def bare_loop(x_np, y_np) -> tuple[float, float, list]:
    """(img/s, img per CPU-second, per-iteration stamps) of a plain hybridized Gluon loop."""
    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    net = build_net()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    t0, c0 = time.perf_counter(), time.process_time()
    stamps = []
    net.hybridize()
    for _ in range(ITERS):
        stamps.append((time.perf_counter(), time.process_time()))
        x, y = mx.nd.array(x_np), mx.nd.array(y_np)  # the engine converts numpy batches too
        with autograd.record():
            loss = ce(net(x), y)
        loss.backward()
        trainer.step(BATCH)
        loss.mean().asscalar()  # a real loop reads its loss
    mx.nd.waitall()
    stamps.append((time.perf_counter(), time.process_time()))
    n = BATCH * ITERS
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0), stamps


def engine_run(x_np, y_np, results) -> tuple[float, float, float, list]:
    """(end-to-end img/s, in-loop img/s, end-to-end img per CPU-second, per-iteration stamps) of
    tlkit.training.train; the stamps are taken when the engine pulls each batch."""
    from rich.console import Console

    from tlkit.config import TrainConfig
    from tlkit.training import TrainJob, train

    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    cfg = TrainConfig.model_validate(
        {
            "n_epochs": 1,
            "batch_size_per_gpu": BATCH,
            "optimizer": {"type": "sgd", "momentum": 0.9},
            "lr_config": {"type": "constant", "learning_rate": 0.01},
            "reg_config": {"type": "L2", "weight_decay": 1e-4},
        }
    )
    stamps = []

    def data(epoch):
        for _ in range(ITERS):
            stamps.append((time.perf_counter(), time.process_time()))
            yield x_np, y_np

    job = TrainJob(
        net=build_net(),
        train_data=data,
        steps_per_epoch=ITERS,
        loss=lambda out, label: ce(out, label),
        meta={"task": "bench", "arch": "resnet18_v1", "input_shape": [3, SIZE, SIZE]},
    )
    t0, c0 = time.perf_counter(), time.process_time()
    res = train(job, cfg, results, console=Console(file=io.StringIO()))
    n = BATCH * ITERS
    return n / (time.perf_counter() - t0), res.history[0]["throughput"], n / (time.process_time() - c0), stamps


def test_engine_vs_bare_loop(benchmark, tmp_path):
    x_np, y_np = batch()
    rows = []
    rounds = iter(range(100))

    def pair():
        bare, bare_cpu, bare_stamps = bare_loop(x_np, y_np)
        e2e, in_loop, e2e_cpu, eng_stamps = engine_run(x_np, y_np, tmp_path / f"run{next(rounds)}")
        (bs, bs_cpu), (es, es_cpu) = steady(bare_stamps), steady(eng_stamps)
        rows.append(
            {
                "bare_steady_img_per_s": bs,
                "bare_steady_img_per_cpu_s": bs_cpu,
                "engine_steady_img_per_s": es,
                "engine_steady_img_per_cpu_s": es_cpu,
                "steady_vs_bare": es / bs,
                "steady_cpu_vs_bare": es_cpu / bs_cpu,
                "bare_img_per_s": bare,
                "bare_img_per_cpu_s": bare_cpu,
                "engine_img_per_s_end_to_end": e2e,
                "engine_img_per_s_in_loop": in_loop,
                "engine_img_per_cpu_s_end_to_end": e2e_cpu,
                "in_loop_vs_bare": in_loop / bare,
                "end_to_end_vs_bare": e2e / bare,
                "cpu_end_to_end_vs_bare": e2e_cpu / bare_cpu,
            }
        )

    benchmark.pedantic(pair, rounds=ROUNDS, iterations=1)
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    benchmark.extra_info.update(
        {"model": "resnet18_v1", "input": SIZE, "batch": BATCH, "iterations": ITERS, "rounds": rows, "median": med}
    )
