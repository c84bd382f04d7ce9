"""`tlkit.transfer.build_for_training`: the steps every task's `train` starts with, run through a task's
ModelBuilder hooks: freeze_blocks checked against the backbone (naming the spec key), seeding, batch-norm momentum,
the pruned-graph branch."""

from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet.gluon import nn
from pydantic import Field
from rich.console import Console

from tlkit.backbones import Backbone
from tlkit.config import SpecModel, TaskConfig
from tlkit.errors import SpecError
from tlkit.transfer import BuiltModel, ModelBuilder, build_for_training


class NetSection(SpecModel):
    freeze_blocks: list[int] = Field(default_factory=list)
    batch_norm_momentum: float | None = None


class Cfg(TaskConfig):
    model: NetSection = Field(default_factory=NetSection, alias="model_config")


def cfg(**model) -> Cfg:
    return Cfg.model_validate({"model_config": model, "train_config": {"random_seed": 7}})


def backbone() -> Backbone:
    def conv(c, s):
        block = nn.HybridSequential()
        block.add(nn.Conv2D(c, 3, strides=s, padding=1), nn.BatchNorm(), nn.Activation("relu"))
        return block

    return Backbone(
        "toy",
        [("stem", conv(4, 2)), ("stage1", conv(8, 2)), ("stage2", conv(8, 2))],
        [("stem", 1, 2), ("stage1", 1, 2), ("stage2", 1, 2)],
        8,
        out_stride=8,
    )


class Net(nn.HybridBlock):
    def __init__(self):
        super().__init__()
        self.backbone = backbone()
        self.head = nn.Conv2D(2, 1)

    def hybrid_forward(self, F, x):
        return self.head(self.backbone(x))


class ToyBuilder(ModelBuilder):
    task = "toy"

    def __init__(self, cfg, classes=None):
        super().__init__(cfg, classes)
        self.calls: list[str] = []

    def build(self):
        self.calls.append("build")
        return Net(), {"arch": "toy", "input_shape": [3, 16, 16]}

    def initialize(self, net, meta, ctx):
        self.calls.append("initialize")
        super().initialize(net, meta, ctx)

    def finish(self, net, meta):
        self.calls.append("finish")


def bn_momenta(net) -> set[float]:
    found: list = []
    net.apply(lambda b: found.append(b._kwargs["momentum"]) if isinstance(b, nn.BatchNorm) else None)
    return set(found)


def test_freeze_blocks_map_to_backbone_prefixes_and_momentum_and_finish_apply():
    builder = ToyBuilder(cfg(freeze_blocks=[0, 2], batch_norm_momentum=0.8))
    built = build_for_training(builder, [mx.cpu()])
    assert builder.calls == ["build", "initialize", "finish"]
    assert built.frozen == ("backbone.stem.", "backbone.stage2.") and built.meta["arch"] == "toy"
    assert bn_momenta(built.net) == {0.8}
    assert built.net(mx.nd.zeros((1, 3, 16, 16))).shape == (1, 2, 2, 2)


def test_the_seed_fixes_the_initial_weights():
    a = build_for_training(ToyBuilder(cfg()), [mx.cpu()]).net
    b = build_for_training(ToyBuilder(cfg()), [mx.cpu()]).net
    for (_, pa), (_, pb) in zip(
        sorted(a._collect_params_with_prefix().items()), sorted(b._collect_params_with_prefix().items())
    ):
        np.testing.assert_array_equal(pa.data().asnumpy(), pb.data().asnumpy())


def test_a_block_the_backbone_lacks_is_refused_naming_the_key_before_anything_heavy():
    builder = ToyBuilder(cfg(freeze_blocks=[1, 3]))
    with pytest.raises(SpecError) as err:
        build_for_training(builder, [mx.cpu()])
    assert str(err.value) == (
        "model_config.freeze_blocks: block 3 is out of range for toy, whose backbone has blocks "
        "0..2 (0 stem, 1 stage1, 2 stage2)"
    )
    assert builder.calls == ["build"]  # refused before initialising or loading weights

    class NoBackbone(ToyBuilder):
        backbone_path = "features.backbone"

    with pytest.raises(
        SpecError,
        match=r"^model_config.freeze_blocks: toy has no freeze-able backbone blocks; "
        r"remove model_config.freeze_blocks$",
    ):
        build_for_training(NoBackbone(cfg(freeze_blocks=[0])), [mx.cpu()])


def test_a_pruned_graph_is_loaded_by_the_hook_and_gets_the_momentum(tmp_path):
    graph = Net()
    graph.initialize()
    graph(mx.nd.zeros((1, 3, 16, 16)))
    graph.hybridize()
    graph(mx.nd.zeros((1, 3, 16, 16)))

    class GraphBuilder(ToyBuilder):
        def load_graph(self, ctx, console):
            self.calls.append("load_graph")
            return BuiltModel(graph, {"arch": "toy"}, save_as_graph=True)

        def finish_graph(self, built, ctx):
            self.calls.append("finish_graph")
            return built

    c = cfg(freeze_blocks=[1], batch_norm_momentum=0.5)
    c.train_config.load_graph = True
    builder = GraphBuilder(c)
    console = Console(record=True, width=200)
    built = build_for_training(builder, [mx.cpu()], console)
    assert builder.calls == ["load_graph", "finish_graph"] and built.net is graph and built.frozen == ()
    assert bn_momenta(graph) == {0.5}
    assert "model_config.freeze_blocks: not applied to a pruned graph" in console.export_text()
