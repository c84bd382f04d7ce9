"""The built-in architectures and weight formats, as light records (no MXNet import here).

Filled by the backbone registry work; `tlkit._builtin` registers these through the plugin hooks.
"""

from tlkit.types import ArchitectureSpec, WeightFormatSpec

ARCHITECTURES: tuple[ArchitectureSpec, ...] = ()
WEIGHT_FORMATS: tuple[WeightFormatSpec, ...] = ()
