"""The training engine on a tiny conv net and synthetic 16x16 data (a few steps per test)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import gluon  # noqa: E402

from tlkit.config import TrainConfig  # noqa: E402
from tlkit.errors import DataError, ModelFileError, OutputError, SpecError, TlkitError  # noqa: E402
from tlkit.model_io import load_model  # noqa: E402
from tlkit.training import StatusLogger, TrainJob, train  # noqa: E402
from tlkit.training import checkpoints as ck  # noqa: E402

N_CLASSES, SIZE, N_SAMPLES, BATCH = 3, 16, 32, 8
STEPS = N_SAMPLES // BATCH


# -- helpers (also imported by the subprocess in the kill test) ------------------------------------------


def make_net(seed: int = 0, dropout: float = 0.2) -> gluon.HybridBlock:
    net = gluon.nn.HybridSequential()
    net.add(
        gluon.nn.Conv2D(8, 3, padding=1),
        gluon.nn.BatchNorm(),
        gluon.nn.Activation("relu"),
        gluon.nn.Conv2D(8, 3, padding=1, strides=2),
        gluon.nn.Activation("relu"),
        gluon.nn.GlobalAvgPool2D(),
        gluon.nn.Dropout(dropout),
        gluon.nn.Dense(N_CLASSES),
    )
    mx.random.seed(seed)
    net.initialize(mx.init.Xavier())  # deferred: shapes are inferred on the first batch
    return net


def make_dataset(seed: int = 0):
    rs = np.random.RandomState(seed)
    y = rs.randint(0, N_CLASSES, N_SAMPLES)
    x = rs.rand(N_SAMPLES, 3, SIZE, SIZE).astype(np.float32) * 0.5
    x[np.arange(N_SAMPLES), y] += 0.5  # learnable: the class is the brighter channel
    y = y.astype(np.float32)
    return x, y


def make_job(seed: int = 42, net=None, **kw) -> TrainJob:
    x, y = make_dataset()

    def train_data(epoch):
        order = np.random.RandomState(seed * 1000 + epoch).permutation(N_SAMPLES)  # seeded by (seed, epoch)
        for i in range(0, N_SAMPLES, BATCH):
            idx = order[i : i + BATCH]
            yield x[idx], y[idx]

    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    fields = dict(
        net=net if net is not None else make_net(),
        train_data=train_data,
        steps_per_epoch=STEPS,
        loss=lambda out, label: ce(out, label),
        meta={"task": "unit", "arch": "tiny", "classes": ["r", "g", "b"], "input_shape": [3, SIZE, SIZE]},
    )
    fields.update(kw)
    return TrainJob(**fields)


def make_validate(values=None):
    """validate() returning fixed values in order (or real loss/accuracy when values is None)."""
    calls = []
    x, y = make_dataset(1)

    def validate(net, ctx):
        calls.append(len(calls))
        if values is not None:
            return {"validation_loss": values[min(len(calls) - 1, len(values) - 1)]}
        out = net(mx.nd.array(x, ctx=ctx[0]))
        loss = gluon.loss.SoftmaxCrossEntropyLoss()(out, mx.nd.array(y, ctx=ctx[0])).mean().asscalar()
        acc = float((out.argmax(axis=1).asnumpy() == y).mean())
        return {"validation_loss": float(loss), "validation_accuracy": acc}

    validate.calls = calls
    return validate


def make_cfg(**kw) -> TrainConfig:
    base = dict(
        n_epochs=2,
        batch_size_per_gpu=BATCH,
        random_seed=42,
        optimizer={"type": "sgd", "momentum": 0.9},
        lr_config={"type": "soft_anneal", "learning_rate": 0.05, "soft_start": 0.1, "min_learning_rate": 1e-3},
        reg_config={"type": "L2", "weight_decay": 1e-4},
    )
    base.update(kw)
    return TrainConfig.model_validate(base)


def params_np(net) -> dict[str, np.ndarray]:
    return {k: p.data().asnumpy().copy() for k, p in net._collect_params_with_prefix().items()}


# -- outputs ----------------------------------------------------------------------------------------


def test_outputs_status_csv_events_png(tmp_path):
    job = make_job(validate=make_validate(), kpi="validation_accuracy")
    res = train(job, make_cfg(n_epochs=3), tmp_path)

    assert res.model_path == tmp_path / "weights" / "model.tlk"
    mf = load_model(res.model_path)
    assert mf.meta["epoch"] == 3 and mf.meta["arch"] == "tiny" and mf.trainer_states is None
    assert res.epochs_run == 3 and res.resumed_from_epoch is None and not res.stopped_early
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert set(res.final_metrics) == {"loss", "validation_loss", "validation_accuracy"}
    assert res.best_model_path == tmp_path / "weights" / "model_best.tlk"

    lines = [json.loads(x) for x in (tmp_path / "status.json").read_text().splitlines()]
    assert [x["status"] for x in lines] == ["STARTED", "RUNNING", "RUNNING", "RUNNING", "SUCCESS"]
    for x in lines:
        assert {"date", "time", "status", "verbosity", "message"} <= set(x)
        m, d, y = x["date"].split("/")
        assert 1 <= int(m) <= 12 and 1 <= int(d) <= 31 and len(y) == 4
        assert len(x["time"].split(":")) == 3
    run = lines[2]
    assert run["epoch"] == 2 and run["max_epoch"] == 3
    assert run["time_per_epoch"].count(":") == 2 and run["eta"].count(":") == 2  # str(timedelta)
    assert {"loss", "lr", "validation_loss", "validation_accuracy"} <= set(run["graphical"])
    assert set(run["kpi"]) == {"validation_loss", "validation_accuracy"}
    assert lines[-1]["kpi"]["validation_accuracy"] == pytest.approx(res.final_metrics["validation_accuracy"])

    with open(tmp_path / "training.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"loss", "lr", "time", "validation_loss", "validation_accuracy"} <= set(rows[0])
    assert float(rows[2]["loss"]) == pytest.approx(res.history[2]["loss"])

    events = list((tmp_path / "events").iterdir())
    assert events and all(e.stat().st_size > 0 for e in events)
    png = (tmp_path / "training_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    # checkpoints: one per epoch by default, the newest 3 kept
    assert [e for e, _ in ck.list_checkpoints(tmp_path / "weights")] == [1, 2, 3]


def test_training_reduces_loss(tmp_path):
    job = make_job(net=make_net(dropout=0.0))
    cfg = make_cfg(n_epochs=6, lr_config={"type": "constant", "learning_rate": 0.1}, reg_config={"type": "none"})
    res = train(job, cfg, tmp_path)
    assert res.history[-1]["loss"] < 0.8 * res.history[0]["loss"]


def test_status_logger_standalone(tmp_path):
    log = StatusLogger(tmp_path)
    log.write("STARTED", "Starting pruning")
    log.write("SUCCESS", "Pruning done", kpi={"pruning_ratio": np.float32(0.5), "param_count": 12}, size=np.int64(3))
    lines = log.read()
    assert [x["status"] for x in lines] == ["STARTED", "SUCCESS"]
    assert lines[1]["kpi"] == {"pruning_ratio": 0.5, "param_count": 12} and lines[1]["size"] == 3
    with pytest.raises(ValueError, match="status must be one of"):
        log.write("DONE", "x")


def test_max_checkpoints_and_interval(tmp_path):
    train(make_job(), make_cfg(n_epochs=5, checkpoint_interval=2, max_checkpoints_to_keep=2), tmp_path)
    # every 2 epochs (2, 4) plus the end (5); only the newest 2 kept
    assert [e for e, _ in ck.list_checkpoints(tmp_path / "weights")] == [4, 5]
    state = load_model(tmp_path / "weights" / "model_epoch_005.tlk").meta["train_state"]
    assert state["epoch"] == 5 and [h["epoch"] for h in state["history"]] == [1, 2, 3, 4, 5]


# -- resume -----------------------------------------------------------------------------------------


class Crash(Exception):
    pass


def crashing_data(job, at_epoch):
    inner = job.train_data

    def data(epoch):
        if epoch == at_epoch:
            raise Crash(f"simulated crash at epoch {epoch}")
        return inner(epoch)

    return data


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_resume_gives_identical_weights(tmp_path, opt):
    cfg = make_cfg(n_epochs=4, optimizer={"type": opt}, lr_config={"type": "cosine", "learning_rate": 0.02})
    full = make_job()
    train(full, cfg, tmp_path / "full")

    job = make_job()
    job.train_data = crashing_data(job, at_epoch=2)
    with pytest.raises(Crash):
        train(job, cfg, tmp_path / "resumed")
    lines = StatusLogger(tmp_path / "resumed").read()
    assert lines[-1]["status"] == "FAILURE" and "simulated crash at epoch 2" in lines[-1]["message"]

    again = make_job()  # a fresh process would build a fresh net too
    res = train(again, cfg, tmp_path / "resumed")
    assert res.resumed_from_epoch == 2 and res.epochs_run == 4
    assert [h["epoch"] for h in res.history] == [1, 2, 3, 4]
    a, b = params_np(full.net), params_np(again.net)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # and the model files agree too
    fa = load_model(tmp_path / "full" / "weights" / "model.tlk").params
    fb = load_model(tmp_path / "resumed" / "weights" / "model.tlk").params
    for k in fa:
        np.testing.assert_array_equal(fa[k].asnumpy(), fb[k].asnumpy(), err_msg=k)


def test_task_state_is_checkpointed_and_restored_on_resume(tmp_path):
    """A task's changing state (set in on_epoch_end) is saved in each checkpoint and handed back on resume."""
    cfg = make_cfg(n_epochs=4)

    def stateful_job(seen):
        state = {"scale": 1.0}
        job = make_job()

        def on_epoch_end(epoch, row):
            state["scale"] *= 2.0  # changes every epoch, after that epoch's validation

        def set_state(d):
            seen.append(dict(d))
            state.update(d)

        job.on_epoch_end = on_epoch_end
        job.get_task_state = lambda: dict(state)
        job.set_task_state = set_state
        return job, state

    seen: list = []
    job, _ = stateful_job(seen)
    job.train_data = crashing_data(job, at_epoch=2)
    with pytest.raises(Crash):
        train(job, cfg, tmp_path)
    ckpt = load_model(tmp_path / "weights" / "model_epoch_002.tlk")
    assert ckpt.meta["train_state"]["task_state"] == {"scale": 4.0}  # two epochs ended before the save
    again, state = stateful_job(seen)
    train(again, cfg, tmp_path)
    assert seen == [{"scale": 4.0}]
    assert state["scale"] == 16.0  # as a run of 4 epochs without a crash


def test_resume_prints_checkpoint_and_finished_run_is_not_retrained(tmp_path, capsys):
    cfg = make_cfg(n_epochs=2)
    train(make_job(), cfg, tmp_path)
    job = make_job()
    res = train(job, cfg, tmp_path)
    out = capsys.readouterr().out
    assert "Resuming from checkpoint weights/model_epoch_002.tlk (epoch 2 of 2)" in out
    assert res.epochs_run == 2 and res.resumed_from_epoch == 2 and len(res.history) == 2


def test_leftover_temp_file_is_ignored_and_corrupt_checkpoint_skipped(tmp_path, capsys):
    cfg = make_cfg(n_epochs=3)
    job = make_job()
    job.train_data = crashing_data(job, at_epoch=2)
    with pytest.raises(Crash):
        train(job, cfg, tmp_path)
    w = tmp_path / "weights"
    (w / ".model_epoch_003.tlk.abc123.tmp").write_bytes(b"PK\x03\x04 half a zip")
    (w / "model_epoch_003.tlk").write_bytes(b"not a zip")  # e.g. copied by hand, truncated
    res = train(make_job(), cfg, tmp_path)
    out = capsys.readouterr().out
    assert "skipping unreadable checkpoint model_epoch_003.tlk" in out
    assert "removed leftover temporary file .model_epoch_003.tlk.abc123.tmp" in out
    assert res.resumed_from_epoch == 2 and res.epochs_run == 3
    assert not list(w.glob(".*.tmp"))
    assert load_model(w / "model_epoch_003.tlk").meta["epoch"] == 3  # rewritten properly


def test_checkpoint_write_failing_midway_keeps_previous(tmp_path, monkeypatch):
    import tlkit.model_io as model_io

    real = model_io._nd_to_bytes
    calls = {"n": 0}

    def failing(arrays):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint (epoch 2) dies after meta.json was written
            raise OSError("disk full (simulated)")
        return real(arrays)

    monkeypatch.setattr(model_io, "_nd_to_bytes", failing)
    with pytest.raises(OutputError, match=r"weights/model_epoch_002\.tlk: cannot write: disk full \(simulated\)$"):
        train(make_job(), make_cfg(n_epochs=3), tmp_path)
    w = tmp_path / "weights"
    assert [e for e, _ in ck.list_checkpoints(w)] == [1]
    assert not list(w.glob(".*.tmp"))
    loaded = ck.latest_checkpoint(w)
    assert loaded.epoch == 1 and loaded.state["history"][0]["epoch"] == 1
    monkeypatch.setattr(model_io, "_nd_to_bytes", real)
    res = train(make_job(), make_cfg(n_epochs=3), tmp_path)
    assert res.resumed_from_epoch == 1 and res.epochs_run == 3


KILL_SCRIPT = """
import os, signal, sys, zipfile
sys.path.insert(0, {tests!r})
import test_training as T
from tlkit.training import train

real = zipfile.ZipFile.writestr
seen = []
def writestr(self, name, data, *a, **k):
    # SIGKILL the process half-way through writing the 2nd checkpoint (epoch 2), after meta.json
    if name == "params.nd":
        seen.append(name)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(self, name, data, *a, **k)
zipfile.ZipFile.writestr = writestr
train(T.make_job(), T.make_cfg(n_epochs=3), {results!r})
"""


def test_killed_during_checkpoint_write_previous_checkpoint_loads(tmp_path):
    script = KILL_SCRIPT.format(tests=str(Path(__file__).parent), results=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    w = tmp_path / "weights"
    assert [e for e, _ in ck.list_checkpoints(w)] == [1]
    assert list(w.glob(".model_epoch_002.tlk.*.tmp"))  # the killed write's leftover
    loaded = ck.latest_checkpoint(w)
    assert loaded.epoch == 1
    res = train(make_job(), make_cfg(n_epochs=3), tmp_path)
    assert res.resumed_from_epoch == 1 and res.epochs_run == 3
    assert not list(w.glob(".*.tmp"))


# -- what is trained --------------------------------------------------------------------------------


def test_frozen_params_unchanged(tmp_path):
    job = make_job(frozen=["0"])  # the first conv
    job.net(mx.nd.zeros((1, 3, SIZE, SIZE)))  # finish deferred init to snapshot the start
    before = params_np(job.net)
    train(job, make_cfg(n_epochs=2), tmp_path)
    after = params_np(job.net)
    np.testing.assert_array_equal(before["0.weight"], after["0.weight"])
    np.testing.assert_array_equal(before["0.bias"], after["0.bias"])
    assert not np.array_equal(before["3.weight"], after["3.weight"])  # the rest trains
    assert not np.array_equal(before["1.running_mean"], after["1.running_mean"])  # BN still updates


def test_unknown_frozen_prefix_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match=r"frozen prefix 'features.0' matches no parameter \(names look like: 0.weight"):
        train(make_job(frozen=["features.0"]), make_cfg(), tmp_path)


def test_freeze_bn_keeps_running_stats_and_affine(tmp_path):
    job = make_job(freeze_bn=True)
    job.net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    before = params_np(job.net)
    train(job, make_cfg(n_epochs=2), tmp_path)
    after = params_np(job.net)
    for k in ("1.running_mean", "1.running_var", "1.gamma", "1.beta"):
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert not np.array_equal(before["0.weight"], after["0.weight"])


def test_freeze_bn_on_a_graph_model(tmp_path):
    from tlkit.model_io import graph_of, symbol_block

    net = make_net()
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    sym, params = graph_of(net, (3, SIZE, SIZE))
    sb = symbol_block(sym, params)
    job = make_job(net=sb, freeze_bn=True, save_as_graph=True)
    before = {k: p.data().asnumpy().copy() for k, p in sb.collect_params().items()}
    res = train(job, make_cfg(n_epochs=1), tmp_path)
    after = {k: p.data().asnumpy().copy() for k, p in sb.collect_params().items()}
    bn = [k for k in before if "batchnorm" in k]  # (MXNet numbers the layer names per process)
    assert len(bn) == 4
    for k in bn:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    conv = next(k for k in before if "conv" in k and k.endswith("_weight"))
    assert not np.array_equal(before[conv], after[conv])
    mf = load_model(res.model_path)
    assert mf.kind == "graph" and f"arg:{conv}" in mf.params
    assert any(k.startswith("aux:") and k.endswith("_running_mean") for k in mf.params)


def sum_abs_kernels(net):
    return sum(float(np.abs(v).sum()) for k, v in params_np(net).items() if k.endswith("weight"))


def test_l1_pushes_weights_towards_zero(tmp_path):
    common = dict(n_epochs=3, lr_config={"type": "constant", "learning_rate": 0.05}, optimizer={"type": "sgd"})
    plain = make_job()
    train(plain, make_cfg(reg_config={"type": "none"}, **common), tmp_path / "none")
    l1 = make_job()
    train(l1, make_cfg(reg_config={"type": "L1", "weight_decay": 0.01}, **common), tmp_path / "l1")
    a, b = params_np(plain.net), params_np(l1.net)
    assert sum_abs_kernels(l1.net) < 0.9 * sum_abs_kernels(plain.net)
    # BN gamma and biases are not regularized: L1 leaves them close to the unregularized run
    np.testing.assert_allclose(b["1.gamma"], a["1.gamma"], atol=0.05)


def test_l2_is_applied_only_to_kernels(tmp_path):
    # with a zero data gradient, only the regularizer moves weights: kernels shrink, biases do not
    job = make_job(loss=lambda out, label: (out * 0).sum(axis=1))
    job.net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    before = params_np(job.net)
    cfg = make_cfg(
        n_epochs=1,
        optimizer={"type": "sgd", "momentum": 0.0},
        lr_config={"type": "constant", "learning_rate": 0.1},
        reg_config={"type": "L2", "weight_decay": 0.5},
    )
    train(job, cfg, tmp_path)
    after = params_np(job.net)
    factor = (1 - 0.1 * 0.5) ** STEPS  # w <- w - lr * wd * w, STEPS times
    np.testing.assert_allclose(after["0.weight"], before["0.weight"] * factor, rtol=1e-5)
    np.testing.assert_allclose(after["7.weight"], before["7.weight"] * factor, rtol=1e-5)
    np.testing.assert_array_equal(after["7.bias"], before["7.bias"])
    np.testing.assert_array_equal(after["1.gamma"], before["1.gamma"])


def test_gradient_clipping_bounds_the_step(tmp_path):
    # huge loss scale: without clipping one SGD step moves weights by lr*|g|; with clipping by <= lr*max_norm
    job = make_job(loss=lambda out, label: (out * 1000.0).sum(axis=1))
    job.net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    before = params_np(job.net)
    cfg = make_cfg(
        n_epochs=1,
        optimizer={"type": "sgd", "momentum": 0.0},
        lr_config={"type": "constant", "learning_rate": 0.01},
        reg_config={"type": "none"},
        grad_clip_norm=1.0,
    )
    job.steps_per_epoch = 1
    train(job, cfg, tmp_path)
    after = params_np(job.net)
    trained = [k for k in before if not k.endswith(("running_mean", "running_var"))]
    step = np.sqrt(sum(float(((after[k] - before[k]) ** 2).sum()) for k in trained))
    assert step == pytest.approx(0.01 * 1.0, rel=1e-3)


# -- validation cadence and early stopping ------------------------------------------------------------


def test_validation_every_period_and_at_the_end(tmp_path):
    val = make_validate([1.0])
    res = train(make_job(validate=val), make_cfg(n_epochs=5, validation_period=2), tmp_path)
    validated = [h["epoch"] for h in res.history if "validation_loss" in h]
    assert validated == [2, 4, 5] and len(val.calls) == 3


def test_first_validation_epoch_as_tlt(tmp_path):
    """TLT DetectNet_v2: validate after epochs first, first + period, ... (and the last)."""
    val = make_validate([1.0])
    res = train(make_job(validate=val, first_validation_epoch=3), make_cfg(n_epochs=8, validation_period=2), tmp_path)
    assert [h["epoch"] for h in res.history if "validation_loss" in h] == [3, 5, 7, 8]


def test_early_stopping_stops(tmp_path):
    val = make_validate([1.0, 0.9, 0.95, 0.91, 0.92, 0.5])  # best at the 2nd validation, then no gain
    cfg = make_cfg(n_epochs=10, early_stopping={"monitor": "validation_loss", "mode": "min", "patience": 3})
    res = train(make_job(validate=val), cfg, tmp_path)
    assert res.stopped_early and res.epochs_run == 5 and len(val.calls) == 5
    assert load_model(res.model_path).meta["epoch"] == 5
    assert StatusLogger(tmp_path).read()[-1]["message"].endswith("(stopped early)")
    # resuming a stopped run does not train further
    res2 = train(make_job(validate=make_validate([0.1])), cfg, tmp_path)
    assert res2.stopped_early and res2.epochs_run == 5


def test_early_stopping_unknown_monitor(tmp_path):
    cfg = make_cfg(early_stopping={"monitor": "val_acc", "patience": 2})
    msg = "'val_acc' is not a validation metric of this task; available: validation_loss"
    with pytest.raises(SpecError, match=msg):
        train(make_job(validate=make_validate([1.0])), cfg, tmp_path)


def test_early_stopping_without_validation_is_refused(tmp_path):
    with pytest.raises(SpecError, match="needs validation"):
        train(make_job(), make_cfg(early_stopping={"patience": 2}), tmp_path)


# -- bad input --------------------------------------------------------------------------------------


def test_bad_batch_shape_is_a_one_line_error(tmp_path):
    job = make_job()
    job.train_data = lambda epoch: iter([(np.zeros((BATCH, 5, SIZE, SIZE), np.float32), np.zeros(BATCH))] * STEPS)
    job.net(mx.nd.zeros((1, 3, SIZE, SIZE)))  # the net now expects 3 channels
    with pytest.raises(TlkitError, match=r"training step failed at epoch 1, batch 1: ") as info:
        train(job, make_cfg(), tmp_path)
    assert "\n" not in str(info.value)
    assert StatusLogger(tmp_path).read()[-1]["status"] == "FAILURE"


def test_batch_not_a_pair(tmp_path):
    job = make_job()
    job.train_data = lambda epoch: iter([np.zeros((BATCH, 3, SIZE, SIZE))])
    with pytest.raises(DataError, match=r"batch 1 is a ndarray; expected \(data, label\)"):
        train(job, make_cfg(), tmp_path)


def test_empty_epoch(tmp_path):
    job = make_job()
    job.train_data = lambda epoch: iter([])
    with pytest.raises(DataError, match="yielded no batches for epoch 1"):
        train(job, make_cfg(), tmp_path)


def test_divergence_is_reported(tmp_path):
    job = make_job(loss=lambda out, label: out.sum(axis=1) * float("nan"))
    with pytest.raises(TlkitError, match="training diverged: loss is nan at epoch 1, step 1"):
        train(job, make_cfg(), tmp_path)


def test_amp_on_a_cpu_without_bf16_is_refused_clearly(tmp_path, monkeypatch):
    from tlkit.training import engine

    monkeypatch.setattr(engine, "cpu_bf16_missing", lambda: ["avx512f", "avx512bw"])
    with pytest.raises(TlkitError, match=r"bfloat16.*AVX-512.*lacks avx512f, avx512bw.*without --use_amp"):
        train(make_job(), make_cfg(), tmp_path, use_amp=True)
    assert not (tmp_path / "weights").exists()


def test_cpu_bf16_flags_from_cpuinfo():
    from tlkit.training.engine import cpu_bf16_missing

    zen3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    assert cpu_bf16_missing(zen3) == ["avx512f", "avx512bw", "avx512vl", "avx512dq"]
    assert cpu_bf16_missing("flags : avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16\n") == []


AMP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from rich.console import Console
from test_training import make_cfg, make_job
from tlkit.training import train
import mxnet as mx
ctx = [mx.gpu(0)] if {gpu} else None
res = train(make_job(), make_cfg(n_epochs=2), {out!r}, ctx=ctx, use_amp=True, console=Console(stderr=True))
print(json.dumps([h["loss"] for h in res.history]))
"""


def _amp_run(tmp_path, gpu: bool) -> tuple[list[float], str]:
    """An AMP training in its own process (amp.init patches MXNet's operators for the whole process)."""
    script = AMP_SCRIPT.format(tests=str(Path(__file__).parent), gpu=gpu, out=str(tmp_path / "amp"))
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_amp_bfloat16_on_cpu(tmp_path):
    from tlkit.training.engine import cpu_bf16_missing

    if cpu_bf16_missing():
        pytest.skip(f"this CPU lacks {cpu_bf16_missing()} for oneDNN bfloat16 (the refusal is tested above)")
    losses, log = _amp_run(tmp_path, gpu=False)
    assert "mixed precision: bfloat16" in log
    fp32 = train(make_job(), make_cfg(n_epochs=2), tmp_path / "fp32").history
    # bfloat16 keeps 8 bits of mantissa: the same training, a little noisier
    np.testing.assert_allclose(losses, [h["loss"] for h in fp32], rtol=0.05)
    assert losses[1] < losses[0]


def test_amp_float16_on_gpu_with_loss_scaling(tmp_path):
    if mx.context.num_gpus() == 0:
        pytest.skip("no GPU visible to MXNet")
    losses, log = _amp_run(tmp_path, gpu=True)
    assert "mixed precision: float16 with dynamic loss scaling" in log
    assert all(np.isfinite(losses)) and losses[1] < losses[0]


def test_two_cpu_contexts_data_parallel(tmp_path):
    res = train(make_job(), make_cfg(n_epochs=1), tmp_path, ctx=[mx.cpu(0), mx.cpu(1)])
    assert res.epochs_run == 1 and np.isfinite(res.history[0]["loss"])
    load_model(res.model_path)


def test_resume_with_another_network_is_refused(tmp_path):
    train(make_job(), make_cfg(n_epochs=1), tmp_path)
    other = gluon.nn.HybridSequential()
    other.add(
        gluon.nn.Conv2D(4, 3, padding=1),
        gluon.nn.BatchNorm(),
        gluon.nn.Activation("relu"),
        gluon.nn.Conv2D(8, 3, padding=1, strides=2),
        gluon.nn.Activation("relu"),
        gluon.nn.GlobalAvgPool2D(),
        gluon.nn.Dropout(0.2),
        gluon.nn.Dense(N_CLASSES),
    )
    other.initialize()
    with pytest.raises(ModelFileError, match=r"model_epoch_001.tlk: parameter '0.weight' has shape \(8, 3, 3, 3\)"):
        train(make_job(net=other), make_cfg(n_epochs=2), tmp_path)


def test_resume_with_other_frozen_layers_is_refused(tmp_path):
    train(make_job(), make_cfg(n_epochs=1), tmp_path)
    with pytest.raises(ModelFileError, match="frozen layers or freeze_bn changed"):
        train(make_job(frozen=["0"]), make_cfg(n_epochs=2), tmp_path)


def test_on_epoch_end_hook_sees_each_row(tmp_path):
    seen = []
    job = make_job(validate=make_validate([0.5]), on_epoch_end=lambda epoch, row: seen.append((epoch, dict(row))))
    train(job, make_cfg(n_epochs=2), tmp_path)
    assert [e for e, _ in seen] == [0, 1]
    assert seen[1][1]["epoch"] == 2 and seen[1][1]["validation_loss"] == 0.5 and seen[1][1]["loss"] > 0


def test_progress_bar_on_a_terminal_and_plain_lines_otherwise():
    import io

    from rich.console import Console

    from tlkit.training.progress import EpochProgress

    tty = io.StringIO()
    with EpochProgress(Console(file=tty, force_terminal=True, width=120), 1, 3, 10) as bar:
        for i in range(1, 11):
            bar.update(i, 0.5, 32)
    out = tty.getvalue()
    assert "\x1b[" in out and "epoch 1/3" in out and "10/10" in out and "img/s" in out and "0.5000" in out

    plain = io.StringIO()
    with EpochProgress(Console(file=plain, width=200), 2, 3, 20) as bar:
        for i in range(1, 21):
            bar.update(i, 0.25, 8)
    lines = plain.getvalue().splitlines()
    assert "\x1b[" not in plain.getvalue()
    assert len(lines) == 9 and lines[0].startswith("epoch 2/3 step 2/20 loss 0.2500") and "ETA" in lines[0]


# -- reliability: refused re-runs change nothing, SIGTERM, the results-dir lock (issue 18) -----------------


def test_run_files_are_written_at_the_start(tmp_path):
    job = make_job(run_files={"experiment_spec.yaml": "a: 1\n", "classmap.json": "{}\n"})
    train(job, make_cfg(n_epochs=1), tmp_path)
    assert (tmp_path / "experiment_spec.yaml").read_text() == "a: 1\n"
    assert (tmp_path / "classmap.json").read_text() == "{}\n"


@pytest.mark.parametrize("classes", [["r", "g", "blue"], ["g", "r", "b"]], ids=["renamed", "reordered"])
def test_resume_with_other_classes_is_refused_and_changes_nothing(tmp_path, classes):
    from tlkit.errors import ResultsDirError
    from tlkit.testing.faults import assert_unchanged, snapshot

    train(make_job(run_files={"experiment_spec.yaml": "old\n"}), make_cfg(n_epochs=1), tmp_path)
    before = snapshot(tmp_path)
    job = make_job(run_files={"experiment_spec.yaml": "new\n"})
    job.meta = {**job.meta, "classes": classes}
    msg = rf"holds a run on classes \[r, g, b\] \(model_epoch_001\.tlk\), this run's classes are \[{', '.join(classes)}"
    with pytest.raises(ResultsDirError, match=msg + ".*--restart") as err:
        train(job, make_cfg(n_epochs=2), tmp_path)
    assert "\n" not in str(err.value)
    assert_unchanged(before, snapshot(tmp_path))  # no spec rewrite, no status.json line, no lock file left


def test_restart_moves_the_previous_run_aside(tmp_path):
    train(make_job(), make_cfg(n_epochs=1), tmp_path)
    old_model = (tmp_path / "weights" / "model.tlk").read_bytes()
    moved = ck.archive_run(tmp_path)
    assert moved.parent == tmp_path / "previous_runs"
    assert (moved / "weights" / "model.tlk").read_bytes() == old_model and (moved / "training.csv").is_file()
    assert not (tmp_path / "weights").exists() and (tmp_path / "status.json").is_file()  # the log stays
    job = make_job()
    job.meta = {**job.meta, "classes": ["x", "y", "z"]}
    res = train(job, make_cfg(n_epochs=1), tmp_path)  # starts over: nothing to resume
    assert res.resumed_from_epoch is None
    assert ck.archive_run(tmp_path / "nothing-here") is None


SIGTERM_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
import test_training as T
from tlkit.training import train

job = T.make_job()
inner = job.train_data
def slow(epoch):
    for batch in inner(epoch):
        time.sleep(0.2)
        yield batch
job.train_data = slow
train(job, T.make_cfg(n_epochs=50), {results!r})
"""


def test_sigterm_writes_failure_and_releases_the_lock(tmp_path):
    import time

    from tlkit.training.lock import LOCK_NAME

    script = SIGTERM_SCRIPT.format(tests=str(Path(__file__).parent), results=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 120
    while not any(s["status"] == "STARTED" for s in StatusLogger(tmp_path).read()):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()[-2000:]
        time.sleep(0.05)
    assert (tmp_path / LOCK_NAME).is_file()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out[-2000:]
    last = StatusLogger(tmp_path).read()[-1]
    assert last["status"] == "FAILURE" and last["message"] == "Training interrupted (SIGTERM)"
    assert not (tmp_path / LOCK_NAME).exists()
