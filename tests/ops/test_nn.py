"""Softmax, log_softmax and dropout against naive numpy references written here,
and their gradients by finite differences."""

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests

R = np.random.default_rng(3)


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


# -- references ---------------------------------------------------------------------------


def softmax_ref(x, axis):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_ref(x, axis):
    return x - np.log(np.sum(np.exp(x), axis=axis, keepdims=True))


def dropout_ref(x, rate, seed, training):
    if not training:
        return x, np.ones_like(x)
    keep = np.random.default_rng((0, seed)).random(x.shape) >= rate
    mask = np.where(keep, 1 / (1 - rate), 0).astype(x.dtype)
    return x * mask, mask


# -- spec rows ---------------------------------------------------------------------------

SPECS = []
for axis in (-1, 0, 1):
    SPECS += [
        OpSpec(
            "softmax",
            lambda x, a=axis: ge.softmax(x, axis=a),
            lambda x, a=axis: softmax_ref(x, a),
            [u(2, 3, 4, low=-3, high=3)],
            id=f"axis={axis}",
            order2=True,
        ),
        OpSpec(
            "log_softmax",
            lambda x, a=axis: ge.log_softmax(x, axis=a),
            lambda x, a=axis: log_softmax_ref(x, a),
            [u(2, 3, 4, low=-3, high=3)],
            id=f"axis={axis}",
            order2=True,
        ),
    ]
SPECS += [
    OpSpec(
        "softmax",
        ge.softmax,
        lambda x: softmax_ref(x - 1000, -1),
        [np.array([[1000.0, 999.0, 1001.0]])],
        id="large",
        grad=(),
    ),
    OpSpec(
        "log_softmax",
        ge.log_softmax,
        lambda x: log_softmax_ref(x + 1000, -1),
        [np.array([[-1000.0, -1002.0, -999.0]])],
        id="small",
        grad=(),
    ),
]

for training in (False, True):
    for rate, seed in [(0.5, 0), (0.25, 7)]:
        SPECS.append(
            OpSpec(
                "dropout",
                lambda x, r=rate, s=seed: ge.dropout(x, r, s, return_mask=True),
                lambda x, r=rate, s=seed, t=training: dropout_ref(x, r, s, t),
                [u(3, 4, 5)],
                id=f"rate={rate}-seed={seed}-training={training}",
                training=training,
            )
        )

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- inputs that must fail -----------------------------------------------------------------


@pytest.mark.parametrize(
    "build, fragment",
    [
        (lambda g, x: ge.dropout(x, 1.0), "rate must be in [0, 1)"),
        (lambda g, x: ge.softmax(x, axis=4), "axis 4 is out of range"),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment):
    check_build_error(build, fragment, (None, 3, 8, 7))


# -- dropout ----------------------------------------------------------------------------------


def test_dropout_masks_scale_and_reproduce():
    g = ge.Graph()
    x = g.placeholder("x", (200, 50), "float32")
    y, mask = ge.dropout(x, 0.3, return_mask=True)
    _, mask2 = ge.dropout(x, 0.3, return_mask=True)
    feeds = {"x": np.ones((200, 50), np.float32)}
    first = ge.run(g, [y, mask, mask2], feeds, training=True, seed=5)
    again = ge.run(g, [mask], feeds, training=True, seed=5)[mask.name]
    other = ge.run(g, [mask], feeds, training=True, seed=6)[mask.name]
    m = first[mask.name]
    assert set(np.unique(m)) == {np.float32(0), np.float32(1 / 0.7)}
    assert abs((m == 0).mean() - 0.3) < 0.02
    np.testing.assert_array_equal(first[y.name], m)  # y = x * mask with x = 1
    np.testing.assert_array_equal(again, m)  # same run seed, same mask
    assert not np.array_equal(other, m)  # another run seed, another mask
    assert not np.array_equal(first[mask2.name], m)  # another layer, another seed
    inference = ge.run(g, [y, mask], feeds)
    np.testing.assert_array_equal(inference[y.name], feeds["x"])
    np.testing.assert_array_equal(inference[mask.name], 1)
