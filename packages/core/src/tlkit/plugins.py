"""Plugin discovery: entry points in the group ``tlkit.plugins``, loaded one by one, fault-tolerantly.

A plugin that fails to import, implements a hook that does not exist (a misspelling), or declares a
`tlkit-core` range that excludes the installed core is skipped with ONE warning line on stderr and listed
as failed (with the reason) by `tlkit plugins`. Environment switches (read before argv is parsed, since
the command tree depends on plugins):

- ``TLKIT_STRICT_PLUGINS=1``: any such problem is fatal (for plugin development and CI).
- ``TLKIT_DISABLE_PLUGINS=a,b``: skip the named plugins (entry-point names).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from importlib.metadata import Distribution, distributions
from typing import Any

import pluggy
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import Version

from tlkit import __version__ as CORE_VERSION
from tlkit import hookspecs
from tlkit.errors import PluginError
from tlkit.markers import ENTRY_POINT_GROUP, PROJECT_NAME

CORE_DISTRIBUTION = "tlkit-core"
BUILTIN_NAME = "core"
_HOOK_PREFIX = "tlkit_"


@dataclass
class LoadedPlugin:
    name: str
    distribution: str
    version: str
    module: str
    plugin: Any = None
    error: str | None = None
    disabled: bool = False


def _env_list(var: str) -> set[str]:
    return {x.strip() for x in os.environ.get(var, "").split(",") if x.strip()}


def strict_mode() -> bool:
    return os.environ.get("TLKIT_STRICT_PLUGINS", "").strip().lower() in {"1", "true", "yes", "on"}


def core_conflict(dist: Distribution) -> str | None:
    """The reason `dist` cannot work with the installed core, read from its own Requires-Dist."""
    for raw in dist.requires or ():
        try:
            req = Requirement(raw)
        except InvalidRequirement:
            continue
        if req.name.lower().replace("_", "-") != CORE_DISTRIBUTION:
            continue
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        if req.specifier and not req.specifier.contains(Version(CORE_VERSION), prereleases=True):
            return f"requires {CORE_DISTRIBUTION}{req.specifier}, installed {CORE_VERSION}"
    return None


def _unknown_hooks(plugin: Any) -> list[str]:
    """tlkit_* attributes marked as hook implementations that match no hook spec (typos)."""
    known = {n for n in dir(hookspecs) if n.startswith(_HOOK_PREFIX)}
    bad = []
    for attr in dir(plugin):
        if attr.startswith(_HOOK_PREFIX) and attr not in known:
            fn = getattr(plugin, attr, None)
            if callable(fn) and hasattr(fn, PROJECT_NAME + "_impl"):
                bad.append(attr)
    return bad


def _register(pm: pluggy.PluginManager, plugin: Any, name: str) -> None:
    unknown = _unknown_hooks(plugin)
    if unknown:
        raise pluggy.PluginValidationError(plugin, f"unknown hook {unknown[0]!r} (no such hook in tlkit.hookspecs)")
    pm.register(plugin, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        pm.unregister(name=name)
        raise


def make_plugin_manager(*, entry_points: bool = True) -> tuple[pluggy.PluginManager, list[LoadedPlugin]]:
    """A plugin manager with core's built-ins and every installed, enabled, compatible plugin."""
    from tlkit import _builtin

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    strict = strict_mode()
    disabled = _env_list("TLKIT_DISABLE_PLUGINS") - {BUILTIN_NAME}
    loaded = [LoadedPlugin(BUILTIN_NAME, CORE_DISTRIBUTION, CORE_VERSION, _builtin.__name__, _builtin)]
    pm.register(_builtin, name=BUILTIN_NAME)
    if not entry_points:
        return pm, loaded

    seen: set[str] = {BUILTIN_NAME}
    for dist in sorted(distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        for ep in dist.entry_points:
            if ep.group != ENTRY_POINT_GROUP or ep.name in seen:
                continue
            seen.add(ep.name)
            dist_name = dist.metadata["Name"] or "?"
            rec = LoadedPlugin(ep.name, dist_name, dist.version, ep.value)
            loaded.append(rec)
            if ep.name in disabled:
                rec.disabled = True
                continue
            rec.error = core_conflict(dist)
            if rec.error is None:
                try:
                    rec.plugin = ep.load()
                    _register(pm, rec.plugin, ep.name)
                except Exception as err:  # one broken plugin must cost one warning, not the CLI
                    if strict:
                        raise PluginError(
                            f"plugin {ep.name!r} ({dist_name} {dist.version}) failed to load: "
                            f"{type(err).__name__}: {err}"
                        ) from err
                    rec.plugin = None
                    rec.error = f"{type(err).__name__}: {err}"
            elif strict:
                raise PluginError(f"plugin {ep.name!r} ({dist_name} {dist.version}): {rec.error}")
            if rec.error:
                print(
                    f"warning: plugin {ep.name!r} ({dist_name} {dist.version}) not loaded: {rec.error}",
                    file=sys.stderr,
                )
    return pm, loaded
