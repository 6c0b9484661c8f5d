"""gather_elements, scatter_elements (every reduction) and diagonal against numpy
(dims that all differ, negative and repeated indices, indices shorter than the
data, a symbolic batch dim), their gradients in float64 to second order, and
the inputs they must refuse when built or run."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.ops import api

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(12)


def u(*shape):
    return R.uniform(-1.0, 1.0, size=shape)


def distinct(*shape):
    """Values at least 0.05 apart, so max/min have no ties a finite difference crosses."""
    n = int(np.prod(shape))
    return (R.permutation(n) * 0.05 - n * 0.025).reshape(shape)


def row(op, build, reference, inputs, id, **options):
    return OpSpec(op, build, reference, inputs, id=id, **options)


def take_along(x, indices, axis):
    """numpy's take_along_axis on the leading part of x that the indices cover."""
    axis %= x.ndim
    key = tuple(slice(None) if a == axis else slice(0, n) for a, n in enumerate(indices.shape))
    return np.take_along_axis(x[key], np.where(indices < 0, indices + x.shape[axis], indices), axis)


def scatter(data, indices, updates, axis, reduction="none"):
    """ONNX's reference semantics, one element at a time (plain Python loops)."""
    out = data.copy()
    axis %= data.ndim
    combine = {
        "none": lambda old, new: new,
        "add": lambda old, new: old + new,
        "mul": lambda old, new: old * new,
        "max": max,
        "min": min,
    }[reduction]
    for position in np.ndindex(*indices.shape):
        target = list(position)
        index = int(indices[position])
        target[axis] = index + data.shape[axis] if index < 0 else index
        out[tuple(target)] = combine(out[tuple(target)], updates[position])
    return out


X = u(3, 4, 5)
# Along axis 1 (size 4): negative, repeated, and only 2 of X's 3 rows, 4 of its 5 columns.
IDX = np.array(
    [[[0, -1, 2, 3], [3, 3, 0, -4], [1, 2, 2, 0]], [[-2, 0, 1, 1], [2, 3, 3, 0], [0, 0, 1, 2]]]
).transpose(0, 2, 1)  # shape (2, 4, 3)
UNIQUE = np.array([[[2, 0, 3], [0, 3, 1]], [[1, 2, 0], [3, 1, 2]]])  # (2, 2, 3): no repeats


def gather_row(id, x, indices, axis, **options):
    return row(
        "gather_elements",
        lambda t, i: ge.gather_elements(t, i, axis=axis),
        lambda a, i: take_along(a, i, axis),
        [x, indices],
        id,
        **options,
    )


def scatter_row(id, data, indices, updates, axis, reduction, **options):
    return row(
        "scatter_elements",
        lambda d, i, v: ge.scatter_elements(d, i, v, axis=axis, reduction=reduction),
        lambda d, i, v: scatter(d, i, v, axis, reduction),
        [data, indices, updates],
        id,
        **options,
    )


SPECS = [
    gather_row("axis1-negative-repeated-short", X, IDX, 1),
    gather_row("axis0", X, np.array([[[2, 0, 1, 1, 0]], [[0, 0, 2, -3, 1]]]), 0),
    gather_row("axis-1-batch", X, R.integers(-5, 5, (3, 4, 7)), -1, batch=True),
    row(
        "gather_elements",
        lambda t, i: ge.gather_elements(t * t, i, axis=1),
        lambda a, i: take_along(a * a, i, 1),
        [X, IDX],
        "order2",
    ),
    scatter_row("none", X, UNIQUE, u(2, 2, 3), 1, "none"),
    scatter_row(
        "none-axis0-negative", u(4, 3), np.array([[-1, 0, 2], [1, 3, -4]]), u(2, 3), 0, "none"
    ),
    scatter_row("add-repeated", X, IDX, u(2, 4, 3), 1, "add"),
    scatter_row("add-batch", X, R.integers(-5, 5, (3, 4, 2)), u(3, 4, 2), -1, "add", batch=True),
    scatter_row("mul-repeated", X, IDX, R.uniform(0.5, 1.5, (2, 4, 3)), 1, "mul"),
    scatter_row("max-repeated", distinct(3, 4, 5), IDX, distinct(2, 4, 3) + 0.0125, 1, "max"),
    scatter_row("min-repeated", distinct(3, 4, 5), IDX, distinct(2, 4, 3) + 0.0125, 1, "min"),
    row(
        "scatter_elements",
        lambda d, i, v: ge.scatter_elements(d * d, i, v * v, axis=1, reduction="add") ** 2.0,
        lambda d, i, v: scatter(d * d, i, v * v, 1, "add") ** 2,
        [X, IDX, u(2, 4, 3)],
        "order2-add",
    ),
    row(
        "scatter_elements",
        lambda d, i, v: ge.scatter_elements(d, i, v, axis=1, reduction="mul") ** 2.0,
        lambda d, i, v: scatter(d, i, v, 1, "mul") ** 2,
        [X, IDX, R.uniform(0.5, 1.5, (2, 4, 3))],
        "order2-mul",
    ),
    row(
        "scatter_elements",
        lambda d, i, v: ge.scatter_elements(d, i, v, axis=0),
        lambda d, i, v: scatter(d, i, v, 0),
        [
            np.arange(12, dtype=np.int64).reshape(4, 3),
            np.array([[3, 1, 0]]),
            np.array([[-7, -8, -9]]),
        ],
        "int64",
    ),
    row(
        "diagonal",
        lambda t: ge.diagonal(t, axis1=0, axis2=2),
        lambda a: np.diagonal(a, axis1=0, axis2=2),
        [u(4, 3, 4)],
        "square",
    ),
    row(
        "diagonal",
        lambda t: ge.diagonal(t, axis1=-1, axis2=1) ** 2.0,
        lambda a: np.diagonal(a, axis1=-1, axis2=1) ** 2,
        [u(2, 3, 5)],
        "rectangular-order2",
        batch=True,
    ),
    row(
        "diagonal_grad",
        lambda dy, like: api.diagonal_grad(dy, like, axis1=2, axis2=0),
        lambda dy, like: _diagonal_grad(dy, like, 2, 0),
        [u(3, 2), u(2, 3, 2)],
        "",
    ),
]


def _diagonal_grad(dy, like, axis1, axis2):
    out = np.zeros_like(like)
    for position in np.ndindex(*like.shape):
        if position[axis1] == position[axis2]:
            rest = tuple(p for a, p in enumerate(position) if a not in (axis1, axis2))
            out[position] = dy[rest + (position[axis1],)]
    return out


test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


@pytest.fixture
def g():
    return ge.Graph("gather")


def test_gather_gradient_accumulates_repeated_indices(g):
    x = g.placeholder("x", (2, 3), "float64")
    i = g.constant(np.array([[1, 1, 1]]))
    tg = ge.gradients(g, ge.sum(ge.gather_elements(x, i, axis=0)), ["x"])
    got = ge.run(tg, tg.gradient.grads["x"], {"x": np.zeros((2, 3))})
    assert got.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]


def test_scatter_max_shares_the_gradient_among_ties(g):
    data = g.placeholder("data", (1, 2), "float64")
    updates = g.placeholder("updates", (2, 2), "float64")
    i = g.constant(np.zeros((2, 2), np.int64))
    y = ge.scatter_elements(data, i, updates, axis=0, reduction="max")
    tg = ge.gradients(g, ge.sum(y), ["data", "updates"])
    feeds = {"data": np.array([[3.0, 1.0]]), "updates": np.array([[3.0, 5.0], [3.0, 2.0]])}
    got = ge.run(tg, [tg.gradient.grads["data"], tg.gradient.grads["updates"]], feeds)
    assert got[tg.gradient.grads["data"]].tolist() == [[1 / 3, 0.0]]
    assert got[tg.gradient.grads["updates"]].tolist() == [[1 / 3, 1.0], [1 / 3, 0.0]]


def test_scatter_none_gradient_zeroes_the_overwritten_data(g):
    data = g.placeholder("data", (3,), "float64")
    updates = g.placeholder("updates", (1,), "float64")
    y = ge.scatter_elements(data, g.constant(np.array([2])), updates)
    tg = ge.gradients(g, ge.sum(y * g.constant(np.array([1.0, 2.0, 3.0]))), ["data", "updates"])
    got = ge.run(tg, list(tg.gradient.grads.values()), {"data": np.ones(3), "updates": [7.0]})
    assert got[tg.gradient.grads["data"]].tolist() == [1.0, 2.0, 0.0]
    assert got[tg.gradient.grads["updates"]].tolist() == [3.0]


BUILD_ERRORS = [
    (lambda x, i: ge.gather_elements(x, ge.reshape(i, (-1,))), "must have the rank of the data"),
    (lambda x, i: ge.gather_elements(x, ge.cast(x, "int64"), axis=3), "axis 3 is out of range"),
    (
        lambda x, i: ge.gather_elements(x, ge.concatenate([i, i, i], axis=0), axis=1),
        "is longer than the data of shape (2, 3, 4) along axis 0 (3 > 2)",
    ),
    (lambda x, i: ge.gather_elements(x, x), "input 'indices'"),
    (
        lambda x, i: ge.scatter_elements(x, i, ge.cast(i, "float64")),
        "updates have dtype float64, the data float32",
    ),
    (
        lambda x, i: ge.scatter_elements(x, i, x),
        "updates of shape (2, 3, 4) must have the shape of the indices, (1, 3, 4)",
    ),
    (lambda x, i: ge.diagonal(x, axis1=1, axis2=-2), "axis1 and axis2 must differ, both are 1"),
]


@pytest.mark.parametrize("build, fragment", BUILD_ERRORS, ids=[f[1][:30] for f in BUILD_ERRORS])
def test_build_errors(g, build, fragment):
    x = g.placeholder("x", (2, 3, 4))
    i = g.constant(np.zeros((1, 3, 4), np.int64))
    with pytest.raises(ge.ShapeError) as info:
        build(x, i)
    assert "node '" in str(info.value) and fragment in str(info.value)


def test_scatter_refuses_an_unknown_reduction(g):
    x = g.placeholder("x", (2,))
    with pytest.raises(ge.GraphError, match="'prod' is not one of"):
        ge.scatter_elements(
            x, g.constant(np.array([0])), g.constant(np.ones(1, np.float32)), reduction="prod"
        )


@pytest.mark.parametrize("bad", [4, -5])
@pytest.mark.parametrize("op", ["gather", "scatter"])
def test_out_of_range_indices_fail_when_run(g, op, bad):
    x = g.placeholder("x", (None, 4))
    i = g.placeholder("i", (1, 2), "int64")
    if op == "gather":
        y = ge.gather_elements(x, i, axis=1)
    else:
        y = ge.scatter_elements(x, i, g.constant(np.ones((1, 2), np.float32)), axis=1)
    with pytest.raises(ge.ExecutionError) as info:
        ge.run(g, y, {"x": np.zeros((2, 4), np.float32), "i": np.array([[0, bad]])})
    message = str(info.value)
    assert f"node '{y.node}'" in message
    assert f"index {bad} is out of range for axis 1 of size 4" in message
