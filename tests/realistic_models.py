"""Realistic models built with graphengine's API, for the end-to-end tests of
tests/test_realistic_models.py: a hand-written 2-layer GRU with scopes nested
inside its loops, a ResNet basic-block stack with batch norm, a pre-norm
transformer encoder layer (masked multi-head attention, layer norm, exact GELU,
dropout), a depthwise-separable CNN, a 1-D conv net and a UNet-style block with
conv_transpose and resize.

Each builder returns ``(graph, data)``: the graph has a scalar ``loss`` and
marked outputs, ``data`` a small batch (one example per row) for every
placeholder.  Values come from fixed seeds, and shifts are initialised away
from zero so that no ReLU input sits exactly on its kink (a finite difference
there measures the mean of the two one-sided slopes, not the gradient).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import graphengine as ge


def _weight(g: ge.Graph, name: str, shape: tuple[int, ...], rng, dtype: str) -> ge.Tensor:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    return g.parameter(name, (rng.normal(size=shape) / np.sqrt(fan_in)).astype(dtype))


def _batch_norm(g: ge.Graph, h: ge.Tensor, channels: int, dtype: str) -> ge.Tensor:
    gamma = g.parameter("gamma", np.ones(channels, dtype))
    beta = g.parameter("beta", np.linspace(-0.23, 0.31, channels).astype(dtype))
    mean = g.parameter("running_mean", np.zeros(channels, dtype), trainable=False)
    var = g.parameter("running_var", np.ones(channels, dtype), trainable=False)
    return ge.batch_norm(h, gamma, beta, mean, var, momentum=0.9)


def _classifier_head(g: ge.Graph, features: ge.Tensor, size: int, classes: int, rng, dtype):
    labels = g.placeholder("labels", (None,), "int64")
    with g.name_scope("head"):
        w = _weight(g, "w", (size, classes), rng, dtype)
        b = g.parameter("b", np.zeros(classes, dtype))
        logits = ge.identity(features @ w + b, name="logits")
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    g.mark_output(loss, logits)


def gru(dtype: str = "float32", steps: int = 4, hidden: int = 6, features: int = 3):
    """Two stacked GRU layers unrolled over ``steps``; scopes rnn/layer{l}/step{t}/gates."""
    rng = np.random.default_rng(1)
    g = ge.Graph("gru")
    x = g.placeholder("x", (None, steps, features), dtype)
    inputs = [x[:, t, :] for t in range(steps)]
    with g.name_scope("rnn"):
        for layer in range(2):
            with g.name_scope(f"layer{layer}"):
                size = (features if layer == 0 else hidden) + hidden
                wz = _weight(g, "wz", (size, hidden), rng, dtype)
                wr = _weight(g, "wr", (size, hidden), rng, dtype)
                wh = _weight(g, "wh", (size, hidden), rng, dtype)
                bz = g.parameter("bz", np.full(hidden, 0.1, dtype))
                h = ge.zeros_like(inputs[0][:, :1]) + np.zeros(hidden, dtype)
                outputs = []
                for t, xt in enumerate(inputs):
                    with g.name_scope(f"step{t}"):
                        xh = ge.concatenate([xt, h], axis=1)
                        with g.name_scope("gates"):
                            z = ge.sigmoid(xh @ wz + bz)
                            r = ge.sigmoid(xh @ wr)
                        with g.name_scope("candidate"):
                            c = ge.tanh(ge.concatenate([xt, r * h], axis=1) @ wh)
                        h = (1.0 - z) * h + z * c
                        outputs.append(h)
                inputs = outputs
    _classifier_head(g, inputs[-1], hidden, 4, rng, dtype)
    n = 16
    data = {
        "x": rng.normal(size=(n, steps, features)).astype(dtype),
        "labels": rng.integers(0, 4, size=n),
    }
    return g, data


def resnet(dtype: str = "float32"):
    """A conv-bn-relu stem, then two basic blocks (the second strided, with a
    1x1 projection shortcut), global average pooling and a linear head."""
    rng = np.random.default_rng(2)
    g = ge.Graph("resnet")
    x = g.placeholder("x", (None, 2, 8, 8), dtype)
    with g.name_scope("stem"):
        h = ge.conv(x, _weight(g, "w", (4, 2, 3, 3), rng, dtype), padding=1)
        h = ge.relu(_batch_norm(g, h, 4, dtype))
    cin = 4
    for i, (cout, stride) in enumerate([(4, 1), (6, 2)]):
        with g.name_scope(f"block{i}"):
            with g.name_scope("conv1"):
                w = _weight(g, "w", (cout, cin, 3, 3), rng, dtype)
                y = ge.relu(_batch_norm(g, ge.conv(h, w, stride=stride, padding=1), cout, dtype))
            with g.name_scope("conv2"):
                w = _weight(g, "w", (cout, cout, 3, 3), rng, dtype)
                y = _batch_norm(g, ge.conv(y, w, padding=1), cout, dtype)
            shortcut = h
            if stride != 1 or cin != cout:
                with g.name_scope("shortcut"):
                    w = _weight(g, "w", (cout, cin, 1, 1), rng, dtype)
                    shortcut = _batch_norm(g, ge.conv(h, w, stride=stride), cout, dtype)
            h = ge.relu(y + shortcut)
        cin = cout
    _classifier_head(g, ge.mean(h, axis=(2, 3)), cin, 3, rng, dtype)
    n = 12
    data = {
        "x": rng.normal(size=(n, 2, 8, 8)).astype(dtype),
        "labels": rng.integers(0, 3, size=n),
    }
    return g, data


def transformer(dtype: str = "float32", steps: int = 5, d: int = 8, heads: int = 2):
    """A pre-norm encoder layer: LN, multi-head self-attention with a padding
    mask (masked keys get -1e4 before the softmax) and dropout, residual; LN,
    a GELU (exact) feed-forward block with dropout, residual; masked mean pooling."""
    rng = np.random.default_rng(3)
    g = ge.Graph("transformer")
    x = g.placeholder("x", (None, steps, d), dtype)
    mask = g.placeholder("mask", (None, steps), dtype)  # 1: a token, 0: padding
    dh = d // heads

    def layer_norm(t):
        scale = g.parameter("ln/scale", np.ones(d, dtype))
        return ge.layer_norm(t, scale, g.parameter("ln/bias", np.zeros(d, dtype)))

    def split_heads(t):
        return ge.transpose(ge.reshape(t, (-1, steps, heads, dh)), (0, 2, 1, 3))

    with g.name_scope("encoder"):
        with g.name_scope("attention"):
            ln = layer_norm(x)
            q = split_heads(ln @ _weight(g, "wq", (d, d), rng, dtype))
            k = split_heads(ln @ _weight(g, "wk", (d, d), rng, dtype))
            v = split_heads(ln @ _weight(g, "wv", (d, d), rng, dtype))
            scores = q @ ge.transpose(k, (0, 1, 3, 2)) / float(np.sqrt(dh))
            scores = scores + ge.reshape((1.0 - mask) * -1e4, (-1, 1, 1, steps))
            attention = ge.dropout(ge.softmax(scores, axis=-1), 0.1, seed=7)
            context = ge.reshape(ge.transpose(attention @ v, (0, 2, 1, 3)), (-1, steps, d))
            x = x + ge.dropout(context @ _weight(g, "wo", (d, d), rng, dtype), 0.1, seed=8)
        with g.name_scope("ffn"):
            b1 = g.parameter("b1", np.full(2 * d, 0.05, dtype))
            f = ge.gelu(layer_norm(x) @ _weight(g, "w1", (d, 2 * d), rng, dtype) + b1, "none")
            x = x + ge.dropout(f @ _weight(g, "w2", (2 * d, d), rng, dtype), 0.1, seed=9)
    pooled = ge.sum(x * ge.expand_dims(mask, -1), axis=1) / ge.sum(mask, axis=1, keepdims=True)
    _classifier_head(g, pooled, d, 3, rng, dtype)
    n = 10
    tokens = np.ones((n, steps), dtype)
    tokens[::2, -2:] = 0
    data = {
        "x": rng.normal(size=(n, steps, d)).astype(dtype),
        "mask": tokens,
        "labels": rng.integers(0, 3, size=n),
    }
    return g, data


def separable(dtype: str = "float32"):
    """Two depthwise-separable blocks (3x3 depthwise conv, bn, relu; 1x1 conv
    with bias, bn, relu; 2x2 average pooling), then a linear head."""
    rng = np.random.default_rng(4)
    g = ge.Graph("separable")
    h = g.placeholder("x", (None, 3, 8, 8), dtype)
    c = 3
    for i, cout in enumerate([6, 8]):
        with g.name_scope(f"sep{i}"):
            with g.name_scope("depthwise"):
                w = _weight(g, "w", (c, 1, 3, 3), rng, dtype)
                h = ge.relu(_batch_norm(g, ge.conv(h, w, padding=1, groups=c), c, dtype))
            with g.name_scope("pointwise"):
                w = _weight(g, "w", (cout, c, 1, 1), rng, dtype)
                h = ge.conv(h, w, g.parameter("b", np.full(cout, 0.1, dtype)))
                h = ge.relu(_batch_norm(g, h, cout, dtype))
            h = ge.avg_pool2d(h, 2)
            c = cout
    _classifier_head(g, ge.reshape(h, (-1, c * 4)), c * 4, 3, rng, dtype)
    n = 12
    data = {
        "x": rng.normal(size=(n, 3, 8, 8)).astype(dtype),
        "labels": rng.integers(0, 3, size=n),
    }
    return g, data


def conv1d(dtype: str = "float32"):
    """1-D convolutions over (N, C, L): conv k5 + relu + max-pool, a strided
    dilated conv + elu, max over time, a linear head."""
    rng = np.random.default_rng(5)
    g = ge.Graph("conv1d")
    x = g.placeholder("x", (None, 2, 16), dtype)
    with g.name_scope("conv1"):
        b = g.parameter("b", np.full(4, 0.1, dtype))
        h = ge.relu(ge.conv(x, _weight(g, "w", (4, 2, 5), rng, dtype), b, padding=2))
        h = ge.max_pool1d(h, 2)
    with g.name_scope("conv2"):
        w = _weight(g, "w", (6, 4, 3), rng, dtype)
        h = ge.elu(ge.conv(h, w, dilation=2, padding=2, stride=2))
    _classifier_head(g, ge.max(h, axis=2), 6, 3, rng, dtype)
    n = 12
    data = {
        "x": rng.normal(size=(n, 2, 16)).astype(dtype),
        "labels": rng.integers(0, 3, size=n),
    }
    return g, data


def unet(dtype: str = "float32"):
    """Down: conv, strided conv, max-pool; up: conv_transpose (stride 2) joined
    with the skip, linear resize x2 joined with the first skip, conv; MSE loss."""
    rng = np.random.default_rng(6)
    g = ge.Graph("unet")
    x = g.placeholder("x", (None, 1, 8, 8), dtype)
    target = g.placeholder("target", (None, 1, 8, 8), dtype)
    with g.name_scope("down"):
        d0 = ge.relu(ge.conv(x, _weight(g, "w0", (4, 1, 3, 3), rng, dtype), padding=1))
        w1 = _weight(g, "w1", (8, 4, 3, 3), rng, dtype)
        d1 = ge.relu(ge.conv(d0, w1, stride=2, padding=1))  # 4x4
        d2 = ge.max_pool2d(d1, 2)  # 2x2
    with g.name_scope("up"):
        u1 = ge.conv_transpose(d2, _weight(g, "wt", (8, 8, 2, 2), rng, dtype), stride=2)
        u1 = ge.relu(ge.concatenate([u1, d1], axis=1))
        u0 = ge.resize(u1, sizes=(-1, -1, -1, -1), scales=(1.0, 1.0, 2.0, 2.0), mode="linear")
        u0 = ge.concatenate([u0, d0], axis=1)
        w = _weight(g, "wo", (1, 20, 3, 3), rng, dtype)
        y = ge.identity(ge.conv(u0, w, padding=1), name="y")
    loss = ge.mean_squared_error(y, target, name="loss")
    g.mark_output(loss, y)
    n = 8
    xs = rng.normal(size=(n, 1, 8, 8)).astype(dtype)
    return g, {"x": xs, "target": np.tanh(xs).astype(dtype)}


MODELS: dict[str, Callable[..., tuple[ge.Graph, dict[str, np.ndarray]]]] = {
    "gru": gru,
    "resnet": resnet,
    "transformer": transformer,
    "separable": separable,
    "conv1d": conv1d,
    "unet": unet,
}
