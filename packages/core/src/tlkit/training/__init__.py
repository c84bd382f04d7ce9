"""The shared training engine (MXNet Gluon): tasks describe a `TrainJob`, `train()` runs it.

    from tlkit.training import TrainJob, train, TrainResult, StatusLogger

Importing this package does not import MXNet (it is imported when `train()` runs).
"""

from tlkit.training.engine import TrainJob, TrainResult, default_regularize, train
from tlkit.training.status import StatusLogger

__all__ = ["StatusLogger", "TrainJob", "TrainResult", "default_regularize", "train"]
