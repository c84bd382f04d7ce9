"""Model cards: one structured, versioned record of what a model is and where it came from (NGC's "model
credentials", done openly).

Every command that writes a model writes its card three ways: in the model (`.tlk` meta.json key "card",
ONNX metadata_props "tlkit" -> "card"), and beside it as `<file>.MODEL_CARD.json` (the card plus the file's
size and sha256, which the model cannot hold about itself) and `<file>.MODEL_CARD.md` (for people).
`tlkit model info FILE` prints it.

    train / retrain -> task, arch, classes, input, datasets, training config, validation metrics, training
                       throughput, lineage (the pretrained weights or the pruned graph it started from)
    prune           -> the parent's card + pruning (ratio, params, FLOPs); metrics cleared (not measured)
    export          -> the parent's card + export (format, data type, opset, batch)
    evaluate -m F   -> F's sidecar card gains the evaluation's numbers (split "evaluation"; core's stage hook)
    model bench F   -> F's sidecar card gains the measured latency/throughput

Lineage is a chain: entry 0 is the direct parent, entry i+1 the parent of entry i; each entry holds the
parent's file reference (path, sha256) and, for tlkit models, the parent's own card without its lineage.

Versioning (`card_version`): fields are only added, with defaults; readers keep fields they do not know
(extra="allow"), so a card written by a newer tlkit survives being read and rewritten by an older one.
A card is meant to become the typed model meta record (`tlkit.types`) later: it has no behaviour beyond
(de)serialising and rendering.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tlkit import __version__
from tlkit.errors import ModelFileError

CARD_VERSION = 1
CARD_MD_SUFFIX = ".MODEL_CARD.md"
CARD_JSON_SUFFIX = ".MODEL_CARD.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class InputInfo(_Record):
    shape: list[int] = Field(description="(C, H, W)")
    layout: str = "NCHW"
    preprocessing: dict[str, Any] = Field(default_factory=dict)


class DatasetInfo(_Record):
    """One dataset a model was trained or validated on."""

    split: str = Field(description="train, validation or test")
    path: Optional[str] = None
    format: Optional[str] = Field(None, description="image_folder, kitti records, coco, ...")
    items: int = Field(0, description="images (frames) in the split")
    count_unit: str = Field("images", description="what class_counts count: images, objects or people")
    class_counts: dict[str, int] = Field(default_factory=dict)
    file_list_sha256: Optional[str] = Field(
        None, description="sha256 of the sorted item list (relative file paths or frame ids), one per line"
    )

    @classmethod
    def from_items(
        cls,
        split: str,
        items: Iterable[str],
        class_counts: dict[str, int],
        *,
        path: Any = None,
        format: str | None = None,
        count_unit: str = "images",
    ) -> DatasetInfo:
        import hashlib

        listed = sorted(str(i) for i in items)
        digest = hashlib.sha256("".join(f"{i}\n" for i in listed).encode()).hexdigest()
        return cls(
            split=split,
            path=None if path is None else str(path),
            format=format,
            items=len(listed),
            count_unit=count_unit,
            class_counts={str(k): int(v) for k, v in class_counts.items()},
            file_list_sha256=digest,
        )


class TrainingInfo(_Record):
    epochs: int = Field(description="epochs completed")
    epochs_planned: int
    batch_size: int = Field(description="images per step, all devices")
    batch_size_per_gpu: int
    devices: list[str]
    optimizer: dict[str, Any]
    lr_schedule: dict[str, Any]
    regularizer: dict[str, Any]
    random_seed: int
    amp: bool = False
    qat: Optional[bool] = Field(None, description="train_config.enable_qat where the spec has it")
    pretrained_model_path: Optional[str] = None
    load_graph: bool = False
    pruning_ratio: Optional[float] = Field(None, description="of the pruned graph this training started from")
    stopped_early: bool = False
    config: dict[str, Any] = Field(default_factory=dict, description="the whole resolved train_config")


class PruningInfo(_Record):
    pruning_ratio: float = Field(description="parameters pruned / original (TLT's ratio)")
    params_before: int
    params_after: int
    flops_before: Optional[int] = None
    flops_after: Optional[int] = None
    threshold: Optional[float] = None
    options: dict[str, Any] = Field(default_factory=dict)


class ExportInfo(_Record):
    format: str = "onnx"
    data_type: str = "fp32"
    opset: Optional[int] = None
    batch: Any = None  # "batch" (dynamic) or a fixed size


class Metric(_Record):
    name: str
    value: float
    split: str = Field(description="train, validation or test")
    measured_on: Optional[str] = Field(None, description="the model file it was measured on")


class Performance(_Record):
    kind: Literal["training", "inference"]
    backend: str
    device: str
    precision: str = "fp32"
    batch: int
    threads: Optional[int] = None
    machine: dict[str, Any] = Field(default_factory=dict)
    throughput: Optional[float] = Field(None, description="images per second")
    latency_ms: Optional[dict[str, float]] = None
    measured: Optional[str] = None


class LineageEntry(_Record):
    relation: Literal["pretrained", "pruned_from", "exported_from"] = Field(
        description="how this model relates to the parent: trained from its weights (incl. retraining a pruned "
        "graph), pruned from it, exported from it"
    )
    ref: str = Field(description="as given: a path, a named set ('imagenet'), gluoncv://..., registry://...")
    path: Optional[str] = None
    sha256: Optional[str] = None
    card: Optional[dict[str, Any]] = Field(None, description="the parent's card without its lineage (tlkit models)")


class FileRef(_Record):
    name: str
    size: int
    sha256: str


class ModelCard(_Record):
    card_version: int = CARD_VERSION
    tlkit_version: str = __version__
    created: str = Field(default_factory=lambda: now_utc())
    task: Optional[str] = None
    arch: Optional[str] = None
    classes: list[str] = Field(default_factory=list)
    input: Optional[InputInfo] = None
    datasets: list[DatasetInfo] = Field(default_factory=list)
    training: Optional[TrainingInfo] = None
    pruning: Optional[PruningInfo] = None
    export: Optional[ExportInfo] = None
    metrics: list[Metric] = Field(default_factory=list)
    performance: list[Performance] = Field(default_factory=list)
    lineage: list[LineageEntry] = Field(default_factory=list)
    file: Optional[FileRef] = Field(None, description="the file this card describes (sidecar JSON and registry only)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, without unset optional sections."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_dict(cls, data: Any, source: str = "card") -> ModelCard:
        if not isinstance(data, dict):
            raise ModelFileError(f"{source}: the model card is a {type(data).__name__}, expected a mapping")
        try:  # a newer card_version validates too: fields are only ever added, and unknown ones are kept
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ModelFileError(f"{source}: model card {where}: {first['msg']}") from None

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ModelCard:
        """The card of a model's meta: its "card" entry, or (older files) what the meta itself says."""
        if isinstance(meta.get("card"), dict):
            return cls.from_dict(meta["card"], "meta.json")
        card = cls(task=meta.get("task"), arch=meta.get("arch"), classes=list(meta.get("classes") or []))
        card.input = _input_of(meta)
        return card

    def derived(self, relation: str, ref: Any, path: str | os.PathLike | None = None) -> ModelCard:
        """A copy for a model made from the one this card describes: lineage gains this model as the parent."""
        parent = self.model_copy(deep=True)
        child = self.model_copy(deep=True)
        child.created, child.tlkit_version, child.file = now_utc(), __version__, None
        child.lineage = [parent_entry(relation, ref, path, parent)] + parent.lineage
        return child

    def to_markdown(self) -> str:
        return render_markdown(self)


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _input_of(meta: dict[str, Any]) -> InputInfo | None:
    shape = meta.get("input_shape")
    if not shape:
        return None
    return InputInfo(
        shape=[int(v) for v in shape],
        layout=meta.get("input_layout", "NCHW"),
        preprocessing=dict(meta.get("preprocessing") or {}),
    )


def parent_entry(
    relation: str, ref: Any, path: str | os.PathLike | None, card: ModelCard | None = None
) -> LineageEntry:
    """A lineage entry for a parent file (hashed when it exists); `card`: the parent's, if it has one."""
    from tlkit.io import file_digest

    p = Path(path) if path is not None else None
    sha = file_digest(p) if p is not None and p.is_file() else None
    summary = None
    if card is not None:
        summary = card.model_dump(mode="json", exclude_none=True, exclude={"lineage", "file"})
    where = None if p is None else str(p.resolve())
    return LineageEntry(relation=relation, ref=str(ref), path=where, sha256=sha, card=summary)


def card_of_parent(path: str | os.PathLike) -> ModelCard | None:
    """The card inside a tlkit model file (.tlk / tlkit-exported .onnx); None for other weight files."""
    p = Path(path)
    try:
        if p.suffix.lower() == ".onnx":
            from tlkit.export.onnx_export import read_onnx_metadata

            md = read_onnx_metadata(p)
            return ModelCard.from_dict(md["card"], str(p)) if isinstance(md.get("card"), dict) else None
        from tlkit.model_io import is_model_file, read_meta

        return ModelCard.from_meta(read_meta(p)) if is_model_file(p) else None
    except ModelFileError:
        return None


# -- building the card of a training run -------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What ran it: CPU model and cores, OS, Python (GPU names come with the device list)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }


def cpu_threads() -> int | None:
    """The CPU threads MXNet/oneDNN use: OMP_NUM_THREADS when set, else every core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() else os.cpu_count()


def training_card(
    meta: dict[str, Any],
    cfg: Any,
    *,
    metrics: dict[str, float],
    history: Sequence[dict],
    epochs: int,
    devices: Sequence[Any],
    use_amp: bool,
    stopped_early: bool,
    datasets: Sequence[DatasetInfo] = (),
    model_file: str = "model.tlk",
) -> ModelCard:
    """The card of a model `tlkit.training.train` just trained (`cfg`: its TrainConfig)."""
    card = ModelCard(
        task=meta.get("task"),
        arch=meta.get("arch"),
        classes=list(meta.get("classes") or []),
        input=_input_of(meta),
        datasets=list(datasets),
    )
    uri = cfg.pretrained_model_path
    parent = _training_parent(uri, meta.get("arch")) if uri else None
    pruning_ratio = None
    if parent is not None:
        card.lineage = [parent[0]] + (parent[1].lineage if parent[1] is not None else [])
        if parent[1] is not None and parent[1].pruning is not None:
            pruning_ratio = parent[1].pruning.pruning_ratio
    card.training = TrainingInfo(
        epochs=epochs,
        epochs_planned=cfg.n_epochs,
        batch_size=cfg.batch_size_per_gpu * max(1, len(devices)),
        batch_size_per_gpu=cfg.batch_size_per_gpu,
        devices=[str(d) for d in devices],
        optimizer=cfg.optimizer.model_dump(mode="json"),
        lr_schedule=cfg.lr_config.model_dump(mode="json"),
        regularizer=cfg.reg_config.model_dump(mode="json"),
        random_seed=cfg.random_seed,
        amp=bool(use_amp),
        qat=getattr(cfg, "enable_qat", None),  # TLT's training_config.enable_qat, when this spec has the key
        pretrained_model_path=uri,
        load_graph=bool(cfg.load_graph),
        pruning_ratio=pruning_ratio,
        stopped_early=bool(stopped_early),
        config=cfg.model_dump(mode="json"),
    )
    for name, value in metrics.items():
        split = "train" if name == "loss" else "validation"
        card.metrics.append(Metric(name=name, value=float(value), split=split, measured_on=model_file))
    speeds = [float(r["throughput"]) for r in history if r.get("throughput")]
    if speeds:
        gpu = any(getattr(d, "device_type", "cpu") == "gpu" for d in devices)
        card.performance.append(
            Performance(
                kind="training",
                backend="mxnet",
                device=", ".join(str(d) for d in devices),
                precision="fp16 (amp)" if use_amp else "fp32",
                batch=card.training.batch_size,
                threads=None if gpu else cpu_threads(),
                machine=machine_info(),
                throughput=sum(speeds) / len(speeds),
                measured=now_utc(),
            )
        )
    return card


def _training_parent(uri: str, arch: str | None) -> tuple[LineageEntry, ModelCard | None] | None:
    """(lineage entry, its card) for the pretrained_model_path a training started from."""
    from tlkit.weights import resolve_weights

    try:
        path = resolve_weights(uri, arch=arch)
    except Exception:  # noqa: BLE001 - the training already loaded it; a card must not fail a finished run
        return parent_entry("pretrained", uri, None), None
    card = card_of_parent(path)
    return parent_entry("pretrained", uri, path, card), card


# -- files -------------------------------------------------------------------------------------------------------


def card_paths(model_path: str | os.PathLike) -> tuple[Path, Path]:
    """(`<file>.MODEL_CARD.json`, `<file>.MODEL_CARD.md`) beside a model file."""
    p = Path(model_path)
    return p.with_name(p.name + CARD_JSON_SUFFIX), p.with_name(p.name + CARD_MD_SUFFIX)


def with_file(card: ModelCard, model_path: str | os.PathLike, sha256: str | None = None) -> ModelCard:
    """A copy of `card` naming the file it describes (size, sha256: hashed unless given)."""
    from tlkit.io import file_digest

    p = Path(model_path)
    ref = FileRef(name=p.name, size=p.stat().st_size, sha256=sha256 or file_digest(p))
    return card.model_copy(update={"file": ref})


def card_texts(card: ModelCard) -> dict[str, str]:
    """{sidecar suffix: text}: the JSON and the Markdown of a card."""
    return {CARD_JSON_SUFFIX: json.dumps(card.to_dict(), indent=2) + "\n", CARD_MD_SUFFIX: card.to_markdown()}


def write_card_files(model_path: str | os.PathLike, card: ModelCard, sha256: str | None = None) -> ModelCard:
    """Write `<file>.MODEL_CARD.json` (the card with the file's size and sha256) and `<file>.MODEL_CARD.md`
    beside `model_path`. Returns the card as written."""
    from tlkit.io import atomic_write_text

    full = with_file(card, model_path, sha256)
    p = Path(model_path)
    for suffix, text in card_texts(full).items():
        atomic_write_text(p.with_name(p.name + suffix), text)
    return full


def sidecar_card(model_path: str | os.PathLike) -> ModelCard | None:
    """The card beside a model file when it describes this very file (same sha256), else None: it holds
    what was measured after the model was written (`tlkit model bench`)."""
    from tlkit.io import file_digest

    js, _ = card_paths(model_path)
    if not js.is_file():
        return None
    card = read_card(js)
    return card if card.file is not None and card.file.sha256 == file_digest(model_path) else None


def record_performance(model_path: str | os.PathLike, perf: Performance) -> ModelCard:
    """Add a measurement to the card beside a model (the model file itself stays byte-identical)."""
    card = sidecar_card(model_path) or read_card(model_path)
    card.performance.append(perf)
    return write_card_files(model_path, card)


def record_metrics(model_path: str | os.PathLike, metrics: dict[str, Any], split: str) -> ModelCard | None:
    """Add the numeric `metrics` (e.g. an evaluation's) to the card beside a model, replacing earlier values
    of the same name and split measured on it. None when there is nothing numeric to record."""
    import math

    p = Path(model_path)
    values = {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    }
    if not values:
        return None
    card = sidecar_card(p) or read_card(p)
    card.metrics = [m for m in card.metrics if not (m.split == split and m.measured_on == p.name and m.name in values)]
    card.metrics += [Metric(name=k, value=v, split=split, measured_on=p.name) for k, v in values.items()]
    return write_card_files(p, card)


def read_card(path: str | os.PathLike) -> ModelCard:
    """The card of a .tlk, an .onnx or a card JSON file; a model without one gets a card from its meta."""
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"{p}: file not found")
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ModelFileError(f"{p}: not a JSON model card: {err}") from None
        return ModelCard.from_dict(data, str(p))
    if p.suffix.lower() == ".onnx":
        from tlkit.export.onnx_export import read_onnx_metadata

        md = read_onnx_metadata(p)
        if isinstance(md.get("card"), dict):
            return ModelCard.from_dict(md["card"], str(p))
        if not md:
            raise ModelFileError(f"{p}: an ONNX file without tlkit metadata (not exported by tlkit)")
        return ModelCard.from_meta(md)
    from tlkit.model_io import read_meta

    return ModelCard.from_meta(read_meta(p))


def verify_file(path: str | os.PathLike) -> list[tuple[str, str | None]]:
    """(what was checked, None or the problem) for a model file: it reads (a .tlk's zip CRCs too), it is the
    file its sidecar card describes (sha256), and the lineage parents found on this machine are unchanged."""
    import zipfile

    from tlkit.io import file_digest

    p = Path(path)
    try:
        card = read_card(p)
        broken = zipfile.ZipFile(p).testzip() if zipfile.is_zipfile(p) else None
        out: list[tuple[str, str | None]] = [(f"{p}: readable", f"zip member {broken} is corrupt" if broken else None)]
    except (ModelFileError, zipfile.BadZipFile, OSError) as err:
        return [(f"{p}: readable", str(err))]
    js, _ = card_paths(p)
    if js.is_file():
        side = read_card(js)
        sha = file_digest(p)
        want = side.file.sha256 if side.file is not None else None
        out.append(
            (
                f"{p}: the file {js.name} describes",
                None
                if sha == want
                else f"sha256 {sha}, the card says {want}: the file changed after its card was written",
            )
        )
    for i, entry in enumerate(card.lineage):
        q = Path(entry.path) if entry.path else None
        if q is not None and entry.sha256 and q.is_file():
            got = file_digest(q)
            out.append(
                (
                    f"lineage[{i}] {entry.relation} {q}",
                    None if got == entry.sha256 else f"sha256 {got}, recorded {entry.sha256}: the parent changed since",
                )
            )
    return out


# -- rendering ---------------------------------------------------------------------------------------------------


# the settings of an optimizer / learning-rate schedule that matter for its type (the card keeps them all)
_RELEVANT = {
    "sgd": ("momentum", "nesterov"),
    "adam": ("beta1", "beta2", "epsilon"),
    "rmsprop": ("rho", "epsilon"),
    "constant": ("learning_rate",),
    "step": ("learning_rate", "step_size", "gamma"),
    "cosine": ("learning_rate", "min_lr_ratio", "warmup_epochs"),
    "soft_anneal": ("learning_rate", "soft_start", "annealing_points", "annealing_divider"),
    "soft_start_annealing": ("learning_rate", "min_learning_rate", "soft_start", "annealing"),
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if not isinstance(v, dict))
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _setting(section: dict[str, Any]) -> str:
    """'sgd: momentum 0.9, nesterov False': the type and the settings that apply to it."""
    keys = _RELEVANT.get(section.get("type", ""), tuple(k for k in section if k != "type"))
    return f"{section.get('type')}: " + _fmt({k: section[k] for k in keys if k in section})


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return out + [""]


def render_markdown(card: ModelCard) -> str:
    """MODEL_CARD.md: the card for people (the JSON beside it is the same card for programs)."""
    title = " ".join(x for x in (card.arch, card.task) if x) or "model"
    lines = [f"# Model card: {title}", ""]
    if card.file is not None:
        lines += [f"File: `{card.file.name}`, {card.file.size:,} bytes, sha256 `{card.file.sha256}`", ""]
    rows = [
        ("task", card.task),
        ("architecture", card.arch),
        ("classes", f"{len(card.classes)}: {', '.join(card.classes)}"),
        ("created", f"{card.created} (tlkit {card.tlkit_version}, card v{card.card_version})"),
    ]
    if card.input is not None:
        rows.append(
            (
                "input",
                f"{'x'.join(map(str, card.input.shape))} {card.input.layout}, "
                f"preprocessing {_fmt(card.input.preprocessing)}",
            )
        )
    lines += ["## Model", ""] + _table(("", ""), [r for r in rows if r[1] is not None])
    if card.metrics:
        lines += ["## Metrics", ""] + _table(
            ("metric", "value", "split", "measured on"),
            [(m.name, m.value, m.split, m.measured_on or "") for m in card.metrics],
        )
    if card.datasets:
        lines += ["## Data", ""] + _table(
            ("split", "path", "format", "items", "per class", "file list sha256"),
            [
                (
                    d.split,
                    d.path or "",
                    d.format or "",
                    d.items,
                    f"{d.count_unit}: {_fmt(d.class_counts)}",
                    (d.file_list_sha256 or "")[:16],
                )
                for d in card.datasets
            ],
        )
    if card.training is not None:
        t = card.training
        lines += ["## Training", ""] + _table(
            ("", ""),
            [
                ("epochs", f"{t.epochs} of {t.epochs_planned}" + (" (stopped early)" if t.stopped_early else "")),
                ("batch size", f"{t.batch_size} ({t.batch_size_per_gpu} per device on {', '.join(t.devices)})"),
                ("optimizer", _setting(t.optimizer)),
                ("learning rate", _setting(t.lr_schedule)),
                ("regularizer", _fmt(t.regularizer)),
                ("seed", t.random_seed),
                ("AMP / QAT", f"{t.amp} / {t.qat if t.qat is not None else 'n/a'}"),
                (
                    "started from",
                    f"{t.pretrained_model_path or 'scratch'}"
                    + (" (graph)" if t.load_graph else "")
                    + (f", pruning ratio {t.pruning_ratio:.4g}" if t.pruning_ratio is not None else ""),
                ),
            ],
        )
    if card.pruning is not None:
        p = card.pruning
        lines += ["## Pruning", ""] + _table(
            ("", ""),
            [
                ("pruning ratio", p.pruning_ratio),
                ("parameters", f"{p.params_before:,} -> {p.params_after:,}"),
                ("FLOPs", f"{p.flops_before or 0:,} -> {p.flops_after or 0:,}"),
                ("threshold", p.threshold or ""),
            ],
        )
    if card.export is not None:
        e = card.export
        lines += ["## Export", ""] + _table(
            ("format", "data type", "opset", "batch"), [(e.format, e.data_type, e.opset, e.batch)]
        )
    if card.performance:
        lines += ["## Performance", ""] + _table(
            ("kind", "backend", "device", "precision", "batch", "threads", "images/s", "latency ms (p50)", "machine"),
            [
                (
                    x.kind,
                    x.backend,
                    x.device,
                    x.precision,
                    x.batch,
                    x.threads or "",
                    x.throughput or "",
                    (x.latency_ms or {}).get("p50", ""),
                    x.machine.get("cpu", ""),
                )
                for x in card.performance
            ],
        )
    if card.lineage:
        lines += ["## Lineage", "", "Newest first: each row is the parent of the row above.", ""] + _table(
            ("relation", "source", "sha256", "task / arch"),
            [
                (
                    e.relation,
                    e.ref + (f" ({Path(e.path).name})" if e.path and Path(e.path).name not in e.ref else ""),
                    (e.sha256 or "")[:16],
                    " ".join(str((e.card or {}).get(k, "")) for k in ("task", "arch")).strip(),
                )
                for e in card.lineage
            ],
        )
    return "\n".join(lines).rstrip() + "\n"
