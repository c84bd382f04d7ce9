"""The built-in pruners, as light records (no MXNet import here)."""

from tlkit.types import PrunerSpec

PRUNERS: tuple[PrunerSpec, ...] = ()
