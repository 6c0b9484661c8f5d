"""2-D convolution: ``conv2d`` (grouped and depthwise included), ``conv_transpose2d``
and the internal ops of their gradients.

Images are NCHW (batch, channels, height, width) and convolution weights are
(out_channels, in_channels / groups, kh, kw), as in PyTorch and ONNX.  The window
attributes (stride, padding, dilation) and their canonical form are described
in :mod:`.window`.

Every kernel is one batched matrix product over im2col matrices laid out as
(N, groups, in_channels/groups * kh * kw, OH * OW): the window view is copied
once, in the order that makes each group's weights a plain (out, k) matrix,
and matmul broadcasts them over the images.  Each image's product then comes
out in NCHW order, and the filter gradient reads dy as it is, so no activation
or gradient is transposed; on this machine that beats one long GEMM over
(groups, k, N * OH * OW) followed by a transpose back to NCHW, also for small
images and depthwise convolutions (see ``tools/bench_speed.py``).  Kernels
write into the executor's planned buffers (``out_kernel``).

The backward pass needs kernels of its own, so it is internal ops with their
own gradient rules, and a gradient graph can be differentiated again:
``conv2d_backprop_input`` (a transposed convolution, sharing its kernel with
``conv_transpose2d``) and ``conv2d_backprop_filter`` are bilinear.
``conv2d`` also outputs the im2col columns it multiplied, and its vjp hands
them to ``conv2d_backprop_filter_cols`` (the same value, read from the
columns instead of copying every window of x again) when one image's columns
are small enough to keep until the backward pass (``REUSE_COLUMNS_BYTES``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import ALL_TYPES, FLOAT_TYPES
from ..errors import GradientError, ShapeError
from ..shapes import Dim, TensorType
from .conv_nd import ConvBackpropFilter, ConvBackpropInput, ConvTranspose
from .conv_shapes import check_conv_channels, check_transpose, transpose_sizes
from .registry import Array, Attr, F, Input, InputInfo, OpDef, OutKernel, frontend, register
from .window import (
    Ints,
    as_pair,
    check_grad_shape,
    check_rank,
    check_window,
    output_sizes,
    pad_spatial,
    resolve_padding,
    window_slices,
    windows,
)

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor, TensorLike

#: The filter gradient reads conv2d's im2col columns (its second output) when one
#: image's columns take at most this many bytes, so training keeps them from the
#: forward pass to the backward pass; larger columns are copied again from x
#: instead, so that a training step's memory does not grow by kh*kw times the
#: convolutions' inputs.
REUSE_COLUMNS_BYTES = 1 << 20

_CONV_ATTRS = (
    Attr("stride", "ints", (1, 1)),
    Attr("padding", "ints", (0, 0, 0, 0)),
    Attr("dilation", "ints", (1, 1)),
    Attr("groups", "int", 1),
)


def _conv_types(
    x: TensorType, w: TensorType, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> TensorType:
    check_rank(x, 4, "x (N, C, H, W)")
    check_rank(w, 4, "w (out_channels, in_channels / groups, kh, kw)")
    check_window(stride, padding, dilation, 2)
    if x.dtype != w.dtype:
        raise ValueError(f"x is {x.dtype.name} but w is {w.dtype.name}; cast one with ge.cast")
    check_conv_channels(x, w, groups, "(out_channels, in_channels / groups, kh, kw)")
    oh, ow = output_sizes(x.shape, w.shape[2:], stride, padding, dilation)
    return TensorType(x.dtype, (x.shape[0], w.shape[0], oh, ow))


# -- the three kernels ---------------------------------------------------------------------


def _im2col(
    x: Array,
    kernel: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    sizes: Ints,
    groups: int,
    out: Array | None = None,
) -> Array:
    """(N, groups, C/groups * kh * kw, OH * OW): every window of padded x as a
    column of its image's matrix (into ``out`` when given)."""
    n, c = x.shape[:2]
    view = windows(pad_spatial(x, padding), kernel, stride, dilation, sizes)  # (N,C,OH,OW,kh,kw)
    view = view.transpose(0, 1, 4, 5, 2, 3)
    shape = (n, groups, c // groups * kernel[0] * kernel[1], sizes[0] * sizes[1])
    if out is None:
        return view.reshape(shape)  # one copy, in the columns' order
    np.copyto(out.reshape(view.shape), view)
    return out


def _columns_type(x: TensorType, w: TensorType, y: TensorType, groups: int) -> TensorType:
    """The type of conv2d's second output, the im2col columns of x."""
    c, kh, kw = w.shape[1:]
    k = c * kh * kw if isinstance(c, int) and isinstance(kh, int) and isinstance(kw, int) else None
    oh, ow = y.shape[2:]
    positions = oh * ow if isinstance(oh, int) and isinstance(ow, int) else None
    return TensorType(x.dtype, (x.shape[0], groups, k, positions))


def _by_group(a: Array, groups: int) -> Array:
    """a (N, O, *spatial) as (N, groups, O/groups, prod(spatial)), a view when a
    is contiguous."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, -1)


def _grouped_weights(w: Array, groups: int) -> Array:
    """w (O, C/groups, kh, kw) as (groups, O/groups, C/groups * kh * kw)."""
    return w.reshape(groups, w.shape[0] // groups, -1)


def _convolve(
    x: Array,
    w: Array,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    groups: int,
    out: Array | None = None,
    cols_out: Array | None = None,
) -> tuple[Array, Array]:
    """conv2d's kernel: y (N, O, OH, OW) and the columns it multiplied, into
    ``out`` and ``cols_out`` when given."""
    sizes: Any = output_sizes(x.shape, w.shape[2:], stride, padding, dilation)
    cols = _im2col(x, w.shape[2:], stride, padding, dilation, sizes, groups, cols_out)
    if out is None:
        out = np.empty((x.shape[0], w.shape[0], *sizes), np.result_type(x, w))
    # One product per image and group, (O/G, k) by (k, OH*OW), broadcast by
    # matmul: each image's output lands in NCHW order, with no transpose after.
    np.matmul(_grouped_weights(w, groups), cols, out=_by_group(out, groups))
    return out, cols


def _transpose_convolve(
    dy: Array,
    w: Array,
    shape: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    groups: int,
    out: Array | None = None,
) -> Array:
    """The adjoint of _convolve in x: dy (N, O, OH, OW) spread back onto an input of
    ``shape`` (N, C, H, W) through the weights (O, C/groups, kh, kw), into ``out``
    when given."""
    n, c = shape[:2]
    sizes, kernel, outs = shape[2:], w.shape[2:], dy.shape[2:]
    rank = len(sizes)
    full = tuple(sizes[i] + padding[i] + padding[rank + i] for i in range(rank))
    # The frame's extra positions (padding and kernel overhang) cost products
    # that multiply zeros; up to 3x the output's positions (a 3x3 kernel with
    # padding 1 on 4x4 images: 36 against 16) the contiguous adds still win.
    if all(s == 1 for s in stride) and math.prod(full) <= 3 * math.prod(outs):
        dxp = _frame_col2im(dy, w, c, kernel, dilation, full, groups)
    else:
        wg = _grouped_weights(w, groups).transpose(0, 2, 1)  # (G, C/G*k, O/G)
        cols = np.matmul(wg, _by_group(dy, groups))  # (N, G, C/G*kh*kw, OH*OW)
        cols = cols.reshape((n, c) + tuple(kernel) + tuple(outs))
        dxp = np.zeros((n, c) + full, dy.dtype)
        for offsets, index in window_slices(kernel, stride, dilation, outs):
            dxp[index] += cols[(slice(None),) * 2 + offsets]
    index = (slice(None),) * 2 + tuple(slice(b, b + s) for b, s in zip(padding, sizes))
    if out is None:
        return np.ascontiguousarray(dxp[index])
    np.copyto(out, dxp[index])
    return out


#: The stride-1 col2im computes its columns for as many images at a time as fit
#: in this many bytes, so that its shifted adds read columns still in cache (and
#: a large batch's columns never exist at once).
COL2IM_CHUNK_BYTES = 1 << 20


def _frame_col2im(
    dy: Array, w: Array, c: int, kernel: Ints, dilation: Ints, full: Ints, groups: int
) -> Array:
    """Stride-1 col2im on a frame: dy is laid into zeros shaped like the padded
    input, (N, O, *full), so the column of output position f meets input
    position f + offset for each kernel position, with one offset for all
    positions.  The columns come out kernel position first within each image
    and group, (N, G, kh*kw, C/G * P) for planes of P elements, so each kernel
    position adds one long contiguous slice per image and group instead of a
    strided view with short rows.  The frame positions outside the output hold
    zeros, so what they add is zero, and a position inside the output plus an
    offset stays inside its plane.  Images go in chunks of COL2IM_CHUNK_BYTES of
    columns.  Returns the padded input gradient, (N, C, *full)."""
    n, o = dy.shape[:2]
    rank = len(full)
    size = math.prod(full)
    taps = math.prod(kernel)
    # (G, kh*kw * C/G, O/G): row (k, c) holds the weights of kernel position k, channel c.
    wk: Array = w.reshape(groups, o // groups, c // groups, taps).transpose(0, 3, 2, 1)
    wk = wk.reshape(groups, -1, o // groups)
    plane = [math.prod(full[i + 1 :]) for i in range(rank)]
    shifts = [
        sum(i * d * p for i, d, p in zip(offsets, dilation, plane))
        for offsets in itertools.product(*(range(k) for k in kernel))
    ]
    step = max(1, COL2IM_CHUNK_BYTES // (taps * c * size * dy.itemsize))
    frame = np.zeros((min(step, n), o) + tuple(full), dy.dtype)
    inside = (slice(None),) * 2 + tuple(slice(0, s) for s in dy.shape[2:])
    dxp = np.empty((n, c) + tuple(full), dy.dtype)
    for start in range(0, n, step):
        count = min(step, n - start)
        chunk = frame[:count]
        chunk[inside] = dy[start : start + count]  # the zeros around it stay zeros
        cols = np.matmul(wk, _by_group(chunk, groups))  # (count, G, kh*kw * C/G, P)
        cols = cols.reshape(count * groups, taps, -1)
        dx = dxp[start : start + count].reshape(count * groups, -1)
        width = dx.shape[1]
        dx[...] = cols[:, 0]  # the first position has no offset: a copy
        for k in range(1, taps):
            dx[:, shifts[k] :] += cols[:, k, : width - shifts[k]]
    return dxp


def _filter_gradient(
    x: Array,
    dy: Array,
    kernel: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    groups: int,
    out: Array | None = None,
    cols: Array | None = None,
) -> Array:
    """conv2d_backprop_filter's kernel, into ``out`` (O, C/groups, kh, kw) when given;
    ``cols`` are x's columns when the forward pass kept them."""
    if cols is None:
        cols = _im2col(x, kernel, stride, padding, dilation, dy.shape[2:], groups)
    # Per image and group, (O/G, OH*OW) by (OH*OW, k), then summed over the images:
    # no transpose of dy or of the columns is copied.
    per_image = np.matmul(_by_group(dy, groups), cols.transpose(0, 1, 3, 2))
    o = dy.shape[1]
    if out is None:
        out = np.empty((o, x.shape[1] // groups, *kernel), per_image.dtype)
    np.add.reduce(per_image, axis=0, out=out.reshape(groups, o // groups, -1))
    return out


def _keeps_columns(cols: TensorType) -> bool:
    """Whether the filter gradient reads the forward pass's columns of this type
    (one image's columns known and within REUSE_COLUMNS_BYTES)."""
    per_image = cols.shape[1:]
    if not all(isinstance(d, int) for d in per_image):
        return False
    return math.prod(per_image) * cols.dtype.itemsize <= REUSE_COLUMNS_BYTES  # type: ignore[arg-type]


# -- the ops -------------------------------------------------------------------------------


@register
class Conv2d(OpDef):
    """2-D cross-correlation (what deep-learning frameworks call convolution) of
    x (N, C, H, W) with w (O, C/groups, kh, kw), giving (N, O, OH, OW):

        y[n, o, p, q] = sum_{c,i,j} x_pad[n, g*C/G + c, p*sh + i*dh, q*sw + j*dw] * w[o, c, i, j]

    with zero padding, where g = o // (O/groups) is the group of output channel o:
    each group of C/groups input channels feeds its own O/groups outputs
    (groups = C = O is a depthwise convolution).  There is no bias input: add one
    of shape (O, 1, 1), which broadcasts against NCHW.

    The second output, ``cols`` (N, groups, C/groups*kh*kw, OH*OW), holds the
    im2col columns of x that the kernel multiplied: the filter gradient reads
    them instead of copying every window of x again.  ``ge.conv2d`` returns y
    only, and an inference run drops cols as soon as the step ends.
    vjp: dx = conv2d_backprop_input(dy, w), dw = conv2d_backprop_filter_cols(x,
    dy, cols) (conv2d_backprop_filter(x, dy) when one image's columns exceed
    REUSE_COLUMNS_BYTES, so that training does not keep them)."""

    name = "conv2d"
    inputs = (Input("x", FLOAT_TYPES), Input("w", FLOAT_TYPES))
    outputs = ("y", "cols")
    attrs = _CONV_ATTRS

    def infer(
        self,
        x: TensorType,
        w: TensorType,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> tuple[TensorType, TensorType]:
        y = _conv_types(x, w, stride, padding, dilation, groups)
        return y, _columns_type(x, w, y, groups)

    def kernel(
        self, x: Array, w: Array, *, stride: Ints, padding: Ints, dilation: Ints, groups: int
    ) -> tuple[Array, Array]:
        return _convolve(x, w, stride, padding, dilation, groups)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        def conv2d_into(x: Array, w: Array, out: tuple[Array | None, ...]) -> tuple[Array, Array]:
            return _convolve(x, w, **attrs, out=out[0], cols_out=out[1])

        return conv2d_into

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        dy, dcols = dys
        if dcols is not None:
            raise GradientError(
                f"conv2d node {node.name!r}: its output 1 (cols, the im2col columns of "
                "x) has no gradient rule; differentiate through its output 0, y"
            )
        if dy is None:
            return [None, None]
        x, w = node.inputs
        attrs = node.attrs
        if not node.wants(1):
            dw = None
        elif _keeps_columns(node.outputs[1].type):
            dw = F.conv2d_backprop_filter_cols(x, dy, w, node.outputs[1], **attrs)
        else:
            dw = F.conv2d_backprop_filter(x, dy, w, **attrs)
        return [F.conv2d_backprop_input(dy, w, x, **attrs) if node.wants(0) else None, dw]


@register
class Conv2dBackpropInput(ConvBackpropInput):
    """The gradient of conv2d with respect to x: the transposed convolution of dy
    (N, O, OH, OW) with w (O, C/groups, kh, kw), cropped to the shape of ``like``
    (the forward x, which fixes H and W where the stride rounded down).  Bilinear:
    d/d dy = conv2d(g, w), d/dw = conv2d_backprop_filter(g, dy)."""

    name = "conv2d_backprop_input"
    attrs = _CONV_ATTRS
    # conv_backprop_input's schema and rules, with the 2-D shape rule and kernel.
    forward_types = staticmethod(_conv_types)
    transpose_convolve = staticmethod(_transpose_convolve)
    conv_op, filter_op = "conv2d", "conv2d_backprop_filter"

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        def backprop_input_into(dy: Array, w: Array, like: Array, out: Array) -> Array:
            return _transpose_convolve(dy, w, like.shape, **attrs, out=out)

        return backprop_input_into


@register
class Conv2dBackpropFilter(ConvBackpropFilter):
    """The gradient of conv2d with respect to w: correlates x (N, C, H, W) with
    dy (N, O, OH, OW), giving the shape of ``like`` (the forward w).  Bilinear:
    d/dx = conv2d_backprop_input(dy, g), d/d dy = conv2d(x, g)."""

    name = "conv2d_backprop_filter"
    attrs = _CONV_ATTRS
    # conv_backprop_filter's schema and rules, with the 2-D shape rule and kernel.
    forward_types = staticmethod(_conv_types)
    filter_gradient = staticmethod(_filter_gradient)
    conv_op, input_op = "conv2d", "conv2d_backprop_input"

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        def backprop_filter_into(x: Array, dy: Array, like: Array, out: Array) -> Array:
            return _filter_gradient(x, dy, like.shape[2:], **attrs, out=out)

        return backprop_filter_into


@register
class Conv2dBackpropFilterCols(OpDef):
    """conv2d_backprop_filter(x, dy, like) read from ``cols``, the im2col columns
    of x that the forward conv2d kept (its second output, with the same
    attributes), instead of copying every window of x again.  The value is the
    same function of x and dy, so the gradient rules are conv2d_backprop_filter's
    and reach x through the input x; cols is its cache and takes no gradient.
    Bilinear: d/dx = conv2d_backprop_input(dy, g), d/d dy = conv2d(x, g)."""

    name = "conv2d_backprop_filter_cols"
    internal = True
    inputs = (
        Input("x", FLOAT_TYPES),
        Input("dy", FLOAT_TYPES),
        Input("like", ALL_TYPES, differentiable=False),
        Input("cols", FLOAT_TYPES, differentiable=False),
    )
    attrs = _CONV_ATTRS

    def infer(
        self,
        x: TensorType,
        dy: TensorType,
        like: TensorType,
        cols: TensorType,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> TensorType:
        w = like.with_dtype(x.dtype)
        y = _conv_types(x, w, stride, padding, dilation, groups)
        check_grad_shape(dy, y)
        expected = _columns_type(x, w, y, groups)
        if (
            cols.dtype != x.dtype
            or cols.rank != 4
            or any(
                isinstance(a, int) and isinstance(b, int) and a != b
                for a, b in zip(cols.shape, expected.shape)
            )
        ):
            raise ValueError(
                f"cols is {cols}, but the columns of x for these attributes are "
                f"{expected}; pass output 1 of the conv2d node that read x"
            )
        return TensorType(x.dtype, like.shape)

    def kernel(
        self,
        x: Array,
        dy: Array,
        like: Array,
        cols: Array,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> Array:
        return _filter_gradient(x, dy, like.shape[2:], stride, padding, dilation, groups, cols=cols)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        def backprop_filter_cols_into(
            x: Array, dy: Array, like: Array, cols: Array, out: Array
        ) -> Array:
            return _filter_gradient(x, dy, like.shape[2:], **attrs, out=out, cols=cols)

        return backprop_filter_cols_into

    def vjp(self, node: NodeView, g: Tensor) -> list[Tensor | None]:
        x, dy, _, _ = node.inputs
        attrs = node.attrs
        return [
            F.conv2d_backprop_input(dy, g, x, **attrs) if node.wants(0) else None,
            F.conv2d(x, g, **attrs) if node.wants(1) else None,
            None,
            None,
        ]


@register
class ConvTranspose2d(ConvTranspose):
    """2-D transposed convolution (the adjoint of conv2d in its input, also called
    deconvolution) of x (N, C, H, W) with w (C, O/groups, kh, kw), giving
    (N, O, OH, OW) with OH = (H - 1)*sh + dh*(kh - 1) + 1 - top - bottom +
    output_padding[0] (likewise OW), as PyTorch's conv_transpose2d and ONNX's
    ConvTranspose.  ``output_padding`` (each smaller than the stride) adds rows
    and columns at the bottom and right.  conv2d(y, w) with the same attributes
    maps the output back to x's shape, so
    vjp: dx = conv2d(dy, w), dw = conv2d_backprop_filter(dy, x)."""

    name = "conv_transpose2d"
    attrs = _CONV_ATTRS + (Attr("output_padding", "ints", (0, 0)),)
    # conv_transpose's inputs, kernel and gradient rule, with the 2-D shape rule,
    # kernel function and gradient ops.
    transpose_convolve = staticmethod(_transpose_convolve)
    conv_op, filter_op = "conv2d", "conv2d_backprop_filter"

    def infer(
        self,
        x: TensorType,
        w: TensorType,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
        output_padding: Ints,
    ) -> TensorType:
        check_rank(x, 4, "x (N, C, H, W)")
        check_rank(w, 4, "w (in_channels, out_channels / groups, kh, kw)")
        check_window(stride, padding, dilation, 2)
        if x.dtype != w.dtype:
            raise ValueError(f"x is {x.dtype.name} but w is {w.dtype.name}; cast one with ge.cast")
        layout = "(in_channels, out_channels / groups, kh, kw)"
        o = check_transpose(x, w, stride, output_padding, groups, 2, layout)
        sizes = transpose_sizes(x.shape, w.shape, stride, dilation, padding, output_padding)
        return TensorType(x.dtype, (x.shape[0], o) + sizes)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        window = {k: v for k, v in attrs.items() if k != "output_padding"}

        def conv_transpose2d_into(x: Array, w: Array, out: Array) -> Array:
            return _transpose_convolve(x, w, out.shape, **window, out=out)

        return conv_transpose2d_into


def _weight_kernel(w: Any) -> tuple[Dim, ...]:
    return tuple(w.shape if hasattr(w, "shape") else np.shape(w))[2:]


@frontend("conv2d")
def conv2d(
    x: TensorLike,
    w: TensorLike,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    name: str | None = None,
) -> Tensor:
    """2-D convolution of NCHW ``x`` with ``w`` (out_channels, in_channels / groups,
    kh, kw).

    ``stride`` and ``dilation``: an int or (height, width).  ``padding``: an int,
    (pad_h, pad_w), ONNX pads (top, left, bottom, right), ``"valid"`` (none) or
    ``"same"`` (output size ceil(size / stride); the odd extra row or column goes
    at the bottom or right, as ONNX SAME_UPPER).  ``groups`` splits the channels
    into groups convolved separately (groups = in_channels = out_channels is a
    depthwise convolution).  Add a bias of shape (out_channels, 1, 1) with ``+``.
    Raises ShapeError when the channels do not match or the window does not fit.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 4, 5, 7))
    >>> w = g.parameter("w", np.ones((6, 4, 3, 3), np.float32))
    >>> ge.conv2d(x, w, padding="same").shape
    ('N', 6, 5, 7)
    >>> ge.conv2d(x, w, stride=2).shape
    ('N', 6, 2, 3)
    >>> depthwise = g.parameter("dw", np.ones((4, 1, 3, 3), np.float32))
    >>> ge.conv2d(x, depthwise, padding=1, groups=4).shape
    ('N', 4, 5, 7)
    """
    stride, dilation = as_pair(stride), as_pair(dilation)
    padding = resolve_padding("conv2d", padding, x, _weight_kernel(w), stride, dilation)
    y, _ = F.call(
        "conv2d",
        [x, w],
        {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups},
        name,
    )
    return y


@frontend("conv_transpose2d")
def conv_transpose2d(
    x: TensorLike,
    w: TensorLike,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    output_padding: int | Sequence[int] = 0,
    *,
    name: str | None = None,
) -> Tensor:
    """2-D transposed convolution of NCHW ``x`` with ``w`` (in_channels,
    out_channels / groups, kh, kw), as PyTorch's ``conv_transpose2d``.

    ``stride``, ``dilation`` and ``output_padding``: an int or (height, width).
    ``padding``: an int, (pad_h, pad_w) or ONNX pads (top, left, bottom, right),
    removed from the output's borders.  A stride-2 transposed convolution doubles
    the height and width (kernel 2, or kernel 3 with padding 1 and
    output_padding 1):

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 8, 5, 7))
    >>> w = g.parameter("w", np.ones((8, 3, 3, 3), np.float32))
    >>> ge.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1).shape
    ('N', 3, 10, 14)
    """
    if isinstance(padding, str):
        raise ShapeError(
            f"conv_transpose2d: padding must be an int, 2 or 4 ints, not "
            f"{padding!r} (compute 'same' pads from the output size you want)"
        )
    stride, dilation = as_pair(stride), as_pair(dilation)
    padding = resolve_padding("conv_transpose2d", padding, x, _weight_kernel(w), stride, dilation)
    return F.call(
        "conv_transpose2d",
        [x, w],
        {
            "stride": stride,
            "padding": padding,
            "dilation": dilation,
            "groups": groups,
            "output_padding": as_pair(output_padding),
        },
        name,
    )


__all__ = ["Conv2d", "ConvTranspose2d", "conv2d", "conv_transpose2d"]
