"""Knowledge distillation while training (`train_config.distillation`): a teacher guides the student.

The engine runs the teacher on each batch before the student's recorded forward pass, in inference mode (no
gradients, batch-norm on its running statistics, hybridized), and trains on

    (1 - weight) * task loss(student outputs, label) + weight * distill loss(student outputs, teacher outputs)

where the task supplies the distillation loss (`TrainJob.distill_loss`) and, when its training outputs differ
from its inference outputs (GluonCV detectors), how to load a teacher that gives training outputs
(`TrainJob.load_teacher`). The teacher's time per step is measured (its outputs are waited for) and reported
in each epoch's row (`teacher_s`, `teacher_share`).

Shared distillation losses for tasks to use: `soft_label_kl` (classification, class scores) and `map_l2`
(dense maps: coverage, heatmaps, PAFs).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tlkit.errors import SpecError


def soft_label_kl(student: Any, teacher: Any, temperature: float, axis: int = -1) -> Any:
    """Per-sample KL(teacher || student) of temperature-softened distributions along `axis`, x T^2 (Hinton
    et al.: keeps the gradient scale of the soft targets independent of T). Other axes are summed."""
    import mxnet as mx

    t = float(temperature)
    log_t = mx.nd.log_softmax(teacher / t, axis=axis)
    kl = mx.nd.exp(log_t) * (log_t - mx.nd.log_softmax(student / t, axis=axis))
    per = kl.reshape((kl.shape[0], -1)).sum(axis=1)
    return per * (t * t)


def map_l2(student: Any, teacher: Any) -> Any:
    """Per-sample mean squared difference of two dense maps (B, ...)."""
    import mxnet as mx

    d = mx.nd.square(student - teacher)
    return d.reshape((d.shape[0], -1)).mean(axis=1)


class Teacher:
    """The teacher network in inference mode; `__call__(x)` -> its outputs (detached), timed."""

    def __init__(self, net: Any, path: Path):
        self.net, self.path = net, path
        for p in net.collect_params().values():
            p.grad_req = "null"
        self.seconds, self.steps = 0.0, 0

    def __call__(self, x: Any) -> Any:
        import mxnet as mx

        # the engine reads each step's loss one step late, so the student's previous update may still be
        # running: finish it first, or the teacher's time would include it (the demo's showed 77 % of the epoch)
        mx.nd.waitall()
        start = time.perf_counter()
        out = self.net(x)
        outs = out if isinstance(out, (list, tuple)) else [out]
        for o in outs:
            o.wait_to_read()  # the time is the teacher's, not the student's queued work
        self.seconds += time.perf_counter() - start
        self.steps += 1
        return out

    def take_time(self) -> tuple[float, int]:
        """(seconds, steps) since the last call."""
        out = (self.seconds, self.steps)
        self.seconds, self.steps = 0.0, 0
        return out


def load_teacher(job: Any, dc: Any, ctx: list[Any], console: Any) -> Teacher | None:
    """The teacher of `train_config.distillation` (None when no teacher is set), checked against the job."""
    from tlkit.model_io import load_net, read_meta

    if not dc.teacher:
        return None
    path = Path(dc.teacher)
    if job.distill_loss is None:
        raise SpecError(
            f"train_config.distillation.teacher: task {job.meta.get('task')!r} does not support distillation"
        )
    meta = read_meta(path)
    if meta.get("task") != job.meta.get("task"):
        raise SpecError(
            f"train_config.distillation.teacher {path}: a {meta.get('task')!r} model, the student is a "
            f"{job.meta.get('task')!r} model"
        )
    for key in ("classes", "input_shape"):
        if key in job.meta and meta.get(key) is not None and list(meta[key]) != list(job.meta[key]):
            raise SpecError(
                f"train_config.distillation.teacher {path}: {key} {meta[key]} differ from the student's {job.meta[key]}"
            )
    if job.load_teacher is not None:
        net = job.load_teacher(path, ctx)
    else:
        net, _ = load_net(path, ctx[0])
        if len(ctx) > 1:
            net.collect_params().reset_ctx(ctx)
    net.hybridize(static_alloc=True, static_shape=True)
    teacher = Teacher(net, path)
    n = sum(p.data().size for p in net.collect_params().values() if p._data is not None)
    console.print(f"distillation: teacher {path} ({n:,} parameters), weight {dc.weight}, temperature {dc.temperature}")
    return teacher


def distilled_loss(job: Any, dc: Any) -> Any:
    """loss(outputs, (label, teacher outputs)) mixing the task loss and the task's distillation loss."""
    w, t = float(dc.weight), float(dc.temperature)

    def loss(outputs: Any, label: Any) -> Any:
        y, teacher_out = label
        task = job.loss(outputs, y)
        return task * (1.0 - w) + job.distill_loss(outputs, teacher_out, t) * w

    return loss
