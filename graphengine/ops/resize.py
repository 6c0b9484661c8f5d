"""Resizing (ONNX Resize): ``resize`` and its adjoint ``resize_grad``.

Every mode ONNX defines (nearest, linear, cubic, with antialiasing, and the
coordinate transformation modes) is separable and linear: along each resized
axis, output j is a weighted sum of input elements.  So the kernel builds one
small matrix per axis (output size x input size, float64) from ONNX's formulas
and applies the matrices in turn; ``tf_crop_and_resize`` outputs that fall
outside the input take ``extrapolation_value`` instead (a zero row plus a
constant, so the op is affine).  The gradient applies the transposed matrices
(``resize_grad``), and the gradient of that is ``resize`` again: second and
higher orders come for free.

Values are computed in float64 and rounded to the input's dtype once, as onnx's
reference implementation does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import ALL_TYPES, FLOAT_TYPES
from ..shapes import Dim, TensorType, format_shape
from .registry import Array, Attr, F, Input, OpDef, register

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor

#: One resized axis: (axis, its (out, in) matrix, the mask of outputs outside the input).
_Axis = tuple[int, Array, "Array | None"]

MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _source_coordinates(
    mode: str, out_size: int, in_size: int, scale: float, roi: tuple[float, float] | None
) -> tuple[Array, Array | None]:
    """ONNX's map from output index to source coordinate, and which outputs fall
    outside the input (tf_crop_and_resize only)."""
    y = np.arange(out_size, dtype=np.float64)
    out_width = scale * in_size
    outside = None
    if mode == "align_corners":
        x = np.zeros(out_size) if out_width == 1 else y * (in_size - 1) / (out_width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if out_width == 1:
            x = np.full(out_size, (end - start) * (in_size - 1) / 2)
        else:
            x = y * (end - start) * (in_size - 1) / (out_width - 1)
        x = x + start * (in_size - 1)
        outside = (x < 0) | (x > in_size - 1)
    elif mode == "pytorch_half_pixel":
        x = np.full(out_size, -0.5) if out_width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    else:  # half_pixel_symmetric
        offset = in_size / 2 * (1 - out_size / out_width)
        x = offset + (y + 0.5) / scale - 0.5
    return x, outside


def _cubic(t: np.ndarray, a: float) -> np.ndarray:
    """The cubic convolution kernel (Keys) of coefficient a, at |t|."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _coefficients(
    ratio: np.ndarray,
    scale: float,
    *,
    mode: str,
    nearest_mode: str,
    cubic_coeff_a: float,
    antialias: bool,
) -> np.ndarray:
    """Weights (outputs x taps) of the taps around each source coordinate, whose
    fractional part is ``ratio`` in (0, 1] (1 at an integer, as ONNX's reference)."""
    r = ratio[:, None]
    if mode == "nearest":
        whole = ratio == 1.0
        if nearest_mode == "round_prefer_floor":
            right = ratio > 0.5
        elif nearest_mode == "round_prefer_ceil":
            right = ratio >= 0.5
        elif nearest_mode == "floor":
            right = np.zeros_like(whole)
        else:  # ceil
            right = np.ones_like(whole)
        right = right | whole
        return np.stack([~right, right], axis=1).astype(np.float64)
    if not antialias or scale >= 1.0:
        if mode == "linear":
            return np.concatenate([1 - r, r], axis=1)
        taps = np.array([-1.0, 0.0, 1.0, 2.0])
        return _cubic(taps[None, :] - r, cubic_coeff_a)
    # Antialiasing when downsampling: the kernel is stretched by 1 / scale.
    reach = 1 if mode == "linear" else 2
    start = int(math.floor(-reach / scale) + 1)
    taps = np.arange(start, 2 - start, dtype=np.float64)
    args = (taps[None, :] - r) * scale
    weights = np.clip(1 - np.abs(args), 0, 1) if mode == "linear" else _cubic(args, cubic_coeff_a)
    return weights / weights.sum(axis=1, keepdims=True)


def resize_matrix(
    in_size: int,
    out_size: int,
    scale: float,
    *,
    mode: str,
    coordinate_mode: str,
    nearest_mode: str = "round_prefer_floor",
    cubic_coeff_a: float = -0.75,
    exclude_outside: bool = False,
    antialias: bool = False,
    roi: tuple[float, float] | None = None,
) -> tuple[Array, Array | None]:
    """The (out_size, in_size) float64 matrix of one axis, and the bool mask of
    outputs that take the extrapolation value (or None)."""
    x, outside = _source_coordinates(coordinate_mode, out_size, in_size, scale, roi)
    floor = np.floor(x)
    ratio = np.where(x == floor, 1.0, x - floor)
    coeffs = _coefficients(
        ratio,
        scale,
        mode=mode,
        nearest_mode=nearest_mode,
        cubic_coeff_a=cubic_coeff_a,
        antialias=antialias,
    )
    n = coeffs.shape[1]
    # The n taps nearest to x, ties to the smaller index, as ONNX's reference
    # (which pads the input by its edge values: clamping the indices does that).
    pad = math.ceil(n / 2)
    padded = x + pad
    base = np.floor(padded)
    frac = padded - base
    if n % 2 == 0:
        offset = np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        offset = np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    taps = (base.astype(np.int64) + offset)[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        coeffs = np.where((taps < 0) | (taps >= in_size), 0.0, coeffs)
        total = coeffs.sum(axis=1, keepdims=True)
        coeffs = coeffs / np.where(total == 0, 1.0, total)
    matrix = np.zeros((out_size, in_size))
    rows = np.broadcast_to(np.arange(out_size)[:, None], taps.shape)
    np.add.at(matrix, (rows, np.clip(taps, 0, in_size - 1)), coeffs)
    if outside is not None:
        matrix[outside] = 0.0
        if not outside.any():
            outside = None
    return matrix, outside


def _apply(x: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """Multiply ``x`` along ``axis`` by ``matrix`` (contracting its columns)."""
    return np.moveaxis(np.tensordot(matrix, x, axes=(1, axis)), 0, axis)


_ATTRS = (
    Attr("sizes", "ints"),
    Attr("scales", "floats"),
    Attr("mode", "str", "nearest", choices=MODES),
    Attr("coordinate_transformation_mode", "str", "half_pixel", choices=COORDINATE_MODES),
    Attr("nearest_mode", "str", "round_prefer_floor", choices=NEAREST_MODES),
    Attr("cubic_coeff_a", "float", -0.75),
    Attr("exclude_outside", "bool", False),
    Attr("antialias", "bool", False),
    Attr("roi", "floats", None),
    Attr("extrapolation_value", "float", 0.0),
)


def _check_attrs(rank: int, attrs: dict[str, Any]) -> None:
    sizes, scales, roi = attrs["sizes"], attrs["scales"], attrs["roi"]
    if len(sizes) != rank or len(scales) != rank:
        raise ValueError(
            f"sizes {list(sizes)} and scales {list(scales)} need one entry per "
            f"axis of x (rank {rank})"
        )
    if not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be positive and finite, got {list(scales)}")
    if any(s < -1 or s == 0 for s in sizes):
        raise ValueError(
            f"sizes must be positive (or -1: floor(size * scale) at run time), got {list(sizes)}"
        )
    if roi is not None and len(roi) != 2 * rank:
        raise ValueError(
            f"roi needs 2 * rank = {2 * rank} values (starts, then ends), got {len(roi)}"
        )
    if roi is not None and not all(math.isfinite(r) for r in roi):
        raise ValueError(f"roi values must be finite, got {list(roi)}")
    if not math.isfinite(attrs["cubic_coeff_a"]):
        raise ValueError(f"cubic_coeff_a must be finite, got {attrs['cubic_coeff_a']}")
    if attrs["antialias"] and attrs["mode"] == "nearest":
        raise ValueError("antialias applies to the linear and cubic modes only")


def _check_matrix_sizes(in_shape: Sequence[Dim], out_shape: Sequence[Dim]) -> None:
    """Refuse an axis whose interpolation matrix (out_size, in_size) of float64
    passes the per-tensor budget (graphengine.limits), before it is built: a
    (1, 10**5) row resized to 2 * 10**5 needs a 160 GB matrix for an 800 kB
    result.  Checked again with the real sizes once symbolic dims are fed."""
    from ..limits import get_limits

    bound = get_limits().max_tensor_bytes
    for axis, (size, out) in enumerate(zip(in_shape, out_shape)):
        if isinstance(size, int) and isinstance(out, int) and size != out:
            nbytes = 8 * size * out
            if nbytes > bound:
                raise ValueError(
                    f"resizing axis {axis} from {size} to {out} uses a ({out}, {size}) "
                    f"float64 interpolation matrix of {nbytes:,} bytes, over the limit "
                    f"of {bound:,} bytes per tensor; resize in smaller pieces, or raise "
                    "the limit with ge.set_limits(max_tensor_bytes=...) if you mean it"
                )


def _output_size(size: int, target: int, scale: float) -> int:
    return target if target != -1 else int(math.floor(size * scale))


def _resized_axes(shape: tuple[int, ...], attrs: dict[str, Any]) -> list[_Axis]:
    """(axis, matrix, outside) for each axis that changes."""
    out: list[_Axis] = []
    rank = len(shape)
    roi = attrs["roi"]
    for axis, (size, target, scale) in enumerate(zip(shape, attrs["sizes"], attrs["scales"])):
        out_size = _output_size(size, target, scale)
        axis_roi = None if roi is None else (roi[axis], roi[axis + rank])
        identity = (
            out_size == size
            and math.isclose(scale, 1.0)
            and (
                axis_roi is None
                or (math.isclose(axis_roi[0], 0.0) and math.isclose(axis_roi[1], 1.0))
            )
        )
        if identity:
            continue
        matrix, outside = resize_matrix(
            size,
            out_size,
            scale,
            mode=attrs["mode"],
            coordinate_mode=attrs["coordinate_transformation_mode"],
            nearest_mode=attrs["nearest_mode"],
            cubic_coeff_a=attrs["cubic_coeff_a"],
            exclude_outside=attrs["exclude_outside"],
            antialias=attrs["antialias"],
            roi=axis_roi,
        )
        out.append((axis, matrix, outside))
    return out


@register
class Resize(OpDef):
    """Resize x (ONNX Resize): along each axis, to ``sizes[i]`` elements (-1:
    floor(size * scales[i]), computed at run time), mapping output index j to a
    source coordinate with ``coordinate_transformation_mode`` and ``scales[i]``,
    then interpolating there with ``mode`` (nearest, linear, cubic; ``antialias``
    widens linear and cubic kernels when downsampling).  ``roi`` (starts, then
    ends, as fractions) and ``extrapolation_value`` serve tf_crop_and_resize.

    Linear in x along each axis: y = A_k ... A_1 x (plus the extrapolation
    constant).  vjp: dx = A_1^T ... A_k^T dy (``resize_grad``).

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (1, 2))
    >>> y = ge.resize(x, sizes=(1, 4), scales=(1.0, 2.0), mode="linear")
    >>> ge.run(g, y, {"x": np.array([[0.0, 1.0]], np.float32)})
    array([[0.  , 0.25, 0.75, 1.  ]], dtype=float32)
    """

    name = "resize"
    inputs = (Input("x", FLOAT_TYPES),)
    attrs = _ATTRS

    def infer(self, x: TensorType, **attrs: Any) -> TensorType:
        _check_attrs(x.rank, attrs)
        shape: list[int | str | None] = []
        for size, target, scale in zip(x.shape, attrs["sizes"], attrs["scales"]):
            if target != -1:
                shape.append(target)
            elif isinstance(size, int):
                shape.append(_output_size(size, target, scale))
            else:
                shape.append(size if math.isclose(scale, 1.0) else None)
        _check_matrix_sizes(x.shape, shape)
        return x.with_shape(shape)

    def kernel(self, x: Array, **attrs: Any) -> Array:
        out_shape = [
            _output_size(n, t, c) for n, t, c in zip(x.shape, attrs["sizes"], attrs["scales"])
        ]
        _check_matrix_sizes(x.shape, out_shape)  # symbolic dims, now known
        out = x.astype(np.float64)
        for axis, matrix, outside in _resized_axes(x.shape, attrs):
            out = _apply(out, matrix, axis)
            if outside is not None:
                mask = outside.reshape((-1,) + (1,) * (x.ndim - axis - 1))
                out = np.where(mask, attrs["extrapolation_value"], out)
        return out.astype(x.dtype, copy=False)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.resize_grad(dy, node.inputs[0], **node.attrs)]


@register
class ResizeGrad(OpDef):
    """The adjoint of ``resize``: dy (shaped like resize's output) multiplied by the
    transposed per-axis matrices, giving a tensor shaped like ``like`` (resize's
    input).  Its own vjp is ``resize`` with no extrapolation constant."""

    name = "resize_grad"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("like", ALL_TYPES, differentiable=False))
    attrs = _ATTRS

    def infer(self, dy: TensorType, like: TensorType, **attrs: Any) -> TensorType:
        _check_attrs(like.rank, attrs)
        if dy.rank != like.rank:
            raise ValueError(
                f"dy of shape {format_shape(dy.shape)} does not fit an input of "
                f"shape {format_shape(like.shape)}"
            )
        return TensorType(dy.dtype, like.shape)

    def kernel(self, dy: Array, like: Array, **attrs: Any) -> Array:
        out = dy.astype(np.float64)
        for axis, matrix, _ in reversed(_resized_axes(like.shape, attrs)):
            out = _apply(out, matrix.T, axis)
        return out.astype(dy.dtype, copy=False)

    def vjp(self, node: NodeView, ddy: Tensor) -> list[Tensor | None]:
        attrs = dict(node.attrs, extrapolation_value=0.0)
        return [F.resize(ddy, **attrs), None]


__all__ = ["Resize", "ResizeGrad", "resize_matrix"]
