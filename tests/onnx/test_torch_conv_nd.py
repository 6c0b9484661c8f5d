"""Real PyTorch exports of 1-D and 3-D convolution models (``torch.onnx.export`` at
opset 17, built here): a Conv3d-BatchNorm3d-ReLU-Conv3d block and an audio-style
Conv1d encoder with a ConvTranspose1d decoder.  Each is imported, matched against
onnxruntime (rtol 1e-5), its gradients matched against PyTorch autograd in
float64, and trained with ``graphengine train`` until the loss falls.  torch is
test-only: without it these skip."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from torch import nn

import graphengine as ge
from graphengine.cli.main import main as graphengine
from graphengine.gradcheck import to_float64

torch.manual_seed(0)


class VolumeBlock(nn.Module):
    """A 3-D conv block: Conv3d (bias-free, asymmetric stride), BatchNorm3d, ReLU,
    then a grouped, dilated Conv3d with bias."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 4, 3, stride=(1, 2, 1), padding=1, bias=False)
        self.bn = nn.BatchNorm3d(4)
        self.conv2 = nn.Conv3d(4, 6, (2, 3, 3), padding=(0, 2, 1), dilation=(1, 2, 1), groups=2)

    def forward(self, x):
        return self.conv2(torch.relu(self.bn(self.conv1(x))))


class AudioCoder(nn.Module):
    """An audio-style encoder and decoder: strided Conv1d layers down, a depthwise
    Conv1d, and ConvTranspose1d layers back up to the input length."""

    def __init__(self) -> None:
        super().__init__()
        self.down1 = nn.Conv1d(2, 6, 5, stride=2, padding=2)
        self.depthwise = nn.Conv1d(6, 6, 3, padding=1, groups=6)
        self.down2 = nn.Conv1d(6, 8, 4, stride=2, padding=1)
        self.up1 = nn.ConvTranspose1d(8, 6, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose1d(6, 2, 5, stride=2, padding=2, output_padding=1)

    def forward(self, audio):
        h = torch.relu(self.down1(audio))
        h = torch.relu(self.down2(torch.tanh(self.depthwise(h))))
        return self.up2(torch.relu(self.up1(h)))


def _floats(*shape):
    return np.random.default_rng(5).standard_normal(shape).astype(np.float32)


#: name -> (module factory, example inputs by name)
MODELS = {
    "volume_block": (VolumeBlock, {"x": _floats(2, 3, 4, 6, 5)}),
    "audio_coder": (AudioCoder, {"audio": _floats(3, 2, 32)}),
}


def _randomize(module: nn.Module) -> nn.Module:
    """Non-trivial batch-norm statistics, so inference form is really tested."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return module.eval()


def export(name: str):
    """(module, ONNX model, feeds) for one of MODELS, exported at opset 17."""
    factory, feeds = MODELS[name]
    module = _randomize(factory())
    args = tuple(torch.from_numpy(v) for v in feeds.values())
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buffer,
            dynamo=False,
            opset_version=17,
            input_names=list(feeds),
            output_names=["out"],
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
        )
    return module, onnx.load_from_string(buffer.getvalue()), feeds


@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_onnxruntime(name):
    _, model, feeds = export(name)
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"Conv", "ConvTranspose"}, ops
    graph = ge.from_onnx(model)
    assert {"conv"} <= {n.op for n in graph.nodes}
    ours = ge.run(graph, graph.outputs[0], feeds)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    theirs = session.run(None, feeds)[0]
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_match_pytorch_autograd(name):
    """d(sum(out * w))/d(every parameter and the input), float64, against torch."""
    module, model, feeds = export(name)
    graph = to_float64(ge.from_onnx(model))
    feeds64 = {k: v.astype(np.float64) for k, v in feeds.items()}
    out = graph.tensor(graph.outputs[0])
    weights = np.random.default_rng(6).uniform(0.5, 1.5, ge.run(graph, out, feeds64).shape)
    loss = ge.sum(out * graph.constant(weights))
    named = dict(module.named_parameters())
    params = sorted({p.name for p in graph.parameters(trainable=True)} & set(named))
    assert set(params) == set(named), sorted(set(named) - set(params))
    wrt = params + list(feeds)
    grads = ge.gradients(graph, loss, wrt)
    ours = ge.run(grads, [grads.gradient.grads[w] for w in wrt], feeds64)

    module = module.double()
    inputs = {k: torch.tensor(v, requires_grad=True) for k, v in feeds64.items()}
    (module(*inputs.values()) * torch.from_numpy(weights)).sum().backward()
    expected = {**{w: named[w].grad for w in params}, **{k: t.grad for k, t in inputs.items()}}
    for w in wrt:
        np.testing.assert_allclose(
            ours[grads.gradient.grads[w]], expected[w].numpy(), rtol=1e-10, atol=1e-12, err_msg=w
        )


@pytest.mark.parametrize("name", list(MODELS))
def test_trained_with_graphengine_train(name, tmp_path):
    _, model, feeds = export(name)
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    assert graphengine(["import", str(path), "-o", str(tmp_path / "imported.pb")]) == 0
    graph = ge.load(tmp_path / "imported.pb")
    out = graph.tensor(graph.outputs[0])
    shape = ge.run(graph, out, feeds).shape
    target = graph.placeholder("target", (None,) + shape[1:], "float32")
    loss = ge.mean_squared_error(out, target, name="loss")
    graph.set_training(
        loss, optimizer="adam", learning_rate=0.01, batch_size=shape[0], epochs=30, seed=0
    )
    graph.save(tmp_path / "model.pb")
    data = dict(feeds, target=np.random.default_rng(7).standard_normal(shape).astype(np.float32))
    np.savez(tmp_path / "train.npz", **data)
    before = float(ge.run(graph, "loss", data))
    command = ["train", str(tmp_path / "model.pb"), "--data", str(tmp_path / "train.npz")]
    assert graphengine([*command, "-o", str(tmp_path / "trained.pb"), "--quiet"]) == 0
    after = float(ge.run(ge.load(tmp_path / "trained.pb"), "loss", data))
    assert after < 0.9 * before, (before, after)
