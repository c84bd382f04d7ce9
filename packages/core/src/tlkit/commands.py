"""The generic commands core runs for every task, as ready CommandSpecs (so every task spells and
behaves the same: TLT's flags, no spec and no results dir required).

    from tlkit.commands import compress_command, export_command, prune_command

    TaskSpec(..., commands=(..., prune_command(), compress_command(), export_command()))

Light module: no MXNet import.
"""

from __future__ import annotations

from typing import Any

from tlkit.cli.options import COMPRESS_OPTIONS, EXPORT_OPTIONS, PRUNE_OPTIONS
from tlkit.types import CommandSpec, Stage


def prune_command(
    help: str = "Structured channel pruning (TLT flags); retrain the result with load_graph: true.", **fields: Any
) -> CommandSpec:
    """`<task> prune -m MODEL -o OUT [--pruner NAME -pth -pg -nf -n -eq -el --target_ratio] [-r DIR]`: the registered
    pruner NAME (default core's `l2`) prunes the model file's graph."""
    base = dict(
        name="prune",
        run="tlkit.pruning.command:run",
        help=help,
        options=PRUNE_OPTIONS,
        needs_spec=False,
        needs_results_dir=False,
        stage=Stage.PRUNE,
    )
    return CommandSpec(**{**base, **fields})


def compress_command(
    help: str = "Prune in steps, retrain each (BN re-estimation, distillation), keep the smallest model "
    "within --max_accuracy_drop of the trained one.",
    **fields: Any,
) -> CommandSpec:
    """`<task> compress -e SPEC -m MODEL -r DIR [--max_accuracy_drop 1.0 --target_ratio 0.1 --steps 3 ...]`: needs the
    task's TaskSpec.train_job."""
    base = dict(
        name="compress",
        run="tlkit.compress:run",
        help=help,
        options=COMPRESS_OPTIONS,
        needs_spec=True,
        needs_results_dir=True,
        stage=Stage.PRUNE,
    )
    return CommandSpec(**{**base, **fields})


def export_command(
    help: str = "Export to ONNX (plus int8 Q/DQ, TensorRT cache, DeepStream and Triton configs).", **fields: Any
) -> CommandSpec:
    """`<task> export -m MODEL -o OUT.onnx [--format NAME --data_type ... --gen_ds_config --gen_triton_repo DIR] [-r DIR]`:
    the registered exporter NAME (default `onnx`) writes the output."""
    base = dict(
        name="export",
        run="tlkit.export.command:run",
        help=help,
        options=EXPORT_OPTIONS,
        needs_spec=False,
        needs_results_dir=False,
        stage=Stage.EXPORT,
    )
    return CommandSpec(**{**base, **fields})
