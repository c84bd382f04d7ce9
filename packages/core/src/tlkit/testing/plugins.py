"""Plugins in tests: install plugin distributions into a private directory (real installs: pip, entry points,
dist-info, kept out of the environment; run `tlkit` with PYTHONPATH=<target> to see them), or register a plugin
object in this process (`registered_plugin`; `architectures_plugin(spec, ...)` makes one that registers backbones).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def install_plugins(sources: list[Path], target: Path) -> Path:
    """`pip install --target` each source tree (no dependencies, no build isolation: works offline)."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--target",
        str(target),
        *map(str, sources),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return target


def run_tlkit(
    args: list[str],
    pythonpath: Path | None = None,
    env: dict | None = None,
    cwd: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run `python -m tlkit ARGS` in a subprocess with the given plugin dir on PYTHONPATH."""
    full_env = {**os.environ, **(env or {})}
    if pythonpath is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), full_env.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "tlkit", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@contextlib.contextmanager
def registered_plugin(plugin: Any, name: str = "test-plugin", *, entry_points: bool = True) -> Iterator[Any]:
    """Register `plugin` (a module or object with `@hookimpl` functions) in this process, on top of core's
    built-ins and (with `entry_points`) the installed plugins, as if its distribution were installed; yields the
    process-wide registry that `get_registry()` then returns, and restores the previous one on exit."""
    import tlkit.registry as registry_mod
    from tlkit.plugins import LoadedPlugin, _register, make_plugin_manager

    pm, loaded = make_plugin_manager(entry_points=entry_points)
    _register(pm, plugin, name)
    module = getattr(plugin, "__name__", type(plugin).__name__)
    loaded.append(LoadedPlugin(name, "(in-process test plugin)", "0", module, plugin))
    saved = registry_mod._REGISTRY
    registry_mod._REGISTRY = registry_mod.Registry(pm, loaded)
    try:
        yield registry_mod._REGISTRY
    finally:
        registry_mod._REGISTRY = saved


def plugin(**hooks: Any) -> Any:
    """An in-process plugin object for `registered_plugin`: each keyword a hook implementation, e.g.
    `plugin(tlkit_register_pruners=lambda: [PrunerSpec("spy", prune=spy)])`."""
    from types import SimpleNamespace

    from tlkit import hookimpl

    return SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def architectures_plugin(*specs: Any) -> Any:
    """A plugin object whose `tlkit_register_architectures` hook returns `specs` (tlkit.types.ArchitectureSpec):
    a third-party backbone for `registered_plugin(architectures_plugin(ArchitectureSpec("mynet", build=...)))`."""
    return plugin(tlkit_register_architectures=lambda: list(specs))
