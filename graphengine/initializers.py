"""Seeded parameter initializers: zeros, ones, normal, uniform, Glorot (Xavier), He.

Each takes ``(shape, dtype, rng)`` and returns an array.  Fan-in and fan-out
follow the common convention: for a matrix (in, out) they are its two dims; for
a convolution kernel (out_channels, in_channels, kh, kw) they are
``in_channels*kh*kw`` and ``out_channels*kh*kw``.

>>> import numpy as np
>>> glorot_uniform((3, 2), np.dtype("float32"), np.random.default_rng(0)).shape
(3, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import GraphError

#: A tensor shape, a dtype and an array, as initializers take and return them.
Shape = tuple[int, ...]
DType = Any
Array = np.ndarray[Any, Any]
#: An initializer: (shape, dtype, rng) -> array.
Initializer = Callable[..., Array]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def zeros(shape: Shape, dtype: DType, rng: np.random.Generator) -> Array:
    return np.zeros(shape, dtype)


def ones(shape: Shape, dtype: DType, rng: np.random.Generator) -> Array:
    return np.ones(shape, dtype)


def normal(
    shape: Shape, dtype: DType, rng: np.random.Generator, std: float = 0.01, mean: float = 0.0
) -> Array:
    return rng.normal(mean, std, size=shape).astype(dtype)


def uniform(
    shape: Shape, dtype: DType, rng: np.random.Generator, low: float = -0.05, high: float = 0.05
) -> Array:
    return rng.uniform(low, high, size=shape).astype(dtype)


def glorot_uniform(shape: Shape, dtype: DType, rng: np.random.Generator) -> Array:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010)."""
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, dtype, rng, -limit, limit)


def glorot_normal(shape: Shape, dtype: DType, rng: np.random.Generator) -> Array:
    """N(0, 2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(shape)
    return normal(shape, dtype, rng, math.sqrt(2.0 / (fan_in + fan_out)))


def he_normal(shape: Shape, dtype: DType, rng: np.random.Generator) -> Array:
    """N(0, 2 / fan_in) (He et al., 2015), for ReLU layers."""
    return normal(shape, dtype, rng, math.sqrt(2.0 / fans(shape)[0]))


def he_uniform(shape: Shape, dtype: DType, rng: np.random.Generator) -> Array:
    """U(-a, a) with a = sqrt(6 / fan_in)."""
    limit = math.sqrt(6.0 / fans(shape)[0])
    return uniform(shape, dtype, rng, -limit, limit)


INITIALIZERS: dict[str, Initializer] = {
    "zeros": zeros,
    "ones": ones,
    "normal": normal,
    "uniform": uniform,
    "glorot_uniform": glorot_uniform,
    "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal,
    "xavier_normal": glorot_normal,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
}


def initialize(
    init: Any, shape: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator
) -> np.ndarray:
    """Make an initial value with ``init`` (a name from INITIALIZERS or a callable)."""
    if isinstance(init, str):
        try:
            init = INITIALIZERS[init]
        except KeyError:
            raise GraphError(
                f"unknown initializer {init!r}; use one of {', '.join(INITIALIZERS)} or a callable"
            ) from None
    value = np.asarray(init(shape, dtype, rng), dtype=dtype)
    if value.shape != tuple(shape):
        raise GraphError(f"initializer returned shape {value.shape}, expected {tuple(shape)}")
    return value
