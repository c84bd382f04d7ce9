"""What every task does to start training from something: pretrained weights, or a pruned graph.

Tasks put their backbone under the structural prefix ``backbone.``, so one policy serves them all:

- `load_task_pretrained`: a tlkit model (this task's or another's) loads by structural name, so a classifier's
  ``backbone.*`` carries over into a detector; anything else (ImageNet `.pth`/`.params`, "imagenet") loads into
  the backbone through the architecture's weight map. A pruned (graph) file is refused with the fix.
- `load_graph_for_retraining`: a pruned model file, checked against the task, classes and input shape.
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


def load_task_pretrained(net: Any, uri: str, *, arch: str, console: Any = None) -> Any:
    """Filtered load of `uri` into `net` (see the module doc). Prints the report; errors if nothing matched."""
    from tlkit.model_io import is_model_file, read_model_meta
    from tlkit.weights import load_pretrained, resolve_weights

    path = resolve_weights(uri, arch=arch)
    if is_model_file(path):
        if read_model_meta(path).kind == "graph":
            raise ModelFileError(f"{path}: holds a graph (pruned) model; set train_config.load_graph: true to retrain it")
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
        raise SpecError(f"train_config.load_graph: true but {p} is not a graph (pruned) model file (kind {info.kind!r})")
    if info.task != task:
        raise SpecError(f"train_config.load_graph: {p} is a {info.task!r} model, not a {task} model")
    if classes is not None and info.classes != list(classes):
        raise SpecError(
            f"train_config.load_graph: {p} was trained on classes {info.classes}, the dataset has {classes}; "
            "a pruned graph cannot change its head, prune a model trained on these classes"
        )
    if input_shape is not None and (info.input_shape or []) != list(input_shape):
        raise SpecError(f"train_config.load_graph: {p} takes input {info.input_shape}, the spec asks for {list(input_shape)}")
    net, meta = load_net(p, ctx[0])
    if len(ctx) > 1:
        net.collect_params().reset_ctx(ctx)
    if console is not None:
        console.print(f"retraining the graph of {p} ({count_params(net):,} parameters)")
    meta = {k: v for k, v in meta.items() if k not in _FILE_KEYS}
    return BuiltModel(net, meta, (), save_as_graph=True)


def set_bn_momentum(net: Any, momentum: float) -> int:
    """Set the running-statistics momentum of every BatchNorm (a training-time setting: not saved), on a
    Gluon network or a SymbolBlock (pruned graph). Returns how many layers were set."""
    import json

    import mxnet as mx
    from mxnet import gluon

    if isinstance(net, gluon.SymbolBlock):
        inputs, out = net._cached_graph
        graph = json.loads(out.tojson())
        n = 0
        for node in graph["nodes"]:
            if node["op"] == "BatchNorm":
                node.setdefault("attrs", {})["momentum"] = str(momentum)
                n += 1
        net._cached_graph = (inputs, mx.sym.load_json(json.dumps(graph)))
        net._clear_cached_op()
        return n
    layers: list[Any] = []
    net.apply(lambda b: layers.append(b) if isinstance(b, gluon.nn.BatchNorm) else None)
    for b in layers:
        b._kwargs["momentum"] = momentum
    return len(layers)


def count_params(net: Any) -> int:
    return int(sum(p.data().size for p in net.collect_params().values() if p._data is not None))
