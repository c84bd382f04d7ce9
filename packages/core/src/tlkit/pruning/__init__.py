"""Structured (filter) pruning with TLT semantics, on MXNet symbol graphs.

    from tlkit.pruning import prune_graph, prune_model_file
    result = prune_graph(symbol_json, params, input_shape=(3, 224, 224), threshold=0.3)

Names are loaded on first use so that importing this package (the CLI's help path) stays light.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "prune_graph": "tlkit.pruning.graph",
    "PruneResult": "tlkit.pruning.graph",
    "PruneError": "tlkit.pruning.graph",
    "retained_idx": "tlkit.pruning.graph",
    "PruneReport": "tlkit.pruning.report",
    "LayerRow": "tlkit.pruning.report",
    "prune_model_file": "tlkit.pruning.command",
    "prune_net": "tlkit.pruning.command",
    "prune_symbol": "tlkit.pruning.command",
    "run": "tlkit.pruning.command",
}

__all__ = [
    "LayerRow",
    "PruneError",
    "PruneReport",
    "PruneResult",
    "prune_graph",
    "prune_model_file",
    "prune_net",
    "prune_symbol",
    "retained_idx",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tlkit.pruning' has no attribute {name!r}")
