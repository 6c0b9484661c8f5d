"""Window geometry shared by convolution (:mod:`.conv`) and pooling (:mod:`.pool`).

Images are NCHW (batch, channels, height, width).  Window attributes are stored
in one canonical form, which is ONNX's:

* ``stride`` and ``dilation``: two ints (height, width);
* ``padding``: four ints (top, left, bottom, right), ONNX's ``pads`` order.

The front-ends ``ge.conv2d``, ``ge.max_pool2d`` and ``ge.avg_pool2d`` also take
an int, a pair, or ``"valid"`` / ``"same"`` (ONNX's ``SAME_UPPER``: the odd
extra row or column of padding goes at the bottom or right), and turn them into
that form when the op is built (:func:`as_pair`, :func:`resolve_padding`).
Output sizes round down, as
``floor((size + pads - dilation * (k - 1) - 1) / stride) + 1``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..shapes import Dim, TensorType, format_shape

# -- front-end arguments to canonical attributes --------------------------------------------

def as_pair(value: Any) -> Any:
    """An int means the same value for height and width; anything else is passed on
    unchanged (shape inference checks it and names the node)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    return value


def _as_pads(value: Any) -> Any:
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


def resolve_padding(op: str, padding: Any, x: Any, kernel: Sequence[Dim], stride, dilation):
    """A front-end's ``padding`` (an int, a pair, ONNX pads, ``"valid"`` or ``"same"``)
    as ONNX pads (top, left, bottom, right)."""
    if not isinstance(padding, str):
        return _as_pads(padding)
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


# -- shape inference ----------------------------------------------------------------------

def check_window(stride, padding, dilation=(1, 1)) -> None:
    """Refuse window attributes outside their canonical form."""
    if len(stride) != 2 or min(stride) < 1:
        raise ValueError(f"stride must be 2 positive ints (height, width), got {stride}")
    if len(dilation) != 2 or min(dilation) < 1:
        raise ValueError(f"dilation must be 2 positive ints (height, width), got {dilation}")
    if len(padding) != 4 or min(padding) < 0:
        raise ValueError("padding must be 4 non-negative ints (top, left, bottom, right), "
                         f"got {padding}")


def check_rank4(t: TensorType, what: str) -> None:
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


def output_hw(x_shape, kernel, stride, padding, dilation=(1, 1)) -> tuple[Dim, Dim]:
    """The output (height, width) of windows over an NCHW input of shape ``x_shape``."""
    return (_out_size(x_shape[2], kernel[0], stride[0], dilation[0], padding[0] + padding[2],
                      "height"),
            _out_size(x_shape[3], kernel[1], stride[1], dilation[1], padding[1] + padding[3],
                      "width"))


def check_grad_shape(dy: TensorType, expected: TensorType) -> None:
    """Refuse an output gradient whose type differs from the forward output's."""
    if dy.rank != 4 or any(isinstance(a, int) and isinstance(b, int) and a != b
                           for a, b in zip(dy.shape, expected.shape)):
        raise ValueError(f"the output gradient has shape {format_shape(dy.shape)}, but the "
                         f"forward output has shape {format_shape(expected.shape)}")
    if dy.dtype != expected.dtype:
        raise ValueError(f"the output gradient is {dy.dtype.name}, expected "
                         f"{expected.dtype.name}")


# -- kernels ------------------------------------------------------------------------------

def pad_hw(x: np.ndarray, padding, value: float = 0.0) -> np.ndarray:
    """NCHW ``x`` padded with ``value`` by ONNX pads (top, left, bottom, right)."""
    top, left, bottom, right = padding
    if not (top or left or bottom or right):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def crop_hw(xp: np.ndarray, padding, hw) -> np.ndarray:
    """The (height, width) ``hw`` middle of padded ``xp``: the inverse of pad_hw."""
    top, left = padding[0], padding[1]
    return np.ascontiguousarray(xp[:, :, top:top + hw[0], left:left + hw[1]])


def window_slices(kernel, stride, dilation, out_hw) -> Iterator[tuple[int, tuple]]:
    """For each of the kh*kw kernel positions (row-major), the index of the (padded)
    input elements it meets in every window: a strided view of shape out_hw.  Loops
    over the kernel window, never over elements."""
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    for k, (i, j) in enumerate(itertools.product(range(kh), range(kw))):
        rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
        cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
        yield k, (Ellipsis, rows, cols)
