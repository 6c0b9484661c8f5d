"""Import rules for ONNX's neural-network ops: Softmax, LogSoftmax, Conv, pooling,
BatchNormalization and Dropout.

Convolution (``Conv``, ``ConvTranspose``, with groups) is 1-D, 2-D or 3-D
(``conv2d`` for NCHW, the N-d ``conv`` for NCL and NCDHW); pooling is 1-D, 2-D
or 3-D with dilations, ``ceil_mode`` and MaxPool's Indices output (row-major, or
column-major within each (n, c) plane for ``storage_order=1``); ``auto_pad``
SAME_UPPER/SAME_LOWER/VALID becomes explicit pads (SAME needs static spatial
dims).  Integer MaxPool runs in
float64 (exact: it only selects).  ``BatchNormalization`` in inference
form becomes ``batch_norm`` (whose training runs use batch statistics, so an
imported model trains as it would in its framework); ``training_mode=1`` is
composed from our ops (batch statistics whatever the run mode, updated running
statistics as outputs 1 and 2); at schema version 9 (opsets 9-13) training mode is
chosen by asking for outputs 1-4, as onnxruntime does.  ``LayerNormalization`` is ``layer_norm`` and
``InstanceNormalization`` is
``instance_norm`` (both normalize float16 in float32; ``stash_type=1`` also gives
float32 Mean and InvStdDev); ``RMSNormalization`` is composed; ``Hardmax`` is a one-hot
of the argmax.  ``Dropout`` becomes ``dropout``: identity in inference runs, random in
training runs, whatever its ``training_mode`` input says; its mask output is
bool, as ONNX's.
"""

from __future__ import annotations

import math

import numpy as np

from ..ops import api as ops
from ..ops.window import same_pads
from .import_rules import NodeContext, normalize_axes, rule

_SOFTMAX_VERSIONS = (13,)


@rule("Softmax", versions=_SOFTMAX_VERSIONS)
def _softmax(ctx: NodeContext):
    return ops.softmax(ctx.input(0), axis=ctx.attr("axis", -1))


@rule("LogSoftmax", versions=_SOFTMAX_VERSIONS)
def _log_softmax(ctx: NodeContext):
    return ops.log_softmax(ctx.input(0), axis=ctx.attr("axis", -1))


def _window(ctx: NodeContext, x, kernel: list[int], *, dilations: list[int] | None = None):
    """(strides, pads, dilations) of a conv or pool window, auto_pad resolved, in
    ONNX's layout (pads: all begins, then all ends)."""
    spatial = x.ndim - 2
    if spatial not in (1, 2, 3) or len(kernel) != spatial:
        raise ctx.fail(
            f"only 1-D, 2-D and 3-D windows are supported, got input shape "
            f"{x.shape} and kernel {kernel}"
        )
    strides = list(ctx.attr("strides", [1] * spatial))
    dilations = list(dilations or ctx.attr("dilations", [1] * spatial))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = list(ctx.attr("pads", [0] * 2 * spatial))
    elif auto_pad == "VALID":
        pads = [0] * 2 * spatial
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        if not all(isinstance(size, int) for size in x.shape[2:]):
            raise ctx.fail(f"auto_pad={auto_pad} needs static spatial dims, got {x.shape}")
        pads = list(
            same_pads(
                ctx.node.op_type,
                x.shape[2:],
                kernel,
                strides,
                dilations,
                upper=auto_pad == "SAME_UPPER",
            )
        )
    else:
        raise ctx.fail(f"auto_pad {auto_pad!r} is not supported")
    return strides, pads, dilations


def _conv_op(ctx: NodeContext, x, w, op2d: str, op: str) -> tuple[str, int]:
    """(our op, spatial rank) for a Conv or ConvTranspose: the tuned 2-D op for
    NCHW, the N-d one (:mod:`graphengine.ops.conv_nd`) for NCL and NCDHW."""
    spatial = x.ndim - 2
    if spatial not in (1, 2, 3) or w.ndim != x.ndim:
        raise ctx.fail(
            f"only 1-D, 2-D and 3-D convolutions are supported, with weights of the "
            f"input's rank; got input shape {x.shape} and weights {w.shape}"
        )
    kernel = ctx.attr("kernel_shape", None)
    if kernel is not None and all(isinstance(k, int) for k in w.shape[2:]):
        if list(kernel) != list(w.shape[2:]):
            raise ctx.fail(
                f"kernel_shape {list(kernel)} differs from the weights' spatial "
                f"shape {list(w.shape[2:])}"
            )
    return (op2d if spatial == 2 else op), spatial


def _add_bias(ctx: NodeContext, out, spatial: int):
    if ctx.has(2):
        out = out + ops.reshape(ctx.input(2), (-1,) + (1,) * spatial)
    return out


@rule("Conv", versions=(11, 22))
def _conv(ctx: NodeContext):
    x, w = ctx.input(0), ctx.input(1)
    op, spatial = _conv_op(ctx, x, w, "conv2d", "conv")
    strides, pads, dilations = _window(ctx, x, list(ctx.attr("kernel_shape", w.shape[2:])))
    out = ctx.graph.apply(
        op,
        [x, w],
        {"stride": strides, "padding": pads, "dilation": dilations, "groups": ctx.attr("group", 1)},
    )
    if op == "conv2d":  # its second output, the im2col columns, is for its vjp
        out = out[0]
    return _add_bias(ctx, out, spatial)


@rule("ConvTranspose", versions=(11, 22))
def _conv_transpose(ctx: NodeContext):
    x, w = ctx.input(0), ctx.input(1)
    op, spatial = _conv_op(ctx, x, w, "conv_transpose2d", "conv_transpose")
    kernel = list(ctx.attr("kernel_shape", w.shape[2:]))
    strides = list(ctx.attr("strides", [1] * spatial))
    dilations = list(ctx.attr("dilations", [1] * spatial))
    extra = list(ctx.attr("output_padding", [0] * spatial))
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    target = ctx.attr("output_shape", None)
    if target is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [
            size * s if isinstance(size, int) else None for size, s in zip(x.shape[2:], strides)
        ]
    if target is not None:
        target = list(target)[-spatial:]
        if not all(isinstance(v, int) for v in list(x.shape[2:]) + list(kernel) + target):
            raise ctx.fail(f"output_shape/auto_pad need static spatial dims, got {x.shape}")
        begins, ends = [], []
        for i in range(spatial):
            full = (x.shape[2 + i] - 1) * strides[i] + extra[i] + (kernel[i] - 1) * dilations[i] + 1
            total = full - target[i]
            if total < 0:
                extra[i] -= total  # the output reaches past the last window
                total = 0
            small, large = total // 2, total - total // 2
            upper = auto_pad == "SAME_UPPER"
            begins.append(small if upper else large)
            ends.append(large if upper else small)
        pads = begins + ends
    elif auto_pad in ("NOTSET", "VALID"):
        pads = (
            list(ctx.attr("pads", [0] * 2 * spatial)) if auto_pad == "NOTSET" else [0] * 2 * spatial
        )
    else:
        raise ctx.fail(f"auto_pad {auto_pad!r} is not supported")
    if any(not 0 <= e < s for e, s in zip(extra, strides)):
        raise ctx.fail(
            f"output_padding {extra} (after output_shape) must be smaller than the "
            f"strides {strides}"
        )
    out = ctx.graph.apply(
        op,
        [x, w],
        {
            "stride": strides,
            "padding": pads,
            "dilation": dilations,
            "groups": ctx.attr("group", 1),
            "output_padding": extra,
        },
    )
    return _add_bias(ctx, out, spatial)


def _pool(ctx: NodeContext, op: str, x, **extra):
    kernel = list(ctx.attr("kernel_shape"))
    strides, pads, dilations = _window(ctx, x, kernel)
    return ctx.graph.apply(
        op,
        [x],
        {
            "kernel_size": kernel,
            "stride": strides,
            "padding": pads,
            "dilation": dilations,
            "ceil_mode": bool(ctx.attr("ceil_mode", 0)),
            **extra,
        },
    )


def _floor_divide(a, size: int):
    """a // size for non-negative int64 a below 2**53: our divide is true division
    (float64), whose correctly rounded quotient never reaches the next integer."""
    return ops.cast(ops.divide(a, size), dtype="int64")


def _column_major(ctx: NodeContext, indices, sizes):
    """Row-major flat indices into (N, C, *sizes) as ONNX's storage_order=1 ones: the
    (n, c) plane's start plus the position within the plane in column-major order
    (the first spatial axis varies fastest)."""
    if not all(isinstance(s, int) for s in sizes):
        raise ctx.fail(f"storage_order=1 needs static spatial dims, got {list(sizes)}")
    rest, offset = indices, None
    for axis in reversed(range(len(sizes))):  # peel the fastest row-major axis first
        quotient = _floor_divide(rest, sizes[axis])
        position = rest - quotient * sizes[axis]
        term = position * math.prod(sizes[:axis])
        offset, rest = (term if offset is None else offset + term), quotient
    return rest * math.prod(sizes) + offset  # rest is now the plane, n * C + c


@rule("MaxPool", versions=(12, 22))
def _max_pool(ctx: NodeContext):
    x = ctx.input(0)
    if x.dtype.kind != "f":
        # Our max_pool takes floats; float64 holds every int8/uint8 value exactly.
        y, indices = _pool(ctx, "max_pool", ops.cast(x, dtype="float64"))
        y = ops.cast(y, dtype=x.dtype)
    else:
        y, indices = _pool(ctx, "max_pool", x)
    storage_order = ctx.attr("storage_order", 0)
    if storage_order not in (0, 1):
        raise ctx.fail(
            f"storage_order must be 0 (row-major) or 1 (column-major), got {storage_order}"
        )
    wants_indices = len(ctx.node.output) > 1 and ctx.node.output[1]
    if storage_order == 1 and wants_indices and x.ndim > 3:
        indices = _column_major(ctx, indices, x.shape[2:])
    return y, indices


@rule("AveragePool", versions=(11, 19, 22))
def _average_pool(ctx: NodeContext):
    return _pool(
        ctx, "avg_pool", ctx.input(0), count_include_pad=bool(ctx.attr("count_include_pad", 0))
    )


@rule("GlobalAveragePool", versions=(1, 22))
def _global_average_pool(ctx: NodeContext):
    x = ctx.input(0)
    return ops.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)


@rule("GlobalMaxPool", versions=(1, 22))
def _global_max_pool(ctx: NodeContext):
    x = ctx.input(0)
    return ops.max(x, axis=tuple(range(2, x.ndim)), keepdims=True)


def _batch_norm_training(ctx: NodeContext, x, scale, bias, mean, var):
    """Training mode composed from our ops, whatever the run mode: normalize with
    the batch statistics (biased variance) and output the updated running ones,
    running * momentum + batch * (1 - momentum), as ONNX says; schema version 9
    also has outputs 3 and 4, the batch mean and variance (saved_mean and
    saved_var, as ONNX's reference computes them)."""
    if x.ndim < 2:
        raise ctx.fail(f"the input needs a channel axis 1, got shape {x.shape}")
    momentum = float(ctx.attr("momentum", 0.9))
    axes = (0,) + tuple(range(2, x.ndim))
    spread = tuple(range(1, x.ndim - 1))
    batch_mean = ops.mean(x, axis=axes)
    centred = x - ops.expand_dims(batch_mean, axis=spread)
    batch_var = ops.mean(centred * centred, axis=axes)
    inv_std = 1.0 / ops.sqrt(batch_var + float(ctx.attr("epsilon", 1e-5)))
    y = centred * ops.expand_dims(inv_std * scale, axis=spread) + ops.expand_dims(bias, axis=spread)
    return (
        y,
        mean * momentum + batch_mean * (1.0 - momentum),
        var * momentum + batch_var * (1.0 - momentum),
        batch_mean,
        batch_var,
    )


@rule("BatchNormalization", versions=(9, 14, 15))
def _batch_norm(ctx: NodeContext):
    x = ctx.input(0)
    rest = [ctx.input(i) for i in range(1, 5)]
    rest = [t if t.dtype == x.dtype else ops.cast(t, dtype=x.dtype) for t in rest]
    # Schema version 9 (opsets 9-13, PyTorch's export with TrainingMode.TRAINING
    # below opset 14) has no training_mode: asking for the running statistics
    # (outputs 1-4) is what selects training mode, as its doc and onnxruntime say.
    if ctx.version < 14:
        training = any(ctx.node.output[1:])
    else:
        training = bool(ctx.attr("training_mode", 0))
    if training:
        return _batch_norm_training(ctx, x, *rest)
    y = ops.batch_norm(
        x, *rest, epsilon=ctx.attr("epsilon", 1e-5), momentum=ctx.attr("momentum", 0.9)
    )
    return y


@rule("Dropout", versions=(13, 22), static=(1, 2), foldable=False)
def _dropout(ctx: NodeContext):
    x = ctx.input(0)
    ratio = float(ctx.require_static(1, "ratio").reshape(())) if ctx.has(1) else 0.5
    y, mask = ops.dropout(x, ratio, seed=ctx.attr("seed", 0), return_mask=True)
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
    y, mean, inv_std = ops.layer_norm(
        xs, scale, bias, axis=axis, epsilon=ctx.attr("epsilon", 1e-5), return_stats=True
    )
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
    rms = ops.sqrt(
        ops.mean(xs * xs, axis=tuple(range(axis, x.ndim)), keepdims=True)
        + ctx.attr("epsilon", 1e-5)
    )
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
