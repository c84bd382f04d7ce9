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


def print_warning(console: Console, message: str) -> None:
    """One 'warning: ...' line; the message is printed as is (a path may hold '[', which rich reads as markup)."""
    from rich.text import Text

    console.print(Text.assemble(("warning:", "yellow"), " ", message), soft_wrap=True)


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
        if self.gpus is not None and self.gpus <= 0:
            return [mx.cpu()]
        if self.gpus is None:
            if not self.gpu_index:
                return [mx.gpu(0)] if available else [mx.cpu()]
            if max(self.gpu_index) >= available:  # asked for a device: never fall back to CPU silently
                raise TlkitError(
                    f"--gpu_index {' '.join(map(str, self.gpu_index))}: MXNet sees {available} GPU(s)"
                    + (f" (indices 0..{available - 1})" if available else "")
                    + "; run with --gpus 0 for CPU"
                )
            return [mx.gpu(self.gpu_index[0])]
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
        from tlkit.io import make_dir

        if self.results_dir is None:
            raise TlkitError(f"tlkit {self.task} {self.command}: -r/--results_dir is required")
        return make_dir(self.results_dir, "-r/--results_dir")
