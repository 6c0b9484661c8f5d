"""batch_norm and training_flag against a naive numpy reference written here, and
their gradients by finite differences (to second order in both modes)."""

import warnings

import numpy as np
import pytest

import graphengine as ge
from graphengine.gradcheck import to_float64

from .spec import OpSpec, check_build_error, forward_tests, gradient_tests

R = np.random.default_rng(8)
api = ge.ops.api


def u(*shape, low=-1.0, high=1.0):
    return R.uniform(low, high, size=shape)


# -- references ---------------------------------------------------------------------------


def batch_norm_ref(x, gamma, beta, mean, var, training, epsilon=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + epsilon)
    return (gamma.reshape(shape) * y + beta.reshape(shape)).astype(x.dtype), mean, var


# -- spec rows ---------------------------------------------------------------------------

SPECS = []
for training in (False, True):
    SPECS.append(
        OpSpec(
            "training_flag",
            api.training_flag,
            lambda x, t=training: np.asarray(float(t), x.dtype),
            [u(2)],
            id=f"training={training}",
            training=training,
        )
    )

BN_SHAPES = [(4, 3), (3, 2, 4, 5), (2, 3, 5)]
for shape in BN_SHAPES:
    c = shape[1]
    for training in (True, False):
        SPECS.append(
            OpSpec(
                "batch_norm",
                lambda x, g, b, m, v: ge.batch_norm(x, g, b, m, v, return_stats=True),
                lambda x, g, b, m, v, t=training: batch_norm_ref(x, g, b, m, v, t),
                [
                    u(*shape, low=-2, high=3),
                    u(c, low=0.5, high=2),
                    u(c),
                    u(c),
                    u(c, low=0.5, high=2),
                ],
                id=f"{shape}-training={training}".replace(" ", ""),
                training=training,
                order2=not training,
            )
        )

test_forward = forward_tests(SPECS)
test_gradient = gradient_tests(SPECS)


# -- inputs that must fail -----------------------------------------------------------------


@pytest.mark.parametrize(
    "build, fragment",
    [
        (
            lambda g, x: ge.batch_norm(
                x, *[g.parameter(n, np.ones(4, np.float32)) for n in ("g", "b", "m", "v")]
            ),
            "gamma must have shape (3,), one value per channel",
        ),
    ],
)
def test_build_errors_name_node_and_problem(build, fragment):
    check_build_error(build, fragment, (None, 3, 8, 7))


# -- gradients through the batch statistics ---------------------------------------------


def test_batch_norm_second_order_in_training_mode():
    """Hessian-vector product through the batch statistics (training run)."""
    g = ge.Graph()
    x = g.placeholder("x", (None, 2, 2, 3), "float64")  # symbolic batch
    gamma = g.placeholder("gamma", (2,), "float64")
    beta = g.parameter("beta", np.array([0.1, -0.2]))
    stats = g.parameter("stats", np.array([0.3, 0.5]), trainable=False)
    y = ge.batch_norm(x, gamma, beta, stats, stats)
    loss = ge.sum(ge.square(y) * g.constant(u(3, 2, 2, 3)))
    feeds = {"x": u(3, 2, 2, 3), "gamma": np.array([1.5, 0.7])}
    wrt = ["x", "gamma"]
    tg = ge.gradients(to_float64(g), loss.name, wrt)
    grads = [tg.tensor(tg.gradient.grads[w]) for w in wrt]
    vs = {w: R.standard_normal(feeds[w].shape) for w in wrt}
    dot = ge.add_n([ge.sum(gr * tg.constant(vs[w])) for gr, w in zip(grads, wrt)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ge.GradientWarning)
        hg = ge.gradients(tg, dot, wrt)
    hv = ge.run(hg, [hg.gradient.grads[w] for w in wrt], feeds, training=True)
    eps = 1e-5

    def grad_at(sign):
        shifted = {w: feeds[w] + sign * eps * vs[w] for w in wrt}
        out = ge.run(tg, [gr.name for gr in grads], shifted, training=True)
        return [out[gr.name] for gr in grads]

    for w, plus, minus in zip(wrt, grad_at(1), grad_at(-1)):
        np.testing.assert_allclose(
            hv[hg.gradient.grads[w]],
            (plus - minus) / (2 * eps),
            rtol=1e-4,
            atol=1e-6,
            err_msg=f"H v wrt {w}",
        )


def test_batch_norm_inference_gradient_is_scaled_dy():
    g = ge.Graph()
    x = g.placeholder("x", (4, 3), "float64")
    gamma = g.parameter("gamma", np.array([2.0, 0.5, 1.0]))
    beta = g.parameter("beta", np.zeros(3))
    mean = g.parameter("mean", np.array([0.1, 0.2, 0.3]), trainable=False)
    var = g.parameter("var", np.array([4.0, 1.0, 0.25]), trainable=False)
    y = ge.batch_norm(x, gamma, beta, mean, var, epsilon=1e-3)
    tg = ge.gradients(g, ge.sum(y), ["x"])
    dx = ge.run(tg, tg.gradient.grads["x"], {"x": u(4, 3)})
    np.testing.assert_allclose(
        dx,
        np.broadcast_to(
            np.array([2.0, 0.5, 1.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 1e-3), (4, 3)
        ),
    )
