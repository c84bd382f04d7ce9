"""Pretrained weights: read weight files of several formats into numpy, resolve weight references, and
load them into a network with a report of what was loaded, left new, or skipped.

    arrays = load_weight_file("resnet18.params")           # dict[str, numpy.ndarray]
    report = load_pretrained(net, "imagenet", prefix="backbone.")
    print(report.summary())

Formats are registered `WeightFormatSpec`s (core: tlkit `.tlk`, MXNet `.params`, PyTorch `.pth`); the first
whose `sniff(path)` is true loads the file. PyTorch files are read without torch, by `tlkit.pth`.

MXNet is imported inside the functions that need it, so this module is cheap to import.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError
from tlkit.pth import is_pth

# -- MXNet .params and tlkit .tlk ------------------------------------------------------------------------

_MX_NDARRAY_LIST_MAGIC = struct.pack("<Q", 0x112)


def is_mxnet_params(path: str | os.PathLike) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == _MX_NDARRAY_LIST_MAGIC
    except OSError:
        return False


def _strip_arg_aux(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for k, v in arrays.items():
        if k.startswith(("arg:", "aux:")):
            k = k[4:]
        out[k] = v.asnumpy() if hasattr(v, "asnumpy") else np.asarray(v)
    return out


def load_mxnet_params(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """An `nd.save` file: structural names (`save_parameters`) or `arg:`/`aux:` names (`export`)."""
    import mxnet as mx

    try:
        arrays = mx.nd.load(str(path))
    except mx.base.MXNetError as err:
        raise ModelFileError(f"{path}: corrupt MXNet .params file: {str(err).splitlines()[0]}") from None
    if not isinstance(arrays, dict):
        raise ModelFileError(f"{path}: holds an unnamed list of {len(arrays)} arrays; expected named parameters")
    return _strip_arg_aux(arrays)


def is_tlkit_model(path: str | os.PathLike) -> bool:
    from tlkit.model_io import is_model_file

    return is_model_file(path)


def load_tlkit_model(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from tlkit.model_io import load_model

    return _strip_arg_aux(load_model(path).params)


# -- dispatch -----------------------------------------------------------------------------------------


def load_weight_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read any registered weight format into {name: numpy array}."""
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    formats = get_registry().weight_formats()
    for spec in formats.values():
        if resolve(spec.sniff)(path):
            return resolve(spec.load)(path)
    # TLT/TAO's pretrained models are Keras files (.hdf5, or encrypted .tlt/.etlt) that tlkit cannot read
    tlt = (
        " (a TLT/TAO Keras model: start from 'imagenet', gluoncv://<model>, MXNet .params or PyTorch .pth weights)"
        if path.suffix.lower() in (".hdf5", ".h5", ".tlt", ".etlt")
        else ""
    )
    raise ModelFileError(
        f"{path}: unrecognised weights format{tlt}; expected one of: {', '.join(formats) or '(none registered)'}"
    )


# -- resolving references ------------------------------------------------------------------------------


def cache_dir() -> Path:
    """tlkit's cache: $TLKIT_CACHE, else $XDG_CACHE_HOME/tlkit, else ~/.cache/tlkit."""
    if os.environ.get("TLKIT_CACHE"):
        return Path(os.environ["TLKIT_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "tlkit"


def mxnet_model_dir() -> Path:
    return Path(os.environ.get("MXNET_HOME", Path.home() / ".mxnet")).expanduser() / "models"


def offline() -> bool:
    """TLKIT_OFFLINE=1: never download (registries answer from their local files only)."""
    return os.environ.get("TLKIT_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _resolve_named(name: str, arch: str | None) -> Path | None:
    """Named pretrained weights of an architecture ('imagenet'), from the catalog's offline files."""
    from tlkit.backbones.catalog import PRETRAINED_FILES
    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    if arch is None:
        return None
    spec = get_registry().architecture(arch)
    if name not in spec.pretrained:
        return None
    ref = PRETRAINED_FILES.get((spec.name, name))
    if ref is None:
        return None
    return Path(resolve(ref)())


def resolve_weights(uri: str | os.PathLike, *, arch: str | None = None) -> Path:
    """A local weights file for `uri`.

    - a path that exists;
    - a named set of `arch` (e.g. "imagenet" for efficientnet_lite0): the weights shipped offline;
      plugins may answer "pretrained://<arch>/<name>" through `tlkit_resolve_pretrained`;
    - "gluoncv://<model>": GluonCV's model store, `$MXNET_HOME/models/<model>-<sha1[:8]>.params`, pulled
      (resumable, sha1-checked) when missing, not with TLKIT_OFFLINE=1 (`tlkit.hub.gluoncv_store`);
    - "registry://<name>[:<version>]": the team registry (`tlkit.hub.team`), pulled into the cache;
    - anything a plugin's `tlkit_resolve_pretrained` resolves (other schemes).
    """
    from tlkit.registry import get_registry

    text = str(uri)
    if text.startswith("gluoncv://"):
        from tlkit.hub import gluoncv_store

        name = text[len("gluoncv://") :]
        path = gluoncv_store.local_path(name)
        return path if path.is_file() else gluoncv_store.pull(name)  # a present file is trusted: `tlkit model verify`
    if text.startswith("registry://"):
        from tlkit.hub.team import open_registry, split_ref

        return open_registry().pull(*split_ref(text[len("registry://") :]))
    hook = get_registry().pm.hook.tlkit_resolve_pretrained
    if "://" not in text and not Path(text).expanduser().exists() and arch is not None:
        answer = hook(uri=f"pretrained://{arch}/{text}", cache_dir=cache_dir())
        if answer is not None:
            return Path(answer)
        named = _resolve_named(text, arch)
        if named is not None:
            if not named.is_file():
                raise ModelFileError(f"{text} weights for {arch}: expected at {named}, file is missing")
            return named
    answer = hook(uri=text, cache_dir=cache_dir())
    if answer is not None:
        return Path(answer)
    hint = f" ({arch} knows no pretrained set {text!r})" if arch and "/" not in text and "." not in text else ""
    raise ModelFileError(f"{text}: weights file not found{hint}")


# -- filtered load ---------------------------------------------------------------------------------------


@dataclass
class LoadReport:
    """What `load_pretrained` did. `loaded`/`new` are network parameter names; `skipped` holds
    (name in the file, reason)."""

    source: str = ""
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.source}: loaded {len(self.loaded)} tensors, {len(self.new)} new (not in file), "
            f"{len(self.skipped)} skipped"
        )

    def table(self, max_rows: int = 20) -> Any:
        """A rich Table of the new and skipped tensors (print it with rich.print / Console.print)."""
        from rich.table import Table

        t = Table(title=self.summary())
        t.add_column("tensor")
        t.add_column("status")
        rows = [(n, "new (initialised)") for n in self.new] + [(n, f"skipped: {r}") for n, r in self.skipped]
        for name, status in rows[:max_rows]:
            t.add_row(name, status)
        if len(rows) > max_rows:
            t.add_row(f"... {len(rows) - max_rows} more", "")
        return t


def _backbone_arch(net: Any) -> str | None:
    """The architecture name of `net` if it is, or holds, a tlkit Backbone."""
    arch = getattr(net, "arch", None)
    if isinstance(arch, str):
        return arch
    for child in getattr(net, "_children", {}).values():
        arch = _backbone_arch(child)
        if arch:
            return arch
    return None


def load_pretrained(
    net: Any,
    path_or_uri: str | os.PathLike,
    *,
    weight_map: Callable[[str], str | None] | None = None,
    prefix: str = "",
    arch: str | None = None,
) -> LoadReport:
    """Load every tensor of a weights file whose (mapped) name exists in `net` with the same shape.

    `weight_map(name_in_file) -> name relative to prefix | None` translates foreign names (None: not used);
    `prefix` is prepended to find the parameter in `net` (e.g. "backbone."). Parameters of `net` the file
    does not provide are reported as `new` and keep their current (initialised or deferred) values; that
    is how a classifier head with another class count stays new. `arch` names the architecture for named
    sets such as "imagenet" (default: the Backbone inside `net`); for a named set or a PyTorch file the
    architecture's own `weight_map` is the default map (e.g. EfficientNet-Lite0's .pth names).
    """
    import mxnet as mx

    from tlkit.lazy import resolve
    from tlkit.registry import get_registry

    arch = arch or _backbone_arch(net)
    path = resolve_weights(path_or_uri, arch=arch)
    arrays = load_weight_file(path)
    if weight_map is None and arch is not None:
        spec = get_registry().architectures().get((None, arch))
        if str(path_or_uri).startswith("gluoncv://"):
            weight_map = gluoncv_weight_map(str(path_or_uri)[len("gluoncv://") :], arch)
        elif spec is not None and spec.weight_map is not None and (str(path_or_uri) in spec.pretrained or is_pth(path)):
            weight_map = resolve(spec.weight_map)
    own = net._collect_params_with_prefix()
    report = LoadReport(source=str(path_or_uri))
    done: set[str] = set()
    for fname, arr in arrays.items():
        mapped = weight_map(fname) if weight_map else fname
        if mapped is None:
            report.skipped.append((fname, "not used by this network (weight map)"))
            continue
        target = prefix + mapped
        param = own.get(target)
        if param is None:
            report.skipped.append((fname, f"no parameter {target!r} in the network"))
            continue
        if not _shape_fits(param.shape, arr.shape):
            report.skipped.append((fname, f"shape {tuple(arr.shape)} in file, {tuple(param.shape)} in network"))
            continue
        param._load_init(mx.nd.array(arr, dtype=param.dtype), None)
        report.loaded.append(target)
        done.add(target)
    report.new = [n for n in own if n not in done]
    return report


def gluoncv_weight_map(model: str, arch: str) -> Callable[[str], str | None] | None:
    """The weight map that puts GluonCV store weights `model` into backbone `arch` (None: same names), or a
    ModelFileError when they are another backbone's (backbones.catalog.GLUONCV_WEIGHTS says which fit)."""
    from tlkit.backbones.catalog import GLUONCV_WEIGHTS
    from tlkit.lazy import resolve

    fit = GLUONCV_WEIGHTS.get(model)
    if fit is None:  # a name tlkit knows nothing about (a detector, ...): load whatever matches by name
        return None
    if fit[0] != arch:
        fitting = sorted(n for n, (a, _) in GLUONCV_WEIGHTS.items() if a == arch)
        raise ModelFileError(
            f"gluoncv://{model} holds {fit[0]} ImageNet weights, the network's backbone is {arch}"
            + (f"; use {', '.join('gluoncv://' + n for n in fitting)}" if fitting else "")
        )
    return resolve(fit[1]) if fit[1] else None


def _shape_fits(net_shape: tuple[int, ...] | None, file_shape: tuple[int, ...]) -> bool:
    if not net_shape:  # unknown (deferred) shape: anything goes, the first forward would check
        return True
    return len(net_shape) == len(file_shape) and all(a in (0, -1, b) for a, b in zip(net_shape, file_shape))
