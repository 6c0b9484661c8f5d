"""Batch normalization: ``batch_norm``, and ``training_flag``, which lets its
gradient rule, built once, serve both training and inference runs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from ..dtypes import ALL_TYPES, FLOAT_TYPES
from ..shapes import TensorType, format_shape
from .registry import Array, Attr, F, Input, OpDef, StateUpdate, register

if TYPE_CHECKING:
    from ..executor import RunContext
    from ..gradients import NodeView
    from ..graph import Tensor


@register
class TrainingFlag(OpDef):
    """1 in a training run and 0 in an inference run, as a scalar of ``like``'s
    dtype.  Lets a gradient rule built once serve both modes (batch_norm's)."""

    name = "training_flag"
    internal = True
    inputs = (Input("like", ALL_TYPES, differentiable=False),)
    uses_context = True
    vjp = None

    def infer(self, like: TensorType) -> TensorType:
        return TensorType(like.dtype, ())

    def kernel(self, like: Array, *, ctx: RunContext) -> Array:
        return np.asarray(1 if ctx.training else 0, like.dtype)


def _stat_axes(rank: int) -> tuple[int, ...]:
    """The axes batch statistics are taken over: every axis but 1 (channels)."""
    return (0,) + tuple(range(2, rank))


def _channel_shape(rank: int) -> tuple[int, ...]:
    """The shape that broadcasts a per-channel vector over an input of ``rank``."""
    return (1, -1) + (1,) * (rank - 2)


def _scale_shift(centred: Array, var: Array, gamma: Array, beta: Array, epsilon: float) -> Array:
    """``gamma * centred / sqrt(var + epsilon) + beta``, per channel, in place in
    ``centred`` (which the caller owns)."""
    shape = _channel_shape(centred.ndim)
    scale = gamma / np.sqrt(var + centred.dtype.type(epsilon))
    centred *= scale.reshape(shape)
    centred += beta.reshape(shape)
    return centred


class _NormGrad(NamedTuple):
    """What batch_norm's and sync_batch_norm's gradient rules share: the
    normalized input and, when dy reaches the node, ``(xhat, dbeta, dgamma)``."""

    axes: tuple[int, ...]
    rstd: Tensor
    centred: Tensor
    dy_sums: tuple[Tensor, Tensor, Tensor] | None

    def param_grads(self, node: NodeView) -> tuple[Tensor | None, Tensor | None]:
        """dgamma and dbeta, each None when not wanted or not reached."""
        if self.dy_sums is None:
            return None, None
        _, dbeta, dgamma = self.dy_sums
        return (dgamma if node.wants(1) else None), (dbeta if node.wants(2) else None)


def _norm_grad(node: NodeView, dy: Tensor | None, mean: Tensor, var: Tensor) -> _NormGrad:
    """The common set-up of the batch-norm gradient rules: ``rstd = 1/sqrt(var +
    eps)``, ``centred = x - mean``, ``xhat = centred * rstd``, ``dbeta = sum(dy)``
    and ``dgamma = sum(dy * xhat)`` over the statistics axes."""
    x = node.inputs[0]
    axes = _stat_axes(x.ndim)
    rstd = 1.0 / F.sqrt(var + node.attrs["epsilon"])
    centred = x - F.broadcast_like(mean, x, axes=axes)
    if dy is None:
        return _NormGrad(axes, rstd, centred, None)
    xhat = centred * F.broadcast_like(rstd, x, axes=axes)
    return _NormGrad(axes, rstd, centred, (xhat, F.sum(dy, axis=axes), F.sum(dy * xhat, axis=axes)))


def _sum_terms(terms: list[Tensor]) -> Tensor | None:
    """The sum of the gradient contributions (None when there are none)."""
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else F.add_n(terms)


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
    use it.  ``ge.batch_norm`` returns y, and ``(y, mean, var)`` with
    ``return_stats=True``.

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
    >>> y, mean, var = ge.batch_norm(x, ones, zeros, zeros, ones, return_stats=True)
    >>> batch = {"x": np.array([[1.0, 2.0], [3.0, 2.0]], np.float32)}
    >>> ge.run(g, [y, mean], batch, training=True)[mean.name]
    array([2., 2.], dtype=float32)
    """

    name = "batch_norm"
    inputs = (
        Input("x", FLOAT_TYPES),
        Input("gamma", FLOAT_TYPES),
        Input("beta", FLOAT_TYPES),
        Input("running_mean", FLOAT_TYPES, differentiable=False),
        Input("running_var", FLOAT_TYPES, differentiable=False),
    )
    outputs = ("y", "mean", "var")
    extra_outputs_flag = "return_stats"
    attrs = (Attr("epsilon", "float", 1e-5), Attr("momentum", "float", 0.9))
    uses_context = True
    state_updates = (
        StateUpdate("running_mean", "mean", "momentum"),
        StateUpdate("running_var", "var", "momentum"),
    )

    def infer(
        self,
        x: TensorType,
        gamma: TensorType,
        beta: TensorType,
        running_mean: TensorType,
        running_var: TensorType,
        *,
        epsilon: float,
        momentum: float,
    ) -> Sequence[TensorType]:
        if x.rank < 2:
            raise ValueError(
                f"x must have a channel axis 1 (rank >= 2), got shape {format_shape(x.shape)}"
            )
        if not epsilon > 0 or epsilon == float("inf"):  # NaN compares false
            raise ValueError(f"epsilon must be a finite number > 0, got {epsilon}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        channels = x.shape[1]
        for name, t in [
            ("gamma", gamma),
            ("beta", beta),
            ("running_mean", running_mean),
            ("running_var", running_var),
        ]:
            if t.dtype != x.dtype:
                raise ValueError(f"{name} is {t.dtype.name} but x is {x.dtype.name}")
            if t.rank != 1 or (
                isinstance(t.shape[0], int) and isinstance(channels, int) and t.shape[0] != channels
            ):
                raise ValueError(
                    f"{name} must have shape ({channels},), one value per channel "
                    f"(axis 1 of x {format_shape(x.shape)}), got "
                    f"{format_shape(t.shape)}"
                )
        stats = TensorType(x.dtype, (channels,))
        return x, stats, stats

    def kernel(
        self,
        x: Array,
        gamma: Array,
        beta: Array,
        running_mean: Array,
        running_var: Array,
        *,
        epsilon: float,
        momentum: float,
        ctx: RunContext,
    ) -> Sequence[Array]:
        axes = _stat_axes(x.ndim)
        shape = _channel_shape(x.ndim)
        if ctx.training:
            mean = np.mean(x, axis=axes, dtype=x.dtype)
            centred = x - mean.reshape(shape)
            var = np.mean(np.square(centred), axis=axes, dtype=x.dtype)
        else:
            # Copies, so a trainer updating the running statistics in place cannot
            # change an output already fetched.
            mean, var = running_mean.copy(), running_var.copy()
            centred = x - mean.reshape(shape)
        return _scale_shift(centred, var, gamma, beta, epsilon), mean, var

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        dy, dmean, dvar = dys
        x, gamma = node.inputs[0], node.inputs[1]
        _, mean, var = node.outputs
        g = _norm_grad(node, dy, mean, var)

        def per_element(v: Tensor, mean: bool = False) -> Tensor:
            """A per-channel value broadcast over x (divided by M with mean=True)."""
            return F.broadcast_like(v, x, axes=g.axes, mean=mean)

        dx = None
        if node.wants(0):
            training = F.training_flag(x)
            terms = []
            if dy is not None and g.dy_sums is not None:
                xhat, dbeta, dgamma = g.dy_sums
                through_stats = per_element(dbeta, mean=True) + xhat * per_element(
                    dgamma, mean=True
                )
                terms.append(per_element(gamma * g.rstd) * (dy - through_stats * training))
            if dmean is not None:
                terms.append(per_element(dmean, mean=True) * training)
            if dvar is not None:
                terms.append(g.centred * per_element(dvar, mean=True) * (training * 2.0))
            dx = _sum_terms(terms)
        return [dx, *g.param_grads(node), None, None]


__all__ = ["BatchNorm"]
