"""Multi-node data-parallel training (tlkit.distributed, MXNet dist_sync): 2 worker processes on 127.0.0.1.

One job of 2 nodes trains the tiny net of test_training for 2 epochs (train_data sharded per node), then a
second job resumes it to 3 epochs (train_data yielding whole global batches, the engine keeping its slice).
After each: the weights are identical on both nodes and equal a single-process run with the combined batch
(and the learning rate scaled x2, as the nodes scale it); only node 0 wrote status.json and checkpoints.
The net has no BatchNorm/Dropout: their per-device statistics/masks differ from a single batch's by design.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mxnet")
from mxnet import gluon  # noqa: E402

from tlkit.distributed import DistributedError, World, parse_master, world  # noqa: E402
from tlkit.errors import SpecError  # noqa: E402

HERE = Path(__file__).resolve().parent
N_SAMPLES, LOCAL_BATCH, NODES, LR = 32, 4, 2, 0.01  # a stable rate: chaotic training amplifies float noise
TIMEOUT_S = 240


def make_net() -> gluon.HybridBlock:
    net = gluon.nn.HybridSequential()
    net.add(
        gluon.nn.Conv2D(6, 3, padding=1, activation="relu"),
        gluon.nn.Conv2D(6, 3, strides=2, activation="relu"),
        gluon.nn.GlobalAvgPool2D(),
        gluon.nn.Dense(3),
    )
    mx.random.seed(0)
    net.initialize(mx.init.Xavier())
    return net


def make_data() -> tuple[np.ndarray, np.ndarray]:
    rs = np.random.RandomState(0)
    y = rs.randint(0, 3, N_SAMPLES)
    x = rs.rand(N_SAMPLES, 3, 16, 16).astype(np.float32) * 0.5
    x[np.arange(N_SAMPLES), y] += 0.5  # learnable: the class is the brighter channel
    return x, y.astype(np.float32)


def make_job(batch: int, sharded: bool):
    """The job every node (and the single-process reference) runs. `batch`: what train_data yields per step."""
    from tlkit.training import TrainJob

    x, y = make_data()

    def train_data(epoch):
        order = np.random.RandomState(1000 + epoch).permutation(N_SAMPLES)
        for i in range(0, N_SAMPLES, batch):  # global batches; a sharded job keeps only its slice of each
            idx = world().shard(order[i : i + batch]) if sharded else order[i : i + batch]
            yield x[idx], y[idx]

    ce = gluon.loss.SoftmaxCrossEntropyLoss()
    return TrainJob(
        net=make_net(),
        train_data=train_data,
        steps_per_epoch=N_SAMPLES // (LOCAL_BATCH * NODES),
        loss=lambda out, label: ce(out, label),
        sharded=sharded,
        meta={"task": "unit", "arch": "tiny", "input_shape": [3, 16, 16]},
    )


def make_cfg(epochs: int, lr: float):
    from tlkit.config import TrainConfig

    return TrainConfig.model_validate(
        {
            "n_epochs": epochs,
            "batch_size_per_gpu": LOCAL_BATCH,
            "random_seed": 3,
            "max_checkpoints_to_keep": 5,
            "optimizer": {"type": "sgd", "momentum": 0.9},
            "lr_config": {"type": "constant", "learning_rate": lr},
            "reg_config": {"type": "L2", "weight_decay": 1e-4},
        }
    )


def weights(net) -> dict[str, np.ndarray]:
    return {k: p.data().asnumpy() for k, p in net._collect_params_with_prefix().items()}


def worker(rank: int, master: str, results: str, out: str, epochs: int, sharded: bool) -> None:
    """One node (run in its own process by the test)."""
    from rich.console import Console

    from tlkit.distributed import session
    from tlkit.training import train

    with session(NODES, rank, master, timeout_s=TIMEOUT_S / 2):
        job = make_job(LOCAL_BATCH * NODES, sharded)
        train(job, make_cfg(epochs, LR), results, console=Console(stderr=True))
        np.savez(out, **weights(job.net))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(tmp_path: Path, results: Path, epochs: int, sharded: bool) -> list[dict[str, np.ndarray]]:
    """Both nodes as subprocesses; their final weights. Retried on another port if the scheduler's is taken."""
    for attempt in range(3):
        master = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        outs = [tmp_path / f"w{rank}_{epochs}_{attempt}.npz" for rank in range(NODES)]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    f"from test_distributed import worker; worker({rank}, {master!r}, {str(results)!r}, "
                    f"{str(outs[rank])!r}, {epochs}, {sharded})",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            for rank in range(NODES)
        ]
        logs = []
        try:
            for p in procs:
                logs.append(p.communicate(timeout=TIMEOUT_S))
        except subprocess.TimeoutExpired:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            pytest.fail(f"2-node training did not finish in {TIMEOUT_S} s")
        finally:
            for p in procs:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGKILL)
        if all(p.returncode == 0 for p in procs):
            return [dict(np.load(o)) for o in outs]
        text = "\n".join(
            f"node {r}: rc {p.returncode}\n{err[-3000:]}" for r, (p, (_, err)) in enumerate(zip(procs, logs))
        )
        if "kvstore scheduler of node 0 exited" not in text:  # e.g. its port was taken meanwhile
            pytest.fail(text)
    pytest.fail(text)


def reference(tmp_path: Path, epochs: int) -> dict[str, np.ndarray]:
    """One process, the combined batch (LOCAL_BATCH x NODES) and the scaled learning rate."""
    import io

    from rich.console import Console

    from tlkit.training import train

    job = make_job(LOCAL_BATCH * NODES, sharded=False)
    train(job, make_cfg(epochs, LR * NODES), tmp_path / f"ref{epochs}", console=Console(file=io.StringIO()))
    return weights(job.net)


def assert_same(nodes: list[dict], ref: dict) -> None:
    assert set(nodes[0]) == set(ref)
    for name in ref:
        np.testing.assert_array_equal(nodes[0][name], nodes[1][name], err_msg=f"{name} differs between the nodes")
        np.testing.assert_allclose(
            nodes[0][name],
            ref[name],
            rtol=1e-4,
            atol=1e-5,
            err_msg=f"{name}: 2 nodes vs 1 process with the combined batch",
        )


def test_two_nodes_match_one_process_and_resume(tmp_path):
    results = tmp_path / "shared_results"
    nodes = run_job(tmp_path, results, epochs=2, sharded=True)
    assert_same(nodes, reference(tmp_path, 2))
    before = results.joinpath("status.json").read_text().splitlines()
    assert [json.loads(x)["status"] for x in before] == ["STARTED", "RUNNING", "RUNNING", "SUCCESS"]  # node 0 only
    assert sorted(p.name for p in (results / "weights").glob("*.tlk")) == [
        "model.tlk",
        "model_epoch_001.tlk",
        "model_epoch_002.tlk",
    ]

    nodes = run_job(tmp_path, results, epochs=3, sharded=False)  # resumes from epoch 2 on both nodes
    assert_same(nodes, reference(tmp_path, 3))
    lines = [json.loads(x) for x in results.joinpath("status.json").read_text().splitlines()[len(before) :]]
    assert [x["status"] for x in lines] == ["STARTED", "RUNNING", "SUCCESS"]
    assert "Resuming from checkpoint weights/model_epoch_002.tlk" in lines[0]["message"]


# -- no processes needed -------------------------------------------------------------------------------------


def test_shard_is_this_nodes_slice_of_a_global_batch():
    batch = np.arange(10, 18)
    assert [World(rank=r, size=2).shard(batch).tolist() for r in range(2)] == [[10, 11, 12, 13], [14, 15, 16, 17]]
    assert World(rank=2, size=3).shard(batch).tolist() == [14, 15]  # 8 // 3 = 2 each, the remainder unused
    assert World().shard(batch) is batch
    with pytest.raises(DistributedError, match="global batch of 1 sample"):
        World(rank=0, size=2).shard(batch[:1])


def test_global_batch_and_the_one_drop_last_rule():
    assert World().global_batch(8, 2) == 16 and World(size=3).global_batch(8, 2) == 48
    alone, nodes = World(), World(rank=1, size=2)
    # alone: the last partial batch is dropped only when there are two full batches or more
    assert [alone.drop_last(n, 8) for n in (7, 8, 15, 16, 17)] == [False, False, False, True, True]
    assert all(nodes.drop_last(n, 8) for n in (7, 8, 15, 16, 17))  # every node takes its equal part


def test_launch_arguments_are_checked():
    from tlkit.distributed import launch

    assert parse_master("10.0.0.1:9091") == ("10.0.0.1", 9091)
    for bad in ("10.0.0.1", "host:port", ":9091", "h:70000"):
        with pytest.raises(SpecError, match="host:port"):
            parse_master(bad)
    with pytest.raises(SpecError, match="node_rank must be in 0..1"):
        launch(2, 2, "127.0.0.1:9091")
    with pytest.raises(SpecError, match="needs --master"):
        launch(2, 0, None)
    assert not launch(1, 0, None).distributed  # one node: plain training


class FakeNode(World):
    """Node 1 of 2 without processes: collectives answer as node 0 would (its checkpoint epoch, its metrics)."""

    def __init__(self, node0_epoch: int = 0):
        super().__init__(rank=1, size=2)
        self.node0_epoch = node0_epoch

    def broadcast(self, obj):
        return self.node0_epoch if isinstance(obj, int) else obj

    def allreduce_sum(self, values):
        return np.asarray(values, np.float64) * 2  # node 0 saw as much

    def check_all(self, ok, message):
        World.check_all(World(), ok, message)  # raise here like every node would


def test_a_node_other_than_0_writes_nothing_and_resumes_only_from_node_0s_checkpoint(tmp_path, monkeypatch):
    import tlkit.distributed as dist
    from tlkit.training import train

    monkeypatch.setattr(dist, "_WORLD", FakeNode())
    res = train(make_job(LOCAL_BATCH * NODES, sharded=False), make_cfg(1, LR), tmp_path / "shared")
    assert res.epochs_run == 1 and np.isfinite(res.history[0]["loss"])
    assert sorted(p.name for p in (tmp_path / "shared").rglob("*")) == []  # node 0 writes the results

    monkeypatch.setattr(dist, "_WORLD", World())  # a checkpoint this node sees but node 0 (epoch 0) does not
    train(make_job(LOCAL_BATCH * NODES, sharded=False), make_cfg(1, LR), tmp_path / "mine")
    monkeypatch.setattr(dist, "_WORLD", FakeNode(node0_epoch=0))
    with pytest.raises(DistributedError, match="node 1 finds checkpoint epoch 1 .* node 0 finds 0: -r/--results_dir"):
        train(make_job(LOCAL_BATCH * NODES, sharded=False), make_cfg(2, LR), tmp_path / "mine")
