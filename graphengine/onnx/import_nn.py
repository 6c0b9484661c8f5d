"""Import rules for ONNX's neural-network ops: Softmax, LogSoftmax, Conv, pooling,
BatchNormalization and Dropout.

Convolution and pooling are 2-D (NCHW) or 1-D (NCL, run as NC1L), without
groups, dilated pooling or ``ceil_mode``; ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID
becomes explicit pads (SAME needs static spatial dims).  Integer MaxPool runs in
float64 (exact: it only selects).  ``BatchNormalization`` in inference
form becomes ``batch_norm`` (whose training runs use batch statistics, so an
imported model trains as it would in its framework); ``training_mode=1`` is
refused.  ``LayerNormalization`` is ``layer_norm`` and ``InstanceNormalization``
``instance_norm`` (both normalize float16 in float32; ``stash_type=1`` also gives
float32 Mean and InvStdDev); ``RMSNormalization`` is composed; ``Hardmax`` is a one-hot
of the argmax.  ``Dropout`` becomes ``dropout``: identity in inference runs, random in
training runs, whatever its ``training_mode`` input says; its mask output is
bool, as ONNX's.
"""

from __future__ import annotations

import numpy as np

from ..ops import api as ops
from .import_rules import NodeContext, normalize_axes, rule

_SOFTMAX_VERSIONS = (13,)


@rule("Softmax", versions=_SOFTMAX_VERSIONS)
def _softmax(ctx: NodeContext):
    return ops.softmax(ctx.input(0), axis=ctx.attr("axis", -1))


@rule("LogSoftmax", versions=_SOFTMAX_VERSIONS)
def _log_softmax(ctx: NodeContext):
    return ops.log_softmax(ctx.input(0), axis=ctx.attr("axis", -1))


def _window(ctx: NodeContext, x, kernel: list[int], *, dilations: list[int] | None = None):
    """(strides, pads, dilations) of a 1-D or 2-D conv or pool, auto_pad resolved,
    in ONNX's layout (pads: all begins, then all ends)."""
    spatial = x.ndim - 2
    if spatial not in (1, 2) or len(kernel) != spatial:
        raise ctx.fail(f"only 1-D and 2-D windows are supported, got input shape {x.shape} "
                       f"and kernel {kernel}")
    strides = list(ctx.attr("strides", [1] * spatial))
    dilations = list(dilations or ctx.attr("dilations", [1] * spatial))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = list(ctx.attr("pads", [0] * 2 * spatial))
    elif auto_pad == "VALID":
        pads = [0] * 2 * spatial
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
            if not isinstance(size, int):
                raise ctx.fail(f"auto_pad={auto_pad} needs static spatial dims, got "
                               f"{x.shape}")
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto_pad == "SAME_UPPER" else big)
            end.append(big if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    else:
        raise ctx.fail(f"auto_pad {auto_pad!r} is not supported")
    return strides, pads, dilations


def _to_2d(x, kernel, strides, pads, dilations):
    """A 1-D window problem as a 2-D one of height 1 (x becomes N, C, 1, L)."""
    if x.ndim == 4:
        return x, kernel, strides, pads, dilations
    return (ops.expand_dims(x, axis=2), [1, *kernel], [1, *strides], [0, pads[0], 0, pads[1]],
            [1, *dilations])


def _from_2d(out, ndim: int):
    return ops.squeeze(out, axis=2) if ndim == 3 else out


@rule("Conv", versions=(11, 22))
def _conv(ctx: NodeContext):
    x, w = ctx.input(0), ctx.input(1)
    if ctx.attr("group", 1) != 1:
        raise ctx.fail(f"group={ctx.attr('group')} is not supported (graphengine's conv2d "
                       "has no groups)")
    kernel = list(ctx.attr("kernel_shape", w.shape[2:]))
    strides, pads, dilations = _window(ctx, x, kernel)
    x2, _, strides, pads, dilations = _to_2d(x, kernel, strides, pads, dilations)
    w2 = w if w.ndim == 4 else ops.expand_dims(w, axis=2)
    out = ctx.graph.apply("conv2d", [x2, w2], {"stride": strides, "padding": pads,
                                               "dilation": dilations})
    if ctx.has(2):
        out = out + ops.reshape(ctx.input(2), (-1, 1, 1))
    return _from_2d(out, x.ndim)


def _pool(ctx: NodeContext, op: str, x, **extra):
    kernel = list(ctx.attr("kernel_shape"))
    if any(d != 1 for d in ctx.attr("dilations", [1] * len(kernel))):
        raise ctx.fail("dilated pooling is not supported")
    strides, pads, _ = _window(ctx, x, kernel, dilations=[1] * len(kernel))
    if ctx.attr("ceil_mode", 0) and not _ceil_is_floor(x.shape[2:], kernel, strides, pads):
        raise ctx.fail("ceil_mode=1 is not supported (graphengine's pools round down)")
    x2, kernel, strides, pads, _ = _to_2d(x, kernel, strides, pads, [1] * len(kernel))
    out = ctx.graph.apply(op, [x2], {"kernel_size": kernel, "stride": strides,
                                     "padding": pads, **extra})
    return _from_2d(out, x.ndim)


def _ceil_is_floor(spatial, kernel, strides, pads) -> bool:
    n = len(spatial)
    for i, (size, k, s) in enumerate(zip(spatial, kernel, strides)):
        if not isinstance(size, int) or (size + pads[i] + pads[i + n] - k) % s:
            return False
    return True


@rule("MaxPool", versions=(12, 22))
def _max_pool(ctx: NodeContext):
    x = ctx.input(0)
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        raise ctx.fail("the Indices output of MaxPool is not supported")
    if x.dtype.kind != "f":
        # Our max_pool2d takes floats; float64 holds every int8/uint8 value exactly.
        out = _pool(ctx, "max_pool2d", ops.cast(x, dtype="float64"))
        return ops.cast(out, dtype=x.dtype)
    return _pool(ctx, "max_pool2d", x)


@rule("AveragePool", versions=(11, 19, 22))
def _average_pool(ctx: NodeContext):
    return _pool(ctx, "avg_pool2d", ctx.input(0),
                 count_include_pad=bool(ctx.attr("count_include_pad", 0)))


@rule("GlobalAveragePool", versions=(1, 22))
def _global_average_pool(ctx: NodeContext):
    x = ctx.input(0)
    return ops.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@rule("GlobalMaxPool", versions=(1, 22))
def _global_max_pool(ctx: NodeContext):
    x = ctx.input(0)
    return ops.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@rule("BatchNormalization", versions=(9, 14, 15))
def _batch_norm(ctx: NodeContext):
    if ctx.attr("training_mode", 0):
        raise ctx.fail("training_mode=1 is not supported: graphengine's batch_norm uses batch "
                       "statistics in training runs and running ones in inference runs")
    x = ctx.input(0)
    rest = [ctx.input(i) for i in range(1, 5)]
    rest = [t if t.dtype == x.dtype else ops.cast(t, dtype=x.dtype) for t in rest]
    y, _, _ = ops.batch_norm(x, *rest, epsilon=ctx.attr("epsilon", 1e-5),
                             momentum=ctx.attr("momentum", 0.9))
    return y


@rule("Dropout", versions=(13, 22), static=(1, 2), foldable=False)
def _dropout(ctx: NodeContext):
    x = ctx.input(0)
    ratio = float(ctx.require_static(1, "ratio").reshape(())) if ctx.has(1) else 0.5
    y, mask = ops.dropout(x, ratio, seed=ctx.attr("seed", 0))
    return y, ops.not_equal(mask, 0.0)


def _stashed(ctx: NodeContext, x):
    """x in the precision ONNX's ``stash_type`` asks for (1: at least float32)."""
    if ctx.attr("stash_type", 1) == 1 and x.dtype == np.float16:
        return ops.cast(x, dtype="float32")
    return x


@rule("LayerNormalization", versions=(17,))
def _layer_norm(ctx: NodeContext):
    x = ctx.input(0)
    axis = normalize_axes(ctx, [ctx.attr("axis", -1)], x.ndim)[0]
    scale = ctx.input(1)
    bias = ctx.input(2) if ctx.has(2) else ctx.graph.constant(np.zeros((), x.dtype))
    xs = _stashed(ctx, x)
    if xs is not x:
        # stash_type=1: Mean and InvStdDev are float32 for a float16 x.
        scale, bias = ops.cast(scale, dtype="float32"), ops.cast(bias, dtype="float32")
    y, mean, inv_std = ops.layer_norm(xs, scale, bias, axis=axis,
                                      epsilon=ctx.attr("epsilon", 1e-5))
    return (ops.cast(y, dtype=x.dtype) if xs is not x else y), mean, inv_std


@rule("InstanceNormalization", versions=(6, 22))
def _instance_norm(ctx: NodeContext):
    x = ctx.input(0)
    if x.ndim < 3:
        raise ctx.fail(f"the input needs N, C and spatial axes (rank >= 3), got shape {x.shape}")
    return ops.instance_norm(x, ctx.input(1), ctx.input(2), epsilon=ctx.attr("epsilon", 1e-5))


@rule("RMSNormalization", versions=(23,))
def _rms_norm(ctx: NodeContext):
    x = ctx.input(0)
    axis = normalize_axes(ctx, [ctx.attr("axis", -1)], x.ndim)[0]
    xs = _stashed(ctx, x)
    rms = ops.sqrt(ops.mean(xs * xs, axis=tuple(range(axis, x.ndim)), keepdims=True)
                   + ctx.attr("epsilon", 1e-5))
    normalized = xs / rms
    if xs is not x:
        normalized = ops.cast(normalized, dtype=x.dtype)
    return normalized * ctx.input(1)


@rule("Hardmax", versions=(13,))
def _hardmax(ctx: NodeContext):
    x = ctx.input(0)
    axis = normalize_axes(ctx, [ctx.attr("axis", -1)], x.ndim)[0]
    size = x.shape[axis]
    if not isinstance(size, int):
        raise ctx.fail(f"Hardmax needs a static size along axis {axis}, got {x.shape}")
    # 1 at the first maximum along the axis, as ONNX's reference.
    return ops.one_hot(ops.argmax(x, axis=axis), size, dtype=x.dtype, axis=axis)
