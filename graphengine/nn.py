"""Layers: functions that create their parameters, with good initialisers, under
a name scope, and return one tensor (as Keras layers and ``torch.nn`` modules do).

Each layer takes the input tensor and makes a scope named ``name`` (default:
the layer kind, numbered as the graph numbers nodes: ``dense``, ``dense_1``
...).  Weights feeding a ReLU-like activation get He initialisation, others
Glorot; biases and shifts start at zero, scales at one.  Batch norm's running
statistics are non-trainable parameters, which the trainer keeps up.

>>> import numpy as np, graphengine as ge
>>> g = ge.Graph()
>>> x = g.placeholder("x", (None, 4))
>>> h = ge.nn.dense(x, 8, activation="relu")
>>> y = ge.nn.dense(h, 3, name="head")
>>> [p.name for p in g.parameters()]
['dense/kernel', 'dense/bias', 'head/kernel', 'head/bias']
>>> y.shape
('N', 3)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .errors import GraphError
from .graph import Graph, Tensor
from .ops import api as ops

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": ops.relu,
    "tanh": ops.tanh,
    "sigmoid": ops.sigmoid,
    "gelu": ops.gelu,
    "elu": ops.elu,
    "leaky_relu": ops.leaky_relu,
    "softplus": ops.softplus,
}
_RELU_LIKE = ("relu", "gelu", "elu", "leaky_relu")


def _scope(graph: Graph, kind: str, name: str | None) -> str:
    """``name``, or the first of ``kind``, ``kind_1`` ... that no node uses as a
    scope (or a name) inside the current scope."""
    if name is not None:
        return name
    prefix = graph.current_scope + "/" if graph.current_scope else ""
    candidate, k = kind, 0
    while any(
        n.name == prefix + candidate or n.name.startswith(prefix + candidate + "/")
        for n in graph.nodes
    ):
        k += 1
        candidate = f"{kind}_{k}"
    return candidate


def _activate(h: Tensor, activation: str | None) -> Tensor:
    if activation is None:
        return h
    if activation not in _ACTIVATIONS:
        raise GraphError(
            f"unknown activation {activation!r}; use one of {', '.join(_ACTIVATIONS)} or None"
        )
    return _ACTIVATIONS[activation](h)


def _size(tensor: Tensor, axis: int, layer: str) -> int:
    size = tensor.shape[axis]
    if not isinstance(size, int):
        raise GraphError(
            f"{layer}: axis {axis} of input '{tensor.name}' "
            f"{tuple(tensor.shape)} must have a fixed size to size the weights"
        )
    return size


def dense(
    x: Tensor,
    units: int,
    *,
    activation: str | None = None,
    use_bias: bool = True,
    name: str | None = None,
) -> Tensor:
    """``activation(x @ kernel + bias)`` over the last axis of ``x``; kernel (in,
    units) He- or Glorot-initialised, bias zeros."""
    g = x.graph
    with g.name_scope(_scope(g, "dense", name)):
        fan_in = _size(x, -1, "dense")
        init = "he_normal" if activation in _RELU_LIKE else "glorot_uniform"
        h = ops.matmul(x, g.parameter("kernel", shape=(fan_in, units), init=init, dtype=x.dtype))
        if use_bias:
            h = h + g.parameter("bias", np.zeros(units, x.dtype))
        return _activate(h, activation)


def conv2d(
    x: Tensor,
    filters: int,
    kernel_size: int | tuple[int, int],
    *,
    stride: int = 1,
    padding: int | str = 0,
    activation: str | None = None,
    use_bias: bool = True,
    name: str | None = None,
) -> Tensor:
    """2-D convolution of NCHW ``x`` with ``filters`` output channels; weight
    (filters, C, kh, kw) He- or Glorot-initialised, bias zeros."""
    g = x.graph
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    with g.name_scope(_scope(g, "conv2d", name)):
        channels = _size(x, 1, "conv2d")
        init = "he_normal" if activation in _RELU_LIKE else "glorot_uniform"
        w = g.parameter("kernel", shape=(filters, channels, kh, kw), init=init, dtype=x.dtype)
        h = ops.conv2d(x, w, stride=stride, padding=padding)
        if use_bias:
            bias = g.parameter("bias", np.zeros(filters, x.dtype))
            h = h + ops.reshape(bias, (1, filters, 1, 1))
        return _activate(h, activation)


def batch_norm(
    x: Tensor, *, momentum: float = 0.9, epsilon: float = 1e-5, name: str | None = None
) -> Tensor:
    """Batch normalization over axis 1; gamma ones, beta zeros, and non-trainable
    running mean (zeros) and variance (ones), updated by training with
    ``running = momentum * running + (1 - momentum) * batch``.  Returns y only."""
    g = x.graph
    with g.name_scope(_scope(g, "batch_norm", name)):
        c = _size(x, 1, "batch_norm")
        gamma = g.parameter("gamma", np.ones(c, x.dtype))
        beta = g.parameter("beta", np.zeros(c, x.dtype))
        mean = g.parameter("running_mean", np.zeros(c, x.dtype), trainable=False)
        var = g.parameter("running_var", np.ones(c, x.dtype), trainable=False)
        y = ops.batch_norm(x, gamma, beta, mean, var, epsilon=epsilon, momentum=momentum)
        return y


def layer_norm(x: Tensor, *, epsilon: float = 1e-5, name: str | None = None) -> Tensor:
    """Layer normalization over the last axis, with a scale (ones) and a bias (zeros)."""
    g = x.graph
    with g.name_scope(_scope(g, "layer_norm", name)):
        d = _size(x, -1, "layer_norm")
        scale = g.parameter("scale", np.ones(d, x.dtype))
        bias = g.parameter("bias", np.zeros(d, x.dtype))
        return ops.layer_norm(x, scale, bias, axis=-1, epsilon=epsilon)


def embedding(
    indices: Tensor, vocabulary: int, dim: int, *, dtype: str = "float32", name: str | None = None
) -> Tensor:
    """Rows of an embedding table (vocabulary, dim), normal(0, 1) initialised as
    PyTorch's ``nn.Embedding``, picked by integer ``indices``: shape
    ``indices.shape + (dim,)``."""
    g = indices.graph
    if indices.dtype.kind not in "iu":
        raise GraphError(
            f"embedding: indices '{indices.name}' must be integers, not "
            f"{indices.dtype.name}; cast them with ge.cast(x, 'int64')"
        )
    with g.name_scope(_scope(g, "embedding", name)):
        table = g.parameter("table", shape=(vocabulary, dim), init=_standard_normal, dtype=dtype)
        return ops.take(table, indices, axis=0)


def _standard_normal(shape, dtype, rng):
    return rng.standard_normal(shape).astype(dtype)


def dropout(x: Tensor, rate: float = 0.5, *, name: str | None = None) -> Tensor:
    """Inverted dropout in training runs, identity otherwise; returns y only."""
    return ops.dropout(x, rate, name=name)


__all__ = ["batch_norm", "conv2d", "dense", "dropout", "embedding", "layer_norm"]
