"""The fused ops (graphengine/ops/fused.py) against plain numpy written here, and
their gradients by float64 finite differences (second order where it applies)."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.executor import compile_plan
from graphengine.ops import fused
from graphengine.ops.registry import REGISTRY

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests

R = np.random.default_rng(11)
api = ge.ops.api


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


def away_from_zero(*shape):
    return R.uniform(0.3, 2.0, size=shape) * R.choice([-1.0, 1.0], size=shape)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


ACT = {"none": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "sigmoid": sigmoid}


def dense_ref(x, w, b, activation):
    return ACT[activation](x @ w + b).astype(x.dtype)


def sce_grad_ref(log_prob, labels, g, axis, out_of_range=None):
    """The gradient with one_hot's rule: a label out of range has a zero one-hot row
    (so exp(log_prob) * g), or with out_of_range="zero" a zero row."""
    p = np.exp(log_prob)
    classes = log_prob.shape[axis]
    hot = np.moveaxis(np.eye(classes + 1)[:, :classes][labels], -1, axis)
    if out_of_range == "zero":
        g = g * hot.sum(axis=axis)
    return ((p - hot) * np.expand_dims(g, axis)).astype(log_prob.dtype)


def bn_grad_ref(dy, x, gamma, mean, var, training, epsilon=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    rstd = 1 / np.sqrt(var + epsilon)
    xhat = (x - mean.reshape(shape)) * rstd.reshape(shape)
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    count = x.size // x.shape[1]
    dx = dy - (dbeta.reshape(shape) + xhat * dgamma.reshape(shape)) / count if training else dy
    dx = dx * (gamma * rstd).reshape(shape)
    return dx.astype(x.dtype), dgamma.astype(x.dtype), dbeta.astype(x.dtype)


def log_probs(*shape, axis=-1):
    z = u(*shape, low=-2, high=2)
    return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


SPECS = []
for activation in ("none", "relu", "tanh", "sigmoid"):
    x = away_from_zero(5, 3) if activation == "relu" else u(5, 3)
    SPECS.append(
        OpSpec(
            "dense",
            lambda x, w, b, a=activation: api.dense(x, w, b, activation=a),
            lambda x, w, b, a=activation: dense_ref(x, w, b, a),
            [x, u(3, 4), u(4)],
            id=activation,
            order2=activation != "relu",
        )
    )
SPECS.append(
    OpSpec(
        "relu_grad",
        api.relu_grad,
        lambda dy, y: np.where(y > 0, dy, 0).astype(dy.dtype),
        [u(4, 3), away_from_zero(4, 3)],
        id="kink-free",
        order2=True,
        batch=True,
    )
)
for shape in ((5, 3), (1, 4), (0, 2)):
    SPECS.append(
        OpSpec(
            "sum_rows",
            api.sum_rows,
            lambda x: x.sum(axis=0),
            [u(*shape)],
            id=f"{shape}".replace(" ", ""),
            batch=shape[0] == 5,
        )
    )
for transpose_a, transpose_b in ((True, False), (False, True), (True, True)):
    a_shape = (5, 3) if transpose_a else (3, 5)
    b_shape = (4, 5) if transpose_b else (5, 4)
    SPECS.append(
        OpSpec(
            "matmul_transposed",
            lambda a, b, ta=transpose_a, tb=transpose_b: api.matmul_transposed(
                a, b, transpose_a=ta, transpose_b=tb
            ),
            lambda a, b, ta=transpose_a, tb=transpose_b: (a.T if ta else a) @ (b.T if tb else b),
            [u(*a_shape), u(*b_shape)],
            id=f"transpose_a={transpose_a}-transpose_b={transpose_b}",
            order2=True,
        )
    )
# (N, C) shapes run the fixed-scratch kernel: class-major, square, row-major (C > 64).
for shape, axis in (((6, 4), 1), ((3, 4, 5), 1), ((4, 4), -1), ((3, 70), 1)):
    samples = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    SPECS.append(
        OpSpec(
            "softmax_cross_entropy_grad",
            lambda p, lab, g, a=axis: api.softmax_cross_entropy_grad(p, lab, g, axis=a),
            lambda p, lab, g, a=axis: sce_grad_ref(p, lab, g, a),
            [log_probs(*shape, axis=axis), R.integers(0, shape[axis], size=samples), u(*samples)],
            id=f"{shape}-axis{axis}".replace(" ", ""),
            order2=True,
        )
    )
# Labels out of range, with one_hot's rule (the default) or out_of_range="zero".
for shape, axis in (((6, 4), 1), ((3, 4, 5), 1), ((3, 70), 1)):
    samples = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    labels = R.integers(0, shape[axis], size=samples)
    labels.reshape(-1)[:2] = [-1, shape[axis]]
    for out_of_range in (None, "zero"):
        SPECS.append(
            OpSpec(
                "softmax_cross_entropy_grad",
                lambda p, lab, g, a=axis, o=out_of_range: api.softmax_cross_entropy_grad(
                    p, lab, g, axis=a, out_of_range=o
                ),
                lambda p, lab, g, a=axis, o=out_of_range: sce_grad_ref(p, lab, g, a, o),
                [log_probs(*shape, axis=axis), labels, u(*samples)],
                id=f"{shape}-axis{axis}-outside-{out_of_range}".replace(" ", ""),
                order2=True,
            )
        )
for shape in ((6, 3), (4, 3, 5, 2)):
    c = shape[1]
    for training in (True, False):
        SPECS.append(
            OpSpec(
                "batch_norm_grad",
                lambda dy, x, g, m, v: api.batch_norm_grad(dy, x, g, m, v),
                lambda dy, x, g, m, v, t=training: bn_grad_ref(dy, x, g, m, v, t),
                [
                    u(*shape),
                    u(*shape, low=-2, high=3),
                    u(c, low=0.5, high=2),
                    u(c),
                    u(c, low=0.5, high=2),
                ],
                id=f"{shape}-training={training}".replace(" ", ""),
                training=training,
                order2=True,
                grad_rtol=1e-4,
            )
        )
SPECS.append(
    OpSpec(
        "elementwise_chain",
        lambda x: api.elementwise_chain(x, ops=("exp", "tanh", "square")),
        lambda x: np.square(np.tanh(np.exp(x))),
        [u(3, 4)],
        id="exp-tanh-square",
        order2=True,
    )
)
SPECS.append(
    OpSpec(
        "elementwise_chain",
        lambda x: api.elementwise_chain(x, ops=("sigmoid", "log", "negative")),
        lambda x: -np.log(sigmoid(x)),
        [u(5)],
        id="softplus-of-minus-x",
        batch=True,
    )
)

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


@pytest.mark.parametrize("rows", [3, 7])
def test_sum_rows_above_the_blas_bound_reduces_planned_as_unplanned(monkeypatch, rows):
    """Above SUM_ROWS_BLAS_MAX elements sum_rows is numpy's reduction, below it a
    product with ones: either way planned runs give the unplanned bits."""
    monkeypatch.setattr(fused, "SUM_ROWS_BLAS_MAX", 20)
    g = ge.Graph()
    x = g.placeholder("x", (None, 4), "float32")
    out = api.sum_rows(x)
    feed = {"x": R.standard_normal((rows, 4)).astype(np.float32)}
    plan = compile_plan(g, [out.name], list(feed))
    first = plan.run(feed)[0]
    np.testing.assert_allclose(first, feed["x"].sum(axis=0), rtol=1e-6)
    if rows * 4 > 20:
        np.testing.assert_array_equal(first, np.add.reduce(feed["x"], axis=0))
    for _ in range(2):  # into planned buffers
        np.testing.assert_array_equal(plan.run(feed)[0], first)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_relu_grad_is_where_bit_for_bit_whatever_dy_is(dtype):
    """Where y <= 0 (or y is nan) relu_grad gives +0.0 even for a dy of inf, -inf,
    nan or a negative number; a product with the mask gave nan and -0.0 there."""
    # Every pair of a special dy (columns) and a y on either side of the kink (rows).
    dy, y = np.meshgrid(
        np.array([np.inf, -np.inf, np.nan, -1.5, 2.0, -0.0], dtype),
        np.array([-1.0, 0.0, -0.0, np.nan, -np.inf, 3.0, 0.5], dtype),
    )
    y = np.asfortranarray(y)
    want = np.where(y > 0, dy, 0).astype(dtype)
    g = ge.Graph()
    out = api.relu_grad(g.placeholder("dy", (7, 6), dtype), g.placeholder("y", (7, 6), dtype))
    feed = {"dy": dy, "y": y}
    plan = compile_plan(g, [out.name], list(feed))
    bits = f"u{np.dtype(dtype).itemsize}"
    for _ in range(3):  # unplanned, then into planned buffers
        got = plan.run(feed)[0]
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.view(bits), want.view(bits))
    # The plain kernel with dy broadcast along an axis (y is in Fortran order).
    np.testing.assert_array_equal(
        REGISTRY["relu_grad"].kernel(np.broadcast_to(dy[:1], y.shape), y).view(bits),
        np.where(y > 0, dy[:1], 0).astype(dtype).view(bits),
    )


def test_softmax_cross_entropy_grad_out_of_range_label_gives_zero_one_hot():
    g = ge.Graph()
    p = g.placeholder("p", (2, 3), "float64")
    labels = g.placeholder("labels", (2,), "int64")
    gs = g.placeholder("g", (2,), "float64")
    out = api.softmax_cross_entropy_grad(p, labels, gs)
    lp = np.log(np.full((2, 3), 1 / 3))
    want = [[1 / 3, -2 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]]
    for labels in ([1, 7], [1, -1]):
        feed = {"p": lp, "labels": np.array(labels), "g": np.ones(2)}
        plan = compile_plan(g, [out.name], list(feed))
        for _ in range(3):  # unplanned, then into planned buffers
            np.testing.assert_allclose(plan.run(feed)[0], want)


@pytest.mark.parametrize(
    "build, fragment, shape",
    [
        (
            lambda g, x: api.dense(
                x,
                g.parameter("w", np.ones((4, 2), np.float32)),
                g.parameter("b", np.ones(2, np.float32)),
            ),
            "do not fit x @ w + b",
            (None, 3),
        ),
        (
            lambda g, x: api.dense(
                x,
                g.parameter("w", np.ones((3, 2), np.float32)),
                g.parameter("b", np.ones(2, np.float32)),
            ),
            "expected x (N, K)",
            (None, 3, 5),
        ),
        (
            lambda g, x: api.relu_grad(x, g.placeholder("y", (None, 4))),
            "must have one dtype and shape",
            (None, 3),
        ),
        (
            lambda g, x: api.elementwise_chain(x, ops=("exp", "cast")),
            "'cast' cannot be chained",
            (2,),
        ),
        (lambda g, x: api.elementwise_chain(x, ops=("exp",)), "at least two ops", (2,)),
        (lambda g, x: api.sum_rows(x), "x must be 2-D (N, M), got (N, 3, 5)", (None, 3, 5)),
        (
            lambda g, x: api.matmul_transposed(
                x, g.parameter("w", np.ones((4, 2), np.float32)), transpose_b=True
            ),
            "cannot multiply a (N, 3) by b.T (2, 4): inner dimensions 3 and 2 differ",
            (None, 3),
        ),
        (
            lambda g, x: api.matmul_transposed(x, x, transpose_b=True),
            "a and b must be 2-D",
            (2, 3, 4),
        ),
        (
            lambda g, x: api.batch_norm_grad(
                x, x, *[g.parameter(n, np.ones(4, np.float32)) for n in ("g", "m", "v")]
            ),
            "gamma must have shape (3,)",
            (None, 3, 5),
        ),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment, shape):
    check_build_error(build, fragment, shape)
