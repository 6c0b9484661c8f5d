"""Linear algebra: ``matmul`` (also the ``@`` operator).

matmul follows numpy.matmul: a 1-D first operand is a row vector and a 1-D
second operand a column vector, and the dimension added for them is removed
from the result; operands of rank above 2 are stacks of matrices whose batch
dimensions broadcast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..dtypes import NUMERIC_TYPES
from ..shapes import Dim, TensorType, broadcast_shapes, format_shape
from .registry import F, Input, OpDef, register

_MATMUL_TYPES = NUMERIC_TYPES - {"bfloat16"}

if TYPE_CHECKING:
    from ..gradients import NodeView
    from ..graph import Tensor


def _inner_dims_differ(k_a: Dim, k_b: Dim) -> bool:
    # A symbolic inner dimension is checked at run time, by the kernel.
    return isinstance(k_a, int) and isinstance(k_b, int) and k_a != k_b


def _swap_last_axes(t: Tensor) -> Tensor:
    """``t`` with its last two axes swapped (a batch of transposed matrices)."""
    axes = list(range(t.ndim))
    axes[-2], axes[-1] = axes[-1], axes[-2]
    return F.transpose(t, axes=axes)


@register
class Matmul(OpDef):
    """Matrix product as numpy.matmul: ``a @ b``.

    ``a`` of shape (..., M, K) times ``b`` of shape (..., K, N) gives (..., M, N),
    the batch dimensions ``...`` broadcasting as numpy does.  A 1-D ``a`` of shape
    (K,) is taken as (1, K) and a 1-D ``b`` of shape (K,) as (K, 1); the added
    dimension is then dropped, so vector @ vector is a scalar.  Scalars are
    refused (as numpy does): use ge.multiply.

    d/da = dy @ b^T, d/db = a^T @ dy, summed over broadcast batch dimensions.

    >>> import numpy as np, graphengine as ge
    >>> g = ge.Graph()
    >>> x = g.placeholder("x", (None, 3))
    >>> w = g.parameter("w", np.ones((3, 2), np.float32))
    >>> ge.run(g, x @ w, {"x": np.ones((4, 3), np.float32)}).shape
    (4, 2)
    """

    name = "matmul"
    # Not bfloat16: numpy's matmul of two bfloat16 arrays returns float32, so an
    # ONNX MatMul of bfloat16 is imported as cast, matmul in float32, cast back.
    inputs = (Input("a", _MATMUL_TYPES), Input("b", _MATMUL_TYPES))
    # np.matmul itself, with no wrapper: the 2-D case is one BLAS call, and
    # transposed operands (as in the gradient) are passed to BLAS without a copy.
    kernel = staticmethod(np.matmul)

    def infer(self, a: TensorType, b: TensorType) -> TensorType:
        if a.rank == 0 or b.rank == 0:
            raise ValueError(
                f"matmul does not take scalars (shapes {format_shape(a.shape)} and "
                f"{format_shape(b.shape)}); use ge.multiply to scale a tensor"
            )
        if a.dtype != b.dtype:
            raise ValueError(
                f"operands have different dtypes ({a.dtype.name}, {b.dtype.name}); "
                "cast one with ge.cast so both match"
            )
        a_shape = a.shape if a.rank > 1 else (1,) + a.shape
        b_shape = b.shape if b.rank > 1 else b.shape + (1,)
        if _inner_dims_differ(a_shape[-1], b_shape[-2]):
            name_a, name_b = a.named("a"), b.named("b")
            raise ValueError(
                f"cannot multiply {name_a} of shape {format_shape(a.shape)} by {name_b} of shape "
                f"{format_shape(b.shape)}: inner dimensions {a_shape[-1]} and {b_shape[-2]} "
                f"differ. Check the shape of {name_b}, or transpose it with ge.transpose"
            )
        try:
            batch = broadcast_shapes(a_shape[:-2], b_shape[:-2])
        except ValueError:
            raise ValueError(
                f"batch dimensions {format_shape(a_shape[:-2])} of "
                f"{a.named('a')} and {format_shape(b_shape[:-2])} of "
                f"{b.named('b')} do not broadcast"
            ) from None
        rows = (a_shape[-2],) if a.rank > 1 else ()
        cols = (b_shape[-1],) if b.rank > 1 else ()
        return TensorType(a.dtype, batch + rows + cols)

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        a, b = node.inputs
        if a.ndim == 1 and b.ndim == 1:  # a scalar result: d/da = dy b, d/db = dy a
            return [dy * b if node.wants(0) else None, dy * a if node.wants(1) else None]
        # Put back the dimensions that numpy's 1-D promotion removed, so that dy
        # is (..., M, N), a is (..., M, K) and b is (..., K, N).
        if a.ndim == 1:
            dy, a = F.expand_dims(dy, axis=-2), F.expand_dims(a, axis=0)
        if b.ndim == 1:
            dy, b = F.expand_dims(dy, axis=-1), F.expand_dims(b, axis=-1)
        da = db = None
        if node.wants(0):
            da = dy @ _swap_last_axes(b)
            if node.inputs[0].ndim == 1:
                da = F.squeeze(da, axis=-2)
        if node.wants(1):
            db = _swap_last_axes(a) @ dy
            if node.inputs[1].ndim == 1:
                db = F.squeeze(db, axis=-1)
        # Batch dimensions that broadcasting added or stretched are summed away by
        # the gradient pass (sum_like).
        return [da, db]
