"""TensorRT engine backend (build and run engines). Keep this module light: no MXNet import here (tlkit --help must stay fast)."""

__version__ = "0.1.0"
