"""A bfloat16 ONNX model (MatMul, Add, Relu, ReduceMean, Softmax, as a bfloat16
export writes them) is imported and differentiated: its forward values and the
gradients of its initializers match the same model in float32 (weights rounded
to bfloat16 in both) to bfloat16's precision."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphengine as ge  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)


def _model(elem_type: int, dtype) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    weights = {
        "w1": rng.standard_normal((6, 8)) * 0.5,
        "b1": rng.standard_normal(8) * 0.1,
        "w2": rng.standard_normal((8, 4)) * 0.5,
    }
    inits = [numpy_helper.from_array(v.astype(BF16).astype(dtype), k) for k, v in weights.items()]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["p"], axis=-1),
        helper.make_node("ReduceMean", ["p"], ["y"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "bf16_mlp",
        [helper.make_tensor_value_info("x", elem_type, ["N", 6])],
        [helper.make_tensor_value_info("y", elem_type, [])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_a_bfloat16_model_is_differentiated_like_its_float32_twin():
    x = np.random.default_rng(1).standard_normal((5, 6)).astype(BF16)
    results = {}
    for name, elem_type, dtype in [
        ("bf16", TensorProto.BFLOAT16, BF16),
        ("f32", TensorProto.FLOAT, np.float32),
    ]:
        graph = ge.from_onnx(_model(elem_type, dtype))
        # The model's output y, the mean of a softmax, is constant (1/4): take a
        # loss of the probabilities instead, which reaches every weight.
        loss = ge.sum(ge.square(graph.tensor("p") - graph.constant(np.full((), 0.3, dtype))))
        wrt = ["w1", "b1", "w2", "x"]
        tg = ge.gradients(graph, loss, wrt)
        feeds = {"x": x.astype(dtype)}
        got = ge.run(tg, ["y"] + [tg.gradient.grads[w] for w in wrt], feeds)
        assert all(v.dtype == dtype for v in got.values())
        results[name] = {k: np.asarray(v, np.float32) for k, v in got.items()}
    for key, want in results["f32"].items():
        have = results["bf16"][key]
        scale = float(np.max(np.abs(want)))
        assert float(np.linalg.norm(have - want)) <= 2**-5 * float(np.linalg.norm(want)), key
        np.testing.assert_allclose(have, want, rtol=2**-6, atol=2**-4 * scale, err_msg=key)
    # The bfloat16 MatMul is imported as a float32 product rounded back, and its
    # gradient is float32 products rounded back too.
    graph = ge.from_onnx(_model(TensorProto.BFLOAT16, BF16))
    products = [n for n in graph.nodes if n.op == "matmul"]
    assert len(products) == 2 and all(n.types[0].dtype == np.float32 for n in products)
    # And it exports back (onnx's full check passes; the outputs stay bfloat16).
    exported = ge.to_onnx(graph)
    assert exported.graph.output[0].type.tensor_type.elem_type == TensorProto.BFLOAT16


def test_imported_bfloat16_initializers_are_not_trained():
    """The optimizers update float16/32/64 parameters in place; bfloat16 ones are
    imported as frozen (differentiate them with wrt=, as above)."""
    graph = ge.from_onnx(_model(TensorProto.BFLOAT16, BF16))
    assert [p.name for p in graph.parameters(trainable=True)] == []
    assert sorted(p.name for p in graph.parameters()) == ["b1", "w1", "w2"]
