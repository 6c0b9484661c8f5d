"""Window geometry shared by convolution (:mod:`.conv`) and pooling (:mod:`.pool`).

Inputs are channels-first, (N, C, *spatial), with 1, 2 or 3 spatial axes
(NCL, NCHW, NCDHW).  Window attributes are stored in one canonical form, which
is ONNX's, with one entry per spatial axis ``r``:

* ``stride`` and ``dilation``: r ints;
* ``padding``: 2r ints, every axis's begin then every axis's end (ONNX's
  ``pads``; for 2-D that is (top, left, bottom, right)).

The front-ends (``ge.conv2d``, ``ge.max_pool2d`` ...) also take an int, r ints,
or ``"valid"`` / ``"same"`` (ONNX's ``SAME_UPPER``: the odd extra element of
padding goes at the end), and turn them into that form when the op is built
(:func:`as_tuple`, :func:`resolve_padding`).  Output sizes round down, as
``floor((size + pads - dilation * (k - 1) - 1) / stride) + 1``; pooling's
``ceil_mode`` rounds up instead, dropping a last window that would start in the
end padding (as PyTorch and ONNX do).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import ShapeError
from ..shapes import Dim, TensorType, format_shape

#: Per-axis ints of a window: kernel, stride, dilation, output or input sizes, and
#: ONNX pads (begins, then ends).
Ints = Sequence[int]
Array = np.ndarray[Any, Any]

_AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def axis_names(rank: int) -> tuple[str, ...]:
    """Readable names of the spatial axes, for messages."""
    return _AXIS_NAMES.get(rank, tuple(f"spatial axis {i}" for i in range(rank)))


# -- front-end arguments to canonical attributes --------------------------------------------


def as_tuple(value: Any, rank: int) -> Any:
    """An int means the same value on every spatial axis; anything else is passed on
    unchanged (shape inference checks it and names the node)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * rank
    return value


def as_pair(value: Any) -> Any:
    """:func:`as_tuple` for two spatial axes."""
    return as_tuple(value, 2)


def _as_pads(value: Any, rank: int) -> Any:
    """An int or r ints mean symmetric padding; 2r values are ONNX pads."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value),) * (2 * rank)
    if isinstance(value, (tuple, list)) and len(value) == rank:
        return tuple(value) * 2
    return value


def same_pads(
    op: str,
    sizes: Sequence[Dim],
    kernel: Sequence[Dim],
    stride: Ints,
    dilation: Ints,
    upper: bool = True,
) -> tuple[int, ...]:
    """ONNX SAME_UPPER (or SAME_LOWER): output size ceil(size / stride), the odd
    extra element of padding at the end (or the beginning)."""
    begins: list[int] = []
    ends: list[int] = []
    for size, k, s, d, what in zip(sizes, kernel, stride, dilation, axis_names(len(kernel))):
        if not isinstance(k, int) or not (isinstance(size, int) or s == 1):
            raise ShapeError(
                f"{op}: padding='same' needs a known {what} and kernel size "
                f"(got {what} {size}, kernel {k}); give explicit pads instead"
            )
        span = d * (k - 1) + 1
        if s == 1:
            total = span - 1
        else:
            assert isinstance(size, int)  # checked above
            total = max((-(-size // s) - 1) * s + span - size, 0)
        small, large = total // 2, total - total // 2
        begins.append(small if upper else large)
        ends.append(large if upper else small)
    return tuple(begins + ends)


def resolve_padding(
    op: str, padding: Any, x: Any, kernel: Sequence[Dim], stride: Any, dilation: Any
) -> Any:
    """A front-end's ``padding`` (an int, r ints, ONNX pads, ``"valid"`` or ``"same"``)
    as ONNX pads (begins, then ends)."""
    rank = len(kernel)
    if not isinstance(padding, str):
        return _as_pads(padding, rank)
    if padding == "valid":
        return (0,) * (2 * rank)
    if padding != "same":
        raise ShapeError(
            f"{op}: padding must be 'valid', 'same', an int, {rank} or "
            f"{2 * rank} ints; got {padding!r}"
        )
    shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
    if len(shape) != rank + 2 or not (_is_window(stride, rank) and _is_window(dilation, rank)):
        return (0,) * (2 * rank)  # shape inference reports the real problem, naming the node
    return same_pads(op, shape[2:], kernel, stride, dilation)


def _is_window(value: Any, rank: int) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == rank
        and all(isinstance(v, int) and v >= 1 for v in value)
    )


# -- shape inference ----------------------------------------------------------------------


def check_window(stride: Ints, padding: Ints, dilation: Ints, rank: int) -> None:
    """Refuse window attributes outside their canonical form for ``rank`` spatial axes."""
    names = "/".join(axis_names(rank))
    if len(stride) != rank or min(stride) < 1:
        raise ValueError(f"stride must be {rank} positive ints ({names}), got {stride}")
    if len(dilation) != rank or min(dilation) < 1:
        raise ValueError(f"dilation must be {rank} positive ints ({names}), got {dilation}")
    if len(padding) != 2 * rank or min(padding) < 0:
        order = "top, left, bottom, right" if rank == 2 else "begins, then ends"
        raise ValueError(f"padding must be {2 * rank} non-negative ints ({order}), got {padding}")


def check_rank(t: TensorType, rank: int, what: str) -> None:
    if t.rank != rank:
        raise ValueError(f"{what} must have rank {rank}, got shape {format_shape(t.shape)}")


def _out_size(
    size: Dim,
    k: Dim,
    stride: int,
    dilation: int,
    begin: int,
    end: int,
    what: str,
    ceil_mode: bool = False,
) -> Dim:
    """Output length along one axis, or None when it is not known until run time."""
    if not isinstance(size, int) or not isinstance(k, int):
        return None
    span = dilation * (k - 1) + 1
    if size + begin + end < span:
        dilated = f" ({k} dilated by {dilation})" if dilation > 1 else ""
        raise ValueError(
            f"the window spans {span} along the {what}{dilated}, more than the "
            f"padded {what} {size + begin + end}; use a smaller kernel or more "
            "padding"
        )
    room = size + begin + end - span
    if not ceil_mode:
        return room // stride + 1
    out = -(-room // stride) + 1
    if (out - 1) * stride >= size + begin:
        out -= 1  # the last window would start in the end padding
    return out


def output_sizes(
    x_shape: Sequence[Dim],
    kernel: Sequence[Dim],
    stride: Ints,
    padding: Ints,
    dilation: Ints,
    ceil_mode: bool = False,
) -> tuple[Dim, ...]:
    """The output spatial sizes of windows over a (N, C, *spatial) input."""
    rank = len(kernel)
    return tuple(
        _out_size(
            x_shape[2 + i],
            kernel[i],
            stride[i],
            dilation[i],
            padding[i],
            padding[rank + i],
            name,
            ceil_mode,
        )
        for i, name in enumerate(axis_names(rank))
    )


def check_grad_shape(dy: TensorType, expected: TensorType) -> None:
    """Refuse an output gradient whose type differs from the forward output's."""
    if dy.rank != expected.rank or any(
        isinstance(a, int) and isinstance(b, int) and a != b
        for a, b in zip(dy.shape, expected.shape)
    ):
        raise ValueError(
            f"the output gradient has shape {format_shape(dy.shape)}, but the "
            f"forward output has shape {format_shape(expected.shape)}"
        )
    if dy.dtype != expected.dtype:
        raise ValueError(f"the output gradient is {dy.dtype.name}, expected {expected.dtype.name}")


# -- kernels ------------------------------------------------------------------------------


def padded_sizes(
    sizes: Ints, kernel: Ints, stride: Ints, padding: Ints, dilation: Ints, out: Ints
) -> tuple[int, ...]:
    """Spatial sizes of the padded input: the input plus its pads, grown where the
    windows reach further (ceil mode), never cut."""
    rank = len(kernel)
    return tuple(
        max(
            sizes[i] + padding[i] + padding[rank + i],
            (out[i] - 1) * stride[i] + dilation[i] * (kernel[i] - 1) + 1,
        )
        for i in range(rank)
    )


def pad_spatial(x: Array, padding: Ints, value: float = 0.0, full: Ints | None = None) -> Array:
    """``x`` (N, C, *spatial) padded with ``value`` by ONNX pads; ``full`` (the
    padded sizes) extends the end padding where it is larger."""
    rank = x.ndim - 2
    widths = [(padding[i], padding[rank + i]) for i in range(rank)]
    if full is not None:
        widths = [(b, max(e, f - b - s)) for (b, e), f, s in zip(widths, full, x.shape[2:])]
    if not any(b or e for b, e in widths):
        return x
    # A filled array with x copied into its middle: the same as np.pad with a
    # constant, without np.pad's Python work (70 us on a (64, 1, 28, 28) batch,
    # a fifth of its convolution's time).
    shape = x.shape[:2] + tuple(s + b + e for s, (b, e) in zip(x.shape[2:], widths))
    xp = np.full(shape, value, x.dtype) if value else np.zeros(shape, x.dtype)
    xp[(slice(None),) * 2 + tuple(slice(b, b + s) for s, (b, _) in zip(x.shape[2:], widths))] = x
    return xp


def crop_spatial(xp: Array, padding: Ints, sizes: Ints) -> Array:
    """The ``sizes`` middle of padded ``xp``: the inverse of pad_spatial."""
    index = tuple(slice(b, b + s) for b, s in zip(padding, sizes))
    return np.ascontiguousarray(xp[(slice(None), slice(None)) + index])


def windows(xp: Array, kernel: Ints, stride: Ints, dilation: Ints, out: Ints) -> Array:
    """A view (N, C, *out, *kernel) of every window of the padded input (no copy)."""
    rank = len(kernel)
    spans = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    view = sliding_window_view(xp, spans, axis=tuple(range(2, 2 + rank)))
    index = (
        (slice(None),) * 2
        + tuple(slice(0, s * (o - 1) + 1, s) for s, o in zip(stride, out))
        + tuple(slice(None, None, d) for d in dilation)
    )
    return view[index]


def window_slices(
    kernel: Ints, stride: Ints, dilation: Ints, out: Ints
) -> Iterator[tuple[tuple[int, ...], tuple[Any, ...]]]:
    """For each kernel position (row-major), its offsets and the index of the (padded)
    input elements it meets in every window: a strided view of shape ``out``.
    Loops over the kernel window, never over elements."""
    for offsets in itertools.product(*(range(k) for k in kernel)):
        index = tuple(
            slice(i * d, i * d + s * (o - 1) + 1, s)
            for i, d, s, o in zip(offsets, dilation, stride, out)
        )
        yield offsets, (Ellipsis,) + index
