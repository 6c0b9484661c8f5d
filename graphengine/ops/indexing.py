"""Indexing ops: slicing (``x[1:3, ::2]``), take, one_hot and pad.

They keep numpy's names and semantics; each docstring says where we differ.
The gradient of each linear op is its adjoint: slice and scatter into zeros,
take and scatter-add, pad and slice.

The internal ops that gradient rules use (slice_grad, take_grad) read sizes
from a non-differentiable ``like`` input at run time, so they work with
symbolic dims.

The bottom of the module gives :class:`~graphengine.graph.Tensor` indexing
``x[...]``, iteration over a static first dim, and a refusal to become a numpy
array.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import ALL_TYPES, FLOAT_TYPES, INDEX_TYPES, INT_TYPES, NUMERIC_TYPES
from ..errors import GraphError, ShapeError
from ..graph import Tensor
from ..shapes import Shape, TensorType, format_shape, normalize_axes, normalize_axis
from .registry import Array, Attr, F, Input, InputInfo, OpDef, OutKernel, frontend, register

if TYPE_CHECKING:
    from ..gradients import NodeView

#: An omitted slice stop: numpy clamps it to the axis, whatever its size (the
#: ONNX convention); a negative step uses -END.
END = 2**63 - 1


def is_int(value: Any) -> bool:
    """A Python or numpy int, and not a bool: what an index or a size may be."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# -- slicing ---------------------------------------------------------------------------

_SLICE_ATTRS = (
    Attr("axes", "ints", ()),
    Attr("starts", "ints", ()),
    Attr("stops", "ints", ()),
    Attr("steps", "ints", ()),
    Attr("index_axes", "ints", ()),
    Attr("indices", "ints", ()),
    Attr("new_axes", "ints", ()),
)


Ints = Sequence[int]


def _slice_type(
    x: TensorType,
    axes: Ints,
    starts: Ints,
    stops: Ints,
    steps: Ints,
    index_axes: Ints,
    indices: Ints,
    new_axes: Ints,
) -> TensorType:
    if not len(axes) == len(starts) == len(stops) == len(steps) or len(index_axes) != len(indices):
        raise ValueError(
            "axes, starts, stops and steps need one entry each per sliced axis, "
            "and index_axes and indices one each per indexed axis"
        )
    touched = [normalize_axis(a, x.rank) for a in [*axes, *index_axes]]
    if len(set(touched)) != len(touched):
        raise ValueError(f"axes {axes} and index_axes {index_axes} repeat an axis")
    dims = list(x.shape)
    for a, start, stop, step in zip(touched, starts, stops, steps):
        if step == 0:
            raise ValueError("slice step cannot be zero")
        d = dims[a]
        dims[a] = len(range(*slice(start, stop, step).indices(d))) if isinstance(d, int) else None
    for a, i in zip(touched[len(axes) :], indices):
        d = dims[a]
        if isinstance(d, int) and not -d <= i < d:
            raise ValueError(f"index {i} is out of bounds for axis {a} with size {d}")
    kept = [d for a, d in enumerate(dims) if a not in touched[len(axes) :]]
    rank = len(kept) + len(new_axes)
    new = normalize_axes(new_axes, rank)
    it = iter(kept)
    return x.with_shape(1 if i in new else next(it) for i in range(rank))


def _numpy_key(
    rank: int, axes: Ints, starts: Ints, stops: Ints, steps: Ints, index_axes: Ints, indices: Ints
) -> tuple[Any, ...]:
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
    view_map = {0: 0}
    internal = True
    inputs = (Input("x", ALL_TYPES),)
    attrs = _SLICE_ATTRS

    def infer(self, x: TensorType, **key: Any) -> TensorType:
        return _slice_type(x, **key)

    def kernel(self, x: Array, *, new_axes: tuple[int, ...], **key: Any) -> Array:
        out = x[_numpy_key(x.ndim, **key)]
        return np.expand_dims(out, new_axes) if new_axes else out

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.slice_grad(dy, node.inputs[0], **node.attrs)]


@register
class SliceGrad(OpDef):
    """Zeros shaped like ``like``, with dy written where ``slice`` (with the same
    attributes) reads.  The adjoint of slice, whose own adjoint is slice."""

    name = "slice_grad"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = _SLICE_ATTRS

    def infer(self, dy: TensorType, like: TensorType, **key: Any) -> TensorType:
        sliced = _slice_type(like, **key)
        if dy.rank != sliced.rank or any(
            isinstance(a, int) and isinstance(b, int) and a != b
            for a, b in zip(dy.shape, sliced.shape)
        ):
            raise ValueError(
                f"dy of shape {format_shape(dy.shape)} does not fit the slice of "
                f"shape {format_shape(sliced.shape)}"
            )
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy: Array, like: Array, *, new_axes: tuple[int, ...], **key: Any) -> Array:
        out = np.zeros(like.shape, dy.dtype)
        out[_numpy_key(like.ndim, **key)] = np.squeeze(dy, new_axes) if new_axes else dy
        return out

    def vjp(self, node: NodeView, ddy: Tensor) -> list[Tensor | None]:
        return [F.slice(ddy, **node.attrs), None]


def _slice_bound(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if is_int(value):
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
        if not (k is None or k is Ellipsis or isinstance(k, slice) or is_int(k)):
            raise GraphError(
                f"cannot index tensor '{self.name}' with {type(k).__name__}: use "
                "ints, slices, ... and None (ge.take indexes with an int tensor)"
            )
    if sum(k is Ellipsis for k in key) > 1:
        raise GraphError(f"an index of tensor '{self.name}' can have only one '...'")
    used = sum(1 for k in key if k is not None and k is not Ellipsis)
    if used > self.ndim:
        raise ShapeError(
            f"too many indices for tensor '{self.name}' of shape "
            f"{format_shape(self.shape)}: {used} given"
        )
    if Ellipsis not in key:
        key = key + (Ellipsis,)
    at = key.index(Ellipsis)
    key = key[:at] + (slice(None),) * (self.ndim - used) + key[at + 1 :]

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
    return F.call("slice", [self], attrs)


# -- take, one_hot, pad -------------------------------------------------------------


def _take_shape(a: TensorType, indices: TensorType, axis: int | None) -> Shape:
    if axis is None:
        return indices.shape
    if a.rank == 0:
        raise ValueError("cannot take along an axis of a 0-d tensor; use axis=None")
    ax = normalize_axis(axis, a.rank)
    return a.shape[:ax] + indices.shape + a.shape[ax + 1 :]


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

    def infer(self, a: TensorType, indices: TensorType, *, axis: int | None) -> TensorType:
        return TensorType(a.dtype, _take_shape(a, indices, axis))

    def kernel(self, a: Array, indices: Array, *, axis: int | None) -> Array:
        return np.take(a, indices, axis=axis)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        a, indices = node.inputs
        return [F.take_grad(dy, a, indices, axis=node.attrs["axis"]), None]


@register
class TakeGrad(OpDef):
    """Zeros shaped like ``like``, with dy added at ``indices`` along ``axis``
    (np.add.at, so repeated indices accumulate).  The adjoint of take, whose own
    adjoint is take."""

    name = "take_grad"
    internal = True
    inputs = (
        Input("dy", FLOAT_TYPES),
        Input("like", ALL_TYPES, differentiable=False),
        Input("indices", INDEX_TYPES, differentiable=False),
    )
    attrs = (Attr("axis", "int", None),)

    def infer(
        self, dy: TensorType, like: TensorType, indices: TensorType, *, axis: int | None
    ) -> TensorType:
        taken = _take_shape(like, indices, axis)
        if len(taken) != dy.rank or any(
            isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(dy.shape, taken)
        ):
            raise ValueError(
                f"dy of shape {format_shape(dy.shape)} does not fit take's result "
                f"of shape {format_shape(taken)}"
            )
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy: Array, like: Array, indices: Array, *, axis: int | None) -> Array:
        out = np.zeros(like.shape, dy.dtype)
        if axis is None:
            np.add.at(out.reshape(-1), indices, dy)  # a view: out is fresh and contiguous
        else:
            key: tuple[Any, ...] = (slice(None),) * (axis % like.ndim) + (indices,)
            np.add.at(out, key, dy)
        return out

    def vjp(self, node: NodeView, ddy: Tensor) -> list[Tensor | None]:
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

    def infer(
        self, indices: TensorType, *, depth: int, dtype: np.dtype[Any], axis: int
    ) -> TensorType:
        if depth < 0:
            raise ValueError(f"depth must be non-negative, got {depth}")
        shape = list(indices.shape)
        shape.insert(normalize_axis(axis, indices.rank + 1), depth)
        return TensorType(dtype, tuple(shape))

    def kernel(self, indices: Array, *, depth: int, dtype: np.dtype[Any], axis: int) -> Array:
        at = axis % (indices.ndim + 1)
        positions = np.arange(depth).reshape((depth,) + (1,) * (indices.ndim - at))
        return (np.expand_dims(indices, at) == positions).astype(dtype)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        ndim = len(inputs[0][0])
        at = attrs["axis"] % (ndim + 1)
        positions = np.arange(attrs["depth"]).reshape((attrs["depth"],) + (1,) * (ndim - at))

        def one_hot_into(indices: Array, out: Array) -> Array:
            # The bool comparison written as 0/1 in out's dtype, as astype does.
            return np.equal(np.expand_dims(indices, at), positions, out=out)

        return one_hot_into


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

    def infer(
        self, array: TensorType, *, pad_width: tuple[int, ...], constant_values: float
    ) -> TensorType:
        if len(pad_width) != 2 * array.rank:
            raise ValueError(
                f"pad_width {pad_width} needs a (before, after) pair for each of "
                f"the {array.rank} axes"
            )
        if any(p < 0 for p in pad_width):
            raise ValueError(f"pad_width {pad_width} has a negative width")
        pairs = zip(pad_width[::2], pad_width[1::2])
        return array.with_shape(
            d + b + a if isinstance(d, int) else (d if b + a == 0 else None)
            for d, (b, a) in zip(array.shape, pairs)
        )

    def kernel(self, array: Array, *, pad_width: tuple[int, ...], constant_values: float) -> Array:
        pairs = list(zip(pad_width[::2], pad_width[1::2]))
        shape = tuple(d + b + a for d, (b, a) in zip(array.shape, pairs))
        out = np.full(shape, constant_values, dtype=array.dtype)
        out[tuple(slice(b, b + d) for d, (b, _) in zip(array.shape, pairs))] = array
        return out

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        pw = node.attrs["pad_width"]
        return [dy[tuple(slice(b, -a if a else None) for b, a in zip(pw[::2], pw[1::2]))]]


@frontend("pad")
def pad(
    array: Tensor,
    pad_width: Any,
    mode: str = "constant",
    constant_values: float = 0.0,
    *,
    name: str | None = None,
) -> Tensor:
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
        raise GraphError(
            f"pad: pad_width {pad_width!r} is not an int, a (before, after) pair "
            f"or {rank} such pairs"
        ) from None
    attrs = {"pad_width": tuple(int(p) for p in pairs.ravel()), "constant_values": constant_values}
    return F.call("pad", [array], attrs, name)


# -- numpy-style Tensor indexing ---------------------------------------------------------


def _iterate(self: Tensor) -> Iterator[Tensor]:
    # Without this, Python would iterate through __getitem__ until an IndexError,
    # which never comes for a symbolic first dim.
    node = self.graph.node(self.node)
    flag = node.opdef.extra_outputs_flag
    if flag is not None and self.index == 0:
        # ``y, mask = ge.dropout(x)``, written for a tuple: unpacking would
        # otherwise slice y along its first axis, silently for a batch of two.
        names = [node.opdef.output_name(i) for i in range(len(node.types))]
        raise GraphError(
            f"tensor '{self.name}' is the one output ge.{node.op} returns "
            f"({names[0]}), not a tuple to unpack; to get ({', '.join(names)}) write "
            f"{', '.join(names)} = ge.{node.op}(..., {flag}=True)"
        )
    return (self[i] for i in range(len(self)))


def _no_array(self: Tensor, dtype: Any = None, copy: Any = None) -> np.ndarray:
    # numpy would otherwise treat a tensor as a sequence (it has __len__ and
    # __getitem__) and add a slice node for every element it reads.
    raise GraphError(
        f"tensor '{self.name}' has no value while the graph is being built; "
        "compute it with ge.run(graph, tensor, feeds)"
    )


# setattr: graph.py declares these methods for type checkers; they are made here.
setattr(Tensor, "__getitem__", _getitem)  # noqa: B010
setattr(Tensor, "__iter__", _iterate)  # noqa: B010
setattr(Tensor, "__array__", _no_array)  # noqa: B010
