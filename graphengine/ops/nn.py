"""Neural-network ops: softmax, log_softmax and dropout.

Convolution, pooling and batch normalization have modules of their own
(:mod:`.conv`, :mod:`.pool`, :mod:`.norm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import ARITH_FLOAT_TYPES, FLOAT_TYPES
from ..shapes import TensorType, normalize_axis
from .registry import Array, Attr, F, Input, OpDef, frontend, get_op, public_result, register

if TYPE_CHECKING:
    from ..executor import RunContext
    from ..gradients import NodeView
    from ..graph import Tensor

# -- softmax ----------------------------------------------------------------------


def log_softmax_array(x: np.ndarray, axis: int) -> np.ndarray:
    """log(softmax(x)) along ``axis``; subtracting the max first keeps exp from overflowing."""
    z = x - np.max(x, axis=axis, keepdims=True)
    z -= np.log(np.sum(np.exp(z), axis=axis, keepdims=True))
    return z


class _SoftmaxFamily(OpDef):
    inputs = (Input("x", ARITH_FLOAT_TYPES),)
    attrs = (Attr("axis", "int", -1),)

    def infer(self, x: TensorType, *, axis: int) -> TensorType:
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

    def kernel(self, x: Array, *, axis: int) -> Array:
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        e /= np.sum(e, axis=axis, keepdims=True)
        return e

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
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

    def kernel(self, x: Array, *, axis: int) -> Array:
        return log_softmax_array(x, axis)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        y = node.outputs[0]
        return [dy - F.exp(y) * F.sum(dy, axis=node.attrs["axis"], keepdims=True)]


# -- dropout ------------------------------------------------------------------------------


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
    extra_outputs_flag = "return_mask"
    view_map = {0: 0}  # an inference run returns x itself
    random = True
    attrs = (Attr("rate", "float", 0.5), Attr("seed", "int", 0))
    uses_context = True

    def infer(self, x: TensorType, *, rate: float, seed: int) -> Sequence[TensorType]:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"rate must be in [0, 1), got {rate}")
        return x, x

    def kernel(self, x: Array, *, rate: float, seed: int, ctx: RunContext) -> Sequence[Array]:
        if not ctx.training or rate == 0.0:
            return x, np.ones_like(x)
        keep = ctx.rng(seed).random(x.shape) >= rate
        mask = np.where(keep, x.dtype.type(1.0 / (1.0 - rate)), x.dtype.type(0))
        return x * mask, mask

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        dy, _ = dys  # the mask does not depend on x: its gradient goes nowhere
        return [None if dy is None else dy * node.outputs[1]]


@frontend("dropout")
def dropout(
    x: Tensor,
    rate: float = 0.5,
    seed: int | None = None,
    *,
    return_mask: bool = False,
    name: str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Inverted dropout of ``x`` (see the op's docstring); returns ``y``, or
    ``(y, mask)`` with ``return_mask=True``.

    Without ``seed``, the node takes the number of dropout nodes already in the
    graph, so two dropout layers draw different masks and building the graph
    again gives the same seeds.  Only training runs (``ge.run(..., training=True)``)
    drop anything.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (2, 3))
    >>> y = ge.dropout(x, 0.5)
    >>> ge.run(g, y, {"x": np.ones((2, 3), np.float32)}).tolist()   # inference: identity
    [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    >>> y, mask = ge.dropout(x, 0.5, return_mask=True)
    """
    if seed is None:
        from .api import graph_of

        seed = sum(node.op == "dropout" for node in graph_of(x, "dropout").nodes)
    outputs = F.call("dropout", [x], {"rate": rate, "seed": seed}, name)
    return public_result(get_op("dropout"), outputs, return_mask)


__all__ = ["Dropout", "LogSoftmax", "Softmax", "dropout", "log_softmax_array"]
