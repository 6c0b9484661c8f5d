"""Shape ops against numpy (dims that all differ, negative axes, symbolic batch
dims), their gradients (to second order for a few), the inputs they must
refuse when built or run, and the numpy-style Tensor methods."""

import numpy as np
import pytest

import graphengine as ge
from graphengine.ops import api

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(4)


def u(*shape):
    return R.uniform(-1.0, 1.0, size=shape)


X = u(2, 3, 4)  # dims all differ: a swapped axis fails


def row(op, build, reference, inputs, id, **options):
    return OpSpec(op, build, reference, inputs, id=id, **options)


SPECS = [
    # reshape
    row("reshape", lambda x: ge.reshape(x, (4, 6)), lambda x: x.reshape(4, 6), [X], "static"),
    row("reshape", lambda x: ge.reshape(x, (3, -1)), lambda x: x.reshape(3, -1), [X], "fill"),
    row(
        "reshape",
        lambda x: ge.reshape(x, (-1, 12)),
        lambda x: x.reshape(-1, 12),
        [X],
        "batch",
        batch=True,
    ),
    row(
        "reshape",
        lambda x: ge.reshape(x, (-1, 4)),
        lambda x: x.reshape(-1, 4),
        [X],
        "batch-unknown",
        batch=True,
    ),
    row(
        "reshape",
        lambda x: x.reshape(4, 3, 2) ** 2.0,
        lambda x: x.reshape(4, 3, 2) ** 2,
        [X],
        "method-order2",
        order2=True,
    ),
    row(
        "reshape_like",
        lambda x, like: api.reshape_like(x, like),
        lambda x, like: x.reshape(like.shape),
        [u(6, 4), u(2, 3, 4)],
        "",
        grad=(0,),
    ),
    # transpose
    row("transpose", ge.transpose, np.transpose, [X], "reverse"),
    row(
        "transpose",
        lambda x: ge.transpose(x, (1, 2, 0)),
        lambda x: np.transpose(x, (1, 2, 0)),
        [X],
        "perm",
        batch=True,
    ),
    row(
        "transpose",
        lambda x: x.transpose(-1, 0, 1) * x.T.transpose(0, 2, 1),
        lambda x: np.transpose(x, (2, 0, 1)) ** 2,
        [X],
        "negative-order2",
        order2=True,
    ),
    # expand_dims, squeeze
    row(
        "expand_dims",
        lambda x: ge.expand_dims(x, 1),
        lambda x: np.expand_dims(x, 1),
        [X],
        "1",
        batch=True,
    ),
    row(
        "expand_dims",
        lambda x: ge.expand_dims(x, (0, -1)),
        lambda x: np.expand_dims(x, (0, -1)),
        [X],
        "tuple",
    ),
    row("squeeze", ge.squeeze, np.squeeze, [u(2, 1, 3, 1)], "all"),
    row(
        "squeeze",
        lambda x: ge.squeeze(x, -1),
        lambda x: np.squeeze(x, -1),
        [u(2, 1, 3, 1)],
        "negative",
        batch=True,
    ),
    row(
        "squeeze",
        ge.squeeze,
        lambda x: np.squeeze(x, 1),
        [u(1, 1, 3)],
        "keeps-symbolic",
        batch=True,
    ),
    # broadcast_to
    row(
        "broadcast_to",
        lambda x: ge.broadcast_to(x, (2, 3, 4)),
        lambda x: np.broadcast_to(x, (2, 3, 4)),
        [u(3, 1)],
        "new-and-stretched",
    ),
    row(
        "broadcast_to",
        lambda x: ge.broadcast_to(x, (-1, 3, 4)),
        lambda x: np.broadcast_to(x, (x.shape[0], 3, 4)),
        [u(2, 1, 4)],
        "keep",
        batch=True,
    ),
    # concatenate, stack, split
    row(
        "concatenate",
        lambda a, b, c: ge.concatenate([a, b, c], axis=1),
        lambda a, b, c: np.concatenate([a, b, c], axis=1),
        [u(2, 1, 4), u(2, 3, 4), u(2, 2, 4)],
        "axis1",
        batch=True,
    ),
    row(
        "concatenate",
        lambda a, b, c: ge.concatenate([a, b, c]),
        lambda a, b, c: np.concatenate([a, b, c]),
        [u(1, 3), u(2, 3), u(4, 3)],
        "axis0",
    ),
    row(
        "concatenate",
        lambda a, b, c: ge.concatenate([a, b, c], axis=0) ** 2.0,
        lambda a, b, c: np.concatenate([a, b, c]) ** 2,
        [u(2, 3), u(3, 3), u(1, 3)],
        "order2",
        order2=True,
    ),
    row(
        "concatenate",
        lambda a, b, c: ge.concatenate([a, b, c], axis=-1),
        lambda a, b, c: np.concatenate([a, b, c], axis=-1),
        [u(3, 1), u(3, 2), u(3, 4)],
        "negative",
    ),
    row(
        "split_like",
        lambda x, a, b: api.split_like([x, a, b], axis=1, num=2),
        lambda x, a, b: np.split(x, [3], axis=1),
        [u(2, 7, 4), u(2, 3, 4), u(2, 4, 4)],
        "",
        grad=(0,),
    ),
    row(
        "stack",
        lambda a, b, c: ge.stack([a, b, c]),
        lambda a, b, c: np.stack([a, b, c]),
        [u(2, 3), u(2, 3), u(2, 3)],
        "axis0",
    ),
    row(
        "stack",
        lambda a, b, c: ge.stack([a, b, c], axis=-1),
        lambda a, b, c: np.stack([a, b, c], axis=-1),
        [u(2, 4), u(2, 4), u(2, 4)],
        "negative",
        batch=True,
    ),
    row(
        "stack",
        lambda a, b, c: ge.stack([a, b, c], axis=1),
        lambda a, b, c: np.stack([a, b, c], axis=1),
        [u(2, 4), u(2, 4), u(2, 4)],
        "axis1",
    ),
    row(
        "split",
        lambda x: ge.split(x, 3, axis=1),
        lambda x: np.split(x, 3, axis=1),
        [u(2, 6, 5)],
        "sections",
        batch=True,
    ),
    row(
        "split",
        lambda x: ge.split(x, [1, 3], axis=-1),
        lambda x: np.split(x, [1, 3], axis=-1),
        [X],
        "indices",
    ),
    row(
        "split",
        lambda x: ge.split(x, [-3, -1]),
        lambda x: np.split(x, [-3, -1]),
        [u(5, 2)],
        "negative-indices",
    ),
    row(
        "split",
        lambda x: ge.split(x, [2, 2, 9]),
        lambda x: np.split(x, [2, 2, 9]),
        [u(5, 2)],
        "empty-pieces",
    ),
    row(
        "split",
        lambda x: ge.split(x, [1, 2], axis=1),
        lambda x: np.split(x, [1, 2], axis=1),
        [X],
        "symbolic",
        batch=True,
    ),
    row(
        "split",
        lambda x: [p * p for p in ge.split(x, 2, axis=-1)],
        lambda x: [p * p for p in np.split(x, 2, axis=-1)],
        [X],
        "order2",
        order2=True,
    ),
]

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- shape inference with symbolic dims ------------------------------------------------


@pytest.fixture
def g():
    return ge.Graph()


def test_reshape_infers_symbolic_sizes(g):
    x = g.placeholder("x", (None, 3, 4))
    assert ge.reshape(x, (-1, 12)).shape == ("N", 12)
    assert ge.reshape(x, (-1, 4)).shape == (None, 4)
    assert ge.reshape(x, (2, -1, 3)).shape == (2, None, 3)
    assert ge.reshape(g.placeholder("s", (None, "T", 4)), (-1, 4)).shape == (None, 4)


def test_reshape_back_of_two_symbols_differentiates(g):
    # reshape's gradient reads the input's shape when it runs (reshape_like).
    x = g.placeholder("x", ("B", "T", 3))
    y = ge.reshape(x, (-1, 3))
    loss = ge.sum(ge.tanh(y) * g.constant(np.arange(3.0, dtype=np.float32)))
    result = ge.gradcheck(g, loss, ["x"], {"x": u(2, 4, 3)})
    assert result.ok, str(result)


def test_symbolic_dims_survive_where_they_can(g):
    x = g.placeholder("x", (None, 1, 4))
    assert ge.broadcast_to(x, (-1, 3, 4)).shape == ("N", 3, 4)
    assert ge.squeeze(x).shape == ("N", 4)
    assert ge.concatenate([x, x], axis=2).shape == ("N", 1, 8)
    assert ge.concatenate([x, x], axis=0).shape == (None, 1, 4)
    assert [p.shape for p in ge.split(x, [1, 3], axis=2)] == [("N", 1, 1), ("N", 1, 2), ("N", 1, 1)]


def test_concatenate_along_two_symbolic_sizes_differentiates(g):
    # The gradient splits dy at sizes read when it runs (split_like).
    a, b = g.placeholder("a", ("A", 3)), g.placeholder("b", ("B", 3))
    y = ge.concatenate([a, ge.tanh(b), a], axis=0)
    assert y.shape == (None, 3)
    loss = ge.sum(y * y * g.constant(np.array([1.0, 2.0, 3.0], np.float32)))
    result = ge.gradcheck(g, loss, ["a", "b"], {"a": u(2, 3), "b": u(4, 3)})
    assert result.ok, str(result)


def test_split_returns_a_list_even_for_one_piece(g):
    x = g.placeholder("x", (None, 6))
    pieces = ge.split(x, 1, axis=1)
    assert isinstance(pieces, list) and len(pieces) == 1 and pieces[0].shape == ("N", 6)


def test_split_gradient_gives_zeros_to_unused_pieces(g):
    x = g.placeholder("x", (2, 6))
    _, middle, _ = ge.split(x, [1, 4], axis=1)
    loss = ge.sum(middle * middle)
    value = u(2, 6)
    tg = ge.gradients(g, loss, ["x"])
    grad = ge.run(tg, tg.gradient.grads["x"], {"x": value.astype(np.float32)})
    expected = np.zeros((2, 6))
    expected[:, 1:4] = 2 * value[:, 1:4]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_helpers_are_internal():
    for name in ("reshape_like", "split_like"):
        assert name not in ge.__all__ and callable(getattr(api, name))
    for name in ("reshape", "transpose", "split", "matmul"):
        assert name in ge.__all__


# -- Tensor methods ------------------------------------------------------------------


def test_tensor_methods_match_numpy(g):
    x = g.placeholder("x", (2, 3, 4))
    outs = [
        x.T,
        x.reshape(4, -1),
        x.reshape((6, 4)),
        x.transpose(),
        x.transpose(1, 0, 2),
        x.transpose((2, 0, 1)),
        x.sum(),
        x.mean(axis=1),
        x.max(axis=-1, keepdims=True),
        x.min(axis=(0, 2)),
        x.astype("int32"),
        x[1, :, ::-1],
    ]
    v = X.astype(np.float32)
    expected = [
        v.T,
        v.reshape(4, -1),
        v.reshape((6, 4)),
        v.transpose(),
        v.transpose(1, 0, 2),
        v.transpose((2, 0, 1)),
        v.sum(),
        v.mean(axis=1),
        v.max(axis=-1, keepdims=True),
        v.min(axis=(0, 2)),
        v.astype(np.int32),
        v[1, :, ::-1],
    ]
    got = ge.run(g, outs, {"x": v})
    for tensor, want in zip(outs, expected):
        np.testing.assert_allclose(got[tensor.name], want, rtol=1e-6)
        assert got[tensor.name].dtype == want.dtype


# -- inputs that must fail ------------------------------------------------------------

BUILD_ERRORS = [
    (lambda x: ge.reshape(x, (5, 5)), "24 elements do not fit into 25"),
    (lambda x: ge.reshape(x, (-1, 5)), "24 elements do not divide into rows of 5"),
    (lambda x: ge.reshape(x, (-1, -1)), "only one size can be -1"),
    (lambda x: ge.transpose(x, (0, 0, 1)), "not a permutation"),
    (lambda x: ge.transpose(x, (1, 0)), "do not match a tensor of rank 3"),
    (lambda x: ge.expand_dims(x, 4), "axis 4 is out of range for a tensor of rank 4"),
    (lambda x: ge.squeeze(x, 1), "cannot squeeze axis 1 of shape (2, 3, 4): its size is 3"),
    (lambda x: ge.broadcast_to(x, (2, 5, 4)), "axis 1 has size 3, which is neither 1 nor 5"),
    (lambda x: ge.broadcast_to(x, (3, 4)), "the target has fewer dims"),
    (lambda x: ge.broadcast_to(x, (-1, 2, 3, 4)), "axis 0 is new"),
    (lambda x: ge.concatenate([x, x], axis=3), "axis 3 is out of range for a tensor of rank 3"),
    (lambda x: ge.concatenate([x, ge.cast(x, "float64")]), "different dtypes"),
    (lambda x: ge.concatenate([x, x[:, :2]], axis=2), "only axis 2 may differ"),
    (lambda x: ge.stack([x, x[:, :2]]), "must have one shape"),
    (lambda x: ge.stack([x, x], axis=-5), "axis -5 is out of range"),
    (lambda x: ge.split(x, 2, axis=1), "axis 1 of size 3 does not split into 2 equal sections"),
    (lambda x: ge.split(x, [3, 1], axis=2), "decrease on an axis of size 4"),
    (lambda x: ge.split(x, 2, axis=-4), "axis -4 is out of range"),
]


@pytest.mark.parametrize("build, fragment", BUILD_ERRORS, ids=[f[1][:30] for f in BUILD_ERRORS])
def test_build_errors(g, build, fragment):
    x = g.placeholder("x", (2, 3, 4))
    with pytest.raises(ge.ShapeError) as info:
        build(x)
    assert fragment in str(info.value)


def test_build_errors_with_symbolic_dims(g):
    x = g.placeholder("x", (None, 3))
    with pytest.raises(ge.ShapeError, match="4 elements is not a multiple of 3, whatever the size"):
        ge.reshape(x, (4,))
    with pytest.raises(ge.ShapeError, match="must be non-negative and increasing"):
        ge.split(x, [-1], axis=0)


RUN_ERRORS = [
    # (build on x of shape (N, 3, 4), N fed, fragment)
    (lambda x, ids: ge.reshape(x, (-1, 8)), 3, "cannot reshape array of size 36"),
    (lambda x, ids: ge.squeeze(x, 0), 2, "size not equal to one"),
    (lambda x, ids: ge.broadcast_to(x, (5, 3, 4)), 2, "broadcast"),
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
