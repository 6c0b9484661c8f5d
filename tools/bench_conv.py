"""Benchmark: forward + backward time of a small CNN on a batch of 8x8 digit images.

The model is the one the training examples need: conv 3x3 (1 -> 16, pad 1),
relu, max pool 2, conv 3x3 (16 -> 32, pad 1), relu, mean pool to 2x2, dense
layer to 10 classes, softmax cross-entropy.  The script prints the best time
of a forward pass alone, of a forward + backward pass (the gradient of every
parameter), and of each conv kernel alone.

    python tools/bench_conv.py [--batch 128] [--repeat 20]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import graphengine as ge
from graphengine.ops import get_op


def build(batch_dims=None) -> tuple[ge.Graph, ge.Tensor, ge.Tensor]:
    g = ge.Graph("digits_cnn")
    x = g.placeholder("x", (batch_dims, 1, 8, 8))
    labels = g.placeholder("labels", (batch_dims,), "int64")
    with g.name_scope("conv1"):
        w = g.parameter("w", shape=(16, 1, 3, 3), init="he_normal")
        b = g.parameter("b", np.zeros((16, 1, 1), np.float32))
        h = ge.max_pool2d(ge.relu(ge.conv2d(x, w, padding=1) + b), 2)  # (N, 16, 4, 4)
    with g.name_scope("conv2"):
        w = g.parameter("w", shape=(32, 16, 3, 3), init="he_normal")
        b = g.parameter("b", np.zeros((32, 1, 1), np.float32))
        h = ge.avg_pool2d(ge.relu(ge.conv2d(h, w, padding=1) + b), 2)  # (N, 32, 2, 2)
    with g.name_scope("dense"):
        w = g.parameter("w", shape=(32 * 2 * 2, 10))
        logits = ge.matmul(ge.reshape(h, (-1, 32 * 2 * 2)), w)
    loss = ge.softmax_cross_entropy(logits, labels)
    return g, x, loss


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((args.batch, 1, 8, 8)).astype(np.float32),
        "labels": rng.integers(0, 10, size=args.batch),
    }
    g, _, loss = build()
    tg = ge.gradients(g, loss)
    grads = list(tg.gradient.grads.values())
    forward = best_of(args.repeat, lambda: ge.run(g, loss, feeds))
    backward = best_of(args.repeat, lambda: ge.run(tg, [loss.name, *grads], feeds))
    print(
        f"batch {args.batch}: forward {forward * 1e3:.2f} ms, "
        f"forward + backward {backward * 1e3:.2f} ms"
    )

    for x_shape, w_shape in [
        ((args.batch, 1, 8, 8), (16, 1, 3, 3)),
        ((args.batch, 16, 4, 4), (32, 16, 3, 3)),
        ((args.batch, 16, 8, 8), (32, 16, 3, 3)),
    ]:
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = rng.standard_normal(w_shape).astype(np.float32)
        forward, input_grad, filter_grad = time_conv_kernels(x, w, args.repeat)
        print(
            f"conv2d x{x_shape} w{w_shape}: forward {forward * 1e3:.2f} ms, "
            f"backprop_input {input_grad * 1e3:.2f} ms, "
            f"backprop_filter {filter_grad * 1e3:.2f} ms"
        )


def time_conv_kernels(x: np.ndarray, w: np.ndarray, repeat: int) -> list[float]:
    """Best times of the conv2d kernel and its two backward kernels (3x3, pad 1)."""
    attrs = {"stride": (1, 1), "padding": (1, 1, 1, 1), "dilation": (1, 1), "groups": 1}
    y = get_op("conv2d").kernel(x, w, **attrs)[0]  # (y, its im2col columns)
    return [
        best_of(repeat, lambda: get_op("conv2d").kernel(x, w, **attrs)),
        best_of(repeat, lambda: get_op("conv2d_backprop_input").kernel(y, w, x, **attrs)),
        best_of(repeat, lambda: get_op("conv2d_backprop_filter").kernel(x, y, w, **attrs)),
    ]


if __name__ == "__main__":
    main()
