"""`tlkit spec default TASK` and `tlkit spec validate FILE [--task TASK]`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from tlkit.errors import SpecError

spec_app = typer.Typer(no_args_is_help=True, add_completion=False)


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


@spec_app.command("default")
def default(task: str = typer.Argument(..., help="Task name, e.g. classification.")) -> None:
    """Print a complete, commented default spec for TASK."""
    typer.echo(default_spec_text(task), nl=False)


@spec_app.command("validate")
def validate(
    file: Path = typer.Argument(..., help="Spec file (YAML)."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task the spec is for (default: guess)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides"),
) -> None:
    """Validate FILE; every error names the key path and the line."""
    from tlkit.config import load_spec
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    registry = get_registry()
    names = [task] if task else sorted(registry.tasks())
    if not names:
        raise SpecError("no task plugins are installed, so there is nothing to validate against")
    errors: dict[str, str] = {}
    for name in names:
        try:
            load_spec(file, resolve(registry.task(name).config_model), list(overrides or []))
        except SpecError as err:
            errors[name] = str(err)
            continue
        typer.echo(f"{file}: valid {name} spec")
        return
    if len(names) == 1:
        raise SpecError(errors[names[0]])
    # no task accepted it: show the errors of the task it is closest to (fewest errors)
    best = min(errors, key=lambda n: errors[n].count("\n"))
    raise SpecError(f"{file} is not a valid spec for any installed task; as a {best} spec:\n{errors[best]}")
