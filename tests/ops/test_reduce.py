"""Reductions against numpy over axes x keepdims, and their gradients."""

import itertools

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(1)
X = R.uniform(-1, 1, size=(2, 3, 4))  # dims all differ: a swapped axis fails
AXES = [None, 0, 1, -1, (0, 2), (1, 2), ()]


def reduction(fn, np_fn, axis, keepdims):
    return (
        lambda x: fn(x, axis=axis, keepdims=keepdims),
        lambda x: np.asarray(np_fn(x, axis=axis, keepdims=keepdims)),
    )


SPECS = []
for (name, fn, np_fn), axis, keepdims in itertools.product(
    [
        ("sum", ge.sum, np.sum),
        ("mean", ge.mean, np.mean),
        ("max", ge.max, np.max),
        ("min", ge.min, np.min),
    ],
    AXES,
    [False, True],
):
    build, ref = reduction(fn, np_fn, axis, keepdims)
    SPECS.append(
        OpSpec(
            name, build, ref, [X], id=f"axis={axis}-keepdims={keepdims}", batch=axis not in (None,)
        )
    )
SPECS += [
    OpSpec(
        "max",
        lambda x: ge.max(x, axis=1),
        lambda x: np.max(x, axis=1),
        [np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.5]])],
        id="ties",
        order2=False,
    ),  # at a tie the gradient jumps: it has no finite difference
    OpSpec(
        "sum",
        lambda x: ge.sum(x, axis=0),
        lambda x: np.sum(x, axis=0),
        [X],
        id="batch",
        batch=True,
        order2=True,
    ),
    OpSpec(
        "mean", lambda x: ge.mean(x * x), lambda x: np.mean(x * x), [X], id="order2", order2=True
    ),
    OpSpec(
        "sum",
        lambda x: ge.sum(x, axis=1),
        lambda x: np.sum(x, axis=1),
        [np.arange(12).reshape(3, 4)],
        id="int",
        grad=(),
    ),
]
for axis, keepdims in [(None, False), (0, False), (-1, True), (1, False)]:
    SPECS.append(
        OpSpec(
            "argmax",
            lambda x, a=axis, k=keepdims: ge.argmax(x, axis=a, keepdims=k),
            lambda x, a=axis, k=keepdims: np.argmax(x, axis=a, keepdims=k),
            [X],
            id=f"axis={axis}-keepdims={keepdims}",
        )
    )

# The gradient-only helpers, checked through an op that uses them.
SPECS += [
    OpSpec(
        "broadcast_like",
        lambda x, y: ge.ops.api.broadcast_like(x, y, axes=[1]),
        lambda x, y: np.broadcast_to(x[:, None], y.shape),
        [R.normal(size=(2, 4)), X],
        grad=(0,),
    ),
    OpSpec(
        "sum_like",
        lambda x, y: ge.ops.api.sum_like(x, y),
        lambda x, y: np.sum(x, axis=(0, 1), keepdims=True).reshape(y.shape),
        [X, R.normal(size=(1, 4))],
        grad=(0,),
    ),
    OpSpec(
        "sum_like",
        lambda x, y: ge.ops.api.sum_like(x, y, mean=True),
        lambda x, y: np.mean(x, axis=0),
        [X, R.normal(size=(3, 4))],
        grad=(0,),
        id="mean",
        order2=True,
    ),
    OpSpec("zeros_like", ge.ops.api.zeros_like, np.zeros_like, [X]),
]

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


def test_axis_out_of_range_is_a_build_error():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    with pytest.raises(ge.ShapeError, match="axis 2 is out of range"):
        ge.sum(x, axis=2)


def test_mean_of_float32_stays_float32():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    out = ge.run(g, ge.mean(x), {"x": np.ones((5, 3), np.float32)})
    assert out.dtype == np.float32 and out.shape == ()
