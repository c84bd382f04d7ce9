"""Classification: input-pipeline throughput and EfficientNet-Lite0 training/inference speed on CPU.

- pipeline: img/s of the training pipeline (cached decoded images -> random-resized crop, flip, color
  jitter, normalize, batch) on the demo's generated set at 96 -> 64 px, 2 threads;
- train_step: img/s of forward + backward + update for the classification net (Lite0, 64 px, batch 16);
- latency: batch-1 logits in MXNet and in onnxruntime (64 px).

Run: .venv/bin/python -m pytest benchmarks/test_bench_classification.py --benchmark-only \
         --benchmark-json=benchmarks/results/classification.json
"""

from __future__ import annotations

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")

SIZE, BATCH = 64, 16


@pytest.fixture(scope="module")
def demo_set(tmp_path_factory):
    from tlkit_classification.data import open_image_folder
    from tlkit_classification.demo_data import make_photo_dataset

    root = tmp_path_factory.mktemp("demo")
    make_photo_dataset(root, {"train": 40}, size=96)
    return open_image_folder(root / "train")


def test_pipeline_throughput(benchmark, demo_set):
    from tlkit_classification.data import Pipeline, batches, preprocessing_for

    pipe = Pipeline((3, SIZE, SIZE), preprocessing_for("tf"), train=True, color=True)

    def epoch():
        return sum(len(x) for x, _ in batches(demo_set, pipe, BATCH, shuffle=True, seed=0, workers=2))

    n = benchmark(epoch)
    benchmark.extra_info["img_per_s"] = n / benchmark.stats.stats.mean


@pytest.fixture(scope="module")
def lite0():
    from tlkit_classification.model import build_from_meta

    net = build_from_meta({"build": {"arch": "efficientnet_lite0", "n_classes": 6}})
    net.initialize(mx.init.Xavier())
    net.hybridize(static_alloc=True)
    return net


def test_train_step_throughput(benchmark, lite0):
    from mxnet import autograd, gluon

    trainer = gluon.Trainer(lite0.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9})
    x = mx.nd.random.uniform(-1, 1, (BATCH, 3, SIZE, SIZE))
    y = mx.nd.array(np.arange(BATCH) % 6)
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step():
        with autograd.record():
            loss = loss_fn(lite0(x), y)
        loss.backward()
        trainer.step(BATCH)
        loss.wait_to_read()

    step()
    benchmark.pedantic(step, rounds=5, iterations=2)
    benchmark.extra_info["img_per_s"] = BATCH / benchmark.stats.stats.mean


@pytest.mark.parametrize("engine", ["mxnet", "onnxruntime"])
def test_batch1_latency(benchmark, lite0, tmp_path_factory, engine):
    from tlkit.context import CommandContext
    from tlkit.export.command import run as export_run
    from tlkit.model_io import save_net
    from tlkit_classification.runner import load_runner

    d = tmp_path_factory.mktemp("lat")
    meta = {"task": "classification", "arch": "efficientnet_lite0", "classes": list("abcdef"),
            "input_shape": [3, SIZE, SIZE], "preprocessing": {"mode": "tf"},
            "build": {"arch": "efficientnet_lite0", "n_classes": 6}}
    tlk = save_net(d / "m.tlk", lite0, meta)
    path = tlk
    if engine == "onnxruntime":
        path = d / "m.onnx"
        export_run(CommandContext(task="classification", command="export", model=tlk, output=path))
    runner = load_runner(path)
    x = np.random.default_rng(0).normal(0, 1, (1, 3, SIZE, SIZE)).astype(np.float32)
    runner.logits(x)
    benchmark(runner.logits, x)
