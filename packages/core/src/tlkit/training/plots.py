"""Training curves (loss, learning rate, validation metrics per epoch) as one PNG."""

from __future__ import annotations

import math
import os
from pathlib import Path

from tlkit.io import atomic_write

_NOT_CURVES = {"epoch", "time", "throughput", "teacher_s", "teacher_share", "teacher_ms_per_step"}


def curve_names(history: list[dict]) -> list[str]:
    """Numeric columns worth plotting, in first-seen order: loss, lr, then validation metrics."""
    names: list[str] = []
    for row in history:
        for k, v in row.items():
            if k not in _NOT_CURVES and k not in names and isinstance(v, (int, float)) and not isinstance(v, bool):
                names.append(k)
    return names


def plot_training_curves(history: list[dict], path: str | os.PathLike) -> Path | None:
    """Write the curves to `path` (atomically). Returns None when there is nothing to plot."""
    names = curve_names(history)
    if not history or not names:
        return None
    # Figure + Agg canvas directly: no pyplot global state, no GUI backend, safe in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(len(names), 3)
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.2 * rows))
    fig.subplots_adjust(left=0.08, right=0.97, bottom=0.15, top=0.9, wspace=0.3, hspace=0.5)
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, i + 1)
        pts = [(r["epoch"], r[name]) for r in history if isinstance(r.get(name), (int, float))]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        if name == "lr" and all(p[1] > 0 for p in pts):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    return path
