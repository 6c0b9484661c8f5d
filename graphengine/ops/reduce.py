"""Reductions (sum, mean, max, min, argmax) and their adjoints.

``axis`` is None (every axis), an int or a list of ints, negative counting from
the end, as in numpy.  Two internal ops undo and redo broadcasting in gradient
graphs, at run time, so they work with symbolic dims:

* ``broadcast_like(x, like, axes)`` re-inserts the reduced ``axes`` into ``x``
  and broadcasts it to ``like``'s shape (the adjoint of a reduction);
* ``sum_like(x, like, axes)`` sums ``x`` down to ``like``'s shape (the adjoint of
  broadcasting).

With ``mean=True`` both also divide by the number of elements folded together,
so each is the other's exact adjoint.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import ALL_TYPES, ARITH_FLOAT_TYPES, NUMERIC_TYPES
from ..shapes import (
    Shape,
    TensorType,
    broadcast_shapes,
    format_shape,
    normalize_axes,
    normalize_axis,
)
from .registry import Array, Attr, F, Input, InputInfo, OpDef, OutKernel, register

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor


def reduced_shape(shape: Shape, axes: Sequence[int], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


class Reduction(OpDef):
    inputs = (Input("x", NUMERIC_TYPES),)
    attrs = (Attr("axis", "ints", None), Attr("keepdims", "bool", False))

    def infer(self, x: TensorType, *, axis: tuple[int, ...] | None, keepdims: bool) -> TensorType:
        axes = normalize_axes(axis, x.rank)
        return x.with_shape(reduced_shape(x.shape, axes, keepdims))

    def axes(self, node: NodeView) -> tuple[int, ...] | None:
        """The reduced axes to re-insert in the gradient (None when kept)."""
        x = node.inputs[0]
        if node.attrs["keepdims"]:
            return None
        return normalize_axes(node.attrs["axis"], x.ndim)


@register
class Sum(Reduction):
    """Sum over ``axis`` as numpy.sum.  d/dx = 1 for every summed element, so the
    gradient broadcasts dy back over the reduced axes."""

    name = "sum"

    def kernel(self, x: Array, *, axis: tuple[int, ...] | None, keepdims: bool) -> Array:
        return np.sum(x, axis=axis, keepdims=keepdims, dtype=x.dtype)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        axis, keepdims = attrs["axis"], attrs["keepdims"]

        def sum_into(x: Array, out: Array) -> Array:
            # np.sum's own reduction, without its Python wrapper (a few us a call).
            return np.add.reduce(x, axis=axis, dtype=x.dtype, out=out, keepdims=keepdims)

        return sum_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.broadcast_like(dy, node.inputs[0], axes=self.axes(node))]


@register
class Mean(Reduction):
    """Mean over ``axis`` as numpy.mean (float inputs only, so the result keeps
    the input's dtype).  d/dx = 1/n for each of the n averaged elements."""

    name = "mean"
    inputs = (Input("x", ARITH_FLOAT_TYPES),)

    def kernel(self, x: Array, *, axis: tuple[int, ...] | None, keepdims: bool) -> Array:
        return np.mean(x, axis=axis, keepdims=keepdims, dtype=x.dtype)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        axis, keepdims = attrs["axis"], attrs["keepdims"]

        def mean_into(x: Array, out: Array) -> Array:
            return np.mean(x, axis=axis, keepdims=keepdims, dtype=x.dtype, out=out)

        return mean_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.broadcast_like(dy, node.inputs[0], axes=self.axes(node), mean=True)]


class Extremum(Reduction):
    """max or min; the gradient is shared equally among tied extreme elements."""

    def infer(self, x: TensorType, *, axis: tuple[int, ...] | None, keepdims: bool) -> TensorType:
        if 0 in x.shape and axis is None:
            raise ValueError(f"cannot take the {self.name} of an empty tensor")
        return super().infer(x, axis=axis, keepdims=keepdims)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x, y = node.inputs[0], node.outputs[0]
        axes = self.axes(node)
        hit = F.cast(F.equal(x, F.broadcast_like(y, x, axes=axes)), dtype=x.dtype)
        count = F.broadcast_like(
            F.sum(hit, axis=node.attrs["axis"], keepdims=node.attrs["keepdims"]), x, axes=axes
        )
        return [hit * F.broadcast_like(dy, x, axes=axes) / count]


@register
class Max(Extremum):
    """Maximum over ``axis`` as numpy.max; ties share the gradient equally."""

    name = "max"

    def kernel(self, x: Array, *, axis: tuple[int, ...] | None, keepdims: bool) -> Array:
        return np.max(x, axis=axis, keepdims=keepdims)


@register
class Min(Extremum):
    """Minimum over ``axis`` as numpy.min; ties share the gradient equally."""

    name = "min"

    def kernel(self, x: Array, *, axis: tuple[int, ...] | None, keepdims: bool) -> Array:
        return np.min(x, axis=axis, keepdims=keepdims)


@register
class Argmax(OpDef):
    """Index of the maximum along ``axis`` as numpy.argmax (int64; the first one
    on ties; ``axis=None`` indexes the flattened tensor).  Not differentiable."""

    name = "argmax"
    inputs = (Input("x", NUMERIC_TYPES),)
    attrs = (Attr("axis", "int", None), Attr("keepdims", "bool", False))
    vjp = None

    def infer(self, x: TensorType, *, axis: int | None, keepdims: bool) -> TensorType:
        shape: Shape
        if axis is None:
            shape = (1,) * x.rank if keepdims else ()
        else:
            a = normalize_axis(axis, x.rank)
            shape = reduced_shape(x.shape, (a,), keepdims)
        return TensorType(np.dtype("int64"), shape)

    def kernel(self, x: Array, *, axis: int | None, keepdims: bool) -> Array:
        return np.argmax(x, axis=axis, keepdims=keepdims).astype(np.int64, copy=False)


def _fold_count(big: np.ndarray, small_size: int) -> int:
    return big.size // small_size if small_size else 1


def _size(shape: Sequence[int]) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


@register
class BroadcastLike(OpDef):
    """Insert ``axes`` (reduced away earlier) into x, then broadcast it to the shape
    of ``like``; with ``mean`` divide by the number of copies.  The adjoint of
    sum and mean; used by gradient rules."""

    name = "broadcast_like"
    view_map = {0: 0}
    internal = True
    inputs = (Input("x", ALL_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = (Attr("axes", "ints", None), Attr("mean", "bool", False))

    def infer(
        self, x: TensorType, like: TensorType, *, axes: tuple[int, ...] | None, mean: bool
    ) -> TensorType:
        shape = _expanded(x.shape, axes, like.rank)
        try:
            out = broadcast_shapes(shape, like.shape)
        except ValueError:
            raise ValueError(
                f"cannot broadcast {format_shape(x.shape)} to {format_shape(like.shape)}"
            ) from None
        if len(out) != like.rank:
            raise ValueError(
                f"{format_shape(x.shape)} has more dims than {format_shape(like.shape)}"
            )
        return TensorType(x.dtype, like.shape)

    def kernel(self, x: Array, like: Array, *, axes: tuple[int, ...] | None, mean: bool) -> Array:
        if axes is not None:
            x = np.expand_dims(x, axes)
        out = np.broadcast_to(x, like.shape)
        if mean:
            return out / x.dtype.type(_fold_count(out, x.size))
        return out

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        if not attrs["mean"]:
            return None  # a broadcast view: nothing to write
        axes = attrs["axes"]
        (x_shape, x_dtype), (like_shape, _) = inputs
        count = x_dtype.type(_fold_count(np.empty(like_shape, np.bool_), _size(x_shape)))

        def spread_mean_into(x: Array, like: Array, out: Array) -> Array:
            if axes is not None:
                x = np.expand_dims(x, axes)
            return np.divide(x, count, out=out)  # broadcasts x over out's shape

        return spread_mean_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x = node.inputs[0]
        return [F.sum_like(dy, x, axes=node.attrs["axes"], mean=node.attrs["mean"]), None]


@register
class SumLike(OpDef):
    """Sum x down to the shape of ``like``: over ``axes`` when given (dropping
    them), else over the axes that broadcasting added or stretched; with ``mean``
    divide by the number of summed elements.  The adjoint of broadcasting."""

    name = "sum_like"
    internal = True
    inputs = (Input("x", NUMERIC_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = (Attr("axes", "ints", None), Attr("mean", "bool", False))

    def infer(
        self, x: TensorType, like: TensorType, *, axes: tuple[int, ...] | None, mean: bool
    ) -> TensorType:
        if like.rank > x.rank:
            raise ValueError(
                f"cannot sum {format_shape(x.shape)} to the larger rank of "
                f"{format_shape(like.shape)}"
            )
        return TensorType(x.dtype, like.shape)

    def kernel(self, x: Array, like: Array, *, axes: tuple[int, ...] | None, mean: bool) -> Array:
        target = like.shape
        if axes is None:
            out = _sum_axes(x, _broadcast_axes(x.shape, target), keepdims=True).reshape(target)
        else:
            out = _sum_axes(x, tuple(axes), keepdims=False)
        if mean:
            out = out / x.dtype.type(_fold_count(x, out.size))
        return out

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        axes, mean = attrs["axes"], attrs["mean"]
        (x_shape, x_dtype), (like_shape, _) = inputs
        if axes is None:
            summed: tuple[int, ...] = _broadcast_axes(x_shape, like_shape)
            # The sum keeps the summed axes as 1s; out viewed so, it is the same.
            kept = tuple(1 if i in summed else d for i, d in enumerate(x_shape))
        else:
            summed, kept = axes, None
        count = x_dtype.type(_fold_count(np.empty(x_shape, np.bool_), _size(like_shape)))
        staged = _stages(x_shape, summed)
        scratch = np.empty(x_shape[1:], x_dtype) if staged else None

        def sum_into(x: Array, like: Array, out: Array) -> Array:
            target = out if kept is None else out.reshape(kept)
            _sum_axes(x, summed, kept is not None, target, scratch)
            if mean:
                np.divide(out, count, out=out)
            return out

        return sum_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x = node.inputs[0]
        return [F.broadcast_like(dy, x, axes=node.attrs["axes"], mean=node.attrs["mean"]), None]


@register
class ZerosLike(OpDef):
    """Zeros of the shape and dtype of x (the gradient of a wrt tensor the loss
    does not depend on)."""

    name = "zeros_like"
    inputs = (Input("x", ALL_TYPES, differentiable=False),)
    vjp = None

    def infer(self, x: TensorType) -> TensorType:
        return x

    def kernel(self, x: Array) -> Array:
        return np.zeros_like(x)


def _stages(shape: tuple[int, ...], axes: tuple[int, ...]) -> bool:
    """Whether _sum_axes sums the leading axis first, by itself: numpy reduces
    (N, C, H, W) over (0, 2, 3) (a convolution's bias gradient) two to five
    times slower in one call than over axis 0 (adding whole images, contiguous)
    and then over (1, 2) of the (C, H, W) sum, and never faster in those we timed."""
    return len(shape) >= 3 and len(axes) >= 2 and any(a % len(shape) == 0 for a in axes)


def _sum_axes(
    x: Array,
    axes: tuple[int, ...],
    keepdims: bool,
    out: Array | None = None,
    scratch: Array | None = None,
) -> Array:
    """np.add.reduce(x, axes) in x's dtype, into ``out`` when given (shaped with
    the summed axes as 1s when ``keepdims``), the leading axis first when
    _stages says so (into ``scratch``, shaped like x[0], when given)."""
    add: Any = np.add.reduce  # numpy's stubs refuse out=None, which it takes
    if not _stages(x.shape, axes):
        return add(x, axis=axes, dtype=x.dtype, out=out, keepdims=keepdims)
    images = add(x, axis=0, dtype=x.dtype, out=scratch)
    rest = tuple(a % x.ndim - 1 for a in axes if a % x.ndim)  # axes may count from the end
    if out is not None and keepdims:
        out = out.reshape(out.shape[1:])
    total = add(images, axis=rest, dtype=x.dtype, out=out, keepdims=keepdims)
    return total[None] if keepdims else total


@functools.lru_cache(maxsize=1024)
def _broadcast_axes(shape: tuple[int, ...], target: tuple[int, ...]) -> tuple[int, ...]:
    """The axes of ``shape`` that broadcasting ``target`` to it added or stretched
    (cached: a training loop asks the same question every step)."""
    lead = len(shape) - len(target)
    return tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(target) if d == 1 and shape[lead + i] != 1
    )


def _expanded(shape: Shape, axes: Sequence[int] | None, rank: int) -> Shape:
    if axes is None:
        return shape
    out = list(shape)
    for a in sorted(normalize_axis(a, rank) for a in axes):
        out.insert(a, 1)
    return tuple(out)


__all__ = ["Reduction"]
