"""The reverse-mode pass: structure of the gradient graph, blocking and
disconnection reports, seeds, higher order, waste and growth."""

import warnings

import numpy as np
import pytest

import graphengine as ge
from graphengine.ops.registry import REGISTRY

R = np.random.default_rng(0)


def added_nodes(tg):
    return [tg.node(n) for n in tg.gradient.nodes]


def ops_of(tg):
    return [n.op for n in added_nodes(tg)]


def affine():
    g = ge.Graph("affine")
    x = g.placeholder("x", (None, 3))
    w = g.parameter("w", R.normal(size=(3,)).astype(np.float32))
    b = g.parameter("b", np.zeros(3, np.float32))
    with g.name_scope("layer1"):
        y = ge.tanh(x * w + b)
    ge.mean(y * y, name="loss")
    return g


def test_default_wrt_is_every_trainable_parameter_and_outputs_are_named():
    g = affine()
    g.parameter("frozen", np.ones(3, np.float32), trainable=False)
    tg = ge.gradients(g, "loss")
    assert list(tg.gradient.grads) == ["w", "b"]
    assert tg.gradient.grads == {"w": "gradients/w", "b": "gradients/b"}
    assert tg.outputs == ["loss", "gradients/w", "gradients/b"]
    assert tg.gradient.loss == "loss"
    assert len(g) < len(tg)  # the forward graph is left alone
    assert "gradients/w" not in g


def test_gradient_nodes_live_under_gradients_scope_and_link_to_forward_nodes():
    tg = ge.gradients(affine(), "loss", wrt=["w", "x"])
    for node in added_nodes(tg):
        assert node.name.startswith("gradients/")
        assert node.scope.startswith("gradients")
        assert node.derived_from in tg and not tg.node(node.derived_from).name.startswith(
            "gradients/"
        )
    scoped = [n for n in added_nodes(tg) if n.derived_from.startswith("layer1/")]
    assert scoped and all(n.scope == "gradients/layer1" for n in scoped)


def test_values_match_finite_differences():
    g = affine()
    x = R.normal(size=(5, 3)).astype(np.float32)
    result = ge.gradcheck(g, "loss", ["w", "b", "x"], {"x": x})
    assert result.ok, str(result)


def test_fan_out_is_summed_in_one_add_n():
    g = ge.Graph()
    x = g.placeholder("x", (4,))
    loss = ge.sum(ge.sin(x) + ge.cos(x) + ge.exp(x))
    tg = ge.gradients(g, loss, wrt=["x"])
    sums = [n for n in added_nodes(tg) if n.op == "add_n"]
    assert len(sums) == 1 and len(sums[0].inputs) == 3
    assert sums[0].derived_from == "x"
    assert ge.gradcheck(g, loss, ["x"], {"x": R.normal(size=4)}).ok


def test_broadcast_input_gradient_is_reduced_to_its_shape_with_symbolic_batch():
    g = ge.Graph()
    x = g.placeholder("x", (None, 1, 3), "float64")
    b = g.placeholder("b", (4, 1), "float64")
    loss = ge.sum((x * b) ** 2.0)
    tg = ge.gradients(g, loss, wrt=["x", "b"])
    assert tg.tensor("gradients/b").shape == (4, 1)
    assert tg.tensor("gradients/x").shape == ("N", 1, 3)
    feeds = {"x": R.normal(size=(2, 1, 3)), "b": R.normal(size=(4, 1))}
    out = ge.run(tg, ["gradients/x", "gradients/b"], feeds)
    assert out["gradients/x"].shape == (2, 1, 3) and out["gradients/b"].shape == (4, 1)
    assert ge.gradcheck(g, loss, ["x", "b"], feeds).ok


@pytest.mark.parametrize(
    "block, reason",
    [
        (lambda x: ge.stop_gradient(x), "(stop_gradient) passes no gradient"),
        (lambda x: ge.cast(ge.cast(x, "int32"), "float32"), "dtype int32"),
        (lambda x: ge.cast(ge.argmax(x, axis=0), "float32"), "(argmax) passes no gradient"),
        (lambda x: ge.where(x > 0.0, 1.0, 0.0), "(greater) passes no gradient"),
    ],
)
def test_blocked_paths_are_explained(block, reason):
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    ge.sum(block(x) * 2.0, name="loss")
    with pytest.raises(ge.GradientError) as info:
        ge.gradients(g, "loss", wrt=["x"], unconnected="error")
    message = str(info.value)
    assert "blocked" in message and reason in message and "x -> " in message
    with pytest.warns(ge.GradientWarning, match="blocked"):
        tg = ge.gradients(g, "loss", wrt=["x"])
    assert tg.gradient.zero == ("x",)
    out = ge.run(tg, "gradients/x", {"x": np.ones(3, np.float32)})
    assert out.shape == (3,) and not out.any()


def test_unconnected_wrt_gets_zeros_or_an_error():
    g = affine()
    other = g.parameter("other", np.ones((2, 2), np.float32))
    with pytest.raises(ge.GradientError, match="does not depend on 'other'"):
        ge.gradients(g, "loss", wrt=["w", other], unconnected="error")
    with pytest.warns(ge.GradientWarning, match="does not depend on 'other'"):
        tg = ge.gradients(g, "loss", wrt=["w", other])
    assert ge.run(tg, "gradients/other").tolist() == [[0, 0], [0, 0]]


def test_gather_indices_and_integer_tensors_carry_no_gradient():
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    n = g.placeholder("n", (3,), "int64")
    loss = ge.sum(x * ge.cast(n, "float32"))
    with pytest.raises(ge.GradientError, match="only for float tensors"):
        ge.gradients(g, loss, wrt=["n"])


def test_non_scalar_loss_needs_a_seed():
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    y = ge.exp(x)
    with pytest.raises(ge.GradientError, match="not a scalar"):
        ge.gradients(g, y, wrt=["x"])
    seed = np.array([1.0, 2.0, 3.0], np.float32)
    tg = ge.gradients(g, y, wrt=["x"], grad_ys=seed)
    xv = np.array([0.0, 1.0, -1.0], np.float32)
    np.testing.assert_allclose(ge.run(tg, "gradients/x", {"x": xv}), seed * np.exp(xv), rtol=1e-6)
    tg = ge.gradients(g, y, wrt=["x"], grad_ys="placeholder")
    assert tg.gradient.seed == "gradients/seed"
    out = ge.run(tg, "gradients/x", {"x": xv, "gradients/seed": seed})
    np.testing.assert_allclose(out, seed * np.exp(xv), rtol=1e-6)


def test_missing_gradient_rules_are_all_reported_before_building(monkeypatch):
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    loss = ge.sum(ge.tanh(ge.exp(x)))
    monkeypatch.setattr(
        type(REGISTRY["tanh"]),
        "gradient_unsupported",
        lambda self, attrs, in_types=(): "not in this test",
        raising=False,
    )
    monkeypatch.setattr(
        type(REGISTRY["exp"]),
        "gradient_unsupported",
        lambda self, attrs, in_types=(): "nor this",
        raising=False,
    )
    before = len(g)
    with pytest.raises(ge.GradientError, match="2 node") as info:
        ge.gradients(g, loss, wrt=["x"])
    assert "'tanh' (tanh): not in this test" in str(info.value)
    assert "'exp' (exp): nor this" in str(info.value)
    assert len(g) == before


def test_intermediate_and_placeholder_wrt():
    g = affine()
    tg = ge.gradients(g, "loss", wrt=["layer1/add", "x"])
    assert set(tg.gradient.grads) == {"layer1/add", "x"}
    feeds = {"x": R.normal(size=(2, 3)).astype(np.float32)}
    out = ge.run(tg, ["layer1/tanh", "gradients/layer1/add"], feeds)
    y = out["layer1/tanh"]
    np.testing.assert_allclose(out["gradients/layer1/add"], 2 * y * (1 - y * y) / y.size, rtol=1e-5)


def test_no_multiplication_by_one_nor_addition_of_zero():
    g = ge.Graph()
    x = g.placeholder("x", ())
    loss = ge.tanh(ge.sin(x))
    tg = ge.gradients(g, loss, wrt=["x"])
    for node in added_nodes(tg):
        if node.op in ("multiply", "add", "divide", "subtract"):
            for ref in node.inputs:
                value = tg.node(ref).attrs.get("value") if tg.node(ref).op == "constant" else None
                assert value is None or not (
                    (node.op in ("multiply", "divide") and np.all(value == 1))
                    or (node.op in ("add", "subtract") and np.all(value == 0))
                ), node


def test_forward_values_are_reused_not_recomputed():
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    loss = ge.sum(ge.exp(x) + ge.tanh(x) + ge.sqrt(x) + ge.sigmoid(x))
    tg = ge.gradients(g, loss, wrt=["x"])
    # exp, tanh, sqrt and sigmoid rules read their forward outputs.
    assert not {"exp", "tanh", "sqrt", "sigmoid"} & set(ops_of(tg))


def test_branches_the_loss_does_not_reach_get_no_gradient_nodes():
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    side = ge.exp(x, name="side")
    ge.sum(side * 3.0, name="unused")
    loss = ge.sum(ge.sin(x))
    tg = ge.gradients(g, loss, wrt=["x"])
    assert all(n.derived_from not in ("side", "unused") for n in added_nodes(tg))


def test_shared_parameter_used_twice():
    g = ge.Graph()
    x = g.placeholder("x", (4,), "float64")
    w = g.parameter("w", R.normal(size=(4,)))
    loss = ge.sum(ge.tanh(x * w) * w)
    assert ge.gradcheck(g, loss, ["w", "x"], {"x": R.normal(size=4)}).ok


def test_residual_connection():
    g = ge.Graph()
    x = g.placeholder("x", (None, 4), "float64")
    w = g.parameter("w", R.normal(size=(4,)))
    h = x + ge.tanh(x * w)
    h = h + ge.sigmoid(h * w)
    loss = ge.mean(h * h)
    assert ge.gradcheck(g, loss, ["w", "x"], {"x": R.normal(size=(3, 4))}).ok


def test_second_derivative_of_scalar_function():
    # y = sin(x^2): y' = 2x cos(x^2), y'' = 2 cos(x^2) - 4 x^2 sin(x^2)
    g = ge.Graph()
    x = g.placeholder("x", (), "float64")
    ge.sin(x * x, name="y")
    d1 = ge.gradients(g, "y", wrt=["x"])
    d2 = ge.gradients(d1, "gradients/x", wrt=["x"])
    assert d2.gradient.grads == {"x": "gradients_1/x"}
    for v in [-1.3, 0.2, 0.9]:
        got = ge.run(d2, ["gradients/x", "gradients_1/x"], {"x": np.float64(v)})
        assert got["gradients/x"] == pytest.approx(2 * v * np.cos(v * v), rel=1e-12)
        assert got["gradients_1/x"] == pytest.approx(
            2 * np.cos(v * v) - 4 * v * v * np.sin(v * v), rel=1e-12
        )
        eps = 1e-5
        fd = (
            ge.run(d1, "gradients/x", {"x": np.float64(v + eps)})
            - ge.run(d1, "gradients/x", {"x": np.float64(v - eps)})
        ) / (2 * eps)
        assert got["gradients_1/x"] == pytest.approx(fd, rel=1e-6)


def test_hessian_vector_product_matches_finite_differences():
    g = ge.Graph()
    x = g.placeholder("x", (5,), "float64")
    w = g.constant(R.normal(size=(5,)))
    ge.sum(ge.tanh(x) ** 3.0 * w + ge.exp(x * w) * x, name="f")
    tg = ge.gradients(g, "f", wrt=["x"])
    v = tg.placeholder("v", (5,), "float64")
    ge.sum(tg.tensor("gradients/x") * v, name="gv")
    hg = ge.gradients(tg, "gv", wrt=["x"])
    xv, vv = R.normal(size=5), R.normal(size=5)
    hv = ge.run(hg, hg.gradient.grads["x"], {"x": xv, "v": vv})
    eps = 1e-6
    gp = ge.run(tg, "gradients/x", {"x": xv + eps * vv})
    gm = ge.run(tg, "gradients/x", {"x": xv - eps * vv})
    np.testing.assert_allclose(hv, (gp - gm) / (2 * eps), rtol=1e-6, atol=1e-8)


def _chain(depth):
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    h = x
    for _ in range(depth):
        h = ge.tanh(h) * 0.9
    ge.sum(h, name="loss")
    return g


def _fan(width):
    g = ge.Graph()
    x = g.placeholder("x", (3,))
    ge.add_n([ge.sin(x * float(i + 1)) for i in range(width)], name="s")
    ge.sum(g.tensor("s"), name="loss")
    return g


@pytest.mark.parametrize("make", [_chain, _fan])
def test_gradient_graph_grows_linearly(make):
    sizes = {}
    for n in (25, 50, 100):
        g = make(n)
        tg = ge.gradients(g, "loss", wrt=["x"])
        sizes[n] = (len(g), len(tg.gradient.nodes))
    for n, (forward, added) in sizes.items():
        assert added <= 3 * forward, (n, forward, added)
    # Doubling the forward graph doubles the gradient graph, plus a constant.
    grow1 = sizes[50][1] - sizes[25][1]
    grow2 = sizes[100][1] - sizes[50][1]
    assert grow2 == pytest.approx(2 * grow1, abs=3)


def test_gradient_graph_is_itself_differentiable_and_runnable_after_copy():
    g = affine()
    tg = ge.gradients(g, "loss")
    xv = R.normal(size=(2, 3)).astype(np.float32)
    a = ge.run(tg, ["gradients/w", "gradients/b"], {"x": xv})
    b = ge.run(tg.copy(), ["gradients/w", "gradients/b"], {"x": xv})
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_bad_arguments_raise_gradient_errors():
    g = affine()
    with pytest.raises(ge.GradientError, match="no tensor 'nope'"):
        ge.gradients(g, "nope")
    with pytest.raises(ge.GradientError, match="unconnected"):
        ge.gradients(g, "loss", unconnected="maybe")
    empty = ge.Graph()
    x = empty.placeholder("x", ())
    ge.exp(x, name="y")
    with pytest.raises(ge.GradientError, match="no trainable parameters"):
        ge.gradients(empty, "y")


def test_no_warning_when_every_wrt_is_connected():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ge.gradients(affine(), "loss")


def test_wrt_named_like_a_generated_node_gets_its_own_output():
    g = ge.Graph()
    x = g.placeholder("x", (3,), "float64")
    with g.name_scope("layer1"):
        m = x * x  # named layer1/multiply, like the rule's own nodes
    loss = ge.sum(m * x)
    tg = ge.gradients(g, loss, wrt=["layer1/multiply", "x"])
    assert tg.gradient.grads == {"layer1/multiply": "gradients/layer1/multiply", "x": "gradients/x"}
    xv = np.array([1.0, 2.0, 3.0])
    out = ge.run(tg, list(tg.gradient.grads.values()), {"x": xv})
    np.testing.assert_allclose(out["gradients/layer1/multiply"], xv)
    np.testing.assert_allclose(out["gradients/x"], 3 * xv * xv)


# -- the gradient contract: dy for one output, a list with None for several ------------


def _spy_on_vjp(monkeypatch, op: str) -> list:
    """Record what the gradient pass hands op ``op``'s rule."""
    opdef = REGISTRY[op]
    rule = type(opdef).vjp
    seen = []

    def spy(self, node, dys):
        seen.append(dys)
        return rule(self, node, dys)

    monkeypatch.setattr(type(opdef), "vjp", spy)
    return seen


def test_single_output_rules_get_the_tensor(monkeypatch):
    seen = _spy_on_vjp(monkeypatch, "exp")
    g = ge.Graph()
    x = g.placeholder("x", (3,), "float64")
    ge.gradients(g, ge.sum(ge.exp(x)), ["x"])
    assert len(seen) == 1 and isinstance(seen[0], ge.Tensor)


@pytest.mark.parametrize("sections", [1, 3])
def test_split_rules_always_get_a_list_with_none_for_unreached_pieces(monkeypatch, sections):
    seen = _spy_on_vjp(monkeypatch, "split")
    g = ge.Graph()
    x = g.placeholder("x", (6,), "float64")
    pieces = ge.split(x, sections)
    tg = ge.gradients(g, ge.sum(pieces[0] * 2.0), ["x"])
    assert isinstance(seen[0], list) and len(seen[0]) == sections
    assert all(d is None for d in seen[0][1:])
    grad = ge.run(tg, tg.gradient.grads["x"], {"x": np.ones(6)})
    np.testing.assert_array_equal(grad, [2.0] * (6 // sections) + [0.0] * (6 - 6 // sections))


def test_unreached_outputs_of_multi_output_ops_make_no_zeros():
    """batch_norm whose y alone reaches the loss, and a loss whose log_prob is
    unused: no zeros_like stands in for the unreached outputs."""
    g = ge.Graph()
    x = g.placeholder("x", (4, 3), "float64")
    labels = g.placeholder("labels", (4,), "int64")
    one = np.ones(3)
    y = ge.batch_norm(
        x,
        g.parameter("gamma", one),
        g.parameter("beta", 0 * one),
        g.parameter("mean", 0 * one, trainable=False),
        g.parameter("var", one, trainable=False),
    )
    loss = ge.softmax_cross_entropy(y, labels)
    tg = ge.gradients(g, loss)
    assert "zeros_like" not in ops_of(tg)


@pytest.mark.parametrize("output", [1, 2])
def test_batch_norm_gradient_through_its_statistics_alone(output):
    """Only the batch mean (or variance) reaches the loss: dy is None."""
    g = ge.Graph()
    x = g.placeholder("x", (5, 3), "float64")
    one = np.ones(3)
    outs = ge.batch_norm(
        x,
        g.constant(one),
        g.constant(0 * one),
        g.constant(0 * one),
        g.constant(one),
        return_stats=True,
    )
    loss = ge.sum(outs[output] * np.array([1.0, 2.0, 3.0]))
    feeds = {"x": R.normal(size=(5, 3))}
    result = ge.gradcheck(g, loss, ["x"], feeds, training=True)
    assert result.ok, result


def test_cross_entropy_gradient_through_log_prob_alone():
    g = ge.Graph()
    logits = g.placeholder("logits", (4, 3), "float64")
    labels = g.placeholder("labels", (4,), "int64")
    _, log_prob = ge.softmax_cross_entropy(logits, labels, return_log_prob=True)
    loss = ge.sum(log_prob * np.arange(12.0).reshape(4, 3))
    feeds = {"logits": R.normal(size=(4, 3)), "labels": np.array([0, 2, 1, 0])}
    result = ge.gradcheck(g, loss, ["logits"], feeds)
    assert result.ok, result
