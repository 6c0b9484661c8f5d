"""Layer and instance normalization: ``layer_norm`` (ONNX LayerNormalization) and
``instance_norm`` (ONNX InstanceNormalization).

Both normalize x over some axes, xhat = (x - mean) / sqrt(var + epsilon) with
the biased variance, then scale and shift.  float16 inputs are normalized in
float32 (ONNX's ``stash_type=1``, and what PyTorch does) and rounded once.

Their gradient rules share one formula.  With r = 1 / sqrt(var + epsilon), M the
number of elements normalized together and g = dy * scale:

    dx = r * (g - mean(g) - xhat * mean(g * xhat))

(means over the normalized axes), written with our ops, so it differentiates
again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import FLOAT_TYPES
from ..shapes import TensorType, broadcast_shapes, format_shape
from .registry import Array, Attr, F, Input, OpDef, register

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _normalize(x: Array, axes: tuple[int, ...], epsilon: float) -> tuple[Array, Array, Array]:
    """(xhat, mean, inv_std) in the compute dtype; mean and inv_std keep the axes."""
    xs = x.astype(_compute_dtype(x.dtype), copy=False)
    mean = np.mean(xs, axis=axes, keepdims=True, dtype=xs.dtype)
    centred = xs - mean
    var = np.mean(np.square(centred), axis=axes, keepdims=True, dtype=xs.dtype)
    inv_std = 1 / np.sqrt(var + xs.dtype.type(epsilon))
    return centred * inv_std, mean, inv_std


def _normalized_input_grad(
    g: Tensor, xhat: Tensor, inv_std: Tensor, axes: tuple[int, ...]
) -> Tensor:
    """dx for xhat = (x - mean) * inv_std given g = dL/dxhat (see the module doc)."""
    mean_g = F.mean(g, axis=axes, keepdims=True)
    mean_gx = F.mean(g * xhat, axis=axes, keepdims=True)
    return inv_std * (g - mean_g - xhat * mean_gx)


def _check_float_like(name: str, t: TensorType, x: TensorType) -> None:
    if t.dtype != x.dtype:
        raise ValueError(
            f"{name} is {t.dtype.name} but x is {x.dtype.name}; cast one with ge.cast so both match"
        )


@register
class LayerNorm(OpDef):
    """Layer normalization over the axes from ``axis`` to the last (ONNX
    LayerNormalization):

        y = (x - mean) / sqrt(var + epsilon) * scale + bias

    ``scale`` and ``bias`` broadcast against ``x.shape[axis:]``.  Outputs y, the
    mean and inv_std = 1 / sqrt(var + epsilon), both with the normalized axes kept
    as size 1 (ONNX's Mean and InvStdDev); ``ge.layer_norm`` returns y, and
    ``(y, mean, inv_std)`` with ``return_stats=True``.

    vjp: dscale = dy * xhat and dbias = dy (summed back to their shapes);
    dx = r (g - mean(g) - xhat mean(g xhat)) with g = dy * scale, plus
    dmean / M and -dinv_std * r**2 * xhat / M for gradients reaching the mean and
    inv_std outputs.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 2))
    >>> y = ge.layer_norm(x, g.constant(np.ones(2, np.float32)),
    ...                         g.constant(np.zeros(2, np.float32)))
    >>> ge.run(g, y, {"x": np.array([[1.0, 3.0]], np.float32)}).round(3)
    array([[-1.,  1.]], dtype=float32)
    """

    name = "layer_norm"
    inputs = (Input("x", FLOAT_TYPES), Input("scale", FLOAT_TYPES), Input("bias", FLOAT_TYPES))
    outputs = ("y", "mean", "inv_std")
    extra_outputs_flag = "return_stats"
    attrs = (Attr("axis", "int", -1), Attr("epsilon", "float", 1e-5))

    @staticmethod
    def axes(rank: int, axis: int) -> tuple[int, ...]:
        return tuple(range(axis % rank, rank))

    def infer(
        self, x: TensorType, scale: TensorType, bias: TensorType, *, axis: int, epsilon: float
    ) -> Sequence[TensorType]:
        if not -x.rank <= axis < x.rank:
            raise ValueError(f"axis {axis} is out of range for x of shape {format_shape(x.shape)}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        normalized = x.shape[axis % x.rank :]
        for name, t in (("scale", scale), ("bias", bias)):
            _check_float_like(name, t, x)
            try:
                fits = t.rank <= len(normalized) and broadcast_shapes(t.shape, normalized) == tuple(
                    normalized
                )
            except ValueError:
                fits = False
            if not fits:
                raise ValueError(
                    f"{name} of shape {format_shape(t.shape)} does not broadcast "
                    f"to the normalized axes {format_shape(normalized)} of x"
                )
        stats = TensorType(x.dtype, x.shape[: axis % x.rank] + (1,) * len(normalized))
        return x, stats, stats

    def kernel(
        self, x: Array, scale: Array, bias: Array, *, axis: int, epsilon: float
    ) -> Sequence[Array]:
        xhat, mean, inv_std = _normalize(x, self.axes(x.ndim, axis), epsilon)
        y = xhat * scale.astype(xhat.dtype, copy=False) + bias.astype(xhat.dtype, copy=False)
        dtype = x.dtype
        return (
            y.astype(dtype, copy=False),
            mean.astype(dtype, copy=False),
            inv_std.astype(dtype, copy=False),
        )

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        dy, dmean, dinv = dys
        x, scale, _ = node.inputs
        _, mean, inv_std = node.outputs
        axes = self.axes(x.ndim, node.attrs["axis"])
        xhat = (x - mean) * inv_std
        dx = dscale = dbias = None
        if dy is not None:
            dscale = dy * xhat if node.wants(1) else None
            dbias = dy if node.wants(2) else None
        if node.wants(0):
            terms = []
            if dy is not None:
                terms.append(_normalized_input_grad(dy * scale, xhat, inv_std, axes))
            # broadcast_like(..., mean=True) divides by M, the copies it makes.
            if dmean is not None:
                terms.append(F.broadcast_like(dmean, x, mean=True))
            if dinv is not None:
                terms.append(
                    F.negative(F.broadcast_like(dinv * inv_std * inv_std, x, mean=True) * xhat)
                )
            dx = terms[0] if len(terms) == 1 else F.add_n(terms) if terms else None
        return [dx, dscale, dbias]


@register
class InstanceNorm(OpDef):
    """Instance normalization (ONNX InstanceNormalization): each channel of each
    sample of an NC, NCL, NCHW ... input normalized over its spatial axes,

        y = (x - mean) / sqrt(var + epsilon) * scale[c] + bias[c]

    with one scale and bias per channel (axis 1).

    vjp: dscale = sum(dy * xhat), dbias = sum(dy) over every axis but 1;
    dx = r (g - mean(g) - xhat mean(g xhat)) with g = dy * scale[c], means over
    the spatial axes.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 1, 2))
    >>> y = ge.instance_norm(x, g.constant(np.ones(1, np.float32)),
    ...                      g.constant(np.zeros(1, np.float32)))
    >>> ge.run(g, y, {"x": np.array([[[1.0, 3.0]]], np.float32)}).round(3)
    array([[[-1.,  1.]]], dtype=float32)
    """

    name = "instance_norm"
    inputs = (Input("x", FLOAT_TYPES), Input("scale", FLOAT_TYPES), Input("bias", FLOAT_TYPES))
    attrs = (Attr("epsilon", "float", 1e-5),)

    def infer(
        self, x: TensorType, scale: TensorType, bias: TensorType, *, epsilon: float
    ) -> TensorType:
        if x.rank < 3:
            raise ValueError(
                f"x must be N, C and at least one spatial axis (rank >= 3), got "
                f"shape {format_shape(x.shape)}"
            )
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        channels = x.shape[1]
        for name, t in (("scale", scale), ("bias", bias)):
            _check_float_like(name, t, x)
            if t.rank != 1 or (
                isinstance(t.shape[0], int) and isinstance(channels, int) and t.shape[0] != channels
            ):
                raise ValueError(
                    f"{name} must have shape ({channels},), one value per channel "
                    f"(axis 1 of x {format_shape(x.shape)}), got "
                    f"{format_shape(t.shape)}"
                )
        return x

    def kernel(self, x: Array, scale: Array, bias: Array, *, epsilon: float) -> Array:
        xhat, _, _ = _normalize(x, tuple(range(2, x.ndim)), epsilon)
        shape = (-1,) + (1,) * (x.ndim - 2)
        y = xhat * scale.astype(xhat.dtype, copy=False).reshape(shape) + bias.astype(
            xhat.dtype, copy=False
        ).reshape(shape)
        return y.astype(x.dtype, copy=False)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x, scale, _ = node.inputs
        axes = tuple(range(2, x.ndim))
        channel_axes = (0,) + axes
        mean = F.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        inv_std = 1.0 / F.sqrt(
            F.mean(centred * centred, axis=axes, keepdims=True) + node.attrs["epsilon"]
        )
        xhat = centred * inv_std
        per_channel = F.expand_dims(scale, axis=tuple(range(1, x.ndim - 1)))
        dx = (
            _normalized_input_grad(dy * per_channel, xhat, inv_std, axes) if node.wants(0) else None
        )
        dscale = F.sum(dy * xhat, axis=channel_axes) if node.wants(1) else None
        dbias = F.sum(dy, axis=channel_axes) if node.wants(2) else None
        return [dx, dscale, dbias]


__all__ = ["InstanceNorm", "LayerNorm"]
