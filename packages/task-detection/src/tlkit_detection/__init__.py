"""2D object detection task (DetectNet_v2 and GluonCV detectors). Keep this module light: no MXNet import here (tlkit --help must stay fast)."""

__version__ = "0.1.0"
