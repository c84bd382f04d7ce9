"""The typed, frozen records plugins hand to the core through the registration hooks.

Callables may be given as "module:attr" strings; the core resolves them on first use (`tlkit.lazy`), so a
plugin's entry-point module imports nothing heavy. Evolution rule: fields are only ever added, with
defaults (see `tlkit.hookspecs`).

`ModelMeta`, the record in a model file's meta.json, is defined in `tlkit.model_meta` and importable from here
(loaded on first use: it needs pydantic, which this module's importers should not pay for).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:  # for type checkers; at run time ModelMeta is loaded on first use (__getattr__ below)
    from tlkit.model_meta import ModelMeta  # noqa: F401

Ref = Union[str, Callable[..., Any]]  # a callable, or "module:attr" resolved lazily


class Stage(str, enum.Enum):  # noqa: UP042 (StrEnum would change str(Stage.x), which plugins may print)
    """Stages that fire `tlkit_on_stage_start` / `tlkit_on_stage_end`."""

    DATASET_CONVERT = "dataset_convert"
    TRAIN = "train"
    EVALUATE = "evaluate"
    INFERENCE = "inference"
    PRUNE = "prune"
    EXPORT = "export"
    CALIBRATION = "calibration_tensorfile"
    OTHER = "other"


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option of a task command (TLT flag names where TLT has them).

    `name` is the Python identifier the value arrives under in `CommandContext.options`.
    `type` is one of str, int, float, bool, Path; `multiple=True` takes several values (`-el a b c`
    is written `-el a -el b` or `-el a,b`). `min`/`max` bound a number (inclusive); `special` lists values
    allowed outside them (e.g. -1 = "all"). The CLI refuses anything else with one line naming the flag.
    """

    name: str
    flags: tuple[str, ...]
    type: type = str
    default: Any = None
    help: str = ""
    required: bool = False
    multiple: bool = False
    choices: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    special: tuple[Any, ...] = ()


@dataclass(frozen=True)
class CommandSpec:
    """A `tlkit <task> <name>` command.

    `run(ctx: tlkit.context.CommandContext) -> int | None` does the work. `options` lists the command's
    flags beyond the common ones (-e, -r, -m, -o, -k, --gpus, --gpu_index, --use_amp, key=value);
    `tlkit.cli.options` has the standard sets (PRUNE_OPTIONS, EXPORT_OPTIONS, ...) so every task
    spells them the same. `needs_spec` says whether -e is required. `overrides_option` names an option
    holding a spec file of the command's own (dataset_convert -d): when it is given, the key=value overrides
    are that file's, and the -e spec is read without them.
    """

    name: str
    run: Ref
    help: str = ""
    options: tuple[OptionSpec, ...] = ()
    needs_spec: bool = True
    needs_results_dir: bool = True
    stage: Stage = Stage.OTHER
    overrides_option: str | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A task (`tlkit <name> ...`): its spec model, default spec and commands."""

    name: str
    summary: str
    config_model: Ref  # a pydantic model class (subclass of tlkit.config.TaskConfig)
    commands: tuple[CommandSpec, ...]
    default_spec: Ref | None = None  # callable returning commented YAML text; None = generated
    # build_model(meta: dict) -> an uninitialised gluon HybridBlock, rebuilt from a model file's meta (the dict form
    # of `ModelMeta`, its "build" key; tlkit.model_io.load_net calls it for "gluon" model files of this task).
    build_model: Ref | None = None
    # the model of `dataset_convert -d`'s spec (read like -e: YAML or TLT's format), for `tlkit spec validate/import`
    dataset_spec_model: Ref | None = None
    # train_job(cfg, results_dir, console, ctx_list) -> tlkit.training.TrainJob: what `train` runs, built without
    # running it; `prune -e` (batch-norm re-estimation) and `compress` (prune -> retrain -> validate) use it
    train_job: Ref | None = None
    distribution: str | None = None  # filled in by the registry


@dataclass(frozen=True)
class ArchitectureSpec:
    """A network architecture.

    `task=None`: a backbone every task can put its head on (the usual case). `build(**kwargs)` returns a
    `tlkit.backbones.Backbone` (see that module for the contract: `out_channels`, `out_stride`,
    stride-8/16 taps, freeze-able block names). With `task="detection"` etc., `build` returns a whole
    task model that only that task understands.
    """

    name: str
    build: Ref
    task: str | None = None
    summary: str = ""
    pretrained: tuple[str, ...] = ()  # named pretrained weights it knows (e.g. "imagenet")
    weight_map: Ref | None = None  # callable(name_in_file) -> name_in_net | None, for foreign weights
    distribution: str | None = None


@dataclass(frozen=True)
class WeightFormatSpec:
    """A pretrained-weights file format: `sniff(path) -> bool`, `load(path) -> dict[str, numpy.ndarray]`."""

    name: str
    sniff: Ref
    load: Ref
    summary: str = ""
    distribution: str | None = None


@dataclass(frozen=True)
class DatasetFormatSpec:
    """A dataset format a task reads (`kitti`, `voc`, `coco`, `coco_keypoints`, ...): the task's `dataset_convert`
    picks it by name (`--input_format NAME`, or the spec section / mode that names it) and converts what it reads.

    `load(source: Path, options: dict[str, Any]) -> the task's samples`: `source` is the dataset the user named (a
    folder or a file), `options` the format's settings (the task documents the keys it passes; ignore the
    others). What it returns is the task's sample type, documented by the task (detection: `(list[Sample],
    ConvertReport)` of `tlkit_detection.convert`; classification: `(Iterable[LabeledImage], Counter)` of
    `tlkit_classification.dataset_convert`; pose: a `CocoKeypoints` of `tlkit_pose.coco`); docs/plugin-guide.md.
    """

    name: str
    task: str
    load: Ref
    summary: str = ""
    distribution: str | None = None


@dataclass(frozen=True)
class PrunerSpec:
    """A pruning method, run by `tlkit <task> prune --pruner NAME` (and `compress`).

    `prune(symbol_json: str, params: dict[str, mx.nd.NDArray], options: dict[str, Any]) -> result` prunes an
    MXNet symbol graph (what a model file stores; params named "arg:x" / "aux:x"). `options` holds the prune
    command's flags by OptionSpec name (PRUNE_OPTIONS: `pruning_threshold`, `target_ratio`, ...), `input_shape`
    (C, H, W) and `excluded_layers` (the user's -el names plus the task's heads: layers whose outputs must keep
    their size). `result` has `.symbol_json`, `.params` (same naming) and `.report`, a
    `tlkit.pruning.PruneReport` (the command prints its table and totals): `tlkit.pruning.PruneResult`.
    tasks=None: any task.
    """

    name: str
    prune: Ref
    tasks: frozenset[str] | None = None
    summary: str = ""
    distribution: str | None = None


@dataclass(frozen=True)
class ExporterSpec:
    """An exporter, run by `tlkit <task> export --format NAME` (core ships `onnx`, the default).

    `export(model: Path, output: Path, options: dict[str, Any]) -> Path` writes `model` (a .tlk file) to `output`
    and returns the path written. `options` holds the export command's flags by OptionSpec name (EXPORT_OPTIONS,
    every one present: a flag not given has its default). `suffix` is the ending of the default output name
    (MODEL + suffix without -o). tasks=None: any task. DeepStream / Triton configs are written for ONNX outputs.
    """

    name: str
    export: Ref
    tasks: frozenset[str] | None = None
    summary: str = ""
    distribution: str | None = None
    suffix: str = ""


@dataclass(frozen=True)
class EngineBackendSpec:
    """An inference backend (`onnxruntime`, `tensorrt`, ...).

    `available() -> str | None` returns None when usable, else why not (shown by `tlkit plugins`).
    `suffixes` are the model-file endings it runs; `load(path, **kw)` returns a runner with
    `run(batch: numpy.ndarray) -> list[numpy.ndarray]`, `input_names`, `output_names` and `metadata`.
    `build(onnx_path, output, options) -> Path` is optional (engine compilers).
    """

    name: str
    available: Ref
    load: Ref
    suffixes: tuple[str, ...] = ()
    build: Ref | None = None
    summary: str = ""
    distribution: str | None = None


@dataclass
class PluginInfo:
    """What `tlkit plugins` shows for one plugin."""

    name: str
    distribution: str
    version: str
    status: str  # "ok" | "failed" | "disabled"
    registers: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    module: Optional[str] = None


@dataclass
class StageResult:
    """Passed to `tlkit_on_stage_end`: what a stage produced (`outputs`: the command's result as a dict; an
    evaluate stage's is `EvaluationResult.to_dict()`)."""

    ok: bool
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    results_dir: Path | None = None


@dataclass(frozen=True)
class EvaluationResult:
    """What every task's `evaluate` returns, in one shape, so stage hooks, trackers and model cards read any
    task's numbers the same way.

    `kpi`: the headline numbers by name (the same names and values as status.json's "kpi"); `artifacts`: the
    files the evaluation wrote, by name (empty without -r); `metrics`: everything else it measured, JSON-ready
    (per-class tables, COCO / KITTI results, timings, counts), different per task.
    """

    kpi: dict[str, float]
    artifacts: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kpi": dict(self.kpi), "artifacts": dict(self.artifacts), "metrics": dict(self.metrics)}


def __getattr__(name: str) -> Any:
    if name == "ModelMeta":  # lazily: pydantic is not imported by `import tlkit.types`
        from tlkit.model_meta import ModelMeta

        return ModelMeta
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
