"""TLT/TAO spec compatibility: TLT's key names and places, resolved into tlkit's spec layout in one place.

Each task declares one `AliasTable` (its spec model's `tlt_aliases`): for every TLT key whose name, place or
meaning differs from tlkit's, an `Alias` says where it goes (`to`, absolute or `.name` relative to the
parent's tlkit path), how its value changes (`convert`), which constants come with it (`also`, e.g. the
`lr_config.type` a TLT `lr_config { step {...} }` block implies), or that tlkit does not implement it
(`to=None`: a warning naming the key, unless its value is one of `neutral`; never dropped silently).
TLT keys spelled as in tlkit need no entry. `*` in a path is any key of a proto map (e.g. a class name).

`resolve()` walks a spec tree (from YAML or protobuf text, overrides already applied) and returns the tree in
tlkit's layout plus, for every key, where it came from (file line, the key as written: errors name them) and
how it was mapped (the comments `tlkit spec import` writes). Specs in tlkit's own layout pass unchanged.
"""

from __future__ import annotations

import copy
import math
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlkit.errors import SpecError

Path_ = tuple  # a key path: str keys, int list indices


class TltMap(dict):
    """A proto map (`name { key: K value: V }` entries), as {K: V}; `*` in alias paths matches its keys."""


class _Drop:
    """A converter's way to say: nothing to carry over."""


DROP = _Drop()


@dataclass(frozen=True)
class Alias:
    """Where one TLT key goes (see the module doc)."""

    tlt: str  # the TLT key path ('*' = a proto map's key)
    to: str | None  # the tlkit key path: absolute, or '.name' under the parent's tlkit path; None = not implemented
    convert: Callable[[Any, Resolution], Any] | None = None  # value -> tlkit value (a dict fills a section; DROP)
    also: Mapping[str, Any] = field(default_factory=dict)  # constants it implies ('.type': 'sgd' under `to`)
    note: str = ""  # why, for the warning or the `spec import` comment
    neutral: tuple = ()
    warn: bool = True  # to=None: False when TLT ignores the key too (no warning, only a note)
    when: type | tuple[type, ...] | None = None  # only for values of this type (TLT 2's `optimizer: "sgd"`)
    single: bool = False  # a repeated TLT message tlkit holds once: one entry is taken as the message


def unsupported(tlt: str, note: str = "", neutral: Iterable[Any] = (), warn: bool = True) -> Alias:
    """A TLT key tlkit does not implement: a warning (with `note`) unless the value is one of `neutral`."""
    return Alias(tlt, None, note=note, neutral=tuple(neutral), warn=warn)


@dataclass
class AliasTable:
    """One task's TLT vocabulary (see the module doc)."""

    aliases: list[Alias]
    repeated: Iterable[str] = ()  # TLT paths of repeated fields: lists even when given once
    maps: Iterable[str] = ()  # TLT paths of proto maps (repeated {key, value} entries)
    tlt_defaults: Mapping[str, tuple[Any, str]] = field(default_factory=dict)  # tlkit path -> (value, why)
    defaults_if: Callable[[dict], bool] | None = None  # which TLT specs get tlt_defaults (e.g. those with model_config)
    is_tlt_layout: Callable[[dict], bool] | None = None  # YAML in TLT's own layout (BodyPoseNet)
    name: str = "TLT"

    def __post_init__(self) -> None:
        maps = frozenset(self.maps)
        self.maps, self.repeated = maps, frozenset(self.repeated) | maps
        self.by_path: dict[tuple[str, ...], list[Alias]] = {}
        for a in self.aliases:
            self.by_path.setdefault(tuple(a.tlt.split(".")), []).append(a)

    def rule(self, pattern: tuple[str, ...], value: Any) -> Alias | None:
        for a in self.by_path.get(pattern, ()):
            if a.when is None or isinstance(value, a.when):
                return a
        return None

    def children(self, pattern: tuple[str, ...]) -> list[str]:
        """The TLT keys the table knows directly under `pattern` (for 'did you mean')."""
        n = len(pattern)
        return sorted({p[n] for p in self.by_path if len(p) > n and p[:n] == pattern and p[n] != "*"})


@dataclass
class Origin:
    """Where a resolved key came from."""

    where: str  # "spec.txt:12", "override 'k=v'", or "TLT default"
    key: str  # the key path as written
    override: bool = False


@dataclass
class Ignored:
    """A TLT key (or part of one) that is not carried over."""

    key: str
    where: str
    value: Any
    note: str
    kind: str  # unsupported (a warning), differs (a warning: part of the value), neutral (its value is tlkit's
    # behaviour anyway), unused (no effect in tlkit: another mechanism does it)

    @property
    def warn(self) -> bool:
        return self.kind in ("unsupported", "differs")

    def message(self) -> str:
        if self.kind == "differs":
            return f"{self.where}: {self.key}: {self.note}"
        if self.kind == "neutral":
            return f"{self.where}: {self.key} = {_short(self.value)}: the same in tlkit" + (
                f" ({self.note})" if self.note else ""
            )
        what = "TLT key not implemented by tlkit, ignored" if self.kind == "unsupported" else "not used"
        return f"{self.where}: {self.key}: {what}" + (f": {self.note}" if self.note else "")


@dataclass
class Resolved:
    data: dict
    origins: dict[Path_, Origin]  # tlkit path -> origin
    notes: dict[Path_, str]  # tlkit path -> how a TLT key was mapped
    ignored: list[Ignored]
    source_patterns: dict[Path_, tuple[str, ...]]  # tlkit path -> TLT key pattern (for suggestions)
    tlt: bool  # the input used TLT's layout (some alias applied, or the format is TLT's)

    @property
    def warnings(self) -> list[str]:
        return [i.message() for i in self.ignored if i.warn]


class Resolution:
    """The state of one `resolve()` call; converters get it to look up other keys and add notes."""

    def __init__(
        self, tree: dict, lines: dict, where: str, overridden: dict, table: AliasTable | None, base_dir: Path | None
    ):
        self.tree, self.lines, self.where, self.overridden = tree, lines, where, overridden
        self.table, self.base_dir = table, base_dir
        self.values: dict[Path_, Any] = {}
        self.origins: dict[Path_, Origin] = {}
        self.notes: dict[Path_, str] = {}
        self.patterns: dict[Path_, tuple[str, ...]] = {}
        self.ignored: list[Ignored] = []
        self.used_alias = False
        self.tlt_format = False  # the input is in TLT's format/layout (converters of TLT-only units check it)
        self._src: Path_ = ()

    # -- for converters -------------------------------------------------------------------------------------

    def lookup(self, key: str, default: Any = None) -> Any:
        """A value of the input spec by its key path as written (e.g. 'training_config.num_epochs')."""
        cur: Any = self.tree
        for k in key.split("."):
            if not isinstance(cur, dict) or k not in cur:
                return default
            cur = cur[k]
        return cur

    def sibling(self, name: str, default: Any = None) -> Any:
        """A key next to the one being converted (e.g. its message's root_directory_path)."""
        cur: Any = self.tree
        for k in self._src[:-1]:
            cur = cur[k]
        return cur.get(name, default) if isinstance(cur, dict) else default

    @property
    def key(self) -> str:
        """The key being converted, as written (for converters' messages)."""
        return dotted(self._src)

    def warn(self, key: str, note: str, value: Any = None) -> None:
        """A sub-key a converter cannot carry over (named in the warning)."""
        self.ignored.append(Ignored(key, self.origin_of(self._src).where, value, note, "differs"))

    def unused(self, key: str, note: str, value: Any = None) -> None:
        """A sub-key a converter leaves out because tlkit does that part otherwise (a note, no warning)."""
        self.ignored.append(Ignored(key, self.origin_of(self._src).where, value, note, "unused"))

    def path(self, name: str) -> Path | None:
        """A file named in the spec, relative to the spec's folder."""
        if not name:
            return None
        p = Path(name)
        return p if p.is_absolute() or self.base_dir is None else Path(os.path.normpath(self.base_dir / p))

    # -- walking ----------------------------------------------------------------------------------------------

    def origin_of(self, src: Path_) -> Origin:
        key = dotted(src)
        for n in range(len(src), 0, -1):
            if src[:n] in self.overridden:
                return Origin(f"override '{self.overridden[src[:n]]}'", key, override=True)
            if src[:n] in self.lines:
                return Origin(f"{self.where}:{self.lines[src[:n]]}", key)
        return Origin(self.where, key)

    def walk(self, node: Any, src: Path_, pattern: tuple[str, ...], dst_parent: Path_, stars: list[str]) -> None:
        if not self.table or (rule := self.table.rule(pattern, node)) is None:
            self.descend(node, src, pattern, dst_parent + (src[-1],), stars)
            return
        origin = self.origin_of(src)
        if rule.to is None:
            self.used_alias = True
            kind = "neutral" if _is_neutral(node, rule.neutral) else "unsupported" if rule.warn else "unused"
            self.ignored.append(Ignored(origin.key, origin.where, node, rule.note, kind))
            return
        if rule.single and isinstance(node, list):
            if len(node) != 1:
                raise SpecError(f"{origin.where}: {origin.key}: tlkit takes one {src[-1]} block, got {len(node)}")
            node, src = node[0], src + (0,)
        dst = _target(rule.to, dst_parent, stars)
        self.used_alias |= dst != src or bool(rule.also)
        self.patterns.setdefault(dst, pattern)
        self.origins.setdefault(dst, origin)
        for key, value in rule.also.items():
            at = _target(key, dst, stars)
            self.put(at, value, origin, pattern, f"set by {self.table.name} {origin.key}")
        if rule.convert is not None and node is not None:  # null stays null (tlkit's own `coco_config: null`)
            self._src = src
            n_ignored = len(self.ignored)
            try:
                value = rule.convert(copy.deepcopy(node), self)
            except (ValueError, TypeError, KeyError) as err:
                raise SpecError(f"{origin.where}: {origin.key}: {err}") from None
            if value is DROP:
                if len(self.ignored) == n_ignored:  # the converter had nothing to warn about: a note only
                    self.ignored.append(Ignored(origin.key, origin.where, node, rule.note, "unused"))
                return
            changed = not _same(value, node)
            self.used_alias |= changed
            shown = f" = {_short(node)}" if changed and not isinstance(node, (dict, list)) else ""
            note = f"{self.table.name} {origin.key}{shown}" + (f": {rule.note}" if rule.note else "")
            note = note if (changed or dst != src) else ""
            if isinstance(value, dict) and value:  # a converted message: one comment on its section
                if note:
                    self.notes.setdefault(dst, note)
                note = ""
            self.put(dst, value, origin, pattern, note)
            return
        if dst != src and dst != dst_parent:  # not for a message folded into its parent (optimizer.sgd)
            self.notes.setdefault(dst, f"{self.table.name} {origin.key}" + (f": {rule.note}" if rule.note else ""))
        self.descend(node, src, pattern, dst, stars)

    def descend(self, node: Any, src: Path_, pattern: tuple[str, ...], dst: Path_, stars: list[str]) -> None:
        self.patterns.setdefault(dst, pattern)
        self.origins.setdefault(dst, self.origin_of(src))
        if isinstance(node, TltMap):
            if not node:
                self.put(dst, {}, self.origin_of(src), pattern, "")
            for k, v in node.items():
                self.walk(v, src + (k,), pattern + ("*",), dst, stars + [k])
        elif isinstance(node, dict):
            if not node:
                self.put(dst, {}, self.origin_of(src), pattern, "")
            for k, v in node.items():
                self.walk(v, src + (k,), pattern + (str(k),), dst, stars)
        elif isinstance(node, list) and node and all(isinstance(v, dict) for v in node):
            for i, item in enumerate(node):
                self.descend(item, src + (i,), pattern, dst + (i,), stars)
        else:
            self.put(dst, node, self.origin_of(src), pattern, "")

    def put(self, dst: Path_, value: Any, origin: Origin, pattern: tuple[str, ...], note: str) -> None:
        """Set a tlkit key (a dict value is spread into its leaves); two sources of one key must agree."""
        if isinstance(value, dict) and value:
            for k, v in value.items():
                self.put(dst + (k,), v, origin, pattern, note)
            return
        prev = self.origins.get(dst) if dst in self.values else None
        if prev is not None and not _same(self.values[dst], value):
            if prev.override and not origin.override:
                return
            if not (origin.override and not prev.override):
                raise SpecError(
                    f"{origin.where}: {origin.key}: sets {'.'.join(map(str, dst))} = {_short(value)}, "
                    f"but {prev.where} ({prev.key}) already set it to {_short(self.values[dst])}"
                )
        self.values[dst] = value
        self.origins[dst] = origin
        self.patterns.setdefault(dst, pattern)
        if note:
            self.notes[dst] = note


def resolve(
    tree: dict,
    lines: dict[Path_, int],
    table: AliasTable | None,
    *,
    where: str = "<spec>",
    overridden: dict[Path_, str] | None = None,
    tlt_format: bool = False,
    base_dir: Path | None = None,
) -> Resolved:
    """`tree` (TLT or tlkit layout) -> tlkit's layout. See the module doc."""
    tlt_format = tlt_format or bool(table and table.is_tlt_layout and table.is_tlt_layout(tree))
    tree, lines = normalize(tree, lines, table, tlt_format)
    r = Resolution(tree, lines, where, dict(overridden or {}), table, base_dir)
    r.tlt_format = tlt_format
    for k, v in tree.items():
        r.walk(v, (k,), (str(k),), (), [])
    is_tlt = r.tlt_format or r.used_alias
    if table and r.tlt_format and (table.defaults_if is None or table.defaults_if(tree)):
        for key, (value, why) in table.tlt_defaults.items():
            dst = tuple(key.split("."))
            if not any(p[: len(dst)] == dst or dst[: len(p)] == p for p in r.values):
                r.put(
                    dst,
                    value,
                    Origin(f"{table.name} default", key),
                    (),
                    f"{table.name}'s value when the key is absent: {why}",
                )
    return Resolved(_unflatten(r.values), r.origins, r.notes, r.ignored, r.patterns, is_tlt)


def normalize(tree: dict, lines: dict, table: AliasTable | None, tlt_layout: bool = False) -> tuple[dict, dict]:
    """TLT's shapes: proto map entries ([{key: K, value: V}, ...] at a map path) -> TltMap {K: V}, in any format;
    in a spec in TLT's layout, a repeated field given once as a value (YAML `freeze_blocks: 0`) -> a list (in
    tlkit's own layout a TLT list path may be a plain value: coco_config.num_shards). Lines follow."""
    new_lines: dict[Path_, int] = {}
    maps = table.maps if table else frozenset()
    repeated = table.repeated if table and tlt_layout else frozenset()

    def conv(node: Any, src: Path_, dst: Path_, pattern: tuple[str, ...], item: bool = False) -> Any:
        if src in lines:
            new_lines[dst] = lines[src]
        name = ".".join(pattern)
        if not item and name in repeated and name not in maps and node is not None and not isinstance(node, list):
            return [conv(node, src, dst + (0,), pattern, item=True)]
        if name in maps and _is_map_entries(node):
            out = TltMap()
            entries = node if isinstance(node, list) else [node]
            for i, e in enumerate(entries):
                esrc = src + (i,) if isinstance(node, list) else src
                key = str(e["key"])
                if esrc in lines:
                    new_lines[dst + (key,)] = lines[esrc]
                out[key] = conv(e.get("value", {}), esrc + ("value",), dst + (key,), pattern + ("*",))
                if esrc + ("value",) not in lines and esrc in lines:
                    new_lines[dst + (key,)] = lines[esrc]
            return out
        if isinstance(node, dict):
            star = isinstance(node, TltMap)
            return type(node)(
                (k, conv(v, src + (k,), dst + (k,), pattern + ("*" if star else str(k),))) for k, v in node.items()
            )
        if isinstance(node, list):
            return [conv(v, src + (i,), dst + (i,), pattern, item=True) for i, v in enumerate(node)]
        return node

    out = conv(tree, (), (), ())
    return out, new_lines


def _is_map_entries(node: Any) -> bool:
    items = node if isinstance(node, list) else [node]
    return bool(items) and all(isinstance(e, dict) and "key" in e and set(e) <= {"key", "value"} for e in items)


def dotted(path: Path_) -> str:
    """('a', 'b', 0, 'c') -> 'a.b[0].c'."""
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path).lstrip(".")


def _target(to: str, parent: Path_, stars: list[str]) -> Path_:
    parts = to.split(".")
    out = list(parent) if to.startswith(".") else []
    it = iter(stars)
    for p in parts[1:] if to.startswith(".") else parts:
        out.append(next(it) if p == "*" else p)
    return tuple(out)


def section_at(data: dict, keys: Path_, error: Callable[[int], SpecError]) -> dict:
    """The dict at `keys` below `data`, made where missing; raises `error(i)` when keys[i] holds a value."""
    cur = data
    for i, k in enumerate(keys):
        nxt = cur.get(k)
        if nxt is None:
            nxt = cur[k] = {}
        if not isinstance(nxt, dict):
            raise error(i)
        cur = nxt
    return cur


def _unflatten(values: dict[Path_, Any]) -> dict:
    root: dict = {}
    for path in values:  # in the order of the spec

        def clash(i: int, p: Path_ = path) -> SpecError:
            return SpecError(f"{dotted(p[: i + 1])} is given both as a value and as a section")

        cur = section_at(root, path[:-1], clash)
        if isinstance(cur.get(path[-1]), dict) and cur[path[-1]] and values[path] != {}:
            raise SpecError(f"{dotted(path)} is given both as a value and as a section")
        if not (values[path] == {} and isinstance(cur.get(path[-1]), dict)):
            cur[path[-1]] = values[path]
    return _lists(root)


def _lists(node: Any) -> Any:
    """Dicts keyed 0..n-1 (list items walked one by one) back into lists."""
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(isinstance(k, int) for k in node):
            return [node.get(i, {}) for i in range(max(node) + 1)]
    return node


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return (
        type(a) is type(b)
        and a == b
        or (
            isinstance(a, (int, float))
            and isinstance(b, (int, float))
            and not isinstance(a, bool)
            and not isinstance(b, bool)
            and a == b
        )
    )


def _is_neutral(value: Any, neutral: tuple) -> bool:
    if isinstance(value, dict):
        return not value or any(v == value for v in neutral)
    if isinstance(value, list):
        return not value or any(v == value for v in neutral)
    return any(_same(value, v) for v in neutral)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- pieces shared by several tasks' tables -------------------------------------------------------------------


def lower(value: Any, res: Resolution) -> Any:
    """TLT enum values (DBSCAN, BILINEAR, INTEGRATE...) -> tlkit's lower-case choices."""
    return value.lower() if isinstance(value, str) else value


def regularizer_type(value: Any, res: Resolution) -> str:
    """TLT's NO_REG / L1 / L2 (enum or string, any case) -> tlkit's none / L1 / L2."""
    v = str(value).strip().upper()
    if v in ("NO_REG", "NONE", ""):
        return "none"
    if v in ("L1", "L2"):
        return v
    raise ValueError(f"unknown regularizer type {value!r}; expected NO_REG, L1 or L2")


def soft_start_annealing_aliases(tlt: str, to: str = "train_config.lr_config") -> list[Alias]:
    """TLT's SoftStartAnnealingScheduleConfig message at `tlt` (DetectNet_v2, BodyPoseNet)."""
    return [
        Alias(tlt, to, also={".type": "soft_start_annealing"}),
        Alias(f"{tlt}.max_learning_rate", ".learning_rate"),
        Alias(f"{tlt}.base_learning_rate", ".learning_rate"),
    ]


def yaml_flow(value: Any) -> str:
    """One YAML value in flow style, on one line."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def import_yaml(resolved: Resolved, model: Any, header: str = "") -> str:
    """The resolved spec as tlkit YAML with a comment on every key that was mapped differently, and the TLT
    keys tlkit ignores listed at the top (`tlkit spec import`)."""
    from pydantic import BaseModel

    out = [f"# {ln}" if ln else "#" for ln in header.splitlines()]
    dropped = resolved.ignored
    if dropped:
        out.append("# TLT keys not carried over:")
        out += [f"#   {i.message()}" for i in dropped]
    notes = resolved.notes

    def fields_of(m: Any) -> list[str]:
        if isinstance(m, type) and issubclass(m, BaseModel):
            return [(f.alias or n) for n, f in m.model_fields.items()]
        return []

    def child(m: Any, key: Any) -> tuple[Any, bool]:
        """The model of `key`'s value under model `m`, and whether that value is a {name: model} mapping."""
        if not (isinstance(m, type) and issubclass(m, BaseModel)):
            return None, False
        from tlkit.config import _spec_keys, _unwrap

        f = _spec_keys(m).get(key)
        if f is None:
            return None, False
        return _unwrap(f.annotation), typing.get_origin(f.annotation) is dict

    def emit(node: dict, path: Path_, m: Any, indent: int, mapping_of: Any = None) -> None:
        order = fields_of(m)
        keys = sorted(node, key=lambda k: order.index(k) if k in order else len(order))  # stable: the spec's order
        pad = "  " * indent
        for k in keys:
            v, p = node[k], path + (k,)
            comment = f"  # {notes[p]}" if p in notes else ""
            key = k if isinstance(k, str) and yaml_flow(k) == k else yaml_flow(k)
            sub, is_mapping = (mapping_of, False) if mapping_of is not None else child(m, k)
            if isinstance(v, dict) and v:
                out.append(f"{pad}{key}:{comment}")
                emit(v, p, None if is_mapping else sub, indent + 1, sub if is_mapping else None)
            elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
                out.append(f"{pad}{key}:{comment}")
                for i, item in enumerate(v):
                    if not item:
                        out.append(f"{pad}  - {{}}")
                        continue
                    start = len(out)
                    emit(item, p + (i,), sub, indent + 2)
                    out[start] = f"{pad}  - " + out[start].lstrip()  # the first key on the dash's line
            else:
                out.append(f"{pad}{key}: {yaml_flow(v)}{comment}")

    emit(resolved.data, (), model, 0)
    return "\n".join(out) + "\n"
