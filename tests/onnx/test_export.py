"""graphengine -> ONNX: the examples and every exportable op pass onnx's checker
(full_check) and give our outputs in onnxruntime (rtol 1e-5 in float32); a
round trip ours -> ONNX -> ours gives the same outputs and parameter values,
bit for bit."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import graphengine as ge
from graphengine.onnx import DEFAULT_OPSET, OnnxConversionError
from graphengine.onnx.export_rules import RULES

from ..onnx_helpers import NEWEST

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
OPSETS = sorted({13, 18, DEFAULT_OPSET, NEWEST})
rng = np.random.default_rng(1)

#: Backward kernels, which no forward graph holds: refused by name.
NOT_EXPORTED = {
    "conv2d_backprop_input",
    "conv2d_backprop_filter",
    "conv2d_backprop_filter_cols",
    "conv_backprop_input",
    "conv_backprop_filter",
    "avg_pool_grad",
    "max_pool_grad",
    "slice_grad",
    "take_grad",
    "diagonal_grad",
    "resize_grad",
    "split_like",
    "relu_grad",
    "sum_rows",
    "matmul_transposed",
    "softmax_cross_entropy_grad",
    "batch_norm_grad",
    # Collectives of data-parallel gradient graphs: ONNX has no MPI.
    "allreduce",
    "sync_batch_norm",
}


def ort_run(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {k: v for k, v in feeds.items() if k in names})


def check_export(graph, feeds, *, opset=DEFAULT_OPSET, rtol=1e-5, atol=1e-6):
    """Export; check_model(full_check); onnxruntime matches; the round trip is exact."""
    model = ge.to_onnx(graph, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    ours = ge.run(graph, graph.outputs, feeds)
    theirs = ort_run(model, feeds)
    assert [o.name for o in model.graph.output] == graph.outputs
    for ref, value in zip(graph.outputs, theirs):
        assert value.dtype == ours[ref].dtype, ref
        assert value.shape == ours[ref].shape, ref
        np.testing.assert_allclose(value, ours[ref], rtol=rtol, atol=atol, err_msg=ref)
    back = ge.from_onnx(model)
    again = ge.run(back, back.outputs, feeds)
    for ref, ref_back in zip(graph.outputs, back.outputs):
        np.testing.assert_array_equal(again[ref_back], ours[ref], err_msg=ref, strict=True)
    assert sorted(back.values) == sorted(
        n.name for n in graph.parameters() if n.name in back.values
    )
    for name, value in back.values.items():
        np.testing.assert_array_equal(value, graph.values[name], strict=True)
        assert back.node(name).attrs["trainable"] == graph.node(name).attrs["trainable"]
    return model, back


def load_example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def digits(n=32):
    with np.load(EXAMPLES / "data" / "digits.npz") as data:
        return data["test_images"][:n], data["test_labels"][:n]


# -- the examples -------------------------------------------------------------------------


def test_linear_regression_example():
    example = load_example("linear_regression")
    data = example.make_data(16, seed=0)
    check_export(example.build(), data)


def test_logistic_regression_example():
    graph = load_example("logistic_regression").build()
    images, labels = digits()
    graph.values["w"] = rng.normal(0, 0.1, graph.values["w"].shape).astype(np.float32)
    check_export(graph, {"images": images, "is_eight": (labels == 8).astype(np.float32)})


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_examples(name):
    graph = load_example(name).build()
    for param in graph.parameters(trainable=False):  # give batch norm real statistics
        base = 1.0 if "var" in param.name else 0.0
        graph.values[param.name] = (base + rng.uniform(0.1, 0.5, param.types[0].shape)).astype(
            np.float32
        )
    images, labels = digits()
    model, back = check_export(graph, {"images": images, "labels": labels})
    assert {
        i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
        for i in model.graph.input
    }["images"] == ["N", 8, 8]
    assert back.tensor("images").shape == ("N", 8, 8)


# -- every op --------------------------------------------------------------------------------


def _f(*shape, low=-2.0, high=2.0, dtype=np.float32):
    return rng.uniform(low, high, shape).astype(dtype)


X = _f(2, 3, 4)
POS = _f(2, 3, 4, low=0.2)
INTS = rng.integers(-5, 6, (3, 4)).astype(np.int32)


def _graph(*inputs):
    """Placeholders for the inputs; dim 0 is the symbolic N where it is the first's."""
    g = ge.Graph("op")
    batch = inputs[0][1].shape[0]
    return g, [
        g.placeholder(
            name,
            (("N" if value.shape[0] == batch else value.shape[0]), *value.shape[1:]),
            value.dtype,
        )
        for name, value in inputs
    ]


# Each case: (name, inputs, build(tensors) -> outputs).
CASES = [
    (
        "arith",
        [("x", X), ("y", POS)],
        lambda x, y: [
            x + y,
            x - y,
            x * y,
            x / y,
            x**y * 0 + y,
            ge.maximum(x, y),
            ge.minimum(x, y),
            ge.add_n([x, y, x]),
        ],
    ),
    ("power", [("x", POS), ("y", X)], lambda x, y: [x**y, ge.square(y)]),
    (
        "unary",
        [("x", X)],
        lambda x: [
            ge.negative(x),
            ge.abs(x),
            ge.sign(x),
            ge.exp(x),
            ge.sin(x),
            ge.cos(x),
            ge.tanh(x),
            ge.sigmoid(x),
            ge.relu(x),
            ge.leaky_relu(x, 0.2),
            ge.elu(x, 0.5),
            ge.softplus(x),
            ge.gelu(x),
            ge.identity(x),
            ge.erf(x),
            ge.gelu(x, approximate="none"),
            ge.stop_gradient(x),
            ge.clip(x, -0.5, 0.7),
            ge.clip(x, a_min=0.25),
        ],
    ),
    ("positive", [("x", POS)], lambda x: [ge.log(x), ge.sqrt(x)]),
    (
        "compare",
        [("x", X), ("y", POS)],
        lambda x, y: [
            ge.equal(x, y),
            ge.not_equal(x, y),
            ge.greater(x, y),
            ge.greater_equal(x, y),
            ge.less(x, y),
            ge.less_equal(x, y),
            ge.logical_and(ge.greater(x, 0.0), ge.less(y, 1.0)),
            ge.logical_or(ge.greater(x, 0.0), ge.less(y, 1.0)),
            ge.logical_not(ge.greater(x, 0.0)),
            ge.where(ge.greater(x, 0.0), x, y),
        ],
    ),
    (
        "ints",
        [("a", INTS)],
        lambda a: [
            a / (ge.abs(a) + 1),
            a * a - a,
            ge.cast(a, "float32"),
            ge.cast(ge.cast(a, "float64"), "int64"),
        ],
    ),
    (
        "reduce",
        [("x", X)],
        lambda x: [
            ge.sum(x),
            ge.sum(x, axis=1),
            ge.mean(x, (0, 2), True),
            ge.max(x, -1),
            ge.min(x, axis=(1,), keepdims=True),
            ge.sum(x, axis=()),
            ge.argmax(x, 1),
            ge.argmax(x),
            ge.argmax(x, keepdims=True),
        ],
    ),
    (
        "shape",
        [("x", X)],
        lambda x: [
            ge.reshape(x, (-1, 12)),
            ge.transpose(x, (2, 0, 1)),
            x.T,
            ge.expand_dims(x, (0, 3)),
            ge.squeeze(ge.expand_dims(x, 1), 1),
            ge.broadcast_to(ge.expand_dims(x, 1), (-1, 5, 3, 4)),
            ge.concatenate([x, x * 2.0], axis=1),
            ge.stack([x, x], axis=-1),
            *ge.split(x, 2, axis=2),
            *ge.split(x, [1], axis=1),
            x[:, 1:, ::-2],
            x[..., 0, None],
            x[:, -1],
            ge.pad(x, ((0, 0), (1, 2), (0, 1)), constant_values=0.5),
        ],
    ),
    (
        "take",
        [("x", X), ("i", rng.integers(-3, 3, (4, 2)).astype(np.int64))],
        lambda x, i: [
            ge.take(x, i, axis=1),
            ge.take(x, i),
            ge.one_hot(i, 4),
            ge.one_hot(i, 3, dtype="int32", axis=0),
        ],
    ),
    (
        "matmul",
        [("x", X), ("w", _f(5, 4, 3))],
        lambda x, w: [ge.matmul(x, w[0]), ge.matmul(x[0], w[0])],
    ),
    (
        "nn",
        [("x", _f(2, 3, 8, 7))],
        lambda x: [
            ge.softmax(x, axis=1),
            ge.log_softmax(x),
            ge.conv2d(
                x,
                x.graph.parameter("w", _f(4, 3, 3, 2)),
                stride=(2, 1),
                padding=(1, 0, 2, 1),
                dilation=(1, 2),
            ),
            ge.max_pool2d(x, 3, stride=2, padding=1),
            ge.avg_pool2d(x, 2, padding=1),
            ge.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
            *ge.max_pool2d(
                x, 2, stride=(2, 1), dilation=(2, 1), ceil_mode=True, return_indices=True
            ),
            ge.avg_pool2d(
                x, 3, stride=2, padding=(1, 0, 0, 1), ceil_mode=True, count_include_pad=False
            ),
            ge.conv2d(x, x.graph.parameter("wg", _f(6, 1, 3, 3)), padding=1, groups=3),
            ge.conv_transpose2d(
                x,
                x.graph.parameter("wt", _f(3, 2, 3, 2)),
                stride=2,
                padding=1,
                output_padding=(1, 0),
            ),
            *ge.dropout(x, 0.3, return_mask=True),
            *ge.batch_norm(
                x, *[x.graph.parameter(n, _f(3, low=0.5)) for n in "gbmv"], return_stats=True
            ),
        ],
    ),
    (
        "norms",
        [("x", _f(2, 3, 8, 7))],
        lambda x: [
            *ge.layer_norm(
                x,
                x.graph.parameter("s", _f(8, 7, low=0.5)),
                x.graph.parameter("b", _f(7)),
                axis=2,
                return_stats=True,
            ),
            ge.layer_norm(
                x,
                x.graph.parameter("s1", _f(7, low=0.5)),
                x.graph.parameter("b1", _f(1)),
                epsilon=0.01,
            ),
            ge.instance_norm(
                x, x.graph.parameter("s2", _f(3, low=0.5)), x.graph.parameter("b2", _f(3))
            ),
        ],
    ),
    (
        "resize",
        [("x", _f(2, 3, 4, 5))],
        lambda x: [
            ge.resize(x, sizes=(-1, 3, 8, 15), scales=(1.0, 1.0, 2.0, 3.0), mode="linear"),
            ge.resize(x, sizes=(-1, 3, 3, 7), scales=(1.0, 1.0, 0.75, 1.5), mode="cubic"),
            ge.resize(
                x,
                sizes=(-1, 3, 2, 10),
                scales=(1.0, 1.0, 0.5, 2.0),
                mode="nearest",
                coordinate_transformation_mode="asymmetric",
            ),
        ],
    ),
    (
        "half-norms",
        [("x", _f(2, 3, 8, dtype=np.float16))],
        lambda x: [
            *ge.layer_norm(
                x,
                x.graph.parameter("s", _f(8, low=0.5, dtype=np.float16)),
                x.graph.parameter("b", _f(8, dtype=np.float16)),
                return_stats=True,
            )
        ],
    ),
    (
        "pool13",
        [("x", _f(2, 3, 5, 6, 7)), ("s", _f(2, 3, 9))],
        lambda x, s: [
            *ge.max_pool3d(
                x, (2, 3, 2), stride=(1, 2, 2), padding=(1, 0, 0, 0, 1, 1), return_indices=True
            ),
            ge.avg_pool3d(x, 2, ceil_mode=True),
            ge.max_pool1d(s, 3, stride=2, padding=1),
            ge.avg_pool1d(s, 2, stride=1, padding=1, ceil_mode=True),
        ],
    ),
    (
        "losses",
        [
            ("x", _f(6, 5)),
            ("l", rng.integers(0, 5, (6,)).astype(np.int64)),
            ("p", _f(6, 5, low=0.0, high=1.0)),
        ],
        lambda x, labels, p: [
            *ge.softmax_cross_entropy(x, labels, return_log_prob=True),
            ge.softmax_cross_entropy(x, labels, reduction="none"),
            ge.softmax_cross_entropy(x, p, reduction="sum"),
            ge.softmax_cross_entropy(ge.transpose(x), labels, axis=0),
            ge.mean_squared_error(x, p),
            ge.mean_squared_error(x, p, "none"),
        ],
    ),
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_each_op_exports_checks_and_matches_onnxruntime(case, opset):
    _, inputs, build = case
    g, tensors = _graph(*inputs)
    g.mark_output(*build(*tensors))
    check_export(g, dict(inputs), opset=opset)


def test_dilated_average_pool_needs_opset_19():
    g, (x,) = _graph(("x", _f(2, 3, 9, 8)))
    g.mark_output(ge.avg_pool2d(x, 2, stride=1, dilation=(2, 3), count_include_pad=False))
    check_export(g, {"x": _f(2, 3, 9, 8)}, opset=max(19, NEWEST))
    with pytest.raises(OnnxConversionError, match="needs opset 19 or newer, not 18"):
        ge.to_onnx(g, opset=18)


def test_gradient_helpers_export():
    g = ge.Graph("grad")
    x = g.placeholder("x", (None, 3))
    w = g.parameter("w", _f(3, 2))
    b = g.parameter("b", _f(2))
    loss = ge.mean(ge.tanh(x @ w + b) ** 2.0)
    tg = ge.gradients(g, loss)
    feeds = {"x": _f(4, 3)}
    model = ge.to_onnx(tg)
    theirs = ort_run(model, feeds)
    ours = ge.run(tg, tg.outputs, feeds)
    for ref, value in zip(tg.outputs, theirs):
        np.testing.assert_allclose(value, ours[ref], rtol=1e-5, atol=1e-6)


def test_every_op_has_an_export_rule_or_is_a_listed_backward_kernel():
    sources = {"placeholder", "parameter", "constant"}
    assert set(ge.ops.REGISTRY) - sources - NOT_EXPORTED == set(RULES)


def test_backward_kernels_are_refused_naming_the_node():
    g = ge.Graph("conv")
    x = g.placeholder("x", (None, 1, 5, 5))
    w = g.parameter("w", _f(2, 1, 3, 3))
    tg = ge.gradients(g, ge.sum(ge.conv2d(x, w)), wrt=["x"])
    with pytest.raises(OnnxConversionError, match=r"conv2d_backprop_input: 'gradients/"):
        ge.to_onnx(tg)


def test_frozen_parameters_and_metadata_survive_a_round_trip(tmp_path):
    g = ge.Graph("meta")
    x = g.placeholder("x", (None, 2))
    w = g.parameter("layer/w", _f(2, 2))
    b = g.parameter("layer/b", _f(2), trainable=False)
    g.mark_output(ge.relu(x @ w + b, name="y"))
    g.metadata["author"] = "tests"
    path = tmp_path / "m.onnx"
    model = ge.to_onnx(g, path)
    assert onnx.load(path) == model
    props = {p.key: p.value for p in model.metadata_props}
    assert props == {"author": "tests", "graphengine.frozen": "layer/b"}
    back = ge.from_onnx(path)
    assert not back.node("layer/b").attrs["trainable"] and back.node("layer/w").attrs["trainable"]
    assert back.metadata["author"] == "tests"
    assert back.outputs == ["y"] and back.node("y").op == "relu"


def test_names_survive_a_round_trip():
    g = ge.Graph("names")
    x = g.placeholder("x", (None, 2))
    with g.name_scope("dense"):
        h = ge.matmul(x, g.parameter("w", _f(2, 3)))
    g.mark_output(ge.softmax(h, name="probs"))
    back = ge.from_onnx(ge.to_onnx(g))
    assert [(n.name, n.op) for n in back.nodes] == [(n.name, n.op) for n in g.nodes]


def test_outputs_that_are_inputs_and_chosen_outputs():
    g = ge.Graph("pass")
    x = g.placeholder("x", (3,))
    y = ge.exp(x, name="y")
    z = ge.log(y, name="z")
    g.mark_output(x, z)
    model = ge.to_onnx(g, outputs=["y"])
    assert [o.name for o in model.graph.output] == ["y"]
    assert [n.op_type for n in model.graph.node] == ["Exp"]
    feeds = {"x": _f(3)}
    assert [o.name for o in ge.to_onnx(g).graph.output] == ["x/output", "z"]
    np.testing.assert_array_equal(ort_run(ge.to_onnx(g), feeds)[0], feeds["x"])


def test_bad_opset_and_empty_graph_are_refused():
    g = ge.Graph("g")
    x = g.placeholder("x", (2,))
    g.mark_output(ge.exp(x))
    with pytest.raises(OnnxConversionError, match="opset 12"):
        ge.to_onnx(g, opset=12)
    empty = ge.Graph("empty")
    empty.placeholder("x", (2,))
    with pytest.raises(OnnxConversionError, match="no outputs"):
        ge.to_onnx(empty)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_gather_scatter_elements_and_diagonal_export(reduction):
    g = ge.Graph("elements")
    x = g.placeholder("x", (None, 4, 3))
    i = g.constant(
        np.array([[[0, -1, 2], [3, 3, 0]]])
        if reduction != "none"
        else np.array([[[0, 1, 2], [3, 2, 0]]])
    )
    u = g.placeholder("u", (1, 2, 3))
    gathered = ge.gather_elements(x, i, axis=1)
    scattered = ge.scatter_elements(x, i, u, axis=1, reduction=reduction)
    diag = ge.diagonal(x[:, :3, :], 1, 2)
    g.set_outputs([gathered.name, scattered.name, diag.name])
    feeds = {
        "x": rng.normal(size=(2, 4, 3)).astype(np.float32),
        "u": rng.normal(size=(1, 2, 3)).astype(np.float32),
    }
    check_export(g, feeds)
    if reduction in ("max", "min"):
        with pytest.raises(OnnxConversionError, match="needs opset 18 or later"):
            ge.to_onnx(g, opset=17)
