"""Neural-network ops: softmax, 2-D convolution and pooling, dropout, batch norm.

Images are NCHW (batch, channels, height, width) and convolution weights are
(out_channels, in_channels, kh, kw), as in PyTorch and ONNX.  Window attributes
are stored in one canonical form, which is ONNX's:

* ``stride`` and ``dilation``: two ints (height, width);
* ``padding``: four ints (top, left, bottom, right), ONNX's ``pads`` order.

The front-ends ``ge.conv2d``, ``ge.max_pool2d`` and ``ge.avg_pool2d`` also take
an int, a pair, or ``"valid"`` / ``"same"`` (ONNX's ``SAME_UPPER``: the odd
extra row or column of padding goes at the bottom or right), and turn them into
that form when the op is built.  Output sizes round down, as
``floor((size + pads - dilation * (k - 1) - 1) / stride) + 1``.

Backward passes that need kernels of their own are internal ops with their own
gradient rules, so a gradient graph can be differentiated again:
``conv2d_backprop_input`` (a transposed convolution) and
``conv2d_backprop_filter`` are bilinear, and ``avg_pool2d_grad``,
``max_pool2d_grad`` and ``max_pool2d_gather`` are linear in their gradient input.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..dtypes import ALL_TYPES, FLOAT_TYPES
from ..errors import ShapeError
from ..shapes import Dim, TensorType, format_shape, normalize_axis
from .registry import Attr, F, Input, OpDef, frontend, register


def is_zeros(tensor) -> bool:
    """True when a gradient handed to a multi-output rule is the zeros the gradient
    pass makes for an output no gradient reached (so the rule can skip its terms)."""
    return tensor.graph.node(tensor.node).op == "zeros_like"


# -- softmax ----------------------------------------------------------------------

def log_softmax_array(x: np.ndarray, axis: int) -> np.ndarray:
    """log(softmax(x)) along ``axis``; subtracting the max first keeps exp from overflowing."""
    z = x - np.max(x, axis=axis, keepdims=True)
    z -= np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    return z


class _SoftmaxFamily(OpDef):
    inputs = (Input("x", FLOAT_TYPES),)
    attrs = (Attr("axis", "int", -1),)

    def infer(self, x, *, axis):
        normalize_axis(axis, x.rank)
        return x


@register
class Softmax(_SoftmaxFamily):
    """exp(x) / sum(exp(x), axis), computed after subtracting the max along ``axis``
    so exp never overflows.  vjp: y * (dy - sum(dy * y, axis)), from the output y.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 2))
    >>> ge.run(g, ge.softmax(x), {"x": np.array([[0.0, 0.0], [1000.0, 0.0]], np.float32)})
    array([[0.5, 0.5],
           [1. , 0. ]], dtype=float32)
    """

    name = "softmax"

    def kernel(self, x, *, axis):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        e /= np.sum(e, axis=axis, keepdims=True)
        return e

    def vjp(self, node, dy):
        y = node.outputs[0]
        return [y * (dy - F.sum(dy * y, axis=node.attrs["axis"], keepdims=True))]


@register
class LogSoftmax(_SoftmaxFamily):
    """x - log(sum(exp(x), axis)), computed after subtracting the max along ``axis``.
    vjp: dy - exp(y) * sum(dy, axis), from the output y.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 2))
    >>> ge.run(g, ge.log_softmax(x), {"x": np.array([[0.0, 0.0]], np.float32)})
    array([[-0.6931472, -0.6931472]], dtype=float32)
    """

    name = "log_softmax"

    def kernel(self, x, *, axis):
        return log_softmax_array(x, axis)

    def vjp(self, node, dy):
        y = node.outputs[0]
        return [dy - F.exp(y) * F.sum(dy, axis=node.attrs["axis"], keepdims=True)]


# -- window geometry, shared by convolution and pooling -------------------------------

def _pair(value: Any) -> Any:
    """An int means the same value for height and width; anything else is passed on
    unchanged (shape inference checks it and names the node)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    return value


def _pads(value: Any) -> Any:
    """An int or (pad_h, pad_w) means symmetric padding; four values are ONNX pads."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * 4
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (value[0], value[1], value[0], value[1])
    return value


def _same_pads(op: str, in_hw: Sequence[Dim], kernel: Sequence[Dim], stride, dilation):
    """ONNX SAME_UPPER: output size ceil(size / stride), extra padding at the end."""
    pads = []
    for size, k, s, d, what in zip(in_hw, kernel, stride, dilation, ("height", "width")):
        if not isinstance(k, int) or (s != 1 and not isinstance(size, int)):
            raise ShapeError(f"{op}: padding='same' needs a known {what} and kernel size "
                             f"(got {what} {size}, kernel {k}); give explicit pads instead")
        span = d * (k - 1) + 1
        total = span - 1 if s == 1 else max((-(-size // s) - 1) * s + span - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return (top, left, bottom, right)


def _resolve_padding(op: str, padding: Any, x: Any, kernel: Sequence[Dim], stride, dilation):
    if not isinstance(padding, str):
        return _pads(padding)
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding != "same":
        raise ShapeError(f"{op}: padding must be 'valid', 'same', an int, 2 or 4 ints; "
                         f"got {padding!r}")
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) != 4 or not (_is_pair(stride) and _is_pair(dilation)):
        return (0, 0, 0, 0)  # shape inference reports the real problem, naming the node
    return _same_pads(op, shape[2:], kernel, stride, dilation)


def _is_pair(value: Any) -> bool:
    return (isinstance(value, tuple) and len(value) == 2
            and all(isinstance(v, int) and v >= 1 for v in value))


def _check_window(stride, padding, dilation=(1, 1)) -> None:
    if len(stride) != 2 or min(stride) < 1:
        raise ValueError(f"stride must be 2 positive ints (height, width), got {stride}")
    if len(dilation) != 2 or min(dilation) < 1:
        raise ValueError(f"dilation must be 2 positive ints (height, width), got {dilation}")
    if len(padding) != 4 or min(padding) < 0:
        raise ValueError("padding must be 4 non-negative ints (top, left, bottom, right), "
                         f"got {padding}")


def _check_rank4(t: TensorType, what: str) -> None:
    if t.rank != 4:
        raise ValueError(f"{what} must have rank 4, got shape {format_shape(t.shape)}")


def _out_size(size: Dim, k: Dim, stride: int, dilation: int, pad: int, what: str) -> Dim:
    """Output length along one axis, or None when it is not known until run time."""
    if not isinstance(size, int) or not isinstance(k, int):
        return None
    span = dilation * (k - 1) + 1
    if size + pad < span:
        dilated = f" ({k} dilated by {dilation})" if dilation > 1 else ""
        raise ValueError(f"the window spans {span} along the {what}{dilated}, more than the "
                         f"padded {what} {size + pad}; use a smaller kernel or more padding")
    return (size + pad - span) // stride + 1


def _out_hw(x_shape, kernel, stride, padding, dilation=(1, 1)) -> tuple[Dim, Dim]:
    return (_out_size(x_shape[2], kernel[0], stride[0], dilation[0], padding[0] + padding[2],
                      "height"),
            _out_size(x_shape[3], kernel[1], stride[1], dilation[1], padding[1] + padding[3],
                      "width"))


def _pad(x: np.ndarray, padding, value: float = 0.0) -> np.ndarray:
    top, left, bottom, right = padding
    if not (top or left or bottom or right):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _crop(xp: np.ndarray, padding, hw) -> np.ndarray:
    top, left = padding[0], padding[1]
    return np.ascontiguousarray(xp[:, :, top:top + hw[0], left:left + hw[1]])


def _window_slices(kernel, stride, dilation, out_hw) -> Iterator[tuple[int, tuple]]:
    """For each of the kh*kw kernel positions (row-major), the index of the (padded)
    input elements it meets in every window: a strided view of shape out_hw.  Loops
    over the kernel window, never over elements."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for k, (i, j) in enumerate(itertools.product(range(kh), range(kw))):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
        yield k, (Ellipsis, rows, cols)


def _windows(xp: np.ndarray, kernel, stride, dilation, out_hw) -> np.ndarray:
    """A view (N, C, OH, OW, kh, kw) of every window of the padded input (no copy)."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    view = sliding_window_view(xp, span, axis=(2, 3))
    return view[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :oh, :ow]


# -- convolution ------------------------------------------------------------------------

_CONV_ATTRS = (Attr("stride", "ints", (1, 1)), Attr("padding", "ints", (0, 0, 0, 0)),
               Attr("dilation", "ints", (1, 1)))


def _conv_types(x: TensorType, w: TensorType, stride, padding, dilation) -> TensorType:
    _check_rank4(x, "x (N, C, H, W)")
    _check_rank4(w, "w (out_channels, in_channels, kh, kw)")
    _check_window(stride, padding, dilation)
    if x.dtype != w.dtype:
        raise ValueError(f"x is {x.dtype.name} but w is {w.dtype.name}; cast one with ge.cast")
    c, ci = x.shape[1], w.shape[1]
    if isinstance(c, int) and isinstance(ci, int) and c != ci:
        raise ValueError(f"x has {c} channels (axis 1 of {format_shape(x.shape)}) but w expects "
                         f"{ci} (w is (out_channels, in_channels, kh, kw) = "
                         f"{format_shape(w.shape)}); the weight's axis 1 must match x's axis 1")
    oh, ow = _out_hw(x.shape, w.shape[2:], stride, padding, dilation)
    return TensorType(x.dtype, (x.shape[0], w.shape[0], oh, ow))


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
        out_hw = _out_hw(x.shape, w.shape[2:], stride, padding, dilation)
        windows = _windows(_pad(x, padding), w.shape[2:], stride, dilation, out_hw)
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
        _check_grad_shape(dy, expected)
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy, w, like, *, stride, padding, dilation):
        n, c, h, wd = like.shape
        kernel = w.shape[2:]
        # All kh*kw contributions in one product, then added into place window by window.
        cols = np.tensordot(dy, w, axes=([1], [0])).transpose(0, 3, 4, 5, 1, 2)
        dxp = np.zeros((n, c, h + padding[0] + padding[2], wd + padding[1] + padding[3]),
                       dy.dtype)
        for k, index in _window_slices(kernel, stride, dilation, dy.shape[2:]):
            dxp[index] += cols[:, :, k // kernel[1], k % kernel[1]]
        return _crop(dxp, padding, (h, wd))

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
        _check_grad_shape(dy, expected)
        return TensorType(x.dtype, like.shape)

    def kernel(self, x, dy, like, *, stride, padding, dilation):
        windows = _windows(_pad(x, padding), like.shape[2:], stride, dilation, dy.shape[2:])
        return np.tensordot(dy, windows, axes=([0, 2, 3], [0, 2, 3]))  # (O, C, kh, kw)

    def vjp(self, node, g):
        x, dy, _ = node.inputs
        attrs = node.attrs
        return [F.conv2d_backprop_input(dy, g, x, **attrs) if node.wants(0) else None,
                F.conv2d(x, g, **attrs) if node.wants(1) else None,
                None]


def _check_grad_shape(dy: TensorType, expected: TensorType) -> None:
    if dy.rank != 4 or any(isinstance(a, int) and isinstance(b, int) and a != b
                           for a, b in zip(dy.shape, expected.shape)):
        raise ValueError(f"the output gradient has shape {format_shape(dy.shape)}, but the "
                         f"forward output has shape {format_shape(expected.shape)}")
    if dy.dtype != expected.dtype:
        raise ValueError(f"the output gradient is {dy.dtype.name}, expected "
                         f"{expected.dtype.name}")


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
    stride, dilation = _pair(stride), _pair(dilation)
    kernel = tuple(w.shape if hasattr(w, "shape") else np.shape(w))[2:]
    padding = _resolve_padding("conv2d", padding, x, kernel, stride, dilation)
    return _call("conv2d", [x, w], {"stride": stride, "padding": padding,
                                    "dilation": dilation}, name)


def _call(op: str, inputs: list, attrs: dict, name: str | None):
    from .api import call  # api is built after the op families are imported

    return call(op, inputs, attrs, name)


# -- pooling ----------------------------------------------------------------------------

_POOL_ATTRS = (Attr("kernel_size", "ints"), Attr("stride", "ints"),
               Attr("padding", "ints", (0, 0, 0, 0)))


def _pool_types(x: TensorType, kernel_size, stride, padding) -> TensorType:
    _check_rank4(x, "x (N, C, H, W)")
    if len(kernel_size) != 2 or min(kernel_size) < 1:
        raise ValueError(f"kernel_size must be 2 positive ints (height, width), got "
                         f"{kernel_size}")
    _check_window(stride, padding)
    kh, kw = kernel_size
    if max(padding[0], padding[2]) >= kh or max(padding[1], padding[3]) >= kw:
        raise ValueError(f"padding {padding} must be smaller than the kernel {kernel_size} on "
                         "each side, so that every window holds at least one input element")
    return x.with_shape(x.shape[:2] + _out_hw(x.shape, kernel_size, stride, padding))


def _pool_attrs(op: str, x, kernel_size, stride, padding) -> dict:
    kernel_size = _pair(kernel_size)
    stride = kernel_size if stride is None else _pair(stride)
    return {"kernel_size": kernel_size, "stride": stride,
            "padding": _resolve_padding(op, padding, x, kernel_size, stride, (1, 1))}


def _argmax_windows(xp: np.ndarray, kernel_size, stride, out_hw) -> np.ndarray:
    """Position (row-major within the kernel) of each window's maximum; the first on ties."""
    best = arg = None
    for k, index in _window_slices(kernel_size, stride, (1, 1), out_hw):
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
        xp = _pad(x, padding, -np.inf)
        out_hw = _out_hw(x.shape, kernel_size, stride, padding)
        out = None
        for _, index in _window_slices(kernel_size, stride, (1, 1), out_hw):
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
        _check_grad_shape(dy, _pool_types(x, kernel_size, stride, padding))
        return x

    def kernel(self, x, dy, *, kernel_size, stride, padding):
        xp = _pad(x, padding, -np.inf)
        arg = _argmax_windows(xp, kernel_size, stride, dy.shape[2:])
        dxp = np.zeros(xp.shape, dy.dtype)
        for k, index in _window_slices(kernel_size, stride, (1, 1), dy.shape[2:]):
            dxp[index] += np.where(arg == k, dy, 0)
        return _crop(dxp, padding, x.shape[2:])

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
        xp = _pad(x, padding, -np.inf)
        out_hw = _out_hw(x.shape, kernel_size, stride, padding)
        arg = _argmax_windows(xp, kernel_size, stride, out_hw)
        gp = _pad(g, padding)
        out = np.empty(arg.shape, g.dtype)
        for k, index in _window_slices(kernel_size, stride, (1, 1), out_hw):
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
    ones = _pad(np.ones((1, 1) + tuple(in_hw), dtype), padding)
    out_hw = _out_hw((1, 1) + tuple(in_hw), kernel_size, stride, padding)
    counts = np.zeros(out_hw, dtype)
    for _, index in _window_slices(kernel_size, stride, (1, 1), out_hw):
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
        xp = _pad(x, padding)
        out_hw = _out_hw(x.shape, kernel_size, stride, padding)
        out = None
        for _, index in _window_slices(kernel_size, stride, (1, 1), out_hw):
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
        _check_grad_shape(dy, _pool_types(like.with_dtype(dy.dtype), kernel_size, stride,
                                          padding))
        return like.with_dtype(dy.dtype)

    def kernel(self, dy, like, *, kernel_size, stride, padding, count_include_pad):
        n, c, h, w = like.shape
        share = dy / _avg_divisor((h, w), kernel_size, stride, padding, count_include_pad,
                                  dy.dtype)
        dxp = np.zeros((n, c, h + padding[0] + padding[2], w + padding[1] + padding[3]),
                       dy.dtype)
        for _, index in _window_slices(kernel_size, stride, (1, 1), dy.shape[2:]):
            dxp[index] += share
        return _crop(dxp, padding, (h, w))

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
    return _call("max_pool2d", [x], _pool_attrs("max_pool2d", x, kernel_size, stride, padding),
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
    return _call("avg_pool2d", [x], attrs, name)


# -- dropout and batch normalization ------------------------------------------------------

@register
class Dropout(OpDef):
    """Inverted dropout.  In a training run each element is kept with probability
    1 - rate and scaled by 1 / (1 - rate); outputs y = x * mask and the mask
    itself (0 or 1 / (1 - rate), x's dtype).  In an inference run y = x and the
    mask is ones.  The mask is drawn from the run's RNG for this node's ``seed``
    (uniform draws in float64, an element kept when its draw >= rate), so a run
    with the same run seed gives the same mask.  vjp: dy * mask."""

    name = "dropout"
    inputs = (Input("x", FLOAT_TYPES),)
    outputs = ("y", "mask")
    attrs = (Attr("rate", "float", 0.5), Attr("seed", "int", 0))
    uses_context = True

    def infer(self, x, *, rate, seed):
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        return x, x

    def kernel(self, x, *, rate, seed, ctx):
        if not ctx.training or rate == 0.0:
            return x, np.ones_like(x)
        keep = ctx.rng(seed).random(x.shape) >= rate
        mask = np.where(keep, x.dtype.type(1.0 / (1.0 - rate)), x.dtype.type(0))
        return x * mask, mask

    def vjp(self, node, dys):
        return [dys[0] * node.outputs[1]]


@frontend("dropout")
def dropout(x, rate: float = 0.5, seed: int | None = None, *, name: str | None = None):
    """Inverted dropout of ``x``; returns ``(y, mask)`` (see the op's docstring).

    Without ``seed``, the node takes the number of dropout nodes already in the
    graph, so two dropout layers draw different masks and building the graph
    again gives the same seeds.  Only training runs (``ge.run(..., training=True)``)
    drop anything.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (2, 3))
    >>> y, mask = ge.dropout(x, 0.5)
    >>> ge.run(g, y, {"x": np.ones((2, 3), np.float32)}).tolist()   # inference: identity
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    if seed is None:
        from .api import graph_of

        seed = sum(node.op == "dropout" for node in graph_of(x, "dropout").nodes)
    return _call("dropout", [x], {"rate": rate, "seed": seed}, name)


@register
class TrainingFlag(OpDef):
    """1 in a training run and 0 in an inference run, as a scalar of ``like``'s
    dtype.  Lets a gradient rule built once serve both modes (batch_norm's)."""

    name = "training_flag"
    internal = True
    inputs = (Input("like", ALL_TYPES, differentiable=False),)
    uses_context = True
    vjp = None

    def infer(self, like):
        return TensorType(like.dtype, ())

    def kernel(self, like, *, ctx):
        return np.asarray(1 if ctx.training else 0, like.dtype)


def _stat_axes(rank: int) -> tuple[int, ...]:
    return (0,) + tuple(range(2, rank))


@register
class BatchNorm(OpDef):
    """Batch normalization over axis 1 (channels) of NC, NCL, NCHW ... inputs:

        y = gamma * (x - mean) / sqrt(var + epsilon) + beta

    A training run normalizes with the batch statistics (mean and biased variance
    over every axis but 1); an inference run with running_mean and running_var.
    The outputs are y and the statistics used: the batch mean and variance in a
    training run (for the trainer to update the running ones, ONNX style:
    running = momentum * running + (1 - momentum) * batch), the running ones in an
    inference run.  ``momentum`` is stored for that update; the kernel does not
    use it.

    vjp: dgamma = sum(dy * xhat), dbeta = sum(dy) and, in an inference run,
    dx = gamma / sqrt(var + epsilon) * dy.  In a training run the statistics depend
    on x, which adds -(dbeta + xhat * dgamma) / M to dy (M elements per channel)
    before scaling, plus the terms of gradients reaching the mean and variance
    outputs.  The rule is built once for both modes: those terms are multiplied by
    ``training_flag``, 1 in a training run and 0 otherwise.  running_mean and
    running_var are not differentiable.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 2))
    >>> ones, zeros = np.ones(2, np.float32), np.zeros(2, np.float32)
    >>> y, mean, var = ge.batch_norm(x, ones, zeros, zeros, ones)
    >>> batch = {"x": np.array([[1.0, 2.0], [3.0, 2.0]], np.float32)}
    >>> ge.run(g, [y, mean], batch, training=True)[mean.name]
    array([2., 2.], dtype=float32)
    """

    name = "batch_norm"
    inputs = (Input("x", FLOAT_TYPES), Input("gamma", FLOAT_TYPES), Input("beta", FLOAT_TYPES),
              Input("running_mean", FLOAT_TYPES, differentiable=False),
              Input("running_var", FLOAT_TYPES, differentiable=False))
    outputs = ("y", "mean", "var")
    attrs = (Attr("epsilon", "float", 1e-5), Attr("momentum", "float", 0.9))
    uses_context = True

    def infer(self, x, gamma, beta, running_mean, running_var, *, epsilon, momentum):
        if x.rank < 2:
            raise ValueError(f"x must have a channel axis 1 (rank >= 2), got shape "
                             f"{format_shape(x.shape)}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        channels = x.shape[1]
        for name, t in [("gamma", gamma), ("beta", beta), ("running_mean", running_mean),
                        ("running_var", running_var)]:
            if t.dtype != x.dtype:
                raise ValueError(f"{name} is {t.dtype.name} but x is {x.dtype.name}")
            if t.rank != 1 or (isinstance(t.shape[0], int) and isinstance(channels, int)
                               and t.shape[0] != channels):
                raise ValueError(f"{name} must have shape ({channels},), one value per channel "
                                 f"(axis 1 of x {format_shape(x.shape)}), got "
                                 f"{format_shape(t.shape)}")
        stats = TensorType(x.dtype, (channels,))
        return x, stats, stats

    def kernel(self, x, gamma, beta, running_mean, running_var, *, epsilon, momentum, ctx):
        axes = _stat_axes(x.ndim)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if ctx.training:
            mean = np.mean(x, axis=axes, dtype=x.dtype)
            centred = x - mean.reshape(shape)
            var = np.mean(np.square(centred), axis=axes, dtype=x.dtype)
        else:
            # Copies, so a trainer updating the running statistics in place cannot
            # change an output already fetched.
            mean, var = running_mean.copy(), running_var.copy()
            centred = x - mean.reshape(shape)
        scale = gamma / np.sqrt(var + x.dtype.type(epsilon))
        centred *= scale.reshape(shape)
        centred += beta.reshape(shape)
        return centred, mean, var

    def vjp(self, node, dys):
        dy, dmean, dvar = dys
        x, gamma = node.inputs[0], node.inputs[1]
        _, mean, var = node.outputs
        axes = _stat_axes(x.ndim)

        def per_element(v, mean=False):
            """A per-channel value broadcast over x (divided by M with mean=True)."""
            return F.broadcast_like(v, x, axes=axes, mean=mean)

        rstd = 1.0 / F.sqrt(var + node.attrs["epsilon"])
        centred = x - per_element(mean)
        xhat = centred * per_element(rstd)
        dbeta = F.sum(dy, axis=axes)
        dgamma = F.sum(dy * xhat, axis=axes)
        dx = None
        if node.wants(0):
            training = F.training_flag(x)
            through_stats = per_element(dbeta, mean=True) + xhat * per_element(dgamma, mean=True)
            dx = per_element(gamma * rstd) * (dy - through_stats * training)
            if not is_zeros(dmean):
                dx = dx + per_element(dmean, mean=True) * training
            if not is_zeros(dvar):
                dx = dx + centred * per_element(dvar, mean=True) * (training * 2.0)
        return [dx, dgamma if node.wants(1) else None, dbeta if node.wants(2) else None,
                None, None]


__all__ = ["AvgPool2d", "BatchNorm", "Conv2d", "Dropout", "LogSoftmax", "MaxPool2d", "Softmax",
           "avg_pool2d", "conv2d", "dropout", "is_zeros", "log_softmax_array", "max_pool2d"]
