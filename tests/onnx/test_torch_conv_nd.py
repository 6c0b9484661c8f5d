"""Real PyTorch exports of 1-D and 3-D convolution models (``torch.onnx.export`` at
opset 17, built here): a Conv3d-BatchNorm3d-ReLU-Conv3d block and an audio-style
Conv1d encoder with a ConvTranspose1d decoder.  Each is imported, matched against
onnxruntime (rtol 1e-5), its gradients matched against PyTorch autograd in
float64, and trained with ``graphengine train`` until the loss falls.  torch is
test-only: without it these skip."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from torch import nn

import graphengine as ge

from .torch_exports import (
    assert_gradients_match_autograd,
    assert_runs_like_onnxruntime,
    assert_trains_from_cli,
    export_preserving_mode,
)

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


def export(name: str):
    """(module, ONNX model, feeds) for one of MODELS, exported at opset 17."""
    return export_preserving_mode(*MODELS[name])


@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_onnxruntime(name):
    _, model, feeds = export(name)
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"Conv", "ConvTranspose"}, ops
    graph = ge.from_onnx(model)
    assert {"conv"} <= {n.op for n in graph.nodes}
    assert_runs_like_onnxruntime(graph, model, feeds)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_match_pytorch_autograd(name):
    """d(sum(out * w))/d(every parameter and the input), float64, against torch."""
    module, model, feeds = export(name)
    assert all(v.dtype.kind == "f" for v in feeds.values())
    compared, named = assert_gradients_match_autograd(module, model, feeds, rtol=1e-10, atol=1e-12)
    assert compared == named, sorted(named - compared)


@pytest.mark.parametrize("name", list(MODELS))
def test_trained_with_graphengine_train(name, tmp_path):
    _, model, feeds = export(name)
    assert_trains_from_cli(model, feeds, tmp_path, epochs=30)
