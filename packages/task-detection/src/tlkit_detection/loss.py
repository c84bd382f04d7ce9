"""The DetectNet_v2 cost (TLT `cost_function/`), vectorized over the batch, classes and grid in MXNet.

Per sample and class c, on the (h, w) grid:

- coverage: weighted binary cross-entropy, weight `coverage_foreground_weight` where the target is > 0.5
  and `1 - coverage_foreground_weight` elsewhere, averaged over the cells;
- bbox: L1 over the 4 coordinates weighted by the `cov_norm` target (zero outside coverage ellipses),
  averaged over the cells;
- total = sum_c class_weight[c] * (w_cov[c] * cov + w_bbox[c] * bbox), with the objective weights of each
  class normalised to sum to 1 (TLT: cov 1.0, bbox 10.0 -> 1/11, 10/11).

Auto-weighting (TLT `cost_auto_weight_hook.py`): after each epoch, w_obj ∝ initial weight / mean cost of
the objective over the epoch, normalised to sum to 1 and clamped to [min, max] objective weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tlkit.errors import ModelFileError

EPS = 1e-7


@dataclass
class ClassCost:
    class_weight: float = 1.0
    coverage_foreground_weight: float = 0.05
    cov_weight: float = 1.0
    bbox_weight: float = 10.0


class DetectNetLoss:
    """`loss(outputs, label) -> (B,)` for tlkit.training: outputs (cov, bbox), label (cov, bbox, cov_norm)."""

    def __init__(
        self,
        classes: Sequence[ClassCost],
        autoweight: bool = False,
        min_weight: float = 1e-4,
        max_weight: float = 0.9999,
    ):
        if not classes:
            raise ValueError("DetectNetLoss needs at least one class")
        self.n = len(classes)
        self.class_weight = np.array([c.class_weight for c in classes], np.float32)
        self.fg = np.array([c.coverage_foreground_weight for c in classes], np.float32)
        init = np.array([[c.cov_weight, c.bbox_weight] for c in classes], np.float64)
        total = init.sum(axis=1, keepdims=True)
        if np.any(total <= 0):
            raise ValueError("cost_function_config: cov_weight + bbox_weight must be > 0 for every class")
        self.initial = init / total  # (C, 2) normalised objective weights
        self.weights = self.initial.copy()
        self.autoweight = autoweight
        self.min_weight, self.max_weight = min_weight, max_weight
        self._sums: list[Any] = []  # per-batch (2,) NDArray of mean cov / bbox cost (auto-weighting)
        self._nd_cache: dict = {}  # (name, ctx) -> NDArray constant

    @classmethod
    def from_config(cls, cfg: Any, class_names: Sequence[str]) -> DetectNetLoss:
        """From a DetectionConfig's cost_function_config."""
        cf = cfg.cost_function_config
        per = [ClassCost(**cf.for_class(n).model_dump()) for n in class_names]
        return cls(per, cf.enable_autoweighting, cf.min_objective_weight, cf.max_objective_weight)

    def _const(self, name: str, value: np.ndarray, ctx: Any) -> Any:
        """`value` as an NDArray on `ctx`, made once (until the weights change)."""
        import mxnet as mx

        key = (name, str(ctx))
        if key not in self._nd_cache:
            self._nd_cache[key] = mx.nd.array(value, ctx=ctx, dtype="float32")
        return self._nd_cache[key]

    def objectives(self, outputs: Any, label: Any) -> tuple[Any, Any]:
        """Per-sample, per-class (B, C) coverage and bbox costs (unweighted)."""
        import mxnet as mx

        cov_p, bbox_p = outputs
        cov_t, bbox_t, cov_norm = label
        ctx = cov_p.context
        b = cov_p.shape[0]
        h, w = cov_p.shape[2], cov_p.shape[3]
        fg = self._const("fg", self.fg.reshape(1, -1, 1, 1), ctx)
        p = mx.nd.clip(cov_p, EPS, 1.0 - EPS)
        bce = -(cov_t * mx.nd.log(p) + (1.0 - cov_t) * mx.nd.log(1.0 - p))
        is_fg = cov_t > 0.5
        weight = mx.nd.broadcast_add(mx.nd.broadcast_mul(is_fg, fg), mx.nd.broadcast_mul(1.0 - is_fg, 1.0 - fg))
        cov_cost = (weight * bce).reshape((b, self.n, -1)).mean(axis=2)
        diff = mx.nd.abs(bbox_p - bbox_t).reshape((b, self.n, 4, h, w)).sum(axis=2)
        bbox_cost = (diff * cov_norm).reshape((b, self.n, -1)).mean(axis=2)
        return cov_cost, bbox_cost

    def __call__(self, outputs: Any, label: Any) -> Any:
        import mxnet as mx
        from mxnet import autograd

        cov_cost, bbox_cost = self.objectives(outputs, label)
        if self.autoweight and autograd.is_recording():  # training steps only, not validation
            self._sums.append(mx.nd.stack(cov_cost.mean(), bbox_cost.mean()).detach())
        return self._weighted(cov_cost, bbox_cost)

    def _weighted(self, cov_cost: Any, bbox_cost: Any) -> Any:
        """(B,) total of per-class costs with the objective and class weights."""
        import mxnet as mx

        ctx = cov_cost.context
        wc = self._const("wc", (self.weights[:, 0] * self.class_weight).astype(np.float32).reshape(1, -1), ctx)
        wb = self._const("wb", (self.weights[:, 1] * self.class_weight).astype(np.float32).reshape(1, -1), ctx)
        return (mx.nd.broadcast_mul(cov_cost, wc) + mx.nd.broadcast_mul(bbox_cost, wb)).sum(axis=1)

    def distill(self, outputs: Any, teacher: Any, temperature: float) -> Any:
        """Distillation from a teacher's (coverage, bbox) maps, per sample: coverage BCE against the teacher's
        coverage and bbox L1 weighted by it (the teacher's confidence replaces the rasterized targets), with
        the cost's objective and class weights. The temperature does not apply: coverage is a probability."""
        cov_t, bbox_t = teacher
        return self._weighted(*self.objectives(outputs, (cov_t, bbox_t, cov_t)))

    def update_weights(self) -> np.ndarray | None:
        """Auto-weighting step (call at the end of an epoch). Returns the new (C, 2) weights, or None."""
        if not self.autoweight or not self._sums:
            self._sums = []
            return None
        import mxnet as mx

        mean_cost = mx.nd.stack(*[s.as_in_context(mx.cpu()) for s in self._sums]).mean(axis=0).asnumpy()
        self._sums = []
        self.weights = autoweights(self.initial, mean_cost, self.min_weight, self.max_weight)
        self._nd_cache.clear()
        return self.weights

    def get_state(self) -> dict:
        """The auto-weighted objective weights, for the training checkpoint (JSON)."""
        return {"objective_weights": np.asarray(self.weights, np.float64).tolist()}

    def set_state(self, state: dict) -> None:
        """Restore what `get_state` saved (on resume)."""
        if "objective_weights" in state:
            w = np.asarray(state["objective_weights"], np.float64)
            if w.shape != np.shape(self.weights):
                raise ModelFileError(
                    f"checkpoint objective weights have shape {w.shape}, this job's classes need {np.shape(self.weights)}"
                )
            self.weights = w
            self._nd_cache.clear()


def autoweights(initial: np.ndarray, mean_cost: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """w_obj ∝ initial_obj / mean_cost_obj, normalised per class, clamped to [lo, hi]."""
    raw = initial / np.maximum(np.asarray(mean_cost, np.float64).reshape(1, -1), 1e-12)
    raw = raw / raw.sum(axis=1, keepdims=True)
    return np.clip(raw, lo, hi)
