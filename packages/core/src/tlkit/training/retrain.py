"""Retraining a pruned graph from where it is (`train_config.load_graph: true`).

Pruning removes channels but leaves every BatchNorm's running statistics as they were measured on the
unpruned network, whose inputs changed: the raw pruned model often scores near chance although its weights
are close to a good model. So before the first step:

1. `reestimate_bn`: the running mean/variance of every BatchNorm are measured again on a few hundred training
   images (the network's weights do not change). `prune -e spec.yaml` does the same right after pruning.
2. validation before training (raw, then after step 1): the history's epoch-0 rows (``stage``).
3. `retrain_schedule`: the learning rates of the spec's schedule times `retrain_config.lr_scale`, after a
   linear warm-up over `retrain_config.warmup_epochs`; a pruned model is already close to a good one, and the
   rate that trained the unpruned model knocks it back (validation accuracy 0.33 after one epoch in the demo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

_STATS = ("running_mean", "running_var", "moving_mean", "moving_var")


def _zero_graph_momentum(block: Any) -> Callable[[], None]:
    """A SymbolBlock's BatchNorm nodes get momentum 0; returns the function that puts its graph back."""
    import json

    import mxnet as mx

    saved = block._cached_graph
    graph = json.loads(saved[1].tojson())
    for node in graph["nodes"]:
        if node["op"] == "BatchNorm":
            node.setdefault("attrs", {})["momentum"] = "0.0"
    block._cached_graph = (saved[0], mx.sym.load_json(json.dumps(graph)))
    block._clear_cached_op()

    def restore() -> None:
        block._cached_graph = saved
        block._clear_cached_op()

    return restore


def _zero_momentum(net: Any) -> Callable[[], None]:
    """Every BatchNorm of `net` gets momentum 0 (its running statistics := the last batch's); returns the
    function that restores the momenta."""
    from mxnet import gluon

    if isinstance(net, gluon.SymbolBlock):
        # a pruned GluonCV detector trains through a second graph sharing its parameters (`_train`)
        restores = [_zero_graph_momentum(b) for b in (net, getattr(net, "_train", None)) if b is not None]

        def restore_all() -> None:
            for r in restores:
                r()

        return restore_all
    layers: list[Any] = []
    net.apply(lambda b: layers.append(b) if isinstance(b, gluon.nn.BatchNorm) else None)
    momenta = [b._kwargs["momentum"] for b in layers]
    for b in layers:
        b._kwargs["momentum"] = 0.0
    net._clear_cached_op()

    def restore() -> None:
        for b, m in zip(layers, momenta):
            b._kwargs["momentum"] = m
        net._clear_cached_op()

    return restore


def reestimate_bn(net: Any, batches: Iterable[Any], max_images: int, ctx: Any = None) -> int:
    """Measure the running statistics of every BatchNorm of `net` again: the mean over batches of each batch's
    mean and variance (the network in training mode, no gradients, weights unchanged). `batches` yields
    (data, label) or data; stops after `max_images`. Returns the images used (0 when the net has no BatchNorm).
    Frozen BatchNorm (use_global_stats) does not update, so it keeps its statistics."""
    import mxnet as mx
    from mxnet import autograd

    ctx = ctx or mx.cpu()
    stats = [p for name, p in net.collect_params().items() if name.endswith(_STATS)]
    if not stats or max_images <= 0:
        return 0
    sums = [mx.nd.zeros_like(p.data(ctx)) for p in stats]
    n_images, n_batches = 0, 0
    restore = _zero_momentum(net)
    try:
        for batch in batches:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            x = x if isinstance(x, mx.nd.NDArray) else mx.nd.array(x)
            # MXNet's BatchNorm updates its running statistics in the backward pass: record, then backward with
            # zero head gradients (the weights' gradients are overwritten by the next training step)
            with autograd.record(train_mode=True):
                out = net(x.as_in_context(ctx))
            outs = [o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, mx.nd.NDArray)]
            autograd.backward(outs, head_grads=[mx.nd.zeros_like(o) for o in outs])
            for acc, p in zip(sums, stats):
                acc += p.data(ctx)
            n_batches += 1
            n_images += int(x.shape[0])
            if n_images >= max_images:
                break
    finally:
        restore()
    for acc, p in zip(sums, stats):
        if n_batches:
            p.set_data(acc / n_batches)  # every device gets the same statistics
    return n_images


def retrain_schedule(schedule: Callable[[int], float], rc: Any, steps_per_epoch: int) -> Callable[[int], float]:
    """`schedule` times `rc.lr_scale`, after a linear warm-up over `rc.warmup_epochs` (a `RetrainConfig`)."""
    warm = max(int(round(rc.warmup_epochs * steps_per_epoch)), 0)
    scale = float(rc.lr_scale)

    def lr(step: int) -> float:
        ramp = min(1.0, (step + 1) / warm) if warm else 1.0
        return schedule(step) * scale * ramp

    return lr


def start_rows(job: Any, cfg: Any, ctx: list[Any], console: Any) -> list[dict]:  # cfg: a TrainConfig
    """A new load_graph run: validate the raw pruned model, re-estimate BN, validate again. Returns the
    history's epoch-0 rows ({"epoch": 0, "stage": "pruned" | "bn_reestimated", metrics...})."""
    rc = cfg.retrain_config
    rows: list[dict] = []
    check = job.validate is not None and rc.validate_at_start

    def validate(stage: str) -> None:
        metrics = {k: float(v) for k, v in job.validate(job.net, ctx).items()}
        rows.append({"epoch": 0, "stage": stage, **metrics})
        kpi = (
            f"{job.kpi} {metrics[job.kpi]:.4f}"
            if job.kpi in metrics
            else ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        )
        console.print(f"before training ({stage.replace('_', ' ')}): {kpi}", highlight=False)

    if check:
        validate("pruned")
    if rc.bn_reestimation_images > 0:
        batches = islice(iter(job.train_data(0)), job.steps_per_epoch)
        n = reestimate_bn(job.net, batches, rc.bn_reestimation_images, ctx[0])
        if n:
            console.print(f"batch-norm statistics re-estimated on {n} training images")
            if check:
                validate("bn_reestimated")
    return rows


def reestimate_model_file(task: str, cfg: Any, model: Any, work_dir: Any, console: Any, ctx: list[Any]) -> list[dict]:
    """`prune -e spec.yaml`: re-estimate the batch-norm statistics of the pruned model file `model` on the
    spec's training data (through the task's TaskSpec.train_job, as `train` with load_graph would) and rewrite
    it. Returns the validation rows (before / after), empty without validation data."""
    from pathlib import Path

    from tlkit.errors import TlkitError
    from tlkit.lazy import resolve
    from tlkit.model_io import ModelFile, load_model, save_model, symbol_params
    from tlkit.registry import get_registry

    spec = get_registry().task(task)
    if spec.train_job is None:
        raise TlkitError(
            f"tlkit {task} prune -e: task {task!r} cannot build a training job to re-estimate batch-norm with"
        )
    tc = cfg.train_config.model_copy(
        update={
            "pretrained_model_path": str(model),
            "load_graph": True,
            "distillation": cfg.train_config.distillation.model_copy(update={"teacher": None}),
        }
    )
    cfg = cfg.model_copy(update={"train_config": tc})
    job = resolve(spec.train_job)(cfg, Path(work_dir), console, ctx)
    job.net.hybridize()
    rows = start_rows(job, tc, ctx, console)
    mf = load_model(model)
    sym = job.net._cached_graph[1]
    params = symbol_params(job.net, sym)
    # meta["bn_reestimation"]: {images: int, validation: [the epoch-0 rows: stage + validation metrics]}
    meta = {**mf.meta, "bn_reestimation": {"images": tc.retrain_config.bn_reestimation_images, "validation": rows}}
    save_model(model, ModelFile(meta, params, sym.tojson(), None, dict(mf.extra_files)))
    return rows
