"""Shape ops: reshape, transpose, expand_dims, squeeze, broadcast_to,
concatenate, stack, split, slicing (``x[1:3, ::2]``), take, one_hot and pad.

They keep numpy's names and semantics; each docstring says where we differ.
The gradient of each linear op is its adjoint: reshape and reshape back,
transpose and the inverse permutation, concatenate and split, slice and
scatter into zeros, take and scatter-add, pad and slice.

The internal ops that gradient rules use (reshape_like, split_like,
slice_grad, take_grad) read sizes from a non-differentiable ``like`` input at
run time, so they work with symbolic dims.

The bottom of the module gives :class:`~graphengine.graph.Tensor` numpy-style
methods: ``x.T``, ``x.reshape``, ``x.transpose``, ``x.sum`` / ``mean`` / ``max``
/ ``min``, ``x.astype`` and indexing ``x[...]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..dtypes import ALL_TYPES, FLOAT_TYPES, INDEX_TYPES, INT_TYPES, NUMERIC_TYPES
from ..errors import GraphError, ShapeError
from ..graph import Tensor
from ..shapes import Dim, Shape, TensorType, format_shape, normalize_axes, normalize_axis
from .registry import Attr, F, Input, OpDef, frontend, register

#: An omitted slice stop: numpy clamps it to the axis, whatever its size (the
#: ONNX convention); a negative step uses -END.
END = 2**63 - 1


def _call(op: str, inputs: list[Any], attrs: dict[str, Any], name: str | None = None):
    from .api import call  # api is imported after the op families

    return call(op, inputs, attrs, name)


def _as_list(out) -> list[Tensor]:
    """Graph.apply returns a bare tensor for a single output: make it a list."""
    return list(out) if isinstance(out, tuple) else [out]


def _check_same_dtype(types: Sequence[TensorType]) -> None:
    names = [t.dtype.name for t in types]
    if len(set(names)) > 1:
        raise ValueError(f"inputs have different dtypes ({', '.join(names)}); cast them with "
                         "ge.cast so that all match")


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
                raise ValueError(f"{what}: {out_known} elements is not a multiple of "
                                 f"{in_known}, whatever the size of "
                                 f"{', '.join(map(str, symbols))}")
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
            raise ValueError(f"{what}: {in_known} elements do not divide into rows of "
                             f"{out_known}")
        fill = in_known // out_known
    out = list(newshape)
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
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("newshape", "ints"),)

    def infer(self, a, *, newshape):
        return a.with_shape(_reshaped(a.shape, newshape))

    def kernel(self, a, *, newshape):
        return np.reshape(a, newshape)

    def vjp(self, node, dy):
        return [F.reshape_like(dy, node.inputs[0])]


@register
class ReshapeLike(OpDef):
    """Reshape x to the shape of ``like``, read at run time so that symbolic
    dims work.  The adjoint of reshape, and its own adjoint."""

    name = "reshape_like"
    internal = True
    inputs = (Input("x", ALL_TYPES), Input("like", ALL_TYPES, differentiable=False))

    def infer(self, x, like):
        sizes = [math.prod(t.shape) for t in (x, like) if t.is_static]
        if len(sizes) == 2 and sizes[0] != sizes[1]:
            raise ValueError(f"cannot reshape {format_shape(x.shape)} ({sizes[0]} elements) "
                             f"like {format_shape(like.shape)} ({sizes[1]} elements)")
        return TensorType(x.dtype, like.shape)

    def kernel(self, x, like):
        return np.reshape(x, like.shape)

    def vjp(self, node, dy):
        return [F.reshape_like(dy, node.inputs[0]), None]


def _permutation(axes: tuple[int, ...] | None, rank: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(reversed(range(rank)))
    if len(axes) != rank:
        raise ValueError(f"axes {axes} do not match a tensor of rank {rank}: give one entry "
                         "per axis")
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
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("axes", "ints", None),)

    def infer(self, a, *, axes):
        return a.with_shape(a.shape[i] for i in _permutation(axes, a.rank))

    def kernel(self, a, *, axes):
        return np.transpose(a, axes)

    def vjp(self, node, dy):
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
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("axis", "ints"),)

    def infer(self, a, *, axis):
        rank = a.rank + len(axis)
        new = normalize_axes(axis, rank)
        dims = iter(a.shape)
        return a.with_shape(1 if i in new else next(dims) for i in range(rank))

    def kernel(self, a, *, axis):
        return np.expand_dims(a, axis)

    def vjp(self, node, dy):
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
    inputs = (Input("a", ALL_TYPES),)
    attrs = (Attr("axis", "ints"),)

    def infer(self, a, *, axis):
        axes = normalize_axes(axis, a.rank)
        for i in axes:
            if isinstance(a.shape[i], int) and a.shape[i] != 1:
                raise ValueError(f"cannot squeeze axis {i} of shape {format_shape(a.shape)}: "
                                 f"its size is {a.shape[i]}, not 1")
        return a.with_shape(d for i, d in enumerate(a.shape) if i not in axes)

    def kernel(self, a, *, axis):
        return np.squeeze(a, axis)

    def vjp(self, node, dy):
        return [F.expand_dims(dy, axis=normalize_axes(node.attrs["axis"], node.inputs[0].ndim))]


@frontend("squeeze")
def squeeze(a: Tensor, axis: int | Sequence[int] | None = None, *,
            name: str | None = None) -> Tensor:
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
    return _call("squeeze", [a], {"axis": axis}, name)


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
    inputs = (Input("array", ALL_TYPES),)
    attrs = (Attr("shape", "ints"),)

    def infer(self, array, *, shape):
        return array.with_shape(_broadcast_target(array.shape, shape))

    def kernel(self, array, *, shape):
        if -1 in shape:
            lead = len(shape) - array.ndim
            shape = tuple(array.shape[i - lead] if t == -1 else t for i, t in enumerate(shape))
        return np.broadcast_to(array, shape)

    def vjp(self, node, dy):
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

    def infer(self, *arrays, axis):
        _check_same_dtype(arrays)
        first = arrays[0]
        if first.rank == 0:
            raise ValueError("0-d tensors cannot be concatenated; use ge.stack")
        ax = normalize_axis(axis, first.rank)
        dims = list(first.shape)
        for k, t in enumerate(arrays[1:], 1):
            if t.rank != first.rank or any(
                    i != ax and isinstance(d, int) and isinstance(e, int) and d != e
                    for i, (d, e) in enumerate(zip(first.shape, t.shape))):
                raise ValueError(f"input {k} has shape {format_shape(t.shape)} and input 0 "
                                 f"{format_shape(first.shape)}: only axis {ax} may differ")
            dims = [_merge_dims(d, e) for d, e in zip(dims, t.shape)]
        dims[ax] = _sum_dims([t.shape[ax] for t in arrays])
        return first.with_shape(dims)

    def kernel(self, *arrays, axis):
        return np.concatenate(arrays, axis=axis)

    def vjp(self, node, dy):
        xs = node.inputs
        return _as_list(F.split_like([dy, *xs], axis=node.attrs["axis"], num=len(xs)))


@register
class SplitLike(OpDef):
    """Split x, the first input, along ``axis`` into ``num`` pieces as long on
    that axis as the other inputs (read at run time, so symbolic dims work).
    The adjoint of concatenate; no gradient flows to the shape-giving inputs."""

    name = "split_like"
    internal = True
    inputs = (Input("xs", ALL_TYPES, variadic=True),)
    attrs = (Attr("axis", "int"), Attr("num", "int"))

    def num_outputs(self, attrs):
        return attrs["num"]

    def infer(self, x, *likes, axis, num):
        if len(likes) != num or num < 1:
            raise ValueError(f"expected x and {num} tensors giving the sizes, got {len(likes)}")
        ax = normalize_axis(axis, x.rank)
        total = _sum_dims([t.shape[ax] for t in likes])
        if isinstance(total, int) and isinstance(x.shape[ax], int) and total != x.shape[ax]:
            raise ValueError(f"axis {ax} of x has size {x.shape[ax]}, the pieces add up to "
                             f"{total}")
        return [x.with_shape(x.shape[:ax] + (t.shape[ax],) + x.shape[ax + 1:]) for t in likes]

    def kernel(self, x, *likes, axis, num):
        ends = np.cumsum([t.shape[axis] for t in likes[:-1]])
        return np.split(x, ends, axis=axis)

    def vjp(self, node, dys):
        dys = dys if isinstance(dys, list) else [dys]
        return [F.concatenate(dys, axis=node.attrs["axis"])] + [None] * node.attrs["num"]


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

    def infer(self, *arrays, axis):
        _check_same_dtype(arrays)
        first = arrays[0]
        dims = list(first.shape)
        for k, t in enumerate(arrays[1:], 1):
            if t.rank != first.rank or any(isinstance(d, int) and isinstance(e, int) and d != e
                                           for d, e in zip(first.shape, t.shape)):
                raise ValueError(f"input {k} has shape {format_shape(t.shape)} and input 0 "
                                 f"{format_shape(first.shape)}: stacked tensors must have "
                                 "one shape")
            dims = [_merge_dims(d, e) for d, e in zip(dims, t.shape)]
        dims.insert(normalize_axis(axis, first.rank + 1), len(arrays))
        return first.with_shape(dims)

    def kernel(self, *arrays, axis):
        return np.stack(arrays, axis=axis)

    def vjp(self, node, dy):
        axis = node.attrs["axis"]
        pieces = F.split(dy, len(node.inputs), axis=axis)
        return [F.squeeze(p, axis=axis) if node.wants(i) else None
                for i, p in enumerate(pieces)]


def _split_sizes(size: Dim, indices: tuple[int, ...]) -> list[Dim]:
    """Sizes of the pieces between split indices (numpy slice semantics)."""
    if not isinstance(size, int):
        # A negative index needs the size: refused, so that the pieces tile the axis.
        if any(i < 0 for i in indices) or list(indices) != sorted(indices):
            raise ValueError(f"split indices {indices} on an axis of unknown size "
                             f"{size or '?'} must be non-negative and increasing")
        return [None] * (len(indices) + 1)
    bounds = [0] + [min(max(i + size if i < 0 else i, 0), size) for i in indices] + [size]
    if bounds != sorted(bounds):
        raise ValueError(f"split indices {indices} decrease on an axis of size {size}, so the "
                         "pieces would overlap; give increasing indices (or use slicing)")
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
    attrs = (Attr("axis", "int", 0), Attr("indices", "ints", None),
             Attr("sections", "int", None))

    def num_outputs(self, attrs):
        if attrs["sections"] is not None:
            return attrs["sections"]
        return len(attrs["indices"] or ()) + 1

    def infer(self, ary, *, axis, indices, sections):
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
                raise ValueError(f"axis {ax} of size {size} does not split into {sections} equal "
                                 "sections; give split indices instead")
            piece = size // sections if isinstance(size, int) else (
                size if sections == 1 else None)
            sizes = [piece] * sections
        else:
            sizes = _split_sizes(size, indices)
        return [ary.with_shape(ary.shape[:ax] + (s,) + ary.shape[ax + 1:]) for s in sizes]

    def kernel(self, ary, *, axis, indices, sections):
        return np.split(ary, sections if sections is not None else list(indices), axis=axis)

    def vjp(self, node, dys):
        dys = dys if isinstance(dys, list) else [dys]
        return [F.concatenate(dys, axis=node.attrs["axis"])]


@frontend("split")
def split(ary: Tensor, indices_or_sections: int | Sequence[int], axis: int = 0, *,
          name: str | None = None) -> list[Tensor]:
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
            indices_or_sections, (bool, np.bool_)):
        attrs: dict[str, Any] = {"sections": indices_or_sections}
    else:
        attrs = {"indices": tuple(indices_or_sections)}
    return _as_list(_call("split", [ary], {**attrs, "axis": axis}, name))


# -- slicing ---------------------------------------------------------------------------

_SLICE_ATTRS = (Attr("axes", "ints", ()), Attr("starts", "ints", ()), Attr("stops", "ints", ()),
                Attr("steps", "ints", ()), Attr("index_axes", "ints", ()),
                Attr("indices", "ints", ()), Attr("new_axes", "ints", ()))


def _slice_type(x: TensorType, axes, starts, stops, steps, index_axes, indices,
                new_axes) -> TensorType:
    if not len(axes) == len(starts) == len(stops) == len(steps) or \
            len(index_axes) != len(indices):
        raise ValueError("axes, starts, stops and steps need one entry each per sliced axis, "
                         "and index_axes and indices one each per indexed axis")
    touched = [normalize_axis(a, x.rank) for a in axes + index_axes]
    if len(set(touched)) != len(touched):
        raise ValueError(f"axes {axes} and index_axes {index_axes} repeat an axis")
    dims = list(x.shape)
    for a, start, stop, step in zip(touched, starts, stops, steps):
        if step == 0:
            raise ValueError("slice step cannot be zero")
        d = dims[a]
        dims[a] = len(range(*slice(start, stop, step).indices(d))) if isinstance(d, int) else None
    for a, i in zip(touched[len(axes):], indices):
        d = dims[a]
        if isinstance(d, int) and not -d <= i < d:
            raise ValueError(f"index {i} is out of bounds for axis {a} with size {d}")
    kept = [d for a, d in enumerate(dims) if a not in touched[len(axes):]]
    rank = len(kept) + len(new_axes)
    new = normalize_axes(new_axes, rank)
    it = iter(kept)
    return x.with_shape(1 if i in new else next(it) for i in range(rank))


def _numpy_key(rank: int, axes, starts, stops, steps, index_axes, indices) -> tuple:
    key: list[Any] = [slice(None)] * rank
    for a, start, stop, step in zip(axes, starts, stops, steps):
        key[a] = slice(start, stop, step)
    for a, i in zip(index_axes, indices):
        key[a] = i
    return tuple(key)


@register
class Slice(OpDef):
    """Basic indexing as numpy's ``x[key]``: ints, slices (negative steps too),
    ``...`` and ``None`` / ``np.newaxis``.  Built by ``x[...]``; not exported as
    ``ge.slice``, which would hide Python's builtin.

    For each axis in ``axes``, ``starts`` / ``stops`` / ``steps`` hold the slice
    with numpy's meaning; an omitted start is stored as 0 (-1 for a negative
    step) and an omitted stop as END = 2**63 - 1 (-END for a negative step),
    which numpy clamps to the axis.  Each axis in ``index_axes`` is indexed by the
    int in ``indices`` and removed, as in numpy.  ``new_axes`` are the positions
    in the result of the axes of size 1 that ``None`` inserts.  An index out of
    range fails when the op is built (known size) or runs (symbolic size).

    d/dx = dy written into zeros of x's shape (slice_grad).
    """

    name = "slice"
    internal = True
    inputs = (Input("x", ALL_TYPES),)
    attrs = _SLICE_ATTRS

    def infer(self, x, **key):
        return _slice_type(x, **key)

    def kernel(self, x, *, new_axes, **key):
        out = x[_numpy_key(x.ndim, **key)]
        return np.expand_dims(out, new_axes) if new_axes else out

    def vjp(self, node, dy):
        return [F.slice_grad(dy, node.inputs[0], **node.attrs)]


@register
class SliceGrad(OpDef):
    """Zeros shaped like ``like``, with dy written where ``slice`` (with the same
    attributes) reads.  The adjoint of slice, whose own adjoint is slice."""

    name = "slice_grad"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = _SLICE_ATTRS

    def infer(self, dy, like, **key):
        sliced = _slice_type(like, **key)
        if dy.rank != sliced.rank or any(isinstance(a, int) and isinstance(b, int) and a != b
                                         for a, b in zip(dy.shape, sliced.shape)):
            raise ValueError(f"dy of shape {format_shape(dy.shape)} does not fit the slice of "
                             f"shape {format_shape(sliced.shape)}")
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy, like, *, new_axes, **key):
        out = np.zeros(like.shape, dy.dtype)
        out[_numpy_key(like.ndim, **key)] = np.squeeze(dy, new_axes) if new_axes else dy
        return out

    def vjp(self, node, ddy):
        return [F.slice(ddy, **node.attrs), None]


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _slice_bound(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if _is_int(value):
        return int(value)
    raise GraphError(f"slice {what} must be an int or None, not {type(value).__name__}")


def _getitem(self: Tensor, key: Any) -> Tensor:
    """``x[key]`` with numpy's basic indexing: ints (which remove their axis),
    slices (negative steps too), ``...`` and ``None`` / ``np.newaxis``.

    Raises ShapeError for too many indices or an index out of range (known
    sizes), GraphError for other kinds of key (use ge.take for integer arrays).

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 5, 6))
    >>> x[:, 1:3, ::-2].shape
    ('N', 2, 3)
    >>> x[..., 0, None].shape
    ('N', 5, 1)
    """
    key = key if isinstance(key, tuple) else (key,)
    for k in key:
        if not (k is None or k is Ellipsis or isinstance(k, slice) or _is_int(k)):
            raise GraphError(f"cannot index tensor '{self.name}' with {type(k).__name__}: use "
                             "ints, slices, ... and None (ge.take indexes with an int tensor)")
    if sum(k is Ellipsis for k in key) > 1:
        raise GraphError(f"an index of tensor '{self.name}' can have only one '...'")
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > self.ndim:
        raise ShapeError(f"too many indices for tensor '{self.name}' of shape "
                         f"{format_shape(self.shape)}: {used} given")
    if Ellipsis not in key:
        key = key + (Ellipsis,)
    at = key.index(Ellipsis)
    key = key[:at] + (slice(None),) * (self.ndim - used) + key[at + 1:]

    attrs: dict[str, list[int]] = {a.name: [] for a in _SLICE_ATTRS}
    axis = position = 0  # the input axis and the result axis each entry reaches
    for k in key:
        if k is None:
            attrs["new_axes"].append(position)
            position += 1
            continue
        if isinstance(k, slice):
            start, stop = _slice_bound(k.start, "start"), _slice_bound(k.stop, "stop")
            step = _slice_bound(k.step, "step")
            if not (start in (None, 0) and stop is None and step in (None, 1)):
                step = 1 if step is None else step
                attrs["axes"].append(axis)
                attrs["starts"].append((0 if step > 0 else -1) if start is None else start)
                attrs["stops"].append((END if step > 0 else -END) if stop is None else stop)
                attrs["steps"].append(step)
            position += 1
        else:
            attrs["index_axes"].append(axis)
            attrs["indices"].append(int(k))
        axis += 1
    if not any(attrs.values()):
        return self
    return _call("slice", [self], attrs)


# -- take, one_hot, pad -------------------------------------------------------------

def _take_shape(a: TensorType, indices: TensorType, axis: int | None) -> Shape:
    if axis is None:
        return indices.shape
    if a.rank == 0:
        raise ValueError("cannot take along an axis of a 0-d tensor; use axis=None")
    ax = normalize_axis(axis, a.rank)
    return a.shape[:ax] + indices.shape + a.shape[ax + 1:]


@register
class Take(OpDef):
    """Elements of ``a`` at ``indices`` along ``axis``, as numpy.take:
    ``axis=None`` indexes the flattened ``a``; otherwise the result has shape
    ``a.shape[:axis] + indices.shape + a.shape[axis + 1:]``.  With axis=0 on a
    (vocabulary, features) table it is an embedding lookup.

    Negative indices count from the end; an index out of range fails when the
    op runs (ExecutionError from numpy's IndexError), as numpy's default
    mode="raise" does, rather than being clipped (JAX) or wrapped.

    d/da = dy added into zeros of a's shape at the indices (take_grad), so
    repeated indices accumulate.  No gradient flows to the indices.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> table = g.parameter("table", np.eye(4, 3, dtype=np.float32))
    >>> ids = g.placeholder("ids", (None, 5), "int64")
    >>> ge.take(table, ids, axis=0).shape
    ('N', 5, 3)
    """

    name = "take"
    inputs = (Input("a", ALL_TYPES), Input("indices", INDEX_TYPES, differentiable=False))
    attrs = (Attr("axis", "int", None),)

    def infer(self, a, indices, *, axis):
        return TensorType(a.dtype, _take_shape(a, indices, axis))

    def kernel(self, a, indices, *, axis):
        return np.take(a, indices, axis=axis)

    def vjp(self, node, dy):
        a, indices = node.inputs
        return [F.take_grad(dy, a, indices, axis=node.attrs["axis"]), None]


@register
class TakeGrad(OpDef):
    """Zeros shaped like ``like``, with dy added at ``indices`` along ``axis``
    (np.add.at, so repeated indices accumulate).  The adjoint of take, whose own
    adjoint is take."""

    name = "take_grad"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("like", ALL_TYPES, differentiable=False),
              Input("indices", INDEX_TYPES, differentiable=False))
    attrs = (Attr("axis", "int", None),)

    def infer(self, dy, like, indices, *, axis):
        taken = _take_shape(like, indices, axis)
        if len(taken) != dy.rank or any(isinstance(a, int) and isinstance(b, int) and a != b
                                        for a, b in zip(dy.shape, taken)):
            raise ValueError(f"dy of shape {format_shape(dy.shape)} does not fit take's result "
                             f"of shape {format_shape(taken)}")
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy, like, indices, *, axis):
        out = np.zeros(like.shape, dy.dtype)
        if axis is None:
            np.add.at(out.reshape(-1), indices, dy)  # a view: out is fresh and contiguous
        else:
            np.add.at(out, (slice(None),) * (axis % like.ndim) + (indices,), dy)
        return out

    def vjp(self, node, ddy):
        indices = node.inputs[2]
        return [F.take(ddy, indices, axis=node.attrs["axis"]), None, None]


@register
class OneHot(OpDef):
    """One-hot encoding (numpy has none; as tf.one_hot and jax.nn.one_hot): a
    new axis of size ``depth`` at ``axis`` of the result holds 1 at the position
    given by the index and 0 elsewhere.  An index outside [0, depth) gives all
    zeros (negative indices do not count from the end).  No gradient.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> labels = g.placeholder("labels", (None,), "int64")
    >>> ge.run(g, ge.one_hot(labels, 3), {"labels": np.array([2, 0])}).tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """

    name = "one_hot"
    inputs = (Input("indices", INT_TYPES, differentiable=False),)
    attrs = (Attr("depth", "int"), Attr("dtype", "dtype", "float32"), Attr("axis", "int", -1))
    vjp = None

    def infer(self, indices, *, depth, dtype, axis):
        if depth < 0:
            raise ValueError(f"depth must be non-negative, got {depth}")
        shape = list(indices.shape)
        shape.insert(normalize_axis(axis, indices.rank + 1), depth)
        return TensorType(dtype, shape)

    def kernel(self, indices, *, depth, dtype, axis):
        at = axis % (indices.ndim + 1)
        positions = np.arange(depth).reshape((depth,) + (1,) * (indices.ndim - at))
        return (np.expand_dims(indices, at) == positions).astype(dtype)


@register
class Pad(OpDef):
    """Pad with a constant, as numpy.pad(array, pad_width, mode="constant",
    constant_values=c).

    ``ge.pad`` takes numpy's forms of ``pad_width`` (an int, a (before, after)
    pair, or one pair per axis); the node stores one (before, after) pair per
    axis, flattened.  Only mode "constant" with one scalar value is supported.

    d/darray = the middle of dy, where the array was copied (a slice).
    """

    name = "pad"
    inputs = (Input("array", NUMERIC_TYPES),)
    attrs = (Attr("pad_width", "ints"), Attr("constant_values", "float", 0.0))

    def infer(self, array, *, pad_width, constant_values):
        if len(pad_width) != 2 * array.rank:
            raise ValueError(f"pad_width {pad_width} needs a (before, after) pair for each of "
                             f"the {array.rank} axes")
        if any(p < 0 for p in pad_width):
            raise ValueError(f"pad_width {pad_width} has a negative width")
        pairs = zip(pad_width[::2], pad_width[1::2])
        return array.with_shape(
            d + b + a if isinstance(d, int) else (d if b + a == 0 else None)
            for d, (b, a) in zip(array.shape, pairs))

    def kernel(self, array, *, pad_width, constant_values):
        pairs = list(zip(pad_width[::2], pad_width[1::2]))
        shape = tuple(d + b + a for d, (b, a) in zip(array.shape, pairs))
        out = np.full(shape, constant_values, dtype=array.dtype)
        out[tuple(slice(b, b + d) for d, (b, _) in zip(array.shape, pairs))] = array
        return out

    def vjp(self, node, dy):
        pw = node.attrs["pad_width"]
        return [dy[tuple(slice(b, -a if a else None) for b, a in zip(pw[::2], pw[1::2]))]]


@frontend("pad")
def pad(array: Tensor, pad_width: Any, mode: str = "constant", constant_values: float = 0.0,
        *, name: str | None = None) -> Tensor:
    """Pad ``array`` with ``constant_values``, as numpy.pad in mode "constant".

    ``pad_width`` is an int (every side of every axis), a ``(before, after)``
    pair (every axis), or one pair per axis.  Raises GraphError for another mode
    or a pad_width of another form, ShapeError for a negative width.

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 3))
    >>> ge.pad(x, ((0, 0), (1, 2))).shape
    ('N', 6)
    """
    if mode != "constant":
        raise GraphError(f"pad: mode {mode!r} is not supported; only 'constant' is")
    rank = array.ndim if isinstance(array, Tensor) else np.ndim(array)
    widths = np.asarray(pad_width)
    if widths.dtype.kind not in "iu":
        raise GraphError(f"pad: pad_width must hold ints, got {pad_width!r}")
    try:
        pairs = np.broadcast_to(widths, (rank, 2))
    except ValueError:
        raise GraphError(f"pad: pad_width {pad_width!r} is not an int, a (before, after) pair "
                         f"or {rank} such pairs") from None
    attrs = {"pad_width": tuple(int(p) for p in pairs.ravel()),
             "constant_values": constant_values}
    return _call("pad", [array], attrs, name)


# -- numpy-style Tensor methods -----------------------------------------------------------

def _transposed(self: Tensor) -> Tensor:
    """The tensor with its axes reversed, as numpy's ``a.T``."""
    return F.transpose(self)


def _reshape(self: Tensor, *shape: int | Sequence[int]) -> Tensor:
    """``x.reshape(2, -1)`` or ``x.reshape((2, -1))``, as numpy; see ge.reshape."""
    if len(shape) == 1 and not _is_int(shape[0]):
        shape = tuple(shape[0])
    return F.reshape(self, shape)


def _transpose(self: Tensor, *axes: int | Sequence[int] | None) -> Tensor:
    """``x.transpose()``, ``x.transpose(1, 0, 2)`` or ``x.transpose((1, 0, 2))``,
    as numpy; see ge.transpose."""
    if len(axes) == 1 and not _is_int(axes[0]):
        axes = axes[0]
    return F.transpose(self, axes or None)


def _reduction_method(op: str):
    def method(self: Tensor, axis: int | Sequence[int] | None = None,
               keepdims: bool = False) -> Tensor:
        return getattr(F, op)(self, axis=axis, keepdims=keepdims)

    method.__name__ = op
    method.__doc__ = f"``x.{op}(axis=None, keepdims=False)``, as numpy; see ge.{op}."
    return method


def _astype(self: Tensor, dtype: Any) -> Tensor:
    """The tensor converted to ``dtype``, as numpy's astype; see ge.cast."""
    return F.cast(self, dtype)


def _iterate(self: Tensor):
    # Without this, Python would iterate through __getitem__ until an IndexError,
    # which never comes for a symbolic first dim.
    return (self[i] for i in range(len(self)))


def _no_array(self: Tensor, dtype: Any = None, copy: Any = None) -> np.ndarray:
    # numpy would otherwise treat a tensor as a sequence (it has __len__ and
    # __getitem__) and add a slice node for every element it reads.
    raise GraphError(f"tensor '{self.name}' has no value while the graph is being built; "
                     "compute it with ge.run(graph, tensor, feeds)")


Tensor.T = property(_transposed, doc=_transposed.__doc__)
Tensor.reshape = _reshape
Tensor.transpose = _transpose
for _op in ("sum", "mean", "max", "min"):
    setattr(Tensor, _op, _reduction_method(_op))
Tensor.astype = _astype
Tensor.__getitem__ = _getitem
Tensor.__iter__ = _iterate
Tensor.__array__ = _no_array
