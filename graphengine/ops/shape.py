"""Shape ops: reshape, transpose, expand_dims, squeeze, broadcast_to,
concatenate, stack and split.

They keep numpy's names and semantics; each docstring says where we differ.
The gradient of each linear op is its adjoint: reshape and reshape back,
transpose and the inverse permutation, concatenate and split.

The internal ops that gradient rules use (reshape_like, split_like) read sizes
from a non-differentiable ``like`` input at run time, so they work with
symbolic dims.

Slicing, take, one_hot and pad are in :mod:`.indexing`.

The bottom of the module gives :class:`~graphengine.graph.Tensor` numpy-style
methods: ``x.T``, ``x.reshape``, ``x.transpose``, ``x.sum`` / ``mean`` / ``max``
/ ``min`` and ``x.astype`` (indexing ``x[...]`` is in :mod:`.indexing`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from ..dtypes import ALL_TYPES
from ..errors import GraphError
from ..graph import Tensor
from ..shapes import Dim, Shape, TensorType, format_shape, normalize_axes, normalize_axis
from .indexing import END, is_int  # noqa: F401  (END: graphengine.onnx imports it from here)
from .registry import Array, Attr, F, Input, OpDef, frontend, register

if TYPE_CHECKING:
    from ..gradients import NodeView


def _as_list(out: Tensor | tuple[Tensor, ...]) -> list[Tensor]:
    """Graph.apply returns a bare tensor for a single output: make it a list."""
    return list(out) if isinstance(out, tuple) else [out]


def _check_same_dtype(types: Sequence[TensorType]) -> None:
    names = [t.dtype.name for t in types]
    if len(set(names)) > 1:
        raise ValueError(
            f"inputs have different dtypes ({', '.join(names)}); cast them with "
            "ge.cast so that all match"
        )


def _merge_dims(a: Dim, b: Dim) -> Dim:
    """The size two inputs must share on an axis: a known size wins over a
    symbol (checked at run time); two different symbols give None."""
    if a == b or isinstance(a, int):
        return a
    return b if isinstance(b, int) else None


def _sum_dims(dims: Sequence[Dim]) -> Dim:
    """The size of axes laid end to end (None when it is not one known symbol)."""
    symbols = [d for d in dims if not isinstance(d, int)]
    total = sum(d for d in dims if isinstance(d, int))
    if not symbols:
        return total
    return symbols[0] if len(symbols) == 1 and total == 0 else None


# -- reshape, transpose, expand_dims, squeeze ------------------------------------


def _reshaped(shape: Shape, newshape: tuple[int, ...]) -> Shape:
    """The result shape of reshape, or ValueError when no input size can fit."""
    what = f"cannot reshape {format_shape(shape)} into {format_shape(newshape)}"
    fill_at = [i for i, d in enumerate(newshape) if d == -1]
    if len(fill_at) > 1:
        raise ValueError(f"{what}: only one size can be -1")
    if any(d < -1 for d in newshape):
        raise ValueError(f"{what}: sizes must be non-negative, or -1 for one inferred size")
    out_known = math.prod(d for d in newshape if d != -1)
    in_known = math.prod(d for d in shape if isinstance(d, int))
    symbols = [d for d in shape if not isinstance(d, int)]
    if symbols and in_known != 0:
        # in_known * (the symbols) elements: newshape must be a multiple of
        # in_known, and -1 is known only when it stands for the one symbol.
        if not fill_at:
            if out_known % in_known:
                raise ValueError(
                    f"{what}: {out_known} elements is not a multiple of "
                    f"{in_known}, whatever the size of "
                    f"{', '.join(map(str, symbols))}"
                )
            return newshape
        if out_known == 0:
            raise ValueError(f"{what}: the size of -1 is ambiguous next to a size 0")
        fill: Dim = symbols[0] if len(symbols) == 1 and in_known == out_known else None
    else:
        if not fill_at:
            if out_known != in_known:
                raise ValueError(f"{what}: {in_known} elements do not fit into {out_known}")
            return newshape
        if out_known == 0 or in_known % out_known:
            raise ValueError(f"{what}: {in_known} elements do not divide into rows of {out_known}")
        fill = in_known // out_known
    out: list[Dim] = list(newshape)
    out[fill_at[0]] = fill
    return tuple(out)


@register
class Reshape(OpDef):
    """Give ``a`` a new shape with the same elements in the same (C) order, as
    numpy.reshape.

    One size in ``newshape`` may be -1: it takes whatever keeps the number of
    elements.  With symbolic dims, inference keeps what it can prove: (N, 3, 4)
    to (-1, 12) gives (N, 12), while (N, 3, 4) to (-1, 4) gives (?, 4).  Sizes
    that cannot fit any N fail when the op is built; sizes that fit some N only
    are checked when it runs.  As in numpy, 0 is a size, not "copy this dim".

    d/da = dy reshaped back to the shape of ``a``.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 3, 4))
    >>> ge.reshape(x, (-1, 12)).shape
    ('N', 12)
    """

    name = "reshape"
    view_map = {0: 0}
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("newshape", "ints"),)

    def infer(self, a: TensorType, *, newshape: tuple[int, ...]) -> TensorType:
        return a.with_shape(_reshaped(a.shape, newshape))

    def kernel(self, a: Array, *, newshape: tuple[int, ...]) -> Array:
        return np.reshape(a, newshape)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.reshape_like(dy, node.inputs[0])]


@register
class ReshapeLike(OpDef):
    """Reshape x to the shape of ``like``, read at run time so that symbolic
    dims work.  The adjoint of reshape, and its own adjoint."""

    name = "reshape_like"
    view_map = {0: 0}
    internal = True
    inputs = (Input("x", ALL_TYPES), Input("like", ALL_TYPES, differentiable=False))

    def infer(self, x: TensorType, like: TensorType) -> TensorType:
        sizes = [
            math.prod(d for d in t.shape if isinstance(d, int)) for t in (x, like) if t.is_static
        ]
        if len(sizes) == 2 and sizes[0] != sizes[1]:
            raise ValueError(
                f"cannot reshape {format_shape(x.shape)} ({sizes[0]} elements) "
                f"like {format_shape(like.shape)} ({sizes[1]} elements)"
            )
        return TensorType(x.dtype, like.shape)

    def kernel(self, x: Array, like: Array) -> Array:
        return np.reshape(x, like.shape)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.reshape_like(dy, node.inputs[0]), None]


def _permutation(axes: tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(reversed(range(rank)))
    if len(axes) != rank:
        raise ValueError(
            f"axes {axes} do not match a tensor of rank {rank}: give one entry per axis"
        )
    perm = tuple(normalize_axis(a, rank) for a in axes)
    if sorted(perm) != list(range(rank)):
        raise ValueError(f"axes {axes} are not a permutation of the {rank} axes")
    return perm


@register
class Transpose(OpDef):
    """Permute axes as numpy.transpose: axis i of the result is axis ``axes[i]``
    of ``a``; ``axes=None`` reverses them (``x.T``).  Negative axes count from
    the end.

    d/da = dy transposed by the inverse permutation.

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 3, 4))
    >>> ge.transpose(x, (2, 0, 1)).shape
    (4, 'N', 3)
    """

    name = "transpose"
    view_map = {0: 0}
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("axes", "ints", None),)

    def infer(self, a: TensorType, *, axes: tuple[int, ...] | None) -> TensorType:
        return a.with_shape(a.shape[i] for i in _permutation(axes, a.rank))

    def kernel(self, a: Array, *, axes: tuple[int, ...] | None) -> Array:
        return np.transpose(a, axes)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        perm = _permutation(node.attrs["axes"], node.inputs[0].ndim)
        inverse = sorted(range(len(perm)), key=perm.__getitem__)
        return [F.transpose(dy, axes=inverse)]


@register
class ExpandDims(OpDef):
    """Insert axes of size 1, as numpy.expand_dims: ``axis`` (an int or a tuple)
    gives their positions in the result; negative ones count from its end.

    d/da = dy with those axes squeezed out.

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 3))
    >>> ge.expand_dims(x, (0, -1)).shape
    (1, 'N', 3, 1)
    """

    name = "expand_dims"
    view_map = {0: 0}
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("axis", "ints"),)

    def infer(self, a: TensorType, *, axis: tuple[int, ...]) -> TensorType:
        rank = a.rank + len(axis)
        new = normalize_axes(axis, rank)
        dims = iter(a.shape)
        return a.with_shape(1 if i in new else next(dims) for i in range(rank))

    def kernel(self, a: Array, *, axis: tuple[int, ...]) -> Array:
        return np.expand_dims(a, axis)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.squeeze(dy, axis=node.attrs["axis"])]


@register
class Squeeze(OpDef):
    """Remove axes of size 1, as numpy.squeeze.

    ``ge.squeeze(a)`` (axis None) removes the axes whose size is known to be 1;
    unlike numpy it keeps a symbolic dim even when it is 1 at run time, so that
    the rank does not depend on the data.  Naming an axis squeezes it whatever
    its size is known to be: a size other than 1 fails when the op is built
    (known size) or when it runs (symbolic size).  The node always stores the
    axes.

    d/da = dy with the axes put back (expand_dims).

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 1, 3, 1))
    >>> ge.squeeze(x).shape
    ('N', 3)
    """

    name = "squeeze"
    view_map = {0: 0}
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("axis", "ints"),)

    def infer(self, a: TensorType, *, axis: tuple[int, ...]) -> TensorType:
        axes = normalize_axes(axis, a.rank)
        for i in axes:
            if isinstance(a.shape[i], int) and a.shape[i] != 1:
                raise ValueError(
                    f"cannot squeeze axis {i} of shape {format_shape(a.shape)}: "
                    f"its size is {a.shape[i]}, not 1"
                )
        return a.with_shape(d for i, d in enumerate(a.shape) if i not in axes)

    def kernel(self, a: Array, *, axis: tuple[int, ...]) -> Array:
        return np.squeeze(a, axis)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.expand_dims(dy, axis=normalize_axes(node.attrs["axis"], node.inputs[0].ndim))]


@frontend("squeeze")
def squeeze(
    a: Tensor, axis: int | Sequence[int] | None = None, *, name: str | None = None
) -> Tensor:
    """Remove axes of size 1 from ``a``; see the op ``squeeze``.

    ``axis=None`` removes every axis whose size is known to be 1 (symbolic dims
    are kept).  Raises ShapeError when a named axis has a known size other than 1.

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 1, 3))
    >>> ge.squeeze(x, 1).shape
    ('N', 3)
    """
    if axis is None:
        shape = a.shape if isinstance(a, Tensor) else np.shape(a)
        axis = tuple(i for i, d in enumerate(shape) if d == 1)
    return F.call("squeeze", [a], {"axis": axis}, name)


# -- broadcast_to -------------------------------------------------------------------


def _broadcast_target(shape: Shape, target: tuple[int, ...]) -> Shape:
    what = f"cannot broadcast {format_shape(shape)} to {format_shape(target)}"
    lead = len(target) - len(shape)
    if lead < 0:
        raise ValueError(f"{what}: the target has fewer dims")
    out: list[Dim] = []
    for i, t in enumerate(target):
        d = shape[i - lead] if i >= lead else 1
        if t == -1:
            if i < lead:
                raise ValueError(f"{what}: -1 keeps the input's size, but axis {i} is new")
            out.append(d)
        elif t < -1:
            raise ValueError(f"{what}: sizes must be non-negative, or -1 to keep a size")
        elif d == 1 or d == t or not isinstance(d, int):
            out.append(t)  # a symbolic size must be 1 or t: numpy checks it at run time
        else:
            raise ValueError(f"{what}: axis {i} has size {d}, which is neither 1 nor {t}")
    return tuple(out)


@register
class BroadcastTo(OpDef):
    """Broadcast ``array`` to ``shape`` as numpy.broadcast_to (a read-only view).

    ``shape`` holds known sizes.  Beyond numpy, a size of -1 keeps the input's
    size on that axis (as torch's ``expand``), which is how to keep a symbolic
    dim: ``broadcast_to(x, (-1, 3, 4))`` with x of shape (N, 1, 4) gives
    (N, 3, 4).  -1 is allowed only on axes the input has.

    d/darray = dy summed over the broadcast axes (the gradient pass does that,
    with sum_like, for every input whose shape differs from its gradient's).

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 1, 4))
    >>> ge.broadcast_to(x, (-1, 3, 4)).shape
    ('N', 3, 4)
    """

    name = "broadcast_to"
    view_map = {0: 0}
    inputs = (Input("array", ALL_TYPES),)
    attrs = (Attr("shape", "ints"),)

    def infer(self, array: TensorType, *, shape: tuple[int, ...]) -> TensorType:
        return array.with_shape(_broadcast_target(array.shape, shape))

    def kernel(self, array: Array, *, shape: tuple[int, ...]) -> Array:
        if -1 in shape:
            lead = len(shape) - array.ndim
            shape = tuple(array.shape[i - lead] if t == -1 else t for i, t in enumerate(shape))
        return np.broadcast_to(array, shape)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [dy]


# -- concatenate, stack, split --------------------------------------------------------


@register
class Concatenate(OpDef):
    """Join tensors of one dtype along an existing axis, as numpy.concatenate.

    Every dim but ``axis`` must agree.  numpy's ``axis=None`` (flatten first) is
    not supported: reshape the inputs to 1-D first.

    d/darrays[i] = the part of dy that arrays[i] filled (split_like).

    >>> import graphengine as ge
    >>> g = ge.Graph()
    >>> x, y = g.placeholder("x", (None, 3)), g.placeholder("y", (None, 2))
    >>> ge.concatenate([x, y], axis=1).shape
    ('N', 5)
    """

    name = "concatenate"
    inputs = (Input("arrays", ALL_TYPES, variadic=True),)
    attrs = (Attr("axis", "int", 0),)

    def infer(self, *arrays: TensorType, axis: int) -> TensorType:
        _check_same_dtype(arrays)
        first = arrays[0]
        if first.rank == 0:
            raise ValueError("0-d tensors cannot be concatenated; use ge.stack")
        ax = normalize_axis(axis, first.rank)
        dims = list(first.shape)
        for k, t in enumerate(arrays[1:], 1):
            if t.rank != first.rank or any(
                i != ax and isinstance(d, int) and isinstance(e, int) and d != e
                for i, (d, e) in enumerate(zip(first.shape, t.shape))
            ):
                raise ValueError(
                    f"input {k} has shape {format_shape(t.shape)} and input 0 "
                    f"{format_shape(first.shape)}: only axis {ax} may differ"
                )
            dims = [_merge_dims(d, e) for d, e in zip(dims, t.shape)]
        dims[ax] = _sum_dims([t.shape[ax] for t in arrays])
        return first.with_shape(dims)

    def kernel(self, *arrays: Array, axis: int) -> Array:
        return np.concatenate(arrays, axis=axis)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        xs = node.inputs
        return [*_as_list(F.split_like([dy, *xs], axis=node.attrs["axis"], num=len(xs)))]


@register
class SplitLike(OpDef):
    """Split x, the first input, along ``axis`` into ``num`` pieces as long on
    that axis as the other inputs (read at run time, so symbolic dims work).
    The adjoint of concatenate; no gradient flows to the shape-giving inputs."""

    name = "split_like"
    internal = True
    inputs = (Input("xs", ALL_TYPES, variadic=True),)
    attrs = (Attr("axis", "int"), Attr("num", "int"))

    def num_outputs(self, attrs: dict[str, Any]) -> int:
        return attrs["num"]

    def view_of(self, output: int) -> int | None:
        return 0  # every piece is a view of x

    def infer(self, x: TensorType, *likes: TensorType, axis: int, num: int) -> Sequence[TensorType]:
        if len(likes) != num or num < 1:
            raise ValueError(f"expected x and {num} tensors giving the sizes, got {len(likes)}")
        ax = normalize_axis(axis, x.rank)
        total = _sum_dims([t.shape[ax] for t in likes])
        if isinstance(total, int) and isinstance(x.shape[ax], int) and total != x.shape[ax]:
            raise ValueError(f"axis {ax} of x has size {x.shape[ax]}, the pieces add up to {total}")
        return [x.with_shape(x.shape[:ax] + (t.shape[ax],) + x.shape[ax + 1 :]) for t in likes]

    def kernel(self, x: Array, *likes: Array, axis: int, num: int) -> Sequence[Array]:
        ends = np.cumsum([t.shape[axis] for t in likes[:-1]])
        return np.split(x, ends, axis=axis)

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        return [_concatenate_pieces(node, dys)] + [None] * node.attrs["num"]


@register
class Stack(OpDef):
    """Join tensors of one shape and dtype along a new axis, as numpy.stack.

    d/darrays[i] = slice i of dy along ``axis`` (split, then squeeze).

    >>> import graphengine as ge
    >>> g = ge.Graph()
    >>> x, y = g.placeholder("x", (None, 3)), g.placeholder("y", (None, 3))
    >>> ge.stack([x, y], axis=-1).shape
    ('N', 3, 2)
    """

    name = "stack"
    inputs = (Input("arrays", ALL_TYPES, variadic=True),)
    attrs = (Attr("axis", "int", 0),)

    def infer(self, *arrays: TensorType, axis: int) -> TensorType:
        _check_same_dtype(arrays)
        first = arrays[0]
        dims = list(first.shape)
        for k, t in enumerate(arrays[1:], 1):
            if t.rank != first.rank or any(
                isinstance(d, int) and isinstance(e, int) and d != e
                for d, e in zip(first.shape, t.shape)
            ):
                raise ValueError(
                    f"input {k} has shape {format_shape(t.shape)} and input 0 "
                    f"{format_shape(first.shape)}: stacked tensors must have "
                    "one shape"
                )
            dims = [_merge_dims(d, e) for d, e in zip(dims, t.shape)]
        dims.insert(normalize_axis(axis, first.rank + 1), len(arrays))
        return first.with_shape(dims)

    def kernel(self, *arrays: Array, axis: int) -> Array:
        return np.stack(arrays, axis=axis)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        axis = node.attrs["axis"]
        pieces = F.split(dy, len(node.inputs), axis=axis)
        return [F.squeeze(p, axis=axis) if node.wants(i) else None for i, p in enumerate(pieces)]


def _split_sizes(size: Dim, indices: tuple[int, ...]) -> list[Dim]:
    """Sizes of the pieces between split indices (numpy slice semantics)."""
    if not isinstance(size, int):
        # A negative index needs the size: refused, so that the pieces tile the axis.
        if any(i < 0 for i in indices) or list(indices) != sorted(indices):
            raise ValueError(
                f"split indices {indices} on an axis of unknown size "
                f"{size or '?'} must be non-negative and increasing"
            )
        return [None] * (len(indices) + 1)
    bounds = [0] + [min(max(i + size if i < 0 else i, 0), size) for i in indices] + [size]
    if bounds != sorted(bounds):
        raise ValueError(
            f"split indices {indices} decrease on an axis of size {size}, so the "
            "pieces would overlap; give increasing indices (or use slicing)"
        )
    return [b - a for a, b in itertools.pairwise(bounds)]


@register
class Split(OpDef):
    """Split ``ary`` along ``axis`` as numpy.split: into ``sections`` equal
    pieces (the size must divide evenly), or at the ``indices`` given.  A node
    sets exactly one of the two; ``ge.split(ary, indices_or_sections, axis)``
    picks it from the argument's type.

    Unlike numpy, indices must not decrease (once negative ones count from the
    end), so that the pieces tile the axis: numpy would return overlapping
    pieces, which have no gradient of this form.

    d/dary = the pieces' gradients concatenated (zeros for those no gradient
    reached).
    """

    name = "split"
    inputs = (Input("ary", ALL_TYPES),)
    attrs = (Attr("axis", "int", 0), Attr("indices", "ints", None), Attr("sections", "int", None))

    def num_outputs(self, attrs: dict[str, Any]) -> int:
        if attrs["sections"] is not None:
            return attrs["sections"]
        return len(attrs["indices"] or ()) + 1

    def view_of(self, output: int) -> int | None:
        return 0  # every piece is a view of ary

    def infer(
        self, ary: TensorType, *, axis: int, indices: tuple[int, ...] | None, sections: int | None
    ) -> Sequence[TensorType]:
        if ary.rank == 0:
            raise ValueError("a 0-d tensor cannot be split")
        ax = normalize_axis(axis, ary.rank)
        size = ary.shape[ax]
        if (sections is None) == (indices is None):
            raise ValueError("give either sections or indices")
        if sections is not None:
            if sections < 1:
                raise ValueError(f"cannot split into {sections} sections")
            if isinstance(size, int) and size % sections:
                raise ValueError(
                    f"axis {ax} of size {size} does not split into {sections} equal "
                    "sections; give split indices instead"
                )
            piece = size // sections if isinstance(size, int) else (size if sections == 1 else None)
            sizes = [piece] * sections
        else:
            sizes = _split_sizes(size, indices or ())
        return [ary.with_shape(ary.shape[:ax] + (s,) + ary.shape[ax + 1 :]) for s in sizes]

    def kernel(
        self, ary: Array, *, axis: int, indices: tuple[int, ...] | None, sections: int | None
    ) -> Sequence[Array]:
        return np.split(ary, sections if sections is not None else list(indices or ()), axis=axis)

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        return [_concatenate_pieces(node, dys)]


def _concatenate_pieces(node: NodeView, dys: list[Tensor | None]) -> Tensor:
    """The gradient of a split: the pieces' gradients concatenated, with zeros
    for the pieces no gradient reached."""
    parts = [F.zeros_like(piece) if dy is None else dy for dy, piece in zip(dys, node.outputs)]
    return F.concatenate(parts, axis=node.attrs["axis"])


@frontend("split")
def split(
    ary: Tensor, indices_or_sections: int | Sequence[int], axis: int = 0, *, name: str | None = None
) -> list[Tensor]:
    """Split ``ary`` along ``axis`` as numpy.split: an int gives that many equal
    pieces, a list gives the indices to split at.  Returns a list of tensors.

    Raises ShapeError when the sections do not divide the axis evenly, or when
    the indices decrease.

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 6))
    >>> [p.shape for p in ge.split(x, [1, 4], axis=1)]
    [('N', 1), ('N', 3), ('N', 2)]
    """
    if isinstance(indices_or_sections, (int, np.integer)) and not isinstance(
        indices_or_sections, (bool, np.bool_)
    ):
        attrs: dict[str, Any] = {"sections": indices_or_sections}
    else:
        attrs = {"indices": tuple(cast(Sequence[int], indices_or_sections))}
    return _as_list(F.call("split", [ary], {**attrs, "axis": axis}, name))


# -- numpy-style Tensor methods -----------------------------------------------------------


def _transposed(self: Tensor) -> Tensor:
    """The tensor with its axes reversed, as numpy's ``a.T``."""
    return F.transpose(self)


def _reshape(self: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """``x.reshape(2, -1)`` or ``x.reshape((2, -1))``, as numpy; see ge.reshape."""
    dims = shape[0] if len(shape) == 1 and not is_int(shape[0]) else shape
    return F.reshape(self, tuple(cast(Sequence[int], dims)))


def _transpose(self: Tensor, *axes: int | Sequence[int] | None) -> Tensor:
    """``x.transpose()``, ``x.transpose(1, 0, 2)`` or ``x.transpose((1, 0, 2))``,
    as numpy; see ge.transpose."""
    order = axes[0] if len(axes) == 1 and not is_int(axes[0]) else axes
    return F.transpose(self, order or None)


def _reduction_method(op: str) -> Callable[..., Tensor]:
    def method(
        self: Tensor,
        axis: int | Sequence[int] | None = None,
        keepdims: bool = False,
        *,
        dtype: Any = None,
        out: Any = None,
    ) -> Tensor:
        # np.sum(t) and the like call t.sum(axis=..., out=None[, dtype=...]).
        if out is not None or dtype is not None:
            raise GraphError(
                f"{op} of tensor '{self.name}': out= and dtype= are not supported "
                f"(cast first with .astype, then ge.{op})"
            )
        return getattr(F, op)(self, axis=axis, keepdims=keepdims)

    method.__name__ = op
    method.__doc__ = f"``x.{op}(axis=None, keepdims=False)``, as numpy (and np.{op}(x)); ge.{op}."
    return method


def _astype(self: Tensor, dtype: Any) -> Tensor:
    """The tensor converted to ``dtype``, as numpy's astype; see ge.cast."""
    return F.cast(self, dtype)


# setattr: graph.py declares these methods for type checkers; they are made here.
setattr(Tensor, "T", property(_transposed, doc=_transposed.__doc__))  # noqa: B010
setattr(Tensor, "reshape", _reshape)  # noqa: B010
setattr(Tensor, "transpose", _transpose)  # noqa: B010
for _op in ("sum", "mean", "max", "min"):
    setattr(Tensor, _op, _reduction_method(_op))
setattr(Tensor, "astype", _astype)  # noqa: B010
