"""The built-in pruners, as light records (no MXNet import here)."""

from tlkit.types import PrunerSpec

PRUNERS: tuple[PrunerSpec, ...] = (
    PrunerSpec(
        name="l2",
        prune="tlkit.pruning.command:prune_symbol",
        tasks=None,
        summary="TLT-style structured filter pruning: per-layer normalized L2 filter norms, threshold, "
        "granularity, equalization of coupled layers; works on any MXNet symbol graph",
    ),
)
