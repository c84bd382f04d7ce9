"""Per-epoch progress: a rich progress bar (loss, img/s, ETA) on a terminal, plain lines otherwise
(logs, CI, tests), so a captured log is readable and not full of control characters."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console


class EpochProgress:
    """Use as a context manager around one epoch; call `update(step, loss, images)` after each batch."""

    def __init__(self, console: Console, epoch: int, n_epochs: int, total_steps: int, plain_every: int = 0):
        self.console = console
        self.epoch, self.n_epochs, self.total = epoch, n_epochs, total_steps
        self.images = 0
        self.start = time.perf_counter()
        self.loss = float("nan")
        # plain mode: a line every ~10 % of the epoch
        self.plain_every = plain_every or max(total_steps // 10, 1)
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> EpochProgress:
        self.start = time.perf_counter()
        if self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"),
                TextColumn("{task.fields[ips]:.1f} img/s"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=self.total, epoch=f"{self.epoch}/{self.n_epochs}", loss=float("nan"), ips=0.0
            )
        return self

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @property
    def throughput(self) -> float:
        return self.images / self.elapsed if self.elapsed > 0 else 0.0

    def update(self, step: int, loss: float, images: int) -> None:
        """`step` is 1-based within the epoch; `images` the batch size just processed."""
        self.images += images
        self.loss = loss
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=loss, ips=self.throughput)
        elif step % self.plain_every == 0 and step < self.total:
            eta = self.elapsed / step * (self.total - step)
            self.console.print(
                f"epoch {self.epoch}/{self.n_epochs} step {step}/{self.total} loss {loss:.4f} "
                f"{self.throughput:.1f} img/s ETA {eta:.0f}s",
                highlight=False,
                soft_wrap=True,
            )

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()
