"""Entry-point module of tlkit_classification: hook implementations only (no heavy imports)."""

from tlkit import hookimpl  # noqa: F401
