"""The shared MXNet Gluon training loop every task uses.

A task builds its network, data and loss and hands them over as a `TrainJob`; `train()` does the rest
the same way for every task: optimizer and per-iteration LR schedule, explicit L1/L2 regularization,
gradient clipping, frozen layers and frozen BatchNorm, data parallelism over a device list, validation
and early stopping, atomic resumable checkpoints, status.json / training.csv / TensorBoard / curves.

Also (each in its own module, wired in here): several nodes training one model (`tlkit.distributed`: sharded
batches, summed gradients, node 0 writes), quantization-aware training (`cfg.enable_qat`, `tlkit.qat`) and
mixed precision (`use_amp`: float16 with dynamic loss scaling on GPUs, bfloat16 on CPUs whose oneDNN has it).

Resume: calling `train()` again with the same results dir continues from the newest complete checkpoint.
Every epoch reseeds Python, numpy and MXNet from (random_seed, epoch), the LR depends only on the global
step, and the optimizer state is restored, so a resumed run ends with the same weights as an
uninterrupted one (bit-exact on CPU).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from tlkit.errors import DataError, SpecError, TlkitError, error_summary
from tlkit.io import atomic_write_text, make_dir
from tlkit.training import checkpoints as ck
from tlkit.training import distill, retrain
from tlkit.training.lock import results_dir_lock
from tlkit.training.progress import EpochProgress
from tlkit.training.schedules import make_schedule
from tlkit.training.signals import Terminated, sigterm_interrupts
from tlkit.training.status import StatusLogger


@dataclass
class TrainJob:
    """Everything task-specific the engine needs. See the module docstring of `tlkit.training`."""

    net: Any  # mxnet.gluon.HybridBlock, built and initialised (pretrained weights loaded)
    train_data: Callable[[int], Iterable[tuple]]  # epoch (0-based) -> (data, label) batches
    steps_per_epoch: int
    loss: Callable[[Any, Any], Any]  # (net outputs, label) -> per-sample loss (B,...) or scalar
    meta: dict
    validate: Callable[[Any, list], dict[str, float]] | None = None
    kpi: str | None = None
    frozen: Sequence[str] = ()
    freeze_bn: bool = False
    regularize: Callable[[str, Any], bool] | None = None
    save_as_graph: bool = False
    # called after validation and before the epoch's checkpoint, so what it changes is checkpointed
    on_epoch_end: Callable[[int, dict], None] | None = None
    # task state that changes while training (e.g. DetectNet_v2's auto-weighted objective weights):
    # saved as JSON in every checkpoint and handed back on resume, so a resumed run continues exactly
    get_task_state: Callable[[], dict] | None = None
    set_task_state: Callable[[dict], None] | None = None
    # distillation (train_config.distillation, see tlkit.training.distill): the task's loss between the student's
    # training outputs and the teacher's (student outputs, teacher outputs, temperature) -> per-sample loss, and,
    # when the teacher's inference outputs are not comparable to the student's training outputs, how to load it
    distill_loss: Callable[[Any, Any, float], Any] | None = None
    load_teacher: Callable[[Path, list], Any] | None = None
    # what it trains and validates on (tlkit.model_card.DatasetInfo), for the model card
    datasets: Sequence[Any] = ()
    # {file name: text} the task writes into the results dir (resolved spec, classmap): written once the
    # engine has accepted the results dir (lock taken, checkpoint compatible), so a refused run changes no file
    run_files: dict[str, str] = field(default_factory=dict)
    # TLT DetectNet_v2's first_validation_epoch (1-based): validate on epochs first + i * validation_period
    # (and the last); None: on every validation_period-th epoch
    first_validation_epoch: int | None = None
    # multi-node (tlkit.distributed): True when train_data already yields only this node's part of each
    # global batch (World.shard); otherwise every node reads whole global batches and the engine keeps its slice
    sharded: bool = False


@dataclass
class TrainResult:
    model_path: Path
    history: list[dict]
    final_metrics: dict
    epochs_run: int  # epochs completed in total (including those before a resume)
    resumed_from_epoch: int | None  # the checkpoint's epoch when this call resumed, else None
    stopped_early: bool
    best_model_path: Path | None = None  # weights/model_best.tlk when a kpi was validated


def default_regularize(name: str, param: Any) -> bool:
    """Conv/dense kernels: names ending in 'weight' with ndim > 1 (BN gamma/beta and biases excluded)."""
    return name.endswith("weight") and len(param.shape or ()) > 1


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 31-bit seed for (run seed, epoch): every epoch starts from a known RNG state."""
    return int(np.random.SeedSequence([seed % 2**32, epoch]).generate_state(1)[0]) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    import mxnet as mx

    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


_mx_error_summary = error_summary  # the one informative line of an MXNet error


def _improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None or not math.isfinite(best):
        return math.isfinite(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(name: str) -> str:
    return "min" if ("loss" in name or "error" in name or "cost" in name) else "max"


def train(
    job: TrainJob,
    cfg: Any,
    results_dir: str | Path,
    ctx: list | None = None,
    console: Console | None = None,
    use_amp: bool = False,
) -> TrainResult:
    """Train `job.net` per `cfg` (a `tlkit.config.TrainConfig`), writing everything under `results_dir`.

    Re-running with the same `results_dir` resumes from its newest complete checkpoint; a checkpoint of other
    classes or another network is refused (ResultsDirError) before any file is written, as is a results dir
    another training holds (lock). A failure after the start writes a FAILURE line to status.json (SIGTERM
    and Ctrl-C too) and re-raises.
    """
    from tlkit.distributed import world

    results_dir = make_dir(results_dir, "results dir")
    console = console or Console(highlight=False)
    writer = world().is_writer  # in a multi-node job node 0 alone writes (and locks) the shared results dir
    status = StatusLogger(results_dir) if writer else _NoStatus()
    lock = results_dir_lock(results_dir, warn=console.print) if writer else contextlib.nullcontext()
    # one run per results dir (re-entrant: the CLI already holds it); SIGTERM ends the run like Ctrl-C
    with lock, sigterm_interrupts():
        engine = _Engine(job, cfg, results_dir, ctx, console, use_amp, status)
        try:
            return engine.run()
        except KeyboardInterrupt as err:  # a run refused before it started (engine.started False) logs nothing
            if engine.started:
                how = "SIGTERM" if isinstance(err, Terminated) else "KeyboardInterrupt"
                status.write("FAILURE", f"Training interrupted ({how})", verbosity="ERROR")
            raise
        except BaseException as err:
            if engine.started:
                msg = f"Training failed: {type(err).__name__}: {error_summary(err)}"
                status.write("FAILURE", msg, verbosity="ERROR")
            raise
        finally:
            engine.close()


_AMP_DTYPE: str | None = None  # what amp.init patched this process's operators for


def cpu_bf16_missing(cpuinfo: str | None = None) -> list[str]:
    """The CPU flags oneDNN's bfloat16 needs (AVX-512 core: f, bw, vl, dq) that this CPU lacks; [] = supported."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ["a readable /proc/cpuinfo"]
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    return [f for f in ("avx512f", "avx512bw", "avx512vl", "avx512dq") if f not in flags]


class _NoStatus:
    """status.json of a node other than 0 in a multi-node job: node 0 alone writes it."""

    def write(self, *args: Any, **kwargs: Any) -> dict:
        return {}


class _Engine:
    def __init__(self, job, cfg, results_dir, ctx, console, use_amp, status):
        self.job, self.cfg, self.results_dir = job, cfg, results_dir
        self.ctx_arg, self.console, self.use_amp, self.status = ctx, console, use_amp, status
        self.weights_dir = results_dir / "weights"
        self.history: list[dict] = []
        self.tb = None
        self.started = False  # True once STARTED is in status.json: from then on a failure is logged too
        from tlkit.distributed import world

        self.world = world()
        self.writer = self.world.is_writer  # only node 0 of a multi-node job writes files
        self.amp_dtype: str | None = None

    # -- setup ----------------------------------------------------------------------------------------

    def _check_job(self) -> None:
        job = self.job
        if not isinstance(job.steps_per_epoch, int) or job.steps_per_epoch < 1:
            raise DataError(f"steps_per_epoch must be a positive integer, got {job.steps_per_epoch!r} (empty dataset?)")
        for name in ("train_data", "loss"):
            if not callable(getattr(job, name)):
                raise TlkitError(f"TrainJob.{name} must be callable, got {type(getattr(job, name)).__name__}")
        if self.cfg.early_stopping.patience > 0 and job.validate is None:
            raise SpecError(
                "train_config.early_stopping.patience > 0 needs validation, but this job has no validation data"
            )

    def _setup_params(self) -> None:
        from mxnet import gluon

        net = self.job.net
        # structural names ('features.0.weight'); a SymbolBlock only has its graph names
        if isinstance(net, gluon.SymbolBlock):
            self.named = dict(net.collect_params().items())
        else:
            self.named = dict(net._collect_params_with_prefix())
        for name, p in self.named.items():
            if p._data is None and not p._deferred_init:
                raise TlkitError(f"parameter {name!r} of the network is not initialized; call net.initialize() first")
        # frozen prefixes: dot-boundary match so 'features.1' does not also freeze 'features.10'
        for prefix in self.job.frozen:
            pre = prefix.rstrip(".")
            hits = [n for n in self.named if n == pre or n.startswith(pre + ".")]
            if not hits:
                sample = ", ".join(list(self.named)[:4])
                raise SpecError(f"frozen prefix {prefix!r} matches no parameter (names look like: {sample}, ...)")
            for n in hits:
                self.named[n].grad_req = "null"
        if self.job.freeze_bn:
            self._freeze_bn()
        self.trainable = [(n, p) for n, p in self.named.items() if p.grad_req != "null"]
        if not self.trainable:
            raise SpecError("every parameter is frozen: nothing to train (check freeze_blocks / frozen layers)")
        reg = self.job.regularize or default_regularize
        self.reg_params = [p for n, p in self.trainable if reg(n, p)]

    def _freeze_bn(self) -> None:
        """BatchNorm layers run on their running statistics and their gamma/beta are not trained."""
        from mxnet import gluon

        net = self.job.net
        if isinstance(net, gluon.SymbolBlock):
            bn_params = self._freeze_bn_graph(net)
        else:
            bn_params = []

            def visit(block):
                if isinstance(block, gluon.nn.BatchNorm):
                    block._kwargs["use_global_stats"] = True
                    bn_params.extend(block.params.values())

            net.apply(visit)
        for p in bn_params:
            p.grad_req = "null"

    @staticmethod
    def _freeze_bn_graph(net) -> list:
        """SymbolBlock (a pruned graph): set use_global_stats on its BatchNorm nodes."""
        import json

        import mxnet as mx

        inputs, out = net._cached_graph
        graph = json.loads(out.tojson())
        bn_inputs: set[str] = set()
        for node in graph["nodes"]:
            if node["op"] == "BatchNorm":
                node.setdefault("attrs", {})["use_global_stats"] = "True"
                bn_inputs.update(graph["nodes"][i[0]]["name"] for i in node["inputs"][1:])
        net._cached_graph = (inputs, mx.sym.load_json(json.dumps(graph)))
        net._clear_cached_op()
        return [p for n, p in net.collect_params().items() if n in bn_inputs]

    def _make_trainer(self, lr: float):
        from mxnet import gluon

        o = self.cfg.optimizer
        if o.type == "sgd":
            name, kw = ("nag" if o.nesterov else "sgd"), {"momentum": o.momentum}
        elif o.type == "adam":
            name, kw = "adam", {"beta1": o.beta1, "beta2": o.beta2, "epsilon": o.epsilon}
        elif o.type == "rmsprop":
            name, kw = "rmsprop", {"gamma1": o.rho, "epsilon": o.epsilon}
        else:  # guarded by the spec model; kept for configs built by hand
            raise SpecError(f"train_config.optimizer.type: unknown optimizer {o.type!r} (sgd, adam or rmsprop)")
        # L2 = the optimizer's weight decay (grad += wd*w, fused into the update kernel), but Gluon applies
        # wd to every parameter (times its wd_mult): set wd_mult to 1 on the regularized kernels and 0 on
        # everything else (BN, biases). update_on_kvstore=False lets us touch the summed gradients
        # (L1, clipping) between allreduce and update.
        reg = self.cfg.reg_config
        wd = reg.weight_decay if reg.type == "L2" else 0.0
        chosen = {id(p) for p in self.reg_params}
        for _, p in self.trainable:
            p.wd_mult = 1.0 if id(p) in chosen else 0.0
        return gluon.Trainer(
            [p for _, p in self.trainable],
            name,
            {"learning_rate": lr, "wd": wd, **kw},
            kvstore=self.world.kv if self.world.distributed else "device",  # dist_sync sums over nodes
            update_on_kvstore=False,
        )

    # -- the run --------------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        qat_points = self._prepare()
        loaded = self._load_checkpoint()
        state = loaded.state if loaded is not None else {}
        start_epoch = loaded.epoch if loaded is not None else 0
        if qat_points and loaded is None:
            self._calibrate_qat(qat_points)
        self.job.net.hybridize()
        self.trainer = self._build_trainer(start_epoch, loaded)
        stopped_early = self._restore_progress(state)
        self._start(loaded, start_epoch)
        epochs_done, stopped_early = self._train_epochs(start_epoch, loaded, stopped_early)
        return self._finish(epochs_done, stopped_early, loaded)

    # -- the phases of run ----------------------------------------------------------------------------

    def _prepare(self) -> list:
        """Devices, AMP, QAT, the schedule, trainable parameters, the teacher and loss. Returns the QAT points."""
        import mxnet as mx

        cfg, job = self.cfg, self.job
        self._check_job()
        self.ctx = list(self.ctx_arg or [mx.cpu()])
        if self.use_amp:
            self._init_amp()
        qat_points = self._prepare_qat() if cfg.enable_qat else []
        self.schedule = self._scaled(make_schedule(cfg.lr_config, job.steps_per_epoch, cfg.n_epochs))
        if cfg.load_graph:  # a pruned model: warm-up and a lower peak (tlkit.training.retrain)
            self.schedule = retrain.retrain_schedule(self.schedule, cfg.retrain_config, job.steps_per_epoch)
        self._setup_params()
        job.net.collect_params().reset_ctx(self.ctx)
        self.teacher = distill.load_teacher(job, cfg.distillation, self.ctx, self.console)
        self.loss = distill.distilled_loss(job, cfg.distillation) if self.teacher else job.loss
        return qat_points

    def _load_checkpoint(self) -> Any:
        """The newest checkpoint of the results dir, checked against this job and loaded into the net (or None)."""
        job = self.job
        loaded = ck.latest_checkpoint(self.weights_dir, warn=lambda m: self.console.print(f"[yellow]warning:[/] {m}"))
        self._check_same_checkpoint(loaded)
        if loaded is None:
            return None
        ck.check_same_classes(loaded, job.meta, self.results_dir)
        ck.load_params_into(job.net, loaded.model, self.ctx, source=str(loaded.path))
        saved = loaded.state.get("trainable")
        if saved is not None and saved != [n for n, _ in self.trainable]:
            raise ck.CheckpointMismatch(
                f"{loaded.path}: the checkpoint trained {len(saved)} parameters, this job trains "
                f"{len(self.trainable)} (frozen layers or freeze_bn changed?); {ck.RESTART_HINT}"
            )
        self.history = list(loaded.state.get("history", []))
        if job.set_task_state is not None and "task_state" in loaded.state:
            job.set_task_state(loaded.state["task_state"])
        return loaded

    def _build_trainer(self, start_epoch: int, loaded: Any) -> Any:
        """The optimizer at the schedule's rate for `start_epoch`, with a checkpoint's optimizer and RNG state."""
        trainer = self._make_trainer(self.schedule(start_epoch * self.job.steps_per_epoch))
        if self.amp_dtype == "float16":  # dynamic loss scaling (TLT's cost_scaling); bfloat16 needs none
            from mxnet.contrib import amp

            amp.init_trainer(trainer)
        if loaded is not None:
            ck.load_trainer_states(trainer, loaded.model.trainer_states, str(loaded.path))
            ck.set_rng_state(loaded.state.get("rng", {}))
        return trainer

    def _restore_progress(self, state: dict) -> bool:
        """Early-stopping and best-KPI bookkeeping (a checkpoint's, or fresh). Returns whether it had stopped early."""
        es = self.cfg.early_stopping
        self.monitor, self.monitor_mode = es.monitor, es.mode
        self.es_best: float | None = state.get("es_best")
        self.es_bad: int = int(state.get("es_bad", 0))
        self.kpi_best: float | None = state.get("kpi_best")
        self.last_metrics: dict = dict(state.get("last_metrics", {}))
        return bool(state.get("stopped_early", False))

    def _start(self, loaded: Any, start_epoch: int) -> None:
        """STARTED in status.json, the run's files, BN re-estimation of a retrain, TensorBoard."""
        cfg, job, n_epochs = self.cfg, self.job, self.cfg.n_epochs
        if loaded is not None:
            rel = loaded.path.relative_to(self.results_dir)
            msg = f"Resuming from checkpoint {rel} (epoch {loaded.epoch} of {n_epochs})"
            self.console.print(msg)
        else:
            msg = "Starting Training Loop."
        # the results dir is accepted (locked, checkpoint compatible): from here on the run may write in it
        if self.writer:
            for p in ck.remove_stale_temp_files(self.weights_dir):
                self.console.print(f"removed leftover temporary file {p.name} (from an interrupted write)")
            for name, text in job.run_files.items():
                atomic_write_text(self.results_dir / name, text)
        self.status.write("STARTED", msg, epoch=start_epoch, max_epoch=n_epochs)
        self.started = True
        if loaded is None and cfg.load_graph:  # BN re-estimation, validation before training
            self.history = retrain.start_rows(job, cfg, self.ctx, self.console)
        if self.writer:
            self._open_tensorboard()

    def _train_epochs(self, start_epoch: int, loaded: Any, stopped_early: bool) -> tuple[int, bool]:
        """The epoch loop: train, validate, early stopping, checkpoints. Returns (epochs done, stopped early)."""
        cfg, job, n_epochs = self.cfg, self.job, self.cfg.n_epochs
        epoch_times: list[float] = []
        last_ckpt_epoch = start_epoch if loaded is not None else None
        for epoch in range(start_epoch, n_epochs):
            if stopped_early:
                break
            seed_everything(epoch_seed(cfg.random_seed, epoch))
            row = self._train_epoch(epoch, n_epochs)
            epoch_times.append(row["time"])
            last = epoch + 1 == n_epochs
            if job.validate is not None and (self._validation_epoch(epoch + 1) or last):
                metrics = self._validate()
                row.update(metrics)
                self.last_metrics = metrics
                stopped_early = self._early_stopping(metrics) or stopped_early
                self._maybe_save_best(metrics, epoch)
            self.history.append(row)
            self._log_epoch(row, epoch, n_epochs, epoch_times)
            if job.on_epoch_end is not None:
                job.on_epoch_end(epoch, row)
                if self.world.distributed and job.get_task_state is not None and job.set_task_state is not None:
                    job.set_task_state(self.world.broadcast(job.get_task_state()))  # node 0's, everywhere
            if (epoch + 1) % cfg.checkpoint_interval == 0 or last or stopped_early:
                self._save_checkpoint(epoch + 1, stopped_early)
                last_ckpt_epoch = epoch + 1
            if stopped_early:
                self.console.print(
                    f"early stopping after epoch {epoch + 1}: {self.monitor} did not improve for "
                    f"{self.es_bad} validation(s) (best {self.es_best:.6g})"
                )
        epochs_done = self.history[-1]["epoch"] if self.history else start_epoch
        if last_ckpt_epoch != epochs_done and epochs_done > 0:
            self._save_checkpoint(epochs_done, stopped_early)
        return epochs_done, stopped_early

    def _finish(self, epochs_done: int, stopped_early: bool, loaded: Any) -> TrainResult:
        """The final model (with its card), CSV and curves, SUCCESS in status.json."""
        final_metrics = {"loss": self.history[-1]["loss"]} if self.history else {}
        final_metrics.update(self.last_metrics)
        model_path = self._save_final(epochs_done, final_metrics, stopped_early)
        if self.writer:
            self._write_csv()
            from tlkit.training.plots import plot_training_curves

            plot_training_curves(self.history, self.results_dir / "training_curves.png")
        kpi = {k: v for k, v in final_metrics.items() if k != "loss"} or final_metrics
        self.status.write(
            "SUCCESS",
            "Training finished successfully." + (" (stopped early)" if stopped_early else ""),
            epoch=epochs_done,
            max_epoch=self.cfg.n_epochs,
            kpi=kpi,
        )
        if self.writer:
            self.console.print(f"model saved to {model_path}", soft_wrap=True)
        else:
            self.console.print(f"node {self.world.rank}: done (node 0 saved the model to {model_path})", soft_wrap=True)
        best = self.weights_dir / "model_best.tlk"
        return TrainResult(
            model_path=model_path,
            history=list(self.history),
            final_metrics=final_metrics,
            epochs_run=epochs_done,
            resumed_from_epoch=loaded.epoch if loaded is not None else None,
            stopped_early=stopped_early,
            best_model_path=best if best.is_file() else None,
        )

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None

    # -- one epoch ------------------------------------------------------------------------------------

    def _train_epoch(self, epoch: int, n_epochs: int) -> dict:
        import mxnet as mx
        from mxnet import autograd

        job, trainer, ctx = self.job, self.trainer, self.ctx
        spe = job.steps_per_epoch
        batches = job.train_data(epoch)
        if batches is None:
            raise DataError(f"train_data({epoch}) returned None; expected an iterable of (data, label) batches")
        loss_sum, n_seen, n_batches = 0.0, 0, 0
        pending = None  # the previous step's loss, read one step late so the engine queue stays busy
        lr = self.schedule(epoch * spe)

        def read(pending_item) -> None:
            nonlocal loss_sum, n_seen
            step_i, nd_loss, weight, n_img, step_lr = pending_item
            value = float(nd_loss.asscalar()) / weight
            if not math.isfinite(value):
                raise TlkitError(
                    f"training diverged: loss is {value} at epoch {epoch + 1}, step {step_i}; "
                    f"lower train_config.lr_config.learning_rate (now {step_lr:.3g}) or set grad_clip_norm"
                )
            loss_sum += value * n_img
            n_seen += n_img
            bar.update(step_i, value, n_img)
            if self.tb is not None:
                gstep = epoch * spe + step_i
                self.tb.add_scalar("iteration/loss", value, gstep)
                self.tb.add_scalar("iteration/lr", step_lr, gstep)

        with EpochProgress(self.console, epoch + 1, n_epochs, spe) as bar:
            for i, batch in enumerate(islice(iter(batches), spe)):
                gstep = epoch * spe + i
                lr = self.schedule(gstep)
                trainer.set_learning_rate(lr)
                try:
                    data, label = self._unpack(batch, epoch, i)
                    if self.world.distributed and not job.sharded:
                        data, label = self._node_slice(data, label)
                    xs = mx.gluon.utils.split_and_load(data, ctx, even_split=False)
                    ys = self._split_labels(label, len(xs))
                    if self.teacher is not None:  # inference mode, before the student's recorded pass
                        ys = [(y, self.teacher(x)) for x, y in zip(xs, ys)]
                    with autograd.record():
                        losses = [self.loss(job.net(x), y) for x, y in zip(xs, ys)]
                    per_sample = self._check_loss(losses[0], xs[0].shape[0], epoch, i)
                    if self.amp_dtype == "float16":
                        from mxnet.contrib import amp

                        with amp.scale_loss(losses, trainer) as scaled:
                            autograd.backward(scaled)
                    else:
                        autograd.backward(losses)
                    n_img = int(data.shape[0])
                    local_norm = float(n_img) if per_sample else float(len(xs))
                    # gradients are summed over the nodes: divide by the global batch (or device count)
                    norm = local_norm * self.world.size
                    if self.world.distributed:
                        self._sync_initial_params()
                    trainer.allreduce_grads()
                    if self.amp_dtype == "float16":
                        amp.unscale(trainer)
                    self._regularize(norm)
                    self._clip(norm)
                    trainer.update(norm)
                    step_loss = mx.nd.add_n(*[ls.sum().as_in_context(ctx[0]) for ls in losses])
                    if pending is not None:
                        read(pending)
                    pending = (i + 1, step_loss, local_norm, n_img, lr)
                    self.world.progress()
                except mx.base.MXNetError as err:
                    raise TlkitError(
                        f"training step failed at epoch {epoch + 1}, batch {i + 1}: {_mx_error_summary(err)}"
                    ) from None
                n_batches += 1
            if pending is not None:
                try:
                    read(pending)
                except mx.base.MXNetError as err:
                    raise TlkitError(
                        f"training step failed at epoch {epoch + 1}, batch {n_batches}: {_mx_error_summary(err)}"
                    ) from None
        if n_batches == 0:
            raise DataError(f"train_data({epoch}) yielded no batches for epoch {epoch + 1}")
        if n_batches < spe:
            self.console.print(
                f"[yellow]warning:[/] epoch {epoch + 1} had {n_batches} batches, steps_per_epoch is {spe}"
            )
        if self.world.distributed:  # the epoch loss over every node's samples
            loss_sum, n_seen = self.world.allreduce_sum([loss_sum, n_seen])
        row = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(n_seen, 1),
            "lr": lr,
            "time": bar.elapsed,
            "throughput": bar.throughput,
        }
        if self.teacher is not None:  # what the teacher cost this epoch
            seconds, steps = self.teacher.take_time()
            row.update(
                teacher_s=seconds,
                teacher_share=seconds / max(bar.elapsed, 1e-9),
                teacher_ms_per_step=1000 * seconds / max(steps, 1),
            )
        return row

    @staticmethod
    def _to_nd(x: Any) -> Any:
        import mxnet as mx

        if isinstance(x, mx.nd.NDArray):
            return x
        arr = np.asarray(x)
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        return mx.nd.array(arr, dtype=arr.dtype)

    def _unpack(self, batch: Any, epoch: int, i: int) -> tuple[Any, Any]:
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise DataError(
                f"train_data({epoch}) batch {i + 1} is a {type(batch).__name__}"
                f"{f' of length {len(batch)}' if isinstance(batch, (tuple, list)) else ''}; expected (data, label)"
            )
        data, label = batch
        data = self._to_nd(data)
        if isinstance(label, (tuple, list)):
            label = [self._to_nd(x) for x in label]
        else:
            label = self._to_nd(label)
        return data, label

    def _node_slice(self, data: Any, label: Any) -> tuple[Any, Any]:
        """This node's part of a global batch (jobs whose train_data is not sharded per node)."""
        part = self.world.part(int(data.shape[0]))
        return data[part], ([x[part] for x in label] if isinstance(label, list) else label[part])

    def _split_labels(self, label: Any, n: int) -> list:
        from mxnet.gluon.utils import split_and_load

        if isinstance(label, list):
            parts = [split_and_load(x, self.ctx[:n], even_split=False) for x in label]
            return [tuple(p[k] for p in parts) for k in range(n)]
        return split_and_load(label, self.ctx[:n], even_split=False)

    @staticmethod
    def _check_loss(loss: Any, batch: int, epoch: int, i: int) -> bool:
        """True for a per-sample loss (first axis = batch), False for an already-averaged scalar."""
        shape = tuple(getattr(loss, "shape", ()))
        if len(shape) >= 1 and shape[0] == batch:
            return True
        if int(np.prod(shape)) == 1:  # MXNet 1.x "scalars" have shape (1,)
            return False
        raise TlkitError(
            f"the task's loss returned shape {shape} at epoch {epoch + 1}, batch {i + 1}; expected a per-sample "
            f"loss ({batch},) or a scalar"
        )

    def _regularize(self, norm: float) -> None:
        """L1: grad += wd*sign(w) on the chosen kernels. Scaled by `norm` because trainer.update(norm)
        divides the summed gradient by it. (L2 is the optimizer's fused weight decay, see _make_trainer.)"""
        import mxnet as mx

        reg = self.cfg.reg_config
        if reg.type != "L1" or reg.weight_decay == 0 or not self.reg_params:
            return
        coef = reg.weight_decay * norm
        for p in self.reg_params:
            for w, g in zip(p.list_data(), p.list_grad()):
                g += mx.nd.sign(w) * coef

    def _clip(self, norm: float) -> None:
        """Scale all gradients so their global L2 norm (of the averaged gradient) is <= grad_clip_norm."""
        import mxnet as mx

        max_norm = self.cfg.grad_clip_norm
        if not max_norm:
            return
        grads0 = [p.list_grad()[0] for _, p in self.trainable]
        total = math.sqrt(sum(float(mx.nd.sum(g.astype("float32") ** 2).asscalar()) for g in grads0)) / norm
        if math.isfinite(total) and total > max_norm:
            scale = max_norm / (total + 1e-12)
            for _, p in self.trainable:
                for g in p.list_grad():
                    g *= scale

    def _init_amp(self) -> None:
        """MXNet AMP: float16 on GPUs (with dynamic loss scaling), bfloat16 on CPUs where oneDNN supports it."""
        from mxnet.contrib import amp

        kinds = {c.device_type for c in self.ctx}
        if kinds == {"gpu"}:
            dtype = "float16"
        elif "gpu" in kinds:
            raise TlkitError("--use_amp: the devices mix CPU and GPU; use GPUs only (--gpus N) or the CPU only")
        else:
            missing = cpu_bf16_missing()
            if missing:
                raise TlkitError(
                    "--use_amp on CPU trains in bfloat16, which MXNet's oneDNN runs only on CPUs with AVX-512 "
                    f"(avx512_core); this CPU lacks {', '.join(missing)}. Run without --use_amp here, or on GPUs "
                    "(--gpus N) for float16"
                )
            dtype = "bfloat16"
        global _AMP_DTYPE
        if amp.amp._amp_initialized:  # amp.init patches MXNet's operators for the whole process, once
            if (_AMP_DTYPE or dtype) != dtype:
                raise TlkitError(
                    f"--use_amp: this process already runs MXNet AMP in {_AMP_DTYPE}; {dtype} needs a new process"
                )
        else:
            amp.init(target_dtype=dtype)
            _AMP_DTYPE = dtype
        self.amp_dtype = dtype
        self.console.print(f"mixed precision: {dtype}" + (" with dynamic loss scaling" if dtype == "float16" else ""))

    # -- quantization-aware training ------------------------------------------------------------------

    def _prepare_qat(self) -> list:
        """Swap job.net for its fake-quantized graph (tlkit.qat); returns the activations to calibrate."""
        from tlkit.qat import prepare_qat, qat_meta

        job = self.job
        if self.amp_dtype is not None:
            raise SpecError(
                "train_config.enable_qat with --use_amp: quantization-aware training runs in float32; drop one of them"
            )
        shape = job.meta.get("input_shape")
        if not shape:
            raise TlkitError("train_config.enable_qat needs the model's meta['input_shape'] (C, H, W)")
        job.net, points = prepare_qat(job.net, shape, self.ctx[0])
        if points:
            job.meta = {**job.meta, "qat": qat_meta(points)}
            self.console.print(
                f"quantization-aware training: int8 weights (per channel) in every conv/dense layer, "
                f"{len(points)} int8 activations with learned ranges"
            )
        else:
            self.console.print("quantization-aware training: continuing the learned ranges of this QAT graph")
        return points

    def _calibrate_qat(self, points: list) -> None:
        """Initial activation ranges from the first training batches (not on resume: they are checkpointed)."""
        from tlkit.qat import CALIBRATION_BATCHES, calibrate_qat

        job = self.job
        batches = iter(job.train_data(0))
        n = min(CALIBRATION_BATCHES, job.steps_per_epoch)
        try:
            values = calibrate_qat(
                job.net, points, (self._unpack(b, 0, i)[0] for i, b in zip(range(n), batches)), self.ctx[0]
            )
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
        v = list(values.values())
        self.console.print(
            f"activation ranges initialised from {n} training batch(es): amax {min(v):.3g} .. {max(v):.3g}"
        )

    # -- multi-node ---------------------------------------------------------------------------------------

    def _scaled(self, schedule: Callable[[int], float]) -> Callable[[int], float]:
        """TLT's linear scaling: the learning rate times the data-parallel devices (batch_size_per_gpu and
        learning_rate are per-device values)."""
        replicas = len(self.ctx) * self.world.size
        if replicas == 1:
            return schedule
        self.console.print(f"learning rate x{replicas} for {replicas} data-parallel devices (linear scaling)")
        return lambda step: schedule(step) * replicas

    def _sync_initial_params(self) -> None:
        """Node 0's initial parameters everywhere, before any gradient is pushed.

        gluon.Trainer does this lazily inside allreduce_grads (kvstore broadcast = init + an asynchronous pull),
        and MXNet 1.9's dist kvstore does not order that pull before the gradient push of the same key on a
        CPU: the push can reach the server first, and the pull then returns the summed gradients as weights
        (seen in about 1 run in 4 of the 2-node test). Initialising here and waiting closes that window."""
        import mxnet as mx

        trainer = self.trainer
        if not trainer._params_to_init and trainer._kv_initialized:
            return
        if not trainer._kv_initialized:
            trainer._init_kvstore()
        trainer._init_params()
        mx.nd.waitall()

    def _check_same_checkpoint(self, loaded: Any) -> None:
        """Every node must resume from node 0's checkpoint: -r has to be a directory they share."""
        if not self.world.distributed:
            return
        mine = loaded.epoch if loaded is not None else 0
        theirs = self.world.broadcast(mine)
        self.world.check_all(
            mine == theirs,
            f"node {self.world.rank} finds checkpoint epoch {mine} in {self.weights_dir}, node 0 finds {theirs}: "
            "-r/--results_dir must be a directory every node shares",
        )

    def _validate(self) -> dict[str, float]:
        """The job's validation, run by node 0 of a multi-node job and its metrics shared with the others."""
        metrics: dict[str, float] = {}  # the other nodes' stays unused: broadcast sends node 0's
        if self.writer:
            metrics = {k: float(v) for k, v in self.job.validate(self.job.net, self.ctx).items()}
        return self.world.broadcast(metrics) if self.world.distributed else metrics

    # -- per-epoch bookkeeping ------------------------------------------------------------------------

    def _validation_epoch(self, epoch: int) -> bool:
        """Is `epoch` (1-based) one to validate after (besides the last)?"""
        first, period = self.job.first_validation_epoch, self.cfg.validation_period
        if first is None:
            return epoch % period == 0
        return epoch >= first and (epoch - first) % period == 0

    def _early_stopping(self, metrics: dict) -> bool:
        es = self.cfg.early_stopping
        if es.patience <= 0:
            return False
        if self.monitor not in metrics:
            # the default monitor may not exist for this task: fall back to the task's kpi
            if "monitor" not in es.model_fields_set and self.job.kpi in metrics:
                self.monitor, self.monitor_mode = self.job.kpi, _mode_for(self.job.kpi)
            else:
                raise SpecError(
                    f"train_config.early_stopping.monitor: {self.monitor!r} is not a validation metric of this task; "
                    f"available: {', '.join(sorted(metrics))}"
                )
        value = metrics[self.monitor]
        if _improved(value, self.es_best, self.monitor_mode, es.min_delta):
            self.es_best, self.es_bad = value, 0
            return False
        self.es_bad += 1
        return self.es_bad >= es.patience

    def _maybe_save_best(self, metrics: dict, epoch: int) -> None:
        kpi = self.job.kpi
        if not kpi or kpi not in metrics:
            return
        es = self.cfg.early_stopping
        mode = es.mode if kpi == es.monitor else _mode_for(kpi)
        if _improved(metrics[kpi], self.kpi_best, mode):
            self.kpi_best = metrics[kpi]
            self._save_with_card(self.weights_dir / "model_best.tlk", epoch + 1, metrics)

    def _log_epoch(self, row: dict, epoch: int, n_epochs: int, epoch_times: list[float]) -> None:
        eta = (n_epochs - epoch - 1) * (sum(epoch_times) / len(epoch_times))
        timing = ("epoch", "loss", "lr", "time", "throughput", "teacher_s", "teacher_share", "teacher_ms_per_step")
        metrics = {k: v for k, v in row.items() if k not in timing}
        fields: dict[str, Any] = {
            "epoch": epoch + 1,
            "max_epoch": n_epochs,
            "time_per_epoch": str(timedelta(seconds=row["time"])),
            "eta": str(timedelta(seconds=eta)),
            "graphical": {"loss": row["loss"], "lr": row["lr"], **metrics},
            **({k: row[k] for k in ("teacher_s", "teacher_ms_per_step") if k in row}),
        }
        if metrics:
            fields["kpi"] = metrics
        self.status.write("RUNNING", "Training loop in progress", **fields)
        extra = "".join(f", {k} {v:.4g}" for k, v in metrics.items())
        if "teacher_s" in row:
            extra += (
                f", teacher {row['teacher_s']:.1f}s ({row['teacher_ms_per_step']:.0f} ms/step, "
                f"{100 * row['teacher_share']:.0f}% of the epoch)"
            )
        self.console.print(
            f"epoch {epoch + 1}/{n_epochs}: loss {row['loss']:.4f}, lr {row['lr']:.3g}, "
            f"{row['throughput']:.1f} img/s, {row['time']:.1f}s{extra}",
            highlight=False,
            soft_wrap=True,
        )
        if self.tb is not None:
            for k in ("loss", "lr", *metrics):
                self.tb.add_scalar(f"epoch/{k}", row[k], epoch + 1)
            self.tb.flush()
        if self.writer:
            self._write_csv()

    def _write_csv(self) -> None:
        cols = ["epoch", "loss", "lr", "time", "throughput"]
        for row in self.history:
            cols += [k for k in row if k not in cols]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for row in self.history:
            w.writerow(row)
        atomic_write_text(self.results_dir / "training.csv", buf.getvalue())

    def _open_tensorboard(self) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # optional at run time: training works without event files
            self.console.print("[yellow]warning:[/] tensorboardX is not installed; no TensorBoard events")
            return
        self.tb = SummaryWriter(logdir=str(self.results_dir / "events"))

    # -- saving ---------------------------------------------------------------------------------------

    def _save(self, path: Path, extra_meta: dict, trainer_states: bytes | None) -> Path:
        """Write a .tlk model file atomically (graph kind when the job asks for it)."""
        from mxnet import gluon

        from tlkit.model_io import ModelFile, save_model, save_net, symbol_params

        if not self.writer:  # node 0 alone writes model files
            return path

        meta = {**self.job.meta, **extra_meta}
        net = self.job.net
        graph = self.job.save_as_graph or isinstance(net, gluon.SymbolBlock)
        if graph and getattr(net, "_cached_graph", ()):
            # The graph traced while training (or a SymbolBlock's own): saved as is, no re-trace and no CPU
            # forward on GPU nets. Not HybridBlock.export: it takes the parameters of the last cached op,
            # which a cleared cache (validation) or a block that trains through another graph leaves empty.
            sym = net._cached_graph[1]
            meta["kind"] = "graph"
            return save_model(path, ModelFile(meta, symbol_params(net, sym), sym.tojson(), trainer_states))
        return save_net(path, net, meta, as_graph=graph, trainer_states=trainer_states)

    def _save_checkpoint(self, epoch: int, stopped_early: bool) -> Path:
        state = {
            "epoch": epoch,
            "history": self.history,
            "es_best": self.es_best,
            "es_bad": self.es_bad,
            "kpi_best": self.kpi_best,
            "stopped_early": stopped_early,
            "last_metrics": self.last_metrics,
            "rng": ck.rng_state(),
            "trainable": [n for n, _ in self.trainable],  # the optimizer state is indexed by this list
        }
        if self.job.get_task_state is not None:
            state["task_state"] = self.job.get_task_state()
        path = ck.checkpoint_path(self.weights_dir, epoch)
        self._save(path, {"epoch": epoch, "train_state": state}, ck.trainer_states_bytes(self.trainer))
        if self.writer:
            ck.prune_checkpoints(self.weights_dir, self.cfg.max_checkpoints_to_keep)
        return path

    def _save_final(self, epochs_done: int, metrics: dict, stopped_early: bool = False) -> Path:
        return self._save_with_card(self.weights_dir / "model.tlk", epochs_done, metrics, stopped_early)

    def _save_with_card(self, path: Path, epochs: int, metrics: dict, stopped_early: bool = False) -> Path:
        """A model file with its model card inside and beside it (tlkit.model_card)."""
        from tlkit.model_card import training_card, write_card_files

        card = training_card(
            self.job.meta,
            self.cfg,
            metrics=metrics,
            history=self.history,
            epochs=epochs,
            devices=self.ctx,
            use_amp=self.use_amp,
            stopped_early=stopped_early,
            datasets=self.job.datasets,
            model_file=path.name,
        )
        path = self._save(path, {"epoch": epochs, "metrics": metrics, "card": card.to_dict()}, None)
        if self.writer:
            write_card_files(path, card)
        return path
