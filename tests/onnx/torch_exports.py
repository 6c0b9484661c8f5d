"""Helpers shared by the tests of real PyTorch exports (test_torch_exports*.py,
test_torch_conv_nd.py, test_realistic_exports.py): export a module with the
TorchScript exporter, run onnxruntime, compare float64 gradients with PyTorch
autograd, and train the import with ``graphengine train``.

Import it after the test module's own ``pytest.importorskip`` of torch, onnx and
onnxruntime, so that without them the test module skips before reaching here.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import graphengine as ge  # noqa: E402
from graphengine.cli.main import main as graphengine  # noqa: E402
from graphengine.gradcheck import to_float64  # noqa: E402


def torch_export(module, feeds, *, opset=17, **options: Any):
    """The ONNX model of ``module`` called on ``feeds`` (inputs named as the feeds,
    the output "out"), exported by the TorchScript exporter with its warnings
    silenced; ``options`` go to ``torch.onnx.export``."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(torch.from_numpy(v) for v in feeds.values()),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=list(feeds),
            output_names=["out"],
            **options,
        )
    return onnx.load_from_string(buffer.getvalue())


def export_preserving_mode(factory, feeds):
    """(module, ONNX model, feeds): ``factory()`` with its batch norms randomized,
    exported at opset 17 in the module's own (eval) mode, without constant folding
    (the parameters keep torch's names)."""
    module = randomize_batch_norm(factory())
    model = torch_export(
        module, feeds, training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False
    )
    return module, model, feeds


def assert_runs_like_onnxruntime(graph, model, feeds):
    """The imported ``graph`` gives onnxruntime's output of ``model`` on ``feeds``:
    same dtype and shape, rtol and atol 1e-5."""
    ours = ge.run(graph, graph.outputs[0], feeds)
    theirs = onnxruntime_output(model, feeds)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


def onnxruntime_output(model, feeds):
    """onnxruntime's (CPU) first output of ``model`` on ``feeds``."""
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def assert_gradients_match_autograd(module, model, feeds, *, inputs=True, rtol, atol):
    """d(sum(out * w))/d(each parameter torch and the import both name, and, with
    ``inputs``, each float input), in float64, equal to PyTorch autograd's.

    Returns (compared parameter names, torch's parameter names) for the caller's
    check that no parameter was left out."""
    graph = to_float64(ge.from_onnx(model))
    feeds64 = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in feeds.items()}
    out = graph.tensor(graph.outputs[0])
    shape = ge.run(graph, out, feeds64).shape
    weights = np.random.default_rng(6).uniform(0.5, 1.5, shape)
    loss = ge.sum(out * graph.constant(weights))
    named = dict(module.named_parameters())
    compared = sorted({p.name for p in graph.parameters(trainable=True)} & set(named))
    float_inputs = [k for k, v in feeds.items() if v.dtype.kind == "f"] if inputs else []
    assert compared or float_inputs
    wrt = compared + float_inputs
    grads = ge.gradients(graph, loss, wrt)
    ours = ge.run(grads, [grads.gradient.grads[w] for w in wrt], feeds64)

    module = module.double()
    tensors = {k: torch.tensor(v, requires_grad=k in float_inputs) for k, v in feeds64.items()}
    (module(*tensors.values()) * torch.from_numpy(weights)).sum().backward()
    expected = {
        **{w: named[w].grad for w in compared},
        **{k: tensors[k].grad for k in float_inputs},
    }
    for w in wrt:
        np.testing.assert_allclose(
            ours[grads.gradient.grads[w]], expected[w].numpy(), rtol=rtol, atol=atol, err_msg=w
        )
    return set(compared), set(named)


def assert_trains_from_cli(model, feeds, tmp_path, *, epochs):
    """``graphengine import`` then ``graphengine train`` (Adam, lr 0.01, mean
    squared error to a random target, one batch of the feeds) for ``epochs``
    epochs brings the loss below 0.9 of the start."""
    onnx.save(model, tmp_path / "model.onnx")
    assert graphengine(["import", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "in.pb")]) == 0
    graph = ge.load(tmp_path / "in.pb")
    out = graph.tensor(graph.outputs[0])
    shape = ge.run(graph, out, feeds).shape
    target = graph.placeholder("target", (None,) + shape[1:], "float32")
    loss = ge.mean_squared_error(out, target, name="loss")
    graph.set_training(
        loss, optimizer="adam", learning_rate=0.01, batch_size=shape[0], epochs=epochs, seed=0
    )
    graph.save(tmp_path / "model.pb")
    data = dict(feeds, target=np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    np.savez(tmp_path / "train.npz", **data)
    before = float(ge.run(graph, "loss", data))
    command = ["train", str(tmp_path / "model.pb"), "--data", str(tmp_path / "train.npz")]
    assert graphengine([*command, "-o", str(tmp_path / "trained.pb"), "--quiet"]) == 0
    after = float(ge.run(ge.load(tmp_path / "trained.pb"), "loss", data))
    assert after < 0.9 * before, (before, after)


def randomize_batch_norm(module, *, variance=(0.5, 2.0)):
    """``module`` in eval mode with its batch norms' statistics and affine terms
    drawn away from their initial ones and zeros, so the inference form is really
    tested."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(*variance)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return module.eval()
