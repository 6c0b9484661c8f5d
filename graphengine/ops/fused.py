"""Fused ops: what the fusion pass (:mod:`graphengine.passes.fuse`) builds.

Each is an ordinary registry op (schema, shape rule, numpy kernel, gradient rule),
so an optimized graph saves, loads, draws, runs and differentiates like any
other.  They are internal: users write ``ge.relu(x @ w + b)`` and the pass makes
the ``dense`` node.

* ``dense``: matmul + bias + activation in one kernel (the activation in place);
* ``relu_grad``: relu's backward, ``where(y > 0, dy, 0)``;
* ``sum_rows``: the sum over the rows of a 2-D array, as a BLAS product with
  ones (a dense layer's bias gradient);
* ``matmul_transposed``: a matmul reading a transposed operand in place (the
  transposes of a dense layer's gradients);
* ``softmax_cross_entropy_grad``: softmax cross-entropy's backward with integer
  labels, ``(exp(log_prob) - one_hot(labels)) * g``;
* ``batch_norm_grad``: batch normalization's backward, the three gradients in one
  kernel;
* ``elementwise_chain``: a chain of unary elementwise ops in one step.

The gradient rules of the last three rebuild their formula from primitive ops
and differentiate it (:func:`_vjp_by_expansion`): these rules only run when an
optimized gradient graph is differentiated again (second order), so one rule
that follows the primitives exactly beats a hand-derived one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import FLOAT_TYPES, INDEX_TYPES
from ..shapes import Dim, TensorType, format_shape, normalize_axis
from .loss import RowsScratch, _in_range, _rows_case
from .norm import _stat_axes, _sum_terms
from .registry import REGISTRY, Array, Attr, F, Input, InputInfo, OpDef, OutKernel, register

if TYPE_CHECKING:
    from ..executor import RunContext
    from ..gradients import NodeView
    from ..graph import Graph, Node, Tensor

#: The most elements ``sum_rows`` sums with BLAS: OpenBLAS runs larger products
#: on several threads, which wait for each other on a busy machine (a (1024, 512)
#: sum took 0.8 ms instead of 0.09 with the other core loaded); numpy's
#: single-threaded reduction is at most two times slower there.
SUM_ROWS_BLAS_MAX = 1 << 18

#: Activations ``dense`` applies, each with its derivative written from the output y.
ACTIVATIONS = ("none", "relu", "tanh", "sigmoid")

#: Unary ops an ``elementwise_chain`` may hold: one float input, no attributes, the
#: input's type out, a gradient rule.
CHAINABLE = (
    "negative",
    "square",
    "abs",
    "exp",
    "log",
    "sqrt",
    "sin",
    "cos",
    "tanh",
    "sigmoid",
    "relu",
    "softplus",
)


def _same_dims(a: Sequence[Dim], b: Sequence[Dim]) -> bool:
    return len(a) == len(b) and all(
        x == y or not isinstance(x, int) or not isinstance(y, int) for x, y in zip(a, b)
    )


# -- forward ------------------------------------------------------------------------


@register
class Dense(OpDef):
    """activation(x @ w + b) for x (N, K), w (K, M), b (M,): one matmul, then the
    bias and the activation applied in place.  ``activation`` is none, relu, tanh
    or sigmoid.  vjp: with dz = dy * activation'(y) (from the output y: relu_grad,
    1 - y**2, y (1 - y)), dx = dz @ w.T, dw = x.T @ dz, db = sum(dz, axis 0).
    """

    name = "dense"
    internal = True
    inputs = (Input("x", FLOAT_TYPES), Input("w", FLOAT_TYPES), Input("b", FLOAT_TYPES))
    attrs = (Attr("activation", "str", "none", choices=ACTIVATIONS),)

    def infer(self, x: TensorType, w: TensorType, b: TensorType, *, activation: str) -> TensorType:
        if x.dtype != w.dtype or b.dtype != x.dtype:
            raise ValueError(
                f"x, w and b must have one dtype, got {x.dtype.name}, "
                f"{w.dtype.name} and {b.dtype.name}"
            )
        if x.rank != 2 or w.rank != 2 or b.rank != 1:
            raise ValueError(
                f"expected x (N, K), w (K, M) and b (M,), got "
                f"{format_shape(x.shape)}, {format_shape(w.shape)} and "
                f"{format_shape(b.shape)}"
            )
        if not _same_dims(x.shape[1:], w.shape[:1]) or not _same_dims(w.shape[1:], b.shape):
            raise ValueError(
                f"shapes x {format_shape(x.shape)}, w {format_shape(w.shape)} "
                f"and b {format_shape(b.shape)} do not fit x @ w + b"
            )
        return TensorType(x.dtype, (x.shape[0], w.shape[1]))

    def kernel(self, x: Array, w: Array, b: Array, *, activation: str) -> Array:
        y = x @ w
        y += b
        if activation == "relu":
            np.maximum(y, y.dtype.type(0), out=y)
        elif activation == "tanh":
            np.tanh(y, out=y)
        elif activation == "sigmoid":
            y = REGISTRY["sigmoid"].kernel(y)
        return y

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        activation = attrs["activation"]
        if activation == "sigmoid":
            return None  # its kernel allocates
        zero = inputs[0][1].type(0)

        def dense_into(x: Array, w: Array, b: Array, out: Array) -> Array:
            # The kernel's steps, the product written straight into the buffer.
            np.matmul(x, w, out=out)
            out += b
            if activation == "relu":
                np.maximum(out, zero, out=out)
            elif activation == "tanh":
                np.tanh(out, out=out)
            return out

        return dense_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        x, w, _ = node.inputs
        y = node.outputs[0]
        activation = node.attrs["activation"]
        if activation == "relu":
            dz = F.relu_grad(dy, y)
        elif activation == "tanh":
            dz = dy * (1.0 - y * y)
        elif activation == "sigmoid":
            dz = dy * (y * (1.0 - y))
        else:
            dz = dy
        return [
            F.matmul(dz, F.transpose(w)) if node.wants(0) else None,
            F.matmul(F.transpose(x), dz) if node.wants(1) else None,
            F.sum(dz, axis=0) if node.wants(2) else None,
        ]


@register
class ElementwiseChain(OpDef):
    """The unary elementwise ops named in ``ops`` (from :data:`CHAINABLE`) applied
    in order: ``elementwise_chain(x, ops=("exp", "tanh"))`` is tanh(exp(x)), one
    plan step instead of two.  vjp: the chain rule through each op's own rule
    (the intermediate values are recomputed in the gradient graph)."""

    name = "elementwise_chain"
    internal = True
    inputs = (Input("x", FLOAT_TYPES),)
    attrs = (Attr("ops", "strs"),)

    def infer(self, x: TensorType, *, ops: Sequence[str]) -> TensorType:
        if len(ops) < 2:
            raise ValueError(f"a chain holds at least two ops, got {list(ops)}")
        bad = [op for op in ops if op not in CHAINABLE]
        if bad:
            raise ValueError(
                f"{bad[0]!r} cannot be chained; ops must be among {', '.join(CHAINABLE)}"
            )
        return x

    def kernel(self, x: Array, *, ops: Sequence[str]) -> Array:
        for op in ops:
            x = REGISTRY[op].kernel(x)
        return x

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        def expand(x: Tensor) -> list[Tensor]:
            for op in node.attrs["ops"]:
                x = getattr(F, op)(x)
            return [x]

        return _vjp_by_expansion(node, [dy], expand)


# -- backward -----------------------------------------------------------------------


@register
class ReluGrad(OpDef):
    """relu's backward: ``where(y > 0, dy, 0)``, bit for bit (y is relu's output, or
    its input: both are positive at the same places).  vjp: d dy = relu_grad(g,
    y); y gets no gradient (its derivative is zero almost everywhere).

    Where the mask is off the result is +0.0 whatever dy is, inf and nan included,
    as PyTorch's threshold_backward gives (sqrt(relu(x)) at x < 0: the upstream
    gradient is inf, x's gradient 0).  A product ``dy * (y > 0)`` would give nan
    there (0 * inf) and -0.0 for a negative dy.  Where y is nan the mask is off
    too (nan > 0 is false), as in the ``where`` this op stands for (the fusion
    pass rewrites ``where(y > 0, dy, 0)`` into it); PyTorch passes dy through
    there, but relu(nan) is nan, so the loss is nan either way.

    The kernel multiplies dy's bits, read as integers of dy's width, by the 0/1
    mask: an integer product by 0 or 1 is exact, and it is faster than the float
    product with the mask it replaces, whose bool operand is cast to float on
    the way (timeit, interleaved in one process, best of 9, load 2.4 on two
    cores): float32 (1024, 512) 0.70 ms against 0.97, (64, 16, 28, 28) 1.11
    against 1.59; float64 (1024, 512) 1.41 against 1.55; within 2 us at (32,
    128).  np.where, exact too, took 4.0 ms at float32 (1024, 512).
    """

    name = "relu_grad"
    internal = True
    inputs = (Input("dy", FLOAT_TYPES), Input("y", FLOAT_TYPES, differentiable=False))

    def infer(self, dy: TensorType, y: TensorType) -> TensorType:
        if dy.dtype != y.dtype or not _same_dims(dy.shape, y.shape):
            raise ValueError(f"dy {dy} and y {y} must have one dtype and shape")
        return dy

    def kernel(self, dy: Array, y: Array) -> Array:
        bits = _bits_dtype(dy.dtype)
        return np.multiply(dy.view(bits), y > 0).view(dy.dtype)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        # The mask in fixed scratch too: a large temporary costs page faults each step.
        shape, dtype = inputs[1]
        positive = np.empty(shape, bool)
        zero = dtype.type(0)
        bits = _bits_dtype(dtype)

        def relu_grad_into(dy: Array, y: Array, out: Array) -> Array:
            np.greater(y, zero, out=positive)
            np.multiply(dy.view(bits), positive, out=out.view(bits))
            return out

        return relu_grad_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.relu_grad(dy, node.inputs[1]), None]


def _bits_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The signed integer type of a float dtype's width, to read its values as bits."""
    return np.dtype(f"i{dtype.itemsize}")


@register
class SumRows(OpDef):
    """The sum of the rows of a 2-D x (N, M): sum(x, axis=0), shape (M,).  Up to
    :data:`SUM_ROWS_BLAS_MAX` elements it is ones(N) @ x, one BLAS matrix-vector
    product (two to eight times faster than numpy's reduction for a layer's bias
    gradient; the same sum up to rounding, in another order); larger x is
    reduced by numpy.  What the fusion pass makes of a dense layer's bias
    gradient, ``sum_like(dz, b)``.  vjp: dx = dy broadcast over the rows (sum's
    adjoint)."""

    name = "sum_rows"
    internal = True
    inputs = (Input("x", FLOAT_TYPES),)

    def infer(self, x: TensorType) -> TensorType:
        if x.rank != 2:
            raise ValueError(f"x must be 2-D (N, M), got {format_shape(x.shape)}")
        return TensorType(x.dtype, x.shape[1:])

    def kernel(self, x: Array) -> Array:
        if x.size > SUM_ROWS_BLAS_MAX:
            return np.add.reduce(x, axis=0)
        return np.dot(np.ones(x.shape[0], x.dtype), x)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        ((rows, columns), dtype) = inputs[0]
        if rows * columns > SUM_ROWS_BLAS_MAX:

            def reduce_rows_into(x: Array, out: Array) -> Array:
                return np.add.reduce(x, axis=0, out=out)

            return reduce_rows_into
        ones = np.ones(rows, dtype)

        def sum_rows_into(x: Array, out: Array) -> Array:
            return np.dot(ones, x, out=out)  # the kernel's product, into the buffer

        return sum_rows_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        return [F.broadcast_like(dy, node.inputs[0], axes=[0])]


@register
class MatmulTransposed(OpDef):
    """a @ b for 2-D a and b, either of them transposed first (``transpose_a``,
    ``transpose_b``): what the fusion pass makes of ``matmul(transpose(a), b)``
    and ``matmul(a, transpose(b))`` in gradient graphs (a dense layer's weight
    and input gradients), one step instead of two; BLAS reads the transposed
    operand in place, as numpy.matmul does for a transposed view.  vjp: by
    expansion into transpose and matmul."""

    name = "matmul_transposed"
    internal = True
    inputs = (Input("a", FLOAT_TYPES), Input("b", FLOAT_TYPES))
    attrs = (Attr("transpose_a", "bool", False), Attr("transpose_b", "bool", False))

    def infer(
        self, a: TensorType, b: TensorType, *, transpose_a: bool, transpose_b: bool
    ) -> TensorType:
        if a.dtype != b.dtype:
            raise ValueError(f"a is {a.dtype.name} but b is {b.dtype.name}")
        if a.rank != 2 or b.rank != 2:
            raise ValueError(
                f"a and b must be 2-D, got {format_shape(a.shape)} and {format_shape(b.shape)}"
            )
        m, k = a.shape[::-1] if transpose_a else a.shape
        k2, n = b.shape[::-1] if transpose_b else b.shape
        if not _same_dims((k,), (k2,)):
            raise ValueError(
                f"cannot multiply a{'.T' if transpose_a else ''} {format_shape((m, k))} by "
                f"b{'.T' if transpose_b else ''} {format_shape((k2, n))}: inner dimensions "
                f"{k} and {k2} differ"
            )
        return TensorType(a.dtype, (m, n))

    def kernel(self, a: Array, b: Array, *, transpose_a: bool, transpose_b: bool) -> Array:
        return np.matmul(a.T if transpose_a else a, b.T if transpose_b else b)

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        transpose_a, transpose_b = attrs["transpose_a"], attrs["transpose_b"]

        def matmul_into(a: Array, b: Array, out: Array) -> Array:
            return np.matmul(a.T if transpose_a else a, b.T if transpose_b else b, out=out)

        return matmul_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        transpose_a, transpose_b = node.attrs["transpose_a"], node.attrs["transpose_b"]

        def expand(a: Tensor, b: Tensor) -> list[Tensor]:
            return [
                F.matmul(F.transpose(a) if transpose_a else a, F.transpose(b) if transpose_b else b)
            ]

        return _vjp_by_expansion(node, [dy], expand)


@register
class SoftmaxCrossEntropyGrad(OpDef):
    """softmax_cross_entropy's gradient with respect to the logits, for integer
    labels: (exp(log_prob) - one_hot(labels, axis)) * g, with g (the loss gradient
    per sample, labels' shape) repeated along the class ``axis``.

    A label outside [0, classes) (negative ones included: they do not count from
    the end) gives a zero one-hot row, as ``one_hot`` does, so the row is
    exp(log_prob) * g: the fusion pass's pattern, (exp(P) - one_hot(L)) *
    broadcast_like(G), computes exactly that.  With ``out_of_range="zero"``
    (softmax_cross_entropy's attribute, passed on by its gradient rule) the
    whole row is 0 instead: that sample has no loss, so no gradient.  vjp: by
    expansion into exp, one_hot, subtract, broadcast_like and multiply (and,
    with ``out_of_range="zero"``, g times sum(one_hot(labels), axis), 1 for a
    label in range and 0 outside)."""

    name = "softmax_cross_entropy_grad"
    internal = True
    inputs = (
        Input("log_prob", FLOAT_TYPES),
        Input("labels", INDEX_TYPES, differentiable=False),
        Input("g", FLOAT_TYPES),
    )
    attrs = (Attr("axis", "int", -1), Attr("out_of_range", "str", None, choices=("zero",)))

    def infer(
        self,
        log_prob: TensorType,
        labels: TensorType,
        g: TensorType,
        *,
        axis: int,
        out_of_range: str | None,
    ) -> TensorType:
        axis = normalize_axis(axis, log_prob.rank)
        samples = log_prob.shape[:axis] + log_prob.shape[axis + 1 :]
        if not _same_dims(labels.shape, samples) or not _same_dims(g.shape, samples):
            raise ValueError(
                f"labels {format_shape(labels.shape)} and g "
                f"{format_shape(g.shape)} must have the shape of log_prob "
                f"without axis {axis}, {format_shape(samples)}"
            )
        if g.dtype != log_prob.dtype:
            raise ValueError(f"g is {g.dtype.name} but log_prob is {log_prob.dtype.name}")
        if not isinstance(log_prob.shape[axis], int):
            raise ValueError(f"the class axis {axis} of log_prob must have a known size")
        return log_prob

    def kernel(
        self, log_prob: Array, labels: Array, g: Array, *, axis: int, out_of_range: str | None
    ) -> Array:
        if _rows_case(log_prob.shape, labels.dtype, axis):
            work = RowsScratch(log_prob.shape, log_prob.dtype, labels.dtype, one_hot=True)
            return _rows_cross_entropy_grad(
                log_prob, labels, g, out_of_range, np.empty_like(log_prob), work
            )
        axis = normalize_axis(axis, log_prob.ndim)
        classes = log_prob.shape[axis]
        p = np.exp(log_prob)
        index = np.expand_dims(labels, axis)
        in_range = labels.size and labels.min() >= 0 and labels.max() < classes
        if in_range:
            picked = np.take_along_axis(p, index, axis)
            np.put_along_axis(p, index, picked - p.dtype.type(1), axis)
        else:  # one_hot's rule: an out-of-range label has no one
            p -= (
                np.arange(classes).reshape([-1 if a == axis else 1 for a in range(p.ndim)]) == index
            )
        p *= np.expand_dims(g, axis)
        if not in_range and out_of_range == "zero":
            p[np.broadcast_to((index < 0) | (index >= classes), p.shape)] = 0
        return p

    def out_kernel(self, attrs: dict[str, Any], inputs: Sequence[InputInfo]) -> OutKernel | None:
        (shape, dtype), (_, label_dtype), _ = inputs
        if not _rows_case(shape, label_dtype, attrs["axis"]):
            return None
        work = RowsScratch(shape, dtype, label_dtype, one_hot=True)
        out_of_range = attrs["out_of_range"]

        def cross_entropy_grad_into(log_prob: Array, labels: Array, g: Array, out: Array) -> Array:
            return _rows_cross_entropy_grad(log_prob, labels, g, out_of_range, out, work)

        return cross_entropy_grad_into

    def vjp(self, node: NodeView, dy: Tensor) -> list[Tensor | None]:
        axis = normalize_axis(node.attrs["axis"], node.inputs[0].ndim)
        zero_outside = node.attrs["out_of_range"] == "zero"

        def expand(log_prob: Tensor, labels: Tensor, g: Tensor) -> list[Tensor]:
            depth = log_prob.shape[axis]
            hot = F.one_hot(labels, depth=depth, dtype=log_prob.dtype, axis=axis)
            if zero_outside:
                g = g * F.sum(hot, axis=axis)  # 0 where the label is out of range
            return [(F.exp(log_prob) - hot) * F.broadcast_like(g, log_prob, axes=[axis])]

        return _vjp_by_expansion(node, [dy], expand)


def _rows_cross_entropy_grad(
    log_prob: Array,
    labels: Array,
    g: Array,
    out_of_range: str | None,
    out: Array,
    work: RowsScratch,
) -> Array:
    """softmax_cross_entropy_grad for (N, C) log_prob over axis 1, into ``out``:
    exp(log_prob) minus one_hot(labels), times g per row.

    Up to :data:`~graphengine.ops.loss.ONE_HOT_MAX` elements the one-hot rows
    are a comparison of the labels with 0..C-1 and are subtracted whole (p - 1
    at the label, p - 0 = p elsewhere: the same bits as subtracting 1 from the
    labelled element alone), with no check of the labels: an out-of-range label
    equals no class, one_hot's rule.  That takes fewer numpy calls than a label
    check, a gather and a scatter of N values; above, the (N, C) passes cost
    more, so one is taken from each labelled element."""
    p = np.exp(log_prob, out=out)
    column = labels[:, None]
    if work.hot is not None:
        np.equal(work.class_ids, column, out=work.hot)
        np.subtract(p, work.hot, out=p)
        np.multiply(p, g[:, None], out=p)
        if out_of_range == "zero" and not work.labels_in_range(labels):
            p[~_in_range(labels, work.classes)] = 0
        return p
    if work.labels_in_range(labels):
        picked = work.pick(p, labels)
        np.subtract(picked, p.dtype.type(1), out=picked)
        np.put(p.reshape(-1), work.index, picked, mode="clip")
        return np.multiply(p, g[:, None], out=p)
    # one_hot's rule: an out-of-range label has no one
    p -= np.arange(work.classes) == column
    np.multiply(p, g[:, None], out=p)
    if out_of_range == "zero":
        p[~_in_range(labels, work.classes)] = 0
    return p


@register
class BatchNormGrad(OpDef):
    """batch_norm's backward: dx, dgamma and dbeta from dy, x, gamma and the
    statistics the forward node used (its mean and var outputs).  With rstd =
    1 / sqrt(var + epsilon), xhat = (x - mean) rstd and M elements per channel:
    dbeta = sum(dy), dgamma = sum(dy xhat), dx = gamma rstd (dy - t (dbeta + xhat
    dgamma) / M), where t is 1 in a training run (the statistics depend on x)
    and 0 in an inference run.  vjp: by expansion into those primitives."""

    name = "batch_norm_grad"
    internal = True
    inputs = (
        Input("dy", FLOAT_TYPES),
        Input("x", FLOAT_TYPES),
        Input("gamma", FLOAT_TYPES),
        Input("mean", FLOAT_TYPES),
        Input("var", FLOAT_TYPES),
    )
    outputs = ("dx", "dgamma", "dbeta")
    attrs = (Attr("epsilon", "float", 1e-5),)
    uses_context = True

    def infer(
        self,
        dy: TensorType,
        x: TensorType,
        gamma: TensorType,
        mean: TensorType,
        var: TensorType,
        *,
        epsilon: float,
    ) -> tuple[TensorType, TensorType, TensorType]:
        if x.rank < 2 or not _same_dims(dy.shape, x.shape):
            raise ValueError(
                f"dy {format_shape(dy.shape)} and x {format_shape(x.shape)} "
                "must have one shape with a channel axis 1"
            )
        for name, t in (("dy", dy), ("gamma", gamma), ("mean", mean), ("var", var)):
            if t.dtype != x.dtype:
                raise ValueError(f"{name} is {t.dtype.name} but x is {x.dtype.name}")
        for name, t in (("gamma", gamma), ("mean", mean), ("var", var)):
            if not _same_dims(t.shape, x.shape[1:2]):
                raise ValueError(
                    f"{name} must have shape ({x.shape[1]},), got {format_shape(t.shape)}"
                )
        return x, gamma, gamma

    def kernel(
        self,
        dy: Array,
        x: Array,
        gamma: Array,
        mean: Array,
        var: Array,
        *,
        epsilon: float,
        ctx: RunContext,
    ) -> tuple[Array, Array, Array]:
        axes = _stat_axes(x.ndim)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        rstd = 1 / np.sqrt(var + x.dtype.type(epsilon))
        xhat = (x - mean.reshape(shape)) * rstd.reshape(shape)
        dbeta = np.sum(dy, axis=axes, dtype=x.dtype)
        dgamma = np.sum(dy * xhat, axis=axes, dtype=x.dtype)
        if ctx.training:
            count = x.dtype.type(x.size // x.shape[1])
            xhat *= (dgamma / count).reshape(shape)
            xhat += (dbeta / count).reshape(shape)
            dx = dy - xhat
        else:
            dx = dy.copy()
        dx *= (gamma * rstd).reshape(shape)
        return dx, dgamma, dbeta

    def vjp(self, node: NodeView, dys: list[Tensor | None]) -> list[Tensor | None]:
        eps = node.attrs["epsilon"]

        def expand(dy: Tensor, x: Tensor, gamma: Tensor, mean: Tensor, var: Tensor) -> list[Tensor]:
            axes = _stat_axes(x.ndim)

            def per_element(v: Tensor, mean: bool = False) -> Tensor:
                return F.broadcast_like(v, x, axes=axes, mean=mean)

            rstd = 1.0 / F.sqrt(var + eps)
            xhat = (x - per_element(mean)) * per_element(rstd)
            dbeta = F.sum(dy, axis=axes)
            dgamma = F.sum(dy * xhat, axis=axes)
            through_stats = per_element(dbeta, mean=True) + xhat * per_element(dgamma, mean=True)
            dx = per_element(gamma * rstd) * (dy - through_stats * F.training_flag(x))
            return [dx, dgamma, dbeta]

        return _vjp_by_expansion(node, dys, expand)


# -- gradients by expansion -----------------------------------------------------------


def _vjp_by_expansion(
    node: NodeView, dys: Sequence[Tensor | None], expand: Callable[..., list[Tensor]]
) -> list[Tensor | None]:
    """The vjp of a fused node, by building its formula from primitive ops on the
    node's inputs (``expand(*inputs)`` returns one tensor per output) and running
    reverse mode over just those nodes.  ``dys`` holds one gradient per output
    (None where none arrives); returns one gradient per input (None for none)."""
    from ..gradients import NodeView, _fit

    outputs = expand(*node.inputs)
    graph = node.inputs[0].graph
    stop = {t.name for t in node.inputs}
    order = _local_order(graph, [t.name for t in outputs], stop)
    pending: dict[str, list[Tensor]] = {}
    for out, dy in zip(outputs, dys):
        if dy is not None:
            pending.setdefault(out.name, []).append(dy)
    depends = _depends_on(graph, order, stop)
    for inner in reversed(order):
        grads = [_sum_terms(pending.pop(r, [])) for r in inner.output_refs()]
        if all(g is None for g in grads) or inner.opdef.vjp is None:
            continue
        wanted = [
            ref in depends
            and inner.opdef.input_spec(i).differentiable
            and ref in _float_refs(graph, [ref])
            for i, ref in enumerate(inner.inputs)
        ]
        view = NodeView(graph, inner, wanted)
        results = inner.opdef.vjp(view, grads[0] if len(grads) == 1 else grads)
        for ref, grad, want in zip(inner.inputs, results, wanted):
            if grad is not None and want:
                pending.setdefault(ref, []).append(_fit(graph, grad, ref))
    return [
        _sum_terms(pending.get(t.name, [])) if node.wants(i) else None
        for i, t in enumerate(node.inputs)
    ]


def _float_refs(graph: Graph, refs: Sequence[str]) -> set[str]:
    return {r for r in refs if graph.type_of(r).dtype.kind == "f"}


def _local_order(graph: Graph, roots: list[str], stop: set[str]) -> list[Node]:
    """The nodes between ``stop`` (the fused node's inputs) and ``roots``, in
    topological order (a depth-first post-order)."""
    from ..graph import parse_ref

    order: list[Node] = []
    seen: set[str] = set()
    stack = [(parse_ref(r)[0], False) for r in reversed(roots) if r not in stop]
    while stack:
        name, done = stack.pop()
        if done:
            order.append(graph.node(name))
            continue
        if name in seen:
            continue
        seen.add(name)
        stack.append((name, True))
        for ref in reversed(graph.node(name).inputs):
            if ref not in stop and parse_ref(ref)[0] not in seen:
                stack.append((parse_ref(ref)[0], False))
    return order


def _depends_on(graph: Graph, order: Sequence[Node], stop: set[str]) -> set[str]:
    """Tensor refs among ``order``'s inputs and outputs that depend on ``stop``."""
    live = set(stop)
    for node in order:
        if any(r in live for r in node.inputs):
            live.update(node.output_refs())
    return live


__all__ = ["ACTIVATIONS", "CHAINABLE", "SUM_ROWS_BLAS_MAX"]
