"""Entry-point module of tlkit_pose: hook implementations only (no heavy imports)."""

from tlkit import hookimpl  # noqa: F401
