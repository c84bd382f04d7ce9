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
