"""ONNX -> graphengine for the ops PyTorch exports use most: normalization layers,
Resize, element-wise gather/scatter, Pad modes, recurrent layers; each against
onnxruntime (dtype and shape exactly, values to rtol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper

import graphengine as ge

from ..onnx_helpers import assert_same, make_model, reference, run_imported

rng = np.random.default_rng(3)


def f32(*shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, shape).astype(np.float32)


def node(op, inputs, outputs=("y",), **attrs):
    return helper.make_node(op, list(inputs), list(outputs), **attrs)


def check(nodes, feeds, outputs=("y",), *, opset=18, initializers=None, rtol=1e-5, atol=1e-6):
    model = make_model(nodes, feeds, outputs, opset=opset, initializers=initializers)
    ours = run_imported(model, feeds)
    assert_same(ours, reference(model, feeds), rtol=rtol, atol=atol)
    return ours


# -- normalization ----------------------------------------------------------------------

def test_instance_normalization():
    x = f32(2, 3, 4, 5)
    check([node("InstanceNormalization", ["x", "s", "b"], epsilon=0.01)], {"x": x},
          initializers={"s": f32(3, low=0.5), "b": f32(3)})
    check([node("InstanceNormalization", ["x", "s", "b"])], {"x": f32(2, 3, 7)},
          initializers={"s": f32(3, low=0.5), "b": f32(3)})


def test_layer_normalization_is_one_node_and_trains():
    model = make_model([node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)],
                       {"x": f32(2, 5)}, ["y"], initializers={"s": f32(5), "b": f32(5)})
    graph = ge.from_onnx(model)
    assert [n.op for n in graph.nodes if n.op not in ("placeholder", "parameter")] == [
        "layer_norm"]
    assert {p.name for p in graph.parameters(trainable=True)} == {"s", "b"}
