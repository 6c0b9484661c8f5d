"""matmul against numpy.matmul (1-D promotion, batches, broadcasting), its
gradients to second order, and the inputs it must refuse."""

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(3)


def u(*shape):
    return R.uniform(-1.0, 1.0, size=shape)


def matmul_row(a_shape, b_shape, **options):
    return OpSpec(
        "matmul",
        ge.matmul,
        np.matmul,
        [u(*a_shape), u(*b_shape)],
        id=f"{a_shape}@{b_shape}",
        **options,
    )


SPECS = [
    matmul_row((3, 4), (4, 5), order2=True),
    matmul_row((4,), (4, 5)),
    matmul_row((3, 4), (4,)),
    matmul_row((4,), (4,), order2=True),
    matmul_row((2, 3, 4), (4, 5)),  # a stack times one matrix
    matmul_row((3, 4), (2, 4, 5)),
    matmul_row((2, 1, 3, 4), (5, 4, 6), order2=True),  # both batches broadcast
    matmul_row((4,), (2, 4, 5)),
    matmul_row((2, 3, 4), (4,)),
    matmul_row((2, 3, 4), (2, 4, 5), batch=True),  # a symbolic batch on both
    OpSpec(
        "matmul",
        lambda a, b: a @ b.T,
        lambda a, b: a @ b.T,
        [u(3, 4), u(5, 4)],
        id="operator-transposed",
        order2=True,
    ),
    OpSpec(
        "matmul",
        ge.matmul,
        np.matmul,
        [R.integers(-3, 3, (3, 4)), R.integers(-3, 3, (4, 2))],
        id="int64",
        grad=(),
    ),
]

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


def test_symbolic_batch_times_matrix_infers_and_differentiates():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 4))
    w = g.placeholder("w", (4, 2))
    y = x @ w
    assert y.shape == ("N", 3, 2)
    loss = ge.sum(ge.tanh(y))
    feeds = {"x": u(5, 3, 4).astype(np.float32), "w": u(4, 2).astype(np.float32)}
    result = ge.gradcheck(g, loss, ["x", "w"], feeds)
    assert result.ok, str(result)


def test_vector_shapes_are_inferred_as_numpy_gives_them():
    g = ge.Graph()
    v, m = g.placeholder("v", (4,)), g.placeholder("m", (None, 4, 5))
    assert (v @ m).shape == ("N", 5)
    assert (m @ g.placeholder("k", (5,))).shape == ("N", 4)
    assert (v @ v).shape == ()


def test_two_dim_gradient_is_two_matmuls_of_transposes():
    # The common case gets no reshaping or summing nodes: dA = dy @ B^T, dB = A^T @ dy.
    g = ge.Graph()
    x = g.placeholder("x", (3, 4))
    w = g.parameter("w", np.ones((4, 5), np.float32))
    tg = ge.gradients(g, ge.sum(x @ w), wrt=["x", "w"])
    ops = sorted(tg.node(n).op for n in tg.gradient.nodes if tg.node(n).derived_from == "matmul")
    assert ops == ["matmul", "matmul", "transpose", "transpose"]


@pytest.mark.parametrize(
    "a_shape, b_shape, fragment",
    [
        (
            (None, 3),
            (4, 2),
            (
                "cannot multiply 'x' of shape (N, 3) by 'w' of shape (4, 2): inner "
                "dimensions 3 and 4 differ. Check the shape of 'w', or transpose it"
            ),
        ),
        ((3,), (4,), "inner dimensions 3 and 4 differ"),
        ((2, 3, 4), (3, 4, 5), "batch dimensions (2,) of 'x' and (3,) of 'w' do not broadcast"),
        ((), (3,), "does not take scalars"),
    ],
)
def test_build_errors(a_shape, b_shape, fragment):
    g = ge.Graph()
    x, w = g.placeholder("x", a_shape), g.placeholder("w", b_shape)
    with pytest.raises(ge.ShapeError) as info:
        ge.matmul(x, w, name="layer")
    message = str(info.value)
    assert "node 'layer' (matmul)" in message and "a='x'" in message and "b='w'" in message
    assert fragment in message


def test_dtype_mismatch_is_a_build_error():
    g = ge.Graph()
    x, w = g.placeholder("x", (2, 3)), g.placeholder("w", (3, 2), "float64")
    with pytest.raises(ge.ShapeError, match="different dtypes"):
        x @ w


def test_symbolic_inner_dimension_is_checked_when_run():
    g = ge.Graph()
    x, w = g.placeholder("x", (2, "K")), g.placeholder("w", (4, 2))
    y = x @ w
    assert y.shape == (2, 2)
    with pytest.raises(ge.ExecutionError, match="matmul"):
        ge.run(g, y, {"x": np.ones((2, 5), np.float32), "w": np.ones((4, 2), np.float32)})
