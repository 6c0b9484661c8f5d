"""allreduce and sync_batch_norm on one process (where allreduce is the identity
and sync_batch_norm is batch_norm): forward against numpy, gradients by finite
differences.  Their multi-process behaviour is tested under mpiexec in
tests/training/test_distributed.py."""

import numpy as np
import pytest

import graphengine as ge

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests
from .test_norm import BN_SHAPES, batch_norm_ref

R = np.random.default_rng(14)


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


def sync_batch_norm_ref(x, gamma, beta, mean, var, training):
    y, mean, var = batch_norm_ref(x, gamma, beta, mean, var, training)
    count = x.size // x.shape[1]
    return y, mean, var, np.asarray(count, x.dtype)


SPECS = [
    OpSpec("allreduce", lambda x: ge.allreduce(x), lambda x: x, [u(3, 4)], id="sum", order2=True),
    OpSpec(
        "allreduce",
        lambda x: ge.allreduce(x, reduction="mean"),
        lambda x: x,
        [u(2, 3, 5)],
        id="mean",
        batch=True,
    ),
    OpSpec(
        "allreduce",
        lambda x: ge.allreduce(x),
        lambda x: x,
        [np.arange(6).reshape(2, 3)],
        id="int64",
    ),
    OpSpec("allreduce", lambda x: ge.allreduce(x), lambda x: x, [np.asarray(1.5)], id="scalar"),
]
for shape in BN_SHAPES:
    c = shape[1]
    for training in (True, False):
        SPECS.append(
            OpSpec(
                "sync_batch_norm",
                lambda x, g, b, m, v: ge.sync_batch_norm(x, g, b, m, v, return_stats=True),
                lambda x, g, b, m, v, t=training: sync_batch_norm_ref(x, g, b, m, v, t),
                [
                    u(*shape, low=-2, high=3),
                    u(c, low=0.5, high=2),
                    u(c),
                    u(c),
                    u(c, low=0.5, high=2),
                ],
                id=f"{shape}-training={training}".replace(" ", ""),
                training=training,
                order2=True,
            )
        )

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


@pytest.mark.parametrize(
    "build, fragment",
    [
        (
            lambda g, x: ge.sync_batch_norm(
                x, *[g.parameter(n, np.ones(4, np.float32)) for n in ("g", "b", "m", "v")]
            ),
            "gamma must have shape (3,), one value per channel",
        ),
        (
            lambda g, x: ge.allreduce(ge.cast(x, "int32"), reduction="mean"),
            "reduction='mean' needs a float x",
        ),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment):
    check_build_error(build, fragment, (None, 3, 8, 7))


def test_sync_batch_norm_on_one_process_is_batch_norm():
    """Same forward bits; gradients equal to float64 rounding (the rules divide by
    the count at different points)."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 3, 4), "float64")
    params = [g.parameter(n, v) for n, v in [("g", u(3, low=0.5, high=2)), ("b", u(3))]]
    stats = [
        g.parameter(n, v, trainable=False) for n, v in [("m", u(3)), ("v", u(3, low=0.5, high=2))]
    ]
    sync = ge.sync_batch_norm(x, *params, *stats, return_stats=True)
    plain = ge.batch_norm(x, *params, *stats, return_stats=True)
    loss_a = ge.sum(ge.square(sync[0]))
    loss_b = ge.sum(ge.square(plain[0]))
    feeds = {"x": u(5, 3, 4)}
    forward = ge.run(g, [sync[0], plain[0]], feeds, training=True)
    assert np.array_equal(forward[sync[0].name], forward[plain[0].name])
    ga, gb = ge.gradients(g, loss_a, ["x", "g", "b"]), ge.gradients(g, loss_b, ["x", "g", "b"])
    out_a = ge.run(ga, [ga.gradient.grads[w] for w in ("x", "g", "b")], feeds, training=True)
    out_b = ge.run(gb, [gb.gradient.grads[w] for w in ("x", "g", "b")], feeds, training=True)
    for a, b in zip(out_a.values(), out_b.values()):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
