"""The plugin contract: every hook a tlkit plugin can implement, in one module.

A plugin is a module (or object) with functions decorated by `tlkit.hookimpl` whose names match the
specs below, exposed through the entry-point group ``tlkit.plugins``::

    # pyproject.toml of a plugin distribution
    [project.entry-points."tlkit.plugins"]
    myplugin = "my_package.plugin"

    # my_package/plugin.py
    from tlkit import hookimpl
    from tlkit.types import ArchitectureSpec

    @hookimpl
    def tlkit_register_architectures():
        yield ArchitectureSpec(name="tinynet", build="my_package.nets:build_tinynet")

Registration hooks (``tlkit_register_*``) are called once; the core collects what every plugin returns,
rejects two plugins that register the same name (naming both), and answers "did you mean" for unknown
names. Only `tlkit_resolve_pretrained` is ``firstresult`` ("stops at first non-None result").

Evolution policy:
1. Adding an argument to a hook is non-breaking (pluggy: implementations may accept fewer arguments).
2. Arguments are never removed or renamed within a minor series (0.x) / major series (>= 1.0).
3. New hooks are marked ``versionadded``.
4. The records in `tlkit.types` only gain fields with defaults.

The core itself registers its built-ins (ONNX exporter, onnxruntime backend, pruner, backbones, weight
formats) through these same hooks, from `tlkit._builtin`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlkit.markers import hookspec

if TYPE_CHECKING:
    import typer

    from tlkit.types import (
        ArchitectureSpec,
        DatasetFormatSpec,
        EngineBackendSpec,
        ExporterSpec,
        PrunerSpec,
        Stage,
        StageResult,
        TaskSpec,
        WeightFormatSpec,
    )


@hookspec
def tlkit_register_tasks() -> Iterable[TaskSpec]:
    """Register tasks: each becomes `tlkit <task.name> <command>`.

    Returns:
        TaskSpec records (spec model, default spec, commands).

    Example::

        @hookimpl
        def tlkit_register_tasks():
            yield TaskSpec(name="classification", summary="...", config_model="pkg.config:Cfg",
                           commands=(CommandSpec("train", run="pkg.train:run"),))

    .. versionadded:: 0.1
    """
    return ()


@hookspec
def tlkit_register_dataset_formats() -> Iterable[DatasetFormatSpec]:
    """Register dataset formats a task's `dataset_convert` can read (`kitti`, `voc`, `coco`, ...), picked by
    `--input_format NAME`: `load(source: Path, options: dict) -> the task's samples` (see `DatasetFormatSpec`).

    Example::

        @hookimpl
        def tlkit_register_dataset_formats():
            yield DatasetFormatSpec(name="kitti", task="detection", load="pkg.kitti:load")

    .. versionadded:: 0.1
    """
    return ()


@hookspec
def tlkit_register_architectures() -> Iterable[ArchitectureSpec]:
    """Register architectures: backbones (task=None) every task can use, or task-specific models.

    This is the hook a third-party architecture package implements; it needs only `tlkit-core`.

    Example::

        @hookimpl
        def tlkit_register_architectures():
            yield ArchitectureSpec(name="tinynet", build="pkg.nets:tinynet")

    .. versionadded:: 0.1
    """
    return ()


@hookspec
def tlkit_register_weight_formats() -> Iterable[WeightFormatSpec]:
    """Register pretrained-weight file formats (core ships tlkit checkpoints, MXNet .params, PyTorch .pth).

    Example::

        @hookimpl
        def tlkit_register_weight_formats():
            yield WeightFormatSpec(name="npz", sniff="pkg.w:is_npz", load="pkg.w:load_npz")

    .. versionadded:: 0.1
    """
    return ()


@hookspec(firstresult=True)
def tlkit_resolve_pretrained(uri: str, cache_dir: Path) -> Path | None:
    """Turn a pretrained-model reference (a path, `gluoncv://resnet18_v1`, `https://...`) into a local file.

    Stops at first non-None result. The core's local-path resolver is registered first, so by pluggy's
    LIFO order plugins are asked before it.

    Args:
        uri: what the user wrote in `pretrained_model_path`.
        cache_dir: where downloaded files may be cached.

    Returns:
        A local path, or None if this plugin does not handle `uri`.

    Example::

        @hookimpl
        def tlkit_resolve_pretrained(uri, cache_dir):
            if uri.startswith("s3://"):
                return download(uri, cache_dir)

    .. versionadded:: 0.1
    """


@hookspec
def tlkit_register_pruners() -> Iterable[PrunerSpec]:
    """Register pruning methods, run by `<task> prune --pruner NAME` (core ships TLT-style structured L2 channel
    pruning as `l2`, the default): `prune(symbol_json, params, options) -> result` (see `PrunerSpec`).

    Example::

        @hookimpl
        def tlkit_register_pruners():
            yield PrunerSpec(name="random", prune="pkg.prune:random_prune")

    .. versionadded:: 0.1
    """
    return ()


@hookspec
def tlkit_register_exporters() -> Iterable[ExporterSpec]:
    """Register exporters, run by `<task> export --format NAME` (core ships `onnx`, the default):
    `export(model: Path, output: Path, options: dict) -> Path` (see `ExporterSpec`).

    Example::

        @hookimpl
        def tlkit_register_exporters():
            yield ExporterSpec(name="tflite", export="pkg.export:to_tflite", suffix=".tflite")

    .. versionadded:: 0.1
    """
    return ()


@hookspec
def tlkit_register_engine_backends() -> Iterable[EngineBackendSpec]:
    """Register inference engine backends (core ships `onnxruntime`; tlkit-tensorrt adds `tensorrt`).

    Example::

        @hookimpl
        def tlkit_register_engine_backends():
            yield EngineBackendSpec(name="tensorrt", available="pkg.trt:why_unavailable",
                                    load="pkg.trt:load_engine", suffixes=(".engine", ".plan"))

    .. versionadded:: 0.1
    """
    return ()


@hookspec
def tlkit_on_stage_start(stage: Stage, task: str, context: Any) -> None:
    """Called before a stage runs (loggers, experiment trackers).

    Args:
        stage: which stage.
        task: the task name.
        context: the `tlkit.context.CommandContext` (spec, results_dir, options).

    .. versionadded:: 0.1
    """


@hookspec
def tlkit_on_stage_end(stage: Stage, task: str, context: Any, result: StageResult) -> None:
    """Called after a stage ends, successfully or not (`result.ok`, `result.error`).

    `result.outputs` is the command's result as a dict; every task's evaluate gives the same shape,
    `tlkit.types.EvaluationResult.to_dict()`: {"kpi": {name: number}, "artifacts": {name: path}, "metrics": {...}}.

    .. versionadded:: 0.1
    """


@hookspec
def tlkit_register_commands(app: typer.Typer) -> None:
    """Add extra top-level CLI commands: call `app.command(...)` or `app.add_typer(...)` (typer only).

    Example::

        @hookimpl
        def tlkit_register_commands(app):
            @app.command("hello")
            def hello():
                print("hi")

    .. versionadded:: 0.1
    """
