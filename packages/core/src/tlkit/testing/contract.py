"""Conformance checks every plugin package runs in its own tests (one call each).

from tlkit.testing.contract import check_plugin_module_is_light, check_task_contract

def test_plugin_is_light():
    check_plugin_module_is_light("tlkit_classification.plugin")

def test_task_contract():
    check_task_contract("classification")
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY_MODULES = ("mxnet", "gluoncv", "onnxruntime", "tensorrt", "cv2")


def check_plugin_module_is_light(module: str) -> None:
    """Importing the entry-point module (and calling its registration hooks) must not import heavy libraries,
    so `tlkit --help` stays fast."""
    code = (
        "import importlib, json, sys\n"
        f"m = importlib.import_module({module!r})\n"
        "for name in dir(m):\n"
        "    if name.startswith('tlkit_register_') and name != 'tlkit_register_commands':\n"
        "        list(getattr(m, name)() or ())\n"
        f"print(json.dumps([h for h in {HEAVY_MODULES!r} if h in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert heavy == [], f"importing {module} imported {heavy}; import them inside the command functions instead"


def check_task_contract(task_name: str) -> None:
    """The task is registered, its spec model derives from TaskConfig, its default spec validates, every command's
    run target resolves, and its option names are unique and do not shadow the common flags."""
    import tempfile
    from pathlib import Path

    from tlkit.cli.app import _COMMON
    from tlkit.cli.spec_cmd import default_spec_text
    from tlkit.config import TaskConfig, load_spec
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    task = get_registry().task(task_name)
    model = resolve(task.config_model)
    assert issubclass(model, TaskConfig), f"{task_name}: config_model must derive from tlkit.config.TaskConfig"
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "default.yaml"
        p.write_text(default_spec_text(task_name))
        assert load_spec(p, model) == model(), "the default spec must validate and equal the model's defaults"
    names = [c.name for c in task.commands]
    assert len(names) == len(set(names)), f"duplicate command names: {names}"
    common_flags = {f for _, _, flags, _ in _COMMON for f in flags} | {"--use_amp"}
    for cmd in task.commands:
        assert callable(resolve(cmd.run)), f"{task_name} {cmd.name}: run target {cmd.run!r} is not callable"
        opt_names = [o.name for o in cmd.options]
        assert len(opt_names) == len(set(opt_names)), f"{cmd.name}: duplicate option names {opt_names}"
        flags = [f for o in cmd.options for f in o.flags]
        assert len(flags) == len(set(flags)), f"{cmd.name}: duplicate flags {flags}"
        clash = common_flags & set(flags)
        assert not clash, f"{cmd.name}: options {clash} shadow the common flags"
