"""ONNX's own conformance suite, run against graphengine's ONNX backend.

``onnx.backend.test.BackendTest`` builds one unittest case per ONNX node test
(onnx 1.23 builds them in memory); we keep its node cases, on the CPU, and skip
through the explicit lists below what graphengine does not support:

* ``NOT_IN_OP_SET``: ONNX ops outside our op set (a case using one is skipped,
  and ``test_lists_are_consistent`` fails if any of them gains an import rule or
  a new onnx release brings an op that is in neither list);
* ``IMPORT_TIME_ONLY``: ops imported only where their inputs are known at
  import time (ReduceProd), which the node cases feed at run time;
* ``NO_DTYPE``: element types graphengine has no dtype for (float8, float4,
  int4, int2, string);
* (cases whose default opset is below 13 run too: the importer converts them
  with onnx's version converter);
* ``CASES``: single cases, each with its reason (random outputs, attributes our
  ops lack).

Every other node case must pass.  With onnx 1.23.2 (1884 node cases): see
``EXPECTED`` at the bottom, which a test keeps honest.

The runner checks output dtypes exactly and passes some inputs as numpy
scalars; our backend never raises ONNX's "not supposed to implement it"
exception (which the runner would count as a pass).
"""

from __future__ import annotations

import collections
import unittest

import pytest

onnx = pytest.importorskip("onnx")
onnx_backend_test = pytest.importorskip("onnx.backend.test")

from onnx import TensorProto
from onnx.backend.test.loader import load_model_tests

from graphengine.onnx.backend import GraphEngineBackend
from graphengine.onnx.import_rules import RULES
from graphengine.onnx.tensor_types import ONNX_TO_NUMPY

_CONTROL_FLOW = "control flow and subgraphs are not part of graphengine's op set"
_SEQUENCE = "sequences and optionals are not tensors; graphengine has tensors only"
_QUANT = "quantized integer arithmetic is not part of graphengine's op set"
_STRING = "graphengine has no string tensors"
_RANDOM = "random ops are not part of graphengine's op set (only dropout)"
_SIGNAL = "signal processing ops are not part of graphengine's op set"
_ML = "ONNX-ML and training-domain ops are not part of graphengine's op set"
_NO_OP = "graphengine has no op it can be composed from"

#: ONNX op type -> why graphengine does not import it.
NOT_IN_OP_SET: dict[str, str] = {
    **dict.fromkeys(["If", "Loop", "Scan"], _CONTROL_FLOW),
    **dict.fromkeys(
        [
            "SequenceEmpty",
            "SequenceInsert",
            "SequenceLength",
            "SequenceMap",
            "SplitToSequence",
            "OptionalGetElement",
            "OptionalHasElement",
        ],
        _SEQUENCE,
    ),
    **dict.fromkeys(
        [
            "ConvInteger",
            "MatMulInteger",
            "QLinearConv",
            "QLinearMatMul",
            "QuantizeLinear",
            "DequantizeLinear",
            "DynamicQuantizeLinear",
            "BitCast",
            "BitShift",
            "BitwiseAnd",
            "BitwiseNot",
            "BitwiseOr",
            "BitwiseXor",
        ],
        _QUANT,
    ),
    **dict.fromkeys(
        ["RegexFullMatch", "StringConcat", "StringNormalizer", "StringSplit", "TfIdfVectorizer"],
        _STRING,
    ),
    **dict.fromkeys(["Bernoulli", "RandomUniformLike"], _RANDOM),
    **dict.fromkeys(
        [
            "DFT",
            "STFT",
            "BlackmanWindow",
            "HammingWindow",
            "HannWindow",
            "MelWeightMatrix",
            "ImageDecoder",
        ],
        _SIGNAL,
    ),
    **dict.fromkeys(
        [
            "ArrayFeatureExtractor",
            "Binarizer",
            "LabelEncoder",
            "TreeEnsemble",
            "Adagrad",
            "Adam",
            "Momentum",
        ],
        _ML,
    ),
    **dict.fromkeys(
        [
            "Acos",
            "Acosh",
            "Asin",
            "Asinh",
            "Atan",
            "Atanh",
            "Round",
            "CumSum",
            "CumProd",
            "Det",
            "TopK",
            "Unique",
            "NonZero",
            "Compress",
            "NonMaxSuppression",
            "EyeLike",
            "ReverseSequence",
        ],
        _NO_OP,
    ),
    **dict.fromkeys(
        ["GatherND", "Scatter", "ScatterND", "TensorScatter"],
        "graphengine gathers along one axis (take, gather_elements); it has no N-d gather or "
        "scatter (Scatter, the old name of ScatterElements, is opset 9-10 only)",
    ),
    **dict.fromkeys(
        [
            "DeformConv",
            "Col2Im",
            "MaxUnpool",
            "LpPool",
            "RoiAlign",
            "GridSample",
            "AffineGrid",
            "Upsample",
            "DepthToSpace",
            "SpaceToDepth",
            "CenterCropPad",
            "CausalConvWithState",
        ],
        "graphengine has conv, conv_transpose (and their 2-D forms), max_pool and avg_pool only",
    ),
    **dict.fromkeys(
        ["GroupNormalization", "LpNormalization", "MeanVarianceNormalization", "LRN"],
        "graphengine has batch, layer, instance and RMS normalization only",
    ),
    **dict.fromkeys(
        ["Attention", "LinearAttention", "FlexAttention", "RotaryEmbedding", "SwiGLU"],
        "graphengine has no fused attention ops",
    ),
}

#: ONNX element types graphengine has no dtype for.
NO_DTYPE: dict[str, str] = {
    TensorProto.DataType.Name(code): "graphengine has no such dtype"
    for code in TensorProto.DataType.values()
    if code not in ONNX_TO_NUMPY and code != TensorProto.UNDEFINED
}

_RANDOM_OUTPUT = "training-mode dropout draws a random mask, which cannot match ONNX's"

#: Single cases, with the reason each is skipped.
CASES: dict[str, str] = {
    "test_training_dropout": _RANDOM_OUTPUT,
    "test_training_dropout_mask": _RANDOM_OUTPUT,
    "test_training_dropout_default": _RANDOM_OUTPUT,
    "test_training_dropout_default_mask": _RANDOM_OUTPUT,
    "test_identity_opt": _SEQUENCE,
    "test_identity_sequence": _SEQUENCE,
}


def _default_opset(model) -> int | None:
    versions = {o.domain: o.version for o in model.opset_import}
    return versions.get("", versions.get("ai.onnx"))


def _element_types(model) -> set[str]:
    graph = model.graph
    codes = set()
    for v in list(graph.input) + list(graph.output):
        if v.type.HasField("tensor_type"):
            codes.add(v.type.tensor_type.elem_type)
    codes |= {t.data_type for t in graph.initializer}
    for node in graph.node:
        for a in node.attribute:
            if node.op_type in ("Cast", "EyeLike", "RandomUniformLike") and a.name in (
                "to",
                "dtype",
            ):
                codes.add(a.i)
            if a.type == onnx.AttributeProto.TENSOR:
                codes.add(a.t.data_type)
    return {TensorProto.DataType.Name(c) for c in codes if c != TensorProto.UNDEFINED}


#: ONNX ops imported only where their inputs are known at import time (the
#: node cases feed them at run time).
IMPORT_TIME_ONLY: dict[str, str] = {
    "ReduceProd": "ReduceProd is computed at import time only (PyTorch's element "
    "counts of shapes); graphengine has no product reduction of run-time tensors",
}


def skip_reason(case) -> str | None:
    """Why a node case is skipped, from the lists above, or None to run it."""
    if case.name in CASES:
        return CASES[case.name]
    model = case.model
    folded = sorted({n.op_type for n in model.graph.node if n.op_type in IMPORT_TIME_ONLY})
    if folded:
        return IMPORT_TIME_ONLY[folded[0]]
    outside = sorted({n.op_type for n in model.graph.node if n.op_type in NOT_IN_OP_SET})
    if outside:
        return f"{', '.join(outside)}: {NOT_IN_OP_SET[outside[0]]}"
    missing = sorted(_element_types(model) & set(NO_DTYPE))
    if missing:
        return f"element type {', '.join(missing)}: {NO_DTYPE[missing[0]]}"
    return None


_NODE_CASES = {case.name: case for case in load_model_tests(kind="node")}
_REASONS = {name: skip_reason(case) for name, case in _NODE_CASES.items()}


def _node_test_case() -> type[unittest.TestCase]:
    backend_test = onnx_backend_test.BackendTest(GraphEngineBackend, __name__)
    cls = backend_test.test_cases["OnnxBackendNodeModelTest"]
    for attr in [a for a in vars(cls) if a.startswith("test_")]:
        if attr.endswith("_cuda"):
            delattr(cls, attr)  # graphengine runs on the CPU only
            continue
        reason = _REASONS[attr[: -len("_cpu")]]
        if reason is not None:
            setattr(cls, attr, unittest.skip(reason)(getattr(cls, attr)))
    return cls


OnnxBackendNodeModelTest = _node_test_case()


#: Node cases run and skipped with onnx 1.23.2 (every case run must pass).
EXPECTED = {"1.23.2": {"run": 1191, "skipped": 693}}


def test_lists_are_consistent():
    """No listed op has an import rule, and every op in the suite is in one list."""
    assert not set(NOT_IN_OP_SET) & set(RULES)
    assert set(IMPORT_TIME_ONLY) <= set(RULES)
    seen = {n.op_type for case in _NODE_CASES.values() for n in case.model.graph.node}
    assert sorted(seen - set(NOT_IN_OP_SET) - set(RULES)) == []
    assert set(CASES) <= set(_NODE_CASES)


def test_case_counts():
    counts = collections.Counter("skipped" if r else "run" for r in _REASONS.values())
    expected = EXPECTED.get(onnx.__version__)
    if expected is None or expected["run"] is None:
        pytest.skip(f"no recorded counts for onnx {onnx.__version__}: {dict(counts)}")
    assert dict(counts) == expected


# -- the backend API itself ------------------------------------------------------------------


def test_backend_api():
    import numpy as np
    from onnx import helper

    x = np.array([[-1.0, 2.0]], np.float32)
    node = helper.make_node("Relu", ["x"], ["y"])
    assert GraphEngineBackend.run_node(node, [x])[0].tolist() == [[0.0, 2.0]]
    assert (
        GraphEngineBackend.run_node(node, {"x": x}, outputs_info=[(np.float32, (1, 2))])[0].dtype
        == np.float32
    )
    model = helper.make_model(
        helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    rep = GraphEngineBackend.prepare(model)
    assert rep.run({"x": x}).y.tolist() == [[0.0, 2.0]]  # by name
    assert rep.run(np.float32([[3.0, -3.0]]))[0].tolist() == [[3.0, 0.0]]  # one array
    assert GraphEngineBackend.run_model(model, [x])[0].tolist() == [[0.0, 2.0]]
    assert GraphEngineBackend.supports_device("CPU")
    assert not GraphEngineBackend.supports_device("CUDA:0")
    assert GraphEngineBackend.is_compatible(model)
    erf_model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Acos", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    assert not GraphEngineBackend.is_compatible(erf_model)


def test_inputs_feeding_shapes_are_bound_when_the_model_runs():
    import numpy as np
    from onnx import helper

    model = helper.make_model(
        helper.make_graph(
            [helper.make_node("Reshape", ["x", "shape"], ["y"])],
            "g",
            [
                helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
                helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
            ],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        ),
        opset_imports=[helper.make_opsetid("", 18)],
    )
    rep = GraphEngineBackend.prepare(model)
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert rep.run([x, np.array([3, 4])])[0].shape == (3, 4)
    assert rep.run([x, np.array([4, 3])])[0].shape == (4, 3)  # imported again, bound anew


def test_backend_never_claims_a_case_does_not_apply():
    """The runner counts BackendIsNotSupposedToImplementIt as a pass: never raise it."""
    import pathlib

    import graphengine.onnx as package

    for path in pathlib.Path(package.__file__).parent.glob("*.py"):
        assert "NotSupposedToImplement" not in path.read_text(), path
