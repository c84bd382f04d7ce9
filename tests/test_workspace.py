"""Cross-package checks, with every package installed in one environment."""

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tlkit import hookspecs
from tlkit.registry import get_registry
from tlkit.testing.contract import check_task_contract
from tlkit.testing.plugins import run_tlkit

ROOT = Path(__file__).resolve().parent.parent
TASKS = sorted(get_registry().tasks())


def test_all_workspace_plugins_load_without_problems():
    r = run_tlkit(["plugins", "--json"])
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    infos = {p["name"]: p for p in json.loads(r.stdout)}
    for name, dist in [
        ("core", "tlkit-core"),
        ("classification", "tlkit-classification"),
        ("detection", "tlkit-detection"),
        ("pose", "tlkit-pose"),
        ("tensorrt", "tlkit-tensorrt"),
    ]:
        assert infos[name]["status"] == "ok" and infos[name]["distribution"] == dist


def test_task_packages_never_import_each_other():
    pkgs = {"tlkit_classification", "tlkit_detection", "tlkit_pose", "tlkit_tensorrt"}
    for src in (ROOT / "packages").glob("*/src/tlkit_*/**/*.py"):
        own = src.relative_to(ROOT / "packages").parts[2]
        for node in ast.walk(ast.parse(src.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            )
            for n in names:
                top = n.split(".")[0]
                assert not (top in pkgs and top != own), f"{src} imports {n}: task packages must not import each other"


@pytest.mark.parametrize("task", TASKS)
def test_task_contract(task):
    check_task_contract(task)


@pytest.mark.parametrize("task", TASKS)
def test_every_task_command_help_fits_80_columns_with_every_flag_whole(task):
    """Rendered as in an 80-column terminal: no line longer, and every flag of every option (the common ones
    and the command's OptionSpecs, aliases included) spelled out whole."""
    import re

    import typer
    from typer.testing import CliRunner

    from tlkit.cli.app import _COMMON, build_app

    app, runner = build_app(), CliRunner()
    commands = get_registry().task(task).commands
    assert set(typer.main.get_command(app).commands[task].commands) == {c.name for c in commands}
    for cmd in commands:
        r = runner.invoke(app, [task, cmd.name, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0, (cmd.name, r.output)
        assert max(map(len, r.output.splitlines())) <= 80, (cmd.name, r.output)
        flags = [f for _, _, fs, _ in _COMMON for f in fs] + [f for o in cmd.options for f in o.flags]
        missing = [f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", r.output)]
        assert not missing, (cmd.name, missing, r.output)


def test_plugins_lists_every_plugin_at_80_columns():
    r = run_tlkit(["plugins"], env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    assert max(map(len, r.stdout.splitlines())) <= 80
    for name, dist in [
        ("core", "tlkit-core"),
        ("classification", "tlkit-classification"),
        ("detection", "tlkit-detection"),
        ("pose", "tlkit-pose"),
        ("tensorrt", "tlkit-tensorrt"),
    ]:
        assert any(line.startswith(f"{name}  {dist} ") and line.endswith("  ok") for line in r.stdout.splitlines())
    assert "    tasks: classification" in r.stdout.splitlines()


def test_spec_reference_doc_is_up_to_date():
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_spec_reference.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_every_hook_is_documented_with_an_example_and_in_the_plugin_guide():
    guide = (ROOT / "docs" / "plugin-guide.md").read_text()
    hooks = [n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("tlkit_")]
    assert len(hooks) >= 10
    for name in hooks:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "versionadded" in doc, name
        assert "Example" in doc or "Stops at first" in doc or name.startswith("tlkit_on_stage"), name
        assert f"`{name}`" in guide, f"docs/plugin-guide.md does not document {name}"


@pytest.mark.parametrize("task", TASKS)
def test_every_command_run_takes_a_typed_command_context(task):
    """`run(ctx: CommandContext)`, so the type checker holds each command's body to the context's fields (the
    annotation is a string: `from __future__ import annotations`, the class imported under TYPE_CHECKING)."""
    from tlkit.lazy import resolve

    for cmd in get_registry().task(task).commands:
        fn = resolve(cmd.run)
        params = list(inspect.signature(fn).parameters.values())
        assert len(params) == 1, f"{task} {cmd.name}: {fn.__module__}.{fn.__name__} takes {params}"
        assert params[0].annotation in ("CommandContext", "tlkit.context.CommandContext"), (
            f"{task} {cmd.name}: {fn.__module__}.{fn.__name__}({params[0]}) is not typed `ctx: CommandContext`"
        )
