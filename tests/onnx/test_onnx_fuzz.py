"""Seeded fuzzing of ONNX files, beside the model-file fuzzer of
tests/test_bad_files.py: random byte flips and truncations of a small model
(Gemm, Relu, Reshape of a folded shape, Softmax, with initializers) either
import or raise one of our errors; never a protobuf, onnx or numpy exception."""

import random

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402

import graphengine as ge  # noqa: E402
from tests.onnx_helpers import make_model  # noqa: E402


def _model_bytes() -> bytes:
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="dense"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Shape", ["r"], ["s"], name="shape"),
        helper.make_node("Reshape", ["r", "s"], ["t"], name="reshape"),
        helper.make_node("Softmax", ["t"], ["y"], name="softmax", axis=1),
    ]
    model = make_model(
        nodes,
        {"x": (np.float32, [3, 4])},
        ["y"],
        initializers={
            "w": rng.normal(size=(4, 5)).astype(np.float32),
            "b": np.zeros(5, np.float32),
        },
    )
    return model.SerializeToString()


def _outcome(data: bytes) -> str:
    try:
        graph = ge.from_onnx(data)
    except ge.GraphEngineError:
        return "refused"
    ge.run(
        graph, graph.outputs[0], {graph.placeholders()[0].name: np.ones((3, 4), np.float32)}
    ) if graph.outputs and graph.placeholders() else None
    return "imported"


@pytest.mark.parametrize("seed", [0, 1])
def test_fuzzed_onnx_files_import_or_raise_our_errors(seed):
    original = _model_bytes()
    assert _outcome(original) == "imported"
    rng = random.Random(seed)
    counts = {"refused": 0, "imported": 0}
    for _ in range(150):
        data = bytearray(original)
        for _ in range(rng.choice([1, 2, 4])):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        try:
            counts[_outcome(bytes(data))] += 1
        except ge.GraphEngineError:
            counts["refused"] += 1  # refused when run: also ours
    for _ in range(40):
        cut = original[: rng.randrange(len(original))]
        try:
            counts[_outcome(cut)] += 1
        except ge.GraphEngineError:
            counts["refused"] += 1
    assert counts["refused"] > 0 and counts["imported"] > 0
