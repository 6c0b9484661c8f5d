"""Import rules for ONNX's shape and layout ops.

``Shape``, ``Size``, ``ConstantOfShape`` and ``Range`` are evaluated at import
time: ``Shape``/``Size`` need the dims they report to be static (a symbolic
batch dim outside ``Shape``'s start/end is fine), the others need their inputs
known; a ``ConstantOfShape`` of a shape with symbolic dims (taken from a graph
input's) is a broadcast at run time.  Shapes, axes, pads, split sizes, repeats
and slice bounds must likewise be known at import time (initializers, Constant
nodes, or folded from those).  A model that computes them from data at run time
is refused with a message naming the node.

Where ONNX and numpy differ:

* ``Reshape`` reads 0 as "copy this dim" unless ``allowzero=1`` (numpy: size 0);
* ``Expand`` broadcasts both ways (a 1 in the shape keeps the input's size);
* ``Gather`` with an index out of range is an error in both (numpy raises, and
  the run fails with an ExecutionError naming the node);
* ``OneHot`` counts negative indices from the end (ours gives zeros for them),
  and takes its on/off values from an input;
* ``Pad`` allows negative pads (crops), done with a slice.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..limits import get_limits
from ..ops import api as ops
from ..ops.shape import END
from .import_bounds import check_result, fold_bytes, over_fold_limit
from .import_rules import NodeContext, normalize_axes, rule
from .import_symbolic import divided, monomial, symbolic_array, times

_LAYOUT_VERSIONS = (13, 21, 23, 24, 25)

_CONSTANT_VERSIONS = (13, 19, 21, 23, 24, 25)


@rule("Constant", versions=_CONSTANT_VERSIONS)
def _constant(ctx: NodeContext):
    for name, dtype in (
        ("value", None),
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if ctx.has_attr(name):
            value = ctx.attr(name)
            return np.array(value) if dtype is None else np.array(value, dtype=dtype)
    given = ", ".join(a.name for a in ctx.node.attribute) or "none"
    raise ctx.fail(f"only numeric Constant values are supported (attribute given: {given})")


def _static_dims(ctx: NodeContext, shape, what: str) -> list[int]:
    if not all(isinstance(d, int) for d in shape):
        raise ctx.fail(
            f"{what} of input '{ctx.input_names[0]}' has symbolic dims "
            f"{tuple(shape)}: graphengine computes shapes at import time only "
            "from static dims"
        )
    return list(shape)


@rule("Shape", versions=(13, 15, 19, 21, 23, 24, 25))
def _shape(ctx: NodeContext):
    value = ctx.static(0)
    shape = value.shape if value is not None else ctx.shape_of(ctx.input(0))
    rank = len(shape)
    start, end = ctx.attr("start", 0), ctx.attr("end", rank)
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    # Symbolic dims stay symbolic (see import_symbolic): Reshape and Expand use them.
    return symbolic_array(shape[start:end])


@rule("Size", versions=(13, 19, 21, 23, 24, 25))
def _size(ctx: NodeContext):
    dims = _static_dims(ctx, ctx.type(0).shape, "the size")
    return np.array(int(np.prod(dims, dtype=np.int64)), dtype=np.int64)


@rule("ConstantOfShape", versions=(9, 20, 21, 23, 24, 25), static=(0,))
def _constant_of_shape(ctx: NodeContext):
    shape = ctx.require_static(0, "shape", symbolic=True).reshape(-1)
    value = ctx.attr("value", None)
    if value is None:
        value = np.zeros((), np.float32)
    if value.size != 1:
        raise ctx.fail(f"attribute 'value' must hold one element, not {value.size}")
    if shape.dtype == object:
        return _fill_symbolic(ctx, _dims(shape), value.reshape(()))
    dims = tuple(int(d) for d in shape.astype(np.int64))
    check_result(ctx.label, dims, value.dtype)
    if over_fold_limit(fold_bytes(dims, value.dtype)):
        # Too large to store in the model file: a broadcast made at run time.
        return ops.broadcast_to(ctx.graph.constant(value.reshape(())), dims)
    return np.full(dims, value.reshape(()), dtype=value.dtype)


def _fill_symbolic(ctx: NodeContext, dims: list, value: np.ndarray):
    """``value`` broadcast at run time to ``dims``, some of them symbolic (PyTorch's
    zero initial state of an RNN with a dynamic batch: ``[layers, 'batch', hidden]``).

    Each symbolic dim is read off a graph input that has it: zeros of that input
    reduced to a vector along the dim, placed at the dim's axis; their sum,
    broadcast to the static dims, is the shape ``value`` takes.
    """
    rank = len(dims)
    inputs = ctx.graph.placeholders()
    like = None
    for axis, d in enumerate(dims):
        if isinstance(d, int):
            continue
        source = next((p for p in inputs if d is not None and d in p.types[0].shape), None)
        if source is None:
            raise ctx.fail(
                f"the shape {dims} has dim {d!r}, which no graph input has; graphengine "
                "can take a symbolic dim only from a graph input's shape"
            )
        column = ops.zeros_like(ctx.graph.tensor(source.name))
        k = list(source.types[0].shape).index(d)
        for other in reversed(range(column.ndim)):
            if other != k:
                column = ops.take(column, ctx.graph.constant(np.array(0, np.int64)), axis=other)
        column = ops.cast(column, dtype="int8")
        column = ops.expand_dims(column, axis=[a for a in range(rank) if a != axis])
        like = column if like is None else like + column
    assert like is not None, "called for a shape with symbolic dims"
    for d in dims:
        if isinstance(d, int) and d < 0:
            raise ctx.fail(f"the shape {dims} has a negative dim")
    like = ops.broadcast_to(like, tuple(d if isinstance(d, int) else -1 for d in dims))
    return ops.broadcast_like(ctx.graph.constant(value), like)


@rule("Range", versions=(11, 27), static=(0, 1, 2))
def _range(ctx: NodeContext):
    start, limit, delta = (
        ctx.require_static(i, name).reshape(())
        for i, name in enumerate(("start", "limit", "delta"))
    )
    dtype = start.dtype
    if dtype.kind == "f":
        count = int(max(np.ceil((float(limit) - float(start)) / float(delta)), 0))
    else:
        span, step = int(limit) - int(start), int(delta)
        if step == 0:
            raise ctx.fail("delta is 0")
        count = max(-(-span // step), 0)
    if over_fold_limit(fold_bytes((count,), dtype)):
        raise ctx.fail(
            f"the range holds {count:,} elements ({fold_bytes((count,), dtype):,} "
            "bytes), over the import-time folding limit; raise ge.set_limits("
            "max_fold_bytes=...) if you mean it"
        )
    # ONNX: output[i] = start + i * delta, in the input dtype.
    stash = dtype == np.float16 and ctx.attr("stash_type", 1) == 1
    work = np.dtype(np.float32) if stash else dtype
    out = work.type(start) + np.arange(count, dtype=work) * work.type(delta)
    return out.astype(dtype)


# -- reshaping ---------------------------------------------------------------------------


@rule("Reshape", versions=(13, 14, 19, 21, 23, 24, 25), static=(1,))
def _reshape(ctx: NodeContext):
    x = ctx.input(0)
    shape = _dims(ctx.require_static(1, "shape", symbolic=True))
    allowzero = ctx.version >= 14 and ctx.attr("allowzero", 0)
    dims = ctx.shape_of(x)
    target: list = [dims[i] if d == 0 and not allowzero else d for i, d in enumerate(shape)]
    in_shape = dims if None not in dims else _counted_shape(ctx, x)
    target = _solved(in_shape, target)
    if (
        None in x.shape
        and -1 not in target
        and all(isinstance(d, int) or _is_symbol(d) for d in target)
    ):
        if not all(isinstance(d, int) for d in target):
            # Our shape lost a symbol the target names again (a head split's
            # (2*N, 1, 5) back to [N, 2, 1, 5]): reshape like a tensor of that
            # shape, read at run time, so that the symbol N comes back.
            like = _fill_symbolic(ctx, target, np.zeros((), np.int8))
            return ops.reshape_like(x, like)
    out = ops.reshape(x, _static_newshape(ctx, in_shape, target))
    ctx.note_shape(out, target)
    return out


def _is_symbol(dim) -> bool:
    """A dim name, not a product of them ('2*N') and not unknown."""
    return isinstance(dim, str) and "*" not in dim


def _solved(in_shape, target: list) -> list:
    """``target`` with its -1 computed where every dim is known as a product of
    symbols and ints (a head split: (2*N, 1, 5) to [N, 2, -1, 5] gives -1 = 1)."""
    if target.count(-1) != 1:
        return target
    have = [monomial(d) for d in in_shape]
    want = [monomial(d) for d in target if d != -1]
    if None in have or None in want:
        return target
    total: Any = 1
    for d in in_shape:
        total = times(total, d)
    known: Any = 1
    for d in target:
        if d != -1:
            known = times(known, d)
    rest = divided(total, known)
    return target if rest is None else [rest if d == -1 else d for d in target]


def _counted_shape(ctx: NodeContext, x) -> tuple:
    """``x.shape``, or, where it holds an unknown dim (a product such as batch *
    heads, which no symbol names), the shape of the tensor that the reshapes
    producing ``x`` started from: it holds the same elements.  PyTorch's
    attention folds a key-padding mask to (batch * heads, 1, T) and back to
    (batch, heads, -1, T), which only that count can resolve."""
    tensor = x
    while None in tensor.shape:
        node = ctx.graph.node(tensor.node)
        if node.op != "reshape":
            return tuple(x.shape)
        tensor = ctx.graph.tensor(node.inputs[0])
    return tuple(tensor.shape)


def _dims(value: np.ndarray) -> list:
    """Entries of a (possibly symbolic) shape value: ints, dim names or None."""
    return [d if isinstance(d, str) or d is None else int(d) for d in value.reshape(-1)]


def _static_newshape(ctx: NodeContext, in_shape, target: list) -> tuple[int, ...]:
    """A numpy newshape (ints, at most one -1) for a target that may hold dims
    copied from a symbolic input shape."""
    copied = [d for d in target if not isinstance(d, int)]
    symbols = [d for d in in_shape if not isinstance(d, int)]
    if (
        copied
        and -1 in target
        and sorted(map(str, copied)) == sorted(map(str, symbols))
        and None not in copied
    ):
        # The symbolic dims all survive, so -1 stands for the static rest.
        known_in = math.prod(d for d in in_shape if isinstance(d, int))
        known_out = math.prod(d for d in target if isinstance(d, int) and d != -1)
        if known_out and known_in % known_out == 0:
            target = [known_in // known_out if d == -1 else d for d in target]
    unknown = [i for i, d in enumerate(target) if not isinstance(d, int) or d == -1]
    if len(unknown) > 1:
        raise ctx.fail(
            f"cannot express target shape {target} (from input shape "
            f"{tuple(in_shape)}) with static sizes and one -1"
        )
    return tuple(-1 if i in unknown else d for i, d in enumerate(target))


@rule("Flatten", versions=_LAYOUT_VERSIONS)
def _flatten(ctx: NodeContext):
    x = ctx.input(0)
    axis = ctx.attr("axis", 1)
    if not -x.ndim <= axis <= x.ndim:
        raise ctx.fail(f"axis {axis} is out of range for an input of rank {x.ndim}")
    axis = axis + x.ndim if axis < 0 else axis
    outer, inner = x.shape[:axis], x.shape[axis:]
    sizes = [math.prod(p) if all(isinstance(d, int) for d in p) else -1 for p in (outer, inner)]
    if sizes.count(-1) > 1:
        raise ctx.fail(f"cannot flatten shape {x.shape} at axis {axis}: both parts are symbolic")
    return ops.reshape(x, tuple(sizes))


@rule("Transpose", versions=_LAYOUT_VERSIONS)
def _transpose(ctx: NodeContext):
    perm = ctx.attr("perm", None)
    return ops.transpose(ctx.input(0), axes=None if perm is None else tuple(perm))


@rule("Squeeze", versions=_LAYOUT_VERSIONS, static=(1,))
def _squeeze(ctx: NodeContext):
    x = ctx.input(0)
    axes = ctx.axes_attr_or_input(1, since=13)
    if axes is None:
        if any(not isinstance(d, int) for d in x.shape):
            raise ctx.fail(
                f"Squeeze without axes on shape {x.shape}: cannot tell whether a "
                "symbolic dim is 1; give the axes"
            )
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = normalize_axes(ctx, axes, x.ndim)
    return ops.squeeze(x, axis=tuple(axes)) if axes else ops.identity(x)


@rule("Unsqueeze", versions=_LAYOUT_VERSIONS, static=(1,))
def _unsqueeze(ctx: NodeContext):
    x = ctx.input(0)
    axes = ctx.axes_attr_or_input(1, since=13)
    if not axes:
        raise ctx.fail("Unsqueeze needs axes")
    return ops.expand_dims(x, axis=tuple(normalize_axes(ctx, axes, x.ndim + len(axes))))


@rule("Expand", versions=(13,), static=(1,))
def _expand(ctx: NodeContext):
    x = ctx.input(0)
    shape = _dims(ctx.require_static(1, "shape", symbolic=True))
    rank = max(len(shape), x.ndim)
    shape = [1] * (rank - len(shape)) + shape
    lead = rank - x.ndim
    # ONNX broadcasts both ways: a 1 in the shape keeps the input's size (our -1),
    # and so does the input's own symbolic dim.
    target = [
        -1
        if i >= lead
        and (s == 1 or (not isinstance(s, int) and s is not None and s == x.shape[i - lead]))
        else s
        for i, s in enumerate(shape)
    ]
    if not all(isinstance(t, int) for t in target):
        raise ctx.fail(
            f"cannot expand shape {x.shape} to {shape}: symbolic target dims must "
            "be the input's own"
        )
    if all(t == -1 for t in target[lead:]) and lead == 0:
        return ops.identity(x)
    return ops.broadcast_to(x, tuple(target))


@rule("Tile", versions=(13,), static=(1,))
def _tile(ctx: NodeContext):
    x = ctx.input(0)
    repeats = [int(r) for r in ctx.require_static(1, "repeats").reshape(-1)]
    if len(repeats) != x.ndim:
        raise ctx.fail(f"repeats {repeats} need one entry per axis of the rank-{x.ndim} input")
    if any(r < 0 for r in repeats):
        raise ctx.fail(f"repeats {repeats[:8]} must be >= 0")
    if x.type.is_static:
        check_result(ctx.label, [d * r for d, r in zip(x.shape, repeats)], x.dtype)
        if any(r != 1 for r in repeats):
            # out[i*d + j] = x[j] on each axis: a broadcast of x with a new axis of
            # size r before each axis, reshaped; a few nodes whatever the repeats.
            pairs = [size for d, r in zip(x.shape, repeats) for size in (1, d)]
            spread = [size for d, r in zip(x.shape, repeats) for size in (r, d)]
            tiled = ops.broadcast_to(ops.reshape(x, tuple(pairs)), tuple(spread))
            return ops.reshape(tiled, tuple(d * r for d, r in zip(x.shape, repeats)))
    elif sum(repeats) > get_limits().max_outputs:
        raise ctx.fail(
            f"repeats {repeats[:8]} on an input with symbolic dims would "
            f"concatenate {sum(repeats):,} copies; give the input static dims"
        )
    out = x
    for axis, r in enumerate(repeats):
        if r == 0:
            out = ctx.graph.apply(
                "slice", [out], {"axes": (axis,), "starts": (0,), "stops": (0,), "steps": (1,)}
            )
        elif r > 1:
            out = ops.concatenate([out] * r, axis=axis)
    return out if out is not x else ops.identity(x)


# -- joining and splitting -------------------------------------------------------------------


@rule("Concat", versions=(13,))
def _concat(ctx: NodeContext):
    return ops.concatenate(ctx.inputs(), axis=ctx.attr("axis"))


@rule("Split", versions=(13, 18), static=(1,))
def _split(ctx: NodeContext):
    x = ctx.input(0)
    axis = normalize_axes(ctx, [ctx.attr("axis", 0)], x.ndim)[0]
    count = len(ctx.node.output)
    size = x.shape[axis]
    if ctx.has(1):
        sizes = [int(s) for s in ctx.require_static(1, "split sizes").reshape(-1)]
    elif ctx.version >= 18 and ctx.has_attr("num_outputs"):
        n = ctx.attr("num_outputs")
        if isinstance(size, int) and size % n:
            # ONNX: equal chunks of ceil(size / n), the last one smaller.
            chunk = -(-size // n)
            sizes = [chunk] * (n - 1) + [size - chunk * (n - 1)]
        else:
            return ops.split(x, n, axis=axis)
    else:
        return ops.split(x, count, axis=axis)
    if len(sizes) != count:
        raise ctx.fail(f"{len(sizes)} split sizes for {count} outputs")
    return ops.split(x, [int(i) for i in np.cumsum(sizes)[:-1]], axis=axis)


@rule("Slice", versions=(13,), static=(1, 2, 3, 4))
def _slice(ctx: NodeContext):
    x = ctx.input(0)
    starts = [int(v) for v in ctx.require_static(1, "starts").reshape(-1)]
    ends = [int(v) for v in ctx.require_static(2, "ends").reshape(-1)]
    axes = (
        [int(v) for v in ctx.require_static(3, "axes").reshape(-1)]
        if ctx.has(3)
        else list(range(len(starts)))
    )
    steps = (
        [int(v) for v in ctx.require_static(4, "steps").reshape(-1)]
        if ctx.has(4)
        else [1] * len(starts)
    )
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ctx.fail("starts, ends, axes and steps must have the same length")
    axes = normalize_axes(ctx, axes, x.ndim)
    # ONNX clamps starts and ends as Python slices do; INT64 sentinels stay in range.
    ends = [max(min(e, END), -END) for e in ends]
    if not axes:
        return ops.identity(x)
    return ctx.graph.apply(
        "slice",
        [x],
        {"axes": tuple(axes), "starts": tuple(starts), "stops": tuple(ends), "steps": tuple(steps)},
    )


@rule("Gather", versions=(13,))
def _gather(ctx: NodeContext):
    return ops.take(ctx.input(0), ctx.input(1), axis=ctx.attr("axis", 0))


@rule("GatherElements", versions=(11, 13))
def _gather_elements(ctx: NodeContext):
    return ops.gather_elements(ctx.input(0), ctx.input(1), axis=ctx.attr("axis", 0))


@rule("ScatterElements", versions=(11, 13, 16, 18))
def _scatter_elements(ctx: NodeContext):
    reduction = ctx.attr("reduction", "none")
    if isinstance(reduction, bytes):
        reduction = reduction.decode()
    if reduction not in ("none", "add", "mul", "max", "min"):
        raise ctx.fail(f"reduction {reduction!r} is not one of none, add, mul, max, min")
    return ops.scatter_elements(
        ctx.input(0), ctx.input(1), ctx.input(2), axis=ctx.attr("axis", 0), reduction=reduction
    )


@rule("OneHot", versions=(11, 28), static=(1, 2))
def _one_hot(ctx: NodeContext):
    indices = ctx.input(0)
    depth = int(ctx.require_static(1, "depth").reshape(()))
    values = ctx.require_static(2, "values").reshape(-1)
    if indices.dtype.kind not in "iu":
        indices = ops.cast(indices, dtype="int64")
    if indices.dtype.kind == "i":
        # ONNX counts negative indices from the end.
        indices = ops.where(ops.less(indices, 0), indices + depth, indices)
    hot = ops.one_hot(indices, depth, dtype="bool", axis=ctx.attr("axis", -1))
    return ops.where(hot, values[1:2].reshape(()), values[0:1].reshape(()))


def _pad_by_index(ctx: NodeContext, x, grow, mode: str):
    """Pad modes edge, reflect and wrap as a take along each padded axis, with the
    source indices numpy.pad gives (ONNX's modes are numpy's): the gradient is
    take's, which sums the copies back onto their source elements."""
    out = x
    for axis, (begin, end) in enumerate(grow):
        if not begin and not end:
            continue
        size = x.shape[axis]
        if not isinstance(size, int):
            raise ctx.fail(
                f"mode {mode!r} needs a static size along padded axis {axis}, got {x.shape}"
            )
        if mode == "reflect" and size < 2 and (begin or end):
            raise ctx.fail(f"mode 'reflect' needs at least 2 elements along axis {axis}")
        index = np.pad(np.arange(size, dtype=np.int64), (begin, end), mode=mode)
        out = ops.take(out, ctx.graph.constant(index), axis=axis)
    return out


@rule("Pad", versions=(13, 18, 19, 21, 23, 24, 25), static=(1, 2, 3))
def _pad(ctx: NodeContext):
    x = ctx.input(0)
    mode = ctx.attr("mode", "constant")
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise ctx.fail(f"mode {mode!r} is not one of constant, edge, reflect, wrap")
    pads = [int(p) for p in ctx.require_static(1, "pads").reshape(-1)]
    value = ctx.require_static(2, "constant value").reshape(()) if ctx.has(2) else 0
    axes = list(range(x.ndim))
    if ctx.version >= 18 and ctx.has(3):
        axes = normalize_axes(
            ctx, [int(a) for a in ctx.require_static(3, "axes").reshape(-1)], x.ndim
        )
    if len(pads) != 2 * len(axes):
        raise ctx.fail(f"pads {pads} need a begin and an end for each of {len(axes)} axes")
    widths = [[0, 0] for _ in range(x.ndim)]
    for k, axis in enumerate(axes):
        widths[axis] = [pads[k], pads[k + len(axes)]]
    grow = [[max(b, 0), max(e, 0)] for b, e in widths]
    if mode == "constant":
        out = ops.pad(x, grow, constant_values=float(value)) if any(map(any, grow)) else x
    else:
        out = _pad_by_index(ctx, x, grow, mode)
    crop = [(axis, -min(b, 0), min(e, 0)) for axis, (b, e) in enumerate(widths) if b < 0 or e < 0]
    if crop:
        # Negative pads remove elements.
        out = ctx.graph.apply(
            "slice",
            [out],
            {
                "axes": tuple(a for a, _, _ in crop),
                "starts": tuple(b for _, b, _ in crop),
                "stops": tuple(e if e else END for _, _, e in crop),
                "steps": (1,) * len(crop),
            },
        )
    return out if out is not x else ops.identity(x)
