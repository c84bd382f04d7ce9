"""Install plugin distributions into a private directory, for tests of plugin discovery.

Real installs (pip, entry points, dist-info), kept out of the environment: run `tlkit` with
PYTHONPATH=<target> to see them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def install_plugins(sources: list[Path], target: Path) -> Path:
    """`pip install --target` each source tree (no dependencies, no build isolation: works offline)."""
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
           "--no-build-isolation", "--no-index", "--target", str(target), *map(str, sources)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return target


def run_tlkit(args: list[str], pythonpath: Path | None = None, env: dict | None = None, cwd: Path | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `python -m tlkit ARGS` in a subprocess with the given plugin dir on PYTHONPATH."""
    full_env = {**os.environ, **(env or {})}
    if pythonpath is not None:
        full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), full_env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "tlkit", *args], capture_output=True, text=True, env=full_env,
                          cwd=cwd, timeout=timeout)



def plugin(**hooks):
    """An in-process plugin object: each keyword a hook implementation, e.g.
    `plugin(tlkit_register_pruners=lambda: [PrunerSpec("spy", prune=spy)])`."""
    from types import SimpleNamespace

    from tlkit import hookimpl

    return SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def use_plugins(monkeypatch, **plugins):
    """Make the process-wide registry core's built-ins plus `plugins` (name=plugin object or module) for one test
    (`monkeypatch` puts the previous one back); installed plugins are left out. Returns the registry."""
    import tlkit.registry as registry_mod
    from tlkit.plugins import make_plugin_manager

    pm, loaded = make_plugin_manager(entry_points=False)
    for name, obj in plugins.items():
        pm.register(obj, name=name)
    monkeypatch.setattr(registry_mod, "_REGISTRY", registry_mod.Registry(pm, loaded))
    return registry_mod.get_registry()
