"""Element-wise gathers and scatters: gather_elements, scatter_elements, diagonal.

``gather_elements`` and ``scatter_elements`` pick or write one element per
index along one axis (numpy's ``take_along_axis`` and ``put_along_axis``,
PyTorch's ``gather`` and ``scatter``/``scatter_reduce``, ONNX's GatherElements
and ScatterElements).  ``diagonal`` is numpy's: the diagonal of two axes,
moved to the end (what einsum's repeated letters take).

Indices count from the end when negative (ONNX's and numpy's rule); an index
outside [-size, size) fails when the op runs, naming the axis and the size.
On the other axes, indices may be shorter than the data (PyTorch's and ONNX's
rule): only the leading part of the data is read there.

Each op's gradient is written with the same ops: the adjoint of a gather is a
scatter-add into zeros, the adjoint of a scatter-add a gather.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import ALL_TYPES, INDEX_TYPES
from ..shapes import Dim, TensorType, format_shape, normalize_axis
from .registry import Array, Attr, F, Input, OpDef, register

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor

#: scatter_elements' reductions and the numpy ufunc that applies each (at
#: repeated indices too: ufunc.at combines every update).
_REDUCE_UFUNCS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _check_index_shape(data: TensorType, indices: TensorType, axis: int, what: str) -> int:
    """The normalized axis; raises ValueError unless ``indices`` has data's rank and
    is no longer than data on the other axes."""
    if indices.rank != data.rank:
        raise ValueError(
            f"{what} must have the rank of the data ({data.rank}), got "
            f"{format_shape(indices.shape)}"
        )
    axis = normalize_axis(axis, data.rank)
    for a, (n, m) in enumerate(zip(indices.shape, data.shape)):
        if a != axis and isinstance(n, int) and isinstance(m, int) and n > m:
            raise ValueError(
                f"{what} of shape {format_shape(indices.shape)} is longer than the data of "
                f"shape {format_shape(data.shape)} along axis {a} ({n} > {m})"
            )
    return axis


def _index_grid(indices: Array, axis: int, size: int) -> tuple[Array, ...]:
    """Index arrays that address, for each element of ``indices``, its position
    in the data: the index itself along ``axis``, its own position elsewhere."""
    if indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < -size or high >= size:
            bad = low if low < -size else high
            raise IndexError(
                f"index {bad} is out of range for axis {axis} of size {size} "
                f"(indices must lie in [{-size}, {size}))"
            )
        if low < 0:
            indices = np.where(indices < 0, indices + size, indices)
    grid = list(np.ogrid[tuple(slice(n) for n in indices.shape)])
    grid[axis] = indices
    return tuple(grid)


@register
class GatherElements(OpDef):
    """out[i][j][k] = x[indices[i][j][k]][j][k] for axis 0 (and so on for the
    other axes): numpy.take_along_axis, torch.gather, ONNX GatherElements.  The
    result has the indices' shape.

    d/dx = dy added into zeros of x's shape at the gathered positions
    (scatter_elements with reduction "add", so repeated indices accumulate).
    No gradient flows to the indices.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.constant(np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    >>> i = g.constant(np.array([[0, 0], [1, 0]]))
    >>> ge.run(g, ge.gather_elements(x, i, axis=1)).tolist()
    [[1.0, 1.0], [4.0, 3.0]]
    """

    name = "gather_elements"
    inputs = (Input("x", ALL_TYPES), Input("indices", INDEX_TYPES, differentiable=False))
    attrs = (Attr("axis", "int", 0),)

    def infer(self, x: TensorType, indices: TensorType, *, axis: int) -> TensorType:
        _check_index_shape(x, indices, axis, "indices")
        return TensorType(x.dtype, indices.shape)

    def kernel(self, x: Array, indices: Array, *, axis: int) -> Array:
        axis %= x.ndim
        grid = _index_grid(indices, axis, x.shape[axis])
        return x[grid]

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x, indices = node.inputs
        zeros = F.zeros_like(x)
        axis = node.attrs["axis"]
        return [F.scatter_elements(zeros, indices, dy, axis=axis, reduction="add"), None]


@register
class ScatterElements(OpDef):
    """A copy of ``data`` with ``updates`` written at ``indices`` along ``axis``:
    for axis 0, out[indices[i][j]][j] = updates[i][j] (ONNX ScatterElements,
    torch.scatter / scatter_reduce with include_self=True).  ``reduction``
    combines each update with what is there: "none" writes it (where indices
    repeat, the last update wins, as numpy's assignment; ONNX leaves that case
    undefined), "add", "mul", "max" or "min" combine every update (ufunc.at).
    ``indices`` and ``updates`` have one shape.

    Gradients (no gradient flows to the indices):

    * "none": d/ddata = dy with zeros where an update was written; d/dupdates =
      dy gathered at the indices (with repeated indices every update there gets it);
    * "add": d/ddata = dy; d/dupdates = dy gathered at the indices;
    * "mul": out = data * P with P the product of the updates at each position:
      d/ddata = dy * P; d/dupdates = (dy * out) gathered / updates (nan where an
      update is 0);
    * "max"/"min": the gradient goes to the elements equal to the result,
      shared equally among ties (data's element and the updates at a position).

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.constant(np.zeros((3, 2), np.float32))
    >>> i = g.constant(np.array([[2, 0]]))
    >>> u = g.constant(np.array([[5.0, 7.0]], np.float32))
    >>> ge.run(g, ge.scatter_elements(x, i, u, axis=0, reduction="add")).tolist()
    [[0.0, 7.0], [0.0, 0.0], [5.0, 0.0]]
    """

    name = "scatter_elements"
    inputs = (
        Input("data", ALL_TYPES),
        Input("indices", INDEX_TYPES, differentiable=False),
        Input("updates", ALL_TYPES),
    )
    attrs = (
        Attr("axis", "int", 0),
        Attr("reduction", "str", "none", choices=("none", "add", "mul", "max", "min")),
    )

    def infer(
        self,
        data: TensorType,
        indices: TensorType,
        updates: TensorType,
        *,
        axis: int,
        reduction: str,
    ) -> TensorType:
        _check_index_shape(data, indices, axis, "indices")
        if updates.dtype != data.dtype:
            raise ValueError(
                f"updates have dtype {updates.dtype.name}, the data {data.dtype.name}; "
                "cast one with ge.cast so both match"
            )
        if updates.rank != indices.rank or any(
            isinstance(a, int) and isinstance(b, int) and a != b
            for a, b in zip(updates.shape, indices.shape)
        ):
            raise ValueError(
                f"updates of shape {format_shape(updates.shape)} must have the shape of "
                f"the indices, {format_shape(indices.shape)}"
            )
        return data

    def kernel(
        self, data: Array, indices: Array, updates: Array, *, axis: int, reduction: str
    ) -> Array:
        axis %= data.ndim
        grid = _index_grid(indices, axis, data.shape[axis])
        out = data.copy()
        if reduction == "none":
            out[grid] = updates
        else:
            _REDUCE_UFUNCS[reduction].at(out, grid, updates)
        return out

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        data, indices, updates = node.inputs
        axis, reduction = node.attrs["axis"], node.attrs["reduction"]

        def gather(t: Tensor) -> Tensor:
            return F.gather_elements(t, indices, axis=axis)

        def scatter(base: Tensor, values: Tensor, how: str) -> Tensor:
            return F.scatter_elements(base, indices, values, axis=axis, reduction=how)

        d_data: Any = None
        d_updates: Any = None
        if reduction == "none":
            if node.wants(0):
                d_data = scatter(dy, F.zeros_like(updates), "none")
            if node.wants(2):
                d_updates = gather(dy)
        elif reduction == "add":
            d_data = dy if node.wants(0) else None
            d_updates = gather(dy) if node.wants(2) else None
        elif reduction == "mul":
            out = node.outputs[0]
            if node.wants(0):
                d_data = dy * scatter(F.zeros_like(data) + 1.0, updates, "mul")
            if node.wants(2):
                d_updates = gather(dy * out) / updates
        else:  # max, min: the gradient is shared among the elements equal to the result
            out = node.outputs[0]
            hit_data = F.cast(F.equal(data, out), dtype=dy.dtype)
            hit_updates = F.cast(F.equal(updates, gather(out)), dtype=dy.dtype)
            share = dy / scatter(hit_data, hit_updates, "add")
            d_data = share * hit_data if node.wants(0) else None
            d_updates = gather(share) * hit_updates if node.wants(2) else None
        return [d_data, None, d_updates]


def _diagonal_type(x: TensorType, axis1: int, axis2: int) -> tuple[int, int, TensorType]:
    a1, a2 = normalize_axis(axis1, x.rank, "axis1"), normalize_axis(axis2, x.rank, "axis2")
    if a1 == a2:
        raise ValueError(f"axis1 and axis2 must differ, both are {a1}")
    n1, n2 = x.shape[a1], x.shape[a2]
    size: Dim
    if isinstance(n1, int) and isinstance(n2, int):
        size = min(n1, n2)
    elif n1 == n2:
        size = n1
    else:
        raise ValueError(
            f"the diagonal of axes {a1} and {a2} of shape {format_shape(x.shape)} needs "
            "static sizes or one symbolic size on both"
        )
    rest = tuple(d for a, d in enumerate(x.shape) if a not in (a1, a2))
    return a1, a2, TensorType(x.dtype, rest + (size,))


@register
class Diagonal(OpDef):
    """The diagonal of axes ``axis1`` and ``axis2``, as numpy.diagonal (offset 0):
    both axes are removed and the diagonal, of the smaller of their sizes,
    becomes the last axis (x[..., i, ..., i, ...] -> out[..., i]).  Einsum's
    repeated letters ("ii->i", "bii->bi") are this op.  Unlike numpy, the result
    is a new array, not a read-only view.

    d/dx = dy written on the diagonal of zeros of x's shape (diagonal_grad).

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.constant(np.arange(9.0, dtype=np.float32).reshape(3, 3))
    >>> ge.run(g, ge.diagonal(x)).tolist()
    [0.0, 4.0, 8.0]
    """

    name = "diagonal"
    inputs = (Input("x", ALL_TYPES),)
    attrs = (Attr("axis1", "int", 0), Attr("axis2", "int", 1))

    def infer(self, x: TensorType, *, axis1: int, axis2: int) -> TensorType:
        return _diagonal_type(x, axis1, axis2)[2]

    def kernel(self, x: Array, *, axis1: int, axis2: int) -> Array:
        return np.diagonal(x, axis1=axis1, axis2=axis2).copy()

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        attrs = node.attrs
        return [F.diagonal_grad(dy, node.inputs[0], axis1=attrs["axis1"], axis2=attrs["axis2"])]


@register
class DiagonalGrad(OpDef):
    """Zeros shaped like ``like`` with ``dy`` on the diagonal of ``axis1`` and
    ``axis2``: the adjoint of diagonal, whose own adjoint is diagonal."""

    name = "diagonal_grad"
    internal = True
    inputs = (Input("dy", ALL_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = (Attr("axis1", "int", 0), Attr("axis2", "int", 1))

    def infer(self, dy: TensorType, like: TensorType, *, axis1: int, axis2: int) -> TensorType:
        expected = _diagonal_type(like, axis1, axis2)[2]
        if dy.rank != expected.rank or any(
            isinstance(a, int) and isinstance(b, int) and a != b
            for a, b in zip(dy.shape, expected.shape)
        ):
            raise ValueError(
                f"dy of shape {format_shape(dy.shape)} does not fit the diagonal, of shape "
                f"{format_shape(expected.shape)}"
            )
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy: Array, like: Array, *, axis1: int, axis2: int) -> Array:
        out = np.zeros(like.shape, dy.dtype)
        n = dy.shape[-1]
        # A writable view with the two axes last; the diagonal is [..., k, k].
        view = np.moveaxis(out, (axis1 % out.ndim, axis2 % out.ndim), (-2, -1))
        k = np.arange(n)
        view[..., k, k] = dy
        return out

    def vjp(self, node: NodeView, ddy: Tensor) -> list[Tensor | None]:
        attrs = node.attrs
        return [F.diagonal(ddy, axis1=attrs["axis1"], axis2=attrs["axis2"]), None]
