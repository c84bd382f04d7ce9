"""Checks shared by the tasks' tests of TLT spec files: `spec import` round trips, outputs of commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel


def fields_set(m: Any) -> Any:
    """The keys a spec set explicitly, recursively (what `validation_period_during_training`-style checks read)."""
    if isinstance(m, BaseModel):
        return {k: fields_set(getattr(m, k)) for k in sorted(m.model_fields_set)}
    if isinstance(m, dict):
        return {k: fields_set(v) for k, v in m.items()}
    if isinstance(m, list):
        return [fields_set(v) for v in m]
    return None


def import_round_trip(
    path: Path, model: type[BaseModel], out: Path, overrides: list[str] | None = None
) -> tuple[Any, Any, str]:
    """Load `path`, write what `tlkit spec import` writes to `out`, load that: (loaded, reloaded, yaml text).

    Asserts that both validate to the same spec, with the same keys set explicitly."""
    from tlkit.config import read_spec
    from tlkit.spec_aliases import import_yaml

    loaded = read_spec(path, model, overrides)
    text = import_yaml(loaded.resolved, model, f"imported from {path.name}")
    out.write_text(text)
    again = read_spec(out, model)
    assert again.format == "yaml" and not again.resolved.ignored, again.resolved.ignored
    assert again.config.model_dump() == loaded.config.model_dump()
    assert fields_set(again.config) == fields_set(loaded.config)
    return loaded, again, text


def files_under(root: Path) -> set[str]:
    """Every file below `root` (relative paths): what a command wrote."""
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
