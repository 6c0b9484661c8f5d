"""N-d convolution over 1, 2 or 3 spatial axes: ``conv``, ``conv_transpose`` and the
internal ops of their gradients.

Inputs are channels-first, (N, C, *spatial): NCL, NCHW or NCDHW.  Weights are
(out_channels, in_channels / groups, *kernel) for ``conv`` and
(in_channels, out_channels / groups, *kernel) for ``conv_transpose``, as in
PyTorch and ONNX.  The window attributes (stride, padding, dilation) and their
canonical form (ONNX's: one stride per axis, pads as all begins then all ends)
are described in :mod:`.window`.  :mod:`.conv` keeps its own tuned 2-D ops
(``conv2d``, ``conv_transpose2d``); these ops take 2-D windows too, but exist
for the 1-D and 3-D ones.

Every kernel is a batched matrix product over an im2col matrix laid out as
(groups, in_channels/groups * prod(kernel), images * prod(out)): each group's
weights are then a plain (out, k) matrix and the images and output positions
form one long GEMM dimension.  That matrix is prod(kernel) times the size of
the input (27 times for a 3x3x3 kernel), so the batch goes through in chunks
whose columns stay near :data:`_CHUNK_BYTES`; the columns of a single image
must fit the per-tensor budget of :mod:`graphengine.limits`, which the shape
rule checks when the op is built.

The backward pass is two internal ops with their own gradient rules, so a
gradient graph can be differentiated again: ``conv_backprop_input`` (the
transposed convolution, sharing its kernel with ``conv_transpose``) and
``conv_backprop_filter``, both bilinear.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import ALL_TYPES, FLOAT_TYPES
from ..errors import ShapeError
from ..shapes import Dim, TensorType, format_shape
from .conv_shapes import check_conv_channels, check_transpose, transpose_sizes
from .registry import Array, Attr, F, Input, OpDef, frontend, register
from .window import (
    Ints,
    as_tuple,
    axis_names,
    check_grad_shape,
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

#: conv's weight layout, as its errors name it.
_W_LAYOUT = "(out_channels, in_channels / groups, *kernel)"

_ATTRS = (
    Attr("stride", "ints"),
    Attr("padding", "ints"),
    Attr("dilation", "ints"),
    Attr("groups", "int", 1),
)

#: Target size of one chunk's im2col columns.  Large enough that the matrix
#: products stay long (a chunk holds many small images), small enough that a
#: 3-D batch never needs prod(kernel) copies of itself at once.
_CHUNK_BYTES = 64 * 2**20


# -- shape rules ----------------------------------------------------------------------------


def _spatial_rank(x: TensorType, w: TensorType, w_layout: str) -> int:
    rank = w.rank - 2
    if rank not in (1, 2, 3):
        raise ValueError(
            f"w {w_layout} must have rank 3, 4 or 5 (1, 2 or 3 spatial axes), got "
            f"shape {format_shape(w.shape)}"
        )
    if x.rank != rank + 2:
        names = ", ".join(axis_names(rank))
        raise ValueError(
            f"w {format_shape(w.shape)} has {rank} spatial axes, so x must have rank "
            f"{rank + 2} (N, C, {names}), got shape {format_shape(x.shape)}"
        )
    if any(isinstance(k, int) and k < 1 for k in w.shape[2:]):
        raise ValueError(
            f"the kernel sizes (w's axes 2 on) must be positive, got w of shape "
            f"{format_shape(w.shape)}"
        )
    if x.dtype != w.dtype:
        raise ValueError(f"x is {x.dtype.name} but w is {w.dtype.name}; cast one with ge.cast")
    return rank


def _check_columns(channels: Dim, kernel: Sequence[Dim], out: Sequence[Dim], itemsize: int) -> None:
    """Refuse a convolution whose im2col columns for one image (channels *
    prod(kernel) * prod(out) elements) pass the per-tensor budget: the batch is
    chunked, but one image's columns are built whole."""
    from ..limits import get_limits

    sizes = [channels, *kernel, *out]
    if not all(isinstance(s, int) for s in sizes):
        return  # checked again by the kernel, with the run's sizes
    nbytes = itemsize * math.prod(sizes)  # type: ignore[arg-type]
    bound = get_limits().max_tensor_bytes
    if nbytes > bound:
        raise ValueError(
            f"the im2col columns of one image ({channels} channels x kernel "
            f"{tuple(kernel)} x output {tuple(out)}) would take {nbytes:,} bytes, over "
            f"the limit of {bound:,} bytes per tensor; use a smaller input or kernel, "
            "or raise the limit with ge.set_limits(max_tensor_bytes=...)"
        )


def _conv_types(
    x: TensorType, w: TensorType, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> TensorType:
    """The output type of conv(x, w), after every check of its inputs and attributes."""
    rank = _spatial_rank(x, w, _W_LAYOUT)
    check_window(stride, padding, dilation, rank)
    check_conv_channels(x, w, groups, _W_LAYOUT)
    out = output_sizes(x.shape, w.shape[2:], stride, padding, dilation)
    _check_columns(x.shape[1], w.shape[2:], out, x.dtype.itemsize)
    return TensorType(x.dtype, (x.shape[0], w.shape[0]) + out)


# -- the three kernels -----------------------------------------------------------------------


def _chunks(n: int, per_image: int) -> Iterator[slice]:
    """Slices of the batch whose columns (``per_image`` bytes each) fill about
    _CHUNK_BYTES; at least one image each."""
    from ..limits import get_limits

    bound = get_limits().max_tensor_bytes
    if per_image > bound:
        raise ShapeError(
            f"the im2col columns of one image would take {per_image:,} bytes, over "
            f"the limit of {bound:,} bytes per tensor; use a smaller input or kernel, "
            "or raise the limit with ge.set_limits(max_tensor_bytes=...)"
        )
    step = max(1, _CHUNK_BYTES // max(per_image, 1))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _columns(
    xp: Array, kernel: Ints, stride: Ints, dilation: Ints, out: Ints, groups: int
) -> Array:
    """(groups, C/groups * prod(kernel), n * prod(out)): every window of the padded
    images ``xp`` (n, C, *padded) as a column, channels and kernel positions
    row-major in each column, images then output positions along the rows."""
    n, c = xp.shape[:2]
    rank = len(kernel)
    view = windows(xp, kernel, stride, dilation, out)  # (n, C, *out, *kernel), no copy
    order = (1, *range(2 + rank, 2 + 2 * rank), 0, *range(2, 2 + rank))
    return view.transpose(order).reshape(groups, c // groups * math.prod(kernel), -1)


def _by_group(dy: Array, groups: int) -> Array:
    """dy (n, O, *out) as (groups, O/groups, n * prod(out))."""
    return np.moveaxis(dy, 1, 0).reshape(groups, dy.shape[1] // groups, -1)


def _column_bytes(channels: int, kernel: Ints, out: Ints, dtype: np.dtype[Any]) -> int:
    return dtype.itemsize * channels * math.prod(kernel) * math.prod(out)


def _convolve(
    x: Array, w: Array, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> Array:
    n, c = x.shape[:2]
    o, kernel = w.shape[0], w.shape[2:]
    out: Any = output_sizes(x.shape, kernel, stride, padding, dilation)
    xp = pad_spatial(x, padding)
    wg = w.reshape(groups, o // groups, -1)
    y = np.empty((o, n) + tuple(out), x.dtype)  # channels first: each group's rows at once
    for part in _chunks(n, _column_bytes(c, kernel, out, x.dtype)):
        cols = _columns(xp[part], kernel, stride, dilation, out, groups)
        y[:, part] = np.matmul(wg, cols).reshape((o, -1) + tuple(out))
    return np.ascontiguousarray(np.moveaxis(y, 0, 1))


def _transpose_convolve(
    dy: Array, w: Array, shape: Ints, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> Array:
    """The adjoint of _convolve in x: dy (N, O, *out) spread back onto an input of
    ``shape`` (N, C, *sizes) through the weights (O, C/groups, *kernel)."""
    n, c = shape[:2]
    sizes, kernel, out = tuple(shape[2:]), tuple(w.shape[2:]), tuple(dy.shape[2:])
    rank = len(sizes)
    full = tuple(sizes[i] + padding[i] + padding[rank + i] for i in range(rank))
    crop = (slice(None),) * 2 + tuple(slice(b, b + s) for b, s in zip(padding, sizes))
    wg = w.reshape(groups, w.shape[0] // groups, -1).transpose(0, 2, 1)  # (G, C/G*k, O/G)
    dx = np.empty((c, n) + sizes, dy.dtype)
    for part in _chunks(n, _column_bytes(c, kernel, out, dy.dtype)):
        cols = np.matmul(wg, _by_group(dy[part], groups))  # (G, C/G*k, n*L)
        cols = cols.reshape((c,) + kernel + (-1,) + out)
        dxp = np.zeros((c, cols.shape[1 + rank]) + full, dy.dtype)
        # col2im: each kernel position adds its slab of every window at once.
        for offsets, index in window_slices(kernel, stride, dilation, out):
            dxp[index] += cols[(slice(None),) + offsets]
        dx[:, part] = dxp[crop]
    return np.ascontiguousarray(np.moveaxis(dx, 0, 1))


def _filter_gradient(
    x: Array, dy: Array, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints, groups: int
) -> Array:
    n, c = x.shape[:2]
    o, out = dy.shape[1], dy.shape[2:]
    xp = pad_spatial(x, padding)
    dw = np.zeros((groups, o // groups, c // groups * math.prod(kernel)), x.dtype)
    for part in _chunks(n, _column_bytes(c, kernel, out, x.dtype)):
        cols = _columns(xp[part], kernel, stride, dilation, out, groups)
        dw += np.matmul(_by_group(dy[part], groups), cols.transpose(0, 2, 1))
    return dw.reshape((o, c // groups) + tuple(kernel))


# -- the ops --------------------------------------------------------------------------------


@register
class Conv(OpDef):
    """N-d cross-correlation (what deep-learning frameworks call convolution) of
    x (N, C, *spatial) with w (O, C/groups, *kernel), over 1, 2 or 3 spatial
    axes, giving (N, O, *out):

        y[n, o, p] = sum_{c, i} x_pad[n, g*C/G + c, p*stride + i*dilation] * w[o, c, i]

    with p and i multi-indices over the spatial axes, zero padding, and
    g = o // (O/groups) the group of output channel o (groups = C = O is a
    depthwise convolution).  out = floor((size + pads - dilation*(k - 1) - 1)
    / stride) + 1 on each axis.  There is no bias input: ``ge.conv(..., bias=b)``
    adds b reshaped to (O, 1, ...).
    vjp: dx = conv_backprop_input(dy, w), dw = conv_backprop_filter(x, dy)."""

    name = "conv"
    inputs = (Input("x", FLOAT_TYPES), Input("w", FLOAT_TYPES))
    attrs = _ATTRS

    def infer(
        self,
        x: TensorType,
        w: TensorType,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> TensorType:
        return _conv_types(x, w, stride, padding, dilation, groups)

    def kernel(
        self, x: Array, w: Array, *, stride: Ints, padding: Ints, dilation: Ints, groups: int
    ) -> Array:
        return _convolve(x, w, stride, padding, dilation, groups)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x, w = node.inputs
        attrs = node.attrs
        return [
            F.conv_backprop_input(dy, w, x, **attrs) if node.wants(0) else None,
            F.conv_backprop_filter(x, dy, w, **attrs) if node.wants(1) else None,
        ]


@register
class ConvBackpropInput(OpDef):
    """The gradient of conv with respect to x: the transposed convolution of dy
    (N, O, *out) with w (O, C/groups, *kernel), cropped to the shape of ``like``
    (the forward x, which fixes the sizes where the stride rounded down).
    Bilinear: d/d dy = conv(g, w), d/dw = conv_backprop_filter(g, dy)."""

    name = "conv_backprop_input"
    internal = True
    inputs = (
        Input("dy", FLOAT_TYPES),
        Input("w", FLOAT_TYPES),
        Input("like", ALL_TYPES, differentiable=False),
    )
    attrs = _ATTRS
    # What conv2d_backprop_input (in .conv) replaces: the forward shape rule, the
    # kernel, and the ops its gradient rule emits.
    forward_types = staticmethod(_conv_types)
    transpose_convolve = staticmethod(_transpose_convolve)
    conv_op, filter_op = "conv", "conv_backprop_filter"

    def infer(
        self,
        dy: TensorType,
        w: TensorType,
        like: TensorType,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> TensorType:
        expected = self.forward_types(
            like.with_dtype(w.dtype), w, stride, padding, dilation, groups
        )
        check_grad_shape(dy, expected)
        return TensorType(dy.dtype, like.shape)

    def kernel(
        self,
        dy: Array,
        w: Array,
        like: Array,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> Array:
        return self.transpose_convolve(dy, w, like.shape, stride, padding, dilation, groups)

    def vjp(self, node: NodeView, g: Tensor) -> list[Tensor | None]:
        dy, w, _ = node.inputs
        attrs = node.attrs
        return [
            getattr(F, self.conv_op)(g, w, **attrs) if node.wants(0) else None,
            getattr(F, self.filter_op)(g, dy, w, **attrs) if node.wants(1) else None,
            None,
        ]


@register
class ConvBackpropFilter(OpDef):
    """The gradient of conv with respect to w: correlates x (N, C, *spatial) with
    dy (N, O, *out), giving the shape of ``like`` (the forward w).  Bilinear:
    d/dx = conv_backprop_input(dy, g), d/d dy = conv(x, g)."""

    name = "conv_backprop_filter"
    internal = True
    inputs = (
        Input("x", FLOAT_TYPES),
        Input("dy", FLOAT_TYPES),
        Input("like", ALL_TYPES, differentiable=False),
    )
    attrs = _ATTRS
    # What conv2d_backprop_filter (in .conv) replaces: the forward shape rule, the
    # kernel, and the ops its gradient rule emits.
    forward_types = staticmethod(_conv_types)
    filter_gradient = staticmethod(_filter_gradient)
    conv_op, input_op = "conv", "conv_backprop_input"

    def infer(
        self,
        x: TensorType,
        dy: TensorType,
        like: TensorType,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> TensorType:
        expected = self.forward_types(
            x, like.with_dtype(x.dtype), stride, padding, dilation, groups
        )
        check_grad_shape(dy, expected)
        return TensorType(x.dtype, like.shape)

    def kernel(
        self,
        x: Array,
        dy: Array,
        like: Array,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
    ) -> Array:
        return self.filter_gradient(x, dy, like.shape[2:], stride, padding, dilation, groups)

    def vjp(self, node: NodeView, g: Tensor) -> list[Tensor | None]:
        x, dy, _ = node.inputs
        attrs = node.attrs
        return [
            getattr(F, self.input_op)(dy, g, x, **attrs) if node.wants(0) else None,
            getattr(F, self.conv_op)(x, g, **attrs) if node.wants(1) else None,
            None,
        ]


@register
class ConvTranspose(OpDef):
    """N-d transposed convolution (the adjoint of conv in its input, also called
    deconvolution) of x (N, C, *spatial) with w (C, O/groups, *kernel), over 1, 2
    or 3 spatial axes, giving (N, O, *out) with

        out = (size - 1)*stride + dilation*(k - 1) + 1 - begin - end + output_padding

    on each axis, as PyTorch's conv_transpose1d/3d and ONNX's ConvTranspose.
    ``output_padding`` (each smaller than the stride) adds elements at the end of
    each axis.  conv(y, w) with the same attributes maps the output back to x's
    shape, so vjp: dx = conv(dy, w), dw = conv_backprop_filter(dy, x)."""

    name = "conv_transpose"
    inputs = (Input("x", FLOAT_TYPES), Input("w", FLOAT_TYPES))
    attrs = _ATTRS + (Attr("output_padding", "ints"),)
    # What conv_transpose2d (in .conv) replaces, besides its shape rule: the
    # kernel and the ops its gradient rule emits.
    transpose_convolve = staticmethod(_transpose_convolve)
    conv_op, filter_op = "conv", "conv_backprop_filter"

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
        layout = "(in_channels, out_channels / groups, *kernel)"
        rank = _spatial_rank(x, w, layout)
        check_window(stride, padding, dilation, rank)
        o = check_transpose(x, w, stride, output_padding, groups, rank, layout)
        sizes = transpose_sizes(x.shape, w.shape, stride, dilation, padding, output_padding)
        _check_columns(o, w.shape[2:], x.shape[2:], x.dtype.itemsize)
        return TensorType(x.dtype, (x.shape[0], o) + sizes)

    def kernel(
        self,
        x: Array,
        w: Array,
        *,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        groups: int,
        output_padding: Ints,
    ) -> Array:
        sizes = transpose_sizes(x.shape, w.shape, stride, dilation, padding, output_padding)
        shape = (x.shape[0], w.shape[1] * groups) + sizes
        return self.transpose_convolve(x, w, shape, stride, padding, dilation, groups)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x, w = node.inputs
        attrs = {k: v for k, v in node.attrs.items() if k != "output_padding"}
        return [
            getattr(F, self.conv_op)(dy, w, **attrs) if node.wants(0) else None,
            getattr(F, self.filter_op)(dy, x, w, **attrs) if node.wants(1) else None,
        ]


# -- front-ends -----------------------------------------------------------------------------


def _spatial_axes(w: Any) -> int:
    """How many spatial axes the weights w (out, in, *kernel) have."""
    shape = tuple(w.shape if hasattr(w, "shape") else np.shape(w))
    return max(len(shape) - 2, 1)  # shape inference refuses a bad rank, naming the node


def _kernel_of(w: Any) -> tuple[Dim, ...]:
    return tuple(w.shape if hasattr(w, "shape") else np.shape(w))[2:]


def _add_bias(y: Tensor, bias: Any, rank: int) -> Tensor:
    """y + bias laid along the channel axis: (O,) reshaped to (O, 1, ...)."""
    from ..graph import Tensor as TensorClass

    shape = (-1,) + (1,) * rank
    if isinstance(bias, TensorClass):
        return y + F.reshape(bias, shape)
    return y + np.reshape(np.asarray(bias, y.dtype), shape)


@frontend("conv")
def conv(
    x: TensorLike,
    w: TensorLike,
    bias: TensorLike | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | str | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    *,
    name: str | None = None,
) -> Tensor:
    """Convolution of channels-first ``x`` (N, C, L), (N, C, H, W) or (N, C, D, H, W)
    with ``w`` (out_channels, in_channels / groups, *kernel): 1-D, 2-D or 3-D, as
    the weights' rank says (PyTorch's conv1d / conv2d / conv3d).

    ``bias`` (out_channels,) is added along the channel axis when given.
    ``stride`` and ``dilation``: an int or one int per spatial axis.
    ``padding``: an int, one int per axis (symmetric), ONNX pads (all begins,
    then all ends), ``"valid"`` (none) or ``"same"`` (output size
    ceil(size / stride), the odd extra element at the end, as ONNX SAME_UPPER).
    ``groups`` splits the channels into groups convolved separately (groups =
    in_channels = out_channels is a depthwise convolution).  Raises ShapeError,
    naming the node, when the channels do not match or the window does not fit.
    ``ge.conv2d`` is the tuned 2-D form.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> audio = g.placeholder("audio", (None, 2, 100))
    >>> ge.conv(audio, np.ones((8, 2, 5), np.float32), stride=2, padding=2).shape
    ('N', 8, 50)
    >>> volume = g.placeholder("volume", (None, 4, 6, 8, 10))
    >>> w = g.parameter("w", np.ones((4, 1, 3, 3, 3), np.float32))
    >>> ge.conv(volume, w, padding="same", groups=4).shape
    ('N', 4, 6, 8, 10)
    """
    rank = _spatial_axes(w)
    stride, dilation = as_tuple(stride, rank), as_tuple(dilation, rank)
    padding = resolve_padding("conv", padding, x, _kernel_of(w), stride, dilation)
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    y = F.call("conv", [x, w], attrs, name)
    return y if bias is None else _add_bias(y, bias, rank)


@frontend("conv_transpose")
def conv_transpose(
    x: TensorLike,
    w: TensorLike,
    bias: TensorLike | None = None,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    output_padding: int | Sequence[int] = 0,
    *,
    name: str | None = None,
) -> Tensor:
    """Transposed convolution of channels-first ``x`` (N, C, *spatial, 1 to 3
    spatial axes) with ``w`` (in_channels, out_channels / groups, *kernel), as
    PyTorch's conv_transpose1d / 2d / 3d.

    ``bias`` (out_channels,) is added along the channel axis when given.
    ``stride``, ``dilation`` and ``output_padding``: an int or one per spatial
    axis.  ``padding``: an int, one per axis, or ONNX pads (all begins, then all
    ends), removed from the output's borders.  A stride-2 transposed
    convolution with kernel 4 and padding 1 doubles every spatial size:

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 8, 3, 5, 7))
    >>> w = g.parameter("w", np.ones((8, 2, 4, 4, 4), np.float32))
    >>> ge.conv_transpose(x, w, stride=2, padding=1).shape
    ('N', 2, 6, 10, 14)
    """
    if isinstance(padding, str):
        raise ShapeError(
            f"conv_transpose: padding must be an int or ints, not {padding!r} "
            "(compute 'same' pads from the output size you want)"
        )
    rank = _spatial_axes(w)
    stride, dilation = as_tuple(stride, rank), as_tuple(dilation, rank)
    attrs = {
        "stride": stride,
        "padding": resolve_padding("conv_transpose", padding, x, _kernel_of(w), stride, dilation),
        "dilation": dilation,
        "groups": groups,
        "output_padding": as_tuple(output_padding, rank),
    }
    y = F.call("conv_transpose", [x, w], attrs, name)
    return y if bias is None else _add_bias(y, bias, rank)


__all__ = ["Conv", "ConvTranspose", "conv", "conv_transpose"]
