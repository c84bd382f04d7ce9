"""Multi-node data-parallel training on MXNet's own distributed engine: the `dist_sync` kvstore (ps-lite).

Why not Horovod (what TLT uses): Horovod 0.28.1 builds against MXNet 1.9.1 here, but its allreduce fails on
oneDNN arrays ("can't generate TBlob for MKLDNN data") unless oneDNN is switched off, which halves CPU
training speed (measured 2.2x slower; docs/distributed.md). `dist_sync` ships inside the mxnet wheel,
needs no MPI, compiler or extra package, and works with oneDNN on.

One process per node, every node started the same way (torchrun's convention; works under SLURM,
Kubernetes or by hand)::

    tlkit classification train -e spec.yaml -r /shared/results --num_nodes 2 --node_rank 0 --master 10.0.0.1:9091
    tlkit classification train -e spec.yaml -r /shared/results --num_nodes 2 --node_rank 1 --master 10.0.0.1:9091

`launch()` starts what ps-lite needs: node 0 also runs the scheduler (listening on --master), every node
runs one server (gradient summation) beside its worker. Then:

- sharding: a task forms global batches of `batch_size_per_gpu x devices x num_nodes` samples from the
  epoch's shuffled order, as one process would with the combined batch, and each node decodes and trains
  only its slice (`World.shard`); incomplete last batches are dropped (every node takes the same steps).
  A job that does not shard (TrainJob.sharded False) hands the engine whole global batches to slice.
- gradients are summed over all nodes (kvstore push/pull) and divided by the global batch, so the
  weights stay identical on every node; the learning rate is scaled by the number of data-parallel
  devices (TLT's linear scaling: `batch_size_per_gpu` and `learning_rate` are per-GPU values).
- only node 0 writes checkpoints, status.json, training.csv, TensorBoard events and the final model, and
  runs validation (its metrics are broadcast, so early stopping decides the same everywhere); every node
  reads the checkpoint to resume, so -r must be a directory all nodes share (checked at start).
- a node that fails or stalls: the others stop after TLKIT_DIST_TIMEOUT seconds (default 1800) without
  progress, with an error, instead of waiting forever in a collective.

The data shard is the node rank given on the command line (ps-lite numbers its workers in its own order,
by host and port; `World.kv_rank` is that number).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tlkit.errors import SpecError, TlkitError

TIMEOUT_ENV = "TLKIT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
# kvstore keys of tlkit's own collectives (the Trainer's are 0..n_params-1). ps-lite picks a key's server by
# key * 9973 in a 32-bit int: keys must stay below 2**31 / 9973 (~215000).
CONTROL_KEY0, CONTROL_KEY_END = 100_000, 215_000


class DistributedError(TlkitError):
    """Multi-node training could not start or lost a node."""


@dataclass
class World:
    """This process's place in a data-parallel job (rank 0 of 1 when training alone)."""

    rank: int = 0  # the node rank: which slice of each global batch, and 0 writes
    size: int = 1
    master: str | None = None
    kv: Any = None  # the dist_sync kvstore shared with the Trainer
    kv_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S
    _children: list[subprocess.Popen] = field(default_factory=list, repr=False)
    _next_key: int = CONTROL_KEY0
    _last_progress: float = field(default_factory=time.monotonic)
    _watchdog: threading.Thread | None = field(default=None, repr=False)
    _closing: bool = False

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def global_batch(self, batch_size_per_gpu: int, n_devices: int) -> int:
        """The batch of one training step: batch_size_per_gpu on every device of every node."""
        return batch_size_per_gpu * n_devices * self.size

    def drop_last(self, n: int, batch_size: int) -> bool:
        """Whether an epoch of `n` samples leaves out its last, partial batch: when there are two full batches or
        more (a tiny last batch gives noisy batch-norm statistics), and always across nodes (each node takes an
        equal part of every batch). Every task's training uses this rule."""
        return n >= 2 * batch_size or self.distributed

    def part(self, n: int) -> slice:
        """This node's slice of a global batch of `n` samples: the rank-th of `size` equal, contiguous parts."""
        per = n // self.size
        if per == 0:
            raise DistributedError(f"a global batch of {n} sample(s) cannot be split over {self.size} nodes")
        return slice(self.rank * per, (self.rank + 1) * per)

    def shard(self, indices: Sequence[int] | np.ndarray) -> Any:
        """This node's sample indices of a global batch (all of them when training alone)."""
        return indices[self.part(len(indices))] if self.distributed else indices

    def progress(self) -> None:
        """Tell the watchdog this node is making progress (called every training step)."""
        self._last_progress = time.monotonic()

    # -- collectives (every node calls them in the same order) ---------------------------------------

    def _allreduce(self, values: np.ndarray) -> np.ndarray:
        import mxnet as mx

        arr = mx.nd.array(np.asarray(values, np.float32).reshape(-1))
        key = self._next_key
        if key >= CONTROL_KEY_END:
            raise DistributedError(f"more than {CONTROL_KEY_END - CONTROL_KEY0} collectives in one job")
        self._next_key += 1
        self.kv.init(key, mx.nd.zeros(arr.shape))
        out = mx.nd.zeros(arr.shape)
        self.kv.pushpull(key, arr, out=out)
        result = out.asnumpy()
        self.progress()
        return result

    def allreduce_sum(self, values: Sequence[float]) -> np.ndarray:
        """Element-wise sum over the nodes (float32)."""
        arr = np.asarray(values, np.float64)
        if not self.distributed:
            return arr
        return self._allreduce(arr).astype(np.float64)

    def broadcast(self, obj: Any) -> Any:
        """Node 0's JSON-able `obj` on every node (small values: metrics, flags, task state)."""
        if not self.distributed:
            return obj
        data = json.dumps(obj).encode() if self.is_writer else b""
        n = int(self._allreduce(np.array([len(data)]))[0])
        mine = np.frombuffer(data, np.uint8).astype(np.float32) if self.is_writer else np.zeros(n, np.float32)
        raw = self._allreduce(mine) if n else np.zeros(0)
        return json.loads(bytes(np.rint(raw).astype(np.uint8)).decode())

    def check_all(self, ok: bool, message: str) -> None:
        """Raise DistributedError on every node when any node reports not `ok` (`message` from a failing one)."""
        if not self.distributed:
            if not ok:
                raise DistributedError(message)
            return
        bad = self.allreduce_sum([0.0 if ok else 1.0])[0]
        if bad:
            raise DistributedError(
                message if not ok else f"another node failed a check: {bad:.0f} node(s) reported a problem"
            )

    # -- lifetime ---------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._closing:
            time.sleep(min(5.0, self.timeout_s / 4))
            if self._closing:
                return
            for child in self._children:
                code = child.poll()
                if code not in (None, 0) and not self._closing:
                    _die(f"the MXNet kvstore {_role(child)} of node {self.rank} exited with code {code}")
            idle = time.monotonic() - self._last_progress
            if idle > self.timeout_s:
                _die(
                    f"node {self.rank}: no progress for {idle:.0f} s (another node failed, or the scheduler at "
                    f"{self.master} is unreachable); set {TIMEOUT_ENV} to wait longer"
                )

    def shutdown(self) -> None:
        """Leave the job: release the kvstore (ps-lite's closing barrier) and wait for the helper processes."""
        if self._closing:
            return
        self._closing = True
        if self.kv is not None:
            # Free the kvstore now (ps-lite's closing barrier with the other nodes), not when the last Python
            # reference goes: Parameters keep their Trainer, which keeps the kvstore, alive. A NULL handle
            # makes the later __del__ a no-op (MXKVStoreFree deletes nullptr).
            from mxnet.base import _LIB, KVStoreHandle, check_call

            check_call(_LIB.MXKVStoreFree(self.kv.handle))
            self.kv.handle = KVStoreHandle()
            self.kv = None
        deadline = time.monotonic() + 60
        for child in self._children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()


_WORLD = World()


def world() -> World:
    """The current job (a 1-node World unless `launch` started a distributed one)."""
    return _WORLD


def _die(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)
    os._exit(1)


def _role(child: subprocess.Popen) -> str:
    return getattr(child, "tlkit_role", "helper")


def parse_master(text: str) -> tuple[str, int]:
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise SpecError(f"--master {text!r}: expected host:port of node 0, e.g. 10.0.0.1:9091")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def _set_pdeathsig() -> None:
    """In the helper process: be killed when the tlkit process that started it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class _Helper(subprocess.Popen):
    """A kvstore scheduler or server process of this node; `tlkit_role` names it in errors."""

    tlkit_role = "helper"


def _spawn(role: str, env: dict[str, str]) -> subprocess.Popen:
    child_env = {**env, "DMLC_ROLE": role, "OMP_NUM_THREADS": "1"}
    # importing mxnet with DMLC_ROLE=server/scheduler runs that role until the job ends
    proc = _Helper(
        [sys.executable, "-c", "import mxnet"],
        env=child_env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        preexec_fn=_set_pdeathsig,
    )
    proc.tlkit_role = role
    return proc


def launch(num_nodes: int, node_rank: int, master: str | None, *, timeout_s: float | None = None) -> World:
    """Join (or, on node 0, start) a `num_nodes`-node job and make it the current `world()`.

    Must run before MXNet creates any kvstore; the kvstore connects when all nodes have started (within the
    timeout). One node (`num_nodes` 1) is plain single-process training."""
    global _WORLD
    if num_nodes < 1:
        raise SpecError(f"--num_nodes must be at least 1, got {num_nodes}")
    if not 0 <= node_rank < num_nodes:
        raise SpecError(f"--node_rank must be in 0..{num_nodes - 1} for --num_nodes {num_nodes}, got {node_rank}")
    if num_nodes == 1:
        _WORLD = World()
        return _WORLD
    if _WORLD.distributed:
        raise DistributedError("this process already joined a distributed job")
    if not master:
        raise SpecError("--num_nodes > 1 needs --master host:port (node 0's address and a free port)")
    host, port = parse_master(master)
    timeout = float(timeout_s if timeout_s is not None else os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
    env = {
        **os.environ,
        "DMLC_PS_ROOT_URI": host,
        "DMLC_PS_ROOT_PORT": str(port),
        "DMLC_NUM_SERVER": str(num_nodes),
        "DMLC_NUM_WORKER": str(num_nodes),
    }
    if _is_loopback(host):  # all nodes on this machine: ps-lite would announce the first network interface
        env["DMLC_NODE_HOST"] = "127.0.0.1"
    w = World(rank=node_rank, size=num_nodes, master=f"{host}:{port}", timeout_s=timeout)
    if node_rank == 0:
        w._children.append(_spawn("scheduler", env))
    w._children.append(_spawn("server", env))
    os.environ.update({k: v for k, v in env.items() if k.startswith("DMLC_")})
    os.environ["DMLC_ROLE"] = "worker"
    w._watchdog = threading.Thread(target=w._watch, name="tlkit-dist-watchdog", daemon=True)
    w._watchdog.start()
    import mxnet as mx

    w.kv = mx.kv.create("dist_sync")  # blocks until every node has connected to the scheduler
    w.kv_rank = w.kv.rank
    w.progress()
    _WORLD = w
    atexit.register(w.shutdown)
    return w


def abort_if_distributed(code: int) -> None:
    """After a failure in a distributed job: exit now. A normal exit would wait at ps-lite's closing
    barrier for nodes that are themselves waiting for this one."""
    if _WORLD.distributed:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


@contextmanager
def session(num_nodes: int, node_rank: int, master: str | None, *, timeout_s: float | None = None) -> Iterator[World]:
    """`launch` for in-process use: `with session(2, rank, "host:port"): train(...)`. On an exception in a
    multi-node job the process exits (see `abort_if_distributed`)."""
    w = launch(num_nodes, node_rank, master, timeout_s=timeout_s)
    try:
        yield w
    except BaseException as err:
        if w.distributed:
            print(f"error: node {w.rank}: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
            abort_if_distributed(1)
        raise
    finally:
        w.shutdown()
