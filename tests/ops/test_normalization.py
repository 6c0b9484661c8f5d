"""layer_norm and instance_norm against numpy references written here, their
gradients by finite differences (second order included), and their refusals."""

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests

R = np.random.default_rng(12)


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


def layer_norm_ref(x, scale, bias, axis=-1, epsilon=1e-5):
    axes = tuple(range(axis % x.ndim, x.ndim))
    xs = x.astype(np.float64)
    mean = xs.mean(axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(xs.var(axis=axes, keepdims=True) + epsilon)
    y = (xs - mean) * inv_std * scale + bias
    return tuple(v.astype(x.dtype) for v in (y, mean, inv_std))


def instance_norm_ref(x, scale, bias, epsilon=1e-5):
    axes = tuple(range(2, x.ndim))
    shape = (-1,) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(x.var(axis=axes, keepdims=True) + epsilon)
    return (y * scale.reshape(shape) + bias.reshape(shape)).astype(x.dtype)


SPECS = [
    OpSpec(
        "layer_norm",
        lambda x, s, b: ge.layer_norm(x, s, b, return_stats=True),
        layer_norm_ref,
        [u(3, 5, low=-2, high=3), u(5, low=0.5, high=2), u(5)],
        order2=True,
    ),
    OpSpec(
        "layer_norm",
        lambda x, s, b: ge.layer_norm(x, s, b, axis=1, return_stats=True),
        lambda x, s, b: layer_norm_ref(x, s, b, axis=1),
        [u(2, 3, 4, low=-2, high=3), u(3, 4, low=0.5, high=2), u(4)],
        id="axis1-bcast",
        order2=True,
    ),
    OpSpec(
        "layer_norm",
        lambda x, s, b: ge.layer_norm(x, s, b, axis=-2, epsilon=0.1, return_stats=True),
        lambda x, s, b: layer_norm_ref(x, s, b, axis=-2, epsilon=0.1),
        [u(2, 3, 4), u(1, 4), u(3, 1)],
        id="eps",
    ),
    OpSpec(
        "instance_norm",
        ge.instance_norm,
        instance_norm_ref,
        [u(2, 3, 4, 5, low=-2, high=3), u(3, low=0.5, high=2), u(3)],
        order2=True,
    ),
    OpSpec(
        "instance_norm",
        lambda x, s, b: ge.instance_norm(x, s, b, epsilon=0.01),
        lambda x, s, b: instance_norm_ref(x, s, b, epsilon=0.01),
        [u(3, 2, 7), u(2), u(2)],
        id="1d",
    ),
]

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


def test_only_the_statistics_outputs_reach_the_loss():
    """Gradients through mean and inv_std alone (y unused) match finite differences."""
    g = ge.Graph()
    x = g.placeholder("x", (3, 4), "float64")
    _, mean, inv_std = ge.layer_norm(
        x, g.constant(np.ones(4)), g.constant(np.zeros(4)), return_stats=True
    )
    loss = ge.sum(mean * g.constant(u(3, 1))) + ge.sum(inv_std * g.constant(u(3, 1)))
    result = ge.gradcheck(g, loss, ["x"], {"x": u(3, 4, low=-2, high=2)})
    assert result.ok, result


def test_float16_is_normalized_in_float32():
    x = (R.standard_normal((2, 64)) * 100 + 1000).astype(np.float16)
    g = ge.Graph()
    t = g.placeholder("x", x.shape, "float16")
    y = ge.layer_norm(t, g.constant(np.ones(64, np.float16)), g.constant(np.zeros(64, np.float16)))
    got = ge.run(g, y, {"x": x})
    want = layer_norm_ref(x.astype(np.float32), np.ones(64), np.zeros(64))[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-3)


@pytest.mark.parametrize(
    "build, shape, fragment",
    [
        (
            lambda g, x: ge.layer_norm(
                x, g.constant(np.ones(3, np.float32)), g.constant(np.zeros(5, np.float32))
            ),
            (None, 5),
            "scale of shape (3,) does not broadcast to the normalized axes (5,)",
        ),
        (
            lambda g, x: ge.layer_norm(
                x, g.constant(np.ones(5, np.float32)), g.constant(np.zeros(5, np.float32)), axis=2
            ),
            (None, 5),
            "axis 2 is out of range",
        ),
        (
            lambda g, x: ge.instance_norm(
                x, g.constant(np.ones(4, np.float32)), g.constant(np.zeros(3, np.float32))
            ),
            (None, 3, 6),
            "scale must have shape (3,), one value per channel",
        ),
        (
            lambda g, x: ge.instance_norm(
                x, g.constant(np.ones(3, np.float32)), g.constant(np.zeros(3, np.float32))
            ),
            (None, 3),
            "rank >= 3",
        ),
    ],
)
def test_build_errors_name_the_problem(build, shape, fragment):
    check_build_error(build, fragment, shape)
