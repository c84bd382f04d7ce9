"""Classification on CPU: training throughput vs a plain GluonCV loop, input-pipeline throughput, and
inference latency MXNet vs onnxruntime (the classification issue's benchmark list).

- train: img/s of the task's network (tlkit_classification.model.build_for_training from a
  ClassificationConfig, trained by tlkit.training.train with the task's soft cross-entropy) against a plain
  hybridized Gluon loop (autograd record / SoftmaxCrossEntropyLoss / backward / gluon.Trainer sgd) on the
  GluonCV model of the same architecture, same batch, input size and number of iterations. Both are fed one
  fixed in-memory batch, so the numbers are the model + loop cost (the input pipeline is measured apart).
  Cases: resnet18 at 224 and 112 px, mobilenet_v2 at 224 px; batch 32; 2 rounds (baseline first, then
  tlkit first), each from a fresh network: WARMUP iterations (graph trace, oneDNN primitive creation)
  then ITERS measured. A stamp is taken when each iteration starts (the engine's: when it pulls the
  batch); img/s = measured images / their summed iteration times, plus the median per-iteration rate
  (steadier on the shared machine). Target: tlkit / baseline >= 1.0 (within noise, ~±5 %).
- pipeline: img/s of the task's training input pipeline (open_image_folder + train_pipeline + batches, as
  `classification train` runs it, colour augmentation on) on 300 generated 256x256 JPEGs, at 224 and 112 px,
  with the decoded-image cache (the task's default: decode once, augment every epoch) and without it
  (JPEG decode every epoch). Recorded beside the training rate it must exceed.
- latency: resnet18 classification net at 224 px, batch 1 and 16: MXNet (hybridized, static_alloc) vs
  onnxruntime on the tlkit.export.export_onnx file (default thread pool, and 1 intra-op thread).
Every result records os.getloadavg() before/after: the dev machine (2 cores) is shared.

Run: .venv/bin/python -m pytest benchmarks/test_bench_classification.py --benchmark-only \
         --benchmark-json=benchmarks/results/classification.json
(TLKIT_BENCH_ITERS / TLKIT_BENCH_WARMUP change the training iteration counts.)
"""

from __future__ import annotations

import io
import os
import time

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
pytest.importorskip("gluoncv")

from mxnet import autograd, gluon  # noqa: E402

BATCH, N_CLASSES = 32, 10
WARMUP = int(os.environ.get("TLKIT_BENCH_WARMUP", "2"))
ITERS = int(os.environ.get("TLKIT_BENCH_ITERS", "5"))
ROUNDS = 2  # baseline then tlkit, then tlkit then baseline: load drift on the shared machine hits both
GLUONCV_NAME = {"resnet18": "resnet18_v1", "mobilenet_v2": "mobilenetv2_1.0"}
TRAIN_CASES = [("resnet18", 224), ("resnet18", 112), ("mobilenet_v2", 224)]
TRAIN_RATE: dict[tuple[str, int], float] = {}  # tlkit training img/s per case, for the pipeline's comparison


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def rates(runs: list[list[float]]) -> tuple[float, float]:
    """(mean img/s, median per-iteration img/s) over the ITERS iterations after WARMUP of every run.
    stamps[i] is the start of iteration i (WARMUP + ITERS + 1 of them, the last one only closes the last
    measured iteration): both loops are stamped the same way."""
    d = np.concatenate([np.diff(np.asarray(stamps))[WARMUP : WARMUP + ITERS] for stamps in runs])
    assert len(d) == ITERS * len(runs)
    return BATCH * len(d) / float(d.sum()), BATCH / float(np.median(d))


def fixed_batch(size: int) -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(0)
    return rs.rand(BATCH, 3, size, size).astype(np.float32), rs.randint(0, N_CLASSES, BATCH)


def spec(arch: str, size: int, extra: tuple[str, ...] = ()):
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig

    overrides = [
        f"model_config.arch={arch}",
        f"model_config.input_image_size=3,{size},{size}",
        f"train_config.batch_size_per_gpu={BATCH}",
        "train_config.n_epochs=1",
        "train_config.optimizer.type=sgd",
        "train_config.optimizer.momentum=0.9",
        "train_config.lr_config.type=constant",
        "train_config.lr_config.learning_rate=0.01",
        "train_config.reg_config.type=L2",
        "train_config.reg_config.weight_decay=0.0001",
        *extra,
    ]
    if arch == "resnet18":
        overrides[0] = "model_config.arch=resnet"
        overrides.append("model_config.n_layers=18")
    return load_spec(None, ClassificationConfig, overrides)


def baseline_loop(arch: str, x_np: np.ndarray, y_np: np.ndarray) -> list[float]:
    """The plain hybridized GluonCV loop; returns the per-iteration start stamps (+ the end)."""
    from gluoncv.model_zoo import get_model

    mx.random.seed(0)
    net = get_model(GLUONCV_NAME[arch], classes=N_CLASSES, pretrained=False)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net.hybridize()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    stamps = []
    for _ in range(WARMUP + ITERS + 1):
        stamps.append(time.perf_counter())
        x, y = mx.nd.array(x_np), mx.nd.array(y_np)
        with autograd.record():
            loss = ce(net(x), y)
        loss.backward()
        trainer.step(BATCH)
        loss.mean().asscalar()  # a real loop reads its loss
    return stamps


def tlkit_train(arch: str, size: int, x_np: np.ndarray, y_np: np.ndarray, results) -> tuple[list[float], float]:
    """The task's network trained by the core engine; returns (per-iteration stamps, train() seconds).
    The stamp is taken when the engine pulls a batch: after the previous step is queued and the loss
    before it read (the engine reads losses one step late)."""
    from rich.console import Console

    from tlkit.training import TrainJob, train
    from tlkit_classification.model import build_for_training
    from tlkit_classification.train import soft_cross_entropy

    cfg = spec(arch, size)
    built = build_for_training(cfg, [f"c{i}" for i in range(N_CLASSES)], [mx.cpu()])
    onehot = np.eye(N_CLASSES, dtype=np.float32)[y_np]
    stamps: list[float] = []

    def data(epoch):
        for _ in range(WARMUP + ITERS + 1):
            stamps.append(time.perf_counter())
            yield x_np, onehot

    job = TrainJob(
        net=built.net,
        train_data=data,
        steps_per_epoch=WARMUP + ITERS + 1,
        loss=soft_cross_entropy,
        meta=built.meta,
        frozen=built.frozen,
    )
    t0 = time.perf_counter()
    res = train(job, cfg.train_config, results, [mx.cpu()], Console(file=io.StringIO()))
    end = time.perf_counter() - t0
    assert len(res.history) == 1
    return stamps, end


@pytest.mark.parametrize("arch,size", TRAIN_CASES, ids=[f"{a}-{s}" for a, s in TRAIN_CASES])
def test_train_throughput_vs_gluoncv(benchmark, tmp_path, arch, size):
    x_np, y_np = fixed_batch(size)
    out = {"base": [], "tlkit": [], "train_call_s": [], "load": []}
    rounds = iter(range(ROUNDS))

    def pair():
        r = next(rounds)
        before = load()
        for side in ("base", "tlkit") if r % 2 == 0 else ("tlkit", "base"):
            if side == "base":
                out["base"].append(baseline_loop(arch, x_np, y_np))
            else:
                stamps, seconds = tlkit_train(arch, size, x_np, y_np, tmp_path / f"run{r}")
                out["tlkit"].append(stamps)
                out["train_call_s"].append(seconds)
        out["load"].append([before, load()])

    benchmark.pedantic(pair, rounds=ROUNDS, iterations=1)
    (b_mean, b_med), (t_mean, t_med) = rates(out["base"]), rates(out["tlkit"])
    TRAIN_RATE[(arch, size)] = t_mean
    benchmark.extra_info.update(
        {
            "arch": arch,
            "input": size,
            "batch": BATCH,
            "rounds": ROUNDS,
            "warmup_iters": WARMUP,
            "measured_iters_per_round": ITERS,
            "baseline": f"gluoncv {GLUONCV_NAME[arch]}, hybridized, gluon.Trainer sgd",
            "gluoncv_img_per_s": b_mean,
            "tlkit_img_per_s": t_mean,
            "ratio": t_mean / b_mean,
            "gluoncv_median_iter_img_per_s": b_med,
            "tlkit_median_iter_img_per_s": t_med,
            "ratio_median_iter": t_med / b_med,
            "tlkit_train_call_s": out["train_call_s"],  # the whole train() call: also checkpoint/model writes
            "loadavg_before_after": out["load"],
        }
    )
    assert t_mean > 0 and b_mean > 0


# -- input pipeline --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "decode"])
@pytest.mark.parametrize("size", [224, 112])
def test_pipeline_throughput(benchmark, jpeg_folder, size, cache):
    from tlkit_classification.data import batches, open_image_folder, preprocessing_for
    from tlkit_classification.model import build_meta
    from tlkit_classification.train import train_pipeline

    cfg = spec("resnet18", size, ("augmentation_config.enable_color_augmentation=true",))
    tc = cfg.train_config
    ds = open_image_folder(jpeg_folder, cache=cache, max_side=int(size / 0.875 * 1.25), workers=tc.n_workers)
    assert len(ds) == 300
    pipe = train_pipeline(cfg, build_meta(cfg, ds.classes, preprocessing_for("torch")))
    epochs = iter(range(1000))
    before = load()

    def epoch():
        n = 0
        for x, _ in batches(
            ds, pipe, BATCH, epoch=next(epochs), shuffle=True, drop_last=True, workers=tc.n_workers, as_nd=True
        ):
            x.wait_to_read()
            n += x.shape[0]
        return n

    n = benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
    rate = n / benchmark.stats.stats.mean
    info = {
        "input": size,
        "images_per_epoch": n,
        "decoded_cache": cache,
        "workers": tc.n_workers,
        "augmentation": "random-resized crop, flip, colour jitter, normalize",
        "pipeline_img_per_s": rate,
        "loadavg_before_after": [before, load()],
    }
    consumers = {f"{a}@{s}": r for (a, s), r in TRAIN_RATE.items() if s == size}
    if consumers:
        info["training_consumes_img_per_s"] = consumers
        info["pipeline_over_fastest_training"] = rate / max(consumers.values())
    benchmark.extra_info.update(info)
    assert n == (300 // BATCH) * BATCH


# -- inference latency -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_224(tmp_path_factory):
    """(hybridized net, {engine: onnxruntime runner}) of the task's resnet18 net at 224 px."""
    from tlkit.export import export_onnx
    from tlkit.export.runners import OnnxRuntimeRunner
    from tlkit_classification.model import build_meta, build_net

    cfg = spec("resnet18", 224)
    classes = [f"c{i}" for i in range(N_CLASSES)]
    meta = build_meta(cfg, classes, {"mode": "torch"})
    net = build_net(meta["build"])
    mx.random.seed(0)
    net.initialize(mx.init.Xavier(magnitude=2.0))
    net.hybridize(static_alloc=True, static_shape=True)
    path = export_onnx(net, tmp_path_factory.mktemp("onnx") / "resnet18.onnx", meta=meta)
    # default threads (one per core) and one thread: on the shared 2-core machine onnxruntime's spinning
    # thread pool loses more to other processes than MXNet does
    orts = {"onnxruntime": OnnxRuntimeRunner(path), "onnxruntime-1thread": OnnxRuntimeRunner(path, threads=1)}
    x = np.random.default_rng(0).normal(0, 1, (2, 3, 224, 224)).astype(np.float32)
    ref = net(mx.nd.array(x)).asnumpy()
    for ort in orts.values():
        np.testing.assert_allclose(ort.run(x)[0], ref, rtol=1e-3, atol=1e-4)  # same network in both engines
    return net, orts


@pytest.mark.parametrize("batch", [1, 16])
@pytest.mark.parametrize("engine", ["mxnet", "onnxruntime", "onnxruntime-1thread"])
def test_resnet18_latency(benchmark, resnet18_224, engine, batch):
    net, orts = resnet18_224
    x = np.random.default_rng(1).normal(0, 1, (batch, 3, 224, 224)).astype(np.float32)
    if engine == "mxnet":

        def infer():
            return net(mx.nd.array(x)).asnumpy()
    else:

        def infer():
            return orts[engine].run(x)[0]

    before = load()
    rounds = 10 if batch == 1 else 4
    out = benchmark.pedantic(infer, rounds=rounds, iterations=1, warmup_rounds=2)
    mean = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        {
            "model": "resnet18 (tlkit classification net)",
            "input": 224,
            "batch": batch,
            "engine": engine,
            "latency_ms_mean": mean * 1e3,
            "latency_ms_median": benchmark.stats.stats.median * 1e3,
            "img_per_s": batch / mean,
            "loadavg_before_after": [before, load()],
        }
    )
    assert out.shape == (batch, N_CLASSES)
