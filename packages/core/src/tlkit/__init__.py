"""tlkit: an open transfer-learning toolkit for computer vision (MXNet/GluonCV, ONNX, TensorRT).

This module stays light on purpose: importing it must not import MXNet, so `tlkit --help` is fast.
Plugin authors need only `tlkit.hookimpl` and the spec classes in `tlkit.types`.
"""

from tlkit.markers import hookimpl, hookspec

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl", "hookspec"]
