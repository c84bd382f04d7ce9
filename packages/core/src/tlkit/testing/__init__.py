"""Helpers for testing tlkit and its plugins: `make_context` (a command's context, built as the CLI builds it),
and the modules `contract` (conformance checks), `backbones` (the backbone check), `plugins` (install or register
plugins, run the CLI), `export`, `pruning`, `faults`, ..."""

from tlkit.testing.context import make_context

__all__ = ["make_context"]
