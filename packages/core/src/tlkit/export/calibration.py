"""INT8 calibration: TLT tensorfiles, activation ranges, TensorRT calibration caches and Q/DQ ONNX.

- `TensorFileWriter`/`write_tensorfile`/`read_tensorfile`/`tensorfile_info`: TLT's calibration
  tensorfile (HDF5): file attrs `count` (batches) and `shape` (the shared batch shape); batch i is the gzip dataset
  `_tensorfile_array_key_` in group `_tensorfile_array_key__<i>`, an already-preprocessed (N,C,H,W)
  float32 batch. Files written here open in TAO's reader and vice versa.
- `compute_ranges(onnx, batches, method)`: per-tensor activation amax, from onnxruntime runs with every
  float tensor exposed as an output. "max" = largest |x|; "percentile" = the 99.99th percentile of |x|;
  "entropy" = TensorRT's KL-divergence method (NVIDIA's "8-bit Inference with TensorRT"): a 2048-bin
  |x| histogram (exact zeros left out), every clipping bin 128..2048 tried, each quantized to 128 evenly
  spaced levels, the one with the smallest KL(P||Q) wins.
- `write_trt_cache`/`read_trt_cache`: TensorRT's text cache ("TRT-<ver>-EntropyCalibration2", then
  "name: <hex of float32 big-endian bits of amax/127>"), the legacy TRT <= 10 INT8 route.
- `quantize_qdq`: a Q/DQ ONNX (per-channel symmetric int8 weights, per-tensor symmetric int8
  activations with scale amax/127), the TRT >= 10.1 / TRT 11 INT8 artefact (qdq_format "tensorrt");
  or, with qdq_format "onnxruntime", uint8 activations ([0, amax] for tensors that were never negative in
  calibration, [-amax, amax] otherwise), the layout onnxruntime's x86 kernels fuse completely. It is
  `onnxruntime.quantization.quantize_static(QuantFormat.QDQ)` fed OUR ranges through its calibration
  cache (no second calibration by onnxruntime), so the Q/DQ scales and the TensorRT cache agree.
- Output heads stay in float unless asked (`quantize_output_heads=True`): `output_head_nodes` finds, for every
  graph output, the last weighted layer (Conv/ConvTranspose/Gemm/MatMul) on each path back from it, plus every
  node after those (softmax, sigmoid, box decoding, NMS). Their outputs get no Q/DQ and no cache entry (TensorRT
  then runs the layers producing them in float), and their weights stay float in the Q/DQ graph. Quantizing
  them clips what the application reads: entropy calibration of a trained classifier's logits picked a range
  of +-0.25 and every prediction became the same class.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tlkit.errors import DataError, ModelFileError, SpecError, TlkitError
from tlkit.io import atomic_write_text, output_error, temp_file_beside

ARRAY_KEY = "_tensorfile_array_key_"
GROUP_PREFIX = "_tensorfile_array_key_"  # groups are f"{GROUP_PREFIX}_{i}" -> "_tensorfile_array_key__0"
METHODS = ("entropy", "max", "percentile")
QDQ_FORMATS = ("tensorrt", "onnxruntime")
NUM_BINS = 2048
NUM_QUANTIZED_BINS = 128
CACHE_BYTES = 512 * 2**20  # activations kept in memory between the two calibration passes


# -- tensorfile ------------------------------------------------------------------------------------


def _group_name(i: int) -> str:
    return f"{GROUP_PREFIX}_{i}"


class TensorFileWriter:
    """Write calibration batches to a TLT tensorfile; the file appears (atomically) on close()."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        self._tmp = temp_file_beside(self.path)
        self._db = h5py.File(self._tmp, "w")
        self._db.attrs["count"] = 0
        self.count = 0

    def write(self, batch: np.ndarray | dict[str, np.ndarray]) -> None:
        data = {ARRAY_KEY: batch} if isinstance(batch, np.ndarray) else dict(batch)
        group = self._db.create_group(_group_name(self.count))
        for key, value in data.items():
            value = np.asarray(value)
            if "shape" not in self._db.attrs:
                self._db.attrs["shape"] = value.shape
            elif tuple(self._db.attrs["shape"]) != value.shape:
                raise DataError(
                    f"{self.path}: batch {self.count} has shape {value.shape}, earlier batches "
                    f"{tuple(self._db.attrs['shape'])} (a tensorfile holds equal-shaped batches)"
                )
            group.create_dataset(key, data=value, compression="gzip")
        self.count += 1
        self._db.attrs["count"] = self.count

    def close(self) -> Path:
        self._db.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._db.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> TensorFileWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_tensorfile(path: str | os.PathLike, batches: Iterable[np.ndarray]) -> Path:
    """Write NCHW float32 batches (already preprocessed) as a TLT calibration tensorfile."""
    try:
        with TensorFileWriter(path) as tf:
            for b in batches:
                tf.write(np.asarray(b, dtype=np.float32))
    except OSError as err:
        if err.filename is not None:  # about another file (a source image), not this write
            raise
        raise output_error(err, path) from None  # h5py's write errors (disk full) name no file
    return Path(path)


def tensorfile_info(path: str | os.PathLike) -> tuple[int, tuple[int, ...]]:
    """(count, batch shape) of a tensorfile."""
    with _open_tensorfile(path) as db:
        return int(db.attrs["count"]), tuple(int(v) for v in db.attrs.get("shape", ()))


@contextlib.contextmanager
def _open_tensorfile(path: str | os.PathLike) -> Iterator[Any]:
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: calibration tensorfile not found")
    try:
        db = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path}: not an HDF5 calibration tensorfile ({err})") from None
    try:
        if "count" not in db.attrs:
            raise DataError(f"{path}: HDF5 file without a 'count' attribute is not a TLT calibration tensorfile")
        yield db
    finally:
        db.close()


def read_tensorfile(
    path: str | os.PathLike, max_batches: int | None = None
) -> Iterator[np.ndarray | dict[str, np.ndarray]]:
    """Yield the batches of a tensorfile (arrays, or dicts of arrays for multi-input files)."""
    with _open_tensorfile(path) as db:
        count = int(db.attrs["count"])
        n = count if max_batches is None or max_batches < 0 else min(count, max_batches)
        for i in range(n):
            name = _group_name(i)
            if name not in db:
                raise DataError(f"{path}: count says {count} batches but group {name!r} is missing")
            group = db[name]
            data = {k: group[k][()] for k in group.keys()}
            yield data[ARRAY_KEY] if list(data) == [ARRAY_KEY] else data


# -- ranges ----------------------------------------------------------------------------------------


def _activation_names(model: Any) -> list[str]:
    """Graph input(s) and every float tensor a node produces (Constant outputs excluded)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    inits = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in inits]
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for out in node.output:
            if out and types.get(out) == onnx.TensorProto.FLOAT and out not in names:
                names.append(out)
    return names


def _as_model(onnx_model: Any) -> Any:
    import onnx

    if isinstance(onnx_model, (str, os.PathLike)):
        path = Path(onnx_model)
        if not path.is_file():
            raise ModelFileError(f"{path}: ONNX file not found")
        return onnx.load(str(path))
    return onnx_model


def _expose_all(model: Any) -> tuple[Any, list[str]]:
    import onnx

    model = _as_model(model)
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    names = _activation_names(model)
    existing = {o.name for o in aug.graph.output}
    for n in names:
        if n not in existing and n not in {i.name for i in aug.graph.input}:
            aug.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    return aug, names


class Ranges(dict):
    """{tensor name: amax}, plus `nonnegative`: the tensors that were never negative during calibration
    (ReLU/ReLU6 outputs...), which uint8 activations can quantize as [0, amax]."""

    def __init__(self, amax: dict[str, float], nonnegative: Iterable[str] = ()):
        super().__init__(amax)
        self.nonnegative = set(nonnegative)


def compute_ranges(
    onnx_model: Any,
    batches: Iterable[np.ndarray],
    method: str = "entropy",
    *,
    percentile: float = 99.99,
    num_bins: int = NUM_BINS,
    skip_zeros: bool = True,
) -> Ranges:
    """{tensor name: amax} (a `Ranges`) for the activations of an ONNX model (path or ModelProto) over `batches`.

    `skip_zeros` (entropy only) leaves exact zeros out of the histograms: the spike ReLU/ReLU6 outputs
    have at 0 dominates the KL divergence and drags thresholds down to the smallest candidate (measured:
    EfficientNet-Lite0 int8 agreed with fp32 top-1 on 0/8 photos with zeros, 7/8 without; NVIDIA's
    pytorch-quantization has the same switch)."""
    import onnxruntime as ort

    if method not in METHODS:
        raise SpecError(f"calibration_method {method!r} is not one of {', '.join(METHODS)}")
    batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
    if not batches:
        raise DataError("calibration needs at least one batch")
    aug, names = _expose_all(onnx_model)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(aug.SerializeToString(), so, providers=["CPUExecutionProvider"])
    input_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    wanted = [n for n in out_names if n in set(names)]

    def run_one(b: np.ndarray) -> dict[str, np.ndarray]:
        res = dict(zip(out_names, sess.run(out_names, {input_name: b})))
        res[input_name] = b
        return {n: res[n] for n in amax}

    def runs() -> Iterator[dict[str, np.ndarray]]:
        return (run_one(b) for b in batches)

    # pass 1: max |x| per tensor; pass 2 (histogram methods): |x| histograms over [0, max].
    # Activations are kept between the passes when they fit in CACHE_BYTES, else recomputed.
    amax = {n: 0.0 for n in [input_name, *wanted]}
    lowest = dict.fromkeys(amax, 0.0)
    first = run_one(batches[0])
    fits = sum(a.nbytes for a in first.values()) * len(batches) <= CACHE_BYTES
    cached = [first, *(run_one(b) for b in batches[1:])] if method != "max" and fits else None
    for res in cached or itertools.chain([first], (run_one(b) for b in batches[1:])):
        for n in amax:
            if res[n].size:
                amax[n] = max(amax[n], float(np.max(np.abs(res[n]))))
                lowest[n] = min(lowest[n], float(res[n].min()))
    nonnegative = [n for n, v in lowest.items() if v >= 0]
    if method == "max":
        return Ranges(amax, nonnegative)
    hists = {n: np.zeros(num_bins, np.int64) for n in amax}
    for res in cached or runs():
        for n in amax:
            if amax[n] > 0:
                a = np.abs(res[n])
                hists[n] += np.histogram(a, bins=num_bins, range=(0.0, amax[n]))[0]
                if skip_zeros and method == "entropy":
                    hists[n][0] -= a.size - np.count_nonzero(a)
    out = {}
    for n, top in amax.items():
        if top <= 0:
            out[n] = 0.0
        elif method == "percentile":
            out[n] = _percentile_amax(hists[n], top, percentile)
        else:
            out[n] = _entropy_amax(hists[n], top)
    return Ranges(out, nonnegative)


def _percentile_amax(hist: np.ndarray, top: float, percentile: float) -> float:
    cdf = np.cumsum(hist) / max(1, hist.sum())
    idx = int(np.searchsorted(cdf, percentile / 100.0))
    return float((idx + 1) * top / len(hist))


def _smooth(p: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Move a little mass onto empty bins so KL stays finite (MXNet's _smooth_distribution)."""
    zero = p == 0
    n_zero, n_nonzero = int(zero.sum()), p.size - int(zero.sum())
    if n_nonzero == 0:
        return None
    eps1 = eps * n_zero / n_nonzero
    if eps1 >= 1.0:
        return None
    return p + eps * zero - eps1 * ~zero


def _kl_for_threshold(hist: np.ndarray, tail: np.ndarray, i: int, num_quantized: int) -> float:
    """KL(P || Q) for clipping the |x| histogram at bin i and quantizing it to `num_quantized` levels."""
    p = hist[:i].copy()
    if i < len(hist):
        p[i - 1] += tail[i]  # outliers clipped into the last bin
    nonzero = p != 0
    # bin k falls in level floor(k * levels / i): evenly spaced level edges, as NVIDIA's
    # pytorch-quantization does (np.linspace). Merging i // levels bins and dumping the remainder
    # into the last level (MXNet's variant) makes i just below 2*levels look spuriously good.
    owner = (np.arange(i) * num_quantized) // i
    q_sums = np.bincount(owner, weights=hist[:i], minlength=num_quantized)
    counts = np.bincount(owner, weights=nonzero, minlength=num_quantized)
    # spread each level's count evenly over its non-empty source bins
    q = np.where(nonzero, q_sums[owner] / np.maximum(counts[owner], 1), 0.0)
    # smooth the raw counts (as MXNet does), then normalize
    ps, qs = _smooth(p), _smooth(q)
    if ps is None or qs is None or (ps <= 0).any() or (qs <= 0).any():
        return np.inf
    ps, qs = ps / ps.sum(), qs / qs.sum()
    return float(np.sum(ps * np.log(ps / qs)))


def _smooth_rows(x: np.ndarray, valid: np.ndarray, eps: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise `_smooth` over the `valid` positions; returns (smoothed, row_ok)."""
    zero = (x == 0) & valid
    nonzero = (x != 0) & valid
    n_zero, n_nonzero = zero.sum(1), nonzero.sum(1)
    eps1 = eps * n_zero / np.maximum(n_nonzero, 1)
    out = x + eps * zero - eps1[:, None] * nonzero
    ok = (n_nonzero > 0) & (eps1 < 1.0) & ~((out <= 0) & valid).any(1)
    return out, ok


def _entropy_amax(
    hist: np.ndarray, top: float, num_quantized: int = NUM_QUANTIZED_BINS, chunk: int = 128
) -> float:
    """TensorRT's entropy calibration: the clipping threshold whose 128-level quantization of the |x|
    histogram has the smallest KL divergence from the (clipped) reference distribution.

    Every candidate bin i in [128, 2048] is tried; `_kl_for_threshold` is the same computation for one
    candidate, written plainly. Here `chunk` candidates at a time are evaluated as rows of a matrix."""
    hist = hist.astype(np.float64)
    n = len(hist)
    if n <= num_quantized:
        return top
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    cs = np.concatenate([[0.0], np.cumsum(hist)])
    cnz = np.concatenate([[0.0], np.cumsum(hist != 0)])
    levels = np.arange(num_quantized + 1)
    best_kl, best_i = np.inf, n
    for lo in range(num_quantized, n + 1, chunk):
        i = np.arange(lo, min(lo + chunk, n + 1))[:, None]  # candidates, one per row
        w = int(i[-1, 0])  # columns beyond the widest candidate are all invalid: leave them out
        k = np.arange(w)
        valid = k[None, :] < i
        p = np.where(valid, hist[None, :w], 0.0)
        rows = np.arange(len(i))
        p[rows, i[:, 0] - 1] += tail[i[:, 0]]  # outliers into the last kept bin
        nonzero = (p != 0) & valid
        # level j covers bins [ceil(j*i/L), ceil((j+1)*i/L)): owner = floor(k*L/i)
        edges = -((-levels[None, :] * i) // num_quantized)
        q_sums = cs[edges[:, 1:]] - cs[edges[:, :-1]]
        counts = cnz[edges[:, 1:]] - cnz[edges[:, :-1]]
        last_extra = (hist[i[:, 0] - 1] == 0) & (p[rows, i[:, 0] - 1] != 0)  # last bin non-empty only by outliers
        counts[:, -1] += last_extra
        owner = np.minimum((k[None, :] * num_quantized) // i, num_quantized - 1)
        q = np.where(nonzero, np.take_along_axis(q_sums / np.maximum(counts, 1), owner, 1), 0.0)
        ps, ok_p = _smooth_rows(p, valid)
        qs, ok_q = _smooth_rows(q, valid)
        ok = ok_p & ok_q
        ps = np.where(valid, ps, 1.0)
        qs = np.where(valid, qs, 1.0)
        ps_n = ps / np.where(valid, ps, 0.0).sum(1, keepdims=True)
        qs_n = qs / np.where(valid, qs, 0.0).sum(1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(valid, ps_n * np.log(ps_n / qs_n), 0.0).sum(1)
        kl = np.where(ok, kl, np.inf)
        j = int(np.argmin(kl))
        if kl[j] < best_kl:
            best_kl, best_i = float(kl[j]), int(i[j, 0])
    return float(best_i * top / n) if np.isfinite(best_kl) else top


# -- TensorRT calibration cache --------------------------------------------------------------------

CACHE_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def trt_version_number(version: str | int) -> int:
    """'8.6.1' -> 8601, '10.3' -> 10300 (MAJOR*1000 + MINOR*100 + PATCH, as TAO writes it); 'x' = 0."""
    if isinstance(version, int):
        return version
    parts = [0 if p in ("x", "") else int(p) for p in str(version).split(".")]
    parts += [0] * (3 - len(parts))
    return parts[0] * 1000 + parts[1] * 100 + parts[2]


def amax_to_hex(amax: float) -> str:
    """amax -> the cache's hex: float32 bits of amax/127, big-endian (1.0 -> '3c010204')."""
    return struct.pack(">f", float(np.float32(amax) / np.float32(127.0))).hex()


def hex_to_amax(text: str) -> float:
    return float(np.float32(struct.unpack(">f", bytes.fromhex(text))[0]) * np.float32(127.0))


def write_trt_cache(
    ranges: dict[str, float], path: str | os.PathLike, trt_version: str | int = "10.x",
    algorithm: str = "EntropyCalibration2",
) -> Path:
    """Write a TensorRT text calibration cache. Pass your TensorRT version (TRT compares the header)."""
    lines = [f"TRT-{trt_version_number(trt_version)}-{algorithm}"]
    lines += [f"{name}: {amax_to_hex(v)}" for name, v in ranges.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")
    return Path(path)


def read_trt_cache(path: str | os.PathLike) -> dict[str, float]:
    """Import a TensorRT calibration cache (ours, TAO's or TensorRT's own) -> {tensor: amax}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: calibration cache not found")
    text = path.read_text(errors="replace").splitlines()
    if not text or not CACHE_HEADER.match(text[0].strip()):
        raise DataError(f"{path}:1: expected a header like 'TRT-8601-EntropyCalibration2', got {text[:1]!r}")
    ranges = {}
    for lineno, line in enumerate(text[1:], start=2):
        if not line.strip():
            continue
        name, sep, value = line.rpartition(":")
        value = value.strip()
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{1,8}", value):
            raise DataError(f"{path}:{lineno}: expected '<tensor>: <8 hex digits>', got {line!r}")
        ranges[name.strip()] = hex_to_amax(value.zfill(8))
    return ranges


# -- output heads ----------------------------------------------------------------------------------

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def output_head_nodes(onnx_model: Any) -> list[str]:
    """Names of the nodes of the output heads: walking back from each graph output, the first weighted node
    (Conv/ConvTranspose/Gemm/MatMul) met on every path, plus every node downstream of those. Graph order."""
    model = _as_model(onnx_model)
    return [model.graph.node[i].name for i in sorted(_head_indices(model))]


def _head_indices(model: Any) -> set[int]:
    nodes = list(model.graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            consumers.setdefault(name, []).append(i)
    heads: set[int] = set()
    seen: set[int] = set()
    stack = [producer[o.name] for o in model.graph.output if o.name in producer]
    while stack:  # backwards from the outputs, stopping at the first weighted node of each path
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        if nodes[i].op_type in WEIGHTED_OPS:
            heads.add(i)
            continue
        stack += [producer[t] for t in nodes[i].input if t in producer]
    found, stack = set(heads), list(heads)
    while stack:  # forwards from the heads: everything after them
        i = stack.pop()
        for out in nodes[i].output:
            for j in consumers.get(out, []):
                if j not in found:
                    found.add(j)
                    stack.append(j)
    return found


def _head_tensors(model: Any) -> set[str]:
    """The tensors the output heads produce."""
    return {out for i in _head_indices(model) for out in model.graph.node[i].output}


def without_output_heads(ranges: dict[str, float], onnx_model: Any) -> Ranges:
    """`ranges` less the tensors the output heads produce (what the TensorRT cache gets by default)."""
    drop = _head_tensors(_as_model(onnx_model))
    return Ranges({k: v for k, v in ranges.items() if k not in drop},
                  [n for n in getattr(ranges, "nonnegative", ()) if n not in drop])


def _name_nodes(model: Any) -> None:
    """Give unnamed nodes unique names (quantization excludes nodes by name)."""
    used = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            name = f"{n.op_type}_{i}"
            while name in used:
                name += "_"
            n.name = name
            used.add(name)


# -- Q/DQ ONNX -------------------------------------------------------------------------------------


def quantize_qdq(
    onnx_fp32: Any, ranges: dict[str, float], output: str | os.PathLike, *, reduce_range: bool = True,
    qdq_format: str = "tensorrt", quantize_output_heads: bool = False,
) -> Path:
    """Write a Q/DQ int8 ONNX of `onnx_fp32` (path or ModelProto) using `ranges` ({tensor: amax}).

    Weights: per-channel symmetric int8. Activations, `qdq_format` "tensorrt" (default): per-tensor
    symmetric int8, scale amax/127 (TensorRT accepts only zero points of 0). "onnxruntime": per-tensor
    uint8, [0, amax] for the tensors in `ranges.nonnegative` and [-amax, amax] for the rest: onnxruntime's
    x86 CPU kernels are u8 x s8, so with uint8 activations every Conv/Add/pool fuses into its QLinear op and
    ReLU6 folds into the quantization ([0, amax] clips at 0); with int8 activations onnxruntime leaves
    Clip, Add and some Conv nodes in float between DequantizeLinear/QuantizeLinear, which makes it slower
    than FP32 on CPU (benchmarks/acceptance/export.json, fine-tuned EfficientNet-Lite0 96 px, one thread,
    batch 1 CPU time vs FP32: "tensorrt" 0.80x, "onnxruntime" 1.75x; same top-1). TensorRT rejects the
    "onnxruntime" format.
    The graph is first pre-processed by onnxruntime (BatchNorm folded into Conv), so Q/DQ sits where
    TensorRT and onnxruntime fuse it.

    The output heads (`output_head_nodes`) stay float unless `quantize_output_heads`: no Q/DQ on their weights
    or outputs, so no range is needed for the tensors they produce.

    `reduce_range=True` (default) keeps the weights of GEMM-backed Conv/Gemm nodes to 7 bits: onnxruntime's
    int8 GEMM on x86 CPUs without VNNI adds u8*s8 products pairwise into int16 and saturates otherwise
    (measured: a 3-layer net's logits off by 65 % of their range, 0.5 % with it). Depthwise convs keep full
    8-bit weights: onnxruntime runs them with a separate int32 kernel that does not saturate, and their few
    weights per channel (9 or 25) lose too much at 7 bits (fine-tuned EfficientNet-Lite0 on
    sign-language-digits, entropy calibration: 97.8 % top-1 with every weight at 7 bits, 99.0 % with
    depthwise at 8 bits, FP32 99.5 %). TensorRT runs either; pass False for a TensorRT-only artefact with
    all weights at 8 bits.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tlkit.export.onnx_export import read_metadata_props, set_metadata

    if qdq_format not in QDQ_FORMATS:
        raise SpecError(f"qdq_format {qdq_format!r} is not one of {', '.join(QDQ_FORMATS)}")
    model = _as_model(onnx_fp32)
    meta = read_metadata_props(model)
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="tlkit-qdq-") as tmp:
        src, pre, cache = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "ranges.json")
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        _name_nodes(pre_model)
        onnx.save(pre_model, str(pre))
        excluded = [] if quantize_output_heads else output_head_nodes(pre_model)
        float_tensors = set() if quantize_output_heads else _head_tensors(pre_model)
        missing = [n for n in _activation_names(pre_model) if n not in ranges and n not in float_tensors]
        if missing:
            raise TlkitError(
                f"no calibration range for {len(missing)} tensor(s) of the model, e.g. {missing[0]!r}: "
                "were the ranges (or the calibration cache) made for another model?"
            )
        # full 8-bit weights for depthwise convs (see the docstring); TensorQuantOverrides is per initializer
        overrides = ({w: [{"axis": 0, "reduce_range": False}] for w in _depthwise_weights(pre_model)}
                     if reduce_range else {})  # "axis" keeps them per-channel (without it they become per-tensor)
        uint8 = qdq_format == "onnxruntime"
        nonneg: set[str] = getattr(ranges, "nonnegative", set()) if uint8 else set()
        data = {n: (np.array(0.0 if n in nonneg else -v, np.float32), np.array(v, np.float32))
                for n, v in ranges.items()}
        save_tensors_data(TensorsData(CalibrationMethod.MinMax, data), cache)
        dst = Path(tmp, "qdq.onnx")
        quantize_static(
            str(pre),
            str(dst),
            calibration_data_reader=None,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8 if uint8 else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            calibration_cache_path=str(cache),
            nodes_to_exclude=excluded,
            # Biases stay float: TensorRT accepts only 8-bit DequantizeLinear inputs, not int32 biases.
            extra_options={"ActivationSymmetric": not uint8, "WeightSymmetric": True, "QuantizeBias": False,
                           "TensorQuantOverrides": overrides},
        )
        qmodel = onnx.load(str(dst))
    if meta:
        set_metadata(qmodel, {**meta, "data_type": "int8", "qdq_format": qdq_format,
                              "int8_output_heads": bool(quantize_output_heads)})
    from tlkit.io import atomic_write_bytes

    atomic_write_bytes(output, qmodel.SerializeToString())
    return output


def _depthwise_weights(model: Any) -> list[str]:
    """Weight initializers of depthwise Conv nodes (one input and one output channel per group)."""
    inits = {t.name: t for t in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        dims = list(inits[node.input[1]].dims)
        if group > 1 and len(dims) >= 2 and dims[0] == group and dims[1] == 1:
            out.append(node.input[1])
    return out


def quantize_with_calibration(
    model: Any,
    output: str | os.PathLike,
    cal_batches: Iterable[np.ndarray] | None,
    *,
    method: str = "entropy",
    cal_cache_file: str | os.PathLike | None = None,
    trt_version: str | int = "10.x",
    qdq_format: str = "tensorrt",
    quantize_output_heads: bool = False,
) -> Path:
    """INT8 export step: ranges from `cal_batches` (then also written to `cal_cache_file`), or imported
    from an existing `cal_cache_file` (which says nothing about signs: every tensor then gets [-amax, amax]);
    then the Q/DQ ONNX at `output`. The output heads stay float in both unless `quantize_output_heads`."""
    if cal_batches is not None:
        ranges: dict[str, float] = compute_ranges(model, cal_batches, method)
        if not quantize_output_heads:
            ranges = without_output_heads(ranges, model)
        if cal_cache_file:
            write_trt_cache(ranges, cal_cache_file, trt_version)
    elif cal_cache_file and Path(cal_cache_file).is_file():
        ranges = read_trt_cache(cal_cache_file)
    else:
        raise SpecError(
            "int8 export needs calibration data: --cal_data_file (tensorfile), --cal_image_dir, "
            "or an existing --cal_cache_file to import"
        )
    return quantize_qdq(model, ranges, output, qdq_format=qdq_format, quantize_output_heads=quantize_output_heads)


def save_ranges_json(ranges: dict[str, float], path: str | os.PathLike) -> Path:
    """TAO's --cal_json_file format: {"tensor_scales": {name: amax}}."""
    atomic_write_text(path, json.dumps({"tensor_scales": ranges}, indent=2))
    return Path(path)


def batches_from_images(
    image_dir: str | os.PathLike, meta: dict[str, Any], batches: int, batch_size: int
) -> list[np.ndarray]:
    """Up to `batches` preprocessed batches from the images in `image_dir` (sorted, recursive)."""
    import cv2

    from tlkit.export.preprocess import preprocess
    from tlkit.images import IMAGE_EXTENSIONS, list_image_files

    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: calibration image directory not found")
    files = list_image_files(image_dir)
    if not files:
        raise DataError(f"{image_dir}: no images for calibration ({', '.join(IMAGE_EXTENSIONS)})")
    out: list[np.ndarray] = []
    for start in range(0, min(len(files), batches * batch_size), batch_size):
        chunk = files[start:start + batch_size]
        if len(chunk) < batch_size and out:
            break  # keep batches equal-sized
        imgs = []
        for f in chunk:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"{f}: cannot decode image")
            imgs.append(img[:, :, ::-1])  # BGR -> RGB
        out.append(preprocess(imgs, meta))
    return out
