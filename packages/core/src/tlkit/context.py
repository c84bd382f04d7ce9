"""What a task command receives: the parsed CLI flags, the validated spec, and helpers."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console


def make_console() -> Console:
    """Rich console for command output; logs and pipes get 120 columns (rich's 80 truncates tables)."""
    return Console(highlight=False, width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 120)


@dataclass
class CommandContext:
    task: str
    command: str
    spec: Any = None  # the validated TaskConfig (None when the command was run without -e)
    spec_path: Path | None = None
    results_dir: Path | None = None
    model: Path | None = None  # -m
    output: Path | None = None  # -o
    key: str | None = None  # -k (accepted for TLT compatibility; tlkit models are not encrypted)
    gpus: int | None = None  # --gpus N; 0 = CPU; None = 1 GPU if MXNet sees one, else CPU
    gpu_index: list[int] = field(default_factory=list)
    use_amp: bool = False
    overrides: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)  # command-specific options by name
    console: Console = field(default_factory=lambda: make_console())

    def contexts(self) -> list[Any]:
        """MXNet devices for --gpus/--gpu_index (CPU when 0). Errors clearly if no GPU is usable."""
        import mxnet as mx

        from tlkit.errors import TlkitError

        available = mx.context.num_gpus()
        if self.gpus is None:
            return [mx.gpu(self.gpu_index[0] if self.gpu_index else 0)] if available else [mx.cpu()]
        if self.gpus <= 0:
            return [mx.cpu()]
        ids = self.gpu_index or list(range(self.gpus))
        if len(ids) != self.gpus:
            raise TlkitError(f"--gpus {self.gpus} but --gpu_index lists {len(ids)} devices: {ids}")
        if available < max(ids) + 1:
            raise TlkitError(
                f"--gpus {self.gpus} (devices {ids}) requested but MXNet sees {available} GPU(s); "
                f"run with --gpus 0 for CPU or install a CUDA build of MXNet"
            )
        return [mx.gpu(i) for i in ids]

    def require_results_dir(self) -> Path:
        from tlkit.errors import TlkitError

        if self.results_dir is None:
            raise TlkitError(f"tlkit {self.task} {self.command}: -r/--results_dir is required")
        self.results_dir.mkdir(parents=True, exist_ok=True)
        return self.results_dir
