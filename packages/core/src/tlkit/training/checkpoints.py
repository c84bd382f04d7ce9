"""Resumable training checkpoints: `<results_dir>/weights/model_epoch_{N:03d}.tlk`.

A checkpoint is an ordinary `.tlk` model file (`tlkit.model_io`) with the optimizer state
(`trainer.states`) and, in ``meta["train_state"]``, what a resumed run needs to continue exactly:
the completed epoch, the history so far, the early-stopping/best-model state and the Python/numpy RNG
states. Files are written atomically, so a killed write leaves at most a hidden ``.model_epoch_*.tmp``
file beside the previous, intact checkpoint; such leftovers are ignored (and removed) on resume.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError, ResultsDirError

CKPT_RE = re.compile(r"^model_epoch_(\d+)\.tlk$")
# what a run leaves in its results dir, moved aside by `archive_run` (status.json stays: it is the log)
RUN_OUTPUTS = ("weights", "training.csv", "training_curves.png", "events", "experiment_spec.yaml", "classmap.json")
RESTART_HINT = "use another -r/--results_dir, or pass --restart to start over (the old run's files are kept)"


class CheckpointMismatch(ResultsDirError, ModelFileError):
    """The results dir holds a checkpoint this job cannot resume (other classes, another network)."""


def checkpoint_path(weights_dir: Path, epoch: int) -> Path:
    return weights_dir / f"model_epoch_{epoch:03d}.tlk"


def list_checkpoints(weights_dir: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of every checkpoint-named file, oldest first (temp files never match)."""
    if not weights_dir.is_dir():
        return []
    out = []
    for p in weights_dir.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def remove_stale_temp_files(weights_dir: Path) -> list[Path]:
    """Delete leftovers of killed atomic writes (`.<name>.<random>.tmp`). Returns what was removed."""
    removed = []
    if weights_dir.is_dir():
        for p in weights_dir.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def prune_checkpoints(weights_dir: Path, keep: int) -> list[Path]:
    """Keep the newest `keep` checkpoints; delete the rest. Returns the deleted paths."""
    ckpts = list_checkpoints(weights_dir)
    doomed = [p for _, p in ckpts[: max(len(ckpts) - keep, 0)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def archive_run(results_dir: Path) -> Path | None:
    """Move a previous run's outputs (RUN_OUTPUTS) into `<results_dir>/previous_runs/<date-time>/`, so a
    restarted run starts from scratch and nothing of the old one is lost. None when there was nothing."""
    import time

    results_dir = Path(results_dir)
    present = [results_dir / n for n in RUN_OUTPUTS if (results_dir / n).exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest = results_dir / "previous_runs" / stamp
    n = 1
    while dest.exists():
        n += 1
        dest = results_dir / "previous_runs" / f"{stamp}-{n}"
    dest.mkdir(parents=True)
    for p in present:
        os.replace(p, dest / p.name)
    return dest


def check_same_classes(loaded: LoadedCheckpoint, meta: dict, results_dir: Path) -> None:
    """Resuming a checkpoint trained on other classes (renamed, reordered, added) would shift the labels:
    CheckpointMismatch naming both lists."""
    old, new = loaded.model.meta.get("classes"), meta.get("classes")
    if old is None or new is None or list(old) == list(new):
        return
    old, new = [str(c) for c in old], [str(c) for c in new]
    diff = sorted(set(old) ^ set(new))
    what = f"differing: {', '.join(diff)}" if diff else "same names, another order"
    raise CheckpointMismatch(
        f"{results_dir}: holds a run on classes [{', '.join(old)}] ({loaded.path.name}), this run's classes are "
        f"[{', '.join(new)}] ({what}); resuming would mix up the labels: {RESTART_HINT}"
    )


@dataclass
class LoadedCheckpoint:
    epoch: int
    path: Path
    model: Any  # tlkit.model_io.ModelFile
    state: dict


def latest_checkpoint(weights_dir: Path, warn=print) -> LoadedCheckpoint | None:
    """The newest checkpoint that loads completely; unreadable ones are reported and skipped."""
    from tlkit.model_io import load_model

    for epoch, path in reversed(list_checkpoints(weights_dir)):
        try:
            mf = load_model(path)
        except ModelFileError as err:
            warn(f"skipping unreadable checkpoint {path.name}: {err}")
            continue
        state = mf.meta.get("train_state")
        if not isinstance(state, dict) or mf.trainer_states is None:
            warn(f"skipping {path.name}: it holds no training state (not written by the training engine)")
            continue
        return LoadedCheckpoint(epoch, path, mf, state)
    return None


# -- RNG state (JSON-friendly, stored in meta.json) ----------------------------------------------------


def rng_state() -> dict:
    py = random.getstate()
    state = np.random.get_state()
    assert isinstance(state, tuple)  # the legacy form (legacy=True, the default)
    name, keys, pos, has_gauss, cached = state
    return {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def set_rng_state(state: dict) -> None:
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


# -- optimizer state ------------------------------------------------------------------------------------


def trainer_states_bytes(trainer: Any) -> bytes:
    """The Gluon Trainer's optimizer state (momentum, Adam moments, update counts) as bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        fname = os.path.join(tmp, "trainer.states")
        trainer.save_states(fname)
        return Path(fname).read_bytes()


def load_trainer_states(trainer: Any, data: bytes, source: str) -> None:
    import mxnet as mx

    with tempfile.TemporaryDirectory() as tmp:
        fname = os.path.join(tmp, "trainer.states")
        Path(fname).write_bytes(data)
        try:
            trainer.load_states(fname)
        except (mx.base.MXNetError, KeyError, ValueError, TypeError, EOFError, AttributeError) as err:
            raise CheckpointMismatch(
                f"{source}: optimizer state does not match this training job ({type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}); {RESTART_HINT}"
            ) from None


# -- parameters -----------------------------------------------------------------------------------------


def load_params_into(net: Any, mf: Any, ctx: list, source: str) -> None:
    """Load a checkpoint's parameters into the (already built) `net` on `ctx`. A network that does not
    match the checkpoint (other architecture, class count, ...) is a ModelFileError naming the tensor."""
    from mxnet import gluon

    if mf.kind == "graph" or isinstance(net, gluon.SymbolBlock):
        own = dict(net.collect_params().items())
        params = {k.split(":", 1)[-1]: v for k, v in mf.params.items()}
    else:
        own = dict(net._collect_params_with_prefix())
        params = mf.params
    missing = sorted(set(own) - set(params))
    if missing:
        raise CheckpointMismatch(
            f"{source}: parameter {missing[0]!r} missing ({len(missing)} in all): the checkpoint is from another "
            f"network; {RESTART_HINT}"
        )
    for name, p in own.items():
        arr = params[name]
        want = tuple(p.shape or ())
        # 0 = a dimension not inferred yet (deferred init): anything fits there
        if len(want) != len(arr.shape) or any(w not in (0, a) for w, a in zip(want, arr.shape)):
            raise CheckpointMismatch(
                f"{source}: parameter {name!r} has shape {tuple(arr.shape)}, the network expects {want}: the "
                f"checkpoint is from another network; {RESTART_HINT}"
            )
    for name, p in own.items():
        p._load_init(params[name], ctx)
