"""Learning-rate schedules, stepped every iteration (pure Python; no MXNet import).

Every schedule is a function of the global iteration `step` (0-based: the rate used for the update of
batch `step`) and the planned total `total_steps = n_epochs * steps_per_epoch`. The rate for a step only
depends on (step, config, totals), so a resumed run continues with exactly the rates an uninterrupted
run would have used.

The two TLT schedules follow the TLT/TAO sources (`nvidia_tao_tf1/cv/common/utils.py`):

- soft_anneal (`MultiGPULearningRateScheduler`, classification): progress p = step / total.
  p < soft_start: linear from the start rate to `learning_rate`; after that `learning_rate` divided by
  `annealing_divider` once for every annealing point that p has passed (p > point). TLT hard-codes the
  start rate to 3e-4; tlkit uses `min_learning_rate` (set it to 3e-4 to reproduce TLT exactly).
- soft_start_annealing (`SoftStartAnnealingLearningRateScheduler`, DetectNet_v2): with
  t = p / soft_start while p < soft_start, t = 1 in between, and t = (1 - p) / (1 - annealing) once
  p > annealing, lr = exp(log(min) + t * (log(max) - log(min))): an exponential ramp min -> max, a
  hold, and an exponential decay back to min at the end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tlkit.errors import SpecError

Schedule = Callable[[int], float]


def constant(base_lr: float) -> Schedule:
    return lambda step: base_lr


def step_decay(base_lr: float, gamma: float, step_size_epochs: float, steps_per_epoch: int) -> Schedule:
    """base_lr * gamma ** (completed epochs // step_size)."""

    def lr(step: int) -> float:
        epoch = step // steps_per_epoch
        return base_lr * gamma ** (epoch // step_size_epochs)

    return lr


def exponential(base_lr: float, gamma: float, step_size_epochs: float, steps_per_epoch: int) -> Schedule:
    """base_lr * gamma ** (epochs done / step_size), continuous: TLT classification's `step` schedule
    (`StepLRScheduler`: gamma ** (step / (max_iterations * step_size% / 100)))."""

    def lr(step: int) -> float:
        return base_lr * gamma ** (step / (steps_per_epoch * step_size_epochs))

    return lr


def cosine(base_lr: float, total_steps: int, min_lr_ratio: float = 0.0, warmup_steps: int = 0) -> Schedule:
    """Linear warm-up from base*min_lr_ratio to base over `warmup_steps`, then a half cosine from base
    down to base*min_lr_ratio at `total_steps`."""
    min_lr = base_lr * min_lr_ratio
    warmup_steps = min(max(int(warmup_steps), 0), total_steps)

    def lr(step: int) -> float:
        if step < warmup_steps:
            return min_lr + (base_lr - min_lr) * step / warmup_steps
        span = max(total_steps - warmup_steps, 1)
        frac = min(max((step - warmup_steps) / span, 0.0), 1.0)
        return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * frac))

    return lr


def soft_anneal(
    base_lr: float,
    total_steps: int,
    soft_start: float,
    annealing_points: list[float],
    annealing_divider: float,
    start_lr: float,
) -> Schedule:
    """TLT classification `soft_anneal` (see the module docstring)."""
    points = list(annealing_points)
    if any(not 0.0 <= p <= 1.0 for p in points):
        raise SpecError(f"train_config.lr_config.annealing_points: {points}: each point must be in [0, 1]")
    if points != sorted(points):
        raise SpecError(f"train_config.lr_config.annealing_points: {points}: must be in increasing order")
    if points and not soft_start < points[0]:
        raise SpecError(
            f"train_config.lr_config.soft_start ({soft_start}) must be smaller than the first annealing point "
            f"({points[0]})"
        )

    def lr(step: int) -> float:
        progress = min(step / total_steps, 1.0)
        if progress < soft_start:
            t = progress / soft_start
            return t * base_lr + (1.0 - t) * start_lr
        rate = base_lr
        for p in points:
            if progress > p:
                rate /= annealing_divider
        return rate

    return lr


def soft_start_annealing(
    base_lr: float, min_lr: float, total_steps: int, soft_start: float, annealing: float
) -> Schedule:
    """TLT DetectNet_v2 `soft_start_annealing` (see the module docstring)."""
    if not soft_start < annealing:
        raise SpecError(
            f"train_config.lr_config.soft_start ({soft_start}) must be smaller than annealing ({annealing})"
        )
    log_min, log_max = math.log(min_lr), math.log(base_lr)

    def lr(step: int) -> float:
        progress = min(step / total_steps, 1.0)
        ramp = progress / soft_start if soft_start > 0.0 else 1.0
        decay = (1.0 - progress) / (1.0 - annealing) if annealing < 1.0 else 1.0
        t = ramp if progress < soft_start else 1.0
        t = decay if progress > annealing else t
        return math.exp(log_min + t * (log_max - log_min))

    return lr


def make_schedule(lr_config: Any, steps_per_epoch: int, n_epochs: int) -> Schedule:
    """The schedule `lr_config` (a `tlkit.config.LRConfig`) describes, for this many steps."""
    if steps_per_epoch < 1:
        raise SpecError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    total = steps_per_epoch * n_epochs
    c = lr_config
    if c.type == "constant":
        return constant(c.learning_rate)
    if c.type == "step":
        return step_decay(c.learning_rate, c.gamma, c.step_size, steps_per_epoch)
    if c.type == "exponential":
        return exponential(c.learning_rate, c.gamma, c.step_size, steps_per_epoch)
    if c.type == "cosine":
        return cosine(c.learning_rate, total, c.min_lr_ratio, round(c.warmup_epochs * steps_per_epoch))
    if c.type == "soft_anneal":
        return soft_anneal(
            c.learning_rate, total, c.soft_start, c.annealing_points, c.annealing_divider, c.min_learning_rate
        )
    if c.type == "soft_start_annealing":
        if c.min_learning_rate > c.learning_rate:
            raise SpecError(
                f"train_config.lr_config.min_learning_rate ({c.min_learning_rate}) must not exceed "
                f"learning_rate ({c.learning_rate})"
            )
        return soft_start_annealing(c.learning_rate, c.min_learning_rate, total, c.soft_start, c.annealing)
    raise SpecError(f"train_config.lr_config.type: unknown schedule {c.type!r}")
