"""Import rules for ONNX's reductions and ArgMax/ArgMin.

Axes are an attribute before opset 18 (13 for ReduceSum) and an input after;
the input must be known at import time.  ``noop_with_empty_axes`` is honoured.
Where ONNX and numpy differ:

* a max (min) over an empty set is -inf (+inf), or the dtype's lowest (highest)
  value for integers, where numpy raises: the rule emits that constant when a
  reduced dim is statically 0;
* ``ReduceMax``/``ReduceMin`` on bool (opset 20) compare ``False < True``;
* ``select_last_index=1`` picks the last extreme index, numpy the first.

``ReduceProd`` is computed at import time only, of known values (the element
counts PyTorch's ``std``/``var`` take of shapes); of run-time tensors it is refused.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import is_float
from ..ops import api as ops
from .import_rules import NodeContext, normalize_axes, rule

_REDUCE_VERSIONS = (13, 18)


def _reduction(ctx: NodeContext, *, since: int = 18):
    """(x, axes, keepdims) of a reduction.  With ``noop_with_empty_axes`` and no
    axes, axes is () and the reduction's formula applies without reducing (as in
    ONNX's reference: ReduceL2 then gives |x|, ReduceSumSquare x**2)."""
    x = ctx.input(0)
    axes = ctx.axes_attr_or_input(1, since=since)
    keepdims = bool(ctx.attr("keepdims", 1))
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return x, (), keepdims
        axes = list(range(x.ndim))
    return x, tuple(normalize_axes(ctx, axes, x.ndim)), keepdims


def _empty(x, axes) -> bool:
    return any(x.shape[a] == 0 for a in axes)


def _fill(ctx: NodeContext, x, axes, keepdims, value):
    """A constant of the reduction's output shape (which must be static)."""
    shape = (
        [1 if i in axes else d for i, d in enumerate(x.shape)]
        if keepdims
        else [d for i, d in enumerate(x.shape) if i not in axes]
    )
    if not all(isinstance(d, int) for d in shape):
        raise ctx.fail(
            f"a reduction over an empty set with symbolic output shape {shape} is not supported"
        )
    return np.full(shape, value, dtype=x.dtype)


def _simple(
    op_type: str, reduce, prepare=None, finish=None, since: int = 18, versions=_REDUCE_VERSIONS
) -> None:
    def convert(ctx: NodeContext):
        x, axes, keepdims = _reduction(ctx, since=since)
        if prepare is not None:
            x = prepare(x)
        out = reduce(x, axis=axes, keepdims=keepdims)
        return out if finish is None else finish(out)

    rule(op_type, versions=versions, static=(1,))(convert)


def _square(x):
    return x * x


def _sqrt_any(x):
    if is_float(x.dtype):
        return ops.sqrt(x)
    return ops.cast(ops.sqrt(ops.cast(x, dtype="float64")), dtype=x.dtype)


_simple("ReduceSum", ops.sum, since=13, versions=(13,))
_simple("ReduceSumSquare", ops.sum, prepare=_square)
_simple("ReduceL1", ops.sum, prepare=ops.abs)
_simple("ReduceL2", ops.sum, prepare=_square, finish=_sqrt_any)
_simple("ReduceLogSum", ops.sum, finish=ops.log, versions=(13, 18, 28))


@rule("ReduceProd", versions=_REDUCE_VERSIONS, static=(1,))
def _reduce_prod(ctx: NodeContext):
    """A product of values known at import time, computed there.  PyTorch writes
    ReduceProd for element counts, the n of ``std`` and ``var`` (ReduceProd of
    gathered Shape entries); graphengine has no product reduction of run-time
    tensors, so any other ReduceProd is refused, naming the node."""
    value = ctx.static(0)
    if value is None:
        raw = ctx.static(0, symbolic=True)
        if raw is not None:
            raise ctx.fail(
                f"ReduceProd of the symbolic dims {raw.tolist()} (an element count) cannot "
                "be computed at import time; give the model's inputs static dims"
            )
        raise ctx.fail(
            "ReduceProd of a tensor computed at run time is not supported: graphengine "
            "has no product reduction (it computes ReduceProd only of values known at "
            "import time, such as the element counts PyTorch takes of shapes)"
        )
    axes = ctx.axes_attr_or_input(1, since=18)
    keepdims = bool(ctx.attr("keepdims", 1))
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return value
        axes = list(range(value.ndim))
    axes = normalize_axes(ctx, axes, value.ndim)
    return np.asarray(np.prod(value, axis=tuple(axes), keepdims=keepdims), dtype=value.dtype)


@rule("ReduceMean", versions=_REDUCE_VERSIONS, static=(1,))
def _reduce_mean(ctx: NodeContext):
    x, axes, keepdims = _reduction(ctx)
    if not is_float(x.dtype):
        raise ctx.fail(
            f"ReduceMean of {x.dtype.name} is not supported (ONNX leaves its "
            "rounding to the runtime); cast to float first"
        )
    return ops.mean(x, axis=axes, keepdims=keepdims)


def _extreme(ctx: NodeContext, reduce, sign: int):
    x, axes, keepdims = _reduction(ctx)
    if _empty(x, axes):
        if x.dtype == np.bool_:
            value = sign < 0  # False < True
        elif is_float(x.dtype):
            value = -np.inf if sign > 0 else np.inf
        else:
            info = np.iinfo(x.dtype)
            value = info.min if sign > 0 else info.max
        return _fill(ctx, x, axes, keepdims, value)
    if x.dtype == np.bool_:
        as_int = ops.cast(x, dtype="uint8")
        return ops.cast(reduce(as_int, axis=axes, keepdims=keepdims), dtype="bool")
    return reduce(x, axis=axes, keepdims=keepdims)


@rule("ReduceMax", versions=(13, 18, 20), static=(1,))
def _reduce_max(ctx: NodeContext):
    return _extreme(ctx, ops.max, +1)


@rule("ReduceMin", versions=(13, 18, 20), static=(1,))
def _reduce_min(ctx: NodeContext):
    return _extreme(ctx, ops.min, -1)


@rule("ReduceLogSumExp", versions=(13, 18, 28), static=(1,))
def _reduce_log_sum_exp(ctx: NodeContext):
    x, axes, keepdims = _reduction(ctx)
    if _empty(x, axes):
        return _fill(ctx, x, axes, keepdims, -np.inf)
    # Subtract the max so exp never overflows; an infinite max shifts by 0.
    shift = ops.max(x, axis=axes, keepdims=True)
    shift = ops.where(ops.equal(ops.abs(shift), np.inf), 0.0, shift)
    total = ops.sum(ops.exp(x - shift), axis=axes, keepdims=keepdims)
    if not keepdims:
        shift = ops.sum(shift, axis=axes, keepdims=False)  # drop the kept axes
    return ops.log(total) + shift


def _arg(ctx: NodeContext, minimum: bool):
    x = ctx.input(0)
    axis = normalize_axes(ctx, [ctx.attr("axis", 0)], x.ndim)[0]
    keepdims = bool(ctx.attr("keepdims", 1))
    if x.dtype == np.bool_ or x.dtype.kind == "u" or (minimum and x.dtype.kind == "i"):
        x = ops.cast(x, dtype="float64")  # exact below 2**53, and negation cannot overflow
    if minimum:
        x = ops.negative(x)
    if not ctx.attr("select_last_index", 0):
        return ops.argmax(x, axis=axis, keepdims=keepdims)
    size = x.shape[axis]
    if not isinstance(size, int):
        raise ctx.fail("select_last_index=1 needs a static size along the axis")
    # The largest index among the positions that hold the extreme value.
    index = np.arange(size, dtype=np.int64).reshape((size,) + (1,) * (x.ndim - axis - 1))
    hit = ops.equal(x, ops.max(x, axis=axis, keepdims=True))
    return ops.max(ops.where(hit, index, np.int64(-1)), axis=axis, keepdims=keepdims)


@rule("ArgMax", versions=(13,))
def _argmax(ctx: NodeContext):
    return _arg(ctx, minimum=False)


@rule("ArgMin", versions=(13,))
def _argmin(ctx: NodeContext):
    return _arg(ctx, minimum=True)
