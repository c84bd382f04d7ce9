"""What a pruning run reports: per-layer channel counts, parameter/FLOP totals and the TLT ratio line.

Pure Python (no MXNet, no numpy), so the CLI can print and save it cheaply.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from tlkit.io import atomic_write_text


@dataclass
class LayerRow:
    node: str  # symbol node name (what -el/--excluded_layers accepts)
    op: str  # Convolution, FullyConnected, Deconvolution
    channels_before: int
    channels_after: int
    excluded: bool = False  # never pruned (excluded, a network output, or coupled to one)

    @property
    def kept_pct(self) -> float:
        return 100.0 * self.channels_after / self.channels_before if self.channels_before else 100.0


@dataclass
class PruneReport:
    layers: list[LayerRow]
    params_before: int
    params_after: int
    flops_before: int  # 2 x multiply-accumulates of Convolution/Deconvolution/FullyConnected
    flops_after: int
    threshold: float  # the -pth used (found by the search when target_ratio was given)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Parameter ratio pruned / original, as TLT prints it."""
        return self.params_after / self.params_before if self.params_before else 1.0

    @property
    def flops_ratio(self) -> float:
        return self.flops_after / self.flops_before if self.flops_before else 1.0

    def summary_line(self) -> str:
        return f"Pruning ratio (pruned model / original model): {self.ratio}"

    def summary(self) -> dict[str, Any]:
        """Machine-readable totals (stored in the pruned model's meta)."""
        return {
            "pruning_ratio": self.ratio,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "flops_before": self.flops_before,
            "flops_after": self.flops_after,
            "threshold": self.threshold,
            "layers_pruned": sum(1 for r in self.layers if r.channels_after < r.channels_before),
            "layers": len(self.layers),
            "options": self.options,
        }

    def table(self, title: str = "Pruned layers") -> Any:
        """A rich Table with one row per Convolution/FullyConnected/Deconvolution layer."""
        from rich.table import Table

        t = Table(title=title)
        t.add_column("layer")
        t.add_column("op")
        t.add_column("before", justify="right")
        t.add_column("after", justify="right")
        t.add_column("kept %", justify="right")
        for r in self.layers:
            t.add_row(
                r.node,
                r.op,
                str(r.channels_before),
                str(r.channels_after),
                f"{r.kept_pct:.1f}" + (" (kept)" if r.excluded else ""),
            )
        return t

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["node", "op", "channels_before", "channels_after", "kept_pct", "excluded"])
        for r in self.layers:
            w.writerow([r.node, r.op, r.channels_before, r.channels_after, f"{r.kept_pct:.2f}", int(r.excluded)])
        return buf.getvalue()

    def to_csv(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.csv_text())

    def to_dict(self) -> dict[str, Any]:
        d = self.summary()
        d["layers"] = [asdict(r) | {"kept_pct": r.kept_pct} for r in self.layers]
        return d
