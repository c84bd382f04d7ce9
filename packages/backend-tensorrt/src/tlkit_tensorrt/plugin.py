"""Entry-point module of tlkit_tensorrt: hook implementations only (no heavy imports)."""

from tlkit import hookimpl  # noqa: F401
