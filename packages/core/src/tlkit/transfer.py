"""What every task does to start training from something: pretrained weights, or a pruned graph.

Tasks put their backbone under the structural prefix ``backbone.``, so one policy serves them all:

- `load_task_pretrained`: a tlkit model (this task's or another's) loads by structural name, so a classifier's
  ``backbone.*`` carries over into a detector; anything else (ImageNet `.pth`/`.params`, "imagenet") loads into
  the backbone through the architecture's weight map. A pruned (graph) file is refused with the fix.
- `load_graph_for_retraining`: a pruned model file, checked against the task, classes and input shape.
- `build_for_training(builder, ctx_list, console)`: the network every task's `train` starts from, the same steps
  and checks for every task; a task supplies a `ModelBuilder` (its network, meta and what differs).
- `set_bn_momentum`, `count_params`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlkit.errors import ModelFileError, SpecError

# meta keys that describe one file, not the model: dropped when a model becomes the start of a new training
_FILE_KEYS = ("format", "format_version", "tlkit_version", "kind", "epoch", "metrics", "train_state", "card")


@dataclass
class BuiltModel:
    """What a task's `build_for_training` returns to its train command."""

    net: Any
    meta: dict[str, Any]
    frozen: tuple[str, ...] = ()
    save_as_graph: bool = False
    load_report: Any = None


class ModelBuilder:
    """What a task tells `build_for_training`: its network and meta, and the steps that differ from the defaults.

    The spec `cfg` has `model` (the network section: `freeze_blocks`, optional `batch_norm_momentum`) and
    `train_config` (`load_graph`, `pretrained_model_path`, `random_seed`). Override `build` (required) and any of the
    other hooks; each default says what most tasks do.
    """

    task: str = ""
    # where the tlkit Backbone sits in the network (attribute path): `freeze_blocks` names its blocks
    backbone_path: str = "backbone"

    def __init__(self, cfg: Any, classes: list[str] | None = None):
        self.cfg, self.classes = cfg, classes

    def build(self) -> tuple[Any, dict[str, Any]]:
        """(the uninitialised network, the model file's meta: "arch", "input_shape", "build", ...)."""
        raise NotImplementedError

    def initialize(self, net: Any, meta: dict[str, Any], ctx: list[Any]) -> None:
        """Initialise the parameters and materialise deferred shapes (before weights are loaded)."""
        import mxnet as mx

        net.initialize(mx.init.Xavier(magnitude=2.0), ctx=ctx)
        net(mx.nd.zeros((1, *meta["input_shape"]), ctx=ctx[0]))

    def load_pretrained(self, net: Any, meta: dict[str, Any], uri: str, console: Any) -> Any:
        """Load train_config.pretrained_model_path; returns the load report."""
        return load_task_pretrained(net, uri, arch=meta["arch"], console=console)

    def load_graph(self, ctx: list[Any], console: Any) -> BuiltModel:
        """train_config.load_graph: true: the pruned graph of pretrained_model_path, checked against the spec."""
        return load_graph_for_retraining(
            self.cfg.train_config.pretrained_model_path, task=self.task, ctx=ctx, classes=self.classes, console=console
        )

    def backbone(self, net: Any) -> Any:
        """The network's tlkit Backbone (None: it has none, so freeze_blocks cannot apply)."""
        block = net
        for attr in self.backbone_path.split("."):
            block = getattr(block, attr, None)
        return block if hasattr(block, "block_names") and hasattr(block, "freeze_prefixes") else None

    def frozen_prefix(self, prefix: str) -> str:
        """How a parameter-name prefix of the backbone reads in the whole network."""
        return f"{self.backbone_path}.{prefix}"

    def no_blocks_hint(self) -> str:
        """Said after "<arch> has no freeze-able backbone blocks" (e.g. which architectures have them)."""
        return ""

    def finish_graph(self, built: BuiltModel, ctx: list[Any]) -> BuiltModel:
        """The loaded pruned graph made ready to train (after batch_norm_momentum is set on it): e.g. wrapped."""
        return built

    def finish(self, net: Any, meta: dict[str, Any]) -> None:
        """Last task-specific settings on a built (not a pruned-graph) network: lr multipliers, which outputs
        train, ..."""


def section_name(cfg: Any, field: str = "model") -> str:
    """The spec key of a config section as users write it (`model_config` where the field has that alias)."""
    info = type(cfg).model_fields.get(field)
    return info.alias if info is not None and info.alias else field


def freeze_prefixes(builder: ModelBuilder, net: Any, blocks: list[int], arch: str) -> tuple[str, ...]:
    """Parameter-name prefixes of `blocks` of the network's backbone; a block the backbone does not have (or a
    network without freeze-able blocks) is a SpecError naming the spec key and the blocks there are."""
    if not blocks:
        return ()
    key = f"{section_name(builder.cfg)}.freeze_blocks"
    backbone = builder.backbone(net)
    if backbone is None:
        raise SpecError(f"{key}: {arch} has no freeze-able backbone blocks{builder.no_blocks_hint()}; remove {key}")
    names = list(backbone.block_names)
    bad = [b for b in blocks if not 0 <= int(b) < len(names)]
    if bad:
        raise SpecError(
            f"{key}: block {bad[0]} is out of range for {arch}, whose backbone has blocks "
            f"0..{len(names) - 1} ({', '.join(f'{i} {n}' for i, n in enumerate(names))})"
        )
    return tuple(builder.frozen_prefix(p) for p in backbone.freeze_prefixes([int(b) for b in blocks]))


def build_for_training(builder: ModelBuilder, ctx: list[Any], console: Any = None) -> BuiltModel:
    """The network `train` starts from, the same way for every task.

    - `train_config.load_graph: true`: the pruned graph of pretrained_model_path (`builder.load_graph`), retrained
      whole (freeze_blocks does not apply to a graph: said so).
    - otherwise: the task's network (`builder.build`), `freeze_blocks` checked against its backbone's blocks before
      anything heavy, initialised from `train_config.random_seed`, pretrained_model_path loaded (and reported).
    The model section's `batch_norm_momentum`, when set, applies to both; then `builder.finish_graph` /
    `builder.finish` make the last task-specific settings.
    """
    import mxnet as mx

    m, tc = builder.cfg.model, builder.cfg.train_config
    momentum = getattr(m, "batch_norm_momentum", None)
    if tc.load_graph:
        built = builder.load_graph(ctx, console)
        if m.freeze_blocks and console is not None:
            console.print(
                f"{section_name(builder.cfg)}.freeze_blocks: not applied to a pruned graph (it has no "
                "blocks); every layer trains"
            )
        if momentum is not None:
            set_bn_momentum(built.net, momentum)
        return builder.finish_graph(built, ctx)
    mx.random.seed(tc.random_seed)
    net, meta = builder.build()
    frozen = freeze_prefixes(builder, net, list(m.freeze_blocks), str(meta.get("arch")))
    builder.initialize(net, meta, ctx)
    report = None
    if tc.pretrained_model_path:
        report = builder.load_pretrained(net, meta, str(tc.pretrained_model_path), console)
    if momentum is not None:
        set_bn_momentum(net, momentum)
    builder.finish(net, meta)
    return BuiltModel(net, meta, frozen, load_report=report)


def load_task_pretrained(net: Any, uri: str, *, arch: str, console: Any = None) -> Any:
    """Filtered load of `uri` into `net` (see the module doc). Prints the report; errors if nothing matched."""
    from tlkit.model_io import is_model_file, read_model_meta
    from tlkit.weights import load_pretrained, resolve_weights

    path = resolve_weights(uri, arch=arch)
    if is_model_file(path):
        if read_model_meta(path).kind == "graph":
            raise ModelFileError(
                f"{path}: holds a graph (pruned) model; set train_config.load_graph: true to retrain it"
            )
        report = load_pretrained(net, path, arch=arch)
    else:
        report = load_pretrained(net, uri, prefix="backbone.", arch=arch)
    if console is not None:
        console.print(describe_load(report))
    if not report.loaded:
        raise ModelFileError(
            f"train_config.pretrained_model_path {uri}: no tensor matched the network ({arch}); "
            "is it weights for this architecture?"
        )
    return report


def describe_load(report: Any, n: int = 6) -> str:
    """The load report in a few lines: counts, the new tensors, and real mismatches (not unused extras)."""
    lines = [f"pretrained weights {report.summary()}"]
    if report.new:
        more = f" (+{len(report.new) - n} more)" if len(report.new) > n else ""
        lines.append(f"  new (initialised): {', '.join(report.new[:n])}{more}")
    bad = [(k, r) for k, r in report.skipped if "weight map" not in r]
    if bad:
        more = f" (+{len(bad) - n} more)" if len(bad) > n else ""
        lines.append("  skipped: " + "; ".join(f"{k}: {r}" for k, r in bad[:n]) + more)
    return "\n".join(lines)


def load_graph_for_retraining(
    path: str | None,
    *,
    task: str,
    ctx: list[Any],
    classes: list[str] | None = None,
    input_shape: list[int] | None = None,
    console: Any = None,
) -> BuiltModel:
    """A pruned (graph) model file as a trainable SymbolBlock, after checking it fits this training run."""
    from tlkit.model_io import load_net, read_model_meta

    if not path:
        raise SpecError("train_config.load_graph: true needs train_config.pretrained_model_path (a pruned .tlk)")
    p = Path(path)
    info = read_model_meta(p)
    if info.kind != "graph":
        raise SpecError(
            f"train_config.load_graph: true but {p} is not a graph (pruned) model file (kind {info.kind!r})"
        )
    if info.task != task:
        raise SpecError(f"train_config.load_graph: {p} is a {info.task!r} model, not a {task} model")
    if classes is not None and info.classes != list(classes):
        raise SpecError(
            f"train_config.load_graph: {p} was trained on classes {info.classes}, the dataset has {classes}; "
            "a pruned graph cannot change its head, prune a model trained on these classes"
        )
    if input_shape is not None and (info.input_shape or []) != list(input_shape):
        raise SpecError(
            f"train_config.load_graph: {p} takes input {info.input_shape}, the spec asks for {list(input_shape)}"
        )
    net, meta = load_net(p, ctx[0])
    if len(ctx) > 1:
        net.collect_params().reset_ctx(ctx)
    if console is not None:
        console.print(f"retraining the graph of {p} ({count_params(net):,} parameters)")
    meta = {k: v for k, v in meta.items() if k not in _FILE_KEYS}
    return BuiltModel(net, meta, (), save_as_graph=True)


def set_bn_momentum(net: Any, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm (a training-time setting: not saved), on a
    Gluon network, a SymbolBlock (pruned graph) or a network holding SymbolBlocks (GluonCV's SSD feature
    extractors). Returns how many layers were set."""
    import json

    import mxnet as mx
    from mxnet import gluon

    def in_graph(block: Any) -> int:
        inputs, out = block._cached_graph
        graph = json.loads(out.tojson())
        bns = [node for node in graph["nodes"] if node["op"] == "BatchNorm"]
        for node in bns:
            node.setdefault("attrs", {})["momentum"] = str(momentum)
        block._cached_graph = (inputs, mx.sym.load_json(json.dumps(graph)))
        block._clear_cached_op()
        return len(bns)

    blocks: list[Any] = []
    net.apply(blocks.append)
    n = 0
    for b in blocks:
        if isinstance(b, gluon.SymbolBlock) and b._cached_graph:
            n += in_graph(b)
        elif isinstance(b, gluon.nn.BatchNorm):
            b._kwargs["momentum"] = momentum
            n += 1
    return n


def count_params(net: Any) -> int:
    return int(sum(p.data().size for p in net.collect_params().values() if p._data is not None))
