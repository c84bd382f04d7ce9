"""Core's own implementations, registered through the same hooks third-party plugins use.

Each hook returns a catalog of light records; the heavy code they name loads on first use.
"""

from __future__ import annotations

from pathlib import Path

from tlkit.markers import hookimpl


@hookimpl
def tlkit_register_architectures():
    from tlkit.backbones.catalog import ARCHITECTURES

    return ARCHITECTURES


@hookimpl
def tlkit_register_weight_formats():
    from tlkit.backbones.catalog import WEIGHT_FORMATS

    return WEIGHT_FORMATS


@hookimpl
def tlkit_register_pruners():
    from tlkit.pruning.catalog import PRUNERS

    return PRUNERS


@hookimpl
def tlkit_register_exporters():
    from tlkit.export.catalog import EXPORTERS

    return EXPORTERS


@hookimpl
def tlkit_register_engine_backends():
    from tlkit.export.catalog import ENGINE_BACKENDS

    return ENGINE_BACKENDS


@hookimpl(trylast=True)
def tlkit_resolve_pretrained(uri: str, cache_dir: Path) -> Path | None:
    """Local files (the last resolver asked). Other schemes are handled by tlkit.weights."""
    p = Path(uri).expanduser()
    return p if p.exists() else None


@hookimpl
def tlkit_on_stage_end(stage, task, context, result):
    """An evaluation's numbers go into the model card beside the evaluated model file (best effort: a model
    in a read-only place is evaluated all the same)."""
    from tlkit.types import Stage

    model = getattr(context, "model", None)
    if stage != Stage.EVALUATE or not result.ok or model is None or Path(model).suffix.lower() not in (".tlk", ".onnx"):
        return
    from tlkit.errors import TlkitError
    from tlkit.model_card import card_paths, record_metrics

    try:
        if record_metrics(model, result.outputs, split="evaluation") is not None:
            context.console.print(f"metrics recorded in {card_paths(model)[0]}")
    except (TlkitError, OSError) as err:
        context.console.print(f"[yellow]warning:[/] model card not updated: {err}")
