"""ONNX -> graphengine for the ops PyTorch exports use most: normalization layers,
Resize, element-wise gather/scatter, Pad modes, recurrent layers; each against
onnxruntime (dtype and shape exactly, values to rtol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


import graphengine as ge
from graphengine.gradcheck import to_float64
from graphengine.onnx import OnnxConversionError

from ..onnx_helpers import assert_same, check, make_model, node, reference, run_imported

rng = np.random.default_rng(3)


def f32(*shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape).astype(np.float32)


# -- normalization ----------------------------------------------------------------------


def test_instance_normalization():
    x = f32(2, 3, 4, 5)
    check(
        [node("InstanceNormalization", ["x", "s", "b"], epsilon=0.01)],
        {"x": x},
        initializers={"s": f32(3, low=0.5), "b": f32(3)},
    )
    check(
        [node("InstanceNormalization", ["x", "s", "b"])],
        {"x": f32(2, 3, 7)},
        initializers={"s": f32(3, low=0.5), "b": f32(3)},
    )


def test_layer_normalization_is_one_node_and_trains():
    model = make_model(
        [node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)],
        {"x": f32(2, 5)},
        ["y"],
        initializers={"s": f32(5), "b": f32(5)},
    )
    graph = ge.from_onnx(model)
    assert [n.op for n in graph.nodes if n.op not in ("placeholder", "parameter")] == ["layer_norm"]
    assert {p.name for p in graph.parameters(trainable=True)} == {"s", "b"}


# -- resize --------------------------------------------------------------------------------

RESIZE_CASES = [
    (dict(mode="nearest"), "scales", [1, 1, 2, 2]),
    (dict(mode="linear"), "scales", [1, 1, 2, 3]),
    (dict(mode="linear", coordinate_transformation_mode="align_corners"), "sizes", [2, 3, 7, 4]),
    (
        dict(mode="linear", coordinate_transformation_mode="pytorch_half_pixel"),
        "sizes",
        [2, 3, 1, 9],
    ),
    (dict(mode="cubic"), "scales", [1, 1, 0.5, 1.5]),
    (
        dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        "sizes",
        [2, 3, 9, 11],
    ),
    (dict(mode="linear", antialias=1), "scales", [1, 1, 0.5, 0.6]),
]


@pytest.mark.parametrize(
    "attrs, kind, values",
    RESIZE_CASES,
    ids=[f"{a['mode']}-{k}-{i}" for i, (a, k, _) in enumerate(RESIZE_CASES)],
)
def test_resize_against_onnxruntime(attrs, kind, values):
    x = f32(2, 3, 4, 5)
    if kind == "scales":
        inputs, inits = ["x", "", "scales"], {"scales": np.array(values, np.float32)}
    else:
        inputs, inits = ["x", "", "", "sizes"], {"sizes": np.array(values, np.int64)}
    check([node("Resize", inputs, **attrs)], {"x": x}, opset=19, initializers=inits)


def test_resize_with_a_symbolic_batch_and_axes():
    x = f32(2, 3, 4, 5)
    model = make_model(
        [node("Resize", ["x", "", "scales"], mode="linear", axes=[3, 2])],
        {"x": (np.float32, ["N", 3, 4, 5])},
        ["y"],
        opset=19,
        initializers={"scales": np.array([2.0, 1.5], np.float32)},
    )
    graph = ge.from_onnx(model)
    assert graph.tensor(graph.outputs[0]).shape == ("N", 3, 6, 10)
    assert_same(run_imported(model, {"x": x}), reference(model, {"x": x}))


def test_resize_of_uint8_nearest_and_a_refusal():
    x = rng.integers(0, 255, (1, 1, 3, 3)).astype(np.uint8)
    check(
        [node("Resize", ["x", "", "scales"], mode="nearest")],
        {"x": x},
        initializers={"scales": np.array([1, 1, 2, 2], np.float32)},
    )
    model = make_model(
        [node("Resize", ["x", "", "scales", "sizes"])],
        {"x": f32(1, 1, 2, 2)},
        ["y"],
        initializers={
            "scales": np.array([1, 1, 2, 2], np.float32),
            "sizes": np.array([1, 1, 4, 4], np.int64),
        },
    )
    with pytest.raises(OnnxConversionError, match="exactly one of scales and sizes"):
        ge.from_onnx(model)


# -- pad modes -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["edge", "reflect", "wrap"])
def test_pad_modes_and_their_gradient(mode):
    x = f32(2, 3, 5)
    pads = np.array([0, 2, 1, 0, 1, 3], np.int64)
    check([node("Pad", ["x", "pads"], mode=mode)], {"x": x}, initializers={"pads": pads})
    model = make_model(
        [node("Pad", ["x", "pads"], mode=mode)], {"x": x}, ["y"], initializers={"pads": pads}
    )
    graph = to_float64(ge.from_onnx(model))
    loss = ge.sum(ge.square(graph.tensor(graph.outputs[0])))
    result = ge.gradcheck(graph, loss, ["x"], {"x": x.astype(np.float64)})
    assert result.ok, result


# -- element-wise gather and scatter, einsum diagonals ------------------------------------


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_gather_and_scatter_elements(reduction):
    x = f32(3, 4)
    indices = np.array([[1, -1, 0, 2], [0, 2, -3, 1]], np.int64)
    if reduction == "none":
        indices = np.array([[1, 2, 0, 2], [0, 0, 2, 1]], np.int64)  # unique per column
    check([node("GatherElements", ["x", "i"], axis=0)], {"x": x, "i": indices})
    check(
        [node("ScatterElements", ["x", "i", "u"], axis=-2, reduction=reduction)],
        {"x": x, "i": indices, "u": f32(2, 4)},
    )


@pytest.mark.parametrize(
    "equation, shapes",
    [
        ("ii->i", [(4, 4)]),
        ("ii", [(3, 3)]),
        ("bii->bi", [(2, 3, 3)]),
        ("bij,bjj->bi", [(2, 3, 4), (2, 4, 4)]),
    ],
)
def test_einsum_with_repeated_letters_forward_and_backward(equation, shapes):
    feeds = {f"x{k}": f32(*s) for k, s in enumerate(shapes)}
    model = make_model([node("Einsum", list(feeds), equation=equation)], feeds, ["y"])
    (ours,) = run_imported(model, feeds)
    np.testing.assert_allclose(ours, np.einsum(equation, *feeds.values()), rtol=1e-5, atol=1e-6)
    graph = to_float64(ge.from_onnx(model))
    wide = {k: v.astype(np.float64) for k, v in feeds.items()}
    result = ge.gradcheck(graph, ge.sum(graph.tensor("y") * graph.tensor("y")), list(feeds), wide)
    assert result.ok, result


def test_einsum_refuses_a_repeated_output_letter():
    feeds = {"x": f32(3, 3)}
    model = make_model([node("Einsum", ["x"], equation="ij->ii")], feeds, ["y"])
    with pytest.raises(OnnxConversionError, match="repeats a letter"):
        ge.from_onnx(model)


def test_reduce_prod_of_known_values_folds_and_of_run_time_tensors_is_refused():
    """PyTorch's unbiased std: n = ReduceProd(Gather(Shape(x), axes)), known at
    import time; a ReduceProd of data is refused, naming the node."""
    count = make_model(
        [
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "axes"], ["dims"]),
            node("ReduceProd", ["dims"], ["n"], keepdims=0),
            node("Cast", ["n"], ["nf"], to=onnx.TensorProto.FLOAT),
            node("Mul", ["x", "nf"], ["y"]),
        ],
        {"x": (np.float32, [2, 3, 5])},
        ["y"],
        initializers={"axes": np.array([1, 2], np.int64)},
    )
    graph = ge.from_onnx(count)
    assert [n.op for n in graph.nodes] == ["placeholder", "constant", "multiply"]  # folded
    x = np.ones((2, 3, 5), np.float32)
    np.testing.assert_array_equal(ge.run(graph, "y", {"x": x}), x * 15)
    data = make_model(
        [node("ReduceProd", ["x"], ["y"], name="prod", keepdims=0)],
        {"x": (np.float32, [2, 3])},
        ["y"],
    )
    with pytest.raises(OnnxConversionError, match=r"node 'prod' \(ReduceProd\).*run time"):
        ge.from_onnx(data)
