"""The tlkit model file (`.tlk`): one zip that every command reads and writes.

Members:
- ``meta.json``: the `tlkit.types.ModelMeta` record (``{"format": "tlkit-model", "format_version": 1,
  "kind": "gluon"|"graph", "task", "arch", "classes", "input_shape": [C, H, W], ...}``; every key is documented
  there). `save_model` and `read_meta` are the one place it is written and read, both checking it.
- ``params.nd``: MXNet ``nd.save`` of a dict of arrays.
  * kind "gluon": structural parameter names (``features.0.weight``, as `save_parameters` writes);
    the network is rebuilt by the task's ``TaskSpec.build_model(meta)``.
  * kind "graph": ``arg:NAME`` / ``aux:NAME`` as ``HybridBlock.export`` writes; the network is the
    ``symbol.json`` graph, loaded as a ``SymbolBlock`` (pruned models, ``load_graph: true``).
- ``symbol.json``: the MXNet symbol graph (kind "graph"; optional for "gluon").
- ``trainer.states``: optimizer state, only in training checkpoints (resume).

Files are written atomically (`tlkit.io.atomic_write`): a killed run never leaves a corrupt model.
MXNet is imported lazily inside the functions.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit import __version__
from tlkit.errors import ModelFileError
from tlkit.io import atomic_write
from tlkit.model_meta import FORMAT, FORMAT_VERSION, ModelMeta

SUFFIX = ".tlk"


@dataclass
class ModelFile:
    meta: dict[str, Any]
    params: dict[str, Any]  # name -> mx.nd.NDArray
    symbol_json: str | None = None
    trainer_states: bytes | None = None
    extra_files: dict[str, bytes] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def info(self) -> ModelMeta:
        """The typed view of `meta`."""
        return ModelMeta.of(self.meta)


def _nd_to_bytes(arrays: dict[str, Any]) -> bytes:
    import mxnet as mx

    with tempfile.TemporaryDirectory() as tmp:
        fname = os.path.join(tmp, "p.nd")
        mx.nd.save(fname, {k: (v if isinstance(v, mx.nd.NDArray) else mx.nd.array(v)) for k, v in arrays.items()})
        with open(fname, "rb") as fh:
            return fh.read()


def save_model(path: str | os.PathLike, model: ModelFile) -> Path:
    """Write `model` to `path` atomically. Returns the path. The meta is checked (`ModelMeta`) and stamped with
    this tlkit's format and version, whatever the meta it came from said (a re-saved old file is current)."""
    path = Path(path)
    meta = {
        "kind": "gluon",
        **model.meta,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tlkit_version": __version__,
    }
    meta = ModelMeta.from_dict(meta, f"{path} (writing)").to_dict()
    if meta["kind"] == "graph" and not model.symbol_json:
        raise ValueError("a 'graph' model file needs symbol_json")
    with atomic_write(path, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("meta.json", json.dumps(meta, indent=2, default=str))
            zf.writestr("params.nd", _nd_to_bytes(model.params))
            if model.symbol_json:
                zf.writestr("symbol.json", model.symbol_json)
            if model.trainer_states:
                zf.writestr("trainer.states", model.trainer_states)
            for name, data in model.extra_files.items():
                zf.writestr(name, data)
    return path


def is_model_file(path: str | os.PathLike) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            return "meta.json" in zf.namelist() and "params.nd" in zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the metadata (cheap: no MXNet import), checked against `ModelMeta`: a bad value is a ModelFileError
    naming the file and the key. Returned as the plain dict the file holds (`read_model_meta` for the typed
    record)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("meta.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: not a tlkit model file (.tlk) or corrupt: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelFileError(f"{path}: meta.json has format {got!r}, expected {FORMAT!r}")
    version = meta.get("format_version", 0)
    if isinstance(version, int) and version > FORMAT_VERSION:  # checked first: a newer record may not validate
        raise ModelFileError(
            f"{path}: written by a newer tlkit (format_version {meta['format_version']}); upgrade tlkit-core"
        )
    ModelMeta.from_dict(meta, str(path))
    return meta


def read_model_meta(path: str | os.PathLike) -> ModelMeta:
    """The typed `ModelMeta` of a model file."""
    return ModelMeta.of(read_meta(path))


def load_model(path: str | os.PathLike) -> ModelFile:
    import mxnet as mx

    path = Path(path)
    meta = read_meta(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            params = mx.nd.load_frombuffer(zf.read("params.nd"))
            symbol_json = zf.read("symbol.json").decode() if "symbol.json" in names else None
            states = zf.read("trainer.states") if "trainer.states" in names else None
            extra = {
                n: zf.read(n) for n in names if n not in {"meta.json", "params.nd", "symbol.json", "trainer.states"}
            }
    except (zipfile.BadZipFile, KeyError, mx.base.MXNetError) as err:
        raise ModelFileError(f"{path}: corrupt tlkit model file: {err}") from None
    if isinstance(params, list):
        raise ModelFileError(f"{path}: params.nd holds an unnamed array list, expected a dict")
    return ModelFile(meta, params, symbol_json, states, extra)


# -- networks ---------------------------------------------------------------------------------------


def gluon_params(net: Any) -> dict[str, Any]:
    """Structural name -> NDArray (CPU copy), the names `save_parameters` uses."""
    return {name: p._reduce() for name, p in net._collect_params_with_prefix().items() if p._data is not None}


def graph_of(net: Any, input_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    """(symbol_json, arg:/aux: params) of an initialised Gluon network, as `HybridBlock.export` writes them.

    Calls the network on a symbol (no batch runs: ~10x faster than export at 224 px); falls back to
    hybridize + one batch of zeros + export when that is not possible (parameters whose shape waits for a
    first batch, blocks that cannot run symbolically).
    """
    import mxnet as mx

    try:
        out = net(mx.sym.var("data"))
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        while any(isinstance(o, (list, tuple)) for o in outs):
            outs = [x for o in outs for x in (o if isinstance(o, (list, tuple)) else [o])]
        sym = outs[0] if len(outs) == 1 else mx.sym.Group(outs)
        args, auxs = set(sym.list_arguments()), set(sym.list_auxiliary_states())
        params = symbol_params(net, sym)
        if args - {"data"} - {k[4:] for k in params} or auxs - {k[4:] for k in params}:
            raise ValueError("parameters missing from the traced graph")
        return sym.tojson(), params
    except Exception:  # noqa: BLE001 - any failure: take the slow, always-working path
        return _exported_graph(net, input_shape)


def symbol_params(net: Any, sym: Any) -> dict[str, Any]:
    """CPU copies of the parameters of `net` that graph `sym` reads, named "arg:x" / "aux:x" as
    `HybridBlock.export` names them."""
    args, auxs = set(sym.list_arguments()), set(sym.list_auxiliary_states())
    return {
        ("arg:" if p.name in args else "aux:") + p.name: p._reduce()
        for p in net.collect_params().values()
        if p.name in args or p.name in auxs
    }


def _exported_graph(net: Any, input_shape: tuple[int, ...]) -> tuple[str, dict[str, Any]]:
    import mxnet as mx

    net.hybridize()
    params = list(net.collect_params().values())
    ctx = params[0].list_ctx()[0] if params and params[0]._data is not None else mx.cpu()
    net(mx.nd.zeros((1, *input_shape), ctx=ctx))  # trace on the device the weights live on
    with tempfile.TemporaryDirectory() as tmp:
        prefix = os.path.join(tmp, "net")
        net.export(prefix, epoch=0)
        with open(prefix + "-symbol.json") as fh:
            sym = fh.read()
        params = mx.nd.load(prefix + "-0000.params")
    return sym, params


def symbol_block(symbol_json: str, params: dict[str, Any], ctx: Any = None) -> Any:
    """A SymbolBlock from a symbol graph and arg:/aux: params (its inputs are named 'data')."""
    import mxnet as mx
    from mxnet import gluon

    ctx = ctx or mx.cpu()
    sym = mx.sym.load_json(symbol_json)
    input_names = [n for n in sym.list_inputs() if n == "data" or n.startswith("data")]
    inputs = [mx.sym.var(n) for n in (input_names[:1] or ["data"])]
    with (
        warnings.catch_warnings()
    ):  # "Cannot decide type for the following arguments": harmless, types come from params
        warnings.simplefilter("ignore")
        net = gluon.SymbolBlock(sym, inputs)
    # names in the file are "arg:x" / "aux:x"; SymbolBlock params are "x"
    with tempfile.TemporaryDirectory() as tmp:
        fname = os.path.join(tmp, "p.params")
        mx.nd.save(fname, params)
        net.collect_params().load(fname, ctx=ctx, allow_missing=False, ignore_extra=True)
    for p in net.collect_params().values():
        if p.shape is None and p._data is not None:  # load() leaves it unset; checkpoint loading compares shapes
            p.shape = p._data[0].shape
    return net


def save_net(
    path: str | os.PathLike,
    net: Any,
    meta: dict[str, Any],
    *,
    as_graph: bool = False,
    trainer_states: bytes | None = None,
) -> Path:
    """Save a network with its metadata. `as_graph=True` stores the traced symbol graph (needs
    meta["input_shape"]); a SymbolBlock is always stored as a graph."""
    from mxnet import gluon

    meta = dict(meta)
    if as_graph or isinstance(net, gluon.SymbolBlock):
        if "input_shape" not in meta:
            raise ValueError("saving a graph model needs meta['input_shape']")
        sym, params = graph_of(net, tuple(meta["input_shape"]))
        meta["kind"] = "graph"
        return save_model(path, ModelFile(meta, params, sym, trainer_states))
    meta["kind"] = "gluon"
    return save_model(path, ModelFile(meta, gluon_params(net), None, trainer_states))


def load_net(path: str | os.PathLike, ctx: Any = None) -> tuple[Any, dict[str, Any]]:
    """Load a `.tlk` file as a ready-to-run Gluon block. Returns (net, meta)."""
    import mxnet as mx

    ctx = ctx or mx.cpu()
    mf = load_model(path)
    if mf.kind == "graph":
        return symbol_block(mf.symbol_json or "", mf.params, ctx), mf.meta
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    task = get_registry().task(mf.info.task or "?")
    if task.build_model is None:
        raise ModelFileError(f"{path}: task {task.name!r} cannot rebuild gluon models (no build_model)")
    net = resolve(task.build_model)(mf.meta)
    load_gluon_params(net, mf.params, ctx, source=str(path))
    return net, mf.meta


def load_gluon_params(net: Any, params: dict[str, Any], ctx: Any, source: str = "model") -> None:
    """Load structural-name params into `net`; a mismatch is a ModelFileError naming the tensor."""
    own = net._collect_params_with_prefix()
    missing = sorted(set(own) - set(params))
    if missing:
        raise ModelFileError(f"{source}: parameter {missing[0]!r} missing ({len(missing)} in all)")
    for name, p in own.items():
        arr = params[name]
        if p.shape and all(p.shape) and tuple(p.shape) != tuple(arr.shape):
            raise ModelFileError(
                f"{source}: parameter {name!r} has shape {tuple(arr.shape)}, network expects {tuple(p.shape)}"
            )
        p._load_init(arr, ctx)
