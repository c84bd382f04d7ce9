"""One training loop of test_bench_engine.py, run one iteration at a time on the parent's request:

    python benchmarks/engine_child.py bare|engine ARCH SIZE BATCH WARMUP

After WARMUP iterations it prints "ready"; then each "go" line on stdin runs one iteration, waits for all of
MXNet's queued work, and prints "<wall s> <process CPU s>" of that iteration; "quit" ends it. The parent runs
the loops in turn (lockstep), so a busy shared machine slows all of them alike.

- bare: tlkit's classification network, hybridized; record / SoftmaxCrossEntropyLoss / backward /
  gluon.Trainer.step (SGD momentum 0.9, weight decay 1e-4) and the loss read, as a hand-written loop does;
- engine: `tlkit.training.train` on the same network (the task's soft cross-entropy on one-hot labels, L2 on
  the kernels), fed by a generator that times each step from one batch to the next.
"""

from __future__ import annotations

import io
import sys
import time

import numpy as np

N_CLASSES = 10


def spec(arch: str, size: int, batch: int):
    from tlkit.config import load_spec
    from tlkit_classification.config import ClassificationConfig

    model = (
        ["model_config.arch=resnet", "model_config.n_layers=18"]
        if arch == "resnet18"
        else [f"model_config.arch={arch}"]
    )
    return load_spec(None, ClassificationConfig, [
        *model, f"model_config.input_image_size=3,{size},{size}", f"train_config.batch_size_per_gpu={batch}",
        "train_config.n_epochs=1", "train_config.optimizer.type=sgd", "train_config.optimizer.momentum=0.9",
        "train_config.lr_config.type=constant", "train_config.lr_config.learning_rate=0.01",
        "train_config.reg_config.type=L2", "train_config.reg_config.weight_decay=0.0001",
    ])  # fmt: skip


def requests():
    """Yield once per "go" from the parent, after printing the previous iteration's times."""
    print("ready", flush=True)
    while sys.stdin.readline().strip() == "go":
        t, c = time.perf_counter(), time.process_time()
        yield
        print(f"{time.perf_counter() - t} {time.process_time() - c}", flush=True)


def main() -> None:
    import mxnet as mx
    from mxnet import autograd, gluon

    from tlkit_classification.model import build_for_training

    kind, arch = sys.argv[1], sys.argv[2]
    size, batch, warmup = (int(v) for v in sys.argv[3:6])
    mx.random.seed(0)
    built = build_for_training(spec(arch, size, batch), [f"c{i}" for i in range(N_CLASSES)], [mx.cpu()])
    rs = np.random.RandomState(0)
    x_np, y_np = rs.rand(batch, 3, size, size).astype(np.float32), rs.randint(0, N_CLASSES, batch)

    if kind == "bare":
        net = built.net
        net.hybridize()
        trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.01, "momentum": 0.9, "wd": 1e-4})
        ce = gluon.loss.SoftmaxCrossEntropyLoss()

        def step():
            x, y = mx.nd.array(x_np), mx.nd.array(y_np)  # the engine converts numpy batches too
            with autograd.record():
                loss = ce(net(x), y)
            loss.backward()
            trainer.step(batch)
            loss.mean().asscalar()  # a real loop reads its loss

        for _ in range(warmup):
            step()
        for _ in requests():
            step()
        return

    from rich.console import Console

    from tlkit.training import TrainJob, train
    from tlkit_classification.train import soft_cross_entropy

    onehot = np.eye(N_CLASSES, dtype=np.float32)[y_np]

    def data(epoch):
        for _ in range(warmup):
            yield x_np, onehot
        mx.nd.waitall()
        for _ in requests():
            yield x_np, onehot
            mx.nd.waitall()  # the step just run, finished (the engine reads its loss one step later)

    job = TrainJob(
        net=built.net,
        train_data=data,
        steps_per_epoch=10**6,
        loss=soft_cross_entropy,
        meta=built.meta,
        frozen=built.frozen,
    )
    train(job, spec(arch, size, batch).train_config, sys.argv[6], [mx.cpu()], Console(file=io.StringIO()))


if __name__ == "__main__":
    main()
