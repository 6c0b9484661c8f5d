"""Real PyTorch exports (``torch.onnx.export``, built here): each model is
imported, matched against onnxruntime (rtol 1e-5), its gradients matched
against PyTorch autograd in float64, and each trained with ``graphengine
train`` until the loss falls.  torch is test-only: without it these skip.
"""

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


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-bn-relu-conv-bn plus the identity, relu."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class EncoderLayer(nn.Module):
    """A post-norm transformer encoder layer: self-attention (2 heads), exact GELU
    feed-forward, LayerNorm after each residual."""

    def __init__(self, d: int = 8, heads: int = 2, ff: int = 16) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm1 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ff)
        self.ff2 = nn.Linear(ff, d)
        self.norm2 = nn.LayerNorm(d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)

        def heads(z):
            return z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = heads(q), heads(k), heads(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        attended = (weights @ v).transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.out(attended))
        return self.norm2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class SeparableBlock(nn.Module):
    """MobileNet's depthwise-separable conv: 3x3 depthwise (groups = channels),
    batch norm, relu, then 1x1 pointwise."""

    def __init__(self, channels: int = 4, out: int = 6) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.bn = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, out, 1)

    def forward(self, x):
        return self.pointwise(torch.relu(self.bn(self.depthwise(x))))


class LanguageModel(nn.Module):
    """Embedding -> LSTM or GRU (batch first) -> Linear over the vocabulary."""

    def __init__(self, cell: str, vocab: int = 11, d: int = 6, hidden: int = 5) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens):
        out, _ = self.rnn(self.embed(tokens))
        return self.head(out)


class UpBlock(nn.Module):
    """A UNet decoder step: ConvTranspose2d up-sampling concatenated with a skip
    input brought up by Resize (bilinear), then conv and relu."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(channels, channels // 2, 2, stride=2)
        self.conv = nn.Conv2d(channels, channels // 2, 3, padding=1)

    def forward(self, x, skip):
        skip = nn.functional.interpolate(
            skip, scale_factor=2.0, mode="bilinear", align_corners=False
        )
        return torch.relu(self.conv(torch.cat([self.up(x), skip], dim=1)))


def _tokens(shape):
    return np.random.default_rng(4).integers(0, 11, shape).astype(np.int64)


def _floats(*shape):
    return np.random.default_rng(5).standard_normal(shape).astype(np.float32)


#: name -> (module factory, example inputs by name)
MODELS = {
    "resnet_block": (BasicBlock, {"x": _floats(2, 4, 6, 5)}),
    "separable_block": (SeparableBlock, {"x": _floats(2, 4, 5, 6)}),
    "encoder_layer": (EncoderLayer, {"x": _floats(2, 5, 8)}),
    "lstm_lm": (lambda: LanguageModel("lstm"), {"tokens": _tokens((3, 7))}),
    "gru_lm": (lambda: LanguageModel("gru"), {"tokens": _tokens((3, 7))}),
    "unet_up": (UpBlock, {"x": _floats(2, 4, 3, 4), "skip": _floats(2, 2, 3, 4)}),
}


def export(name: str):
    """(module, ONNX model, feeds) for one of MODELS, exported at opset 17."""
    return export_preserving_mode(*MODELS[name])


@pytest.mark.parametrize("name", list(MODELS))
def test_import_matches_onnxruntime(name):
    _, model, feeds = export(name)
    graph = ge.from_onnx(model)
    assert_runs_like_onnxruntime(graph, model, feeds)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_match_pytorch_autograd(name):
    """d(sum(out * w))/d(every parameter and float input), float64, against torch.
    The exported graph holds some constants as float32 (1/sqrt(2) of GELU, the
    attention scale), hence rtol 1e-5 rather than float64's 1e-12."""
    module, model, feeds = export(name)
    compared, named = assert_gradients_match_autograd(module, model, feeds, rtol=1e-5, atol=1e-9)
    # Every parameter of the module was imported and compared, or renamed by the
    # exporter (the recurrent weights become ONNX's W, R, B layout).
    if name not in ("lstm_lm", "gru_lm"):
        assert compared == named, sorted(named - compared)


@pytest.mark.parametrize("name", list(MODELS))
def test_trained_with_graphengine_train(name, tmp_path):
    _, model, feeds = export(name)
    assert_trains_from_cli(model, feeds, tmp_path, epochs=50)
