"""`tlkit spec default TASK`, `tlkit spec validate FILE [--task TASK]` and `tlkit spec import TLT_SPEC [-t TASK]`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from tlkit.errors import SpecError

spec_app = typer.Typer(no_args_is_help=True, add_completion=False)

_FORMATS = {"prototext": "TLT protobuf text", "yaml": "YAML"}


def default_spec_text(task_name: str) -> str:
    from tlkit.config import default_spec_yaml
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    task = get_registry().task(task_name)
    if task.default_spec is not None:
        return resolve(task.default_spec)()
    header = (
        f"Default experiment spec for `tlkit {task.name}` (tlkit-core generated it from the spec model).\n"
        f"Every key is optional unless noted; override any key on the command line: key.path=value."
    )
    return default_spec_yaml(resolve(task.config_model), header)


def read_for_some_task(file: Path, task: str | None, overrides: list[str]):
    """(task name, kind, model, LoadedSpec) of the first spec model the file is valid for: each task's (sorted,
    or `task`'s) experiment spec, then its dataset_convert spec. With none accepting it, the error is the one of
    the model it comes closest to (fewest errors)."""
    from tlkit.config import read_spec, read_spec_text
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    registry = get_registry()
    read_spec_text(file)  # a missing or unreadable file is said once, not as "no valid spec for any task"
    names = [task] if task else sorted(registry.tasks())
    if not names:
        raise SpecError("no task plugins are installed, so there is nothing to validate against")
    candidates = [(n, "spec", registry.task(n).config_model) for n in names]
    candidates += [
        (n, "dataset_convert spec", model) for n in names if (model := registry.task(n).dataset_spec_model) is not None
    ]
    errors: dict[str, str] = {}
    for name, kind, ref in candidates:
        model = resolve(ref)
        try:
            return name, kind, model, read_spec(file, model, overrides)
        except SpecError as err:
            errors[f"{name} {kind}"] = str(err)
    best = min(errors, key=lambda n: errors[n].count("\n"))
    if len(errors) == 1:
        raise SpecError(errors[best])
    raise SpecError(
        f"{file} is not a valid spec for {'any installed task' if not task else task}; as a {best}:\n{errors[best]}"
    )


@spec_app.command("default")
def default(task: str = typer.Argument(..., help="Task name, e.g. classification.")) -> None:
    """Print a complete, commented default spec for TASK."""
    typer.echo(default_spec_text(task), nl=False)


@spec_app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="Spec file: tlkit YAML, or a TLT/TAO spec (protobuf text or YAML)."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task the spec is for (default: guess)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Validate FILE; every error names the key path and the line. TLT keys tlkit ignores are warnings."""
    name, kind, _, loaded = read_for_some_task(file, task, list(overrides or []))
    for w in loaded.warnings:
        typer.echo(f"warning: {w}", err=True)
    how = _FORMATS.get(loaded.format, loaded.format)
    tlt = ", TLT key names resolved" if loaded.resolved.tlt else ""
    typer.echo(f"{file}: valid {name} {kind} ({how}{tlt})")


@spec_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="A TLT/TAO spec (protobuf text, or BodyPoseNet YAML)."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task the spec is for (default: guess)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides (TLT or tlkit key names)"),
) -> None:
    """Print FILE as tlkit YAML: each key that TLT names or places differently carries a comment, and the
    TLT keys tlkit ignores are listed at the top. `tlkit spec import tlt.txt -t detection > spec.yaml`."""
    from tlkit.spec_aliases import import_yaml

    name, kind, model, loaded = read_for_some_task(file, task, list(overrides or []))
    for w in loaded.warnings:
        typer.echo(f"warning: {w}", err=True)
    header = (
        f"tlkit {name} {kind} imported from {file} ({_FORMATS.get(loaded.format, loaded.format)}) "
        "by `tlkit spec import`.\n"
        f"Keys not listed take tlkit's defaults"
        + (f" (`tlkit spec default {name}` shows them all)." if kind == "spec" else ".")
    )
    sys.stdout.write(import_yaml(loaded.resolved, model, header))
