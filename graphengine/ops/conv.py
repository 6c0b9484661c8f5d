"""2-D convolution: ``conv2d`` and the internal ops of its gradient.

Images are NCHW (batch, channels, height, width) and convolution weights are
(out_channels, in_channels, kh, kw), as in PyTorch and ONNX.  The window
attributes (stride, padding, dilation) and their canonical form are described
in :mod:`.window`.

The backward pass needs kernels of its own, so it is two internal ops with their
own gradient rules, and a gradient graph can be differentiated again:
``conv2d_backprop_input`` (a transposed convolution) and
``conv2d_backprop_filter`` are bilinear.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..dtypes import ALL_TYPES, FLOAT_TYPES
from ..shapes import TensorType, format_shape
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

_CONV_ATTRS = (Attr("stride", "ints", (1, 1)), Attr("padding", "ints", (0, 0, 0, 0)),
               Attr("dilation", "ints", (1, 1)))


def _conv_types(x: TensorType, w: TensorType, stride, padding, dilation) -> TensorType:
    check_rank4(x, "x (N, C, H, W)")
    check_rank4(w, "w (out_channels, in_channels, kh, kw)")
    check_window(stride, padding, dilation)
    if x.dtype != w.dtype:
        raise ValueError(f"x is {x.dtype.name} but w is {w.dtype.name}; cast one with ge.cast")
    c, ci = x.shape[1], w.shape[1]
    if isinstance(c, int) and isinstance(ci, int) and c != ci:
        raise ValueError(f"x has {c} channels (axis 1 of {format_shape(x.shape)}) but w expects "
                         f"{ci} (w is (out_channels, in_channels, kh, kw) = "
                         f"{format_shape(w.shape)}); the weight's axis 1 must match x's axis 1")
    oh, ow = output_hw(x.shape, w.shape[2:], stride, padding, dilation)
    return TensorType(x.dtype, (x.shape[0], w.shape[0], oh, ow))


def _windows(xp: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """A view (N, C, OH, OW, kh, kw) of every window of the padded input (no copy)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    view = sliding_window_view(xp, span, axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


@register
class Conv2d(OpDef):
    """2-D cross-correlation (what deep-learning frameworks call convolution) of
    x (N, C, H, W) with w (O, C, kh, kw), giving (N, O, OH, OW):

        y[n, o, p, q] = sum_{c,i,j} x_pad[n, c, p*sh + i*dh, q*sw + j*dw] * w[o, c, i, j]

    with zero padding.  There is no bias input: add one of shape (O, 1, 1), which
    broadcasts against NCHW.  No groups.  vjp: dx = conv2d_backprop_input(dy, w),
    dw = conv2d_backprop_filter(x, dy)."""

    name = "conv2d"
    inputs = (Input("x", FLOAT_TYPES), Input("w", FLOAT_TYPES))
    attrs = _CONV_ATTRS

    def infer(self, x, w, *, stride, padding, dilation):
        return _conv_types(x, w, stride, padding, dilation)

    def kernel(self, x, w, *, stride, padding, dilation):
        out_hw = output_hw(x.shape, w.shape[2:], stride, padding, dilation)
        windows = _windows(pad_hw(x, padding), w.shape[2:], stride, dilation, out_hw)
        # One matrix product over (C, kh, kw): tensordot gathers the windows once.
        out = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))    # (N, OH, OW, O)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def vjp(self, node, dy):
        x, w = node.inputs
        attrs = node.attrs
        return [F.conv2d_backprop_input(dy, w, x, **attrs) if node.wants(0) else None,
                F.conv2d_backprop_filter(x, dy, w, **attrs) if node.wants(1) else None]


@register
class Conv2dBackpropInput(OpDef):
    """The gradient of conv2d with respect to x: the transposed convolution of dy
    (N, O, OH, OW) with w (O, C, kh, kw), cropped to the shape of ``like`` (the
    forward x, which fixes H and W where the stride rounded down).  Bilinear:
    d/d dy = conv2d(g, w), d/dw = conv2d_backprop_filter(g, dy)."""

    name = "conv2d_backprop_input"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("w", FLOAT_TYPES),
              Input("like", ALL_TYPES, differentiable=False))
    attrs = _CONV_ATTRS

    def infer(self, dy, w, like, *, stride, padding, dilation):
        expected = _conv_types(like.with_dtype(w.dtype), w, stride, padding, dilation)
        check_grad_shape(dy, expected)
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy, w, like, *, stride, padding, dilation):
        n, c, h, wd = like.shape
        kernel = w.shape[2:]
        # All kh*kw contributions in one product, then added into place window by window.
        cols = np.tensordot(dy, w, axes=([1], [0])).transpose(0, 3, 4, 5, 1, 2)
        dxp = np.zeros((n, c, h + padding[0] + padding[2], wd + padding[1] + padding[3]),
                       dy.dtype)
        for k, index in window_slices(kernel, stride, dilation, dy.shape[2:]):
            dxp[index] += cols[:, :, k // kernel[1], k % kernel[1]]
        return crop_hw(dxp, padding, (h, wd))

    def vjp(self, node, g):
        dy, w, _ = node.inputs
        attrs = node.attrs
        return [F.conv2d(g, w, **attrs) if node.wants(0) else None,
                F.conv2d_backprop_filter(g, dy, w, **attrs) if node.wants(1) else None,
                None]


@register
class Conv2dBackpropFilter(OpDef):
    """The gradient of conv2d with respect to w: correlates x (N, C, H, W) with
    dy (N, O, OH, OW), giving the shape of ``like`` (the forward w).  Bilinear:
    d/dx = conv2d_backprop_input(dy, g), d/d dy = conv2d(x, g)."""

    name = "conv2d_backprop_filter"
    internal = True
    inputs = (Input("x", FLOAT_TYPES), Input("dy", FLOAT_TYPES),
              Input("like", ALL_TYPES, differentiable=False))
    attrs = _CONV_ATTRS

    def infer(self, x, dy, like, *, stride, padding, dilation):
        expected = _conv_types(x, like.with_dtype(x.dtype), stride, padding, dilation)
        check_grad_shape(dy, expected)
        return TensorType(x.dtype, like.shape)

    def kernel(self, x, dy, like, *, stride, padding, dilation):
        windows = _windows(pad_hw(x, padding), like.shape[2:], stride, dilation, dy.shape[2:])
        return np.tensordot(dy, windows, axes=([0, 2, 3], [0, 2, 3]))  # (O, C, kh, kw)

    def vjp(self, node, g):
        x, dy, _ = node.inputs
        attrs = node.attrs
        return [F.conv2d_backprop_input(dy, g, x, **attrs) if node.wants(0) else None,
                F.conv2d(x, g, **attrs) if node.wants(1) else None,
                None]


@frontend("conv2d")
def conv2d(x, w, stride=1, padding=0, dilation=1, *, name: str | None = None):
    """2-D convolution of NCHW ``x`` with ``w`` (out_channels, in_channels, kh, kw).

    ``stride`` and ``dilation``: an int or (height, width).  ``padding``: an int,
    (pad_h, pad_w), ONNX pads (top, left, bottom, right), ``"valid"`` (none) or
    ``"same"`` (output size ceil(size / stride); the odd extra row or column goes
    at the bottom or right, as ONNX SAME_UPPER).  Add a bias of shape
    (out_channels, 1, 1) with ``+``.  Raises ShapeError when the channels do not
    match or the window does not fit.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 1, 5, 7))
    >>> w = g.parameter("w", np.ones((4, 1, 3, 3), np.float32))
    >>> ge.conv2d(x, w, padding="same").shape
    ('N', 4, 5, 7)
    >>> ge.conv2d(x, w, stride=2).shape
    ('N', 4, 2, 3)
    """
    stride, dilation = as_pair(stride), as_pair(dilation)
    kernel = tuple(w.shape if hasattr(w, "shape") else np.shape(w))[2:]
    padding = resolve_padding("conv2d", padding, x, kernel, stride, dilation)
    return F.call("conv2d", [x, w], {"stride": stride, "padding": padding,
                                    "dilation": dilation}, name)



__all__ = ["Conv2d", "conv2d"]
