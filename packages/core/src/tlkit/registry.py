"""A typed facade over the plugin manager: what is registered, by whom, and lookups with good errors.

`get_registry()` returns the process-wide registry (plugins load once). Tests build their own with
`Registry(pm, loaded)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pluggy

from tlkit.errors import PluginError, UnknownNameError
from tlkit.plugins import LoadedPlugin, make_plugin_manager
from tlkit.types import (
    ArchitectureSpec,
    DatasetFormatSpec,
    EngineBackendSpec,
    ExporterSpec,
    PluginInfo,
    PrunerSpec,
    TaskSpec,
    WeightFormatSpec,
)

T = TypeVar("T")

# Which distribution provides each well-known task, for "tlkit <task>" when it is not installed.
KNOWN_TASK_DISTRIBUTIONS = {
    "classification": "tlkit-classification",
    "detection": "tlkit-detection",
    "pose": "tlkit-pose",
    "tensorrt": "tlkit-tensorrt",
}

_HOOKS = {
    "tasks": "tlkit_register_tasks",
    "architectures": "tlkit_register_architectures",
    "weight_formats": "tlkit_register_weight_formats",
    "dataset_formats": "tlkit_register_dataset_formats",
    "pruners": "tlkit_register_pruners",
    "exporters": "tlkit_register_exporters",
    "engine_backends": "tlkit_register_engine_backends",
}


class Registry:
    def __init__(self, pm: pluggy.PluginManager, loaded: list[LoadedPlugin]):
        self.pm = pm
        self.loaded = loaded
        self._cache: dict[str, dict[Any, Any]] = {}
        self._by_plugin = {p.name: p for p in loaded}

    # -- collection -------------------------------------------------------------------------------
    def _collect(self, kind: str, key: Callable[[Any], Any] = lambda s: s.name) -> dict[Any, Any]:
        """Call every implementation of a registration hook; reject duplicate names naming both."""
        if kind in self._cache:
            return self._cache[kind]
        out: dict[Any, Any] = {}
        hook = getattr(self.pm.hook, _HOOKS[kind])
        for impl in reversed(hook.get_hookimpls()):  # registration order: built-ins first
            plugin_name = self.pm.get_name(impl.plugin) or "?"
            rec = self._by_plugin.get(plugin_name)
            dist = rec.distribution if rec else plugin_name
            for spec in impl.function() or ():
                if hasattr(spec, "distribution") and spec.distribution is None:
                    spec = replace(spec, distribution=dist)
                k = key(spec)
                if k in out:
                    raise PluginError(
                        f"{kind[:-1].replace('_', ' ')} {spec.name!r} is registered twice: by "
                        f"{out[k].distribution} and by {dist}; uninstall one or disable it with "
                        f"TLKIT_DISABLE_PLUGINS"
                    )
                out[k] = spec
        self._cache[kind] = out
        return out

    def tasks(self) -> dict[str, TaskSpec]:
        return self._collect("tasks")

    def architectures(self) -> dict[tuple[str | None, str], ArchitectureSpec]:
        return self._collect("architectures", key=lambda s: (s.task, s.name))

    def weight_formats(self) -> dict[str, WeightFormatSpec]:
        return self._collect("weight_formats")

    def dataset_formats(self) -> dict[tuple[str, str], DatasetFormatSpec]:
        return self._collect("dataset_formats", key=lambda s: (s.task, s.name))

    def pruners(self) -> dict[str, PrunerSpec]:
        return self._collect("pruners")

    def exporters(self) -> dict[str, ExporterSpec]:
        return self._collect("exporters")

    def engine_backends(self) -> dict[str, EngineBackendSpec]:
        return self._collect("engine_backends")

    # -- lookups ----------------------------------------------------------------------------------
    def task(self, name: str) -> TaskSpec:
        tasks = self.tasks()
        if name in tasks:
            return tasks[name]
        hint = ""
        provider = KNOWN_TASK_DISTRIBUTIONS.get(name)
        if provider:
            installed = next((p for p in self.loaded if p.distribution == provider), None)
            if installed is None:
                hint = f"It is provided by {provider}: pip install {provider}"
            elif installed.error or installed.disabled:
                hint = f"{provider} {installed.version} is installed but not loaded: {installed.error or 'disabled by TLKIT_DISABLE_PLUGINS'}"
            else:
                hint = f"{provider} {installed.version} is installed but registers no {name!r} task yet."
        raise UnknownNameError("task", name, tasks, hint)

    def backbone_names(self, task: str | None = None) -> list[str]:
        """Names usable as `arch` for `task`: shared backbones plus the task's own architectures."""
        return sorted({n for (t, n) in self.architectures() if t is None or t == task})

    def architecture(self, name: str, task: str | None = None) -> ArchitectureSpec:
        archs = self.architectures()
        if task is not None and (task, name) in archs:
            return archs[(task, name)]
        if (None, name) in archs:
            return archs[(None, name)]
        raise UnknownNameError("architecture", name, self.backbone_names(task))

    def _named(self, kind: str, name: str) -> Any:
        items = self._collect(kind)
        if name not in items:
            raise UnknownNameError(kind[:-1].replace("_", " "), name, items)
        return items[name]

    def dataset_format(self, task: str, name: str) -> DatasetFormatSpec:
        """The dataset format `name` of `task`; unknown: an error naming the task's installed formats."""
        formats = self.dataset_formats()
        if (task, name) not in formats:
            raise UnknownNameError(f"{task} dataset format", name, [n for (t, n) in formats if t == task])
        return formats[(task, name)]

    def pruner(self, name: str) -> PrunerSpec:
        return self._named("pruners", name)

    def exporter(self, name: str) -> ExporterSpec:
        return self._named("exporters", name)

    def engine_backend(self, name: str) -> EngineBackendSpec:
        return self._named("engine_backends", name)

    # -- reporting --------------------------------------------------------------------------------
    def plugin_infos(self) -> list[PluginInfo]:
        infos = []
        for rec in self.loaded:
            status = "disabled" if rec.disabled else ("failed" if rec.error else "ok")
            info = PluginInfo(rec.name, rec.distribution, rec.version, status, error=rec.error, module=rec.module)
            if rec.plugin is not None and not rec.error:
                for kind, hook_name in _HOOKS.items():
                    fn = getattr(rec.plugin, hook_name, None)
                    if fn is None:
                        continue
                    names = [s.name for s in (fn() or ())]
                    if names:
                        info.registers[kind] = names
                extra = [
                    h
                    for h in (
                        "tlkit_register_commands",
                        "tlkit_on_stage_start",
                        "tlkit_on_stage_end",
                        "tlkit_resolve_pretrained",
                    )
                    if hasattr(rec.plugin, h)
                ]
                if extra:
                    info.registers["hooks"] = extra
            infos.append(info)
        return infos


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry; plugins are discovered on the first call."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = Registry(*make_plugin_manager())
    return _REGISTRY


def reset_registry() -> None:
    """Forget the process-wide registry (tests, or after installing a plugin in-process)."""
    global _REGISTRY
    _REGISTRY = None
