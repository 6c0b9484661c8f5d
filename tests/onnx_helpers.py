"""Helpers for the ONNX tests: building small models and a second opinion.

The second opinion is onnxruntime; where it has no kernel for an op at an
opset, onnx's reference evaluator.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

import graphengine as ge

NEWEST = onnx.defs.onnx_opset_version()


def value_info(name: str, value: Any) -> onnx.ValueInfoProto:
    """A graph input or output for an array (its dtype and shape), or for a
    (dtype, shape) pair whose shape may hold dim names."""
    if isinstance(value, tuple):
        dtype, shape = value
    else:
        dtype, shape = np.asarray(value).dtype, np.shape(value)
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape
    )


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, Any],
    outputs: Sequence[str],
    *,
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 18,
    name: str = "test",
) -> onnx.ModelProto:
    """A model of ``nodes``; outputs get no declared type (shape inference fills it)."""
    graph = helper.make_graph(
        list(nodes),
        name,
        [value_info(k, v) for k, v in inputs.items()],
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v for v in inferred.graph.value_info}
    for out in model.graph.output:
        if out.name in types:
            out.CopyFrom(types[out.name])
    return model


def reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The outputs by onnxruntime, or by onnx's reference evaluator where
    onnxruntime has no kernel for the op at this opset."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, NotImplemented

    try:
        session = ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"]
        )
    except (Fail, NotImplemented):  # no kernel for this op at this opset
        from onnx.reference import ReferenceEvaluator

        return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]
    return session.run(None, feeds)


def run_imported(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Import with ge.from_onnx and run; outputs in the model's order."""
    graph = ge.from_onnx(model)
    names = [v.name for v in model.graph.input]
    assert graph.outputs, "the imported graph marks its outputs"
    results = ge.run(graph, graph.outputs, {k: v for k, v in feeds.items() if k in names})
    return [results[ref] for ref in graph.outputs]


def assert_same(
    ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], rtol: float = 1e-5, atol: float = 1e-6
) -> None:
    """Outputs match in dtype and shape exactly, in value within tolerance."""
    assert len(ours) == len(theirs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        b = np.asarray(b)
        assert a.dtype == b.dtype, f"output {i}: dtype {a.dtype}, expected {b.dtype}"
        assert a.shape == b.shape, f"output {i}: shape {a.shape}, expected {b.shape}"
        if a.dtype.kind in "biu":
            np.testing.assert_array_equal(a, b, err_msg=f"output {i}")
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"output {i}")


def node(
    op: str, inputs: Sequence[str], outputs: Sequence[str] = ("y",), **attrs: Any
) -> onnx.NodeProto:
    """One ONNX node, outputs named ``y`` unless given."""
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def check(
    nodes: Sequence[onnx.NodeProto],
    feeds: dict[str, np.ndarray],
    outputs: Sequence[str] = ("y",),
    *,
    opset: int = 18,
    initializers: Any = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
) -> list[np.ndarray]:
    """Import, run, and compare with onnxruntime (dtype and shape exactly)."""
    model = make_model(nodes, feeds, outputs, opset=opset, initializers=initializers)
    ours = run_imported(model, feeds)
    assert_same(ours, reference(model, feeds), rtol=rtol, atol=atol)
    return ours
