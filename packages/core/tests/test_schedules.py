"""Learning-rate schedules: exact values at chosen steps (formulas from the TLT sources)."""

import math

import pytest

from tlkit.config import LRConfig
from tlkit.errors import SpecError
from tlkit.training.schedules import make_schedule


def sched(steps_per_epoch=10, n_epochs=10, **kw):
    return make_schedule(LRConfig(**kw), steps_per_epoch, n_epochs)


def test_constant():
    f = sched(type="constant", learning_rate=0.05)
    assert [f(s) for s in (0, 37, 99)] == [0.05, 0.05, 0.05]


def test_step_decays_every_step_size_epochs():
    f = sched(type="step", learning_rate=0.1, gamma=0.5, step_size=3)
    assert f(0) == pytest.approx(0.1)
    assert f(29) == pytest.approx(0.1)  # epoch 2 (0-based) still before the first decay
    assert f(30) == pytest.approx(0.05)  # epoch 3
    assert f(60) == pytest.approx(0.025)
    assert f(99) == pytest.approx(0.0125)  # epoch 9 -> 9 // 3 = 3 decays


def test_exponential_is_tlt_classification_step():
    # TLT StepLRScheduler(base_lr, gamma, step_size=10 (% of training), max_iterations=100):
    # lr = base_lr * gamma ** (global_step / (max_iterations * step_size // 100)), continuous
    def tlt(step, base=0.006, gamma=0.1, step_pct=10, max_it=100):
        return base * gamma ** (step / (max_it * step_pct // 100))

    # 10 epochs of 10 steps: 10 % of training = 1 epoch
    f = sched(type="exponential", learning_rate=0.006, gamma=0.1, step_size=1.0)
    for s in (0, 5, 10, 37, 99):
        assert f(s) == pytest.approx(tlt(s), rel=1e-12)


def test_cosine_with_warmup():
    # 100 steps, 2 warm-up epochs = 20 steps, min ratio 0.1
    f = sched(type="cosine", learning_rate=1.0, min_lr_ratio=0.1, warmup_epochs=2)
    assert f(0) == pytest.approx(0.1)
    assert f(10) == pytest.approx(0.55)  # half-way through the linear warm-up
    assert f(20) == pytest.approx(1.0)  # warm-up done: cosine starts at the top
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # = 0.55
    assert f(100) == pytest.approx(0.1)
    vals = [f(s) for s in range(20, 101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))  # monotone decay after warm-up


def test_cosine_without_warmup_starts_at_base():
    f = sched(type="cosine", learning_rate=0.2, min_lr_ratio=0.0, warmup_epochs=0)
    assert f(0) == pytest.approx(0.2)
    assert f(50) == pytest.approx(0.1)


def test_soft_anneal_matches_tlt_formula():
    # TLT MultiGPULearningRateScheduler: linear start_lr -> base over soft_start, then / divider per point passed
    f = sched(
        type="soft_anneal",
        learning_rate=0.1,
        min_learning_rate=3e-4,
        soft_start=0.1,
        annealing_points=[0.3, 0.6, 0.8],
        annealing_divider=10,
    )
    assert f(0) == pytest.approx(3e-4)
    assert f(5) == pytest.approx(0.5 * 0.1 + 0.5 * 3e-4)  # progress 0.05 = half of the soft start
    assert f(10) == pytest.approx(0.1)
    assert f(30) == pytest.approx(0.1)  # progress == point: not yet passed (strict >)
    assert f(31) == pytest.approx(0.01)
    assert f(61) == pytest.approx(0.001)
    assert f(81) == pytest.approx(0.0001)
    assert f(99) == pytest.approx(0.0001)


def test_soft_start_annealing_matches_tlt_formula():
    # TLT SoftStartAnnealingLearningRateScheduler: exp ramp min -> max, hold, exp decay -> min
    lo, hi = 5e-6, 5e-4
    f = sched(type="soft_start_annealing", learning_rate=hi, min_learning_rate=lo, soft_start=0.2, annealing=0.6)
    assert f(0) == pytest.approx(lo)
    assert f(10) == pytest.approx(math.sqrt(lo * hi))  # t = 0.5 on a log scale: the geometric mean
    assert f(20) == pytest.approx(hi)
    assert f(40) == pytest.approx(hi)
    assert f(60) == pytest.approx(hi)
    assert f(80) == pytest.approx(math.sqrt(lo * hi))  # (1 - 0.8) / (1 - 0.6) = 0.5
    assert f(100) == pytest.approx(lo)
    assert f(120) == pytest.approx(lo)  # past the planned end (clamped)


def test_soft_start_must_precede_annealing():
    with pytest.raises(SpecError, match="soft_start .* must be smaller than annealing"):
        sched(type="soft_start_annealing", soft_start=0.5, annealing=0.4)


def test_soft_anneal_rejects_unsorted_points():
    with pytest.raises(SpecError, match="increasing order"):
        sched(type="soft_anneal", soft_start=0.05, annealing_points=[0.6, 0.3])


def test_soft_anneal_rejects_soft_start_after_first_point():
    with pytest.raises(SpecError, match="smaller than the first annealing point"):
        sched(type="soft_anneal", soft_start=0.5, annealing_points=[0.3, 0.6])


def test_min_above_max_rejected():
    with pytest.raises(SpecError, match="min_learning_rate"):
        sched(type="soft_start_annealing", learning_rate=1e-4, min_learning_rate=1e-3)
