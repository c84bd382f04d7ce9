"""Experiment specs: YAML files validated by pydantic models.

Each task declares a model deriving from `TaskConfig`; the shared sections (`train_config`: optimizer,
batch size, epochs, learning-rate schedule, regularizer, seed, checkpoints, validation, early stopping)
live here so every task spells them the same. Unknown or misspelled keys are rejected with a suggestion,
and every error names the key path and the line in the file::

    spec.yaml:7: train_config.optimizer.lrate: unknown key (did you mean 'lr'?)

`key=value` overrides on the command line (`train_config.n_epochs=3`) are applied before validation and
reported as `override 'train_config.n_epochs=3'` when they are wrong.
"""

from __future__ import annotations

import copy
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tlkit.errors import SpecError, did_you_mean
from tlkit.io import atomic_write_text

SpecT = TypeVar("SpecT", bound=BaseModel)  # load_spec returns an instance of the model it is given


class SpecModel(BaseModel):
    """Base of every spec section: unknown keys are errors, values are validated on assignment."""

    # populate_by_name/serialize_by_alias: a task may spell a section `model_config` in YAML (pydantic reserves
    # that attribute) by declaring `model: ModelConfig = Field(..., alias="model_config")`.
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        protected_namespaces=(),
        populate_by_name=True,
        serialize_by_alias=True,
    )
    # TLT's key names for this spec (tlkit.spec_aliases.AliasTable), resolved by `read_spec`; None = none
    tlt_aliases: ClassVar[Any] = None


# -- shared training sections -------------------------------------------------------------------------


class OptimizerConfig(SpecModel):
    """Optimizer; the learning rate itself comes from `lr_config`."""

    type: Literal["sgd", "adam", "rmsprop"] = Field("sgd", description="sgd, adam or rmsprop")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    nesterov: bool = Field(False, description="SGD Nesterov momentum")
    beta1: float = Field(0.9, ge=0, lt=1, description="Adam beta1")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    epsilon: float = Field(1e-8, gt=0, description="Adam/RMSprop epsilon")
    rho: float = Field(0.9, ge=0, lt=1, description="RMSprop decay (gamma1)")


class LRConfig(SpecModel):
    """Learning-rate schedule, stepped every iteration.

    - constant: `learning_rate` throughout.
    - step: multiply by `gamma` every `step_size` epochs.
    - exponential: multiply by `gamma` per `step_size` epochs, continuously (TLT classification's `step`
      schedule: lr = learning_rate * gamma ** (epochs done / step_size)).
    - cosine: cosine decay from `learning_rate` to `learning_rate * min_lr_ratio`, after `warmup_epochs`.
    - soft_anneal (TLT classification): linear warm-up over `soft_start` of training, then divide by
      `annealing_divider` at each of `annealing_points` (fractions of training).
    - soft_start_annealing (TLT DetectNet_v2): exponential ramp from `min_learning_rate` to
      `learning_rate` over `soft_start`, hold, then exponential decay back to `min_learning_rate` from
      `annealing` to the end.
    """

    type: Literal["constant", "step", "exponential", "cosine", "soft_anneal", "soft_start_annealing"] = Field(
        "soft_anneal", description="constant, step, exponential, cosine, soft_anneal or soft_start_annealing"
    )
    learning_rate: float = Field(0.01, gt=0, description="base (maximum) learning rate")
    min_learning_rate: float = Field(1e-6, gt=0, description="soft_start_annealing: start/end learning rate")
    soft_start: float = Field(0.1, ge=0, lt=1, description="fraction of training spent warming up")
    annealing: float = Field(0.7, ge=0, le=1, description="soft_start_annealing: fraction where decay starts")
    annealing_points: list[float] = Field(
        default_factory=lambda: [0.33, 0.66, 0.9], description="soft_anneal: fractions of training"
    )
    annealing_divider: float = Field(10.0, gt=0, description="soft_anneal: divide the rate by this at each point")
    step_size: float = Field(10.0, gt=0, description="step, exponential: epochs per decay by gamma")
    gamma: float = Field(0.1, gt=0, description="step, exponential: decay factor")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine: final rate / base rate")
    warmup_epochs: float = Field(0.0, ge=0, description="cosine: linear warm-up epochs")


class RegConfig(SpecModel):
    """Weight regularizer on conv/dense kernels. L1 encourages sparsity, which makes pruning work better."""

    type: Literal["none", "L1", "L2"] = Field("L2", description="none, L1 or L2")
    weight_decay: float = Field(5e-5, ge=0, description="regularization weight")


class EarlyStoppingConfig(SpecModel):
    """Stop when the monitored validation value has not improved for `patience` validations (0 = off)."""

    monitor: str = Field("validation_loss", description="a validation metric name, e.g. validation_accuracy")
    mode: Literal["min", "max"] = Field("min", description="min: lower is better; max: higher is better")
    patience: int = Field(0, ge=0, description="validations without improvement before stopping; 0 = off")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")


class RetrainConfig(SpecModel):
    """Retraining a pruned graph (`load_graph: true`): start where the pruned model is. Only used when load_graph is true.

    Batch-norm statistics are re-estimated on training images, validation runs before the first epoch (raw and
    after the re-estimation), and the spec's learning rates ramp up linearly over `warmup_epochs` (restarting at
    the full rate is what made the demo's pruned model collapse to 0.33 validation accuracy in its first epoch).
    Chosen on sign-language-digits' train/val split (EfficientNet-Lite0, 96 px, parameter ratio 0.1, 8 epochs) and
    the demo's generated data (ratio 0.55, 5 epochs): a lower peak rate was worse on both (lr_scale 0.25: val
    0.952 and 0.942; 1.0 with distillation: >= 0.99), so the peak stays the spec's. Use
    `lr_scale: 1.0, warmup_epochs: 0, bn_reestimation_images: 0` for the plain training schedule.
    """

    bn_reestimation_images: int = Field(
        512,
        ge=0,
        description="re-estimate batch-norm statistics on this many training images before training (0 = off)",
    )
    lr_scale: float = Field(
        1.0,
        gt=0,
        le=1,
        description="the learning rates of lr_config are multiplied by this (lower it for a lightly pruned model)",
    )
    warmup_epochs: float = Field(
        1.0, ge=0, description="linear warm-up from 0 over this many epochs, on top of lr_config's schedule"
    )
    validate_at_start: bool = Field(
        True,
        description="validate before training (raw pruned model, then after the BN re-estimation): the history's epoch-0 rows",
    )


class DistillationConfig(SpecModel):
    """Knowledge distillation: a teacher model (usually the unpruned one) guides the student while it trains.

    loss = (1 - weight) * task loss + weight * distillation loss. The task defines the distillation loss
    (classification: KL divergence of temperature-softened class probabilities, x temperature^2; DetectNet_v2:
    coverage and bbox maps; SSD/YOLOv3: class and box outputs; pose: heatmaps and PAFs). The teacher runs in
    inference mode (no gradients); its time per step is reported.
    """

    teacher: Optional[str] = Field(
        None, description="teacher model file (.tlk, same task and outputs); null = no distillation"
    )
    weight: float = Field(0.5, ge=0, le=1, description="share of the distillation loss in the total loss")
    temperature: float = Field(2.0, gt=0, description="softmax temperature (classification and class scores)")


class TrainConfig(SpecModel):
    """The training loop, shared by every task."""

    batch_size_per_gpu: int = Field(32, ge=1, description="batch size on each device (CPU counts as one)")
    n_epochs: int = Field(10, ge=1, description="number of epochs")
    n_workers: int = Field(2, ge=0, description="data-loader worker processes")
    random_seed: int = Field(42, description="seed for weights init, shuffling and augmentation")
    checkpoint_interval: int = Field(1, ge=1, description="save a resumable checkpoint every N epochs")
    max_checkpoints_to_keep: int = Field(3, ge=1, description="older checkpoints are deleted")
    validation_period: int = Field(1, ge=1, description="validate every N epochs")
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    lr_config: LRConfig = Field(default_factory=LRConfig)
    reg_config: RegConfig = Field(default_factory=RegConfig)
    grad_clip_norm: Optional[float] = Field(None, gt=0, description="clip the global gradient norm; null = off")
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    pretrained_model_path: Optional[str] = Field(
        None,
        description="weights to start from: a .tlk, MXNet .params or PyTorch .pth file, a named set (imagenet), "
        "gluoncv://NAME (GluonCV's model store) or registry://NAME[:VERSION] (the team registry)",
    )
    load_graph: bool = Field(False, description="use the graph of pretrained_model_path (pruned models)")
    retrain_config: RetrainConfig = Field(default_factory=RetrainConfig)
    distillation: DistillationConfig = Field(default_factory=DistillationConfig)
    enable_qat: bool = Field(
        False,
        description="quantization-aware training: int8 fake-quantized weights (per channel) and activations (per "
        "tensor, learned ranges); export --data_type int8 then needs no calibration data",
    )


class TaskConfig(SpecModel):
    """Base of every task's spec. Tasks add model_config, dataset and evaluation sections."""

    train_config: TrainConfig = Field(default_factory=TrainConfig)


# -- loading -----------------------------------------------------------------------------------------------


def _line_map(text: str, where: str = "<spec>") -> dict[tuple, int]:
    """Key path -> 1-based line of that key in the YAML text. A key given twice in one mapping is a SpecError:
    YAML would silently keep the last one."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for k, v in node.value:
                p = path + (k.value,)
                line = k.start_mark.line + 1
                if k.value in seen and k.value != "<<":  # '<<' merge keys may repeat
                    raise SpecError(
                        f"{where}:{line}: {'.'.join(str(x) for x in p)}: duplicate key (first given at line "
                        f"{seen[k.value]}); YAML would keep only the last value, remove one of them"
                    )
                seen[k.value] = line
                lines[p] = line
                walk(v, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                lines[path + (i,)] = v.start_mark.line + 1
                walk(v, path + (i,))

    root = yaml.compose(text)
    if root is not None:
        walk(root, ())
    return lines


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `loc` (for 'did you mean' suggestions)."""
    cur: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in _spec_keys(cur):
            return None
        cur = _unwrap(_spec_keys(cur)[part].annotation)
    return cur if isinstance(cur, type) and issubclass(cur, BaseModel) else None


def _spec_keys(model: type[BaseModel]) -> dict[str, Any]:
    """Key as written in the YAML (the alias, e.g. `model_config`, which pydantic reserves) -> field."""
    return {(f.alias or name): f for name, f in model.model_fields.items()}


def _unwrap(tp: Any) -> Any:
    """Optional[X], list[X], dict[str, X] -> X (the model class, if any)."""
    for arg in typing.get_args(tp) or ():
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return tp


def set_by_path(data: dict, dotted: str, value: Any) -> None:
    from tlkit.spec_aliases import section_at

    keys = dotted.split(".")
    error = lambda i: SpecError(f"override '{dotted}': '{keys[i]}' is a value, not a section")  # noqa: E731
    section_at(data, tuple(keys[:-1]), error)[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    out = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"override {item!r}: expected key=value, e.g. train_config.n_epochs=5")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise SpecError(f"override {item!r}: value is not valid YAML: {err}") from None
        out.append((key.strip(), value))
    return out


def read_spec_text(path: str | Path, what: str = "spec file") -> str:
    """A spec file's text; a missing file, a folder or bytes that are not UTF-8 are a SpecError with the line."""
    p = Path(path)
    if p.is_dir():
        raise SpecError(f"{p}: is a folder; expected a YAML {what}")
    if not p.is_file():
        raise SpecError(f"{p}: {what} not found")
    data = p.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise SpecError(
            f"{p}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}); save the spec as UTF-8"
        ) from None


@dataclass
class SpecSource:
    """A spec file read into a tree: {key: value} nested dicts/lists, and the line of every key path."""

    tree: dict
    lines: dict[tuple, int]
    format: Literal["yaml", "prototext"]
    where: str
    base_dir: Path | None = None


def read_spec_source(path: str | Path, model: type[BaseModel] | None = None) -> SpecSource:
    """Read a spec file: YAML (or JSON), or TLT's protobuf text format, told apart by content. The one place a
    spec file is read: UTF-8 text, keys given twice are errors in both formats.

    `model` (with its TLT alias table) says which protobuf fields are repeated (lists even when given once).
    """
    p = Path(path)
    text, where = read_spec_text(p), str(p)
    if sniff_format(text) == "prototext":
        from tlkit.prototext import parse

        tree, lines = parse(text, where).to_tree(_repeated_fields(model) if model is not None else None, where)
        return SpecSource(tree, lines, "prototext", where, p.parent)
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise SpecError(f"{where}{line}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SpecError(f"{where}:1: expected a mapping of sections at the top level, got {type(data).__name__}")
    return SpecSource(data, _line_map(text, where) if text.strip() else {}, "yaml", where, p.parent)


def sniff_format(text: str) -> Literal["yaml", "prototext"]:
    """protobuf text when it has `name {` blocks, or when it is not YAML but parses as protobuf text."""
    from tlkit.prototext import looks_like_prototext, parse

    if looks_like_prototext(text):
        return "prototext"
    try:
        yaml.safe_load(text)
        return "yaml"
    except yaml.YAMLError:
        try:
            parse(text)
        except SpecError:
            return "yaml"  # report the YAML error
        return "prototext"


def _repeated_fields(model: type[BaseModel] | None):
    """path -> is it a list: the TLT alias table's repeated fields, or a list-typed field of the model."""
    table = getattr(model, "tlt_aliases", None)
    repeated = table.repeated if table is not None else frozenset()

    def is_repeated(pattern: tuple[str, ...]) -> bool:
        if ".".join(pattern) in repeated:
            return True
        ann = _annotation_at(model, pattern) if model is not None else None
        return ann is not None and list in (typing.get_origin(ann), *map(typing.get_origin, typing.get_args(ann)))

    return is_repeated


def _annotation_at(model: type[BaseModel], path: tuple) -> Any:
    """The type annotation of the field at `path` (keys of dict-typed fields skipped), or None."""
    cur: Any = model
    ann = None
    skip = False
    for part in path:
        if skip:
            skip = False
            continue
        if not (isinstance(cur, type) and issubclass(cur, BaseModel)) or part not in _spec_keys(cur):
            return None
        ann = _spec_keys(cur)[part].annotation
        skip = typing.get_origin(ann) is dict
        cur = _unwrap(ann)
    return ann


@dataclass
class LoadedSpec:
    config: Any  # the validated model instance
    resolved: Any  # tlkit.spec_aliases.Resolved: the tree in tlkit's layout, origins, notes, ignored TLT keys
    format: str  # "yaml", "prototext" or "defaults"

    @property
    def warnings(self) -> list[str]:
        return self.resolved.warnings


def read_spec(path: str | Path | None, model: type[BaseModel], overrides: list[str] | None = None) -> LoadedSpec:
    """Read (any format), apply overrides, resolve TLT key names into tlkit's layout and validate.

    Overrides may use tlkit's or TLT's key names; an override beats the file when both set one key.
    """
    from tlkit.spec_aliases import resolve

    src = read_spec_source(path, model) if path is not None else SpecSource({}, {}, "yaml", "<defaults>")
    data = copy.deepcopy(src.tree)
    overridden: dict[tuple, str] = {}
    for key, value in parse_overrides(overrides or []):
        set_by_path(data, key, value)
        overridden[tuple(key.split("."))] = f"{key}={value}"
    table = getattr(model, "tlt_aliases", None)
    resolved = resolve(
        data,
        src.lines,
        table,
        where=src.where,
        overridden=overridden,
        tlt_format=src.format == "prototext",
        base_dir=src.base_dir,
    )
    try:
        cfg = model.model_validate(resolved.data)
    except ValidationError as err:
        raise SpecError(_format_errors(err, model, resolved, src.where)) from None
    return LoadedSpec(cfg, resolved, src.format if path is not None else "defaults")


def load_spec(
    path: str | Path | None,
    model: type[SpecT],
    overrides: list[str] | None = None,
) -> SpecT:
    """Read, override and validate a spec (YAML or TLT protobuf text). `path=None` starts from the defaults.

    TLT keys tlkit does not implement are printed as warnings on stderr.
    """
    loaded = read_spec(path, model, overrides)
    for w in loaded.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return loaded.config


def _format_errors(err: ValidationError, model: type[BaseModel], resolved: Any, where: str) -> str:
    from tlkit.spec_aliases import dotted as dotted_path

    table = getattr(model, "tlt_aliases", None)
    msgs = []
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = dotted_path(loc)
        origin, n = None, 0
        for n in range(len(loc), 0, -1):  # the deepest part of the path we know the source of
            if loc[:n] in resolved.origins:
                origin = resolved.origins[loc[:n]]
                break
        shown = dotted
        if origin is not None and not origin.where.endswith("default"):
            shown = dotted_path((origin.key, *loc[n:]))
        place = origin.where if origin is not None else where
        alias = f" (tlkit: {dotted})" if shown != dotted else ""
        if e["type"] == "extra_forbidden":
            parent = _model_at(model, loc)
            candidates = list(_spec_keys(parent)) if parent else []
            pattern = resolved.source_patterns.get(loc)
            if table is not None and pattern:
                candidates += table.children(pattern[:-1])
            hint = did_you_mean(str(loc[-1]), candidates)
            allowed = f" Allowed keys: {', '.join(_spec_keys(parent))}." if parent else ""
            tlt_keys = table.children(pattern[:-1]) if table is not None and pattern else []
            allowed += f" TLT keys here: {', '.join(tlt_keys)}." if tlt_keys else ""
            msgs.append(f"{place}: {shown}: unknown key{hint}.{allowed}")
        elif e["type"] == "missing":
            msgs.append(f"{place}: {shown}: required key is missing{alias}")
        else:
            msgs.append(f"{place}: {shown}{alias}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(msgs)


def spec_to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True), sort_keys=False, default_flow_style=None)


def resolved_spec_text(cfg: BaseModel) -> str:
    """The fully resolved spec (defaults filled in, overrides applied), as saved beside a run's outputs."""
    return "# Resolved spec written by tlkit: defaults filled in, overrides applied.\n" + spec_to_yaml(cfg)


def save_resolved_spec(cfg: BaseModel, results_dir: str | Path, name: str = "experiment_spec.yaml") -> Path:
    """Save the fully resolved spec into the results dir."""
    out = Path(results_dir) / name
    atomic_write_text(out, resolved_spec_text(cfg))
    return out


# -- default specs and reference docs ------------------------------------------------------------------


def default_spec_yaml(model: type[BaseModel], header: str = "") -> str:
    """A complete default spec with a comment on every key, generated from the model."""
    out = [f"# {line}" if line else "#" for line in header.splitlines()] if header else []
    _emit_yaml(model, model(), 0, out)
    return "\n".join(out) + "\n"


def _emit_yaml(model: type[BaseModel], value: BaseModel, indent: int, out: list[str]) -> None:
    pad = "  " * indent
    for attr, f in model.model_fields.items():
        name = f.alias or attr  # the key as written in YAML
        sub = _unwrap(f.annotation)
        v = getattr(value, attr)
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(v, BaseModel):
            doc = (sub.__doc__ or "").strip().splitlines()
            out.append(f"{pad}{name}:" + (f"  # {doc[0]}" if doc else ""))
            _emit_yaml(sub, v, indent + 1, out)
            continue
        dumped = yaml.safe_dump(
            v if not isinstance(v, BaseModel) else v.model_dump(mode="json"), default_flow_style=True
        ).strip()
        dumped = dumped.removesuffix("\n...").removesuffix("...").strip()
        comment = f"  # {f.description}" if f.description else ""
        out.append(f"{pad}{name}: {dumped}{comment}")


def spec_reference_markdown(model: type[BaseModel], title: str) -> str:
    """Markdown tables of every key (type, default, meaning), generated so the docs never drift."""
    out = [f"## {title}", ""]
    _emit_md(model, model(), "", out)
    return "\n".join(out) + "\n"


def _emit_md(model: type[BaseModel], value: BaseModel, prefix: str, out: list[str]) -> None:
    rows, subs = [], []
    for attr, f in model.model_fields.items():
        name = f.alias or attr  # the key as written in YAML
        sub = _unwrap(f.annotation)
        v = getattr(value, attr)
        if isinstance(sub, type) and issubclass(sub, BaseModel) and isinstance(v, BaseModel):
            subs.append((name, sub, v))
            continue
        tp = str(f.annotation).replace("typing.", "")
        default = yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()
        rows.append(f"| `{prefix}{name}` | `{tp}` | `{default}` | {f.description or ''} |")
    if rows:
        doc = (model.__doc__ or "").strip()
        out += [
            f"### `{prefix.rstrip('.') or '(top level)'}`",
            "",
            doc,
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    for name, sub, v in subs:
        _emit_md(sub, v, f"{prefix}{name}.", out)
