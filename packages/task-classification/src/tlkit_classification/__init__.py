"""Image classification task (TLT classification parity). Keep this module light: no MXNet import here (tlkit --help must stay fast)."""

__version__ = "0.1.0"
