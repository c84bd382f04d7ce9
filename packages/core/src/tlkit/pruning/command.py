"""`tlkit <task> prune`: prune a .tlk model file into a smaller "graph" model file (TLT's `prune`).

Every task uses this command as is:

    CommandSpec("prune", run="tlkit.pruning.command:run", options=PRUNE_OPTIONS, stage=Stage.PRUNE,
                needs_spec=False, needs_results_dir=False)

Tasks mark their heads (class/box outputs that must keep their size) with ``meta["prune_exclude"]`` in the
model file: a list of symbol node names (Gluon block names work too: ``_fwd`` is added). A Convolution /
FullyConnected named there keeps all its filters (and its equalization group does too); any other node
(a head's ``transpose``, an ``L2Normalization``) keeps every channel it reads. Names missing from the graph
are skipped, so one list can serve several variants; the user's ``-el`` names must exist.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.errors import ModelFileError, TlkitError
from tlkit.model_card import write_card_files
from tlkit.pruning.report import PruneReport

if TYPE_CHECKING:
    from tlkit.context import CommandContext

# CLI option name (tlkit.cli.options.PRUNE_OPTIONS) -> prune_graph keyword
_OPTION_KEYS = {
    "pruning_threshold": "threshold",
    "pruning_granularity": "granularity",
    "min_num_filters": "min_filters",
    "normalizer": "normalizer",
    "equalization_criterion": "equalization",
    "excluded_layers": "excluded_layers",
    "target_ratio": "target_ratio",
    "target_flops": "target_flops",
    "target_macs": "target_macs",
    "allocation": "allocation",
    "min_channel_ratio": "min_channel_ratio",
}


def prune_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """prune_graph keywords from CLI options (PRUNE_OPTIONS names) or prune_graph's own names.
    None values are dropped (the defaults apply); `-el a,b` is split at commas."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        key = _OPTION_KEYS.get(name, name)
        if key not in set(_OPTION_KEYS.values()) or value is None:
            continue
        if key == "excluded_layers":
            value = [x.strip() for v in ([value] if isinstance(value, str) else value) for x in str(v).split(",")]
            value = [x for x in value if x]
        out[key] = value
    return out


def _node_names(symbol_json: str) -> set[str]:
    return {n["name"] for n in json.loads(symbol_json)["nodes"] if n["op"] != "null"}


DEFAULT_PRUNER = "l2"


def pruner_for(name: str | None, task: str | None) -> Any:
    """The registered pruner `name` (None: core's) as a callable, after checking it prunes `task`'s models;
    an unknown name is an error naming the installed pruners."""
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    spec = get_registry().pruner(name or DEFAULT_PRUNER)
    if spec.tasks is not None and task is not None and task not in spec.tasks:
        raise TlkitError(
            f"--pruner {spec.name}: prunes {', '.join(sorted(spec.tasks))} models, not {task!r} ones "
            f"(from {spec.distribution})"
        )
    return resolve(spec.prune)


def prune_model_file(
    model_path: str | os.PathLike, output_path: str | os.PathLike, *, pruner: str | None = None, **options: Any
) -> PruneReport:
    """Prune a `.tlk` model file with the registered pruner `pruner` (None: core's `l2`) and write the pruned
    "graph"-kind model file atomically.

    `options` are the CLI's PRUNE_OPTIONS names (or, for core's pruner, `prune_graph` keywords). The task's heads
    listed in the file's ``meta["prune_exclude"]`` are never pruned. Returns the report.
    """
    from tlkit.model_io import ModelFile, graph_of, load_model, load_net, save_model

    model_path, output_path = Path(model_path), Path(output_path)
    if output_path.resolve() == model_path.resolve():
        raise TlkitError(
            f"{output_path}: the pruned model would overwrite the model being pruned; choose another output"
        )
    threshold = options.get("pruning_threshold", options.get("threshold"))
    if threshold is not None and threshold >= 1 and options.get("target_ratio") is None:
        raise TlkitError(
            f"-pth {threshold}: normalized filter norms are at most 1, so a threshold of 1 or more cuts every layer "
            f"to -nf filters; give a threshold in [0, 1), or --target_ratio"
        )
    mf = load_model(model_path)
    meta, info = dict(mf.meta), mf.info
    if info.input_shape is None:
        raise ModelFileError(f"{model_path}: meta.json has no 'input_shape' [C, H, W]; cannot trace the graph")
    if info.qat:  # TLT's order: train, prune, retrain (with QAT); fake-quant nodes are not prunable
        raise ModelFileError(
            f"{model_path}: a quantization-aware-trained model; prune the float model it was trained "
            "from, then retrain the pruned one with train_config.enable_qat: true"
        )
    input_shape = tuple(info.input_shape)
    prune = pruner_for(pruner, info.task)
    if mf.kind == "graph":
        if not mf.symbol_json:
            raise ModelFileError(f"{model_path}: a 'graph' model file without symbol.json")
        symbol_json, params = mf.symbol_json, mf.params
    else:
        net, _ = load_net(model_path)
        symbol_json, params = graph_of(net, input_shape)

    # task-marked heads: names that are not in this graph are skipped (the user's -el names are checked)
    nodes = _node_names(symbol_json)
    heads = [n for n in info.prune_exclude if n in nodes or f"{n}_fwd" in nodes]
    excluded = [
        *prune_kwargs({"excluded_layers": options.get("excluded_layers") or ()}).get("excluded_layers", []),
        *heads,
    ]
    result = prune(symbol_json, params, {**options, "input_shape": input_shape, "excluded_layers": excluded})

    meta.update(kind="graph", pruned=True, pruning=result.report.summary(), pruned_from=str(model_path))
    meta.pop("epoch", None)
    card = pruned_card(mf.meta, model_path, result.report)
    meta["card"] = card.to_dict()
    save_model(output_path, ModelFile(meta, result.params, result.symbol_json, None, dict(mf.extra_files)))
    write_card_files(output_path, card)
    return result.report


def pruned_card(parent_meta: dict[str, Any], parent: Path, report: PruneReport) -> Any:
    """The parent's model card with `parent` as the newest lineage entry and the pruning totals; its metrics,
    measurements and training describe the parent (they stay in the lineage entry), not this model."""
    from tlkit.model_card import ModelCard, PruningInfo

    card = ModelCard.from_meta(parent_meta).derived("pruned_from", parent, parent)
    card.pruning = PruningInfo.model_validate(report.summary())
    card.metrics, card.performance, card.training = [], [], None
    return card


def _output_path(ctx: CommandContext, model: Path) -> Path:
    if ctx.output is not None:
        out = Path(ctx.output)
        return out if out.suffix else out.with_suffix(".tlk")
    if ctx.results_dir is not None:
        return Path(ctx.results_dir) / f"{model.stem}_pruned.tlk"
    raise TlkitError(f"tlkit {ctx.task} prune: -o/--output (the pruned model file) is required")


def _mb(path: Path) -> float:
    return path.stat().st_size / (1024 * 1024)


def run(ctx: CommandContext) -> None:
    """The generic `tlkit <task> prune` command (options: tlkit.cli.options.PRUNE_OPTIONS)."""
    if ctx.model is None:
        raise TlkitError(f"tlkit {ctx.task} prune: -m/--model (the model file to prune) is required")
    model = Path(ctx.model)
    output = _output_path(ctx, model)
    status = None
    if ctx.results_dir is not None:
        from tlkit.training.status import StatusLogger

        status = StatusLogger(ctx.results_dir)
        status.write("STARTED", f"Pruning {model}")
    try:
        report = prune_model_file(model, output, **ctx.options)  # --pruner arrives as the `pruner` keyword
    except TlkitError as err:
        if status:
            status.write("FAILURE", str(err), verbosity="ERROR")
        raise

    console = ctx.console
    console.print(report.table(title=f"Pruned layers ({model.name})"))
    console.print(report.summary_line())
    size_before, size_after = _mb(model), _mb(output)
    console.print(f"Parameters: {report.params_before:,} -> {report.params_after:,}")
    console.print(f"File size: {size_before:.2f} MB -> {size_after:.2f} MB")
    console.print(f"FLOPs (batch 1): {report.flops_before / 1e9:.3f} G -> {report.flops_after / 1e9:.3f} G")
    console.print(f"Threshold: {report.threshold:.6g}")
    from tlkit.pruning.graph import floored_count

    opts = report.options
    floors = {
        r.node: floored_count(
            0,
            r.channels_before,
            int(opts.get("granularity", 1)),
            int(opts.get("min_filters", 0)),
            float(opts.get("min_channel_ratio", 0.0)),
        )
        for r in report.layers
    }
    prunable = [r for r in report.layers if not r.excluded and r.channels_before > floors[r.node]]
    if prunable and all(r.channels_after <= floors[r.node] for r in prunable):
        kept = sorted({floors[r.node] for r in prunable})
        minimum = (
            f"{kept[0]} filters"
            if len(kept) == 1
            else f"floor (-nf / --min_channel_ratio: {kept[0]}-{kept[-1]} filters)"
        )
        console.print(
            f"[yellow]warning:[/] every prunable layer ({len(prunable)}) was cut to its minimum of {minimum} "
            f"(threshold {report.threshold:.6g}): expect a large accuracy loss; lower -pth or use --target_ratio"
        )
    if report.params_after == report.params_before:
        console.print(
            "No filter was removed: every normalized filter norm is above the threshold (or its layer is "
            "excluded). Raise -pth, or ask for a size with --target_ratio."
        )
    if ctx.spec is not None and ctx.spec_path is not None:  # -e: batch-norm statistics measured on the training data
        from tlkit.training.retrain import reestimate_model_file

        work = Path(ctx.results_dir) if ctx.results_dir is not None else output.parent
        reestimate_model_file(ctx.task, ctx.spec, output, work / f"{output.stem}_bn", console, ctx.contexts())
        console.print(f"batch-norm statistics of {output} re-estimated on the spec's training data")
    csv_dir = Path(ctx.results_dir) if ctx.results_dir is not None else output.parent
    csv_path = csv_dir / f"{output.stem}_pruning.csv"
    report.to_csv(csv_path)
    console.print(f"Pruned model: {output}\nPer-layer report: {csv_path}")
    if status:
        status.write(
            "SUCCESS",
            "Pruning finished successfully.",
            kpi={"pruning_ratio": report.ratio, "size": size_after, "param_count": report.params_after},
        )


def prune_symbol(symbol_json: str, params: dict[str, Any], options: dict[str, Any]) -> Any:
    """Core's `l2` pruner (the PrunerSpec entry point): `prune_graph` with `options` given as PRUNE_OPTIONS names
    (or prune_graph keywords) plus ``input_shape`` (C, H, W). Returns its PruneResult."""
    from tlkit.pruning.graph import prune_graph

    if "input_shape" not in options:
        raise TlkitError("pruning a graph needs options['input_shape'] = (C, H, W)")
    input_shape = tuple(int(v) for v in options["input_shape"])
    return prune_graph(symbol_json, params, input_shape=input_shape, **prune_kwargs(options))


def prune_net(net: Any, options: dict[str, Any]) -> tuple[Any, PruneReport]:
    """Prune an initialised Gluon network with core's pruner; returns (SymbolBlock, report).

    `options` needs ``input_shape`` (C, H, W) and takes prune_graph keywords or PRUNE_OPTIONS names.
    """
    from tlkit.model_io import graph_of, symbol_block

    if "input_shape" not in options:
        raise TlkitError("pruning a network needs options['input_shape'] = (C, H, W)")
    result = prune_symbol(*graph_of(net, tuple(int(v) for v in options["input_shape"])), options)
    return symbol_block(result.symbol_json, result.params), result.report
