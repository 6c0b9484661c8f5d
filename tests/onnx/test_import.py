"""ONNX -> graphengine: every imported op against onnxruntime, at opsets 13, 18
and the newest; the attribute and input forms of moved attributes; where ONNX and
numpy differ; refusals; names, dims, parameters and constants."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper

import graphengine as ge
from graphengine.onnx import OnnxConversionError

from ..onnx_helpers import NEWEST, assert_same, check, make_model, node, reference, run_imported

OPSETS = sorted({13, 18, NEWEST})
rng = np.random.default_rng(0)


def f32(*shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape).astype(np.float32)


# -- elementwise ---------------------------------------------------------------------

X, Y = f32(2, 3, 4), f32(3, 4)
POS = f32(2, 3, 4, low=0.1, high=3.0)
I32 = rng.integers(-9, 10, (3, 4)).astype(np.int32)
NZ32 = np.where(I32 == 0, 3, I32).astype(np.int32)

UNARY = [
    "Neg",
    "Abs",
    "Sign",
    "Exp",
    "Tanh",
    "Sigmoid",
    "Softplus",
    "Relu",
    "Sin",
    "Cos",
    "Tan",
    "Floor",
    "Ceil",
    "Softsign",
    "Identity",
    "Elu",
    "Selu",
    "LeakyRelu",
    "HardSigmoid",
    "ThresholdedRelu",
    "Celu",
    "Mish",
]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("op", UNARY)
def test_unary(op, opset):
    if onnx.defs.get_schema(op, NEWEST).since_version > opset:
        pytest.skip(f"{op} is not defined at opset {opset}")
    check([node(op, ["x"])], {"x": X}, opset=opset)


@pytest.mark.parametrize("op", ["Log", "Sqrt", "Reciprocal"])
def test_unary_positive(op):
    check([node(op, ["x"])], {"x": POS})


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum", "Mean"])
def test_binary_broadcast(op, opset):
    check([node(op, ["x", "z"])], {"x": X, "z": Y}, opset=opset)


def test_variadic_three_inputs():
    z = f32(4)
    for op in ("Max", "Min", "Sum", "Mean"):
        check([node(op, ["x", "y2", "z"])], {"x": X, "y2": Y, "z": z})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Max", "Min", "Neg", "Abs"])
def test_integer_arithmetic(op):
    inputs = ["a"] if op in ("Neg", "Abs") else ["a", "b"]
    check([node(op, inputs)], {"a": I32, "b": NZ32})


def test_pow_float_and_mixed_types():
    check([node("Pow", ["x", "e"])], {"x": POS, "e": f32(3, 4)})
    check([node("Pow", ["x", "e"])], {"x": POS, "e": np.array(2, np.int64)})
    check([node("Pow", ["a", "e"])], {"a": I32, "e": np.array(3, np.int32)})


def test_comparisons_and_logic():
    a, b = I32, NZ32
    for op in ("Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"):
        check([node(op, ["a", "b"])], {"a": a, "b": b})
    p, q = a > 0, b > 0
    for op in ("And", "Or", "Xor"):
        check([node(op, ["p", "q"])], {"p": p, "q": q})
    check([node("Not", ["p"])], {"p": p})
    check([node("Where", ["p", "x", "z"])], {"p": p, "x": X, "z": Y})
    check([node("IsNaN", ["x"])], {"x": np.array([1.0, np.nan, np.inf], np.float32)})
    check(
        [node("IsInf", ["x"], detect_negative=0)],
        {"x": np.array([-np.inf, np.nan, np.inf], np.float32)},
    )


def test_relu_on_integers_opset_14():
    check([node("Relu", ["a"])], {"a": I32}, opset=14)


def test_activations_with_attributes():
    x = f32(3, 4)
    check([node("LeakyRelu", ["x"], alpha=0.3)], {"x": x})
    check([node("Elu", ["x"], alpha=0.7)], {"x": x})
    check([node("HardSigmoid", ["x"], alpha=0.4, beta=0.3)], {"x": x})
    check([node("HardSwish", ["x"])], {"x": x})
    check([node("PRelu", ["x", "s"])], {"x": x, "s": f32(4)})
    check([node("Swish", ["x"], alpha=0.5)], {"x": x}, opset=NEWEST)
    check([node("Gelu", ["x"], approximate="tanh")], {"x": x}, opset=20)
    for op in ("Sinh", "Cosh", "Shrink"):
        check([node(op, ["x"])], {"x": x})
    check([node("Hardmax", ["x"], axis=0)], {"x": x})


def test_layer_and_rms_normalization():
    x = f32(2, 3, 4)
    check(
        [node("LayerNormalization", ["x", "s", "b"], ["y", "mean", "inv_std"], axis=1)],
        {"x": x, "s": f32(3, 4), "b": f32(3, 4)},
        ["y", "mean", "inv_std"],
    )
    check(
        [node("LayerNormalization", ["x", "s"])],
        {"x": x.astype(np.float16), "s": f32(4).astype(np.float16)},
        rtol=1e-3,
        atol=1e-3,
    )
    check([node("RMSNormalization", ["x", "s"])], {"x": x, "s": f32(4)}, opset=NEWEST)


def test_gelu_exact_and_tanh_forms_and_erf():
    x = f32(3, 5, low=-4, high=4)
    check([node("Gelu", ["x"])], {"x": x}, opset=20)
    check([node("Gelu", ["x"], approximate="tanh")], {"x": x}, opset=20)
    check([node("Erf", ["x"])], {"x": x})
    model = make_model([node("Gelu", ["x"], approximate="cubic")], {"x": x}, ["y"], opset=20)
    with pytest.raises(OnnxConversionError, match="approximate='cubic'"):
        ge.from_onnx(model)


@pytest.mark.parametrize("opset", OPSETS)
def test_clip_bounds_as_inputs(opset):
    x = f32(3, 4)
    lo, hi = np.float32(-0.5), np.float32(0.75)
    check(
        [node("Clip", ["x", "lo", "hi"])], {"x": x}, opset=opset, initializers={"lo": lo, "hi": hi}
    )
    check([node("Clip", ["x", "", "hi"])], {"x": x}, opset=opset, initializers={"hi": hi})
    # Bounds fed at run time become maximum/minimum.
    check(
        [node("Clip", ["x", "lo", "hi"])],
        {"x": x, "lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)},
        opset=opset,
    )


def test_clip_min_above_max_gives_max_everywhere():
    out = check(
        [node("Clip", ["x", "lo", "hi"])],
        {"x": f32(5)},
        initializers={"lo": np.float32(1.0), "hi": np.float32(-1.0)},
    )[0]
    assert (out == -1.0).all()


def test_cast_and_cast_like():
    x = np.array([-2.7, -0.5, 0.5, 2.7, 1e4], np.float32)
    for to in (
        TensorProto.INT32,
        TensorProto.INT8,
        TensorProto.FLOAT16,
        TensorProto.DOUBLE,
        TensorProto.BOOL,
        TensorProto.UINT8,
    ):
        check([node("Cast", ["x"], to=to)], {"x": np.abs(x) if to == TensorProto.UINT8 else x})
    check([node("CastLike", ["x", "like"])], {"x": x, "like": np.zeros(1, np.int64)})


# -- where ONNX and numpy differ --------------------------------------------------------


def test_integer_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7, 0, 9], np.int32)
    b = np.array([2, 2, -2, -2, 5, 3], np.int32)
    out = check([node("Div", ["a", "b"])], {"a": a, "b": b})[0]
    assert out.tolist() == [3, -3, -3, 3, 0, 3]  # numpy's // would give -4 for -7 // 2
    assert (a // b).tolist() != out.tolist()


def test_integer_mod_signs():
    a = np.array([7, -7, 7, -7, 6], np.int64)
    b = np.array([3, 3, -3, -3, 3], np.int64)
    floor_mod = check([node("Mod", ["a", "b"])], {"a": a, "b": b})[0]
    assert floor_mod.tolist() == [1, 2, -2, -1, 0]  # the divisor's sign, as numpy's %
    c_mod = check([node("Mod", ["a", "b"], fmod=1)], {"a": a, "b": b})[0]
    assert c_mod.tolist() == [1, -1, 1, -1, 0]  # the dividend's sign, as C's fmod


def test_float_mod_matches_fmod():
    a = np.array([-4.3, 7.2, 5.0, 4.3, -7.2, 8.0, 1e6 + 0.5], np.float32)
    b = np.array([2.1, -3.4, 8.0, -2.1, 3.4, 5.0, 3.0], np.float32)
    out = check([node("Mod", ["a", "b"], fmod=1)], {"a": a, "b": b})[0]
    np.testing.assert_array_equal(out, np.fmod(a, b))  # exact for float32


def test_float_mod_floor_form_at_opset_28():
    if NEWEST < 28:
        pytest.skip("Mod-28 (fmod=0 on floats) needs onnx with opset 28")
    a = np.array([-4.5, 7.0, 5.0, 3.0, -0.0, 2.0], np.float32)
    b = np.array([2.0, -3.0, np.inf, -np.inf, 3.0, 0.0], np.float32)
    model = make_model([node("Mod", ["a", "b"])], {"a": a, "b": b}, ["y"], opset=28)
    out = run_imported(model, {"a": a, "b": b})[0]
    # ONNX's special cases: x returned for y=+inf with x of its sign, y for the other
    # sign, nan for y=0.
    np.testing.assert_array_equal(out, np.array([1.5, -2.0, 5.0, -np.inf, 0.0, np.nan], np.float32))


def test_gather_out_of_range_fails_in_both():
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    model = make_model([node("Gather", ["x", "i"])], {"x": f32(3, 2), "i": np.array([5])}, ["y"])
    feeds = {"x": f32(3, 2), "i": np.array([5], np.int64)}
    with pytest.raises(ge.ExecutionError, match="out of bounds"):
        run_imported(model, feeds)
    with pytest.raises(InvalidArgument, match="out of data bounds"):
        ort.InferenceSession(model.SerializeToString()).run(None, feeds)


def test_gather_negative_indices_count_from_end():
    check(
        [node("Gather", ["x", "i"], axis=1)],
        {"x": f32(2, 3, 4), "i": np.array([[-1, 0], [2, -3]], np.int64)},
    )


def test_reductions_over_an_empty_set():
    empty = np.zeros((2, 0, 3), np.float32)
    axes = {"axes": np.array([1], np.int64)}
    out = check([node("ReduceMax", ["x", "axes"], keepdims=0)], {"x": empty}, initializers=axes)[0]
    assert out.shape == (2, 3) and (out == -np.inf).all()  # numpy's max would raise
    out = check([node("ReduceSum", ["x", "axes"], keepdims=0)], {"x": empty}, initializers=axes)[0]
    assert (out == 0).all()
    out = check(
        [node("ReduceMin", ["x", "axes"])], {"x": empty.astype(np.int32)}, initializers=axes
    )[0]
    assert (out == np.iinfo(np.int32).max).all()


def test_one_hot_negative_indices_count_from_end():
    out = check(
        [node("OneHot", ["i", "depth", "values"], axis=-1)],
        {"i": np.array([0, -1, 2, 5, -4], np.int64)},
        initializers={"depth": np.array(4, np.int64), "values": np.array([-1.0, 3.0], np.float32)},
    )[0]
    assert out[1].tolist() == [-1, -1, -1, 3]  # -1 is the last class, not "no class"
    assert out[3].tolist() == [-1, -1, -1, -1]  # out of range: off everywhere


def test_reshape_zero_copies_a_dim_unless_allowzero():
    x = f32(2, 3, 4)
    check([node("Reshape", ["x", "s"])], {"x": x}, initializers={"s": np.array([0, -1])})
    empty = np.zeros((0, 3), np.float32)
    check(
        [node("Reshape", ["x", "s"], allowzero=1)],
        {"x": empty},
        initializers={"s": np.array([3, 0])},
    )


# -- reductions: the attribute form and the input form ----------------------------------

REDUCTIONS = [
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
]


def _reduce_node(op, opset, axes, **attrs):
    """Axes as an attribute before the op's opset 18 form (13 for ReduceSum)."""
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    if axes is None:
        return node(op, ["x"], **attrs), {}
    if as_input:
        return node(op, ["x", "axes"], **attrs), {"axes": np.array(axes, np.int64)}
    return node(op, ["x"], axes=axes, **attrs), {}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("op", REDUCTIONS)
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, -1], 0), (None, 1), (None, 0)])
def test_reductions(op, opset, axes, keepdims):
    n, inits = _reduce_node(op, opset, axes, keepdims=keepdims)
    check([n], {"x": POS}, opset=opset, initializers=inits, rtol=1e-5)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceL2", "ReduceSumSquare"])
def test_noop_with_empty_axes_applies_the_formula_without_reducing(op):
    check(
        [node(op, ["x", "axes"], noop_with_empty_axes=1)],
        {"x": X},
        initializers={"axes": np.zeros(0, np.int64)},
    )


def test_reduction_axes_fed_at_run_time_are_refused_with_reason():
    model = make_model([node("ReduceSum", ["x", "axes"])], {"x": X, "axes": np.array([1])}, ["y"])
    with pytest.raises(OnnxConversionError, match="input 1 .*axes.* must be an initializer"):
        ge.from_onnx(model)


def test_reduce_max_on_bool_opset_20():
    b = rng.random((3, 4)) > 0.5
    check(
        [node("ReduceMax", ["x", "axes"], keepdims=0)],
        {"x": b},
        opset=20,
        initializers={"axes": np.array([1], np.int64)},
    )


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_extremes(op, last):
    ties = np.array([[1, 3, 3, 0], [2, 2, 0, 0], [5, 1, 5, 1]], np.float32)
    check([node(op, ["x"], axis=1, keepdims=0, select_last_index=last)], {"x": ties})
    check([node(op, ["x"], axis=0, select_last_index=last)], {"x": ties})


# -- shape ops ----------------------------------------------------------------------------


@pytest.mark.parametrize("opset", OPSETS)
def test_layout_ops(opset):
    x = f32(2, 3, 4)
    check([node("Transpose", ["x"], perm=[2, 0, 1])], {"x": x}, opset=opset)
    check([node("Flatten", ["x"], axis=2)], {"x": x}, opset=opset)
    check(
        [node("Unsqueeze", ["x", "a"])],
        {"x": x},
        opset=opset,
        initializers={"a": np.array([0, -1])},
    )
    check(
        [node("Squeeze", ["x", "a"])],
        {"x": f32(2, 1, 4)},
        opset=opset,
        initializers={"a": np.array([1])},
    )
    check([node("Concat", ["x", "x"], axis=-1)], {"x": x}, opset=opset)
    check(
        [node("Expand", ["x", "s"])],
        {"x": f32(3, 1)},
        opset=opset,
        initializers={"s": np.array([2, 1, 4])},
    )
    check(
        [node("Tile", ["x", "r"])], {"x": x}, opset=opset, initializers={"r": np.array([1, 2, 3])}
    )


@pytest.mark.parametrize("opset", OPSETS)
def test_slice(opset):
    x = f32(4, 5, 6)
    check(
        [node("Slice", ["x", "s", "e", "a", "t"])],
        {"x": x},
        opset=opset,
        initializers={
            "s": np.array([1, -1]),
            "e": np.array([100, -5]),
            "a": np.array([0, 2]),
            "t": np.array([2, -2]),
        },
    )
    check(
        [node("Slice", ["x", "s", "e"])],
        {"x": x},
        opset=opset,
        initializers={"s": np.array([0, 1]), "e": np.array([2, 9223372036854775807])},
    )


@pytest.mark.parametrize("opset", OPSETS)
def test_split(opset):
    x = f32(2, 6)
    outs = ["a", "b", "c"]
    check(
        [node("Split", ["x", "sizes"], outs, axis=1)],
        {"x": x},
        outs,
        opset=opset,
        initializers={"sizes": np.array([1, 2, 3])},
    )
    if opset >= 18:
        check([node("Split", ["x"], outs, axis=1, num_outputs=3)], {"x": x}, outs, opset=opset)
        check(
            [node("Split", ["x"], ["a", "b"], axis=1, num_outputs=2)],
            {"x": f32(2, 5)},
            ["a", "b"],
            opset=opset,
        )
    else:
        check([node("Split", ["x"], outs, axis=1)], {"x": x}, outs, opset=opset)


@pytest.mark.parametrize("opset", OPSETS)
def test_pad(opset):
    x = f32(2, 3)
    pads = np.array([1, 0, 2, -1])
    check(
        [node("Pad", ["x", "p", "v"])],
        {"x": x},
        opset=opset,
        initializers={"p": pads, "v": np.float32(1.5)},
    )
    if opset >= 18:
        check(
            [node("Pad", ["x", "p", "", "a"])],
            {"x": x},
            opset=opset,
            initializers={"p": np.array([2, 1]), "a": np.array([1])},
        )


def test_unknown_pad_modes_are_refused():
    model = make_model(
        [node("Pad", ["x", "p"], mode="symmetric")],
        {"x": f32(3, 3)},
        ["y"],
        initializers={"p": np.array([1, 1, 1, 1])},
    )
    with pytest.raises(OnnxConversionError, match="mode 'symmetric' is not one of"):
        ge.from_onnx(model)


def test_gather_and_one_hot_and_shape_ops():
    check([node("Gather", ["x", "i"])], {"x": f32(5, 3), "i": np.array([4, 0, 4], np.int64)})
    x = f32(2, 3, 4)
    check([node("Shape", ["x"], start=1)], {"x": x}, opset=NEWEST)
    check([node("Size", ["x"])], {"x": x})
    check(
        [node("ConstantOfShape", ["s"], value=numpy_helper.from_array(np.array([7], np.int32)))],
        {},
        initializers={"s": np.array([2, 3])},
    )
    check(
        [node("Range", ["a", "b", "d"])],
        {},
        initializers={"a": np.float32(1.0), "b": np.float32(2.0), "d": np.float32(0.3)},
    )
    check(
        [node("Range", ["a", "b", "d"])],
        {},
        initializers={"a": np.int64(10), "b": np.int64(4), "d": np.int64(-2)},
    )


def test_shape_arithmetic_folds_with_a_symbolic_batch():
    # Flatten everything but the batch, as exporters write it: Shape -> Gather ->
    # Unsqueeze -> Concat -> Reshape.
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "one"], ["c"], axis=0),
        node("Gather", ["s", "two"], ["h"], axis=0),
        node("Mul", ["c", "h"], ["ch"]),
        node("Unsqueeze", ["ch", "zero_axis"], ["ch1"]),
        node("Concat", ["minus_one", "ch1"], ["target"], axis=0),
        node("Reshape", ["x", "target"], ["y"]),
    ]
    inits = {
        "one": np.array(1),
        "two": np.array(2),
        "zero_axis": np.array([0]),
        "minus_one": np.array([-1]),
    }
    model = make_model(nodes, {"x": (np.float32, ["N", 3, 4])}, ["y"], initializers=inits)
    g = ge.from_onnx(model)
    assert [n.op for n in g.nodes] == ["placeholder", "reshape"]
    assert g.tensor("y").shape == ("N", 12)
    x = f32(5, 3, 4)
    assert_same([ge.run(g, "y", {"x": x})], reference(model, {"x": x}))


def test_symbolic_shape_values_are_refused_with_reason():
    model = make_model(
        [node("Shape", ["x"], ["s"]), node("Cast", ["s"], to=onnx.TensorProto.FLOAT)],
        {"x": (np.float32, ["N", 3])},
        ["y"],
    )
    with pytest.raises(OnnxConversionError, match=r"symbolic dims \['N', 3\]"):
        ge.from_onnx(model)


def test_constant_of_a_symbolic_shape_is_broadcast_at_run_time():
    """PyTorch's zero initial RNN state with a dynamic batch: ConstantOfShape of
    [layers, N, hidden], the N read off the graph input."""
    model = make_model(
        [
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "one"], ["n"], axis=0),
            node("Unsqueeze", ["n", "zero_axis"], ["n1"]),
            node("Concat", ["two", "n1", "three"], ["shape"], axis=0),
            node(
                "ConstantOfShape",
                ["shape"],
                ["y"],
                value=onnx.helper.make_tensor("v", onnx.TensorProto.FLOAT, [1], [1.5]),
            ),
        ],
        {"x": (np.float32, [4, "N", 5])},
        ["y"],
        initializers={
            "one": np.array(1),
            "zero_axis": np.array([0]),
            "two": np.array([2]),
            "three": np.array([3]),
        },
    )
    g = ge.from_onnx(model)
    assert g.tensor("y").shape == (2, "N", 3)
    for n in (1, 6):
        assert_same([ge.run(g, "y", {"x": f32(4, n, 5)})], [np.full((2, n, 3), 1.5, np.float32)])


# -- linear algebra ------------------------------------------------------------------------


def test_matmul_and_gemm():
    check([node("MatMul", ["a", "b"])], {"a": f32(2, 3, 4), "b": f32(4, 5)})
    check(
        [node("Gemm", ["a", "b", "c"], alpha=0.5, beta=2.0, transA=1, transB=1)],
        {"a": f32(4, 3), "b": f32(5, 4), "c": f32(5)},
    )
    check([node("Gemm", ["a", "b"])], {"a": f32(3, 4), "b": f32(4, 5)})


@pytest.mark.parametrize(
    "equation,shapes",
    [
        ("ij,jk->ik", [(3, 4), (4, 5)]),
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
        ("ij,kj->ik", [(3, 4), (5, 4)]),
        ("i,i", [(4,), (4,)]),
        ("ij->ji", [(3, 4)]),
        ("ij->i", [(3, 4)]),
        ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
        ("bij,bj->bi", [(2, 3, 4), (2, 4)]),
        ("i,j->ij", [(3,), (4,)]),
    ],
)
def test_einsum_matrix_products(equation, shapes):
    names = [f"x{i}" for i in range(len(shapes))]
    check([node("Einsum", names, equation=equation)], {n: f32(*s) for n, s in zip(names, shapes)})


# -- nn and losses ----------------------------------------------------------------------------


@pytest.mark.parametrize("opset", OPSETS)
def test_softmax_family(opset):
    for op in ("Softmax", "LogSoftmax"):
        check([node(op, ["x"], axis=1)], {"x": f32(2, 3, 4)}, opset=opset)
        check([node(op, ["x"])], {"x": f32(2, 3, 4)}, opset=opset)


def test_conv_and_pools():
    x = f32(2, 3, 7, 6)
    w = f32(4, 3, 3, 2)
    check(
        [node("Conv", ["x", "w", "b"], pads=[1, 0, 2, 1], strides=[2, 1])],
        {"x": x, "w": w, "b": f32(4)},
    )
    check([node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2])], {"x": x, "w": w})
    check([node("Conv", ["x", "w"], auto_pad="SAME_LOWER")], {"x": x, "w": w})
    check([node("Conv", ["x", "w"], dilations=[2, 1], pads=[1, 1, 1, 1])], {"x": x, "w": w})
    check([node("Conv", ["x", "w"])], {"x": f32(2, 3, 9), "w": f32(4, 3, 3)})  # 1-D
    check(
        [node("MaxPool", ["x"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 1, 1, 0])], {"x": x}
    )
    for include in (0, 1):
        check(
            [
                node(
                    "AveragePool",
                    ["x"],
                    kernel_shape=[3, 3],
                    pads=[1, 1, 1, 1],
                    count_include_pad=include,
                )
            ],
            {"x": x},
        )
    check([node("GlobalAveragePool", ["x"])], {"x": x})
    check([node("GlobalMaxPool", ["x"])], {"x": x})


def test_batch_normalization_and_dropout():
    x = f32(2, 3, 4, 5)
    check(
        [node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
        {"x": x, "s": f32(3), "b": f32(3), "m": f32(3), "v": f32(3, low=0.5, high=2.0)},
    )
    check(
        [node("Dropout", ["x", "r"], ["y", "mask"])],
        {"x": x},
        ["y", "mask"],
        initializers={"r": np.float32(0.3)},
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_softmax_cross_entropy_and_nll(reduction):
    scores, labels = f32(5, 4, 3), rng.integers(0, 4, (5, 3)).astype(np.int64)
    outs = ["loss", "log_prob"]
    check(
        [node("SoftmaxCrossEntropyLoss", ["s", "l"], outs, reduction=reduction)],
        {"s": scores, "l": labels},
        outs,
    )
    check(
        [
            node(
                "SoftmaxCrossEntropyLoss",
                ["s", "l", "w"],
                outs,
                reduction=reduction,
                ignore_index=2,
            )
        ],
        {"s": scores, "l": labels, "w": f32(4, low=0.5)},
        outs,
    )
    check(
        [node("NegativeLogLikelihoodLoss", ["s", "l"], reduction=reduction)],
        {"s": scores, "l": labels},
    )


def test_cross_entropy_without_weights_is_our_op():
    model = make_model(
        [node("SoftmaxCrossEntropyLoss", ["s", "l"], ["loss"])],
        {"s": f32(5, 4), "l": rng.integers(0, 4, 5)},
        ["loss"],
    )
    assert "softmax_cross_entropy" in [n.op for n in ge.from_onnx(model).nodes]


# -- the model: names, dims, parameters, constants, refusals --------------------------------


def test_inputs_initializers_constants_and_names():
    nodes = [
        node("Constant", [], ["c"], value=numpy_helper.from_array(np.float32([1, 2, 3]))),
        node("MatMul", ["x", "W"], ["h"], name="fc"),
        node("Add", ["h", "c"], ["/fc/out:0"]),
        node("Relu", ["/fc/out:0"], ["y"]),
    ]
    model = make_model(
        nodes,
        {"x": (np.float32, ["batch", 4])},
        ["y"],
        initializers={"W": f32(4, 3), "unused": f32(2)},
    )
    g = ge.from_onnx(model, freeze=["unused"])
    by_name = {n.name: n for n in g.nodes}
    assert by_name["x"].op == "placeholder" and by_name["x"].types[0].shape == ("batch", 4)
    assert by_name["W"].op == "parameter" and by_name["W"].attrs["trainable"]
    assert by_name["unused"].op == "parameter" and not by_name["unused"].attrs["trainable"]
    assert by_name["c"].op == "constant"
    assert by_name["h"].op == "matmul"  # each value's node takes its name
    assert by_name["fc/out_0"].op == "add"  # made a valid graphengine name
    assert g.outputs == ["y"]
    np.testing.assert_array_equal(g.values["W"], numpy_helper.to_array(model.graph.initializer[0]))


def test_unnamed_dims_get_symbols_of_their_own():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])
    model = helper.make_model(
        helper.make_graph([node("Relu", ["x"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    g = ge.from_onnx(model)
    assert g.tensor("x").shape == ("x_dim0", 3)


def test_static_only_initializers_are_folded_not_parameters():
    model = make_model(
        [node("Reshape", ["x", "shape"])],
        {"x": f32(2, 6)},
        ["y"],
        initializers={"shape": np.array([3, 4])},
    )
    g = ge.from_onnx(model)
    assert [n.op for n in g.nodes] == ["placeholder", "reshape"]
    assert g.node("y").attrs["newshape"] == (3, 4)


def test_integer_initializers_are_not_trainable():
    model = make_model(
        [node("Gather", ["table", "i"])],
        {"i": np.array([0, 1])},
        ["y"],
        initializers={"table": np.arange(6).reshape(3, 2)},
    )
    g = ge.from_onnx(model)
    assert not g.node("table").attrs["trainable"]


def test_freezing_an_unknown_initializer_is_refused():
    model = make_model([node("Add", ["x", "b"])], {"x": f32(3)}, ["y"], initializers={"b": f32(3)})
    with pytest.raises(OnnxConversionError, match="no such initializer.*'b'"):
        ge.from_onnx(model, freeze=["bias"])


def test_unsupported_ops_are_all_listed_before_anything_is_built():
    nodes = [
        node("TopK", ["x", "k"], ["v", "i"]),
        node("Acos", ["x"], ["e1"]),
        node("Acos", ["e1"], ["e2"]),
        node("Relu", ["e2"], ["y"]),
    ]
    model = make_model(nodes, {"x": f32(4)}, ["y"], initializers={"k": np.array([2])})
    with pytest.raises(OnnxConversionError) as info:
        ge.from_onnx(model)
    message = str(info.value)
    assert "Acos x2 (opset 18" in message and "TopK x1 (opset 18" in message
    assert "Relu x" not in message


def test_unsupported_dtypes_and_old_opsets_are_refused():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT8E4M3FN, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [3])
    model = helper.make_model(
        helper.make_graph([node("Relu", ["x"])], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    with pytest.raises(OnnxConversionError, match="FLOAT8E4M3FN"):
        ge.from_onnx(model)


@pytest.mark.parametrize("opset", [7, 9, 11, 12])
def test_older_opsets_are_converted(opset):
    x = f32(2, 3)
    nodes = [
        node("Relu", ["x"], ["r"]),
        node("ReduceSum", ["r"], ["s"], axes=[1], keepdims=1),
        node("Unsqueeze", ["s"], ["y"], axes=[0]),
    ]
    check(nodes, {"x": x}, opset=opset)


def test_old_opset_conversion_failure_names_the_op():
    old = make_model([node("Relu", ["x"])], {"x": f32(3)}, ["y"], opset=9)
    old.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(OnnxConversionError, match="opset 9.*NoSuchOp is not defined at opset 9"):
        ge.from_onnx(old)


def test_model_local_functions_are_inlined():
    fn = helper.make_function(
        "local",
        "double_relu",
        ["a"],
        ["b"],
        [node("Relu", ["a"], ["r"]), node("Add", ["r", "r"], ["b"])],
        [helper.make_opsetid("", 18)],
    )
    graph = helper.make_graph(
        [helper.make_node("double_relu", ["x"], ["y"], domain="local")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
    )
    model = helper.make_model(
        graph,
        functions=[fn],
        opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("local", 1)],
    )
    x = np.array([-1.0, 0.5, 2.0], np.float32)
    assert run_imported(model, {"x": x})[0].tolist() == [0.0, 1.0, 4.0]


def test_paths_bytes_and_models_are_accepted(tmp_path):
    model = make_model([node("Relu", ["x"])], {"x": f32(3)}, ["y"])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    for source in (path, str(path), model.SerializeToString(), model):
        assert ge.from_onnx(source).outputs == ["y"]
    with pytest.raises(ge.FileFormatError, match="not an ONNX model"):
        ge.from_onnx(b"\x00garbage\xff")


@pytest.mark.parametrize("equation", ["i,i->i", "ij,jk,kl->il", "bij,bjk->ik"])
def test_einsum_that_is_not_a_matrix_product_is_refused(equation):
    terms = equation.split("->")[0].split(",")
    feeds = {f"x{i}": f32(*([3] * len(t))) for i, t in enumerate(terms)}
    model = make_model([node("Einsum", list(feeds), equation=equation)], feeds, ["y"])
    with pytest.raises(OnnxConversionError, match="Einsum|einsum"):
        ge.from_onnx(model)


def test_products_of_symbolic_dims_are_followed_through_reshapes():
    """A head split as exporters write it: x (N, 2, 3) to [N*2, 3] (the product
    from Shape, Gather and Mul), then back to [N, 2, -1]: -1 is 3, and the
    result keeps the symbol N.  (The products are known to Shape and Reshape
    only: an op between the two reshapes would lose them.)"""
    inits = {
        "zero": np.array(0),
        "two": np.array(2),
        "axis0": np.array([0]),
        "three": np.array([3]),
        "back": np.array([2, -1]),
    }
    model = make_model(
        [
            node("Shape", ["x"], ["s"]),
            node("Gather", ["s", "zero"], ["n"], axis=0),
            node("Mul", ["n", "two"], ["n2"]),
            node("Unsqueeze", ["n2", "axis0"], ["n2_1"]),
            node("Concat", ["n2_1", "three"], ["flat_shape"], axis=0),
            node("Reshape", ["x", "flat_shape"], ["flat"]),
            node("Unsqueeze", ["n", "axis0"], ["n_1"]),
            node("Concat", ["n_1", "back"], ["split_shape"], axis=0),
            node("Reshape", ["flat", "split_shape"], ["r"]),
            node("Relu", ["r"], ["y"]),
        ],
        {"x": (np.float32, ["N", 2, 3])},
        ["y"],
        initializers=inits,
    )
    g = ge.from_onnx(model)
    assert g.tensor("y").shape == ("N", 2, 3)
    for n in (1, 4):
        x = f32(n, 2, 3)
        assert_same([ge.run(g, "y", {"x": x})], [np.maximum(x, 0)])
