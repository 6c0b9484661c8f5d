"""Indexing ops (slicing, take, one_hot, pad) against numpy (dims that all
differ, negative indices and steps, symbolic batch dims), their gradients (to
second order for a few), the inputs they must refuse when built or run, and
Tensor indexing, iteration and conversion."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.ops import api
from graphengine.ops.indexing import END

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(9)


def u(*shape):
    return R.uniform(-1.0, 1.0, size=shape)


X = u(2, 3, 4)  # dims all differ: a swapped axis fails
IDS = np.array([[0, 2, 2, 4], [4, 0, 1, 0]])  # repeated: the gradient must accumulate


def row(op, build, reference, inputs, id, **options):
    return OpSpec(op, build, reference, inputs, id=id, **options)


def key_row(key, id, x=X, **options):
    """A slicing row: x[key] against numpy's x[key]."""
    return row("slice", lambda t: t[key], lambda a: a[key], [x], id, **options)


def scattered(like, key, dy):
    out = np.zeros_like(like)
    out[key] = dy
    return out


def one_hot(indices, depth, axis=-1, dtype=np.float32):
    return np.moveaxis((indices[..., None] == np.arange(depth)).astype(dtype), -1, axis)


SPECS = [
    # slicing
    key_row((slice(1, 3), slice(None, None, 2)), "steps", x=u(4, 5)),
    key_row((slice(None), slice(None, None, -1)), "reversed", batch=True),
    key_row((slice(-1, 0, -2), Ellipsis, slice(3, 0, -1)), "negative-steps", x=u(5, 3, 4)),
    key_row(-1, "int"),
    key_row((Ellipsis, 1), "ellipsis-int", batch=True),
    key_row((None, slice(None), 0, None), "newaxis"),
    key_row((1, None, slice(2, 0, -1), Ellipsis), "mixed"),
    key_row((1, 2, 3), "all-ints"),
    key_row((slice(-3, -1), slice(5, None)), "empty-and-negative", x=u(4, 5)),
    row(
        "slice",
        lambda x: x[:, 1:, np.newaxis, :-1] ** 2.0,
        lambda x: x[:, 1:, None, :-1] ** 2,
        [X],
        "order2",
        batch=True,
        order2=True,
    ),
    row(
        "slice_grad",
        lambda dy, like: api.slice_grad(
            dy, like, axes=(1,), starts=(-1,), stops=(-END,), steps=(-2,)
        ),
        lambda dy, like: scattered(like, (slice(None), slice(None, None, -2)), dy),
        [u(2, 2, 4), X],
        "",
    ),
    # take, one_hot, pad
    row(
        "take",
        lambda a, i: ge.take(a, i, axis=0),
        lambda a, i: np.take(a, i, axis=0),
        [u(5, 3), IDS],
        "embedding",
    ),
    row(
        "take",
        lambda a, i: ge.take(a, i, axis=0) ** 2.0,
        lambda a, i: np.take(a, i, axis=0) ** 2,
        [u(5, 3), IDS],
        "embedding-order2",
        order2=True,
    ),
    row("take", ge.take, np.take, [X, np.array([[23, 0], [5, -1]])], "flat"),
    row(
        "take",
        lambda a, i: ge.take(a, i, axis=-1),
        lambda a, i: np.take(a, i, axis=-1),
        [X, np.array([[3, -4, 0], [3, 1, 2]], np.int32)],
        "axis-1-int32",
        batch=True,
    ),
    row(
        "take_grad",
        lambda dy, like, i: api.take_grad(dy, like, i, axis=1),
        lambda dy, like, i: np.stack([np.bincount(i, w, minlength=3) for w in dy]).astype(dy.dtype),
        [u(2, 4), u(2, 3), np.array([2, 0, 2, 2])],
        "",
    ),
    row("one_hot", lambda i: ge.one_hot(i, 4), lambda i: one_hot(i, 4), [IDS % 4], "last"),
    row(
        "one_hot",
        lambda i: ge.one_hot(i, 5, axis=0, dtype="float64"),
        lambda i: one_hot(i, 5, axis=0, dtype=np.float64),
        [np.array([4, -1, 7, 0], np.int32)],
        "axis0-out-of-range",
    ),
    row("pad", lambda x: ge.pad(x, 1), lambda x: np.pad(x, 1), [X], "int"),
    row(
        "pad",
        lambda x: ge.pad(x, (2, 1), constant_values=-3.5),
        lambda x: np.pad(x, (2, 1), constant_values=-3.5),
        [X],
        "pair",
    ),
    row(
        "pad",
        lambda x: ge.pad(x, ((0, 0), (1, 2), (3, 0))),
        lambda x: np.pad(x, ((0, 0), (1, 2), (3, 0))),
        [X],
        "per-axis",
        batch=True,
    ),
    row(
        "pad",
        lambda x: ge.pad(x, ((1, 2),)) ** 2.0,
        lambda x: np.pad(x, ((1, 2),)) ** 2,
        [u(3, 2)],
        "broadcast-pair-order2",
        order2=True,
    ),
    row(
        "pad",
        lambda x: ge.pad(x, (1, 0)),
        lambda x: np.pad(x, (1, 0)),
        [np.arange(6).reshape(2, 3)],
        "int64",
        grad=(),
    ),
]

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- shape inference with symbolic dims ------------------------------------------------


@pytest.fixture
def g():
    return ge.Graph()


def test_symbolic_dims_survive_where_they_can(g):
    x = g.placeholder("x", (None, 1, 4))
    assert ge.pad(x, ((0, 0), (1, 1), (0, 2))).shape == ("N", 3, 6)
    assert x[:, 0, 1:3].shape == ("N", 2)
    assert x[1:].shape == (None, 1, 4)


def test_take_gradient_accumulates_repeated_indices(g):
    table = g.placeholder("table", (5, 3))
    ids = g.placeholder("ids", (None, 4), "int64")
    loss = ge.sum(ge.take(table, ids, axis=0))
    tg = ge.gradients(g, loss, ["table"])
    grad = ge.run(
        tg, tg.gradient.grads["table"], {"table": np.ones((5, 3), np.float32), "ids": IDS}
    )
    np.testing.assert_array_equal(grad[:, 0], [3, 1, 2, 0, 2])


def test_empty_key_returns_the_tensor_itself(g):
    x = g.placeholder("x", (2, 3))
    assert x[:] is x and x[...] is x and x[::1, 0:] is x


def test_slice_stores_numpy_bounds(g):
    x = g.placeholder("x", (None, 5))
    y = x[::-1, 2]
    attrs = g.node(y.node).attrs
    assert (attrs["axes"], attrs["starts"], attrs["stops"], attrs["steps"]) == (
        (0,),
        (-1,),
        (-END,),
        (-1,),
    )
    assert (attrs["index_axes"], attrs["indices"]) == ((1,), (2,))


def test_helpers_are_internal():
    for name in ("slice", "slice_grad", "take_grad"):
        assert name not in ge.__all__ and callable(getattr(api, name))
    for name in ("pad", "take", "one_hot"):
        assert name in ge.__all__


# -- Tensor indexing, iteration and conversion ---------------------------------------------


def test_iterating_a_tensor_needs_a_static_length(g):
    x = g.placeholder("x", (3, 2))
    assert [t.shape for t in x] == [(2,), (2,), (2,)]
    with pytest.raises(ge.ShapeError, match="no static length"):
        list(g.placeholder("n", (None, 2)))


def test_a_tensor_is_not_an_array(g):
    x = g.placeholder("x", (3, 2))
    count = len(g)
    with pytest.raises(ge.GraphError, match="ge.run"):
        np.asarray(x)
    assert len(g) == count  # numpy did not read it element by element


# -- inputs that must fail ------------------------------------------------------------

BUILD_ERRORS = [
    (lambda x: x[:, 3], "index 3 is out of bounds for axis 1 with size 3"),
    (lambda x: x[::0], "slice step cannot be zero"),
    (lambda x: x[0, 0, 0, 0], "too many indices"),
    (lambda x: ge.take(x, x), "input 'indices'"),
    (lambda x: ge.take(x, [0], axis=3), "axis 3 is out of range"),
    (lambda x: ge.one_hot(ge.cast(x, "int64"), -1), "depth must be non-negative"),
    (lambda x: ge.pad(x, ((0, 0), (-1, 0), (0, 0))), "negative width"),
]


@pytest.mark.parametrize("build, fragment", BUILD_ERRORS, ids=[f[1][:30] for f in BUILD_ERRORS])
def test_build_errors(g, build, fragment):
    x = g.placeholder("x", (2, 3, 4))
    with pytest.raises(ge.ShapeError) as info:
        build(x)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda x: x[[0, 1]], "cannot index tensor 'x' with list"),
        (lambda x: x[x], "cannot index tensor 'x' with Tensor"),
        (lambda x: x[..., 0, ...], "only one '...'"),
        (lambda x: x[0:1.5], "slice stop must be an int"),
        (lambda x: ge.pad(x, 1, mode="edge"), "mode 'edge' is not supported"),
        (
            lambda x: ge.pad(x, ((1, 2, 3),)),
            "is not an int, a (before, after) pair or 3 such pairs",
        ),
        (lambda x: ge.pad(x, 1.5), "must hold ints"),
    ],
)
def test_unsupported_arguments(g, build, fragment):
    x = g.placeholder("x", (2, 3, 4))
    with pytest.raises(ge.GraphError) as info:
        build(x)
    assert fragment in str(info.value)


RUN_ERRORS = [
    # (build on x of shape (N, 3, 4), N fed, fragment)
    (lambda x, ids: ge.take(x, ids, axis=1), 2, "index 30 is out of bounds"),
    (lambda x, ids: ge.take(x, ids), 1, "out of bounds"),
    (lambda x, ids: x[2], 2, "index 2 is out of bounds for axis 0 with size 2"),
]


@pytest.mark.parametrize("build, n, fragment", RUN_ERRORS, ids=[f[2][:30] for f in RUN_ERRORS])
def test_run_errors(g, build, n, fragment):
    x = g.placeholder("x", (None, 3, 4))
    ids = g.placeholder("ids", (2,), "int64")
    y = build(x, ids)
    with pytest.raises(ge.ExecutionError) as info:
        ge.run(g, y, {"x": np.zeros((n, 3, 4), np.float32), "ids": np.array([0, 30])})
    message = str(info.value)
    assert f"node '{y.node}'" in message and fragment in message
