"""The graph builder: names, scopes, placeholders, parameters, literals, handles."""

import numpy as np
import pytest

import graphengine as ge


def test_readme_example_runs():
    g = ge.Graph("affine")
    x = g.placeholder("x", shape=(None, 3))
    w = g.parameter("w", np.random.default_rng(0).normal(size=(3, 2)).astype(np.float32))
    b = g.parameter("b", np.zeros(2, np.float32))
    with g.name_scope("layer1"):
        y = ge.tanh(x @ w + b)
    loss = ge.mean(y * y, name="loss")
    out = ge.run(g, fetches=["loss"], feeds={"x": np.ones((4, 3), np.float32)})
    xv = np.ones((4, 3), np.float32)
    yv = np.tanh(xv @ g.values["w"] + g.values["b"])
    assert out["loss"].dtype == np.float32
    np.testing.assert_allclose(out["loss"], np.mean(yv * yv), rtol=1e-6)
    assert loss.name == "loss" and y.name == "layer1/tanh"


def test_generated_names_follow_scope_and_counter():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    with g.name_scope("layer1"):
        a = ge.exp(x)
        b = ge.exp(a)
        with g.name_scope("inner"):
            c = ge.exp(b)
    d = ge.exp(c)
    assert [a.name, b.name, c.name, d.name] == [
        "layer1/exp",
        "layer1/exp_1",
        "layer1/inner/exp",
        "exp",
    ]
    assert g.node("layer1/inner/exp").scope == "layer1/inner"


def test_explicit_duplicate_name_is_refused():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    ge.exp(x, name="y")
    with pytest.raises(ge.GraphError, match="already used by a node of op 'exp'"):
        ge.tanh(x, name="y")


@pytest.mark.parametrize("name", ["", "a:b", "a b", "a//b", "/a", "a/", "x\x00", "t\n", "é"])
def test_bad_names_are_refused(name):
    g = ge.Graph()
    with pytest.raises(ge.GraphError, match="invalid"):
        g.placeholder(name, (2,))


def test_placeholder_none_is_symbolic_batch_dim_shared_by_placeholders():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    y = g.placeholder("y", (None,), "int64")
    t = g.placeholder("t", ("T", 2))
    assert x.shape == ("N", 3) and y.shape == ("N",) and t.shape == ("T", 2)
    assert x.dtype == np.float32 and y.dtype == np.int64


@pytest.mark.parametrize(
    "init",
    [
        "zeros",
        "ones",
        "normal",
        "uniform",
        "glorot_uniform",
        "glorot_normal",
        "xavier_uniform",
        "he_normal",
        "he_uniform",
    ],
)
def test_initializers_are_seeded_and_shaped(init):
    g1, g2 = ge.Graph(), ge.Graph()
    a = g1.parameter("w", shape=(30, 20), init=init, seed=3)
    b = g2.parameter("w", shape=(30, 20), init=init, seed=3)
    assert a.shape == (30, 20) and a.dtype == np.float32
    np.testing.assert_array_equal(g1.values["w"], g2.values["w"])
    assert b.name == "w"


def test_initializer_scales():
    g = ge.Graph()
    g.parameter("he", shape=(400, 300), init="he_normal", seed=0)
    g.parameter("gl", shape=(400, 300), init="glorot_uniform", seed=0)
    assert g.values["he"].std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    limit = np.sqrt(6 / 700)
    assert np.abs(g.values["gl"]).max() <= limit
    assert g.values["gl"].std() == pytest.approx(limit / np.sqrt(3), rel=0.05)


def test_parameter_without_seed_is_reproducible_from_its_name():
    a, b = ge.Graph(), ge.Graph()
    a.parameter("w", shape=(3, 3))
    b.parameter("w", shape=(3, 3))
    np.testing.assert_array_equal(a.values["w"], b.values["w"])


def test_parameter_errors():
    g = ge.Graph()
    with pytest.raises(ge.GraphError, match="give a value or a shape"):
        g.parameter("w")
    with pytest.raises(ge.GraphError, match="unknown initializer"):
        g.parameter("w", shape=(2,), init="bogus")
    with pytest.raises(ge.ShapeError, match="not supported"):
        g.parameter("c", np.array([1 + 2j]))


def test_literals_take_the_tensor_dtype_and_arrays_keep_theirs():
    g = ge.Graph()
    x = g.placeholder("x", (3,), "float32")
    i = g.placeholder("i", (3,), "int32")
    assert (x + 1).dtype == np.float32
    assert (i + 1).dtype == np.int32
    with pytest.raises(ge.ShapeError, match="different dtypes"):
        i * 0.5  # numpy would promote to float64: we ask for an explicit cast
    with pytest.raises(ge.ShapeError, match="different dtypes"):
        x + np.ones(3)  # a float64 array does not silently upcast float32
    assert (x + np.ones(3, np.float32)).dtype == np.float32


def test_tensors_from_two_graphs_cannot_mix():
    a, b = ge.Graph("a"), ge.Graph("b")
    x, y = a.placeholder("x", (2,)), b.placeholder("y", (2,))
    with pytest.raises(ge.GraphError, match="belongs to graph 'b', not 'a'"):
        x + y
    # Most graphs keep the default name: the message must not read "graph 'graph', not 'graph'".
    c, d = ge.Graph(), ge.Graph()
    u, v = c.placeholder("u", (2,)), d.placeholder("v", (2,))
    with pytest.raises(ge.GraphError, match=r"belongs to another graph \(also named 'graph'\)"):
        u + v
    with pytest.raises(ge.FeedError, match=r"fetch 'v' belongs to another graph .*fetch by name"):
        ge.run(c, v, {})


def test_op_function_signature_errors_are_ours():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    with pytest.raises(ge.GraphError):
        ge.sum(x, bogus=1)
    with pytest.raises(ge.GraphError, match="no input is a tensor"):
        ge.exp(1.0)


def test_attribute_of_wrong_kind_names_the_attribute():
    g = ge.Graph()
    x = g.placeholder("x", (2, 3))
    with pytest.raises(ge.GraphError, match="attribute 'keepdims' must be of kind bool"):
        ge.sum(x, axis=0, keepdims="yes")
    with pytest.raises(ge.GraphError, match="attribute 'axis' must be of kind ints"):
        ge.sum(x, axis=1.5)


def test_outputs_default_to_unconsumed_tensors_and_can_be_marked():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    a = ge.exp(x)
    b = ge.tanh(a)
    ge.sin(a)
    assert g.outputs == ["tanh", "sin"]
    g.mark_output(b)
    assert g.outputs == ["tanh"]


def test_tensor_lookup_suggests_close_names():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    ge.exp(x, name="logits")
    with pytest.raises(ge.FeedError, match="did you mean 'logits'"):
        g.tensor("logit")
    with pytest.raises(ge.GraphError, match="invalid tensor reference"):
        g.tensor("logits:x")


def test_operators_build_the_numpy_named_ops():
    g = ge.Graph()
    x = g.placeholder("x", (2,))
    y = g.placeholder("y", (2,))
    ops = {
        (x + y).node: "add",
        (x - y).node: "subtract",
        (x * y).node: "multiply",
        (x / y).node: "divide",
        (x**y).node: "power",
        (-x).node: "negative",
        (x < y).node: "less",
        (x >= y).node: "greater_equal",
        abs(x).node: "abs",
        (1.0 - x).node: "subtract",
    }
    for name, op in ops.items():
        assert g.node(name).op == op
    xv, yv = np.array([1.0, 4.0], np.float32), np.array([2.0, 0.5], np.float32)
    np.testing.assert_allclose(ge.run(g, 1.0 - x / y, {"x": xv, "y": yv}), 1 - xv / yv)


_GRAPH_FUNCTIONS = {
    "run": lambda v: ge.run(v, "y", {"x": np.zeros(2, np.float32)}),
    "gradients": lambda v: ge.gradients(v, loss="y"),
    "gradcheck": lambda v: ge.gradcheck(v, "y"),
    "optimize": lambda v: ge.optimize(v),
    "to_dot": lambda v: ge.to_dot(v),
    "render": lambda v: ge.render(v, "never-written.svg"),
    "save": lambda v: ge.save(v, "never-written.pb"),
    "train": lambda v: ge.train(v, {"x": np.zeros(2, np.float32)}),
    "Trainer": lambda v: ge.Trainer(v, {"x": np.zeros(2, np.float32)}),
    "add_loss": lambda v: ge.add_loss(v, "mse", "y", "labels"),
}


@pytest.mark.parametrize("function", sorted(_GRAPH_FUNCTIONS))
def test_a_value_that_is_not_a_graph_gets_our_error_with_the_fix(function, tmp_path, monkeypatch):
    # The two common slips: the (graph, report) pair that ge.optimize returns,
    # and a file name where its loaded graph belongs.
    monkeypatch.chdir(tmp_path)
    g = ge.Graph()
    ge.exp(g.placeholder("x", (None,)), name="y")
    call = _GRAPH_FUNCTIONS[function]
    with pytest.raises(
        ge.GraphError,
        match=rf"ge\.{function} takes a graphengine Graph, not a tuple: "
        r".*graph, report = ge\.optimize\(g\)",
    ):
        call(ge.optimize(g))
    with pytest.raises(
        ge.GraphError, match=r"not a str: load the file first: `g = ge\.load\('m\.pb'\)`"
    ):
        call("m.pb")
    with pytest.raises(ge.GraphError, match=r"not a NoneType: build one with ge\.Graph\(\)"):
        call(None)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_save_with_its_arguments_swapped_says_so(tmp_path):
    g = ge.Graph()
    ge.exp(g.placeholder("x", (None,)), name="y")
    with pytest.raises(
        ge.GraphError, match=r"the graph first, then the path: ge\.save\(graph, path\)"
    ):
        ge.save(str(tmp_path / "m.pb"), g)
    assert not list(tmp_path.iterdir())


def test_numpy_functions_on_tensors_build_the_ops_of_their_names():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    a = np.array([1.0, 2.0, 4.0], np.float32)
    built = {
        "exp": np.exp(x),
        "abs": np.abs(x),
        "tanh": np.tanh(x),
        "maximum": np.maximum(x, 0),
        "add": a + x,
        "subtract": a - x,
        "divide": a / x,
        "power": a**x,
        "less": a < x,
        "sum": np.sum(x, axis=0),
        "mean": np.mean(x),
        "matmul": np.ones((2, 3), np.float32) @ ge.transpose(x),
    }
    for op, tensor in built.items():
        assert g.node(tensor.node).op == op
    xv = np.array([[0.5, -1.0, 2.0]], np.float32)
    got = ge.run(g, list(built.values()), {"x": xv})
    expected = [
        np.exp(xv), np.abs(xv), np.tanh(xv), np.maximum(xv, 0), a + xv, a - xv, a / xv,
        a**xv, a < xv, np.sum(xv, axis=0), np.mean(xv), np.ones((2, 3), np.float32) @ xv.T,
    ]  # fmt: skip
    for (name, value), want in zip(got.items(), expected):
        np.testing.assert_allclose(value, want, rtol=1e-6, err_msg=name)
    with pytest.raises(ge.ShapeError, match="different dtypes"):
        np.ones(3) + x  # float64 meets float32 from either side


def test_numpy_functions_without_an_op_say_what_to_write():
    g = ge.Graph()
    x = g.placeholder("x", (None, 3))
    with pytest.raises(ge.GraphError, match=r"np\.floor has no graphengine op.*docs/ops\.md"):
        np.floor(x)
    with pytest.raises(ge.GraphError, match=r"np\.add\.reduce cannot build .*ge\.sum"):
        np.add.reduce(x)
    with pytest.raises(ge.GraphError, match=r"np\.exp cannot build .*keyword out="):
        np.exp(x, out=np.empty(3, np.float32))
    with pytest.raises(ge.GraphError, match=r"out= and dtype= are not supported"):
        np.sum(x, dtype=np.float64)
