"""Pretrained files for tests, made offline: a GluonCV model-store file with random weights, where
`gluoncv://NAME` finds it ($MXNET_HOME must point at a test directory)."""

from __future__ import annotations

from typing import Any


def place_gluoncv_file(name: str, input_size: int = 64) -> Any:
    """Build GluonCV's `name` (random init, no download), save it at `gluoncv_store.local_path(name)` and
    return the network, to compare loaded tensors with."""
    import mxnet as mx
    from gluoncv import model_zoo

    from tlkit.hub import gluoncv_store

    net = model_zoo.get_model(name, pretrained=False)
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, input_size, input_size)))
    path = gluoncv_store.local_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    net.save_parameters(str(path))
    return net
