"""Benchmark: a training step of the gradient graph of a 64-128-64-10 MLP (batch
32), before and after ``ge.optimize``, timed interleaved in the same run (CPU
time of this process, best of ``--repeat`` blocks of ``--steps`` steps).

    python tools/bench_optimize.py [--repeat 7] [--steps 300]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import graphengine as ge


def build() -> ge.Graph:
    g = ge.Graph("mlp")
    h = g.placeholder("x", (None, 64))
    labels = g.placeholder("labels", (None,), "int64")
    for i, (k, m) in enumerate([(64, 128), (128, 64)]):
        with g.name_scope(f"layer{i}"):
            h = ge.relu(
                h @ g.parameter("w", shape=(k, m)) + g.parameter("b", shape=(m,), init="zeros")
            )
    logits = h @ g.parameter("w", shape=(64, 10)) + g.parameter("b", shape=(10,), init="zeros")
    loss = ge.softmax_cross_entropy(logits, labels, name="loss")
    return ge.gradients(g, loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    tg = build()
    opt, report = ge.optimize(tg)
    print(report)
    rng = np.random.default_rng(0)
    feeds = {
        "x": rng.standard_normal((32, 64)).astype(np.float32),
        "labels": rng.integers(0, 10, 32),
    }
    fetches = [tg.gradient.loss, *tg.gradient.grads.values()]
    best = {"unoptimized": float("inf"), "optimized": float("inf")}
    for _ in range(args.repeat):
        for name, graph in (("unoptimized", tg), ("optimized", opt)):
            start = time.process_time()
            for _ in range(args.steps):
                ge.run(graph, fetches, feeds, training=True)
            best[name] = min(best[name], (time.process_time() - start) / args.steps)
    print(
        f"step: unoptimized {best['unoptimized'] * 1e6:.0f} us (reference), optimized "
        f"{best['optimized'] * 1e6:.0f} us, ratio {best['optimized'] / best['unoptimized']:.2f}"
    )


if __name__ == "__main__":
    main()
