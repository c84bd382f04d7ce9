"""`make_context`: the `CommandContext` the CLI would build, for tests that call a command's `run(ctx)` in-process.

from tlkit.testing import make_context

out = run(make_context("classification", "inference", model=model, results_dir=tmp_path, options={"image_dir": d}))
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from tlkit.context import CommandContext
from tlkit.types import CommandSpec


def make_context(
    task: str,
    command: str,
    *,
    spec: Any = None,
    spec_path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    options: Mapping[str, Any] | None = None,
    command_spec: CommandSpec | None = None,
    console: Console | None = None,
    **fields: Any,
) -> CommandContext:
    """A context for `tlkit <task> <command>` as the CLI builds it.

    - options: `options` completed with the command's OptionSpec defaults and checked like the CLI checks them
      (choices, bounds; "a,b" splits for multiple-value options), with the OptionSpecs attached so that
      `ctx.option(name)` answers for any of them;
    - spec: a TaskConfig as given (with `spec_path`, the file it stands for: what a command given -e sees); a
      path is read (YAML or TLT's format) with `overrides`, as `-e` is; None is the task's default spec with
      `overrides`, as the CLI gives without -e (None stays None where the task is not installed, e.g. core's own
      tests with an explicit `command_spec`);
    - the command: the installed task's, or `command_spec`;
    - console: one 120 columns wide (rich's 80 would wrap tables), printing to stdout;
    - `fields`: any other CommandContext field (model, output, results_dir, gpus, ...).
    """
    from tlkit.cli.app import check_options
    from tlkit.cli.options import with_defaults
    from tlkit.config import load_spec
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    registry = get_registry()
    task_spec = registry.tasks().get(task)
    if command_spec is None:
        if task_spec is None:
            task_spec = registry.task(task)  # the registry's error: did you mean, the installed tasks
        command_spec = next((c for c in task_spec.commands if c.name == command), None)
        if command_spec is None:
            raise KeyError(f"task {task!r} has no command {command!r}: {', '.join(c.name for c in task_spec.commands)}")
    values = with_defaults(command_spec.options, options or {})
    check_options(command_spec.options, values)
    if isinstance(spec, (str, os.PathLike)):
        spec_path = spec
        spec = load_spec(Path(spec), resolve(registry.task(task).config_model), list(overrides))
    elif spec is None and task_spec is not None:
        spec = load_spec(None, resolve(task_spec.config_model), list(overrides))
    return CommandContext(
        task=task,
        command=command,
        spec=spec,
        spec_path=Path(spec_path) if spec_path is not None else None,
        overrides=list(overrides),
        options=values,
        option_specs=command_spec.options,
        console=console if console is not None else Console(width=120, highlight=False),
        **fields,
    )
