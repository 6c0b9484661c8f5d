"""Property tests (hypothesis, seeded): broadcasting agrees with numpy, and the
gradient of a broadcast input is summed back to exactly its shape."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import graphengine as ge


@st.composite
def broadcast_pair(draw):
    shapes = draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4)
    )
    symbolic = draw(st.booleans())
    return shapes.input_shapes, symbolic


@settings(max_examples=60, deadline=None, derandomize=True)
@given(broadcast_pair())
def test_broadcast_inference_and_gradients_match_numpy(case):
    (shape_a, shape_b), symbolic = case
    g = ge.Graph()
    # A leading dim can be declared symbolic; the feed binds it.
    decl_a = (None,) + shape_a[1:] if symbolic and shape_a and shape_a[0] > 1 else shape_a
    a = g.placeholder("a", decl_a, "float64")
    b = g.placeholder("b", shape_b, "float64")
    y = a * b
    rng = np.random.default_rng(0)
    av, bv = rng.normal(size=shape_a), rng.normal(size=shape_b)
    expected = av * bv
    assert len(y.shape) == expected.ndim
    assert all(not isinstance(d, int) or d == n for d, n in zip(y.shape, expected.shape))
    weights = rng.normal(size=expected.shape)
    ge.sum(y * g.constant(weights), name="loss")
    tg = ge.gradients(g, "loss", wrt=["a", "b"])
    out = ge.run(tg, ["gradients/a", "gradients/b"], {"a": av, "b": bv})
    # d/da sum(w * a * b) = sum over the broadcast axes of w * b, shaped like a.
    grad_a = np.broadcast_to(weights * bv, expected.shape)
    grad_b = np.broadcast_to(weights * av, expected.shape)
    np.testing.assert_allclose(out["gradients/a"], _sum_to(grad_a, shape_a), atol=1e-12)
    np.testing.assert_allclose(out["gradients/b"], _sum_to(grad_b, shape_b), atol=1e-12)


def _sum_to(x: np.ndarray, shape: tuple) -> np.ndarray:
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1
    )
    return np.sum(x, axis=axes, keepdims=True).reshape(shape)
