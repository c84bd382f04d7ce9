"""Structured (filter) pruning of an MXNet symbol graph, with TLT's `magnet_prune` semantics.

The input is what `tlkit.model_io.graph_of(net, input_shape)` returns: the symbol JSON of a hybridized
network and its ``arg:``/``aux:`` parameters. The output is a smaller graph of the same form, loadable with
`tlkit.model_io.symbol_block`.

How it works (TLT's algorithm as the shared reference tlt-reference.md §2 describes it):

1. Analysis, one pass over the nodes in topological order. Every Convolution/FullyConnected output
   starts a *channel space* (its filters). Each tensor's channel axis (axis 1) is described by a *layout*:
   a list of segments ``(space, size, rep)`` — Concat appends segments, Flatten repeats each channel
   ``rep = H*W`` times, pass-through ops (BatchNorm, activations, pooling, ...) keep the layout.
   Element-wise merges (adds, broadcast ops) and depthwise convolutions put spaces into one equalization
   group (union-find); their per-layer normalized filter norms are merged with the equalization criterion.
   Spaces that must keep every channel are *fixed*: network outputs, excluded layers, Deconvolution
   outputs, grouped-conv inputs, broadcasts against unprunable tensors.
2. Plan: how many channels each group keeps (the *allocation*), then the top ones by merged norm:
   - ``threshold`` (TLT): ``retained_idx`` (strict ``> pth`` on the normalized norm, floor ``min(nf, N)``,
     round up to ``pg``);
   - ``uniform``: the same fraction of every group (what Torch-Pruning does by default): cuts MACs as much
     as parameters, where a threshold mostly empties the wide, low-resolution late layers;
   - ``global``: one threshold across all layers on each filter's importance per multiply-accumulate: its
     norm relative to its group's mean (scale-free, not pulled by one large filter the way max-normalization
     is) divided by the group's MACs per channel relative to the mean group's. Wide, high-resolution layers
     give up channels first: at a given parameter count, the fewest MACs.
   Every allocation keeps at least ``min_channel_ratio`` of each group's channels (default 1/8: a layer
   never collapses to 40 of 1152) and multiples of ``pg``. A target (``target_ratio`` of parameters,
   ``target_flops`` / ``target_macs``) is reached by bisecting the allocation's one level (threshold or
   fraction): the result is at most the target.
3. Rewrite: slice every parameter along the axes whose layouts lost channels and update ``num_filter``,
   ``num_hidden``, ``num_group`` and the parameter nodes' ``__shape__``.

An operator the analysis does not understand is fine as long as the channels it reads stay whole; if a
pruned channel would reach it, `prune_graph` raises a `PruneError` naming the node and op and the `-el`
that avoids it — it never writes a model that computes something else.

numpy only at import time; MXNet is used for shape inference, inside the functions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from tlkit.errors import TlkitError, did_you_mean
from tlkit.pruning.report import LayerRow, PruneReport

NORMALIZERS = ("max", "L2", "off")
ALLOCATIONS = ("threshold", "uniform", "global")
DEFAULT_MIN_CHANNEL_RATIO = 0.125
EQUALIZATIONS = ("union", "intersection", "arithmetic_mean", "geometric_mean")


class PruneError(TlkitError):
    """The graph cannot be pruned as asked (an op in the way, a bad option, an unknown layer name)."""


# Ops whose output has the input's channels, one for one, and that have no per-channel parameters.
# fmt: off
PASS_THROUGH = frozenset({
    "Activation", "relu", "sigmoid", "tanh", "softrelu", "softsign", "hard_sigmoid", "clip", "Dropout",
    "BlockGrad", "stop_gradient", "make_loss", "identity", "_copy", "Cast", "amp_cast", "_mul_scalar",
    "_plus_scalar", "_minus_scalar", "_rminus_scalar", "_div_scalar", "_rdiv_scalar", "_power_scalar",
    "_rpower_scalar", "_maximum_scalar", "_minimum_scalar", "_MulScalar", "_PlusScalar", "_MinusScalar",
    "_DivScalar", "exp", "log", "sqrt", "rsqrt", "square", "abs", "negative", "erf", "reciprocal", "sign",
    "zeros_like", "ones_like", "_contrib_BilinearResize2D", "BilinearResize2D", "_contrib_AdaptiveAvgPooling2D",
    "_npi_multiply_scalar", "_npi_add_scalar", "_npx_relu", "_npx_sigmoid"
})
# fmt: on
# Element-wise merges: all channel-carrying inputs share their channels (one equalization group).
# fmt: off
ELEMENTWISE = frozenset({
    "elemwise_add", "elemwise_sub", "elemwise_mul", "elemwise_div", "_plus", "_Plus", "_add", "_minus",
    "_Minus", "_sub", "_mul", "_Mul", "_div", "_Div", "_maximum", "_minimum", "_Maximum", "_Minimum", "maximum",
    "minimum", "add_n", "ElementWiseSum", "_grad_add", "broadcast_add", "broadcast_sub", "broadcast_mul",
    "broadcast_div", "broadcast_maximum", "broadcast_minimum", "broadcast_plus", "broadcast_minus",
    "broadcast_power", "broadcast_like", "_npi_add", "_npi_multiply", "_npi_subtract"
})
# fmt: on
# Ops that only read their inputs' shapes: they constrain no channels.
SHAPE_ONLY = frozenset({"shape_array", "size_array", "_npi_shape"})
# Ops that create a filter space of their own.
WEIGHTED = frozenset({"Convolution", "FullyConnected", "Deconvolution"})


# -- TLT's per-layer arithmetic ---------------------------------------------------------------------


def filter_norms(weight: np.ndarray) -> np.ndarray:
    """L2 norm of each output filter (axis 0 in MXNet's layouts); the bias is ignored, as in TLT."""
    w = weight.reshape(weight.shape[0], -1)
    return np.sqrt(np.einsum("ij,ij->i", w, w).astype(np.float64))


def normalize(s: np.ndarray, normalizer: str) -> np.ndarray:
    """TLT: 'max' -> s / max(s); 'L2' -> s / ||s||_2 * N (a uniform layer gets sqrt(N)); 'off' -> s."""
    if normalizer == "max":
        m = s.max() if s.size else 0.0
        return s / m if m > 0 else s
    if normalizer == "L2":
        n = float(np.linalg.norm(s))
        return s / n * len(s) if n > 0 else s
    return s


def merge_stats(stats: Sequence[np.ndarray], criterion: str) -> np.ndarray:
    """Merge the normalized norms of an equalization group (TLT -eq)."""
    if len(stats) == 1:
        return stats[0]
    a = np.stack(stats)
    if criterion == "union":
        return a.max(axis=0)
    if criterion == "intersection":
        return a.min(axis=0)
    if criterion == "arithmetic_mean":
        return a.mean(axis=0)
    with np.errstate(divide="ignore"):
        return np.exp(np.log(a).mean(axis=0))  # geometric mean; a zero member gives 0


def floored_count(n: int, n_all: int, granularity: int, min_filters: int, min_ratio: float = 0.0) -> int:
    """n raised to the floors (min(nf, N), ceil(min_ratio * N), and 1), rounded up to a multiple of pg, capped at N."""
    # at least one filter even with -nf 0: a layer with no channels is not a network
    n = max(n, min(max(min_filters, 1), n_all), math.ceil(min_ratio * n_all - 1e-9))
    if granularity > 1 and n % granularity:
        n += granularity - n % granularity
    return min(n, n_all)


def retained_count(s: np.ndarray, threshold: float, granularity: int, min_filters: int, min_ratio: float = 0.0) -> int:
    """TLT: n = count(s > pth); n = max(n, min(nf, N)); round n up to a multiple of pg; cap at N (n >= 1).
    `min_ratio` (tlkit) also keeps at least that fraction of the N filters."""
    return floored_count(int(np.count_nonzero(s > threshold)), len(s), granularity, min_filters, min_ratio)


def top_idx(s: np.ndarray, n: int) -> np.ndarray:
    """The top-n filters by normalized norm (ties: earlier first), in original order."""
    if n >= len(s):
        return np.arange(len(s))
    return np.sort(np.argsort(-s, kind="stable")[:n])


def retained_idx(
    s: np.ndarray, threshold: float, granularity: int, min_filters: int, min_ratio: float = 0.0
) -> np.ndarray:
    """Indices kept by TLT's rule: the top `retained_count` filters by normalized norm, in original order."""
    return top_idx(s, retained_count(s, threshold, granularity, min_filters, min_ratio))


# -- analysis ---------------------------------------------------------------------------------------

Segment = tuple[int, int, int]  # (space id, channels, rep: consecutive entries per channel after Flatten)
Layout = tuple[Segment, ...]


@dataclass
class _Space:
    size: int
    producers: list[str] = field(default_factory=list)
    stats: list[np.ndarray] = field(default_factory=list)
    fixed: bool = False


@dataclass
class _Blocker:
    node: str
    op: str
    layouts: list[Layout]


def _attr(node: dict, key: str, default: Any = None) -> Any:
    return node.get("attrs", node.get("attr", node.get("param", {}))).get(key, default)


def _tuple(text: Any) -> tuple:
    if text is None:
        return ()
    if isinstance(text, (tuple, list)):
        return tuple(text)
    text = str(text).strip()
    if text in ("", "None", "()"):
        return ()
    return tuple(None if v.strip() == "None" else int(v) for v in text.strip("()[]").split(",") if v.strip())


def _bool(text: Any, default: bool) -> bool:
    if text is None:
        return default
    return str(text).lower() in ("true", "1")


class _Graph:
    """The analysed graph: layouts of every tensor, spaces and their groups, and what to slice."""

    def __init__(self, g: dict, params: dict[str, Any], shapes: dict[tuple[int, int], tuple], excluded: set[str]):
        self.g = g
        self.nodes: list[dict] = g["nodes"]
        self.params = params
        self.shapes = shapes
        self.excluded = excluded
        self.spaces: list[_Space] = []
        self.parent: list[int] = []
        self.layouts: dict[tuple[int, int], Layout | None] = {}
        # param key -> [(axis, layout)], and which of those are consumer-side (input channels)
        self.slices: dict[str, list[tuple[int, Layout]]] = {}
        self.input_side: dict[str, tuple[int, Layout]] = {}
        self.attr_updates: list[tuple[int, str, Layout]] = []
        self.blockers: list[_Blocker] = []
        self.weighted: list[tuple[int, Layout | None]] = []  # (node id, output layout) for the report
        self.numpy_cache: dict[str, np.ndarray] = {}
        self.macs_per_weight: list[tuple[str, int]] = []  # (weight param key, MACs per element): prices a plan

    # union-find over spaces
    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra
            sa, sb = self.spaces[ra], self.spaces[rb]
            sa.producers += sb.producers
            sa.stats += sb.stats
            sa.fixed = sa.fixed or sb.fixed

    def new_space(self, size: int, producer: str | None = None, fixed: bool = False) -> int:
        self.spaces.append(_Space(size, [producer] if producer else [], [], fixed))
        self.parent.append(len(self.parent))
        return len(self.spaces) - 1

    def fix(self, layout: Layout | None) -> None:
        for sid, _, _ in layout or ():
            self.spaces[self.find(sid)].fixed = True

    # helpers
    def param_key(self, nid: int) -> str | None:
        node = self.nodes[nid]
        if node["op"] != "null":
            return None
        for prefix in ("arg:", "aux:"):
            if prefix + node["name"] in self.params:
                return prefix + node["name"]
        return None

    def array(self, key: str) -> np.ndarray:
        if key not in self.numpy_cache:
            v = self.params[key]
            self.numpy_cache[key] = v.asnumpy() if hasattr(v, "asnumpy") else np.asarray(v)
        return self.numpy_cache[key]

    def shape(self, entry: Sequence[int]) -> tuple:
        return self.shapes.get((entry[0], entry[1]), ())

    def layout(self, entry: Sequence[int]) -> Layout | None:
        return self.layouts.get((entry[0], entry[1]))

    def add_slice(self, key: str | None, axis: int, layout: Layout | None, input_side: bool = False) -> None:
        if key is None or not layout:
            return
        for prev_axis, prev in self.slices.get(key, []):
            if prev_axis == axis:  # a shared parameter (e.g. one conv applied twice): one set of channels
                if prev != layout:
                    self._unify([prev, layout])
                return
        self.slices.setdefault(key, []).append((axis, layout))
        if input_side:
            self.input_side[key] = (axis, layout)

    def block(self, node: dict, layouts: Iterable[Layout | None]) -> None:
        ls = [lay for lay in layouts if lay]
        if ls:
            self.blockers.append(_Blocker(node["name"], node["op"], ls))

    def is_excluded(self, node: dict) -> bool:
        return node["name"] in self.excluded

    # the pass
    def analyse(self, normalizer: str) -> None:
        for nid, node in enumerate(self.nodes):
            op = node["op"]
            if op == "null":
                continue
            data = [e for e in node["inputs"] if self.param_key(e[0]) is None]
            in_layouts = [self.layout(e) for e in data]
            if self.is_excluded(node) and op not in WEIGHTED:  # excluded conv/FC: only outputs kept
                for lay in in_layouts:
                    self.fix(lay)
            try:
                self._dispatch(nid, node, data, in_layouts, normalizer)
            except (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError):
                # attributes or shapes we cannot read: treat the op as one we do not understand
                self.layouts.pop((nid, 0), None)
                self.block(node, in_layouts)
        for nid, idx, *_ in self.g["heads"]:
            self.fix(self.layouts.get((nid, idx)))

    def _dispatch(self, nid: int, node: dict, data: list, in_layouts: list[Layout | None], normalizer: str) -> None:
        op = node["op"]
        handler = getattr(self, "_op_" + op, None)
        if op in PASS_THROUGH:
            self._pass(nid, node, in_layouts)
        elif op in ELEMENTWISE:
            self._elementwise(nid, node)
        elif op in SHAPE_ONLY:
            pass  # the output has no channel structure and reads no channel values
        elif handler is not None:
            handler(nid, node, data, in_layouts, normalizer)
        else:
            self.block(node, in_layouts)

    def _pass(self, nid: int, node: dict, in_layouts: list[Layout | None]) -> None:
        if len(in_layouts) == 1:
            self.layouts[(nid, 0)] = in_layouts[0]
        else:
            self.block(node, in_layouts)

    def _unify(self, layouts: list[Layout]) -> Layout | None:
        """Put the channels of same-shaped layouts into one group; None (and all fixed) if they differ."""
        first = layouts[0]
        for other in layouts[1:]:
            if [(n, r) for _, n, r in other] != [(n, r) for _, n, r in first]:
                for lay in layouts:
                    self.fix(lay)
                return None
        for other in layouts[1:]:
            for (a, _, _), (b, _, _) in zip(first, other):
                self.union(a, b)
        return first

    def _elementwise(self, nid: int, node: dict) -> None:
        out_shape = self.shape((nid, 0))
        nd = len(out_shape)
        channels = out_shape[1] if nd > 1 else 1
        carriers: list[Layout | None] = []
        params: list[tuple[str, int]] = []
        for e in node["inputs"]:
            key = self.param_key(e[0])
            s = self.shape(e) if key is None else tuple(self.params[key].shape)
            ax = 1 - (nd - len(s))  # the input axis that broadcasts onto the channel axis
            lay = None if key else self.layout(e)
            if ax < 0 or s[ax] == 1 or channels == 1:
                self.fix(lay)  # constant along channels (e.g. a 1-filter conv): keeps all its filters
                continue
            if key is not None:
                params.append((key, ax))
                continue
            if ax != 1 and lay:  # its own axis 1 is not the channel axis here
                self.fix(lay)
                lay = None
            carriers.append(lay)
        if not carriers or any(lay is None for lay in carriers):
            for lay in carriers:
                self.fix(lay)
            return
        out = self._unify(cast(list[Layout], carriers))  # none is None: checked above
        self.layouts[(nid, 0)] = out
        for key, ax in params:
            self.add_slice(key, ax, out)

    def _op_Convolution(self, nid, node, data, in_layouts, normalizer) -> None:
        inputs = node["inputs"]
        wkey = self.param_key(inputs[1][0]) if len(inputs) > 1 else None
        bkey = self.param_key(inputs[2][0]) if len(inputs) > 2 else None
        layout = _attr(node, "layout") or "NCHW"
        if wkey is None or len(data) != 1 or not layout.startswith("NC"):
            self.block(node, in_layouts)
            return
        in_lay = in_layouts[0]
        groups = int(_attr(node, "num_group", 1))
        filters = int(_attr(node, "num_filter"))
        in_ch = self.shape(data[0])[1]
        w = self.array(wkey)
        if groups > 1 and groups == in_ch == filters:  # depthwise (multiplier 1): follows its input
            self.weighted.append((nid, in_lay))
            self.layouts[(nid, 0)] = in_lay
            if not in_lay:
                return
            if self.is_excluded(node):
                self.fix(in_lay)
            else:
                s = normalize(filter_norms(w), normalizer)
                off = 0
                for sid, n, _ in in_lay:
                    self.spaces[self.find(sid)].stats.append(s[off : off + n])
                    off += n
            self.add_slice(wkey, 0, in_lay)
            self.add_slice(bkey, 0, in_lay)
            self.attr_updates += [(nid, "num_filter", in_lay), (nid, "num_group", in_lay)]
            return
        if groups > 1:  # grouped conv: channels are tied to groups; keep its inputs and outputs whole
            self.fix(in_lay)
            sid = self.new_space(filters, node["name"], fixed=True)
        else:
            self.add_slice(wkey, 1, in_lay, input_side=True)
            sid = self.new_space(filters, node["name"], fixed=self.is_excluded(node))
            self.spaces[sid].stats.append(normalize(filter_norms(w), normalizer))
        out: Layout = ((sid, filters, 1),)
        self.layouts[(nid, 0)] = out
        self.weighted.append((nid, out))
        self.add_slice(wkey, 0, out)
        self.add_slice(bkey, 0, out)
        self.attr_updates.append((nid, "num_filter", out))

    def _op_Deconvolution(self, nid, node, data, in_layouts, normalizer) -> None:
        inputs = node["inputs"]
        wkey = self.param_key(inputs[1][0]) if len(inputs) > 1 else None
        if wkey is None or len(data) != 1 or not (_attr(node, "layout") or "NCHW").startswith("NC"):
            self.block(node, in_layouts)
            return
        if int(_attr(node, "num_group", 1)) > 1:
            self.fix(in_layouts[0])
        else:
            self.add_slice(wkey, 0, in_layouts[0], input_side=True)  # weight is (C_in, F, kh, kw)
        # TLT: a transposed convolution's outputs are never pruned
        sid = self.new_space(int(_attr(node, "num_filter")), node["name"], fixed=True)
        self.layouts[(nid, 0)] = ((sid, self.spaces[sid].size, 1),)
        self.weighted.append((nid, self.layouts[(nid, 0)]))

    def _op_FullyConnected(self, nid, node, data, in_layouts, normalizer) -> None:
        inputs = node["inputs"]
        wkey = self.param_key(inputs[1][0]) if len(inputs) > 1 else None
        bkey = self.param_key(inputs[2][0]) if len(inputs) > 2 else None
        in_shape = self.shape(data[0]) if data else ()
        flatten = _bool(_attr(node, "flatten"), True)
        if wkey is None or len(data) != 1 or (len(in_shape) > 2 and not flatten):
            self.block(node, in_layouts)
            return
        in_lay = in_layouts[0]
        if in_lay and len(in_shape) > 2:  # implicit flatten: NCHW -> each channel spans H*W inputs
            in_lay = self._flattened(in_lay, in_shape)
        self.add_slice(wkey, 1, in_lay, input_side=True)
        hidden = int(_attr(node, "num_hidden"))
        sid = self.new_space(hidden, node["name"], fixed=self.is_excluded(node))
        self.spaces[sid].stats.append(normalize(filter_norms(self.array(wkey)), normalizer))
        out: Layout = ((sid, hidden, 1),)
        self.layouts[(nid, 0)] = out
        self.weighted.append((nid, out))
        self.add_slice(wkey, 0, out)
        self.add_slice(bkey, 0, out)
        self.attr_updates.append((nid, "num_hidden", out))

    @staticmethod
    def _flattened(layout: Layout, in_shape: tuple) -> Layout:
        hw = int(np.prod(in_shape[2:]))
        return tuple((s, n, r * hw) for s, n, r in layout)

    def _op_Flatten(self, nid, node, data, in_layouts, normalizer) -> None:
        lay = in_layouts[0] if len(in_layouts) == 1 else None
        self.layouts[(nid, 0)] = self._flattened(lay, self.shape(data[0])) if lay else None

    _op_flatten = _op_Flatten

    def _op_Reshape(self, nid, node, data, in_layouts, normalizer) -> None:
        in_shape, out_shape = self.shape(data[0]), self.shape((nid, 0))
        if in_shape[:2] == out_shape[:2] and math.prod(in_shape[2:]) == math.prod(out_shape[2:]):
            self.layouts[(nid, 0)] = in_layouts[0]  # axis 1 and what each entry spans are unchanged
        elif len(out_shape) == 2 and len(in_shape) > 2 and out_shape[0] == in_shape[0]:
            self._op_Flatten(nid, node, data, in_layouts, normalizer)  # (N, -1): a flatten
        else:
            self.block(node, in_layouts)

    _op_reshape = _op_Reshape
    _op_expand_dims = _op_squeeze = _op_Reshape  # e.g. SE blocks' (N, C) -> (N, C, 1, 1)

    def _op_BatchNorm(self, nid, node, data, in_layouts, normalizer) -> None:
        if int(_attr(node, "axis", 1)) % len(self.shape(data[0])) != 1 or len(data) != 1:
            self.block(node, in_layouts)
            return
        lay = in_layouts[0]
        self.layouts[(nid, 0)] = lay
        for e in node["inputs"][1:]:
            self.add_slice(self.param_key(e[0]), 0, lay)

    _op__contrib_SyncBatchNorm = _op_BatchNorm

    def _op_InstanceNorm(self, nid, node, data, in_layouts, normalizer) -> None:
        self._op_BatchNorm(nid, node, data, in_layouts, normalizer)  # per-channel gamma/beta

    def _op_LeakyReLU(self, nid, node, data, in_layouts, normalizer) -> None:
        lay = in_layouts[0] if len(data) == 1 else None
        self.layouts[(nid, 0)] = lay
        for e in node["inputs"][1:]:  # prelu's gamma: per channel, or one shared value
            key = self.param_key(e[0])
            if key is not None and self.params[key].shape[0] > 1:
                self.add_slice(key, 0, lay)

    def _op_Pooling(self, nid, node, data, in_layouts, normalizer) -> None:
        if not (_attr(node, "layout") or "NCHW").startswith("NC"):
            self.block(node, in_layouts)
            return
        self.layouts[(nid, 0)] = in_layouts[0]

    def _op_Pad(self, nid, node, data, in_layouts, normalizer) -> None:
        pw = _tuple(_attr(node, "pad_width"))
        if len(pw) >= 4 and any(pw[2:4]):  # padding along channels
            self.block(node, in_layouts)
            return
        self.layouts[(nid, 0)] = in_layouts[0]

    _op_pad = _op_Pad

    def _op_UpSampling(self, nid, node, data, in_layouts, normalizer) -> None:
        if (_attr(node, "sample_type") or "nearest") != "nearest" or len(data) != 1:
            self.block(node, in_layouts)
            return
        self.layouts[(nid, 0)] = in_layouts[0]

    def _axis_ok(self, node: dict, entry: Sequence[int], axis: Any, default: int) -> bool:
        """True when the op works along an axis other than the channel axis."""
        nd = len(self.shape(entry))
        a = int(axis) if axis not in (None, "None") else default
        return (a % nd if nd else a) != 1

    def _op_softmax(self, nid, node, data, in_layouts, normalizer) -> None:
        if len(data) == 1 and self._axis_ok(node, data[0], _attr(node, "axis"), -1):
            self.layouts[(nid, 0)] = in_layouts[0]
        else:
            self.block(node, in_layouts)

    _op_log_softmax = _op_softmax
    _op_softmin = _op_softmax

    def _op_slice_axis(self, nid, node, data, in_layouts, normalizer) -> None:
        self._op_softmax(nid, node, data, in_layouts, normalizer)

    def _op_slice(self, nid, node, data, in_layouts, normalizer) -> None:
        i, o = self.shape(data[0]), self.shape((nid, 0))
        if len(i) == len(o) > 1 and i[1] == o[1]:
            self.layouts[(nid, 0)] = in_layouts[0]
        else:
            self.block(node, in_layouts)

    def _op_slice_like(self, nid, node, data, in_layouts, normalizer) -> None:
        nd = len(self.shape((nid, 0)))
        axes = [a % nd for a in _tuple(_attr(node, "axes")) if a is not None]
        if axes and 1 not in axes:  # the second input only lends its spatial shape
            self.layouts[(nid, 0)] = self.layout(node["inputs"][0])  # None when it is a parameter
        else:
            self.block(node, in_layouts)

    def _op_repeat(self, nid, node, data, in_layouts, normalizer) -> None:
        axis = _attr(node, "axis")
        if len(data) == 1 and axis not in (None, "None") and self._axis_ok(node, data[0], axis, 1):
            self.layouts[(nid, 0)] = in_layouts[0]  # e.g. YOLOv3's nearest upsampling along H and W
        else:
            self.block(node, in_layouts)

    def _op_tile(self, nid, node, data, in_layouts, normalizer) -> None:
        i, o = self.shape(data[0]) if data else (), self.shape((nid, 0))
        if len(data) == 1 and len(i) == len(o) > 1 and i[1] == o[1]:
            self.layouts[(nid, 0)] = in_layouts[0]  # channels not tiled
        else:
            self.block(node, in_layouts)

    def _op_SliceChannel(self, nid, node, data, in_layouts, normalizer) -> None:
        if len(data) == 1 and self._axis_ok(node, data[0], _attr(node, "axis"), 1):
            for i in range(int(_attr(node, "num_outputs", 1))):
                self.layouts[(nid, i)] = in_layouts[0]
        else:  # a split along channels: TLT keeps the layer feeding a Split whole, and so do we
            for lay in in_layouts:
                self.fix(lay)

    _op_split = _op_SliceChannel

    def _op_Concat(self, nid, node, data, in_layouts, normalizer) -> None:
        nd = len(self.shape((nid, 0)))
        dim = int(_attr(node, "dim", 1)) % nd
        if len(data) != len(node["inputs"]):
            self.block(node, in_layouts)
            return
        if dim != 1:  # concat along another axis: every input's channel c is the output's channel c
            if any(lay is None for lay in in_layouts):
                for lay in in_layouts:
                    self.fix(lay)
                return
            self.layouts[(nid, 0)] = self._unify(cast(list[Layout], in_layouts))  # none is None: checked above
            return
        out: list[Segment] = []
        for e, lay in zip(data, in_layouts):
            if lay is None:  # an input we do not track: a fixed block of its channels
                n = self.shape(e)[1]
                lay = ((self.new_space(n, fixed=True), n, 1),)
            out.extend(lay)
        self.layouts[(nid, 0)] = tuple(out)

    _op_concat = _op_Concat

    def _op_mean(self, nid, node, data, in_layouts, normalizer) -> None:
        nd = len(self.shape(data[0])) if data else 0
        axes = [a % nd for a in _tuple(_attr(node, "axis")) if a is not None] if nd else []
        if len(data) == 1 and axes and min(axes) > 1 and not _bool(_attr(node, "exclude"), False):
            self.layouts[(nid, 0)] = in_layouts[0]  # a spatial reduction
        else:
            self.block(node, in_layouts)

    _op_sum = _op_max = _op_min = _op_prod = _op_mean


# -- plan and rewrite -------------------------------------------------------------------------------


@dataclass
class PruneResult:
    symbol_json: str
    params: dict[str, Any]  # "arg:NAME"/"aux:NAME" -> mx.nd.NDArray, ready for symbol_block
    report: PruneReport
    # consumer-side masks: param key -> (axis, kept input indices, original size). Zeroing the other
    # entries of these weights in the original model makes it compute what the pruned model computes
    # (used by tlkit.testing.pruning.assert_prune_equivalent).
    input_masks: dict[str, tuple[int, np.ndarray, int]] = field(default_factory=dict)


class _Pruner:
    """The plan: per prunable group (a union-find root), its merged scores and how many channels it keeps."""

    def __init__(
        self,
        graph: _Graph,
        criterion: str,
        granularity: int,
        min_filters: int,
        min_ratio: float = 0.0,
        allocation: str = "threshold",
    ):
        self.graph = graph
        self.granularity, self.min_filters, self.min_ratio = granularity, min_filters, min_ratio
        self.allocation = allocation
        self.roots = sorted({graph.find(i) for i in range(len(graph.spaces))})
        self.merged: dict[int, np.ndarray] = {}
        for r in self.roots:
            sp = graph.spaces[r]
            if not sp.fixed and sp.stats:
                self.merged[r] = merge_stats(sp.stats, criterion)
        self.root_of = [graph.find(i) for i in range(len(graph.spaces))]
        self.param_shapes = {k: tuple(graph.params[k].shape) for k in graph.params}
        self.relative = self._importance_per_mac() if allocation == "global" else {}

    def _importance_per_mac(self) -> dict[int, np.ndarray]:
        """Global allocation: each filter's norm relative to its group's mean (comparable across layers),
        divided by the group's multiply-accumulates per channel relative to the mean group's: channels of
        wide, high-resolution layers must be worth their cost. Costs are the unpruned network's."""
        full = {r: len(s) for r, s in self.merged.items()}
        total = self.flops(full)
        cost = {r: max(total - self.flops({**full, r: n - 1}), 1) for r, n in full.items()}
        mean_cost = float(np.mean(list(cost.values()))) if cost else 1.0
        out = {}
        for r, s in self.merged.items():
            rel = s / s.mean() if s.mean() > 0 else s
            out[r] = rel / (cost[r] / mean_cost)
        return out

    # -- allocation: one level per allocation, monotone in how much is pruned --------------------------

    def levels(self) -> np.ndarray:
        """Every level at which some group's count changes, from no pruning to the most."""
        if self.allocation == "uniform":  # the kept fraction, from 1 down
            fracs = {1.0} | {k / len(s) for s in self.merged.values() for k in range(1, len(s))}
            return np.array(sorted(fracs, reverse=True))
        scores = self.relative if self.allocation == "global" else self.merged
        return np.unique(np.concatenate([[0.0], *scores.values()])) if scores else np.zeros(1)

    def counts(self, level: float) -> dict[int, int]:
        """Channels kept per group at this level (threshold, or kept fraction for uniform)."""
        pg, nf, ratio = self.granularity, self.min_filters, self.min_ratio
        if self.allocation == "uniform":
            return {
                r: floored_count(math.ceil(level * len(s) - 1e-9), len(s), pg, nf, ratio)
                for r, s in self.merged.items()
            }
        scores = self.relative if self.allocation == "global" else self.merged
        return {r: retained_count(s, level, pg, nf, ratio) for r, s in scores.items()}

    def keeps(self, counts: dict[int, int]) -> dict[int, np.ndarray]:
        """Kept indices of the groups that lose channels: the top-n by merged norm."""
        return {r: top_idx(self.merged[r], n) for r, n in counts.items() if n < len(self.merged[r])}

    # -- what a plan costs ------------------------------------------------------------------------------

    def layout_count(self, layout: Layout, counts: dict[int, int]) -> int:
        return sum(counts.get(self.root_of[s], n) * r for s, n, r in layout)

    def expand(self, layout: Layout | None, keeps: dict[int, np.ndarray]) -> np.ndarray | None:
        """Kept positions along a tensor's channel axis, or None when nothing was removed."""
        if not layout or not any(self.root_of[s] in keeps for s, _, _ in layout):
            return None
        parts, off = [], 0
        for s, n, r in layout:
            k = keeps.get(self.root_of[s])
            k = np.arange(n) if k is None else k
            idx = (k[:, None] * r + np.arange(r)).ravel() if r > 1 else k
            parts.append(idx + off)
            off += n * r
        return np.concatenate(parts)

    def param_shape(self, key: str, counts: dict[int, int]) -> tuple:
        shape = list(self.param_shapes[key])
        for axis, lay in self.graph.slices.get(key, []):
            shape[axis] = self.layout_count(lay, counts)
        return tuple(shape)

    def param_count(self, counts: dict[int, int]) -> int:
        return sum(math.prod(self.param_shape(key, counts)) for key in self.param_shapes)

    def flops(self, counts: dict[int, int]) -> int:
        """2 x MACs of the weighted layers with these counts (as `_flops` measures a graph)."""
        return 2 * sum(factor * math.prod(self.param_shape(key, counts)) for key, factor in self.graph.macs_per_weight)


def _infer_shapes(symbol_json: str, g: dict, params: dict[str, Any], input_shape: tuple) -> dict:
    """(node id, output index) -> shape, for batch 1, by MXNet's own shape inference."""
    import mxnet as mx

    sym = mx.sym.load_json(symbol_json)
    arg_names = set(sym.list_arguments())
    known = {k[4:]: tuple(v.shape) for k, v in params.items() if k.startswith("arg:") and k[4:] in arg_names}
    inputs = [n for n in arg_names if n not in known]
    if not inputs:
        raise PruneError("the graph has no data input")
    kwargs = dict(known)
    kwargs[min(inputs, key=lambda n: (n != "data", n))] = (1, *input_shape)
    internals = sym.get_internals()
    try:
        _, out_shapes, _ = internals.infer_shape(**kwargs)
    except mx.base.MXNetError as err:
        first = str(err).strip().splitlines()[0][:300]
        raise PruneError(f"cannot infer the graph's shapes for input shape {tuple(input_shape)}: {first}") from None
    names = internals.list_outputs()
    by_name = dict(zip(names, out_shapes))
    # Walk the outputs in node order: node names can repeat (a block applied twice), positions cannot.
    shapes: dict[tuple[int, int], tuple] = {}
    p = 0
    for nid, node in enumerate(g["nodes"]):
        name = node["name"]
        if node["op"] == "null":
            if p < len(names) and names[p] == name:
                shapes[(nid, 0)] = out_shapes[p]
                p += 1
            elif name in by_name:
                shapes[(nid, 0)] = by_name[name]
            continue
        if p < len(names) and names[p] == f"{name}_output":
            shapes[(nid, 0)] = out_shapes[p]
            p += 1
            continue
        k = 0
        while p < len(names) and names[p] == f"{name}_output{k}":
            shapes[(nid, k)] = out_shapes[p]
            p, k = p + 1, k + 1
        if k == 0:  # not where expected: fall back to the name
            if f"{name}_output" in by_name:
                shapes[(nid, 0)] = by_name[f"{name}_output"]
            while f"{name}_output{k}" in by_name:
                shapes[(nid, k)] = by_name[f"{name}_output{k}"]
                k += 1
    return shapes


def _macs_per_weight(g: dict, shapes: dict) -> list[tuple[str, int]]:
    """(weight node name, multiply-accumulates per weight element) of every Convolution / Deconvolution /
    FullyConnected at batch 1: a conv's MACs are its output's H*W times its weight's size, whatever the
    channel counts, so this also prices a pruning plan."""
    out = []
    for nid, node in enumerate(g["nodes"]):
        op = node["op"]
        if op not in WEIGHTED or len(node["inputs"]) < 2:
            continue
        inp, out_shape = shapes.get(tuple(node["inputs"][0][:2]), ()), shapes.get((nid, 0), ())
        if not (inp and out_shape):
            continue
        if op == "Convolution":
            factor = math.prod(out_shape[2:])
        elif op == "Deconvolution":
            factor = math.prod(inp[2:])
        else:
            factor = math.prod(inp[:-1]) if not _bool(_attr(node, "flatten"), True) else 1
        out.append((g["nodes"][node["inputs"][1][0]]["name"], factor))
    return out


def _flops(g: dict, shapes: dict) -> int:
    """2 x multiply-accumulates of the Convolution / Deconvolution / FullyConnected layers (batch 1)."""
    weight_shape = {g["nodes"][nid]["name"]: shp for (nid, _), shp in shapes.items() if g["nodes"][nid]["op"] == "null"}
    return 2 * sum(
        factor * math.prod(weight_shape.get(name, ()))
        for name, factor in _macs_per_weight(g, shapes)
        if name in weight_shape
    )


def _resolve_excluded(g: dict, names: Iterable[str]) -> set[str]:
    """Map user layer names (node names, with or without Gluon's `_fwd`) to node names."""
    node_names = {n["name"] for n in g["nodes"] if n["op"] != "null"}
    out = set()
    for name in (part for n in names for part in str(n).split(",")):  # "-el a,b" works too
        name = name.strip()
        if not name:
            continue
        if name in node_names:
            out.add(name)
        elif name + "_fwd" in node_names:
            out.add(name + "_fwd")
        else:
            layers = [n["name"] for n in g["nodes"] if n["op"] in WEIGHTED]
            raise PruneError(
                f"excluded layer {name!r} is not a node of this graph{did_you_mean(name, node_names)}; "
                f"prunable layers are e.g. {', '.join(layers[:5])}"
            )
    return out


def _check_options(
    threshold,
    granularity,
    min_filters,
    normalizer,
    equalization,
    allocation,
    min_channel_ratio,
    targets: dict[str, float | None],
) -> None:
    if normalizer not in NORMALIZERS:
        raise PruneError(f"normalizer {normalizer!r}: expected one of {', '.join(NORMALIZERS)}")
    if equalization not in EQUALIZATIONS:
        raise PruneError(f"equalization criterion {equalization!r}: expected one of {', '.join(EQUALIZATIONS)}")
    if allocation not in ALLOCATIONS:
        raise PruneError(f"allocation {allocation!r}: expected one of {', '.join(ALLOCATIONS)}")
    if int(granularity) < 1:
        raise PruneError(f"pruning granularity {granularity}: expected an integer >= 1")
    if int(min_filters) < 0:
        raise PruneError(f"min_num_filters {min_filters}: expected an integer >= 0")
    if not 0 <= float(min_channel_ratio) <= 1:
        raise PruneError(
            f"min_channel_ratio {min_channel_ratio}: expected a fraction of each layer's channels in [0, 1]"
        )
    if threshold is not None and (not np.isfinite(threshold) or threshold < 0):
        raise PruneError(f"pruning threshold {threshold}: expected a number >= 0")
    ratio = targets.get("target_ratio")
    if ratio is not None and not (0 < float(ratio) <= 1):
        raise PruneError(f"target ratio {ratio}: expected a parameter ratio in (0, 1]")
    for name in ("target_flops", "target_macs"):
        v = targets.get(name)
        if v is not None and not (np.isfinite(v) and v > 0):
            raise PruneError(f"{name} {v}: expected a ratio of the original in (0, 1], or an absolute count > 1")
    if allocation == "uniform" and all(v is None for v in targets.values()):
        raise PruneError(
            "allocation 'uniform' keeps the same fraction of every layer: give the size to reach with "
            "--target_ratio, --target_flops or --target_macs (-pth is a threshold, for 'threshold'/'global')"
        )


def _search_level(pruner: _Pruner, within: Callable[[dict[int, int]], bool]) -> float:
    """The allocation's lightest level whose plan is `within` the targets ("at most": asking for 0.25 means a
    model at least 4x smaller). Costs only change at `pruner.levels()` and fall as the level index rises, so
    bisect over those (exact, ~log2(#filters) steps)."""
    values = pruner.levels()
    ok = lambda i: within(pruner.counts(float(values[i])))  # noqa: E731
    lo, hi = 0, len(values) - 1
    if ok(lo):
        return float(values[lo])
    if not ok(hi):
        return float(values[hi])  # cannot prune more than this (min_num_filters / min_channel_ratio / granularity)
    while hi - lo > 1:  # invariant: not ok(lo), ok(hi)
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return float(values[hi])


def _as_fraction(value: float | None, total: float) -> float | None:
    """A target given as a ratio (<= 1) or an absolute count (> 1), as a ratio of `total`."""
    if value is None:
        return None
    return float(value) if value <= 1 else float(value) / total


def prune_graph(
    symbol_json: str,
    params: dict[str, Any],
    *,
    input_shape: Sequence[int],
    threshold: float = 0.1,
    granularity: int = 8,
    min_filters: int = 16,
    normalizer: str = "max",
    equalization: str = "union",
    excluded_layers: Iterable[str] = (),
    target_ratio: float | None = None,
    allocation: str = "threshold",
    min_channel_ratio: float = DEFAULT_MIN_CHANNEL_RATIO,
    target_flops: float | None = None,
    target_macs: float | None = None,
) -> PruneResult:
    """Prune the filters of a symbol graph (TLT `prune` semantics). See the module docstring.

    `input_shape` is (C, H, W) without the batch. Targets, when given, replace `threshold` by the lightest
    level of the `allocation` that reaches all of them (at most the target): `target_ratio` (pruned/original
    parameters), `target_flops` / `target_macs` (a ratio of the original's FLOPs (= MACs ratio) when <= 1,
    else an absolute count at batch 1). `min_channel_ratio` keeps at least that fraction of every layer
    (0 = TLT exactly: only `min_filters`). `excluded_layers` are node names (or Gluon block names, without
    `_fwd`; "a,b" lists work): a Convolution/FullyConnected keeps all its outputs, as do the layers it is
    equalized with; any other node keeps all the channels it reads.
    """
    threshold = 0.1 if threshold is None else threshold  # TLT's CLI default
    targets = {"target_ratio": target_ratio, "target_flops": target_flops, "target_macs": target_macs}
    _check_options(
        threshold, granularity, min_filters, normalizer, equalization, allocation, min_channel_ratio, targets
    )
    g = _parse_graph(symbol_json)
    input_shape = tuple(int(v) for v in input_shape)
    shapes = _infer_shapes(symbol_json, g, params, input_shape)
    graph = _Graph(g, params, shapes, _resolve_excluded(g, excluded_layers))
    graph.analyse(normalizer)
    graph.macs_per_weight = [("arg:" + name, f) for name, f in _macs_per_weight(g, shapes) if "arg:" + name in params]
    pruner = _Pruner(graph, equalization, int(granularity), int(min_filters), float(min_channel_ratio), allocation)

    level = float(threshold)
    if any(v is not None for v in targets.values()):
        level = _level_for_targets(pruner, target_ratio, target_flops, target_macs)
    keeps = pruner.keeps(pruner.counts(level))
    _check_not_blocked(graph, pruner, keeps)
    new_params, input_masks, new_shapes = _cut_params(graph, pruner, keeps)
    new_json = _rewrite_graph(g, graph, pruner, keeps, new_shapes)

    options = {
        "threshold": level,  # the allocation's level: a threshold, or the kept fraction for uniform
        "allocation": allocation,
        "granularity": int(granularity),
        "min_filters": int(min_filters),
        "min_channel_ratio": float(min_channel_ratio),
        "normalizer": normalizer,
        "equalization": equalization,
        "excluded_layers": sorted(graph.excluded),
        **targets,
    }
    new_shapes_all = _infer_shapes(new_json, g, new_params, input_shape) if keeps else shapes
    report = PruneReport(
        layers=_layer_rows(graph, pruner, keeps, g),
        params_before=sum(math.prod(v.shape) for v in params.values()),
        params_after=sum(math.prod(v.shape) for v in new_params.values()),
        flops_before=_flops(json.loads(symbol_json), shapes),
        flops_after=_flops(g, new_shapes_all),
        threshold=level,
        options=options,
    )
    return PruneResult(new_json, new_params, report, input_masks)


# -- the phases of prune_graph ----------------------------------------------------------------------


def _parse_graph(symbol_json: str) -> dict[str, Any]:
    try:
        g = json.loads(symbol_json)
        g["nodes"], g["heads"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise PruneError(f"not an MXNet symbol graph: {err}") from None
    return g


def _level_for_targets(
    pruner: _Pruner, target_ratio: float | None, target_flops: float | None, target_macs: float | None
) -> float:
    """The lightest pruning level of the pruner's allocation that reaches every given target."""
    params_total, flops_total = pruner.param_count({}), pruner.flops({})
    max_params = _as_fraction(target_ratio, params_total)
    # MACs and FLOPs differ by the factor 2 only: one FLOPs budget
    flops_budgets = [
        f
        for f in (_as_fraction(target_flops, flops_total), _as_fraction(target_macs, flops_total / 2))
        if f is not None
    ]
    max_flops = min(flops_budgets) if flops_budgets else None

    def within(counts: dict[int, int]) -> bool:
        if max_params is not None and pruner.param_count(counts) > max_params * params_total:
            return False
        return max_flops is None or pruner.flops(counts) <= max_flops * flops_total

    return _search_level(pruner, within)


def _check_not_blocked(graph: _Graph, pruner: _Pruner, keeps: Any) -> None:
    """A pruned channel must never reach an op the pruner does not understand: PruneError naming them."""
    blocked = []
    for b in graph.blockers:
        hit = [s for lay in b.layouts for s, _, _ in lay if pruner.root_of[s] in keeps]
        if hit:
            blocked.append((b, graph.spaces[pruner.root_of[hit[0]]].producers[0]))
    if blocked:
        what = "; ".join(f"node {b.node!r} (op {b.op!r}) reads pruned layer {layer!r}" for b, layer in blocked[:3])
        more = f" and {len(blocked) - 3} more" if len(blocked) > 3 else ""
        names = ",".join(dict.fromkeys(b.node for b, _ in blocked))
        raise PruneError(
            f"cannot prune through ops the pruner does not understand: {what}{more}; keep the channels they "
            f"read with `-el {names}` (or exclude the pruned layers)"
        )


def _cut_params(
    graph: _Graph, pruner: _Pruner, keeps: Any
) -> tuple[dict[str, Any], dict[str, tuple[int, np.ndarray, int]], dict[str, tuple]]:
    """(the parameters with the pruned channels cut out, the input masks, {weight name: new shape})."""
    import mxnet as mx

    new_params: dict[str, Any] = dict(graph.params)
    input_masks: dict[str, tuple[int, np.ndarray, int]] = {}
    new_shapes: dict[str, tuple] = {}
    for key, slices in graph.slices.items():
        cut = {}
        for axis, lay in slices:
            idx = pruner.expand(lay, keeps)
            if idx is None:
                continue
            cut[axis] = idx
            if graph.input_side.get(key) == (axis, lay):
                input_masks[key] = (axis, idx, int(graph.params[key].shape[axis]))
        if not cut:
            continue
        arr = graph.array(key)
        if set(cut) == {0, 1}:  # a conv/FC weight losing inputs and outputs: one gather, not two
            arr = arr[np.ix_(cut[0], cut[1])]
        else:
            for axis, idx in cut.items():
                arr = np.take(arr, idx, axis=axis)
        # zero-copy: the fresh numpy slice becomes the NDArray's buffer
        new_params[key] = mx.nd.from_numpy(np.ascontiguousarray(arr), zero_copy=True)
        new_shapes[key[4:]] = arr.shape
    return new_params, input_masks, new_shapes


def _rewrite_graph(g: dict[str, Any], graph: _Graph, pruner: _Pruner, keeps: Any, new_shapes: dict[str, tuple]) -> str:
    """The symbol JSON with the new channel counts (node attributes and declared parameter shapes); edits `g`."""
    for nid, attr, lay in graph.attr_updates:
        idx = pruner.expand(lay, keeps)
        if idx is not None:
            g["nodes"][nid]["attrs"][attr] = str(len(idx))
    for node in g["nodes"]:
        if node["op"] == "null" and node["name"] in new_shapes and "__shape__" in node.get("attrs", {}):
            node["attrs"]["__shape__"] = str(tuple(int(v) for v in new_shapes[node["name"]]))
    return json.dumps(g)


def _layer_rows(graph: _Graph, pruner: _Pruner, keeps: Any, g: dict[str, Any]) -> list[LayerRow]:
    """The report's row of every weighted layer: filters before and after."""
    rows = []
    for nid, out_lay in graph.weighted:
        node = g["nodes"][nid]
        before = (
            sum(n for _, n, _ in out_lay) if out_lay else int(_attr(node, "num_filter", _attr(node, "num_hidden", 0)))
        )
        idx = pruner.expand(out_lay, keeps)
        fixed = not out_lay or all(pruner.root_of[s] not in pruner.merged for s, _, _ in out_lay)
        rows.append(LayerRow(node["name"], node["op"], before, before if idx is None else len(idx), fixed))
    return rows
