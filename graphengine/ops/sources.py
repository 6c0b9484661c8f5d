"""Ops without inputs: placeholders (fed), parameters (trained) and constants.

Their kernels are never called per step: the executor binds fed values,
parameter values (``Graph.values``) and constant arrays when it compiles a plan.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..shapes import Shape, TensorType
from .registry import Array, Attr, OpDef, register


@register
class Placeholder(OpDef):
    """A value fed at run time; symbolic dims are bound by the feeds."""

    name = "placeholder"
    attrs = (Attr("dtype", "dtype", "float32"), Attr("shape", "shape", ()))
    vjp = None

    def infer(self, *, dtype: np.dtype[Any], shape: Shape) -> TensorType:
        return TensorType(dtype, shape)


@register
class Parameter(OpDef):
    """A value stored with the graph (``Graph.values``) that training updates
    when ``trainable`` is set."""

    name = "parameter"
    attrs = (Attr("dtype", "dtype"), Attr("shape", "shape"), Attr("trainable", "bool", True))
    vjp = None
    stored = True

    def infer(self, *, dtype: np.dtype[Any], shape: Shape, trainable: bool) -> TensorType:
        if any(not isinstance(d, int) for d in shape):
            raise ValueError(f"a parameter's shape must be concrete, got {shape}")
        return TensorType(dtype, shape)


@register
class Constant(OpDef):
    """A fixed array stored in the graph."""

    name = "constant"
    attrs = (Attr("value", "tensor"),)
    vjp = None
    stored = True

    def infer(self, *, value: Array) -> TensorType:
        return TensorType(value.dtype, value.shape)

    def kernel(self, *, value: Array) -> Array:
        return value


def is_source(op: str) -> bool:
    return op in ("placeholder", "parameter", "constant")


__all__ = ["Constant", "Parameter", "Placeholder", "is_source"]
