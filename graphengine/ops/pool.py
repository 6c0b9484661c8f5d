"""N-d pooling (1-D, 2-D and 3-D windows): ``max_pool``, ``avg_pool`` and the
internal ops of their gradients.

Inputs are channels-first, (N, C, *spatial).  The window attributes
(kernel_size, stride, padding, dilation, ceil_mode) and their canonical form
are described in :mod:`.window`.  Padding must be smaller than the (dilated)
kernel, so that every window holds at least one input element.

``max_pool`` has two outputs: the maxima and their indices, each the flat
position of the chosen element in the whole input (as ONNX MaxPool's Indices
output with the default row-major storage order, and PyTorch's
``return_indices`` except that PyTorch counts within each (n, c) plane).  The
forward pass finds the maxima once; its gradient reads the indices instead of
searching the windows again.

The backward passes need kernels of their own, so they are internal ops with
their own gradient rules, and a gradient graph can be differentiated again:
``max_pool_grad`` (adjoint: ``take`` at the indices) and ``avg_pool_grad``
(adjoint: ``avg_pool``) are linear in their gradient input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..dtypes import ALL_TYPES, FLOAT_TYPES, INDEX_TYPES
from ..errors import ShapeError
from ..shapes import TensorType
from .registry import Array, Attr, F, Input, InputInfo, OpDef, OutKernel, frontend, register
from .window import (
    Ints,
    as_tuple,
    axis_names,
    check_grad_shape,
    check_window,
    crop_spatial,
    output_sizes,
    pad_spatial,
    padded_sizes,
    resolve_padding,
    window_slices,
)

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor

_POOL_ATTRS = (
    Attr("kernel_size", "ints"),
    Attr("stride", "ints"),
    Attr("padding", "ints"),
    Attr("dilation", "ints"),
    Attr("ceil_mode", "bool", False),
)
_AVG_ATTRS = _POOL_ATTRS + (Attr("count_include_pad", "bool", True),)


def _pool_types(
    x: TensorType, kernel_size: Ints, stride: Ints, padding: Ints, dilation: Ints, ceil_mode: bool
) -> TensorType:
    rank = len(kernel_size)
    if rank not in (1, 2, 3) or min(kernel_size) < 1:
        raise ValueError(
            f"kernel_size must be 1, 2 or 3 positive ints (one per spatial axis), got {kernel_size}"
        )
    if x.rank != rank + 2:
        raise ValueError(
            f"a {rank}-D pool needs x of rank {rank + 2} (N, C, "
            f"{', '.join(axis_names(rank))}), got {x}"
        )
    check_window(stride, padding, dilation, rank)
    spans = [d * (k - 1) + 1 for k, d in zip(kernel_size, dilation)]
    if any(max(padding[i], padding[rank + i]) >= spans[i] for i in range(rank)):
        raise ValueError(
            f"padding {padding} must be smaller than the kernel {kernel_size} on "
            "each side, so that every window holds at least one input element"
        )
    out = output_sizes(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return x.with_shape(x.shape[:2] + out)


def _geometry(
    x_shape: tuple[int, ...],
    kernel_size: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    ceil_mode: bool,
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(output sizes, padded sizes) of a pool over an input of ``x_shape`` (a run's
    shape: every size is known)."""
    out: Any = output_sizes(x_shape, kernel_size, stride, padding, dilation, ceil_mode)
    return out, padded_sizes(x_shape[2:], kernel_size, stride, padding, dilation, out)


def _window_starts(sizes: Ints, kernel_size: Ints, stride: Ints, padding: Ints, out: Ints) -> Array:
    """Flat index into one (n, c) plane of the first kernel position of every window
    (it may fall in the padding: only sums with in-window offsets are real)."""
    rank = len(kernel_size)
    plane_strides = [math.prod(sizes[i + 1 :]) for i in range(rank)]
    start = np.zeros(out, np.int64)
    for i in range(rank):
        axis = (np.arange(out[i], dtype=np.int64) * stride[i] - padding[i]) * plane_strides[i]
        start = start + axis.reshape((-1,) + (1,) * (rank - 1 - i))
    return start


def _tiles(
    sizes: Ints, kernel_size: Ints, stride: Ints, padding: Ints, dilation: Ints, out: Ints
) -> bool:
    """Whether the windows tile the input without overlap, gaps or padding
    (stride = kernel, as in the usual 2x2 pooling), so one copy can lay every
    window position out contiguously."""
    return (
        tuple(stride) == tuple(kernel_size)
        and not any(padding)
        and all(d == 1 for d in dilation)
        and all(o * k <= s for o, k, s in zip(out, kernel_size, sizes))
    )


def _tiled_windows(x: Array, kernel_size: Ints, out: Ints, rows: Array | None = None) -> Array:
    """(K, N*C*prod(out)) copy of tiled windows (into ``rows`` when given): row k
    holds kernel position k (row-major) of every window, so the reduction below
    runs over contiguous rows instead of strided views, which numpy handles many
    times slower."""
    rank = len(kernel_size)
    st = x.strides
    view = as_strided(
        x,
        tuple(kernel_size) + x.shape[:2] + tuple(out),
        tuple(st[2 + i] for i in range(rank))
        + st[:2]
        + tuple(st[2 + i] * kernel_size[i] for i in range(rank)),
        writeable=False,
    )
    if rows is None:
        return np.ascontiguousarray(view).reshape(math.prod(kernel_size), -1)
    np.copyto(rows.reshape(view.shape), view)
    return rows


def _first_argmax(candidates: list[Array], best: Array | None = None) -> tuple[Array, Array]:
    """(elementwise maximum of ``candidates``, position of the first maximum in the
    list), NaN winning as in PyTorch.

    The position is kept in a small unsigned code updated without ``where`` or
    masked copies (both are slow in numpy): ``code ^= (code ^ k) & mask`` with a
    mask of all ones where candidate k beats the running maximum.  A strict
    comparison keeps the first maximum on ties.  The maximum goes into ``best``
    when given (shaped like a candidate)."""
    first = candidates[0]
    count = len(candidates)
    dtype = np.uint8 if count <= 2**8 else np.uint16 if count <= 2**16 else np.uint32
    if count == 1:
        if best is None:
            return first.copy(), np.zeros(first.shape, dtype)
        np.copyto(best, first)
        return best, np.zeros(first.shape, dtype)
    better = np.greater(candidates[1], first)
    best = np.maximum(first, candidates[1], out=best)
    code = better.astype(dtype)
    if count > 2:
        mask, scratch = np.empty(best.shape, dtype), np.empty(best.shape, dtype)
    for k in range(2, count):
        np.greater(candidates[k], best, out=better)
        np.maximum(best, candidates[k], out=best)
        np.subtract(0, better, out=mask, dtype=dtype, casting="unsafe")  # 0 or all ones
        np.bitwise_xor(code, dtype(k), out=scratch)
        scratch &= mask
        np.bitwise_xor(code, scratch, out=code)
    nan = np.isnan(best)
    if nan.any():  # rare: point each NaN maximum at the window's first NaN
        found = np.zeros(best.shape, bool)
        for k, values in enumerate(candidates):
            hit = nan & ~found & np.isnan(values)
            code[hit] = k
            found |= hit
    return best, code


class _PoolGeometry:
    """What a max pool over inputs of one shape computes once: the output and
    padded sizes, whether the windows tile the input, and the flat index of each
    window position as within[code] + the window's start + the (n, c) plane's
    start, with within[k] the offset of kernel position k (row-major) in the
    window.  ``fixed`` also keeps the two starts' sum as one (N, C, *out) array,
    for a plan that runs the shape again and again (one add instead of two)."""

    def __init__(
        self,
        x_shape: tuple[int, ...],
        kernel_size: Ints,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        ceil_mode: bool,
        fixed: bool = False,
    ) -> None:
        self.out, self.full = _geometry(x_shape, kernel_size, stride, padding, dilation, ceil_mode)
        sizes = x_shape[2:]
        rank = len(sizes)
        self.tiles = _tiles(sizes, kernel_size, stride, padding, dilation, self.out)
        plane_strides = [math.prod(sizes[i + 1 :]) for i in range(rank)]
        within: Array = np.zeros((), np.int64)
        for k, d, s in zip(kernel_size, dilation, plane_strides):
            within = (within[..., None] + np.arange(k, dtype=np.int64) * (d * s)).reshape(-1)
        self.within = within
        planes = np.arange(x_shape[0] * x_shape[1], dtype=np.int64) * math.prod(sizes)
        plane_starts = planes.reshape(x_shape[:2] + (1,) * rank)
        window_starts = _window_starts(sizes, kernel_size, stride, padding, self.out)
        self.starts: tuple[Array, ...] = (
            (plane_starts + window_starts,) if fixed else (plane_starts, window_starts)
        )


def _max_with_indices(
    x: Array,
    kernel_size: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    ceil_mode: bool,
    geometry: _PoolGeometry | None = None,
    out: tuple[Array | None, ...] = (None, None),
    rows: Array | None = None,
) -> tuple[Array, Array]:
    """max_pool's kernel.  With the ``geometry`` of x's shape, ``out`` buffers for
    (y, indices) and ``rows`` (scratch for tiled windows) it allocates little."""
    if geometry is None:
        geometry = _PoolGeometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    shape = x.shape[:2] + tuple(geometry.out)
    if geometry.tiles:
        candidates = list(_tiled_windows(x, kernel_size, geometry.out, rows))
    else:
        xp = pad_spatial(x, padding, -np.inf, geometry.full)
        windows = window_slices(kernel_size, stride, dilation, geometry.out)
        candidates = [xp[index] for _, index in windows]
    y, indices = out
    best, code = _first_argmax(candidates, None if y is None else y.reshape(candidates[0].shape))
    # Every code is a kernel position, so mode="clip" never clips; it lets take
    # write into ``out`` directly, where the default mode buffers a copy.
    indices = np.take(
        geometry.within,
        code,
        out=None if indices is None else indices.reshape(code.shape),
        mode="clip",
    ).reshape(shape)
    for start in geometry.starts:
        indices += start
    return best.reshape(shape), indices


@register
class MaxPool(OpDef):
    """The maximum of each window of x (N, C, *spatial) with 1, 2 or 3 spatial
    axes, and its flat index in x (padding counts as -inf, so it is never
    chosen).  The first maximum (row-major within the window) wins ties, as in
    PyTorch.  vjp: the whole gradient goes to that element
    (max_pool_grad(dy, indices)); ``ge.max`` instead shares it among ties."""

    name = "max_pool"
    inputs = (Input("x", FLOAT_TYPES),)
    outputs = ("y", "indices")
    attrs = _POOL_ATTRS

    def infer(self, x: TensorType, **attrs: Any) -> tuple[TensorType, TensorType]:
        y = _pool_types(x, **attrs)
        return y, y.with_dtype("int64")

    def kernel(self, x: Array, **attrs: Any) -> tuple[Array, Array]:
        return _max_with_indices(x, **attrs)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        """Into the plan's (y, indices) buffers, with the index base and the tiled
        windows' scratch fixed for this input shape."""
        ((shape, dtype),) = inputs
        geometry = _PoolGeometry(shape, **attrs, fixed=True)
        size = shape[0] * shape[1] * math.prod(geometry.out)
        rows = np.empty((math.prod(attrs["kernel_size"]), size), dtype) if geometry.tiles else None

        def max_pool_into(x: Array, out: tuple[Array | None, ...]) -> tuple[Array, Array]:
            return _max_with_indices(x, **attrs, geometry=geometry, out=out, rows=rows)

        return max_pool_into

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        dy = dys[0]
        if dy is None:
            return [None]
        a = node.attrs
        disjoint = all(
            s >= d * (k - 1) + 1 for k, s, d in zip(a["kernel_size"], a["stride"], a["dilation"])
        )
        return [F.max_pool_grad(dy, node.outputs[1], node.inputs[0], disjoint=disjoint)]


@register
class MaxPoolGrad(OpDef):
    """Zeros shaped like ``like``, with each element of dy added at the flat
    position given by ``indices`` (the gradient of max_pool).  ``disjoint`` says
    that no two windows share an element, so no index repeats and the values are
    stored instead of summed.  Linear in dy; vjp: take(g, indices)."""

    name = "max_pool_grad"
    internal = True
    inputs = (
        Input("dy", FLOAT_TYPES),
        Input("indices", INDEX_TYPES, differentiable=False),
        Input("like", ALL_TYPES, differentiable=False),
    )
    attrs = (Attr("disjoint", "bool", False),)

    def infer(
        self, dy: TensorType, indices: TensorType, like: TensorType, *, disjoint: bool
    ) -> TensorType:
        check_grad_shape(indices.with_dtype(dy.dtype), dy)
        if dy.rank != like.rank:
            raise ValueError(f"dy {dy} and like {like} must have the same rank")
        return like.with_dtype(dy.dtype)

    def kernel(self, dy: Array, indices: Array, like: Array, *, disjoint: bool) -> Array:
        if disjoint:
            out = np.zeros(like.size, dy.dtype)
            out[indices.reshape(-1)] = dy.reshape(-1)
        else:
            out = np.bincount(
                indices.reshape(-1), weights=dy.reshape(-1), minlength=like.size
            ).astype(dy.dtype, copy=False)
        return out.reshape(like.shape)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        if not attrs["disjoint"]:
            return None  # bincount allocates its float64 sums anyway

        def max_pool_grad_into(dy: Array, indices: Array, like: Array, out: Array) -> Array:
            flat = out.reshape(-1)
            flat.fill(0)
            flat[indices.reshape(-1)] = dy.reshape(-1)
            return out

        return max_pool_grad_into

    def vjp(self, node: NodeView, g: Tensor) -> list[Tensor | None]:
        return [F.take(g, node.inputs[1]), None, None]


def _divisor(
    sizes: Ints,
    kernel_size: Ints,
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    out: Ints,
    count_include_pad: bool,
    dtype: np.dtype,
) -> Array:
    """What each window's sum is divided by, broadcast over (*out): the number of
    its elements inside the input, or also inside the explicit padding
    (count_include_pad); the extra end padding of ceil mode never counts."""
    rank = len(kernel_size)
    divisor = np.ones((), dtype)
    for i in range(rank):
        positions = (
            np.arange(out[i])[:, None] * stride[i]
            - padding[i]
            + np.arange(kernel_size[i])[None, :] * dilation[i]
        )
        low, high = (
            (-padding[i], sizes[i] + padding[rank + i]) if count_include_pad else (0, sizes[i])
        )
        counts = ((positions >= low) & (positions < high)).sum(axis=1).astype(dtype)
        divisor = divisor * counts.reshape((-1,) + (1,) * (rank - 1 - i))
    return divisor


@register
class AvgPool(OpDef):
    """The mean of each window of x (N, C, *spatial) with 1, 2 or 3 spatial
    axes, with zero padding.  By default the explicit padding counts in the mean
    (count_include_pad=True, as PyTorch; ONNX's default is False: set it to
    match); the extra end padding of ceil mode never does.
    vjp: avg_pool_grad(dy)."""

    name = "avg_pool"
    inputs = (Input("x", FLOAT_TYPES),)
    attrs = _AVG_ATTRS

    def infer(self, x: TensorType, *, count_include_pad: bool, **attrs: Any) -> TensorType:
        return _pool_types(x, **attrs)

    def kernel(
        self,
        x: Array,
        *,
        kernel_size: Ints,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Array:
        out, full = _geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
        xp = pad_spatial(x, padding, 0.0, full)
        total: Array | None = None
        for _, index in window_slices(kernel_size, stride, dilation, out):
            total = xp[index].copy() if total is None else np.add(total, xp[index], out=total)
        total /= _divisor(
            x.shape[2:], kernel_size, stride, padding, dilation, out, count_include_pad, x.dtype
        )
        return total

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.avg_pool_grad(dy, node.inputs[0], **node.attrs)]


@register
class AvgPoolGrad(OpDef):
    """The gradient of avg_pool: each window's dy, divided as the forward pass
    divided, spread over the window and cropped to the shape of ``like`` (the
    forward x).  Linear; vjp: avg_pool(g)."""

    name = "avg_pool_grad"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = _AVG_ATTRS

    def infer(
        self, dy: TensorType, like: TensorType, *, count_include_pad: bool, **attrs: Any
    ) -> TensorType:
        check_grad_shape(dy, _pool_types(like.with_dtype(dy.dtype), **attrs))
        return like.with_dtype(dy.dtype)

    def kernel(
        self,
        dy: Array,
        like: Array,
        *,
        kernel_size: Ints,
        stride: Ints,
        padding: Ints,
        dilation: Ints,
        ceil_mode: bool,
        count_include_pad: bool,
    ) -> Array:
        out, full = _geometry(like.shape, kernel_size, stride, padding, dilation, ceil_mode)
        share = dy / _divisor(
            like.shape[2:], kernel_size, stride, padding, dilation, out, count_include_pad, dy.dtype
        )
        dxp = np.zeros(like.shape[:2] + full, dy.dtype)
        for _, index in window_slices(kernel_size, stride, dilation, out):
            dxp[index] += share
        return crop_spatial(dxp, padding, like.shape[2:])

    def vjp(self, node: NodeView, g: Tensor) -> list[Tensor | None]:
        return [F.avg_pool(g, **node.attrs), None]


# -- front-ends ------------------------------------------------------------------------------


def _pool_attrs(
    op: str,
    rank: int,
    x: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
) -> dict[str, Any]:
    kernel_size = as_tuple(kernel_size, rank)
    stride = kernel_size if stride is None else as_tuple(stride, rank)
    dilation = as_tuple(dilation, rank)
    if not isinstance(kernel_size, (tuple, list)) or len(kernel_size) != rank:
        raise ShapeError(f"{op}: kernel_size must be an int or {rank} ints, got {kernel_size!r}")
    return {
        "kernel_size": kernel_size,
        "stride": stride,
        "dilation": dilation,
        "padding": resolve_padding(op, padding, x, kernel_size, stride, dilation),
        "ceil_mode": ceil_mode,
    }


def _max_pool_frontend(rank: int) -> Callable[..., Any]:
    op = f"max_pool{rank}d"

    def max_pool_nd(
        x: Tensor,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | str | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
        return_indices: bool = False,
        *,
        name: str | None = None,
    ) -> Any:  # y, or (y, indices) with return_indices=True
        attrs = _pool_attrs(op, rank, x, kernel_size, stride, padding, dilation, ceil_mode)
        y, indices = F.call("max_pool", [x], attrs, name)
        return (y, indices) if return_indices else y

    max_pool_nd.__name__ = max_pool_nd.__qualname__ = op
    return frontend(op)(max_pool_nd)


def _avg_pool_frontend(rank: int) -> Callable[..., Any]:
    op = f"avg_pool{rank}d"

    def avg_pool_nd(
        x: Tensor,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | str | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        *,
        name: str | None = None,
    ) -> Tensor:
        attrs = _pool_attrs(op, rank, x, kernel_size, stride, padding, dilation, ceil_mode)
        attrs["count_include_pad"] = count_include_pad
        return F.call("avg_pool", [x], attrs, name)

    avg_pool_nd.__name__ = avg_pool_nd.__qualname__ = op
    return frontend(op)(avg_pool_nd)


_SHAPES = {
    1: ("(N, C, L)", "(None, 3, 9)", "('N', 3, 4)", "('N', 3, 9)"),
    2: ("(N, C, H, W)", "(None, 3, 8, 6)", "('N', 3, 4, 3)", "('N', 3, 8, 6)"),
    3: ("(N, C, D, H, W)", "(None, 3, 4, 8, 6)", "('N', 3, 2, 4, 3)", "('N', 3, 4, 8, 6)"),
}

max_pool1d, max_pool2d, max_pool3d = (_max_pool_frontend(r) for r in (1, 2, 3))
avg_pool1d, avg_pool2d, avg_pool3d = (_avg_pool_frontend(r) for r in (1, 2, 3))

for _rank, _fn in ((1, max_pool1d), (2, max_pool2d), (3, max_pool3d)):
    _layout, _shape, _halved, _same = _SHAPES[_rank]
    _fn.__doc__ = f"""Max pooling of ``x`` {_layout} over ``kernel_size`` windows (an int
    or {_rank} ints).

    ``stride`` defaults to ``kernel_size`` (as PyTorch); ``padding`` is an int,
    {_rank} ints (symmetric), {2 * _rank} ONNX pads (begins, then ends), ``"valid"``
    or ``"same"``, and must be smaller than the kernel; padding never wins the
    max.  ``dilation`` spaces the window's elements; ``ceil_mode=True`` rounds
    the output size up instead of down.  With ``return_indices=True`` it returns
    (y, indices): the flat index in ``x`` of each maximum (int64).

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", {_shape})
    >>> ge.max_pool{_rank}d(x, 2).shape
    {_halved}
    """

for _rank, _fn in ((1, avg_pool1d), (2, avg_pool2d), (3, avg_pool3d)):
    _layout, _shape, _halved, _same = _SHAPES[_rank]
    _fn.__doc__ = f"""Average pooling of ``x`` {_layout}; arguments as
    :func:`max_pool{_rank}d`.

    With ``count_include_pad=True`` (PyTorch's default) the explicit zero padding
    counts in each window's mean; with False, only the real elements do (ONNX's
    default).

    >>> import graphengine as ge
    >>> x = ge.Graph().placeholder("x", {_shape})
    >>> ge.avg_pool{_rank}d(x, 3, stride=1, padding=1).shape
    {_same}
    """


__all__ = [
    "AvgPool",
    "MaxPool",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
]
