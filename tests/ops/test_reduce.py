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


@pytest.mark.parametrize(
    ("shape", "like", "axes"),
    [
        ((4, 3, 5, 6), (3, 1, 1), None),  # a convolution's bias gradient: staged
        ((4, 3, 5, 6), (1, 3, 1, 1), None),  # staged, with the leading 1 kept
        ((4, 3, 5, 6), (3,), (0, 2, 3)),  # explicit axes, staged
        ((4, 3, 5, 6), (3,), (0, -2, -1)),  # axes counted from the end, staged
        ((2, 3, 4), (3,), (-3, -1)),
        ((2, 5, 7), (7,), None),  # (0, 1): staged
        ((4, 3, 5, 6), (4, 1, 1, 1), None),  # axis 0 kept: one reduction
        ((6, 5), (5,), None),  # rank 2: one reduction
        ((0, 3, 2, 2), (3, 1, 1), None),  # an empty batch sums to zeros
    ],
)
@pytest.mark.parametrize("mean", [False, True])
def test_sum_like_kernel_and_planned_kernel_match_numpy(shape, like, axes, mean):
    """sum_like sums the leading axis first when it and others are summed (numpy
    is several times faster that way): the unplanned and planned kernels give
    the same bits as each other and numpy's sum up to float32 rounding."""
    from graphengine.ops.reduce import SumLike

    if mean and 0 in shape:
        pytest.skip("the mean of no elements is 0/0")
    x = R.standard_normal(shape).astype(np.float32)
    target = np.zeros(like, np.float32)
    op = SumLike()
    have = op.kernel(x, target, axes=axes, mean=mean)
    summed = (
        axes
        if axes is not None
        else tuple(
            i
            for i, (a, b) in enumerate(zip(shape, (1,) * (len(shape) - len(like)) + like))
            if a != b
        )
    )
    want = (np.mean if mean else np.sum)(x.astype(np.float64), axis=summed, keepdims=axes is None)
    assert have.shape == like
    np.testing.assert_allclose(have, want.reshape(like), rtol=1e-5, atol=1e-5)
    planned = op.out_kernel({"axes": axes, "mean": mean}, [(shape, x.dtype), (like, x.dtype)])
    out = np.full(like, np.nan, np.float32)
    assert planned(x, target, out) is out
    np.testing.assert_array_equal(out, have)
