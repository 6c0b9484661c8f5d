"""Elementwise ops against numpy, and their gradients by finite differences."""

import math

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, forward_tests, gradient_tests

R = np.random.default_rng(0)


def u(*shape, low=-2.0, high=2.0):
    return R.uniform(low, high, size=shape)


def away_from_zero(*shape):
    """Values with |x| in [0.5, 2]: keeps abs, sign and kinks out of the way."""
    return R.uniform(0.5, 2.0, size=shape) * R.choice([-1.0, 1.0], size=shape)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gelu(x):
    c = float(np.sqrt(2 / np.pi))
    return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3)))


def erf(x):
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


def gelu_exact(x):
    return x * 0.5 * (1 + np.vectorize(math.erf, otypes=[np.float64])(x / np.sqrt(2.0)))


def elu(x, alpha=1.0):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


BINARY = [
    ("add", ge.add, np.add),
    ("subtract", ge.subtract, np.subtract),
    ("multiply", ge.multiply, np.multiply),
    ("maximum", ge.maximum, np.maximum),
    ("minimum", ge.minimum, np.minimum),
]
BROADCAST_SHAPES = [((2, 3), (2, 3)), ((4, 3), (3,)), ((2, 1, 3), (4, 1)), ((), (2, 3))]

SPECS = [
    OpSpec(name, fn, ref, [u(*a), u(*b)], id=f"{a}x{b}")
    for name, fn, ref in BINARY
    for a, b in BROADCAST_SHAPES
] + [
    OpSpec("divide", ge.divide, np.divide, [u(3, 4), away_from_zero(4)], id="broadcast"),
    OpSpec(
        "divide",
        lambda x, y: x / y,
        np.divide,
        [u(2, 3), away_from_zero(2, 3)],
        id="operator",
        order2=True,
    ),
    OpSpec(
        "divide", ge.divide, np.divide, [np.arange(1, 5), np.array([2, 2, 2, 2])], id="int", grad=()
    ),
    OpSpec("power", ge.power, np.power, [u(2, 3, low=0.5, high=2), u(3)], id="broadcast"),
    OpSpec("power", lambda x: x**3.0, lambda x: x**3.0, [u(5)], id="cube", order2=True),
    OpSpec("negative", lambda x: -x, np.negative, [u(2, 3)]),
    OpSpec("square", ge.square, np.square, [u(3, 2)], order2=True),
    OpSpec("abs", ge.abs, np.abs, [away_from_zero(3, 4)]),
    OpSpec("sign", ge.sign, np.sign, [np.array([-2.0, 0.0, 3.0])]),
    OpSpec("exp", ge.exp, np.exp, [u(2, 3)], order2=True),
    OpSpec("log", ge.log, np.log, [u(2, 3, low=0.2, high=3.0)], order2=True),
    OpSpec("sqrt", ge.sqrt, np.sqrt, [u(4, low=0.2, high=3.0)]),
    OpSpec("sin", ge.sin, np.sin, [u(3, 2)], order2=True),
    OpSpec("cos", ge.cos, np.cos, [u(3, 2)], order2=True),
    OpSpec("tanh", ge.tanh, np.tanh, [u(4, 3)], batch=True, order2=True),
    OpSpec("sigmoid", ge.sigmoid, sigmoid, [u(4, 3, low=-8, high=8)], order2=True),
    OpSpec("relu", ge.relu, lambda x: np.maximum(x, 0), [away_from_zero(3, 4)]),
    OpSpec(
        "leaky_relu",
        lambda x: ge.leaky_relu(x, alpha=0.2),
        lambda x: np.where(x > 0, x, 0.2 * x),
        [away_from_zero(3, 4)],
    ),
    OpSpec("elu", ge.elu, elu, [away_from_zero(3, 4)]),
    OpSpec("softplus", ge.softplus, lambda x: np.logaddexp(0, x), [u(3, 4, low=-30, high=30)]),
    OpSpec("gelu", ge.gelu, gelu, [u(3, 4, low=-4, high=4)], order2=True),
    OpSpec(
        "gelu",
        lambda x: ge.gelu(x, approximate="none"),
        lambda x: gelu_exact(x).astype(x.dtype),
        [u(3, 4, low=-4, high=4)],
        id="exact",
        batch=True,
        order2=True,
    ),
    OpSpec("erf", ge.erf, erf, [u(4, 3, low=-3, high=3)], order2=True),
    OpSpec(
        "erf",
        ge.erf,
        erf,
        [np.array([-7.0, -5.9, -1e-9, 0.0, 2e-300, 0.3, 2.5, 6.1])],
        id="tails",
        rtol=1e-14,
    ),
    OpSpec(
        "clip",
        lambda x: ge.clip(x, -1.0, 0.5),
        lambda x: np.clip(x, -1.0, 0.5),
        [np.array([-2.0, -0.7, 0.1, 0.4, 1.5])],
    ),
    OpSpec(
        "clip",
        lambda x: ge.clip(x, a_max=0.5),
        lambda x: np.clip(x, None, 0.5),
        [np.array([-2.0, 0.1, 1.5])],
        id="upper",
    ),
    OpSpec(
        "where",
        lambda c, x, y: ge.where(c, x, y),
        np.where,
        [np.array([[True, False, True]]), u(2, 3), u(3)],
        grad=(1, 2),
    ),
    OpSpec(
        "where",
        lambda c, x: ge.where(c, x, 0.0),
        lambda c, x: np.where(c, x, 0.0),
        [np.array([True, False]), u(2)],
        id="scalar",
    ),
    OpSpec("equal", lambda x, y: x == y, np.equal, [np.array([1.0, 2.0]), np.array([1.0, 3.0])]),
    OpSpec("not_equal", lambda x, y: x != y, np.not_equal, [np.array([1, 2]), np.array([1, 3])]),
    OpSpec("greater", lambda x, y: x > y, np.greater, [u(3, 2), u(2)]),
    OpSpec("greater_equal", lambda x, y: x >= y, np.greater_equal, [u(3), u(3)]),
    OpSpec("less", lambda x, y: x < y, np.less, [u(3), u(1)]),
    OpSpec("less_equal", lambda x, y: x <= y, np.less_equal, [u(3), u(3)]),
    OpSpec(
        "logical_and",
        lambda x, y: x & y,
        np.logical_and,
        [np.array([True, False, True]), np.array([True, True, False])],
    ),
    OpSpec(
        "logical_or",
        lambda x, y: x | y,
        np.logical_or,
        [np.array([True, False, False]), np.array([True, True, False])],
    ),
    OpSpec("logical_not", lambda x: ~x, np.logical_not, [np.array([True, False])]),
    OpSpec("identity", ge.identity, lambda x: x, [u(2, 2)]),
    OpSpec("stop_gradient", ge.stop_gradient, lambda x: x, [u(2, 2)]),
    OpSpec(
        "cast",
        lambda x: ge.cast(x, "int32"),
        lambda x: x.astype(np.int32),
        [np.array([1.7, -1.7, 0.2])],
        id="to_int",
        grad=(),
    ),
    OpSpec(
        "cast",
        lambda x: ge.cast(x, "float32") * 1.0,
        lambda x: x.astype(np.float32),
        [u(3)],
        id="to_float32",
        check_float32=False,
        grad_rtol=1e-3,
        grad_atol=1e-4,
        eps=1e-3,
    ),
    OpSpec(
        "add_n",
        lambda a, b, c: ge.add_n([a, b, c]),
        lambda a, b, c: a + b + c,
        [u(2, 3), u(3), u(2, 3)],
    ),
    OpSpec(
        "add_n",
        lambda a, b, c: ge.add_n([a, b, c]),
        lambda a, b, c: a + b + c,
        [u(3), u(3), u(2, 3)],
        id="grows",
    ),
    OpSpec(
        "clip",
        lambda x: ge.clip(x, 1.0, -1.0),
        lambda x: np.clip(x, 1.0, -1.0),
        [u(4)],
        id="min-above-max",
    ),
]

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


def test_python_scalar_takes_tensor_dtype():
    g = ge.Graph()
    x = g.placeholder("x", (2,), "float32")
    assert (x * 2).dtype == np.float32
    assert (2.0 - x).dtype == np.float32
    assert (x**2).dtype == np.float32


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda x, y: x + y, "shapes (N, 3) and (4,) do not broadcast"),
        (lambda x, y: ge.maximum(x, ge.cast(y, "float64")), "different dtypes"),
        (lambda x, y: ge.exp(ge.cast(x, "int32")), "dtype int32, expected one of"),
        (lambda x, y: ge.clip(x), "give a_min, a_max or both"),
    ],
)
def test_build_errors_name_node_and_operands(build, fragment):
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    y = g.placeholder("y", (4,))
    with pytest.raises(ge.ShapeError, match="node '") as info:
        build(x, y)
    assert fragment in str(info.value)


def test_broadcast_error_message_names_both_shapes():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    w = g.placeholder("w", (4,))
    with pytest.raises(ge.ShapeError) as info:
        ge.add(x, w, name="bad")
    message = str(info.value)
    assert "node 'bad' (add)" in message and "(N, 3)" in message and "(4,)" in message


def test_sigmoid_and_softplus_do_not_overflow():
    g = ge.Graph()
    x = g.placeholder("x", (3,), "float32")
    feeds = {"x": np.array([-1e4, 0, 1e4], np.float32)}
    sig, soft = ge.run(g, [ge.sigmoid(x), ge.softplus(x)], feeds).values()
    assert np.all(np.isfinite(sig))
    np.testing.assert_allclose(soft, [0, np.log(2), 1e4], rtol=1e-6)


def test_sigmoid_keeps_relative_accuracy_for_negative_inputs():
    g = ge.Graph()
    x = g.placeholder("x", (5,), "float32")
    xv = np.array([-30.0, -15.0, -8.0, 0.0, 8.0], np.float32)
    expected = 1 / (1 + np.exp(-xv.astype(np.float64)))
    np.testing.assert_allclose(ge.run(g, ge.sigmoid(x), {"x": xv}), expected, rtol=1e-6)


def test_truth_value_of_tensor_is_an_error():
    g = ge.Graph()
    x = g.placeholder("x", ())
    with pytest.raises(ge.GraphError, match="truth value"):
        bool(x > 0)
