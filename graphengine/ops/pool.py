"""2-D pooling: ``max_pool2d``, ``avg_pool2d`` and the internal ops of their gradients.

Inputs are NCHW (batch, channels, height, width).  The window attributes
(kernel_size, stride, padding) and their canonical form are described in
:mod:`.window`.  Padding must be smaller than the kernel, so that every window
holds at least one input element; there is no ceil mode.

The backward passes need kernels of their own, so they are internal ops with
their own gradient rules, and a gradient graph can be differentiated again:
``avg_pool2d_grad``, ``max_pool2d_grad`` and ``max_pool2d_gather`` are linear in
their gradient input.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import ALL_TYPES, FLOAT_TYPES
from ..shapes import TensorType
from .registry import Attr, F, Input, OpDef, frontend, register
from .window import (
    as_pair,
    check_grad_shape,
    check_rank4,
    check_window,
    crop_hw,
    output_hw,
    pad_hw,
    resolve_padding,
    window_slices,
)

_POOL_ATTRS = (Attr("kernel_size", "ints"), Attr("stride", "ints"),
               Attr("padding", "ints", (0, 0, 0, 0)))


def _pool_types(x: TensorType, kernel_size, stride, padding) -> TensorType:
    check_rank4(x, "x (N, C, H, W)")
    if len(kernel_size) != 2 or min(kernel_size) < 1:
        raise ValueError(f"kernel_size must be 2 positive ints (height, width), got "
                         f"{kernel_size}")
    check_window(stride, padding)
    kh, kw = kernel_size
    if max(padding[0], padding[2]) >= kh or max(padding[1], padding[3]) >= kw:
        raise ValueError(f"padding {padding} must be smaller than the kernel {kernel_size} on "
                         "each side, so that every window holds at least one input element")
    return x.with_shape(x.shape[:2] + output_hw(x.shape, kernel_size, stride, padding))


def _pool_attrs(op: str, x, kernel_size, stride, padding) -> dict:
    kernel_size = as_pair(kernel_size)
    stride = kernel_size if stride is None else as_pair(stride)
    return {"kernel_size": kernel_size, "stride": stride,
            "padding": resolve_padding(op, padding, x, kernel_size, stride, (1, 1))}


def _argmax_windows(xp: np.ndarray, kernel_size, stride, out_hw) -> np.ndarray:
    """Position (row-major within the kernel) of each window's maximum; the first on ties."""
    best = arg = None
    for k, index in window_slices(kernel_size, stride, (1, 1), out_hw):
        values = xp[index]
        if best is None:
            best, arg = values.copy(), np.zeros(values.shape, np.int32)
            continue
        better = values > best            # strict: an earlier tie keeps the place
        np.copyto(best, values, where=better)
        np.copyto(arg, k, where=better)
    return arg


@register
class MaxPool2d(OpDef):
    """The maximum of each kh x kw window of NCHW x (padding counts as -inf, so it
    is never chosen).  vjp: the whole gradient goes to the first maximum of each
    window (row-major), as in PyTorch (``ge.max`` instead shares it among ties)."""

    name = "max_pool2d"
    inputs = (Input("x", FLOAT_TYPES),)
    attrs = _POOL_ATTRS

    def infer(self, x, *, kernel_size, stride, padding):
        return _pool_types(x, kernel_size, stride, padding)

    def kernel(self, x, *, kernel_size, stride, padding):
        xp = pad_hw(x, padding, -np.inf)
        out_hw = output_hw(x.shape, kernel_size, stride, padding)
        out = None
        for _, index in window_slices(kernel_size, stride, (1, 1), out_hw):
            out = xp[index].copy() if out is None else np.maximum(out, xp[index], out=out)
        return out

    def vjp(self, node, dy):
        return [F.max_pool2d_grad(node.inputs[0], dy, **node.attrs)]


@register
class MaxPool2dGrad(OpDef):
    """The gradient of max_pool2d: each window's dy added at the position of that
    window's first maximum in x, zeros elsewhere.  Linear in dy; its gradient with
    respect to x is zero wherever it exists (the argmax positions are piecewise
    constant in x), so x is not differentiable.  vjp: max_pool2d_gather(x, g)."""

    name = "max_pool2d_grad"
    internal = True
    inputs = (Input("x", FLOAT_TYPES, differentiable=False), Input("dy", FLOAT_TYPES))
    attrs = _POOL_ATTRS

    def infer(self, x, dy, *, kernel_size, stride, padding):
        check_grad_shape(dy, _pool_types(x, kernel_size, stride, padding))
        return x

    def kernel(self, x, dy, *, kernel_size, stride, padding):
        xp = pad_hw(x, padding, -np.inf)
        arg = _argmax_windows(xp, kernel_size, stride, dy.shape[2:])
        dxp = np.zeros(xp.shape, dy.dtype)
        for k, index in window_slices(kernel_size, stride, (1, 1), dy.shape[2:]):
            dxp[index] += np.where(arg == k, dy, 0)
        return crop_hw(dxp, padding, x.shape[2:])

    def vjp(self, node, g):
        return [None, F.max_pool2d_gather(node.inputs[0], g, **node.attrs)]


@register
class MaxPool2dGather(OpDef):
    """For each max_pool2d window of x, the value of g (shaped like x) at the
    window's first maximum: the adjoint of max_pool2d_grad.  Linear in g.
    vjp: max_pool2d_grad(x, dy)."""

    name = "max_pool2d_gather"
    internal = True
    inputs = (Input("x", FLOAT_TYPES, differentiable=False), Input("g", FLOAT_TYPES))
    attrs = _POOL_ATTRS

    def infer(self, x, g, *, kernel_size, stride, padding):
        if g.rank != x.rank or g.dtype != x.dtype:
            raise ValueError(f"g must have the type of x ({x}), got {g}")
        return _pool_types(x, kernel_size, stride, padding)

    def kernel(self, x, g, *, kernel_size, stride, padding):
        xp = pad_hw(x, padding, -np.inf)
        out_hw = output_hw(x.shape, kernel_size, stride, padding)
        arg = _argmax_windows(xp, kernel_size, stride, out_hw)
        gp = pad_hw(g, padding)
        out = np.empty(arg.shape, g.dtype)
        for k, index in window_slices(kernel_size, stride, (1, 1), out_hw):
            np.copyto(out, gp[index], where=arg == k)   # exactly one k per window
        return out

    def vjp(self, node, dy):
        return [None, F.max_pool2d_grad(node.inputs[0], dy, **node.attrs)]


_AVG_ATTRS = _POOL_ATTRS + (Attr("count_include_pad", "bool", True),)


def _avg_divisor(in_hw, kernel_size, stride, padding, count_include_pad, dtype):
    """What each window's sum is divided by: kh*kw, or (count_include_pad=False) the
    number of real input elements in the window, as an (OH, OW) array."""
    if count_include_pad:
        return dtype.type(kernel_size[0] * kernel_size[1])
    ones = pad_hw(np.ones((1, 1) + tuple(in_hw), dtype), padding)
    out_hw = output_hw((1, 1) + tuple(in_hw), kernel_size, stride, padding)
    counts = np.zeros(out_hw, dtype)
    for _, index in window_slices(kernel_size, stride, (1, 1), out_hw):
        counts += ones[index][0, 0]
    return counts


@register
class AvgPool2d(OpDef):
    """The mean of each kh x kw window of NCHW x, with zero padding.  By default
    the padding counts in the mean (count_include_pad=True, as PyTorch; ONNX's
    default is False: set it to match).  vjp: avg_pool2d_grad(dy)."""

    name = "avg_pool2d"
    inputs = (Input("x", FLOAT_TYPES),)
    attrs = _AVG_ATTRS

    def infer(self, x, *, kernel_size, stride, padding, count_include_pad):
        return _pool_types(x, kernel_size, stride, padding)

    def kernel(self, x, *, kernel_size, stride, padding, count_include_pad):
        xp = pad_hw(x, padding)
        out_hw = output_hw(x.shape, kernel_size, stride, padding)
        out = None
        for _, index in window_slices(kernel_size, stride, (1, 1), out_hw):
            out = xp[index].copy() if out is None else np.add(out, xp[index], out=out)
        out /= _avg_divisor(x.shape[2:], kernel_size, stride, padding, count_include_pad,
                            x.dtype)
        return out

    def vjp(self, node, dy):
        return [F.avg_pool2d_grad(dy, node.inputs[0], **node.attrs)]


@register
class AvgPool2dGrad(OpDef):
    """The gradient of avg_pool2d: each window's dy, divided as the forward pass
    divided, spread over the window and cropped to the shape of ``like`` (the
    forward x).  Linear; vjp: avg_pool2d(g)."""

    name = "avg_pool2d_grad"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = _AVG_ATTRS

    def infer(self, dy, like, *, kernel_size, stride, padding, count_include_pad):
        check_grad_shape(dy, _pool_types(like.with_dtype(dy.dtype), kernel_size, stride,
                                          padding))
        return like.with_dtype(dy.dtype)

    def kernel(self, dy, like, *, kernel_size, stride, padding, count_include_pad):
        n, c, h, w = like.shape
        share = dy / _avg_divisor((h, w), kernel_size, stride, padding, count_include_pad,
                                  dy.dtype)
        dxp = np.zeros((n, c, h + padding[0] + padding[2], w + padding[1] + padding[3]),
                       dy.dtype)
        for _, index in window_slices(kernel_size, stride, (1, 1), dy.shape[2:]):
            dxp[index] += share
        return crop_hw(dxp, padding, (h, w))

    def vjp(self, node, g):
        return [F.avg_pool2d(g, **node.attrs), None]


@frontend("max_pool2d")
def max_pool2d(x, kernel_size, stride=None, padding=0, *, name: str | None = None):
    """Max pooling of NCHW ``x`` over ``kernel_size`` windows (an int or a pair).

    ``stride`` defaults to ``kernel_size`` (as PyTorch); ``padding`` is an int, a
    pair, ONNX pads (top, left, bottom, right), ``"valid"`` or ``"same"``, and must
    be smaller than the kernel.  Padding never wins the max.  Output sizes round
    down (no ceil mode).

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 3, 8, 6))
    >>> ge.max_pool2d(x, 2).shape
    ('N', 3, 4, 3)
    """
    return F.call("max_pool2d", [x], _pool_attrs("max_pool2d", x, kernel_size, stride, padding),
                 name)


@frontend("avg_pool2d")
def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True, *,
               name: str | None = None):
    """Average pooling of NCHW ``x``; arguments as :func:`max_pool2d`.

    With ``count_include_pad=True`` (PyTorch's default) every window is divided by
    kh*kw, zero padding included; with False, by the number of real elements
    (ONNX's default).

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", (None, 3, 8, 6))
    >>> ge.avg_pool2d(x, 3, stride=1, padding=1).shape
    ('N', 3, 8, 6)
    """
    attrs = _pool_attrs("avg_pool2d", x, kernel_size, stride, padding)
    attrs["count_include_pad"] = count_include_pad
    return F.call("avg_pool2d", [x], attrs, name)



__all__ = ["AvgPool2d", "MaxPool2d", "avg_pool2d", "max_pool2d"]
