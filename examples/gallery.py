"""A gallery of real architectures, drawn in every view: what `graphengine render` makes
of a CNN with batch norm, a ResNet basic block, an unrolled RNN and a transformer layer.

Each ``build_*`` function returns a forward graph with its training spec (so the
gradient views know the loss); :data:`MODELS` lists them.  The script saves each
model and draws it in the forward, gradient and both views, as SVG and PNG, and
prints each drawing's size and the time it took.  tests/test_render_gallery.py
checks the same matrix.

Run it:  python examples/gallery.py [--out out/gallery] [--format svg png]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import pathlib
import time
from collections.abc import Callable

import numpy as np

import graphengine as ge

HERE = pathlib.Path(__file__).resolve().parent


def build_digits_cnn() -> ge.Graph:
    """The digits CNN of examples/digits_cnn.py: two conv + batch norm + ReLU + max-pool
    blocks and a linear layer."""
    spec = importlib.util.spec_from_file_location("digits_cnn", HERE / "digits_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def _conv_bn(
    graph: ge.Graph,
    h: ge.Tensor,
    in_channels: int,
    out_channels: int,
    stride: int = 1,
    kernel: int = 3,
) -> ge.Tensor:
    """conv2d (no bias) then batch norm, in the current scope."""
    w = graph.parameter("w", shape=(out_channels, in_channels, kernel, kernel), init="he_normal")
    gamma = graph.parameter("gamma", np.ones(out_channels, np.float32))
    beta = graph.parameter("beta", np.zeros(out_channels, np.float32))
    mean = graph.parameter("running_mean", np.zeros(out_channels, np.float32), trainable=False)
    var = graph.parameter("running_var", np.ones(out_channels, np.float32), trainable=False)
    h = ge.conv2d(h, w, stride=stride, padding=kernel // 2)
    h = ge.batch_norm(h, gamma, beta, mean, var)
    return h


def build_resnet_block(channels: int = 8, out_channels: int = 16) -> ge.Graph:
    """A stem convolution, one ResNet basic block with a strided 1x1 projection on the
    shortcut (He et al. 2016: conv-bn-relu-conv-bn, add, relu), global average pooling
    and a linear classifier, on 3x16x16 images."""
    graph = ge.Graph("resnet_block")
    images = graph.placeholder("images", (None, 3, 16, 16))
    labels = graph.placeholder("labels", (None,), "int64")
    with graph.name_scope("stem"):
        x = ge.relu(_conv_bn(graph, images, 3, channels))
    with graph.name_scope("block"):
        with graph.name_scope("conv1"):
            h = ge.relu(_conv_bn(graph, x, channels, out_channels, stride=2))
        with graph.name_scope("conv2"):
            h = _conv_bn(graph, h, out_channels, out_channels)
        with graph.name_scope("shortcut"):
            skip = _conv_bn(graph, x, channels, out_channels, stride=2, kernel=1)
        h = ge.relu(h + skip)
    with graph.name_scope("head"):
        pooled = ge.mean(h, axis=(2, 3))
        w = graph.parameter("w", shape=(out_channels, 10))
        b = graph.parameter("b", np.zeros(10, np.float32))
        logits = ge.matmul(pooled, w) + b
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    graph.mark_output(loss, logits)
    graph.set_training(loss, predictions=logits.name, labels="labels")
    return graph


def build_text_rnn(
    steps: int = 5, vocab: int = 20, embed: int = 8, hidden: int = 16, classes: int = 3
) -> ge.Graph:
    """An Elman RNN unrolled over ``steps`` tokens: one embedding table, and the cell's
    weights ``rnn/wx``, ``rnn/wh``, ``rnn/b`` shared by the steps ``rnn/step0`` ...,
    each ``h = tanh(x wx + h wh + b)``; the last state is classified."""
    graph = ge.Graph("text_rnn")
    tokens = graph.placeholder("tokens", (None, steps), "int64")
    labels = graph.placeholder("labels", (None,), "int64")
    with graph.name_scope("embed"):
        table = graph.parameter("table", shape=(vocab, embed))
        vectors = ge.take(table, tokens, axis=0)  # (N, steps, embed)
    with graph.name_scope("rnn"):
        wx = graph.parameter("wx", shape=(embed, hidden))
        wh = graph.parameter("wh", shape=(hidden, hidden))
        b = graph.parameter("b", np.zeros(hidden, np.float32))
        inputs = ge.split(vectors, steps, axis=1)
        h = None
        for t in range(steps):
            with graph.name_scope(f"step{t}"):
                z = ge.matmul(ge.reshape(inputs[t], (-1, embed)), wx) + b
                if h is not None:
                    z = z + ge.matmul(h, wh)
                h = ge.tanh(z)
    with graph.name_scope("head"):
        w = graph.parameter("w", shape=(hidden, classes))
        logits = ge.matmul(h, w)
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    graph.mark_output(loss, logits)
    graph.set_training(loss, predictions=logits.name, labels="labels")
    return graph


def _dense(graph: ge.Graph, h: ge.Tensor, fan_in: int, fan_out: int) -> ge.Tensor:
    w = graph.parameter("w", shape=(fan_in, fan_out))
    b = graph.parameter("b", np.zeros(fan_out, np.float32))
    return ge.matmul(h, w) + b


def _layer_norm(graph: ge.Graph, h: ge.Tensor, width: int, epsilon: float = 1e-5) -> ge.Tensor:
    """Layer normalisation over the last axis, from primitives:
    gamma * (h - mean) / sqrt(var + epsilon) + beta."""
    gamma = graph.parameter("gamma", np.ones(width, np.float32))
    beta = graph.parameter("beta", np.zeros(width, np.float32))
    centred = h - ge.mean(h, axis=-1, keepdims=True)
    var = ge.mean(centred * centred, axis=-1, keepdims=True)
    return centred / ge.sqrt(var + epsilon) * gamma + beta


def build_transformer_encoder(
    tokens_per_example: int = 6,
    vocab: int = 30,
    width: int = 16,
    heads: int = 2,
    hidden: int = 32,
    classes: int = 4,
) -> ge.Graph:
    """One post-norm transformer encoder layer (Vaswani et al. 2017) on token ids:
    embedding plus learned positions, multi-head self-attention
    ``softmax(q k^T / sqrt(d)) v``, add & layer norm, a GELU MLP, add & layer norm,
    mean over tokens and a linear classifier.  Every part is made of our ops."""
    steps, head_width = tokens_per_example, width // heads
    graph = ge.Graph("transformer_encoder")
    tokens = graph.placeholder("tokens", (None, steps), "int64")
    labels = graph.placeholder("labels", (None,), "int64")
    with graph.name_scope("embed"):
        table = graph.parameter("table", shape=(vocab, width))
        positions = graph.parameter("positions", shape=(steps, width))
        x = ge.take(table, tokens, axis=0) + positions  # (N, T, width)

    def split_heads(t: ge.Tensor) -> ge.Tensor:  # (N, heads, T, d)
        return ge.transpose(ge.reshape(t, (-1, steps, heads, head_width)), (0, 2, 1, 3))

    with graph.name_scope("attention"):
        with graph.name_scope("query"):
            q = split_heads(_dense(graph, x, width, width))
        with graph.name_scope("key"):
            k = split_heads(_dense(graph, x, width, width))
        with graph.name_scope("value"):
            v = split_heads(_dense(graph, x, width, width))
        with graph.name_scope("scores"):
            scores = ge.matmul(q, ge.transpose(k, (0, 1, 3, 2))) / math.sqrt(head_width)
            weights = ge.softmax(scores, axis=-1)
        mixed = ge.reshape(ge.transpose(ge.matmul(weights, v), (0, 2, 1, 3)), (-1, steps, width))
        with graph.name_scope("out"):
            attended = _dense(graph, mixed, width, width)
    with graph.name_scope("norm1"):
        x = _layer_norm(graph, x + attended, width)
    with graph.name_scope("mlp"):
        with graph.name_scope("up"):
            h = ge.gelu(_dense(graph, x, width, hidden))
        with graph.name_scope("down"):
            h = _dense(graph, h, hidden, width)
    with graph.name_scope("norm2"):
        x = _layer_norm(graph, x + h, width)
    with graph.name_scope("head"):
        logits = _dense(graph, ge.mean(x, axis=1), width, classes)
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    graph.mark_output(loss, logits)
    graph.set_training(loss, predictions=logits.name, labels="labels")
    return graph


#: The gallery: name -> builder.
MODELS: dict[str, Callable[[], ge.Graph]] = {
    "digits_cnn": build_digits_cnn,
    "resnet_block": build_resnet_block,
    "text_rnn": build_text_rnn,
    "transformer_encoder": build_transformer_encoder,
}

VIEWS = ("forward", "gradient", "both")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/gallery", help="output folder")
    parser.add_argument("--format", nargs="+", default=["svg", "png"], choices=["svg", "png"])
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, build in MODELS.items():
        graph = build()
        graph.save(out / f"{name}.pb")
        for view in VIEWS:
            for fmt in args.format:
                path = out / f"{name}_{view}.{fmt}"
                start = time.perf_counter()
                ge.render(graph, path, view=view)
                seconds = time.perf_counter() - start
                print(f"{path}  {path.stat().st_size:>9,} bytes  {seconds:5.2f} s")


if __name__ == "__main__":
    main()
