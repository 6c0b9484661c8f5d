"""Train what you import: an MLP written with onnx.helper is imported, given a
loss, trained with ``graphengine train`` until its loss falls, exported back to
ONNX, and served by onnxruntime with graphengine's predictions."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper

import graphengine as ge
from graphengine.cli.main import main as graphengine


def onnx_mlp(seed: int = 0) -> onnx.ModelProto:
    """x (batch, 4) -> Gemm -> Relu -> MatMul -> Add -> logits (batch, 3), as a
    framework would export it (the first layer as Gemm with transB, one
    initializer not trained)."""
    rng = np.random.default_rng(seed)
    inits = {
        "fc1.weight": rng.normal(0, 0.5, (16, 4)).astype(np.float32),  # (out, in): transB
        "fc1.bias": np.zeros(16, np.float32),
        "fc2.weight": rng.normal(0, 0.5, (16, 3)).astype(np.float32),
        "fc2.bias": np.zeros(3, np.float32),
        "scale": np.float32(1.0),
    }
    nodes = [
        helper.make_node(
            "Gemm",
            ["x", "fc1.weight", "fc1.bias"],
            ["/fc1/Gemm_output_0"],
            name="/fc1/Gemm",
            transB=1,
        ),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/act/Relu_output_0"], name="/act/Relu"),
        helper.make_node(
            "MatMul",
            ["/act/Relu_output_0", "fc2.weight"],
            ["/fc2/MatMul_output_0"],
            name="/fc2/MatMul",
        ),
        helper.make_node(
            "Add", ["/fc2/MatMul_output_0", "fc2.bias"], ["/fc2/Add_output_0"], name="/fc2/Add"
        ),
        helper.make_node("Mul", ["/fc2/Add_output_0", "scale"], ["logits"], name="/Mul"),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model


def blobs(n: int, seed: int) -> dict[str, np.ndarray]:
    """Three Gaussian classes in 4-D."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    centres = np.array([[2, 0, 0, 1], [-2, 1, 0, -1], [0, -2, 2, 0]], np.float32)
    x = centres[labels] + rng.normal(0, 0.7, (n, 4)).astype(np.float32)
    return {"x": x.astype(np.float32), "labels": labels.astype(np.int64)}


def test_import_train_export_serve(tmp_path):
    onnx_path = tmp_path / "mlp.onnx"
    onnx.save(onnx_mlp(), onnx_path)

    # Import it as a model file, keeping the output scale fixed.
    assert (
        graphengine(
            ["import", str(onnx_path), "-o", str(tmp_path / "imported.pb"), "--freeze", "scale"]
        )
        == 0
    )
    graph = ge.load(tmp_path / "imported.pb")
    assert graph.outputs == ["logits"]
    assert {p.name: p.attrs["trainable"] for p in graph.parameters()} == {
        "fc1.weight": True,
        "fc1.bias": True,
        "fc2.weight": True,
        "fc2.bias": True,
        "scale": False,
    }

    # Give it a loss and a training spec, and train it from the file.
    labels = graph.placeholder("labels", (None,), "int64")
    loss = ge.softmax_cross_entropy(graph.tensor("logits"), labels, name="loss")
    gradient_graph = ge.gradients(graph, loss)  # what `graphengine train` builds
    assert sorted(gradient_graph.gradient.grads) == [
        "fc1.bias",
        "fc1.weight",
        "fc2.bias",
        "fc2.weight",
    ]
    graph.set_training(loss, optimizer="adam", learning_rate=0.02, batch_size=32, epochs=15, seed=0)
    graph.save(tmp_path / "model.pb")
    train, test = blobs(256, seed=1), blobs(128, seed=2)
    np.savez(tmp_path / "train.npz", **train)
    before = float(ge.run(graph, "loss", train))
    assert (
        graphengine(
            [
                "train",
                str(tmp_path / "model.pb"),
                "--data",
                str(tmp_path / "train.npz"),
                "-o",
                str(tmp_path / "trained.pb"),
                "--quiet",
            ]
        )
        == 0
    )
    trained = ge.load(tmp_path / "trained.pb")
    after = float(ge.run(trained, "loss", train))
    assert after < 0.5 * before, (before, after)
    assert trained.values["scale"] == np.float32(1.0)  # frozen: not trained
    assert not np.array_equal(trained.values["fc1.weight"], graph.values["fc1.weight"])

    # Export the trained forward graph and serve it with onnxruntime.
    assert (
        graphengine(
            [
                "export",
                str(tmp_path / "trained.pb"),
                "-o",
                str(tmp_path / "trained.onnx"),
                "--fetch",
                "logits",
            ]
        )
        == 0
    )
    exported = onnx.load(tmp_path / "trained.onnx")
    onnx.checker.check_model(exported, full_check=True)
    assert [i.name for i in exported.graph.input] == ["x"]
    session = ort.InferenceSession(exported.SerializeToString(), providers=["CPUExecutionProvider"])
    served = session.run(None, {"x": test["x"]})[0]
    ours = ge.run(trained, "logits", {"x": test["x"]})
    np.testing.assert_allclose(served, ours, rtol=1e-5, atol=1e-6)
    assert (served.argmax(1) == ours.argmax(1)).all()
    assert (ours.argmax(1) == test["labels"]).mean() > 0.9
