"""Import rules for ONNX's elementwise ops: arithmetic, activations, comparisons,
logic, Clip, Where, Cast.

Where ONNX's semantics differ from numpy's (and so from our kernels), the rule
emits what makes the result match ONNX:

* integer ``Div`` truncates toward zero (C), numpy's ``//`` floors: we divide in
  float64 and cast back, which truncates and is exact for |values| < 2**53;
* ``Mod`` with ``fmod=0`` takes the divisor's sign, with ``fmod=1`` the
  dividend's (C fmod); both are composed from a truncated division (floats in
  float64, exact for float16/float32 when |a/b| < 2**29) plus ONNX's special
  cases for infinities and zeros;
* integer ``Pow`` is computed in float64 and truncated back, as C's ``pow``;
* ``Clip`` with min > max gives max everywhere, as ONNX says (numpy agrees, but
  our ``clip`` refuses such bounds, so it becomes maximum then minimum);
* ``Relu`` on integers (opset 14) is ``maximum(x, 0)``; ``Gelu`` is our ``gelu`` in
  either form (``approximate`` "none", ONNX's default, or "tanh"); ``Erf`` is ``erf``.
"""

from __future__ import annotations

import numpy as np

from ..ops import api as ops
from .import_rules import NodeContext, rule
from .tensor_types import to_numpy_dtype

# -- helpers ------------------------------------------------------------------------


def trunc_divide(x, y):
    """Integer division rounding toward zero, as ONNX (and C) define it."""
    return ops.cast(ops.divide(x, y), dtype=x.dtype)


def trunc(z):
    """Round a float64 tensor toward zero.  Values of 2**52 and more are already
    integers (and may not fit int64), so they pass through, as do inf and NaN."""
    whole = ops.cast(ops.cast(z, dtype="int64"), dtype=z.dtype)
    return ops.where(ops.less(ops.abs(z), 2.0**52), whole, z)


def is_inf(x):
    return ops.equal(ops.abs(x), np.inf)


def is_nan(x):
    return ops.not_equal(x, x)


def _float_mod(x, y, fmod: bool):
    """ONNX Mod of float tensors (x - trunc(x/y)*y, or the floor form), in float64."""
    dtype = x.dtype
    xd, yd = ops.cast(x, dtype="float64"), ops.cast(y, dtype="float64")
    r = xd - trunc(xd / yd) * yd
    # y = +-inf and x finite: x (fmod) or, for the floor form, x or y by sign.
    x_finite = ops.logical_not(ops.logical_or(is_inf(xd), is_nan(xd)))
    y_inf_x_finite = ops.logical_and(is_inf(yd), x_finite)
    if fmod:
        r = ops.where(y_inf_x_finite, xd, r)
    else:
        wrong_sign = ops.logical_and(
            ops.not_equal(r, 0.0), ops.not_equal(ops.less(r, 0.0), ops.less(yd, 0.0))
        )
        r = ops.where(wrong_sign, r + yd, r)
        # A zero result takes the divisor's sign.
        r = ops.where(ops.equal(r, 0.0), yd * 0.0, r)
        same_sign = ops.equal(ops.less(xd, 0.0), ops.less(yd, 0.0))
        r = ops.where(
            ops.logical_and(y_inf_x_finite, ops.not_equal(xd, 0.0)), ops.where(same_sign, xd, yd), r
        )
    return ops.cast(r, dtype=dtype)


def _int_mod(x, y, fmod: bool):
    r = x - trunc_divide(x, y) * y
    if fmod:
        return r
    # Python/numpy's sign rule: a non-zero remainder takes the divisor's sign.
    wrong_sign = ops.logical_and(ops.not_equal(r, 0), ops.not_equal(ops.less(r, 0), ops.less(y, 0)))
    return ops.where(wrong_sign, r + y, r)


# -- arithmetic ------------------------------------------------------------------------


@rule("Add", versions=(13, 14))
def _add(ctx: NodeContext):
    return ops.add(ctx.input(0), ctx.input(1))


@rule("Sub", versions=(13, 14))
def _sub(ctx: NodeContext):
    return ops.subtract(ctx.input(0), ctx.input(1))


@rule("Mul", versions=(13, 14))
def _mul(ctx: NodeContext):
    return ops.multiply(ctx.input(0), ctx.input(1))


@rule("Div", versions=(13, 14))
def _div(ctx: NodeContext):
    x, y = ctx.input(0), ctx.input(1)
    if x.dtype.kind == "f":
        return ops.divide(x, y)
    return trunc_divide(x, y)


@rule("Mod", versions=(13, 28))
def _mod(ctx: NodeContext):
    x, y = ctx.input(0), ctx.input(1)
    fmod = bool(ctx.attr("fmod", 0))
    if x.dtype.kind == "f":
        if not fmod and ctx.version < 28:
            raise ctx.fail("fmod=0 on floats is not allowed before Mod-28; set fmod=1")
        return _float_mod(x, y, fmod)
    return _int_mod(x, y, fmod)


@rule("Pow", versions=(13, 15))
def _pow(ctx: NodeContext):
    x, y = ctx.input(0), ctx.input(1)
    if x.dtype.kind == "f":
        return ops.power(x, y if y.dtype == x.dtype else ops.cast(y, dtype=x.dtype))
    # Integer bases: C's pow in double, truncated back (exact below 2**53).
    xd, yd = ops.cast(x, dtype="float64"), ops.cast(y, dtype="float64")
    return ops.cast(ops.power(xd, yd), dtype=x.dtype)


@rule("Neg", versions=(13,))
def _neg(ctx: NodeContext):
    return ops.negative(ctx.input(0))


@rule("Abs", versions=(13,))
def _abs(ctx: NodeContext):
    return ops.abs(ctx.input(0))


@rule("Sign", versions=(13,))
def _sign(ctx: NodeContext):
    return ops.sign(ctx.input(0))


@rule("Reciprocal", versions=(13,))
def _reciprocal(ctx: NodeContext):
    return ops.divide(1.0, ctx.input(0))


def _variadic(ctx: NodeContext, pairwise):
    xs = ctx.inputs()
    out = xs[0]
    for x in xs[1:]:
        out = pairwise(out, x)
    return out if len(xs) > 1 else ops.identity(out)


@rule("Max", versions=(13,))
def _max(ctx: NodeContext):
    return _variadic(ctx, ops.maximum)


@rule("Min", versions=(13,))
def _min(ctx: NodeContext):
    return _variadic(ctx, ops.minimum)


@rule("Sum", versions=(13,))
def _sum(ctx: NodeContext):
    xs = ctx.inputs()
    if len(xs) > 1 and len({x.shape for x in xs}) == 1:
        return ops.add_n(xs)  # one n-ary node when no input broadcasts
    return _variadic(ctx, ops.add)


@rule("Mean", versions=(13,))
def _mean(ctx: NodeContext):
    xs = ctx.inputs()
    return ops.divide(_variadic(ctx, ops.add), float(len(xs)))


# -- unary math -------------------------------------------------------------------------


def _unary(op_type: str, fn, versions) -> None:
    rule(op_type, versions=versions)(lambda ctx: fn(ctx.input(0)))


_unary("Exp", ops.exp, (13,))
_unary("Log", ops.log, (13,))
_unary("Sqrt", ops.sqrt, (13,))
_unary("Sin", ops.sin, (7, 22))
_unary("Cos", ops.cos, (7, 22))
_unary("Tanh", ops.tanh, (13,))
_unary("Softplus", ops.softplus, (1, 22))
_unary("Erf", ops.erf, (13,))


def sigmoid(x):
    """Our sigmoid, computed in float32 for float16 (as ONNX runtimes do): our
    kernel's tanh form rounds three times, which float16 cannot afford."""
    if x.dtype != np.float16:
        return ops.sigmoid(x)
    return ops.cast(ops.sigmoid(ops.cast(x, dtype="float32")), dtype="float16")


@rule("Sigmoid", versions=(13,))
def _sigmoid(ctx: NodeContext):
    return sigmoid(ctx.input(0))


@rule("Sinh", versions=(9, 22))
def _sinh(ctx: NodeContext):
    x = ctx.input(0)
    return (ops.exp(x) - ops.exp(ops.negative(x))) * 0.5


@rule("Cosh", versions=(9, 22))
def _cosh(ctx: NodeContext):
    x = ctx.input(0)
    return (ops.exp(x) + ops.exp(ops.negative(x))) * 0.5


@rule("Shrink", versions=(9,))
def _shrink(ctx: NodeContext):
    x = ctx.input(0)
    lambd, bias = ctx.attr("lambd", 0.5), ctx.attr("bias", 0.0)
    zero = ops.zeros_like(x)
    return ops.where(
        ops.less(x, -lambd), x + bias, ops.where(ops.greater(x, lambd), x - bias, zero)
    )


@rule("Tan", versions=(7, 22))
def _tan(ctx: NodeContext):
    x = ctx.input(0)
    return ops.divide(ops.sin(x), ops.cos(x))


def _floor(x):
    xd = x if x.dtype == np.float64 else ops.cast(x, dtype="float64")
    whole = trunc(xd)
    floor = whole - ops.cast(ops.greater(whole, xd), dtype="float64")
    return floor if x.dtype == np.float64 else ops.cast(floor, dtype=x.dtype)


@rule("Floor", versions=(13,))
def _floor_rule(ctx: NodeContext):
    return _floor(ctx.input(0))


@rule("Ceil", versions=(13,))
def _ceil(ctx: NodeContext):
    return ops.negative(_floor(ops.negative(ctx.input(0))))


@rule("IsNaN", versions=(13, 20))
def _isnan(ctx: NodeContext):
    return is_nan(ctx.input(0))


@rule("IsInf", versions=(10, 20))
def _isinf(ctx: NodeContext):
    x = ctx.input(0)
    negative, positive = ctx.attr("detect_negative", 1), ctx.attr("detect_positive", 1)
    if negative and positive:
        return is_inf(x)
    if positive:
        return ops.equal(x, np.inf)
    if negative:
        return ops.equal(x, -np.inf)
    return ops.logical_and(is_inf(x), is_nan(x))  # never both: all False


# -- activations --------------------------------------------------------------------------


@rule("Relu", versions=(13, 14))
def _relu(ctx: NodeContext):
    x = ctx.input(0)
    return ops.relu(x) if x.dtype.kind == "f" else ops.maximum(x, 0)


@rule("LeakyRelu", versions=(6, 16))
def _leaky_relu(ctx: NodeContext):
    return ops.leaky_relu(ctx.input(0), alpha=ctx.attr("alpha", 0.01))


@rule("Elu", versions=(6, 22))
def _elu(ctx: NodeContext):
    return ops.elu(ctx.input(0), alpha=ctx.attr("alpha", 1.0))


@rule("Gelu", versions=(20,))
def _gelu(ctx: NodeContext):
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise ctx.fail(f"approximate={approximate!r} is not one of 'none', 'tanh'")
    return ops.gelu(ctx.input(0), approximate=approximate)


@rule("HardSigmoid", versions=(6, 22))
def _hard_sigmoid(ctx: NodeContext):
    x = ctx.input(0)
    return ops.clip(x * ctx.attr("alpha", 0.2) + ctx.attr("beta", 0.5), a_min=0.0, a_max=1.0)


@rule("HardSwish", versions=(14, 22))
def _hard_swish(ctx: NodeContext):
    x = ctx.input(0)
    return x * ops.clip(x * (1.0 / 6.0) + 0.5, a_min=0.0, a_max=1.0)


@rule("Selu", versions=(6, 22))
def _selu(ctx: NodeContext):
    x = ctx.input(0)
    alpha = ctx.attr("alpha", 1.67326319217681884765625)
    gamma = ctx.attr("gamma", 1.05070102214813232421875)
    return ops.where(ops.greater(x, 0.0), x * gamma, (ops.exp(x) * alpha - alpha) * gamma)


@rule("Celu", versions=(12, 28))
def _celu(ctx: NodeContext):
    x = ctx.input(0)
    alpha = ctx.attr("alpha", 1.0)
    negative = ops.minimum(ops.exp(x / alpha) * alpha - alpha, 0.0)
    return ops.maximum(x, 0.0) + negative


@rule("Softsign", versions=(1, 22))
def _softsign(ctx: NodeContext):
    x = ctx.input(0)
    return x / (ops.abs(x) + 1.0)


@rule("ThresholdedRelu", versions=(10, 22))
def _thresholded_relu(ctx: NodeContext):
    x = ctx.input(0)
    return ops.where(ops.greater(x, ctx.attr("alpha", 1.0)), x, 0.0)


@rule("PRelu", versions=(9, 16))
def _prelu(ctx: NodeContext):
    x, slope = ctx.input(0), ctx.input(1)
    return ops.where(ops.less(x, 0), slope * x, x)


@rule("Swish", versions=(24,))
def _swish(ctx: NodeContext):
    x = ctx.input(0)
    return x * sigmoid(x * ctx.attr("alpha", 1.0))


@rule("Mish", versions=(18, 22))
def _mish(ctx: NodeContext):
    x = ctx.input(0)
    return x * ops.tanh(ops.softplus(x))


# -- selection ------------------------------------------------------------------------------


@rule("Clip", versions=(13,), static=(1, 2))
def _clip(ctx: NodeContext):
    x = ctx.input(0)
    bounds = [ctx.static(i) if ctx.has(i) else None for i in (1, 2)]
    dynamic = [ctx.has(i) and b is None for i, b in zip((1, 2), bounds)]
    if any(dynamic):
        # Tensor bounds: ONNX's clip is min(max(x, lo), hi).
        out = ops.maximum(x, ctx.input(1)) if ctx.has(1) else x
        return ops.minimum(out, ctx.input(2)) if ctx.has(2) else out
    lo, hi = (None if b is None else b.reshape(()).astype(x.dtype) for b in bounds)
    if lo is None and hi is None:
        return ops.identity(x)
    exact = all(b is None or float(b) == b for b in (lo, hi))
    if not exact or (lo is not None and hi is not None and lo > hi):
        # min > max gives max everywhere in ONNX; our clip refuses such bounds.
        out = ops.maximum(x, lo) if lo is not None else x
        return ops.minimum(out, hi) if hi is not None else out
    return ops.clip(
        x, a_min=None if lo is None else float(lo), a_max=None if hi is None else float(hi)
    )


@rule("Where", versions=(9, 16))
def _where(ctx: NodeContext):
    return ops.where(ctx.input(0), ctx.input(1), ctx.input(2))


# -- comparisons and logic ------------------------------------------------------------------


def _binary(op_type: str, fn, versions) -> None:
    rule(op_type, versions=versions)(lambda ctx: fn(ctx.input(0), ctx.input(1)))


_binary("Equal", ops.equal, (13, 19))
_binary("Greater", ops.greater, (13,))
_binary("Less", ops.less, (13,))
_binary("GreaterOrEqual", ops.greater_equal, (12, 16))
_binary("LessOrEqual", ops.less_equal, (12, 16))
_binary("And", ops.logical_and, (7,))
_binary("Or", ops.logical_or, (7,))
_binary("Xor", ops.not_equal, (7,))
_unary("Not", ops.logical_not, (1,))


# -- identity and cast ----------------------------------------------------------------------


@rule("Identity", versions=(13, 14, 16, 19, 21, 23, 24, 25))
def _identity(ctx: NodeContext):
    return ops.identity(ctx.input(0))


@rule("Cast", versions=(13, 19, 21, 23, 24, 25, 28))
def _cast(ctx: NodeContext):
    dtype = to_numpy_dtype(ctx.attr("to"))
    if dtype is None:
        raise ctx.fail(f"cannot cast to element type {ctx.attr('to')}")
    return ops.cast(ctx.input(0), dtype=dtype)


@rule("CastLike", versions=(15, 19, 21, 23, 24, 25), static=(1,))
def _cast_like(ctx: NodeContext):
    return ops.cast(ctx.input(0), dtype=ctx.type(1).dtype)
